package engine

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// runQueue is an engine's run queue: which shards have work for a worker,
// and which workers sleep.
//
// It is a bitmap, not a channel: one atomic OR marks a shard runnable and
// one atomic AND claims it; a summary word (one bit per group of bitmap
// words) answers "is any shard waiting?" with one load. Each worker scans
// from where its last claim was, so every runnable shard is reached within
// one sweep.
//
// Wakes are never per event: a producer that marks a shard wakes a
// sleeping worker only when no worker is looking for work, and it counts
// the woken worker as looking at once, so at most one is woken at a time.
// A looking worker that finds a shard stops looking; if it was the last
// one and more shards wait, it wakes one more. Every write that makes
// work visible is followed by a read of the lookers, and every worker that
// stops looking reads the bitmap after, so one of the two always sees the
// other: while a worker sleeps, no runnable shard is left unseen.
type runQueue struct {
	ready    []atomic.Uint64 // bit i: shard i is runnable and unclaimed
	sumShift uint            // bitmap word w is summarised by bit w>>sumShift
	_        [40]byte
	summary  atomic.Uint64
	_        [56]byte
	looking  atomic.Int32 // workers looking for a shard (or woken to)
	_        [60]byte
	sleepers atomic.Int32 // workers in sleeping
	mu       sync.Mutex
	sleeping []*sleeper
}

// sleeper is a worker's wake-up line.
type sleeper struct {
	wake chan struct{} // capacity 1
}

func newRunQueue(shards, workers int) runQueue {
	words := (shards + 63) / 64
	return runQueue{
		ready:    make([]atomic.Uint64, words),
		sumShift: uint(max(0, bits.Len(uint(words-1))-6)),
		sleeping: make([]*sleeper, 0, workers),
	}
}

// mark makes shard i runnable. It reports whether a sleeping worker must
// be woken (see wakeNeeded); the caller calls wakeOne then.
func (q *runQueue) mark(i int) {
	w := i >> 6
	q.ready[w].Or(1 << (i & 63))
	if g := uint64(1) << (w >> q.sumShift); q.summary.Load()&g == 0 {
		q.summary.Or(g)
	}
}

// wakeNeeded reports whether, after mark, a sleeping worker must be woken:
// none is looking and one sleeps.
func (q *runQueue) wakeNeeded() bool {
	return q.looking.Load() == 0 && q.sleepers.Load() > 0
}

// any reports whether a shard may be runnable.
func (q *runQueue) any() bool { return q.summary.Load() != 0 }

// claim takes a runnable shard, scanning from index from; it returns its
// index, or -1 when there is none.
func (q *runQueue) claim(from int) int {
	nw := len(q.ready)
	for {
		sum := q.summary.Load()
		if sum == 0 {
			return -1
		}
		startWord := (from >> 6) % nw
		startGroup := startWord >> q.sumShift
		g := (bits.TrailingZeros64(bits.RotateLeft64(sum, -startGroup)) + startGroup) & 63
		lo, hi := g<<q.sumShift, min((g+1)<<q.sumShift, nw)
		for wi := lo; wi < hi; wi++ {
			for {
				word := q.ready[wi].Load()
				if word == 0 {
					break
				}
				rot := 0
				if wi == startWord {
					rot = from & 63
				}
				b := (bits.TrailingZeros64(bits.RotateLeft64(word, -rot)) + rot) & 63
				bit := uint64(1) << b
				if q.ready[wi].And(^bit)&bit != 0 {
					return wi<<6 | b
				}
			}
		}
		// The group looked empty: clear its summary bit, then look again,
		// so that a shard marked meanwhile keeps it set.
		gb := uint64(1) << g
		q.summary.And(^gb)
		for wi := lo; wi < hi; wi++ {
			if q.ready[wi].Load() != 0 {
				q.summary.Or(gb)
				break
			}
		}
	}
}

// wakeOne wakes a sleeping worker, counted as looking, unless a worker is
// looking already.
func (q *runQueue) wakeOne() {
	if !q.looking.CompareAndSwap(0, 1) {
		return
	}
	q.mu.Lock()
	n := len(q.sleeping)
	if n == 0 {
		q.mu.Unlock()
		q.looking.Add(-1)
		return
	}
	s := q.sleeping[n-1]
	q.sleeping[n-1] = nil
	q.sleeping = q.sleeping[:n-1]
	q.sleepers.Add(-1)
	q.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// found ends a worker's looking once it claimed a shard: the last looker
// wakes one more worker if more shards wait.
func (q *runQueue) found() {
	if q.looking.Add(-1) == 0 && q.any() && q.sleepers.Load() > 0 {
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
