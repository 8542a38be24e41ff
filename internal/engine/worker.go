package engine

import (
	"errors"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/imbus/eventbus/internal/goid"
)

// worker takes shards with work from the run queue and drains them: it
// swaps a shard's FIFO out, runs its units, parks keys whose unit waits for
// a retry and runs them again when due, then takes more from the same
// shard while no other shard waits, or puts the shard back.
//
// All of a worker's state lives here and in the shard it holds rather than
// on its goroutine's stack, so that when user code calls runtime.Goexit a
// new goroutine can carry on exactly where the old one stopped.
type worker[E any] struct {
	e  *Engine[E]
	id int

	cur *shard[E] // the shard held; nil between shards
	// rt is cur.rt, kept here so that a step reads the worker's own
	// memory, not the shard's first cache line that producers write.
	rt     *retries[E]
	sl     sleeper
	rounds int // FIFO swaps taken from cur since it was taken
	// gathering allows a gathering pause in cur (see gatherPause); a pause
	// that gathered little clears it until the worker lets cur go.
	gathering bool
	// takenAt is the clock's reading (w.last) when the worker last took
	// from cur, 0 when not known: the producer's rate since then sizes the
	// next gathering pause (see pauseFor).
	takenAt int64
	pauses  atomic.Uint64 // gathering pauses made, for tests

	// batch is the items in hand, taken from cur's FIFO: one (its first
	// item), then each segment of the list in turn (seg, the one run; segs,
	// those still to run), or, in a batching engine, all of them copied
	// into buf so that gather sees one key's adjacent items together.
	batch []Item[E]
	pos   int // next item of batch to run
	one   [1]Item[E]
	seg   *segment[E]
	segs  *segment[E]
	buf   []Item[E]
	// taken marks items of batch merged into an earlier unit; it is sized
	// only once gather merges something (anyTaken).
	taken    []bool
	anyTaken bool
	ids      idSource  // unit IDs
	group    []Item[E] // scratch for merged units
	unit     Unit[E]   // scratch for the unit being run

	// plain runs the batch's plain stretches (see runPlain): the
	// dispatcher, when it is a PlainRunner and the engine does not
	// observe; nil otherwise. plainFrom is the batch position the
	// stretch being run starts at, -1 outside one.
	plain     PlainRunner[E]
	plainFrom int
	pl        Plain

	// running is the unit execute runs, and curPK and curKey its parked
	// key when it is a parked unit: what the goroutine's deferred function
	// settles if a handler calls runtime.Goexit (see run).
	running *Unit[E]
	curPK   *parkedKey[E]
	curKey  uint64

	cb callbacks[E] // user callbacks still due for a settled unit

	done int // finished events of cur whose room is not yet given back
	// lat holds the run times of the current window (lat[win]) and of the
	// one before; last is when the current stretch of runs started (0: not
	// in one) and runs how many runs it holds (see timeRun).
	lat      [2]histogram
	win      int
	winStart int64
	last     int64
	runs     int

	goid atomic.Int64
	gate Gate // see Gate; written only by this worker, read by Close
	_    [64]byte
	pub  published
}

// callbacks is the progress of the user callbacks of one settled unit: its
// dead letters one item at a time, the observer, then the trackers. Each
// step is marked done before its callback runs, so a callback that calls
// runtime.Goexit is neither repeated nor followed by a lost step.
type callbacks[E any] struct {
	u     *Unit[E]
	v     Verdict
	stage uint8
	next  int
}

// published holds a worker's counters for Stats readers. The worker updates
// them as units finish (one atomic add per unit), so Stats stay live even
// while a batch runs; Stats sums them over workers.
type published struct {
	handled, stopped, deadLettered, abandoned atomic.Uint64
	taken                                     atomic.Uint64 // items swapped out of FIFOs
	failed, retried, panics, timeouts         atomic.Uint64
	retrying, followers                       atomic.Int64
	// callbacks counts units whose callbacks have not all run: their
	// events are finished, but not yet for Idle.
	callbacks atomic.Int64
	_         [48]byte
}

// finished returns how many events the worker has finished in all.
func (p *published) finished() uint64 {
	return p.handled.Load() + p.stopped.Load() + p.deadLettered.Load() + p.abandoned.Load()
}

// settled returns a lower bound of the events the worker has finished
// and run every callback of (dead letters, observer, trackers): a unit
// with callbacks pending counts as one event short, so a pending batch
// still keeps its engine from looking idle.
func (p *published) settled() uint64 {
	return p.finished() - uint64(p.callbacks.Load())
}

func newWorker[E any](e *Engine[E], id int) *worker[E] {
	w := &worker[E]{e: e, id: id, sl: sleeper{wake: make(chan struct{}, 1), shard: -1}, plainFrom: -1}
	w.pl = Plain{ids: &w.ids, handled: &w.pub.handled, waiters: &e.spaceWaiters, giveBack: w.plainGiveBack}
	if pr, ok := e.d.(PlainRunner[E]); ok && !e.cfg.Observe {
		w.plain = pr
	}
	return w
}

