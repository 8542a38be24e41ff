package engine

import (
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/imbus/eventbus/internal/goid"
)

// worker owns one shard: it drains the FIFO a batch at a time, runs units,
// parks keys whose unit waits for a retry and runs them again when due.
//
// All of a worker's state lives here rather than on its goroutine's stack,
// so that when a handler calls runtime.Goexit a new goroutine can carry on
// exactly where the old one stopped.
type worker[E any] struct {
	e  *Engine[E]
	s  *shard[E]
	id int

	batch []Item[E] // items in hand, swapped out of the shard
	pos   int       // next item of batch to run
	// taken marks items of batch merged into an earlier unit; it is sized
	// only once gather merges something (anyTaken).
	taken    []bool
	anyTaken bool
	seq      uint64    // last unit ID given; a new block starts at multiples of idBlock
	group    []Item[E] // scratch for merged units
	unit     Unit[E]   // scratch for the unit being run

	parked map[uint64]*parkedKey[E]
	due    dueHeap
	timer  *time.Timer

	// set while execute runs a parked unit, for Goexit recovery
	curPK  *parkedKey[E]
	curKey uint64

	done   int // completions not yet published to the shard's occupancy
	pub    published
	sample int
	lat    histogram

	goid atomic.Int64
}

// parkedKey holds, in order, the units of one key that wait behind a
// failed unit: the head is the one to retry, the rest arrived after it.
type parkedKey[E any] struct {
	units    []*Unit[E]
	retrying bool // the head has failed and waits for its retry time
}

// published holds a worker's counters for Stats readers. The worker updates
// them as units finish (one atomic add per unit), so Stats stay live even
// while a batch runs.
type published struct {
	handled, stopped, deadLettered, failed, retried, panics, timeouts atomic.Uint64
	retrying, followers                                               atomic.Int64
	// finishedPublished is how many finished events the shard's occupancy
	// already accounts for; written under the shard's lock.
	finishedPublished uint64
}

// finished returns how many events the worker has finished in all.
func (p *published) finished() uint64 {
	return p.handled.Load() + p.stopped.Load() + p.deadLettered.Load()
}

func newWorker[E any](e *Engine[E], s *shard[E], id int) *worker[E] {
	w := &worker[E]{
		e: e, s: s, id: id,
		parked: make(map[uint64]*parkedKey[E]),
		sample: e.cfg.SampleEvery - 1, // time the very first unit
	}
	w.timer = time.AfterFunc(time.Hour, w.poke)
	w.timer.Stop()
	return w
}

// run is the worker goroutine. If user code running on it (a handler, a
// dead-letter sink, an observer) calls runtime.Goexit, the goroutine ends
// without returning from next; the deferred function then starts another
// one, which carries on from the state kept in w.
func (w *worker[E]) run() {
	returned := false
	defer func() {
		if !returned {
			w.e.running.Add(1)
			go w.run()
		}
		w.e.exit()
	}()
	w.goid.Store(goid.Get())
	for w.next() {
	}
	w.goid.Store(0)
	returned = true
}

// next runs one item of the batch in hand, or fetches the next batch. It
// returns false when the worker must exit.
func (w *worker[E]) next() bool {
	if w.e.life.aborted.Load() {
		w.abortAll()
		return false
	}
	if w.pos < len(w.batch) {
		w.step()
		return true
	}
	return w.refill()
}

// step runs the next item of the batch, or parks it behind its key.
func (w *worker[E]) step() {
	it := &w.batch[w.pos]
	w.pos++
	if w.anyTaken && w.taken[w.pos-1] {
		return
	}
	if len(w.parked) > 0 {
		if pk, ok := w.parked[it.Key]; ok {
			pk.units = append(pk.units, &Unit[E]{ID: w.newID(), Items: []Item[E]{*it}, Event: it.Event})
			w.pub.followers.Add(1)
			return
		}
	}
	// Field by field: a whole-struct copy into heap memory goes through
	// typedmemmove and is measurably slower here.
	u := &w.unit
	u.ID, u.Items, u.Event = w.newID(), w.batch[w.pos-1:w.pos:w.pos], it.Event
	u.Chain, u.Index, u.Attempt, u.Err, u.Took = nil, 0, 0, nil, 0
	if w.e.cfg.Batching {
		if limit := w.e.d.BatchLimit(it); limit > 1 {
			w.gather(it, limit, u)
		}
	}
	w.curPK = nil
	v := w.execute(u)
	if v.Outcome == Handled { // the common case, without settle's detour
		w.pub.handled.Add(uint64(len(u.Items)))
		w.done += len(u.Items)
	} else {
		w.settle(u, v)
	}
	if len(u.Items) > 1 {
		clear(w.group)
	}
}

// newID returns a unit ID unique in the process, taken from the worker's
// current block of IDs.
func (w *worker[E]) newID() uint64 {
	if w.seq%idBlock == 0 {
		w.seq = (idBlocks.Add(1) - 1) * idBlock
	}
	w.seq++
	return w.seq
}

// scanWindow bounds how far ahead gather looks for items of the same key.
const scanWindow = 4096

