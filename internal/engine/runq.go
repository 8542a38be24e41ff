package engine

import (
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
)

// runQueue is an engine's run queue: the shards that have work for a
// worker, in the order they got it, and the workers that sleep.
//
// It is a bounded lock-free ring (Vyukov's MPMC queue), not a channel: one
// compare-and-swap puts a shard in and one takes it out, and a shard is in
// it at most once (its state says so), so a ring of Shards cells never
// fills. The order is first in, first out across shards, as a channel's.
//
// Wakes are never per event: a producer that queues a shard wakes a
// sleeping worker only when fewer workers are looking for work than shards
// wait (usually: none is looking), and it counts the woken worker as
// looking at once. A looking worker that finds a shard stops looking; if
// more shards wait than workers still look, it wakes one more. Every write that makes
// work visible is followed by a read of the lookers, and every worker that
// stops looking reads the ring after, so one of the two always sees the
// other: while a worker sleeps, no queued shard is left unseen. When no
// worker looks, a producer gives its shard to a sleeper with the wake
// instead of queueing it (handOff): the shard never enters the ring.
type runQueue struct {
	cells    []cell
	mask     uint64
	_        [40]byte
	head     atomic.Uint64 // next cell to take
	_        [56]byte
	tail     atomic.Uint64 // next cell to fill
	_        [56]byte
	looking  atomic.Int32 // workers looking for a shard (or woken to)
	_        [60]byte
	sleepers atomic.Int32 // workers in sleeping
	mu       sync.Mutex
	sleeping []*sleeper
}

// cell is one place of the ring: seq says whose turn it is (filled when
// seq = position+1, free for position when seq = position).
type cell struct {
	seq   atomic.Uint64
	shard int
}

// sleeper is a worker's wake-up line.
type sleeper struct {
	wake chan struct{} // capacity 1
	// shard is a shard handed to the worker with its wake (see handOff),
	// or -1. The waker writes it before its send and the worker reads it
	// after its receive.
	shard int
}

func (q *runQueue) init(shards, workers int) {
	n := 1 << bits.Len(uint(max(shards, 2)-1))
	q.cells, q.mask = make([]cell, n), uint64(n-1)
	q.sleeping = make([]*sleeper, 0, workers)
	for i := range q.cells {
		q.cells[i].seq.Store(uint64(i))
	}
}

// mark queues shard i, which is not in the queue. The caller then wakes a
// worker if wakeNeeded says so.
func (q *runQueue) mark(i int) {
	pos := q.tail.Load()
	for {
		c := &q.cells[pos&q.mask]
		seq := c.seq.Load()
		switch d := int64(seq - pos); {
		case d == 0:
			if q.tail.CompareAndSwap(pos, pos+1) {
				c.shard = i
				c.seq.Store(pos + 1)
				return
			}
			pos = q.tail.Load()
		case d < 0:
			// Full: never, as the ring has a cell per shard; were it,
			// wait for a worker to take one.
			runtime.Gosched()
			pos = q.tail.Load()
		default:
			pos = q.tail.Load()
		}
	}
}

// wakeNeeded reports whether, after mark, a sleeping worker must be woken:
// one sleeps, and the workers looking for work are fewer than the shards
// queued (none looking, in the common case of one shard queued).
func (q *runQueue) wakeNeeded() bool {
	return q.sleepers.Load() > 0 && q.short(q.looking.Load())
}

// short reports whether the queued shards outnumber the given lookers.
func (q *runQueue) short(lookers int32) bool {
	return lookers <= 0 || int64(q.tail.Load()-q.head.Load()) > int64(lookers)
}

// any reports whether a queued shard can be taken now.
func (q *runQueue) any() bool {
	pos := q.head.Load()
	return q.cells[pos&q.mask].seq.Load() == pos+1
}

// claim takes the shard queued first; it returns its index, or -1 when
// none can be taken now.
func (q *runQueue) claim() int {
	pos := q.head.Load()
	for {
		c := &q.cells[pos&q.mask]
		seq := c.seq.Load()
		switch d := int64(seq - (pos + 1)); {
		case d == 0:
			if q.head.CompareAndSwap(pos, pos+1) {
				i := c.shard
				c.seq.Store(pos + q.mask + 1)
				return i
			}
			pos = q.head.Load()
		case d < 0:
			return -1
		default:
			pos = q.head.Load()
		}
	}
}

// handOff gives shard i, scheduled and not in the ring, straight to a
// sleeping worker, which runs it without looking at the ring: the
// wake-up path from an add to an idle pool is one claim shorter. It
// returns false when no worker sleeps. The woken worker does not count
// as looking, as it has its shard; it wakes one more if shards wait (see
// worker.woken).
func (q *runQueue) handOff(i int) bool {
	s := q.popSleeper()
	if s == nil {
		return false
	}
	s.shard = i
	// Never blocks: a worker taken off the list receives exactly one wake
	// before it sleeps again, so its line is empty here.
	s.wake <- struct{}{}
	return true
}

// wakeOne wakes a sleeping worker, counted as looking from now on.
func (q *runQueue) wakeOne() {
	q.looking.Add(1)
	s := q.popSleeper()
	if s == nil {
		q.looking.Add(-1)
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// popSleeper takes the worker that went to sleep last off the sleeping
// list, or returns nil when none sleeps. The caller then sends it its one
// wake.
func (q *runQueue) popSleeper() *sleeper {
	q.mu.Lock()
	n := len(q.sleeping)
	if n == 0 {
		q.mu.Unlock()
		return nil
	}
	s := q.sleeping[n-1]
	q.sleeping[n-1] = nil
	q.sleeping = q.sleeping[:n-1]
	q.sleepers.Add(-1)
	q.mu.Unlock()
	return s
}

// wakeAll wakes every sleeping worker, each counted as looking, so that
// it sees a stop, abort or retirement flag set before the call.
func (q *runQueue) wakeAll() {
	q.mu.Lock()
	for i, s := range q.sleeping {
		q.looking.Add(1)
		q.sleepers.Add(-1)
		q.sleeping[i] = nil
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	q.sleeping = q.sleeping[:0]
	q.mu.Unlock()
}

// found ends a worker's looking once it claimed a shard, and wakes one
// more worker if more shards wait than workers look.
func (q *runQueue) found() {
	if l := q.looking.Add(-1); q.sleepers.Load() > 0 && q.any() && q.short(l) {
		q.wakeOne()
	}
}

// more wakes one more worker, after a claim made without looking, if more
// shards wait than workers look.
func (q *runQueue) more() {
	if q.sleepers.Load() > 0 && q.any() && q.short(q.looking.Load()) {
		q.wakeOne()
	}
}

// sleep registers s as sleeping; the worker must then look at the bitmap
// once more before it waits (see unsleep).
func (q *runQueue) sleep(s *sleeper) {
	q.mu.Lock()
	q.sleeping = append(q.sleeping, s)
	q.sleepers.Add(1)
	q.mu.Unlock()
}

// unsleep takes s off the sleeping list. It returns false when a waker took
// it off first: a wake is then on its way to s, and s counts as looking.
func (q *runQueue) unsleep(s *sleeper) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, x := range q.sleeping {
		if x == s {
			last := len(q.sleeping) - 1
			q.sleeping[i] = q.sleeping[last]
			q.sleeping[last] = nil
			q.sleeping = q.sleeping[:last]
			q.sleepers.Add(-1)
			return true
		}
	}
	return false
}