// IsWorkerGoroutine reports whether the calling goroutine is one of the
// engine's workers.
func (e *Engine[E]) IsWorkerGoroutine() bool { return e.IsWorker(goid.Get()) }

// run is the worker goroutine. If user code running on it (a handler, a
// dead-letter sink, an observer) calls runtime.Goexit, the goroutine ends
// without returning from next; the deferred function then starts another
// one, which carries on from the state kept in w.
func (w *worker[E]) run() {
	returned := false
	defer func() {
		if !returned {
			// This goroutine ends: its identity may go to another one.
			w.goid.Store(0)
			if w.running != nil {
				w.goexited()
			}
			w.e.running.Add(1)
			go w.run()
		}
		w.e.exit()
	}()
	w.goid.Store(goid.Get())
	for w.loop() {
	}
	w.goid.Store(0)
	returned = true
}

// loop calls next until the worker must exit (false), or until a panic left
// a handler's run (true, once it is settled as that handler's failure):
// one deferred function for all the runs of a worker, instead of one per
// handler call. A panic outside a run (none is expected) and a Goexit are
// not recovered here; run's deferred function sees them.
func (w *worker[E]) loop() (recovered bool) {
	defer func() {
		if w.running == nil {
			return
		}
		if r := recover(); r != nil {
			w.panicked(r)
			recovered = true
		}
	}()
	for w.next() {
	}
	return false
}

// next does one step of work: a callback left by a Goexit, one unit of the
// batch in hand, the next batch of the shard held, or the next shard. It
// returns false when the worker must exit.
func (w *worker[E]) next() bool {
	if w.cb.u != nil {
		w.callbacks()
		return true
	}
	if w.id < 0 || w.e.life.aborted.Load() { // the reaper only gives up
		w.abortAll()
		return false
	}
	if w.pos < len(w.batch) {
		// The batch in hand, run after run without coming back here, until
		// it ends or a run leaves callbacks due or finds the bus aborted
		// (both seen above at the next call).
		for {
			if w.plain != nil && w.plainNext() {
				w.runPlain()
			} else {
				w.step()
			}
			if w.pos >= len(w.batch) || w.cb.u != nil || w.e.life.aborted.Load() {
				return true
			}
		}
	}
	if w.advance() {
		return true
	}
	if w.cur != nil {
		w.refill()
		return true
	}
	if w.e.life.stopping() || w.e.quitting() {
		return false
	}
	s := w.take()
	if s != nil {
		w.cur, w.rt, w.rounds, w.gathering = s, s.rt, 0, true
	}
	return true
}

// take returns the next shard of the run queue, sleeping until there is
// one, or nil when the Lifecycle stops or aborts or the engine retires
// (see runQueue for when a sleeping worker is woken).
func (w *worker[E]) take() *shard[E] {
	q := &w.e.rq
	// A shard at once: no need to count as looking (producers may wake a
	// sleeper meanwhile; one more wake, never one less).
	if i := q.claim(); i >= 0 {
		q.more()
		return &w.e.shards[i]
	}
	q.looking.Add(1)
	tidied := false
	for {
		if i := q.claim(); i >= 0 {
			q.found()
			return &w.e.shards[i]
		}
		if !tidied {
			// Nothing to do: end the stretch of runs timed, let go of what
			// finished events left behind and park a burst's buffer
			// (released if no worker needs it soon), then sleep.
			tidied = true
			w.endStretch()
			w.last = 0 // the next run's start is read anew
			w.e.d.Idle(w.id)
			if cap(w.buf) > maxIdleBuffer {
				w.e.parkBuffer(w.buf)
				w.buf = nil
			}
			w.e.armTrim()
		}
		// Sleeping first, then no longer looking, then one more look: a
		// shard marked meanwhile is seen here or wakes a worker.
		q.sleep(&w.sl)
		q.looking.Add(-1)
		if q.any() {
			if q.unsleep(&w.sl) {
				q.looking.Add(1)
				continue
			}
			// A waker took this worker off the list: its wake is on the
			// way, and the worker counts as looking.
		}
		// Looked at after sleep registered the worker: a Lifecycle that
		// stops or aborts, or an engine that retires, sets its flag and
		// then wakes every sleeper (Lifecycle.wakeSleepers), so either
		// the flag is seen here or the wake reaches the worker.
		if w.mustExit() {
			if !q.unsleep(&w.sl) {
				// Woken as well: run the shard handed over, if any (its
				// events are accepted), or hand the looking on.
				if s := w.woken(); s != nil {
					return s
				}
				q.found()
			}
			return nil
		}
		// One channel, not a select over the stop signals: a select's
		// wake-up costs a few hundred nanoseconds more, on the path from
		// an add to an idle bus to its handler.
		if s := w.woken(); s != nil {
			return s
		}
		// Counted as looking by the waker.
	}
}