// gather merges into u the items of head's key that follow it in the batch,
// up to limit, stopping at the first one the dispatcher will not merge.
// Items of other keys are skipped: merging them ahead changes no key's order.
//
// A run of mergeable items right after head (one busy key) becomes the
// unit as a sub-slice of the batch, with no copy; items found past an item
// of another key are copied into w.group and marked taken.
func (w *worker[E]) gather(head *Item[E], limit int, u *Unit[E]) {
	start := w.pos - 1 // head's index
	end := min(len(w.batch), start+scanWindow)
	j := w.pos
	for j < end && j-start < limit {
		if (w.anyTaken && w.taken[j]) || w.batch[j].Key != head.Key {
			break
		}
		j++
	}
	// One dispatcher call for the whole run of head's key.
	if k := w.pos + w.e.d.Mergeable(head, w.batch[w.pos:j]); k < j || j == end ||
		j-start == limit || w.batch[j].Key == head.Key {
		// The run is the whole unit: a same-key item that does not merge
		// (nothing after it may join), limit reached or end of the window.
		j = min(j, k)
		if j-start > 1 {
			u.Items = w.batch[start:j:j]
			w.pos = j
			w.e.d.Merge(u)
		}
		return
	}
	w.group = append(w.group[:0], w.batch[start:j]...)
	w.pos = j
	for ; j < end && len(w.group) < limit; j++ {
		it := &w.batch[j]
		if (w.anyTaken && w.taken[j]) || it.Key != head.Key {
			continue
		}
		if w.e.d.Mergeable(head, w.batch[j:j+1]) == 0 {
			break
		}
		w.group = append(w.group, *it)
		if !w.anyTaken {
			w.taken = append(w.taken[:0], make([]bool, len(w.batch))...)
			w.anyTaken = true
		}
		w.taken[j] = true
	}
	if len(w.group) > 1 {
		u.Items = w.group
		w.e.d.Merge(u)
	}
}

// execute runs u through the dispatcher, timing one run in SampleEvery. If a
// handler calls runtime.Goexit, the deferred function settles u as failed
// and starts a goroutine to replace this one.
func (w *worker[E]) execute(u *Unit[E]) (v Verdict) {
	returned := false
	defer func() {
		if returned {
			return
		}
		// A handler called runtime.Goexit: settle u as failed; run's
		// deferred function replaces the goroutine.
		v = w.e.d.Goexited(w.id, u)
		if pk := w.curPK; pk != nil {
			w.curPK = nil
			w.settleParked(w.curKey, pk, u, v)
		} else {
			w.settle(u, v)
			if len(u.Items) > 1 {
				clear(w.group)
			}
		}
	}()
	w.sample++
	if w.sample >= w.e.cfg.SampleEvery {
		w.sample = 0
		// Monotonic readings only: time.Now also reads the wall clock.
		start := w.e.Since()
		v = w.e.d.Run(w.id, u)
		w.lat.record(w.e.Since() - start)
	} else {
		v = w.e.d.Run(w.id, u)
	}
	returned = true
	return v
}

// count records the failure kind of a run, once per original event: a
// failing batch of n events counts n failed attempts.
func (w *worker[E]) count(v Verdict, n uint64) {
	if !v.Failed {
		return
	}
	w.pub.failed.Add(n)
	if v.Panicked {
		w.pub.panics.Add(n)
	}
	if v.TimedOut {
		w.pub.timeouts.Add(n)
	}
	if v.Outcome == Retry {
		w.pub.retried.Add(n)
	}
}

// settle records the verdict of a unit taken from the batch.
func (w *worker[E]) settle(u *Unit[E], v Verdict) {
	w.count(v, uint64(len(u.Items)))
	if v.Outcome != Retry {
		w.finish(u, v)
		return
	}
	parked := &Unit[E]{ID: u.ID, Items: slices.Clone(u.Items), Event: u.Event,
		Chain: u.Chain, Index: u.Index, Attempt: u.Attempt, Err: u.Err}
	w.parked[u.Key()] = &parkedKey[E]{units: []*Unit[E]{parked}, retrying: true}
	w.pub.retrying.Add(int64(len(parked.Items)))
	w.due.push(time.Now().Add(v.Delay), u.Key())
}

// settleParked records the verdict of the head unit of a parked key.
func (w *worker[E]) settleParked(key uint64, pk *parkedKey[E], u *Unit[E], v Verdict) {
	w.count(v, uint64(len(u.Items)))
	n := int64(len(u.Items))
	if v.Outcome == Retry {
		if !pk.retrying {
			pk.retrying = true
			w.pub.followers.Add(-n)
			w.pub.retrying.Add(n)
		}
		w.due.push(time.Now().Add(v.Delay), key) // the wait starts when the attempt ended
		return
	}
	w.finish(u, v)
	if pk.retrying {
		w.pub.retrying.Add(-n)
	} else {
		w.pub.followers.Add(-n)
	}
	pk.retrying = false
	pk.units[0] = nil
	pk.units = pk.units[1:]
	if len(pk.units) == 0 {
		delete(w.parked, key)
		return
	}
	w.due.push(time.Time{}, key) // the next unit of the key is due at once
}

