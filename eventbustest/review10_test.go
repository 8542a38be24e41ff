package eventbustest_test

// Regression tests for issue #10 (outside review), item 8.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/eventbustest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// verdict is how an event ended after one handler: what a bus does with
// it and whether the attempt counts as a panic.
type verdict struct {
	Outcome  string // handled, stopped, dead-lettered (no retry), retried
	Panicked bool
	TimedOut bool
}

// review8Cases are the handler behaviours both Run and a bus classify.
var review8Cases = []struct {
	name string
	h    func(ctx context.Context) error
	want verdict
}{
	{"return nil", func(context.Context) error { return nil }, verdict{Outcome: "handled"}},
	{"return ErrStopChain", func(context.Context) error { return eventbus.ErrStopChain }, verdict{Outcome: "stopped"}},
	{"wrapped ErrStopChain", func(context.Context) error { return fmt.Errorf("audit: %w", eventbus.ErrStopChain) }, verdict{Outcome: "stopped"}},
	{"Permanent", func(context.Context) error { return eventbus.Permanent(errors.New("bad frame")) }, verdict{Outcome: "dead-lettered"}},
	{"plain error", func(context.Context) error { return errors.New("db down") }, verdict{Outcome: "retried"}},
	{"panic(value)", func(context.Context) error { panic("kaboom") }, verdict{Outcome: "retried", Panicked: true}},
	{"panic(ErrStopChain)", func(context.Context) error { panic(eventbus.ErrStopChain) }, verdict{Outcome: "retried", Panicked: true}},
	{"panic(Permanent)", func(context.Context) error { panic(eventbus.Permanent(errors.New("x"))) }, verdict{Outcome: "retried", Panicked: true}},
	{"runtime.Goexit", func(context.Context) error { runtime.Goexit(); return nil }, verdict{Outcome: "retried", Panicked: true}},
	{"timeout", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, verdict{Outcome: "retried", TimedOut: true}},
}

const review8Timeout = 20 * time.Millisecond

// timeoutFor is the handler timeout of a case: the short one only where
// the case is the timeout. Elsewhere a timeout no attempt reaches on any
// machine, so that a slow attempt (a panic's stack capture under -race on
// a loaded machine) is never also counted as timed out.
func timeoutFor(want verdict) time.Duration {
	if want.TimedOut {
		return review8Timeout
	}
	return time.Minute
}

// busVerdict runs h once through a bus that allows two attempts and reads
// the verdict from its counters.
func busVerdict(t *testing.T, h func(context.Context) error, timeout time.Duration) verdict {
	b := eventbustest.NewBus(t,
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}),
		eventbus.WithUserPool(eventbus.PoolConfig{HandlerTimeout: timeout}))
	b.ExpectDeadLetters()
	_, err := eventbus.Register(b.Bus, eventbus.EventOnSend, func(ctx context.Context, _ *eventbus.UserContext) error { return h(ctx) })
	require.NoError(t, err)
	require.NoError(t, b.AddEvent(context.Background(), onSend("u")))
	b.Settle()
	st := b.Stats().User
	v := verdict{Panicked: st.Panics > 0, TimedOut: st.Timeouts > 0}
	switch {
	case st.Handled == 1:
		v.Outcome = "handled"
	case st.Stopped == 1:
		v.Outcome = "stopped"
	case st.DeadLettered == 1 && st.Retried == 0:
		v.Outcome = "dead-lettered"
	case st.DeadLettered == 1 && st.Retried == 1:
		v.Outcome = "retried"
	default:
		t.Fatalf("unexpected stats %+v", st)
	}
	return v
}

// runVerdict classifies Run's Result as a bus would end the event.
func runVerdict(res eventbustest.Result) verdict {
	v := verdict{Panicked: res.Panic != nil, TimedOut: errors.Is(res.Err, context.DeadlineExceeded)}
	switch {
	case res.Handled():
		v.Outcome = "handled"
	case res.Stopped:
		v.Outcome = "stopped"
	case res.Permanent:
		v.Outcome = "dead-lettered"
	default:
		v.Outcome = "retried"
	}
	return v
}

// TestReview8_RunAgreesWithBus runs one table of handler behaviours through
// a bus and through Run and checks that both classify each the same way
// (and as the table says). panic(ErrStopChain) is a failure on a bus, so it
// must not be Stopped in Run either. A Goexit cannot be turned into a
// Result (Run leaves t.FailNow to end the test): Run must not return.
func TestReview8_RunAgreesWithBus(t *testing.T) {
	for _, c := range review8Cases {
		t.Run(c.name, func(t *testing.T) {
			bus := busVerdict(t, c.h, timeoutFor(c.want))
			assert.Equal(t, c.want, bus, "bus")

			ctx, cancel := context.WithTimeout(context.Background(), timeoutFor(c.want))
			defer cancel()
			returned := make(chan eventbustest.Result, 1)
			done := make(chan struct{})
			go func() {
				defer close(done)
				returned <- eventbustest.Run(ctx, onSend("u"), func(ctx context.Context, _ *eventbus.UserContext) error { return c.h(ctx) })
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not end")
			}
			select {
			case res := <-returned:
				assert.Equal(t, bus, runVerdict(res), "Run and bus disagree; Run gave %+v", res)
			default:
				assert.Equal(t, "runtime.Goexit", c.name, "Run did not return")
			}
		})
	}
}