// woken waits for the worker's wake and returns the shard handed over
// with it (runQueue.handOff), or nil for a plain wake, after which the
// worker counts as looking. A worker handed a shard wakes one more if
// other shards wait and no worker looks for them.
func (w *worker[E]) woken() *shard[E] {
	<-w.sl.wake
	i := w.sl.shard
	if i < 0 {
		return nil
	}
	w.sl.shard = -1
	w.e.rq.more()
	return &w.e.shards[i]
}

// mustExit reports whether a worker with nothing to do exits rather than
// sleeps: the Lifecycle stops or aborts, or the engine retired and is idle.
func (w *worker[E]) mustExit() bool {
	l := w.e.life
	return l.stopping() || l.aborted.Load() || w.e.quitting()
}

// step runs the next item of the batch, or parks it behind its key.
func (w *worker[E]) step() {
	it := &w.batch[w.pos]
	w.pos++
	if w.anyTaken && w.taken[w.pos-1] {
		return
	}
	if rt := w.rt; rt != nil && len(rt.parked) > 0 {
		if pk, ok := rt.parked[it.Key]; ok {
			pu := &Unit[E]{ID: w.ids.Next(), Items: []Item[E]{*it}, Event: it.Event}
			if t := it.Track; t != nil {
				pu.ID, pu.Prior = w.trackedID(t, pu.ID), t.Prior
			}
			pk.units = append(pk.units, pu)
			w.pub.followers.Add(1)
			return
		}
	}
	// Field by field: a whole-struct copy into heap memory goes through
	// typedmemmove and is measurably slower here.
	u := &w.unit
	u.ID, u.Items, u.Event = w.ids.Next(), w.batch[w.pos-1:w.pos:w.pos], it.Event
	u.Chain, u.Index, u.Attempt, u.Err, u.Took, u.Waited, u.Prior = nil, 0, 0, nil, 0, 0, 0
	if t := it.Track; t != nil {
		u.ID, u.Prior = w.trackedID(t, u.ID), t.Prior
	}
	if w.e.cfg.Batching {
		if limit := w.e.d.BatchLimit(it); limit > 1 {
			w.gather(it, limit, u)
		}
	}
	w.curPK = nil
	// execute, written out (its call costs a tenth of a fast run).
	w.starting(u)
	v := w.e.d.Run(w.id, u)
	w.running = nil
	if w.midStretch(u, v) {
		w.runs++ // timeRun's common case, without its call
	} else {
		w.timeRun(u, v)
	}
	if v.Outcome == Handled && !w.e.cfg.Observe && !w.e.tracking.Load() {
		// The common case, without settle's detour.
		n := len(u.Items)
		w.pub.handled.Add(uint64(n))
		w.handled(n)
		if n > 1 {
			clear(w.group)
		}
		return
	}
	w.ran(u, v)
}

// handled takes note of n events of the batch counted handled on the
// common path (no callbacks due), and gives their room back early if
// producers wait.
func (w *worker[E]) handled(n int) {
	w.done += n
	if w.done >= w.e.giveBackEvery && w.e.spaceWaiters.Load() > 0 {
		w.giveBack()
	}
}

// plainNext reports whether the next item of the batch starts a plain
// stretch: items that need nothing of the worker between their runs, as
// no key of the shard is parked, no item is merged ahead or tracked (the
// engine tracks nothing yet), the item is of a type that is not batched
// (BatchLimit at most 1) and, by the worker's config, nothing is
// observed. The dispatcher then runs them in one call (runPlain) instead
// of one step each.
func (w *worker[E]) plainNext() bool {
	return !w.anyTaken && (w.rt == nil || len(w.rt.parked) == 0) && !w.e.tracking.Load() &&
		(!w.e.cfg.Batching || w.e.d.BatchLimit(&w.batch[w.pos]) <= 1)
}

// plainEnd returns where the plain stretch that starts at start ends, at
// most at end: before the first item that may merge with others (its
// BatchLimit above 1), which step runs. Only a batching engine has such
// items.
func (w *worker[E]) plainEnd(start, end int) int {
	if !w.e.cfg.Batching {
		return end
	}
	for j := start + 1; j < end; j++ {
		if w.e.d.BatchLimit(&w.batch[j]) > 1 {
			return j
		}
	}
	return end
}

