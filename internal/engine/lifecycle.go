package engine

import (
	"context"
	"sync"
	"sync/atomic"
)

// Lifecycle is the state shared by every engine of one bus: whether it is
// closing, stopping or aborted, and who waits for it to become idle.
//
// Closing refuses outside adds; stopping lets idle workers exit; aborting
// cancels handler contexts and makes workers dead-letter what they hold.
type Lifecycle struct {
	closing   atomic.Bool
	closingCh chan struct{}
	closeOnce sync.Once

	stopCh   chan struct{}
	stopOnce sync.Once

	aborted     atomic.Bool
	abortCtx    context.Context
	abortCancel context.CancelFunc

	// queues are the run queues of the engines started and not exited:
	// Stop and Abort wake their sleeping workers.
	queuesMu sync.Mutex
	queues   map[*runQueue]struct{}

	idleWaiters atomic.Int32
	idleMu      sync.Mutex
	idleCh      chan struct{}
}

// NewLifecycle returns the lifecycle of a bus that is running.
func NewLifecycle() *Lifecycle {
	ctx, cancel := context.WithCancel(context.Background())
	return &Lifecycle{
		closingCh:   make(chan struct{}),
		stopCh:      make(chan struct{}),
		abortCtx:    ctx,
		abortCancel: cancel,
		idleCh:      make(chan struct{}),
		queues:      make(map[*runQueue]struct{}),
	}
}

// AbortContext is cancelled when the bus gives up draining; handler contexts
// take their cancellation from it.
func (l *Lifecycle) AbortContext() context.Context { return l.abortCtx }

// Closing reports whether outside adds are refused.
func (l *Lifecycle) Closing() bool { return l.closing.Load() }

// ClosingCh is closed when Closing becomes true.
func (l *Lifecycle) ClosingCh() <-chan struct{} { return l.closingCh }

// Aborted reports whether the bus gave up draining.
func (l *Lifecycle) Aborted() bool { return l.aborted.Load() }

// BeginClose refuses outside adds from now on and wakes adds waiting for room.
func (l *Lifecycle) BeginClose() {
	l.closeOnce.Do(func() {
		l.closing.Store(true)
		close(l.closingCh)
	})
}

// Stop lets workers exit once their shard is empty.
func (l *Lifecycle) Stop() {
	l.stopOnce.Do(func() {
		close(l.stopCh)
		l.wakeSleepers()
	})
}

func (l *Lifecycle) stopping() bool {
	select {
	case <-l.stopCh:
		return true
	default:
		return false
	}
}

// Abort cancels handler contexts and makes workers give up what they hold.
func (l *Lifecycle) Abort() {
	l.BeginClose()
	l.aborted.Store(true)
	l.abortCancel()
	l.wakeSleepers()
}

// watch makes Stop and Abort wake the sleeping workers of q; unwatch ends
// that once its engine's workers exited.
func (l *Lifecycle) watch(q *runQueue) {
	l.queuesMu.Lock()
	l.queues[q] = struct{}{}
	l.queuesMu.Unlock()
}

func (l *Lifecycle) unwatch(q *runQueue) {
	l.queuesMu.Lock()
	delete(l.queues, q)
	l.queuesMu.Unlock()
}

// wakeSleepers wakes every sleeping worker of every engine, after a flag
// that makes them exit was set: workers sleep on their wake channel alone
// and look at the flags when they wake.
func (l *Lifecycle) wakeSleepers() {
	l.queuesMu.Lock()
	defer l.queuesMu.Unlock()
	for q := range l.queues {
		q.wakeAll()
	}
}

// Release cancels the abort context once the bus has drained, so that
// contexts handlers kept (and contexts derived from them) end as well.
func (l *Lifecycle) Release() { l.abortCancel() }

// idleSignal returns a channel that is closed at the next idle notification.
// The caller must hold a waiter registration (see WaitIdle).
func (l *Lifecycle) idleSignal() <-chan struct{} {
	l.idleMu.Lock()
	defer l.idleMu.Unlock()
	return l.idleCh
}

// notifyIdle wakes idle waiters, if any, so they check the counters again.
func (l *Lifecycle) notifyIdle() {
	if l.idleWaiters.Load() == 0 {
		return
	}
	l.idleMu.Lock()
	close(l.idleCh)
	l.idleCh = make(chan struct{})
	l.idleMu.Unlock()
}

// Idle reports whether there was an instant, during the call, at which no
// event was queued, in flight or parked in any of the engines.
//
// It reads every engine's finished count first and every added count
// after. Both only grow, an event is added before it finishes and a
// follow-on event is added before the handler that made it returns, so
// equal sums mean that at the instant between the two passes everything
// added had finished.
func Idle[E any](engines ...*Engine[E]) bool {
	var done, added uint64
	for _, e := range engines {
		done += e.settled()
	}
	for _, e := range engines {
		added += e.added.Load()
	}
	return done == added
}

// WaitIdle blocks until Idle holds, ctx ends (its error is returned) or
// until stop is closed (nil is returned). It uses no timer: workers notify
// waiters when their engine looks idle.
func WaitIdle[E any](ctx context.Context, l *Lifecycle, stop <-chan struct{}, engines ...*Engine[E]) error {
	l.idleWaiters.Add(1)
	defer l.idleWaiters.Add(-1)
	for {
		sig := l.idleSignal()
		if Idle(engines...) {
			return nil
		}
		select {
		case <-sig:
		case <-stop:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
