package engine

import (
	"sync"
	"time"
)

// shard states: idle (no worker holds it and it is not on the run queue),
// scheduled (on the run queue or held by a worker).
const (
	idle uint8 = iota
	scheduled
)

// shard is one FIFO, the keys it parks for retries, and the state its
// producers share with the worker that holds it.
//
// Producers append to items under mu. A worker that takes the shard from
// the run queue swaps items out under mu and runs them without the lock;
// parked, due and timer belong to whichever worker holds the shard (state
// scheduled and taken from the run queue), so they need no lock.
type shard[E any] struct {
	e *Engine[E]

	mu    sync.Mutex
	items []Item[E]
	// occupied counts items accepted and not yet given back: queued, in a
	// worker's hands or parked for a retry. Capacity is checked against it.
	occupied int
	state    uint8
	stopped  bool // refuse every add: Close halted the shard, or the engine retired
	halted   bool // Close gave up: a worker never lets the shard go idle while it holds events

	// Held by the worker that holds the shard.
	parked map[uint64]*parkedKey[E]
	due    dueHeap
	timer  *time.Timer // made at the first retry; fires wake

	_ [64]byte // keep neighbouring shards off this cache line
}

// parkedKey holds, in order, the units of one key that wait behind a
// failed unit: the head is the one to retry, the rest arrived after it.
type parkedKey[E any] struct {
	units    []*Unit[E]
	retrying bool // the head has failed and waits for its retry time
}

// holds reports whether the shard still has events: queued or parked.
// s.mu must be held, or the shard held by the caller.
func (s *shard[E]) holds() bool { return len(s.items) > 0 || len(s.parked) > 0 }

// wake is the retry timer's function: it puts an idle shard whose retry is
// due back on the run queue.
func (s *shard[E]) wake() {
	s.mu.Lock()
	push := s.scheduleLocked()
	s.mu.Unlock()
	if push {
		s.e.runq <- s
	}
}

// dueBy reports whether a parked key's retry time has come by now.
func (s *shard[E]) dueBy(now time.Time) bool {
	return len(s.due) > 0 && !s.due[0].at.After(now)
}

// maxIdleBuffer is the largest FIFO buffer an idle shard keeps, in items:
// a burst's larger buffer is released when the shard drains.
const maxIdleBuffer = 256

// release gives back the room of n events the shard no longer holds. s.mu
// must be held.
func (s *shard[E]) release(n int) {
	q := s.e.cfg.QueueSize
	if s.occupied > q {
		s.e.over.Add(-int64(s.occupied - max(s.occupied-n, q)))
	}
	s.occupied -= n
}