// runPlain runs the plain stretch at w.pos through the dispatcher's
// RunPlain: up to the end of the batch, or of the stretch of runs timed
// with one clock reading, or to the first item that does not end Handled,
// which is then settled as step settles it. The stretch's runs are
// counted as step counts them one by one.
func (w *worker[E]) runPlain() {
	start := w.pos
	end := w.plainEnd(start, min(len(w.batch), start+max(stretchRuns-w.runs, 1)))
	u := &w.unit
	u.Took, u.Waited, u.Prior = 0, 0, 0
	w.curPK = nil
	w.pl.started, w.pl.given = 0, 0
	w.plainFrom = start
	w.starting(u)
	n, v := w.plain.RunPlain(w.id, u, w.batch[start:end], &w.pl)
	w.running = nil
	w.plainFrom = -1
	if n == end-start {
		// All handled (Plain.Start counted all but the last one): every
		// run but the last one was mid-stretch; the last one is timed as
		// step times it, before it counts as handled (see timeRun).
		w.pos = end
		w.runs += n - 1
		if w.midStretch(u, v) {
			w.runs++
		} else {
			w.timeRun(u, v)
		}
		w.pub.handled.Add(1)
		w.handled(n - w.pl.given)
		return
	}
	// Items [start, start+n) handled (and counted by Plain.Start),
	// mid-stretch; the next one ran and did not end Handled.
	w.pos = start + n + 1
	w.runs += n
	w.timeRun(u, v)
	w.done += n - w.pl.given
	w.ran(u, v)
}

// plainGiveBack takes note of the items of the plain stretch that ended
// so far and gives their room back if enough of them did, for producers
// waiting for it: Plain.Start calls it then, between the runs of the
// stretch, as step does between its runs.
func (w *worker[E]) plainGiveBack() {
	w.handled(w.pl.started - w.pl.given)
	w.pl.given = w.pl.started
}

// plainLeft accounts for a runPlain call that a handler's panic or Goexit
// left: the items before the one whose handler panicked ended Handled
// (and Plain.Start counted them). The caller then settles that one,
// described by w.running.
func (w *worker[E]) plainLeft() {
	if w.plainFrom < 0 {
		return
	}
	i := max(w.pl.started-1, 0) // the item running: the last one started
	w.pos = w.plainFrom + i + 1
	w.runs += i
	w.done += i - w.pl.given
	w.plainFrom = -1
}

// ran settles u, the unit of the batch just run, with its verdict v, when
// that needs more than counting it handled: callbacks, a retry, a failure.
func (w *worker[E]) ran(u *Unit[E], v Verdict) {
	w.settle(u, v)
	w.callbacks()
	if len(u.Items) > 1 {
		clear(w.group)
	}
}

// takeLocked takes s's whole FIFO into the worker's hands and returns how
// many items it held. s.mu must be held.
func (w *worker[E]) takeLocked(s *shard[E]) int {
	n, head := s.drainLocked(&w.one[0])
	if n > 0 {
		w.batch, w.pos, w.segs = w.one[:1], 0, head
	}
	return n
}

// flatten copies the segments taken into buf after the first item, and
// gives them back (batching engines: gather merges across segments).
func (w *worker[E]) flatten() {
	if w.buf == nil {
		w.buf = w.e.spareBuffer()
	}
	w.buf = append(w.buf[:0], w.one[0])
	w.one[0] = Item[E]{}
	w.e.putList(w.segs, func(seg *segment[E]) { w.buf = append(w.buf, seg.items[:seg.n]...) })
	w.segs = nil
	w.batch = w.buf
}

// advance moves on to the next segment taken, giving back the one run;
// it returns false when none is left.
func (w *worker[E]) advance() bool {
	if w.seg != nil {
		w.e.segs.put(w.seg, w.seg, 1)
		w.seg = nil
		w.unit.Items = nil // it pointed into the segment
	}
	next := w.segs
	if next == nil {
		return false
	}
	w.one[0] = Item[E]{}
	w.segs, w.seg = next.next, next
	w.batch, w.pos = next.items[:next.n], 0
	return true
}

// resetBatch drops the batch just run (its segments are given back).
func (w *worker[E]) resetBatch() {
	w.one[0] = Item[E]{}
	if len(w.buf) > 0 {
		clear(w.buf)
		w.buf = w.buf[:0]
	}
	w.batch, w.pos = nil, 0
	if w.anyTaken {
		clear(w.taken)
		w.anyTaken = false
	}
}

// giveBack gives back, in the middle of a batch, the room of the events
// finished so far, because producers wait for it.
func (w *worker[E]) giveBack() {
	s := w.cur
	n := w.done
	s.mu.Lock()
	s.release(n)
	s.mu.Unlock()
	w.done = 0
	w.free(n)
}

// idSource hands out a worker's unit IDs: unique in the process, taken
// from the worker's current block of IDs.
type idSource struct {
	seq uint64 // last ID given; a new block starts at multiples of idBlock
}

