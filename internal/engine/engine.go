// Package engine is the machinery shared by the bus's three pools: many
// small FIFO shards of bounded capacity, a run queue of shards with work,
// a fixed set of workers that take shards from it, parking of keys that
// wait for a retry, batching hooks, idle detection and shutdown.
//
// Scheduling is work-conserving: keys hash to many more shards than there
// are workers; a shard is drained by at most one worker at a time, and a
// worker that finishes a shard (or finds others waiting) takes the next
// shard from the run queue. A slow handler therefore holds back only its
// own shard while other workers are free.
//
// The hand-off is built for throughput: a producer appends to its shard's
// FIFO (an inline first item, then segments from a free list made at New)
// under the shard's short lock; a worker takes the whole FIFO in one step
// and runs it without the lock. The run queue is a lock-free ring of
// shards, and a sleeping worker is woken only when the shards waiting
// outnumber the workers looking for work, never once per event. Workers
// read the clock once per stretch of runs, not per run.
//
// The engine knows nothing about handlers or event types: a Dispatcher runs
// the work and says what became of it. Everything here is generic only so
// that the root package can plug its Event type in without an import cycle.
package engine

import (
	"context"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Item is one accepted event in a shard's FIFO.
type Item[E any] struct {
	Event E
	// Ctx is the producer's context, kept only for its values; nil when the
	// producer passed context.Background().
	Ctx   context.Context
	Key   uint64
	Added time.Duration // since the engine's epoch; 0 when not timed
	// Track, when set, is told how the event ended (see Tracker).
	Track *Tracker
	// Tag is the dispatcher's own note on the event (the bus: its type),
	// so that running it needs no read of the event's memory, which the
	// producer's core wrote last.
	Tag uint8
}

// Unit is what a dispatcher runs: one item, or several merged into one
// event. Chain, Index and Attempt belong to the dispatcher and survive
// retries, so a retry resumes where the last attempt failed.
type Unit[E any] struct {
	ID      uint64 // unique per unit in the process; assigned by the worker
	Items   []Item[E]
	Event   E   // what handlers see: Items[0].Event, or the merged event
	Chain   any // the dispatcher's snapshot of the handler chain
	Index   int // next handler to run
	Attempt int // attempt number for that handler, from 1
	Err     error
	// Took is how long the last run took, and Waited how long the unit
	// waited before it, when the dispatcher measures them.
	Took, Waited time.Duration
	// Prior is how many attempts of the unit earlier process lives used
	// (Tracker.Prior); the dispatcher adds it to the first failed attempt.
	Prior int
}

// Key is the ordering key shared by all items of the unit.
func (u *Unit[E]) Key() uint64 { return u.Items[0].Key }

// Outcome is what became of a unit after a run.
type Outcome uint8

const (
	Handled   Outcome = iota // the chain ran to its end
	Stopped                  // a handler ended the chain on purpose
	Retry                    // run again after Verdict.Delay; the key waits
	Dead                     // give up: dead-letter every item with Verdict.Err
	Abandoned                // given up by an aborting engine without a dead letter (tracked items only)
)

// Verdict is a dispatcher's report on one run of a unit.
//
// It has four fields of 32 bytes in all, the most the compiler keeps in
// registers: a larger Verdict is assembled in memory from the returned
// registers with narrow stores and read back with wide loads, which
// stall, on every run.
type Verdict struct {
	Outcome Outcome
	Failure Failure       // kind of the failure that ended the run, if any; for counters
	Delay   time.Duration // for Retry
	Err     error         // for Dead
}

// Failure says how a run failed: a set of flags, zero when it did not.
type Failure uint8

const (
	RunFailed   Failure = 1 << iota // a handler failed (set for every failure)
	RunPanicked                     // it panicked
	RunTimedOut                     // it overran its timeout
)

// Failed reports whether a handler failed in the run.
func (v Verdict) Failed() bool { return v.Failure&RunFailed != 0 }

// Panicked reports whether the failure was a panic.
func (v Verdict) Panicked() bool { return v.Failure&RunPanicked != 0 }

// TimedOut reports whether the failure was a handler's timeout.
func (v Verdict) TimedOut() bool { return v.Failure&RunTimedOut != 0 }

// Dispatcher runs units for an engine. All methods are called from worker
// goroutines.
//
// Run and Goexited run the handlers; the engine settles its own state from
// their verdict before it calls user callbacks (Observe, DeadLetter), so a
// callback that panics or calls runtime.Goexit cannot undo or repeat what
// the verdict decided.
type Dispatcher[E any] interface {
	// Run runs the unit from u.Index on.
	Run(worker int, u *Unit[E]) Verdict
	// Goexited is called instead of returning from Run when a handler
	// called runtime.Goexit; it reports that as a failure of the current
	// handler. The worker goroutine is replaced afterwards.
	Goexited(worker int, u *Unit[E]) Verdict
	// Panicked is called instead of returning from Run when a panic left
	// it (a dispatcher need not recover each call: the worker recovers
	// once, around all its runs); it reports the panic, r, as a failure of
	// the current handler. It runs in the worker's deferred function,
	// before the stack unwinds, so a stack trace taken there shows the
	// handler.
	Panicked(worker int, u *Unit[E], r any) Verdict
	// BatchLimit says how many adjacent items of its key may be merged
	// with it (0 or 1: none).
	BatchLimit(it *Item[E]) int
	// Mergeable says how many of next, in order, may join a unit started
	// by head: the index of the first that may not, or len(next). All have
	// head's Key.
	Mergeable(head *Item[E], next []Item[E]) int
	// Merge builds u.Event from u.Items (len > 1).
	Merge(u *Unit[E])
	// Observe reports a run's verdict; called only with Config.Observe.
	// For Dead it comes after the unit's dead letters.
	Observe(u *Unit[E], v Verdict)
	// DeadLetter hands item i of u to the dead-letter sink with err.
	DeadLetter(u *Unit[E], i int, err error)
	// Idle is called when the worker finds no work and is about to block:
	// the dispatcher drops what it keeps of finished events.
	Idle(worker int)
}

// PlainRunner is a Dispatcher that can run a stretch of plain items in
// one call: items that need nothing of the worker between their runs (no
// parked key, no tracker, no type that batches, no observer). One call instead of
// one Run each spares every item the worker's step and the dispatcher's
// per-call setup.
type PlainRunner[E any] interface {
	// RunPlain runs items in order, each as its own unit in u: its ID from
	// p.Start (called once per item, before its first handler), the one
	// item (Items a sub-slice of items), its chain from the start, as Run
	// would run it. It stops at the first item that does not end Handled
	// and returns how many did, and that item's verdict (u describes it);
	// or len(items) and a Handled verdict. While a handler runs, u
	// describes its item, for Panicked and Goexited.
	RunPlain(wid int, u *Unit[E], items []Item[E], p *Plain) (int, Verdict)
}

// Config sizes an engine.
type Config struct {
	// Batching makes workers ask the dispatcher for BatchLimit; without it
	// no unit is ever merged.
	Batching bool
	// Observe makes workers call Dispatcher.Observe after every run.
	Observe bool
	Workers int
	Shards  int // rounded up to a power of two
	// QueueSize bounds one shard; the engine holds at most Capacity
	// (default Workers×QueueSize).
	QueueSize, Capacity int
	// ErrClosed is the error dead letters carry when the bus aborts.
	ErrClosed error
	// Insider, if set, reports whether the calling goroutine runs a
	// handler whose adds to this engine must never wait (a worker of this
	// engine or of an engine it shares events with); default: a worker of
	// this engine. Called only on the waiting path.
	Insider func() bool
}

// PushResult says why Push refused an item.
type PushResult uint8

const (
	Accepted  PushResult = iota
	Full                 // no room and the caller does not wait
	Closed               // the bus refuses outside adds, or the shard stopped
	Cancelled            // the waiting context ended
)

// Engine is one pool's shards, run queue and workers.
type Engine[E any] struct {
	cfg     Config
	d       Dispatcher[E]
	life    *Lifecycle
	shards  []shard[E]
	mask    uint64
	workers []*worker[E]
	rq      runQueue
	epoch   int64 // nanotime at New
	// giveBackEvery is how many finished events make a worker give their
	// room back before its batch ends, when producers wait for room.
	giveBackEvery int
	capacity      uint64 // Workers × QueueSize
	// gatherPause is how long a gathering pause lasts, in nanoseconds:
	// the constant, unless a test lengthens it before Start; onPause, nil
	// but in tests, runs during each pause (after the wait).
	gatherPause int64
	onPause     func()
	caughtUp    int32 // fewer items queued than this: a streaming worker caught up (see gatherPause)
	// tracking is set once a tracked item was pushed, so that workers
	// without one skip the completion check. Written once: it sits with
	// the fields read on every run, away from the lines workers write.
	tracking atomic.Bool
	// afterTrackedPush, nil but in tests, runs after a tracked item's
	// shard is unlocked: a producer descheduled there.
	afterTrackedPush func()

	_     [64]byte
	added atomic.Uint64 // accepted events; written by producers
	// freedSeen is what producers last read of freed: a lower bound of
	// it, on the producers' own line. A capacity check that passes
	// against it passes against freed, so only a check that fails reads
	// freed itself (see roomFor); freed's line, which workers write at
	// every batch, then moves to a producer's core once per many adds
	// instead of at every add.
	freedSeen atomic.Uint64
	_         [48]byte
	freed     atomic.Uint64 // finished events whose room was given back; written by workers
	_         [56]byte

	// segs is the free list of FIFO segments.
	segs segPool[E]
	_    [64]byte
	// spares holds the large batch buffers of sleeping workers; a trim
	// releases them and the segments above what New made.
	oversizedMu sync.Mutex
	spares      [][]Item[E]
	nspares     atomic.Int32 // len(spares), for a look without the lock
	trimTimer   *time.Timer
	trimArmed   bool
	trimMark    uint64 // added when the trim was armed

	// reaper gives up, after Abort, the events Abort took out of the FIFOs.
	reaper atomic.Pointer[worker[E]]
	// stolen counts the events Abort took out of the FIFOs; over the
	// events shards hold above QueueSize (follow-ons), for Stats.
	stolen, over atomic.Int64

	// Producers waiting for room count in spaceWaiters (workers then give
	// room back before their batch ends); those parked count in
	// spaceSleepers too and wait on space, which workers close when they
	// give room back.
	spaceWaiters  atomic.Int32
	spaceSleepers atomic.Int32
	spinners      int // at most this many waiting producers yield first: half the processors at New
	spaceMu       sync.Mutex
	space         chan struct{}

	// A retired engine takes no more items; quit closes once it is idle,
	// and its workers exit.
	retired  atomic.Bool
	quit     chan struct{}
	quitOnce sync.Once

	running atomic.Int32
	exited  chan struct{}
}

// New builds an engine; Start launches its workers.
func New[E any](cfg Config, d Dispatcher[E], life *Lifecycle) *Engine[E] {
	cfg.Workers = max(cfg.Workers, 1)
	cfg.QueueSize = max(cfg.QueueSize, 1)
	if cfg.Capacity <= 0 {
		cfg.Capacity = cfg.Workers * cfg.QueueSize
	}
	cfg.Shards = 1 << bits.Len(uint(max(cfg.Shards, 1)-1))
	e := &Engine[E]{cfg: cfg, d: d, life: life, epoch: nanotime(),
		exited:   make(chan struct{}),
		space:    make(chan struct{}),
		quit:     make(chan struct{}),
		capacity: uint64(cfg.Capacity),
		mask:     uint64(cfg.Shards - 1),
		spinners: max(runtime.GOMAXPROCS(0)/2, 1),
	}
	e.shards = make([]shard[E], cfg.Shards)
	for i := range e.shards {
		e.shards[i].e, e.shards[i].idx = e, int32(i)
	}
	// Segments for the engine's capacity (the first item of a shard is
	// inline), and a few for workers' follow-on adds; more only for
	// overflow, up to a bound on what New allocates.
	e.segs.fill(min(cfg.Capacity/segItems+2*cfg.Workers, maxPrealloc))
	e.rq.init(cfg.Shards, cfg.Workers)
	e.giveBackEvery = max(cfg.QueueSize/16, 1)
	e.gatherPause, e.caughtUp = gatherPause, int32(min(gatherEnough, max(cfg.QueueSize/4, 1)))
	e.workers = make([]*worker[E], cfg.Workers)
	for i := range e.workers {
		e.workers[i] = newWorker(e, i)
	}
	return e
}

// Start launches the workers.
func (e *Engine[E]) Start() {
	e.life.watch(&e.rq)
	e.running.Add(int32(len(e.workers)))
	for _, w := range e.workers {
		go w.run()
	}
}

// Since returns the time since the engine's epoch, for Item.Added.
func (e *Engine[E]) Since() time.Duration { return time.Duration(nanotime() - e.epoch) }

// Queued returns how long an item has waited since it was added.
func (e *Engine[E]) Queued(it *Item[E]) time.Duration {
	if it.Added == 0 {
		return 0
	}
	return e.Since() - it.Added
}

// shardFor maps a key to its shard. Keys are mixed first so that poorly
// spread keys (small integers) still use every shard.
func (e *Engine[E]) shardFor(key uint64) *shard[E] {
	return &e.shards[mix(key)&e.mask]
}

// maxPrealloc bounds the segments New allocates for an engine.
const maxPrealloc = 1024

// idBlocks hands out blocks of unit IDs to workers, so that IDs are unique
// in the process at the cost of one atomic add per idBlock units.
var idBlocks atomic.Uint64

const idBlock = 1 << 10

// mix is the splitmix64 finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Parent is the handler a follow-on add comes from: a word its dispatcher
// sets the lowest bit of, atomically, once the handler has returned (the
// bus: its context's word). nil for an add that is no handler's. A word
// rather than an interface: it is read under the shard's lock on every
// follow-on add, and a load is cheaper than a method call.
type Parent *uint32

// Running reports whether parent's handler has not returned yet (false
// for nil).
func Running(parent Parent) bool {
	return parent != nil && atomic.LoadUint32(parent)&1 == 0
}

// Push appends it to its key's shard.
//
// A follow-on add, made by a handler (parent) that is still running when
// the item goes on the FIFO, is accepted whatever the capacity and even
// while the bus is closing: the parent's own event keeps the bus from
// being idle until then. Otherwise, while the shard holds QueueSize items
// or the engine Workers×QueueSize, Push waits for room until wait ends, or
// returns Full at once when wait is nil. An add that would wait on a
// goroutine of this engine's workers (a handler that passed a foreign
// context) is taken as a follow-on add instead: waiting there could wait
// for ever.
//
// it is copied into the FIFO; the caller keeps its own copy.
func (e *Engine[E]) Push(it *Item[E], parent Parent, wait context.Context) PushResult {
	s := e.shardFor(it.Key)
	res, inside := e.admit(s, parent, wait)
	if res != Accepted {
		return res
	}
	e.enqueueLocked(s, it)
	if inside && !e.roomFor(e.added.Load(), 0) {
		// A follow-on add above capacity never waits, but its handler
		// yields the processor: the workers of this pool, behind, get to
		// run, as a full channel would have let them.
		runtime.Gosched()
	}
	return Accepted
}

// Slot is room taken in a shard by Reserve, to be filled by Commit or
// given back by Cancel. Reserving in several engines before committing to
// any lets an event be accepted by all of them at once, or by none.
type Slot[E any] struct{ s *shard[E] }

// Reserve takes room for one item of key, waiting for it as Push does.
// On Accepted the caller must Commit or Cancel the slot.
func (e *Engine[E]) Reserve(key uint64, parent Parent, wait context.Context) (Slot[E], PushResult) {
	s := e.shardFor(key)
	res, _ := e.admit(s, parent, wait)
	if res == Accepted {
		s.mu.Unlock()
	}
	return Slot[E]{s}, res
}

// Commit puts it (whose Key is the reserved key) in the reserved room.
func (e *Engine[E]) Commit(sl Slot[E], it Item[E]) {
	sl.s.mu.Lock()
	e.enqueueLocked(sl.s, &it)
}

// Cancel gives reserved room back.
func (e *Engine[E]) Cancel(sl Slot[E]) {
	s := sl.s
	s.mu.Lock()
	s.release(1)
	s.mu.Unlock()
	e.added.Add(^uint64(0))
	e.wakeSpaceWaiters()
	if e.life.idleWaiters.Load() > 0 {
		e.life.notifyIdle()
	}
}

// admit waits for room in s and takes it: on Accepted it returns with
// s.mu held, s.occupied and e.added counting the item to come. inside says
// whether the add was taken as a follow-on add.
//
// The common case, room at once, is decided here in one pass; everything
// else (refusals, waiting) is admitWait's.
func (e *Engine[E]) admit(s *shard[E], parent Parent, wait context.Context) (res PushResult, inside bool) {
	s.mu.Lock()
	// Decided under the lock, at the moment of enqueue: a handler that
	// returned meanwhile makes this an outside add.
	inside = Running(parent)
	if !s.stopped {
		if inside {
			e.added.Add(1)
			return e.occupy(s), true
		}
		if !e.life.closing.Load() && s.occupied < e.cfg.QueueSize && e.reserve() {
			return e.occupy(s), false
		}
	}
	s.mu.Unlock()
	return e.admitWait(s, parent, wait, inside)
}

// occupy counts the item admitted to s in its occupancy. s.mu must be held.
func (e *Engine[E]) occupy(s *shard[E]) PushResult {
	s.occupied++
	if s.occupied > e.cfg.QueueSize {
		e.over.Add(1)
	}
	return Accepted
}

// admitWait is admit when there was no room at once or the add is refused:
// it looks again, and waits for room while the caller may wait.
//
// A producer that waits first yields its processor and looks again, for up
// to roomSpin, and only then parks. Room comes back from a worker on
// another core every giveBackEvery events; a parked producer's wake-up
// lands in the run queue of that worker's processor, where it waits until
// the worker blocks or another processor steals it (an idle one must be
// woken first), so producer and worker would take turns on one core. The
// waiting stays bounded: a pool whose handlers are slow costs a producer
// at most roomSpin of yielding per wait, and only the first waiters, up to
// half the processors, yield at all.
func (e *Engine[E]) admitWait(s *shard[E], parent Parent, wait context.Context, inside bool) (res PushResult, _ bool) {
	registered, checked, parked := false, false, false
	var spinUntil int64
	for {
		var space <-chan struct{}
		if parked {
			space = e.spaceSignal()
		}
		s.mu.Lock()
		// Decided under the lock, at the moment of enqueue: a handler that
		// returned meanwhile makes this an outside add.
		if !inside {
			inside = Running(parent)
		}
		if s.stopped || (!inside && e.life.closing.Load()) {
			s.mu.Unlock()
			e.unregister(registered, parked)
			return Closed, inside
		}
		if inside {
			e.added.Add(1)
			break
		}
		if s.occupied < e.cfg.QueueSize && e.reserve() {
			break
		}
		s.mu.Unlock()
		if wait == nil {
			e.unregister(registered, parked)
			return Full, inside
		}
		if !registered {
			// Counted as waiting, workers give room back before their
			// batch ends.
			registered = true
			e.spaceWaiters.Add(1)
			continue
		}
		if !checked { // once: a goroutine's identity does not change
			checked = true
			if e.insider() {
				inside = true
				continue
			}
			// Yield only while few wait: many yielding producers would
			// take the processors the workers need to give room back.
			if int(e.spaceWaiters.Load()) <= e.spinners {
				spinUntil = nanotime() + int64(roomSpin)
			}
		}
		if !parked {
			if spinUntil != 0 && nanotime() < spinUntil {
				runtime.Gosched()
				continue
			}
			// Park, then look again: room given back after this point
			// closes the signal taken at the top of the loop.
			parked = true
			e.spaceSleepers.Add(1)
			continue
		}
		select {
		case <-space:
		case <-wait.Done():
			e.unregister(registered, parked)
			return Cancelled, inside
		case <-e.life.closingCh:
			e.unregister(registered, parked)
			return Closed, inside
		}
	}
	e.unregister(registered, parked)
	return e.occupy(s), inside
}

// roomSpin is how long a producer waiting for room yields and looks again
// before it parks (see admitWait).
const roomSpin = 50 * time.Microsecond

// enqueueLocked appends *it to s, whose room admit took, and puts s on the
// run queue if no worker holds it. It unlocks s.mu. it is a pointer so
// that the item is copied once, into the FIFO.
func (e *Engine[E]) enqueueLocked(s *shard[E], it *Item[E]) {
	if it.Track != nil && !e.tracking.Load() {
		// Set before the item is visible: a worker takes it under s.mu,
		// after this producer's unlock, so it sees the flag and settles
		// the item with its tracker. Set after the unlock, a producer
		// descheduled in between let the worker count the item handled
		// without telling its tracker.
		e.tracking.Store(true)
	}
	s.pushLocked(it)
	schedule := s.state == idle
	if schedule {
		s.state = scheduled
	}
	s.mu.Unlock()
	if it.Track != nil && e.afterTrackedPush != nil {
		e.afterTrackedPush()
	}
	if schedule {
		e.ready(s)
	}
}

// ready puts s, just scheduled, on the run queue, and wakes a worker if
// none is looking for work while one sleeps. When none is looking, the
// shard goes straight to a sleeping worker instead (runQueue.handOff):
// the same wake, without the ring.
func (e *Engine[E]) ready(s *shard[E]) {
	q := &e.rq
	if q.sleepers.Load() > 0 && q.looking.Load() <= 0 && q.handOff(int(s.idx)) {
		return
	}
	q.mark(int(s.idx))
	if q.wakeNeeded() {
		q.wakeOne()
	}
}

// insider reports whether an add that would wait is made from a handler of
// this engine's pool (see Config.Insider).
func (e *Engine[E]) insider() bool {
	if e.cfg.Insider != nil {
		return e.cfg.Insider()
	}
	return e.IsWorkerGoroutine()
}

// reserve takes one place of the engine's capacity, if there is one.
func (e *Engine[E]) reserve() bool {
	for {
		a := e.added.Load()
		if !e.roomFor(a, 1) {
			return false
		}
		if e.added.CompareAndSwap(a, a+1) {
			return true
		}
	}
}

// roomFor reports whether n more events fit in the engine's capacity when
// added is a: whether a+n-freed <= capacity. It looks at freedSeen first
// and reads freed only when that says no, so the answer is always
// freed's.
func (e *Engine[E]) roomFor(a, n uint64) bool {
	seen := e.freedSeen.Load()
	if a+n-seen <= e.capacity {
		return true
	}
	f := e.freed.Load()
	if f != seen {
		// freed only grows; a racing producer may store an older value,
		// which stays a lower bound.
		e.freedSeen.Store(f)
	}
	return a+n-f <= e.capacity
}

func (e *Engine[E]) unregister(registered, parked bool) {
	if registered {
		e.spaceWaiters.Add(-1)
	}
	if parked {
		e.spaceSleepers.Add(-1)
	}
}

func (e *Engine[E]) spaceSignal() <-chan struct{} {
	e.spaceMu.Lock()
	defer e.spaceMu.Unlock()
	return e.space
}

// free gives back the room of n finished events and wakes producers
// waiting for it.
func (e *Engine[E]) free(n int) {
	e.freed.Add(uint64(n))
	e.wakeSpaceWaiters()
}

func (e *Engine[E]) wakeSpaceWaiters() {
	if e.spaceSleepers.Load() > 0 {
		e.spaceMu.Lock()
		close(e.space)
		e.space = make(chan struct{})
		e.spaceMu.Unlock()
	}
}

// scheduleLocked marks a shard for the run queue unless it is there or
// held by a worker. s.mu must be held; the caller sends to the run queue
// after unlocking when it returns true.
func (s *shard[E]) scheduleLocked() bool {
	if s.state != idle {
		return false
	}
	s.state = scheduled
	return true
}

// Abort makes the engine give up: every shard stops taking items, the
// events still queued in the FIFOs are taken out at once and handed to a
// goroutine that dead-letters them (abandons tracked ones), and the workers
// give up what is parked or in their hands (a handler that has not
// returned keeps its worker until it does). Abort runs no user code and
// returns at once; Exited waits for all of it. Call it after Halt and
// before Lifecycle.Abort, so that no worker exits while an idle shard still
// holds parked events.
func (e *Engine[E]) Abort() {
	var stolen []Item[E]
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		s.stopped, s.halted = true, true
		if n := int(s.queued); n > 0 {
			stolen = s.appendFIFOLocked(stolen)
			s.release(n)
		}
		// An idle shard is held by no worker, so its parked keys can be
		// read here; a scheduled one is aborted by the worker that takes it.
		push := s.state == idle && s.parkedKeys() > 0 && s.scheduleLocked()
		s.mu.Unlock()
		if push {
			e.ready(s)
		}
	}
	if len(stolen) > 0 {
		e.stolen.Add(int64(len(stolen)))
		e.free(len(stolen))
		r := newWorker(e, -1)
		r.batch = stolen
		e.reaper.Store(r)
		e.running.Add(1)
		go r.run()
	}
}

