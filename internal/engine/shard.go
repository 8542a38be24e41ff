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

// maxIdleBuffer is the largest FIFO buffer, in items, that a shard or a
// worker keeps for long once its engine goes quiet. A burst's larger
// buffers are kept for trimDelay after the last worker went to sleep, so
// that a busy key whose worker keeps catching up does not grow its buffer
// again and again, and then released.
const maxIdleBuffer = 256

// trimDelay is how long an engine keeps a burst's buffers after a worker
// went to sleep.
var trimDelay = time.Second

// noteOversized remembers a shard left idle with a buffer above
// maxIdleBuffer, for the next trim.
func (e *Engine[E]) noteOversized(s *shard[E]) {
	e.oversizedMu.Lock()
	e.oversized = append(e.oversized, s)
	e.oversizedMu.Unlock()
}

// parkBuffer keeps a sleeping worker's large batch buffer for the next
// worker that needs one, until the next trim.
func (e *Engine[E]) parkBuffer(b []Item[E]) {
	e.oversizedMu.Lock()
	e.spares = append(e.spares, b[:0])
	e.oversizedMu.Unlock()
}

// spareBuffer returns a parked buffer, or nil.
func (e *Engine[E]) spareBuffer() []Item[E] {
	e.oversizedMu.Lock()
	defer e.oversizedMu.Unlock()
	if n := len(e.spares); n > 0 {
		b := e.spares[n-1]
		e.spares[n-1] = nil
		e.spares = e.spares[:n-1]
		return b
	}
	return nil
}

// armTrim makes sure a trim runs trimDelay from now if there is something
// to trim. One timer, armed only after bursts: an idle bus does nothing.
func (e *Engine[E]) armTrim() {
	e.oversizedMu.Lock()
	defer e.oversizedMu.Unlock()
	if e.trimArmed || (len(e.oversized) == 0 && len(e.spares) == 0) {
		return
	}
	e.trimArmed = true
	if e.trimTimer == nil {
		e.trimTimer = time.AfterFunc(trimDelay, e.trim)
	} else {
		e.trimTimer.Reset(trimDelay)
	}
}

// trim releases parked buffers and the large buffers of shards that are
// still idle and empty.
func (e *Engine[E]) trim() {
	e.oversizedMu.Lock()
	list := e.oversized
	e.oversized, e.trimArmed = nil, false
	clear(e.spares)
	e.spares = e.spares[:0]
	e.oversizedMu.Unlock()
	for _, s := range list {
		s.mu.Lock()
		if s.state == idle && len(s.items) == 0 && cap(s.items) > maxIdleBuffer {
			s.items = nil
		}
		s.mu.Unlock()
	}
}

// stopTrim stops the trim timer (engines that exit).
func (e *Engine[E]) stopTrim() {
	e.oversizedMu.Lock()
	defer e.oversizedMu.Unlock()
	if e.trimTimer != nil {
		e.trimTimer.Stop()
	}
	e.trimArmed = false
}

// release gives back the room of n events the shard no longer holds. s.mu
// must be held.
func (s *shard[E]) release(n int) {
	q := s.e.cfg.QueueSize
	if s.occupied > q {
		s.e.over.Add(-int64(s.occupied - max(s.occupied-n, q)))
	}
	s.occupied -= n
}