// Next returns a new unit ID.
func (ids *idSource) Next() uint64 {
	if ids.seq%idBlock == 0 {
		ids.seq = (idBlocks.Add(1) - 1) * idBlock
	}
	ids.seq++
	return ids.seq
}

// Plain is the progress of a RunPlain call, kept by the worker and moved
// on by the dispatcher: each item it starts ends the one before, Handled,
// which Start counts at once, as step counts a run that ended: so that
// Stats and Unfinished stay exact while a later item's handler runs, and
// producers waiting for room get the finished items' room back.
type Plain struct {
	ids      *idSource
	handled  *atomic.Uint64 // the worker's published count
	waiters  *atomic.Int32  // the engine's producers waiting for room
	giveBack func()         // takes note of the items ended; gives room back if enough did
	started  int            // items started in this call
	given    int            // items ended that giveBack took note of
}

// Start begins the next item of the stretch, the one before it having
// ended Handled, and returns the new item's unit ID.
func (p *Plain) Start() uint64 {
	if p.started > 0 {
		p.handled.Add(1)
		if p.waiters.Load() > 0 {
			p.giveBack()
		}
	}
	p.started++
	return p.ids.Next()
}

// trackedID is the unit ID of a tracked item: its tracker's, if set.
func (w *worker[E]) trackedID(t *Tracker, id uint64) uint64 {
	if t.ID != 0 {
		return t.ID
	}
	return id
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

// execute runs u through the dispatcher and records how long the run took.
// It has no deferred function of its own (a defer that reads the verdict
// would keep it in memory on the hot path): if a handler calls
// runtime.Goexit, the goroutine's deferred function settles u (goexited).
func (w *worker[E]) execute(u *Unit[E]) Verdict {
	w.starting(u)
	v := w.e.d.Run(w.id, u)
	w.running = nil
	w.timeRun(u, v)
	return v
}

// starting notes that u is about to run: the stretch of timed runs starts
// now if none is under way, and u is what a Goexit would leave unsettled.
func (w *worker[E]) starting(u *Unit[E]) {
	// Runs are timed in stretches (see timeRun): a run starts when the one
	// before ended, and the clock is read at the end of a stretch only.
	if w.last == 0 {
		w.last = nanotime()
	}
	w.running = u
}

// panicked settles the unit whose run a panic left, as a failure of the
// handler that panicked (see loop), and runs its callbacks.
func (w *worker[E]) panicked(r any) {
	w.plainLeft()
	u := w.running
	w.running = nil
	v := w.e.d.Panicked(w.id, u, r)
	w.timeRun(u, v)
	if pk := w.curPK; pk != nil {
		w.curPK = nil
		w.settleParked(w.curKey, pk, u, v)
		w.callbacks()
		return
	}
	w.ran(u, v)
}

// goexited settles the unit whose run a handler cut with runtime.Goexit, as
// a failure of that handler; the goroutine that replaces this one runs its
// callbacks first.
func (w *worker[E]) goexited() {
	w.plainLeft()
	u := w.running
	w.running = nil
	w.last, w.runs = 0, 0
	v := w.e.d.Goexited(w.id, u)
	if pk := w.curPK; pk != nil {
		w.curPK = nil
		w.settleParked(w.curKey, pk, u, v)
	} else {
		w.settle(u, v)
	}
	if w.cb.u == nil && len(u.Items) > 1 {
		clear(w.group)
	}
}

// stretchRuns is how many back-to-back runs a worker times with one clock
// reading when no observer times each run: a clock read costs about as
// much as a fast handler's run on some machines (30 ns on a kvm-clock VM).
// Stats then give each run of a stretch the stretch's mean, and Max the
// whole stretch's duration: never below the slowest run's, above it by at
// most the other runs of its stretch. With an observer every run is timed
// and Max is exact.
const stretchRuns = 16

// timeRun accounts for one finished run. A dispatcher that timed the run
// itself (u.Took, with an observer) gives its exact time. Otherwise the
// worker times stretches of up to stretchRuns runs: the clock is read when
// a stretch ends (stretchRuns runs, the end of the batch taken from a
// shard's FIFO, a retry, or a run that did not end Handled); a run starts
// when the one before ended, so a busy worker reads the clock once a run.
func (w *worker[E]) timeRun(u *Unit[E], v Verdict) {
	if w.midStretch(u, v) {
		w.runs++
		return
	}
	if u.Took > 0 {
		w.endStretch()
		now := nanotime()
		w.last = now
		w.record(int64(u.Took), 1, int64(u.Took), now)
		return
	}
	// Not mid-stretch: this run ends the stretch (stretchRuns runs, a run
	// that did not end Handled, a retry, or the end of the batch in hand,
	// before its last event counts as finished: once the engine is idle,
	// its Stats show every run).
	w.runs++
	w.endStretch()
}

// midStretch reports whether the run that just ended (u, with verdict v)
// leaves the current stretch open (see timeRun): the common case, which
// only counts the run. Small enough to inline in step.
func (w *worker[E]) midStretch(u *Unit[E], v Verdict) bool {
	return u.Took == 0 && v.Outcome == Handled && w.runs < stretchRuns-1 && w.curPK == nil &&
		(w.pos < len(w.batch) || w.segs != nil)
}

// endStretch records the stretch of runs timed since w.last, if any, and
// starts a new one.
func (w *worker[E]) endStretch() {
	if w.runs == 0 {
		return
	}
	now := nanotime()
	d := now - w.last
	w.record(d/int64(w.runs), uint64(w.runs), d, now)
	w.last, w.runs = now, 0
}

// latencyWindow is how long a histogram window lasts: Stats report the
// current window and the one before, so the last 10 to 20 seconds.
const latencyWindow = int64(10e9)

// record adds n runs of about d each, the longest at most maxd, to the
// current window, starting a new window when the current one is over.
func (w *worker[E]) record(d int64, n uint64, maxd, now int64) {
	if now-w.winStart >= latencyWindow {
		w.win ^= 1
		w.lat[w.win].reset()
		w.winStart = now
	}
	w.lat[w.win].record(time.Duration(d), n, time.Duration(maxd))
}

// count records the failure kind of a run, once per original event: a
// failing batch of n events counts n failed attempts.
func (w *worker[E]) count(v Verdict, n uint64) {
	if !v.Failed() {
		return
	}
	w.pub.failed.Add(n)
	if v.Panicked() {
		w.pub.panics.Add(n)
	}
	if v.TimedOut() {
		w.pub.timeouts.Add(n)
	}
	if v.Outcome == Retry {
		w.pub.retried.Add(n)
	}
}

// settle records the verdict of a unit taken from the batch and leaves its
// callbacks due (see callbacks).
func (w *worker[E]) settle(u *Unit[E], v Verdict) {
	w.count(v, uint64(len(u.Items)))
	if v.Outcome != Retry {
		w.pend(u, v) // before finish: idle waits for the callbacks
		w.finish(u, v)
		return
	}
	s := w.cur
	parked := &Unit[E]{ID: u.ID, Items: slices.Clone(u.Items), Event: u.Event,
		Chain: u.Chain, Index: u.Index, Attempt: u.Attempt, Err: u.Err, Prior: u.Prior}
	rt := s.retryState()
	w.rt = rt
	rt.parked[u.Key()] = &parkedKey[E]{units: []*Unit[E]{parked}, retrying: true}
	w.pub.retrying.Add(int64(len(parked.Items)))
	rt.due.push(time.Now().Add(v.Delay), u.Key())
	w.pend(parked, v)
}

// settleParked records the verdict of the head unit of a parked key and
// leaves its callbacks due.
func (w *worker[E]) settleParked(key uint64, pk *parkedKey[E], u *Unit[E], v Verdict) {
	s := w.cur
	w.count(v, uint64(len(u.Items)))
	n := int64(len(u.Items))
	if v.Outcome == Retry {
		if !pk.retrying {
			pk.retrying = true
			w.pub.followers.Add(-n)
			w.pub.retrying.Add(n)
		}
		s.rt.due.push(time.Now().Add(v.Delay), key) // the wait starts when the attempt ended
		w.pend(u, v)
		return
	}
	w.pend(u, v) // before finish: idle waits for the callbacks
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
		delete(s.rt.parked, key)
	} else {
		s.rt.due.push(time.Time{}, key) // the next unit of the key is due at once
	}
}