// Unfinished returns how many accepted events have not finished: queued,
// in a worker's hands or waiting for a retry.
func (e *Engine[E]) Unfinished() int {
	return int(e.added.Load() - e.finished())
}

// finished returns how many accepted events have ended, counted as they
// end (before their room is given back).
func (e *Engine[E]) finished() uint64 {
	var n uint64
	for _, w := range e.workers {
		n += w.pub.finished()
	}
	if r := e.reaper.Load(); r != nil {
		n += r.pub.finished()
	}
	return n
}

// settled is finished less the events whose callbacks still run: what
// Idle counts, so that WaitIdle returns after the sink, the observer and
// the trackers have seen every finished event.
func (e *Engine[E]) settled() uint64 {
	var n uint64
	for _, w := range e.workers {
		n += w.pub.settled()
	}
	if r := e.reaper.Load(); r != nil {
		n += r.pub.settled()
	}
	return n
}

// Halt makes every shard refuse all adds, follow-on ones included, and
// returns how many accepted events had not finished then (see Unfinished).
// Close calls it when it gives up, before handler contexts are cancelled:
// stopping every shard first leaves no add uncounted, and no handler has
// yet been told to return early.
func (e *Engine[E]) Halt() int {
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		s.stopped, s.halted = true, true
		s.mu.Unlock()
	}
	return e.Unfinished()
}

