// Package eventbustest provides utilities for testing code built on
// [github.com/imbus/eventbus], in the spirit of net/http/httptest:
//
//   - [MockConn] is an [eventbus.Conn] that records the frames handlers
//     write to it, and can be made to fail writes or be closed.
//   - [Recorder] is an [eventbus.Emitter] that records follow-on events
//     instead of dispatching them, so a handler that emits can be tested
//     alone.
//   - [Run] passes one event through a handler, or a whole chain,
//     synchronously, with the bus's chain semantics and without a bus.
//   - [NewBus] builds a started bus that is closed when the test ends, and
//     fails the test if events were left behind or dead-lettered when the
//     test did not expect it.
//   - [NewLogger] is a *slog.Logger that writes through t.Log.
//
// Every wait in this package is bounded by a context or a timeout: a test
// that expects something which never happens fails instead of hanging.
package eventbustest

import (
	"context"
	"fmt"
	"sync"
)

// signal wakes goroutines waiting for a change of state guarded by the
// owner's mutex. The zero value is ready to use.
type signal struct {
	ch chan struct{}
}

// wait returns a channel closed at the next broadcast. The owner's mutex
// must be held.
func (s *signal) wait() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// broadcast wakes every waiter. The owner's mutex must be held.
func (s *signal) broadcast() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// waitFor blocks until check reports done, check returns an error, or ctx
// ends. check runs with mu held; sig must be broadcast under mu whenever
// the state check reads changes.
func waitFor(ctx context.Context, mu *sync.Mutex, sig *signal, check func() (bool, error)) error {
	for {
		mu.Lock()
		done, err := check()
		if done || err != nil {
			mu.Unlock()
			return err
		}
		ch := sig.wait()
		mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// shortfall is the error of a wait that ended before it saw n things.
func shortfall(what string, got, want int, err error) error {
	return fmt.Errorf("eventbustest: got %d of %d %s: %w", got, want, what, err)
}