// finish counts a unit that reached an end.
func (w *worker[E]) finish(u *Unit[E], v Verdict) {
	n := uint64(len(u.Items))
	switch v.Outcome {
	case Handled:
		w.pub.handled.Add(n)
	case Stopped:
		w.pub.stopped.Add(n)
	case Dead:
		w.pub.deadLettered.Add(n)
	case Abandoned:
		w.pub.abandoned.Add(n)
	}
	w.done += len(u.Items)
}

// pend records that u's callbacks are to run, if it has any.
func (w *worker[E]) pend(u *Unit[E], v Verdict) {
	if v.Outcome == Dead || v.Outcome == Abandoned || w.e.cfg.Observe || w.e.tracking.Load() {
		w.cb = callbacks[E]{u: u, v: v}
		w.pub.callbacks.Add(1)
	}
}

// callbacks runs the user callbacks still due: dead letters, the observer,
// then the trackers of items that finished.
func (w *worker[E]) callbacks() {
	c := &w.cb
	for c.u != nil {
		switch c.stage {
		case 0: // dead letters, one original event at a time
			if c.v.Outcome != Dead || c.next >= len(c.u.Items) {
				c.stage, c.next = 1, 0
				continue
			}
			i := c.next
			c.next++
			w.e.d.DeadLetter(c.u, i, c.v.Err)
		case 1:
			c.stage = 2
			if w.e.cfg.Observe {
				w.e.d.Observe(c.u, c.v)
			}
		case 2: // trackers, once the unit has finished
			if c.v.Outcome == Retry || c.next >= len(c.u.Items) {
				c.stage = 3
				continue
			}
			i := c.next
			c.next++
			if t := c.u.Items[i].Track; t != nil {
				t.finish(c.v.Outcome)
			}
		default:
			*c = callbacks[E]{}
			w.pub.callbacks.Add(-1)
		}
	}
}