// finish counts a unit that reached an end and hands dead ones to the sink.
func (w *worker[E]) finish(u *Unit[E], v Verdict) {
	n := uint64(len(u.Items))
	switch v.Outcome {
	case Handled:
		w.pub.handled.Add(n)
	case Stopped:
		w.pub.stopped.Add(n)
	case Dead:
		// Counted first: the sink is user code and may not return.
		w.pub.deadLettered.Add(n)
		w.done += len(u.Items)
		w.e.d.DeadLetter(u, v.Err)
		return
	}
	w.done += len(u.Items)
}

// runDue runs the parked units whose time has come.
func (w *worker[E]) runDue(now time.Time) {
	for len(w.due) > 0 && !w.due[0].at.After(now) {
		if w.e.life.aborted.Load() {
			return
		}
		key := w.due.pop()
		pk := w.parked[key]
		if pk == nil {
			continue
		}
		u := pk.units[0]
		w.curPK, w.curKey = pk, key
		v := w.execute(u)
		w.curPK = nil
		w.settleParked(key, pk, u, v)
	}
}

// refill publishes what the worker finished and takes the next batch,
// sleeping until there is one. It returns false when the worker must exit.
func (w *worker[E]) refill() bool {
	clear(w.batch)
	w.batch, w.pos = w.batch[:0], 0
	// Drop the scratch unit's references, or an idle worker would keep
	// its last event alive.
	u := &w.unit
	u.Items, u.Event, u.Chain, u.Err = nil, *new(E), nil, nil
	if w.anyTaken {
		clear(w.taken)
		w.anyTaken = false
	}
	s, l := w.s, w.e.life
	for {
		if len(w.due) > 0 {
			if now := time.Now(); !w.due[0].at.After(now) {
				w.runDue(now)
			}
		}
		if l.aborted.Load() {
			w.abortAll()
			return false
		}
		s.mu.Lock()
		s.sleeping = false
		w.publishLocked()
		if len(s.items) > 0 {
			w.batch, s.items = s.items, w.batch
			s.mu.Unlock()
			return true
		}
		idle := s.occupied == 0
		if idle && l.stopping() {
			s.stopped = true
			s.mu.Unlock()
			return false
		}
		s.sleeping = true
		s.mu.Unlock()
		if idle {
			l.notifyIdle()
		}
		armed := len(w.due) > 0
		if armed {
			w.timer.Reset(time.Until(w.due[0].at))
		}
		// One channel wakes the worker for everything: new items (a
		// producer that saw sleeping), a retry coming due (the timer),
		// Stop and Abort (Engine.WakeAll). A plain receive is quicker than
		// a select over four channels, and every reason is checked again
		// at the top of the loop, so a stray token costs one loop.
		<-s.wake
		if armed { // a wake-up with no retry waiting skips the timer's lock
			w.timer.Stop()
		}
	}
}

// poke wakes the worker if it sleeps; it never blocks.
func (w *worker[E]) poke() {
	select {
	case w.s.wake <- struct{}{}:
	default:
	}
}

// publishLocked makes the worker's completions and counts visible and
// wakes producers waiting for room. s.mu must be held.
func (w *worker[E]) publishLocked() {
	if w.done == 0 {
		return
	}
	s := w.s
	s.occupied -= w.done
	s.doneCount += uint64(w.done)
	w.pub.finishedPublished += uint64(w.done)
	w.done = 0
	if s.space != nil && s.occupied < w.e.cfg.QueueSize {
		close(s.space)
		s.space = nil
	}
}

// abortAll dead-letters everything the worker holds or could still take,
// stops the shard and publishes the result. Each item leaves the worker's
// state before the sink sees it, so that if the sink calls runtime.Goexit
// the replacement goroutine carries on without repeating or losing one.
func (w *worker[E]) abortAll() {
	closed := w.e.cfg.ErrClosed
	s := w.s
	for {
		for w.pos < len(w.batch) {
			i := w.pos
			w.pos++
			if w.anyTaken && w.taken[i] {
				continue
			}
			it := w.batch[i]
			w.finish(&Unit[E]{Items: []Item[E]{it}, Event: it.Event}, Verdict{Outcome: Dead, Err: closed})
		}
		// Then whatever is still queued, unless Close's Abort took it.
		s.mu.Lock()
		s.stopped = true
		queued := s.items
		s.items = nil
		s.mu.Unlock()
		if len(queued) == 0 {
			break
		}
		clear(w.batch)
		w.batch, w.pos = queued, 0
		if w.anyTaken {
			clear(w.taken)
			w.anyTaken = false
		}
	}
	for key, pk := range w.parked {
		for len(pk.units) > 0 {
			u := pk.units[0]
			pk.units[0] = nil
			pk.units = pk.units[1:]
			err := closed
			if u.Err != nil {
				err = errors.Join(closed, u.Err)
			}
			w.finish(u, Verdict{Outcome: Dead, Err: err})
		}
		delete(w.parked, key)
	}
	w.pub.retrying.Store(0)
	w.pub.followers.Store(0)
	w.due = w.due[:0]
	s.mu.Lock()
	w.publishLocked()
	s.mu.Unlock()
}
