// Package engine is the machinery shared by the bus's three pools: sharded
// FIFOs of bounded capacity, one worker goroutine per shard, parking of keys
// that wait for a retry, batching hooks, idle detection and shutdown.
//
// The engine knows nothing about handlers or event types: a Dispatcher runs
// the work and says what became of it. Everything here is generic only so
// that the root package can plug its Event type in without an import cycle.
package engine

import (
	"context"
	"math/bits"
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
	// Took is how long the last run took, when the dispatcher measures it.
	Took time.Duration
}

// Key is the ordering key shared by all items of the unit.
func (u *Unit[E]) Key() uint64 { return u.Items[0].Key }

// Outcome is what became of a unit after a run.
type Outcome uint8

const (
	Handled Outcome = iota // the chain ran to its end
	Stopped                // a handler ended the chain on purpose
	Retry                  // run again after Verdict.Delay; the key waits
	Dead                   // give up: dead-letter every item with Verdict.Err
)

// Verdict is a dispatcher's report on one run of a unit.
type Verdict struct {
	Outcome Outcome
	Delay   time.Duration // for Retry
	Err     error         // for Dead

	// Kind of the failure that ended the run, if any; used for counters.
	Failed, Panicked, TimedOut bool
}

// Dispatcher runs units for an engine. All methods are called from worker
// goroutines, except DeadLetter which Abort also calls.
type Dispatcher[E any] interface {
	// Run runs the unit from u.Index on.
	Run(worker int, u *Unit[E]) Verdict
	// Goexited is called instead of returning from Run when a handler
	// called runtime.Goexit; it reports that as a failure of the current
	// handler. The worker goroutine is replaced afterwards.
	Goexited(worker int, u *Unit[E]) Verdict
	// BatchLimit says how many adjacent items of it's key may be merged
	// with it (0 or 1: none).
	BatchLimit(it *Item[E]) int
	// Mergeable says how many of next, in order, may join a unit started
	// by head: the index of the first that may not, or len(next). All have
	// head's Key.
	Mergeable(head *Item[E], next []Item[E]) int
	// Merge builds u.Event from u.Items (len > 1).
	Merge(u *Unit[E])
	// DeadLetter hands every item of u to the dead-letter sink with err.
	DeadLetter(u *Unit[E], err error)
}

// Config sizes an engine.
type Config struct {
	// Batching makes workers ask the dispatcher for BatchLimit; without it
	// no unit is ever merged.
	Batching  bool
	Shards    int
	QueueSize int // per shard
	// ErrClosed is the error dead letters carry when the bus aborts.
	ErrClosed error
	// SampleEvery makes workers time one unit in SampleEvery for latency
	// quantiles (0 = 64).
	SampleEvery int
}

// PushResult says why Push refused an item.
type PushResult uint8

const (
	Accepted  PushResult = iota
	Full                 // no room and the caller does not wait
	Closed               // the bus refuses outside adds, or the shard stopped
	Cancelled            // the waiting context ended
)

// Engine is one pool's shards and workers.
type Engine[E any] struct {
	cfg     Config
	d       Dispatcher[E]
	life    *Lifecycle
	shards  []*shard[E]
	workers []*worker[E]
	epoch   time.Time

	running atomic.Int32
	exited  chan struct{}
}

// New builds an engine; Start launches its workers.
func New[E any](cfg Config, d Dispatcher[E], life *Lifecycle) *Engine[E] {
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = 64
	}
	e := &Engine[E]{cfg: cfg, d: d, life: life, epoch: time.Now(), exited: make(chan struct{})}
	e.shards = make([]*shard[E], cfg.Shards)
	e.workers = make([]*worker[E], cfg.Shards)
	for i := range e.shards {
		s := &shard[E]{wake: make(chan struct{}, 1)}
		e.shards[i] = s
		e.workers[i] = newWorker(e, s, i)
	}
	return e
}

// Start launches one worker per shard.
func (e *Engine[E]) Start() {
	e.running.Add(int32(len(e.workers)))
	for _, w := range e.workers {
		go w.run()
	}
}

// Since returns the time since the engine's epoch, for Item.Added.
func (e *Engine[E]) Since() time.Duration { return time.Since(e.epoch) }

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
	hi, _ := bits.Mul64(mix(key), uint64(len(e.shards)))
	return e.shards[hi]
}

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