// runDue runs the parked units of the shard held whose time has come.
func (w *worker[E]) runDue(now time.Time) {
	s := w.cur
	for s.dueBy(now) {
		if w.e.life.aborted.Load() {
			return
		}
		key := s.rt.due.pop()
		pk := s.rt.parked[key]
		if pk == nil {
			continue
		}
		u := pk.units[0]
		w.curPK, w.curKey = pk, key
		v := w.execute(u)
		w.curPK = nil
		w.settleParked(key, pk, u, v)
		w.callbacks()
	}
}

// refill runs the held shard's due retries and takes its next batch. When
// the shard has nothing left to run now, or other shards wait, it lets go
// of the shard: back on the run queue if work remains, idle otherwise (with
// its retry timer armed if keys are parked).
func (w *worker[E]) refill() {
	s := w.cur
	w.resetBatch()
	// Drop the scratch unit's references, or an idle worker would keep
	// its last event alive.
	u := &w.unit
	u.Items, u.Event, u.Chain, u.Err = nil, *new(E), nil, nil
	if s.hasDue() {
		if now := time.Now(); s.dueBy(now) {
			w.runDue(now)
		}
	}
	s.mu.Lock()
	n := w.done
	s.release(n)
	w.done = 0
	if w.wantsPause(s) {
		// Let the FIFO fill rather than take a few items at a time from
		// the lines the producer is writing (see gatherPause).
		before := s.queued
		s.mu.Unlock()
		w.free(n)
		n = 0
		w.pauses.Add(1)
		// The pause is no run's time: the stretch of runs timed ends
		// before it and the next one starts after it.
		w.endStretch()
		w.last = spin(w.pauseFor(before))
		if h := w.e.onPause; h != nil {
			h()
		}
		s.mu.Lock()
		if s.queued-before < gatherEnough/4 {
			w.gathering = false // the producer is slow or done: no more pauses
		}
	}
	if s.queued > 0 && (w.rounds == 0 || !w.e.rq.any()) {
		taken := w.takeLocked(s)
		w.takenAt = w.last
		w.rounds++
		w.pub.taken.Add(uint64(taken))
		s.mu.Unlock()
		if w.segs != nil && w.e.cfg.Batching {
			w.flatten()
		}
		w.free(n)
		return
	}
	requeue := s.queued > 0 || (s.halted && s.holds()) || (s.hasDue() && s.dueBy(time.Now()))
	if !requeue {
		s.state = idle
		if s.hasDue() {
			rt := s.rt
			if rt.timer == nil {
				rt.timer = time.AfterFunc(time.Hour, s.wake)
			}
			rt.timer.Reset(time.Until(rt.due[0].at))
		}
	}
	s.mu.Unlock()
	w.free(n)
	w.cur, w.rt = nil, nil
	if requeue {
		// No wake: this worker looks at the run queue next.
		w.e.rq.mark(int(s.idx))
		return
	}
	if l := w.e.life; l.idleWaiters.Load() > 0 && w.e.added.Load() == w.e.settled() {
		l.notifyIdle()
	}
	if w.e.retired.Load() {
		w.e.maybeQuit()
	}
}

// A worker that streams one shard (it found work there at its last two
// takes), has caught up with the shard's producer (fewer than
// Engine.caughtUp items queued: gatherEnough, or a quarter of the shard's
// room when that is less) and has no other shard waiting pauses before it
// takes again (for about gatherTarget items at the rate they arrived since
// its last take; see pauseFor), so that it takes a batch, not a few
// items from the segment the producer is appending to: taking a few at a
// time moves the shard's lines between the two cores at every take, and a
// worker that runs dry sleeps and must be woken. It pauses while a pause
// lets at least gatherEnough/4 items in, and stops pausing in that shard,
// until it lets the shard go, after the first one that does not (the
// producer is slow or done), so a slow stream costs at most one pause. It
// never pauses while producers wait for room (then the worker is what
// they wait for) or with one processor (the producer could not run
// meanwhile).
const (
	gatherEnough = 32
	gatherTarget = 128  // items a take aims at after a pause (see pauseFor)
	gatherPause  = 4000 // nanoseconds: a pause's length when the producer's rate is not known (Engine.gatherPause)
)