// Exited is closed once every worker goroutine has returned.
func (e *Engine[E]) Exited() <-chan struct{} { return e.exited }

// Discard marks an engine that will never start as exited.
func (e *Engine[E]) Discard() {
	if e.running.Load() == 0 {
		select {
		case <-e.exited:
		default:
			close(e.exited)
		}
	}
}

func (e *Engine[E]) exit() {
	if e.running.Add(-1) == 0 {
		e.life.unwatch(&e.rq)
		e.stopTrim()
		e.trim()
		close(e.exited)
	}
}

// IsWorker reports whether the goroutine with the given id is one of the
// engine's workers. An id of 0 (unreadable) is never a worker.
func (e *Engine[E]) IsWorker(id int64) bool {
	if id == 0 {
		return false
	}
	for _, w := range e.workers {
		if w.goid.Load() == id {
			return true
		}
	}
	return false
}

// Barrier waits until every add that passed the closing check has put its
// item in a FIFO, by taking each shard's lock once. Call it after
// Lifecycle.BeginClose and before waiting for idle.
func (e *Engine[E]) Barrier() {
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		//lint:ignore SA2001 an empty critical section is the point: it waits for the holder
		s.mu.Unlock()
	}
}

// ShardIndex returns the index of the shard key maps to (for tests that
// must tell keys sharing a shard apart).
func (e *Engine[E]) ShardIndex(key uint64) int { return int(mix(key) & e.mask) }

// Retire makes the engine refuse every add from now on (Push and Reserve
// return Closed) and lets its workers exit once what it holds has finished
// (retries included). The bus retires a subscriber's engine when the
// subscriber is unregistered.
func (e *Engine[E]) Retire() {
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		s.stopped = true
		s.mu.Unlock()
	}
	e.retired.Store(true)
	e.maybeQuit()
}

// Retired reports whether Retire was called.
func (e *Engine[E]) Retired() bool { return e.retired.Load() }

// maybeQuit lets the workers of a retired engine exit once it is idle.
func (e *Engine[E]) maybeQuit() {
	if e.retired.Load() && e.added.Load() == e.settled() {
		e.quitOnce.Do(func() {
			close(e.quit)
			e.rq.wakeAll()
		})
	}
}

// quitting reports whether the workers of a retired engine may exit.
func (e *Engine[E]) quitting() bool {
	select {
	case <-e.quit:
		return true
	default:
		return false
	}
}