// Parent is the running handler a follow-on add comes from.
type Parent interface {
	// Running reports whether the handler has not returned yet.
	Running() bool
}

// Push appends it to its key's shard.
//
// A follow-on add, made by a handler (parent) that is still running when
// the item goes on the FIFO, is accepted whatever the capacity and even
// while the bus is closing: the parent's own event keeps the bus from
// being idle until then. Otherwise, while the shard holds QueueSize items,
// Push waits for room until wait ends, or returns Full at once when wait
// is nil.
func (e *Engine[E]) Push(it Item[E], parent Parent, wait context.Context) PushResult {
	s := e.shardFor(it.Key)
	s.mu.Lock()
	// Decided under the lock, at the moment of enqueue: a handler that
	// returned meanwhile makes this an outside add.
	inside := parent != nil && parent.Running()
	for {
		if s.stopped || (!inside && e.life.closing.Load()) {
			s.mu.Unlock()
			return Closed
		}
		if inside || s.occupied < e.cfg.QueueSize {
			break
		}
		if wait == nil {
			s.mu.Unlock()
			return Full
		}
		if s.space == nil {
			s.space = make(chan struct{})
		}
		space := s.space
		s.spaceWaiters++
		s.mu.Unlock()
		var res PushResult
		select {
		case <-space:
		case <-wait.Done():
			res = Cancelled
		case <-e.life.closingCh:
			res = Closed
		}
		s.mu.Lock()
		s.spaceWaiters--
		if res != Accepted {
			s.mu.Unlock()
			return res
		}
	}
	s.items = append(s.items, it)
	s.occupied++
	s.enqCount++
	wake := s.sleeping
	s.sleeping = false
	s.mu.Unlock()
	if wake {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return Accepted
}

// Abort makes the engine give up: every shard stops taking items, what is
// still in the FIFOs goes to the dead-letter sink, and workers drop what
// they hold once their current handler returns. The Lifecycle must be
// aborted first, and the engine halted before that (see Halt).
func (e *Engine[E]) Abort() {
	for _, s := range e.shards {
		s.mu.Lock()
		stolen := s.items
		s.items = nil
		s.stopped = true
		n := len(stolen)
		s.occupied -= n
		s.doneCount += uint64(n)
		s.mu.Unlock()
		s.deadLettered.Add(uint64(n))
		for i := range stolen {
			e.d.DeadLetter(&Unit[E]{Items: stolen[i : i+1], Event: stolen[i].Event}, e.cfg.ErrClosed)
		}
	}
	e.WakeAll()
}

// Unfinished returns how many accepted events have not finished: queued,
// in a worker's hands or waiting for a retry. Each shard is read under its
// lock, so the count is exact for each shard at the moment it is read.
func (e *Engine[E]) Unfinished() int { return e.count(false) }

// Halt makes every shard refuse all adds, follow-on ones included, and
// returns how many accepted events had not finished then (see Unfinished).
// Close calls it when it gives up, before handler contexts are cancelled:
// stopping and counting under the same lock leaves no add uncounted, and
// no handler has yet been told to return early.
func (e *Engine[E]) Halt() int { return e.count(true) }

func (e *Engine[E]) count(halt bool) int {
	n := 0
	for i, s := range e.shards {
		p := &e.workers[i].pub
		s.mu.Lock()
		if halt {
			s.stopped = true
		}
		// Events the worker finished but has not yet subtracted from
		// occupied are not unfinished.
		n += s.occupied - int(p.finished()-p.finishedPublished)
		s.mu.Unlock()
	}
	return n
}

// WakeAll wakes every worker so that it sees a change of the Lifecycle
// (Stop, Abort).
func (e *Engine[E]) WakeAll() {
	for _, w := range e.workers {
		w.poke()
	}
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
		close(e.exited)
	}
}

// IsWorker reports whether the goroutine with the given id is one of the
// engine's workers.
func (e *Engine[E]) IsWorker(id int64) bool {
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
	for _, s := range e.shards {
		s.mu.Lock()
		//lint:ignore SA2001 an empty critical section is the point: it waits for the holder
		s.mu.Unlock()
	}
}