// pauseFor returns how long to pause when queued items arrived since the
// last take: long enough, at the rate they arrived, for about gatherTarget
// items by the next take, within [gatherPause/2, 4×gatherPause]; a worker
// that runs its batches faster pauses longer, so that its takes stay as
// few. Engine.gatherPause when the rate is not known.
func (w *worker[E]) pauseFor(queued int32) int64 {
	base := w.e.gatherPause
	since := w.last - w.takenAt
	if queued <= 0 || w.takenAt == 0 || since <= 0 {
		return base
	}
	q := int64(queued)
	return min(max(since*(gatherTarget-q)/q, base/2), 4*base)
}

// wantsPause reports whether the worker, about to take from s again,
// pauses first (see gatherPause): s streams (work found at its last two
// takes), the worker caught up with its producer, no other shard waits, no
// producer waits for room, and another processor can run the producer.
// s.mu must be held.
func (w *worker[E]) wantsPause(s *shard[E]) bool {
	return w.gathering && w.rounds >= 2 && s.queued < w.e.caughtUp && !w.e.rq.any() &&
		w.e.spaceWaiters.Load() == 0 && runtime.GOMAXPROCS(0) > 1
}

// spin waits about d nanoseconds on the clock alone, reading no memory
// that another core writes, and returns the clock's last reading.
func spin(d int64) int64 {
	start := nanotime()
	now := start
	for now-start < d {
		now = nanotime()
	}
	return now
}

// free gives back the room of n finished events.
func (w *worker[E]) free(n int) {
	if n > 0 {
		w.e.free(n)
	}
}

// abortAll gives up everything the worker holds or can still take from the
// run queue, then returns: the worker exits.
func (w *worker[E]) abortAll() {
	if w.cur == nil {
		// The reaper's batch: events Abort took out of the FIFOs.
		for w.pos < len(w.batch) {
			i := w.pos
			w.pos++
			it := w.batch[i]
			w.giveUp(&Unit[E]{Items: []Item[E]{it}, Event: it.Event}, w.e.cfg.ErrClosed)
		}
		clear(w.batch)
		w.batch, w.pos, w.done = nil, 0, 0
	}
	for {
		if w.cur != nil {
			w.abortShard()
		}
		i := w.e.rq.claim()
		if i < 0 {
			return
		}
		w.cur = &w.e.shards[i]
		w.rt = w.cur.rt
	}
}

// abortShard dead-letters (or abandons, for tracked items) everything the
// held shard has: the batch in hand, its FIFO and its parked keys. Each
// item leaves the worker's state before its callbacks run, so that if a
// sink calls runtime.Goexit the replacement goroutine carries on without
// repeating or losing one.
func (w *worker[E]) abortShard() {
	s := w.cur
	closed := w.e.cfg.ErrClosed
	for {
		for {
			for w.pos < len(w.batch) {
				i := w.pos
				w.pos++
				if w.anyTaken && w.taken[i] {
					continue
				}
				it := w.batch[i]
				w.giveUp(&Unit[E]{Items: []Item[E]{it}, Event: it.Event}, closed)
			}
			if !w.advance() {
				break
			}
		}
		w.resetBatch()
		s.mu.Lock()
		s.stopped = true
		taken := w.takeLocked(s)
		w.pub.taken.Add(uint64(taken))
		s.mu.Unlock()
		if taken == 0 {
			break
		}
	}
	var parked map[uint64]*parkedKey[E]
	if s.rt != nil {
		parked = s.rt.parked
	}
	for key, pk := range parked {
		for len(pk.units) > 0 {
			u := pk.units[0]
			pk.units[0] = nil
			pk.units = pk.units[1:]
			n := int64(len(u.Items))
			if pk.retrying {
				w.pub.retrying.Add(-n)
				pk.retrying = false
			} else {
				w.pub.followers.Add(-n)
			}
			err := closed
			if u.Err != nil {
				err = errors.Join(closed, u.Err)
			}
			w.giveUp(u, err)
		}
		delete(parked, key)
	}
	if rt := s.rt; rt != nil {
		rt.due = rt.due[:0]
		if rt.timer != nil {
			rt.timer.Stop()
		}
	}
	w.resetBatch()
	s.mu.Lock()
	s.release(w.done)
	n := w.done
	w.done = 0
	s.state = idle
	s.mu.Unlock()
	w.free(n)
	w.cur, w.rt = nil, nil
}

// giveUp ends a unit the engine aborts: tracked items are abandoned (their
// tracker says so; no dead letter), the others are dead-lettered with err.
func (w *worker[E]) giveUp(u *Unit[E], err error) {
	v := Verdict{Outcome: Dead, Err: err}
	if u.Items[0].Track != nil {
		v = Verdict{Outcome: Abandoned, Err: err}
	}
	w.pend(u, v)
	w.finish(u, v)
	w.callbacks()
}
