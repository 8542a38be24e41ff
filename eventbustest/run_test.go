package eventbustest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/eventbustest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func onSend(uid string) *eventbus.UserContext {
	return &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: eventbustest.NewMockConn(uid)}
}

// calls records which handlers ran, for one chain.
type calls struct {
	mu  sync.Mutex
	ran []string
}

func (c *calls) handler(name string, result func() error) eventbus.Handler[eventbus.UserContext] {
	return func(ctx context.Context, ev *eventbus.UserContext) error {
		c.mu.Lock()
		c.ran = append(c.ran, name)
		c.mu.Unlock()
		return result()
	}
}

func (c *calls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ran...)
}

func ok() error { return nil }

func TestRunWholeChain(t *testing.T) {
	var c calls
	res := eventbustest.Run(context.Background(), onSend("u"),
		c.handler("a", ok), c.handler("b", ok), c.handler("c", ok))
	assert.True(t, res.Handled())
	assert.Equal(t, eventbustest.Result{Ran: 3}, res)
	assert.Equal(t, []string{"a", "b", "c"}, c.list())
}

func TestRunStopChain(t *testing.T) {
	var c calls
	rejected := fmt.Errorf("audit: banned word: %w", eventbus.ErrStopChain)
	res := eventbustest.Run(context.Background(), onSend("u"),
		c.handler("audit", func() error { return rejected }), c.handler("store", ok))
	assert.False(t, res.Handled())
	assert.True(t, res.Stopped)
	assert.Same(t, rejected, res.Err)
	assert.Equal(t, 1, res.Ran)
	assert.Nil(t, res.Panic)
	assert.Equal(t, "handler", res.Handler, "the short name of the function, as a bus names it")
	assert.Equal(t, []string{"audit"}, c.list(), "the chain ends at the rejection")
}

func TestRunError(t *testing.T) {
	var c calls
	boom := errors.New("db down")
	res := eventbustest.Run(context.Background(), onSend("u"),
		c.handler("a", ok), c.handler("store", func() error { return eventbus.Permanent(boom) }), c.handler("c", ok))
	assert.False(t, res.Stopped)
	assert.ErrorIs(t, res.Err, boom)
	assert.True(t, eventbus.IsPermanent(res.Err))
	assert.Equal(t, 2, res.Ran)
	assert.Equal(t, "handler#2", res.Handler, "the second handler of one name gets #2, as on a bus")
	assert.Equal(t, []string{"a", "store"}, c.list())
}

func TestRunPanic(t *testing.T) {
	var c calls
	res := eventbustest.Run(context.Background(), onSend("u"),
		c.handler("a", ok), c.handler("p", func() error { panic("kaboom") }), c.handler("c", ok))
	require.NotNil(t, res.Panic)
	assert.Equal(t, "kaboom", res.Panic.Value)
	assert.NotEmpty(t, res.Panic.Stack)
	var pe *eventbus.PanicError
	require.ErrorAs(t, res.Err, &pe)
	assert.Same(t, res.Panic, pe)
	assert.False(t, res.Stopped)
	assert.Equal(t, 2, res.Ran)
	assert.Equal(t, []string{"a", "p"}, c.list())

	// A panic with an error value unwraps to it, as on a bus.
	boom := errors.New("boom")
	res = eventbustest.Run(context.Background(), onSend("u"),
		func(context.Context, *eventbus.UserContext) error { panic(boom) })
	assert.ErrorIs(t, res.Err, boom)
	require.NotNil(t, res.Panic)
}

func TestRunBadInput(t *testing.T) {
	res := eventbustest.Run[eventbus.UserContext](context.Background(), nil,
		func(context.Context, *eventbus.UserContext) error {
			t.Error("handler called with a nil event")
			return nil
		})
	assert.ErrorIs(t, res.Err, eventbus.ErrNilEvent)
	assert.Zero(t, res.Ran)

	res = eventbustest.Run(context.Background(), onSend("u"))
	assert.ErrorIs(t, res.Err, eventbus.ErrNoHandler)
	assert.Zero(t, res.Ran)

	var c calls
	res = eventbustest.Run(context.Background(), onSend("u"), c.handler("a", ok), nil, c.handler("c", ok))
	assert.ErrorIs(t, res.Err, eventbus.ErrNilHandler)
	assert.Equal(t, 1, res.Ran)
	assert.Equal(t, []string{"a"}, c.list())

	// A nil ctx is Background.
	//lint:ignore SA1012 a nil ctx on purpose
	res = eventbustest.Run(nil, onSend("u"), func(ctx context.Context, _ *eventbus.UserContext) error {
		if ctx == nil {
			return errors.New("nil ctx")
		}
		return nil
	})
	assert.True(t, res.Handled(), "%v", res.Err)
}

type ctxKey struct{}

func TestRunCallInfo(t *testing.T) {
	var infos []eventbus.CallInfo
	grab := func(ctx context.Context, ev *eventbus.PushContext) error {
		info, ok := eventbus.CallInfoFrom(ctx)
		if !ok {
			return errors.New("no CallInfo")
		}
		if ctx.Value(ctxKey{}) != "trace-1" {
			return errors.New("ctx values lost")
		}
		infos = append(infos, info)
		return nil
	}
	ctx := context.WithValue(context.Background(), ctxKey{}, "trace-1")
	ev := &eventbus.PushContext{EventType: eventbus.EventPushOffline, Message: &eventbus.Message{}}
	res := eventbustest.Run(ctx, ev, grab, grab)
	require.True(t, res.Handled(), "%v", res.Err)
	require.Len(t, infos, 2)
	for i, info := range infos {
		assert.Equal(t, eventbus.PoolPusher, info.Pool)
		assert.Equal(t, eventbus.EventPushOffline, info.Type)
		assert.Equal(t, i, info.Index)
		assert.Equal(t, 1, info.Attempt)
		assert.NotZero(t, info.EventID)
		assert.Equal(t, infos[0].EventID, info.EventID, "one event, one id")
		assert.Equal(t, []string{"TestRunCallInfo", "TestRunCallInfo#2"}[i], info.Handler)
	}

	res = eventbustest.Run(ctx, ev, grab)
	require.True(t, res.Handled())
	assert.NotEqual(t, infos[0].EventID, infos[2].EventID, "each Run is a new event")

	var pool eventbus.Pool
	eventbustest.Run(ctx, distribute("c"), func(ctx context.Context, _ *eventbus.ChannelContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		pool = info.Pool
		return nil
	})
	assert.Equal(t, eventbus.PoolChannel, pool)
}

var errStore = errors.New("store failed")

func failingStore(context.Context, *eventbus.UserContext) error { return errStore }

// TestRunNamesLikeABus checks that Run names a handler as a fresh bus
// names the first handler registered without WithName.
func TestRunNamesLikeABus(t *testing.T) {
	b := eventbustest.NewBus(t)
	reg, err := eventbus.Register(b.Bus, eventbus.EventOnSend, failingStore)
	require.NoError(t, err)

	res := eventbustest.Run(context.Background(), onSend("u"), failingStore)
	assert.ErrorIs(t, res.Err, errStore)
	assert.Equal(t, reg.Name(), res.Handler)
	assert.Equal(t, "failingStore", res.Handler)
}

// TestRunMatchesBus runs the same chains through Run and through a bus
// (one attempt, no retry) and checks that both end the same way, after the
// same handlers.
func TestRunMatchesBus(t *testing.T) {
	boom := errors.New("boom")
	outcomes := map[string]func() error{
		"ok":        ok,
		"stop":      func() error { return eventbus.ErrStopChain },
		"wrapstop":  func() error { return fmt.Errorf("rejected: %w", eventbus.ErrStopChain) },
		"fail":      func() error { return boom },
		"permanent": func() error { return eventbus.Permanent(boom) },
		"panic":     func() error { panic(boom) },
	}
	chains := [][]string{
		{"ok"}, {"ok", "ok", "ok"}, {"stop", "ok"}, {"ok", "wrapstop", "ok"},
		{"fail"}, {"ok", "fail", "ok"}, {"permanent", "ok"}, {"ok", "panic", "ok"},
	}
	for _, chain := range chains {
		t.Run(strings.Join(chain, "-"), func(t *testing.T) {
			var viaRun, viaBus calls
			var runHs, busHs []eventbus.Handler[eventbus.UserContext]
			for i, o := range chain {
				name := fmt.Sprintf("%d:%s", i, o)
				runHs = append(runHs, viaRun.handler(name, outcomes[o]))
				busHs = append(busHs, viaBus.handler(name, outcomes[o]))
			}
			res := eventbustest.Run(context.Background(), onSend("u"), runHs...)

			b := eventbustest.NewBus(t, eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 1}))
			b.ExpectDeadLetters()
			for _, h := range busHs {
				_, err := eventbus.Register(b.Bus, eventbus.EventOnSend, h)
				require.NoError(t, err)
			}
			require.NoError(t, b.AddEvent(context.Background(), onSend("u")))
			b.Settle()

			assert.Equal(t, viaBus.list(), viaRun.list(), "same handlers ran")
			assert.Len(t, viaRun.list(), res.Ran)
			st := b.Stats().User
			letters := b.DeadLetters()
			switch {
			case res.Handled():
				assert.Equal(t, uint64(1), st.Handled)
			case res.Stopped:
				assert.Equal(t, uint64(1), st.Stopped)
			default:
				require.Len(t, letters, 1)
				assert.Equal(t, uint64(1), st.DeadLettered)
				assert.ErrorIs(t, letters[0].Err, boom)
				assert.Equal(t, res.Panic != nil, st.Panics == 1, "panic counted the same")
				// Both name a handler as the bus does by default: the
				// function's short name, "#n" for the n-th of that name.
				assert.Equal(t, letters[0].Handler, res.Handler)
			}
		})
	}
}

func TestRunEmitsIntoRecorder(t *testing.T) {
	var rec eventbustest.Recorder
	h := func(ctx context.Context, ev *eventbus.UserContext) error {
		return rec.AddEvent(ctx, distribute("g"))
	}
	res := eventbustest.Run(context.Background(), onSend("u"), h)
	require.True(t, res.Handled())
	rs := rec.Records()
	require.Len(t, rs, 1)
	assert.True(t, rs[0].FromHandler)
	assert.Equal(t, eventbus.EventOnSend, rs[0].Call.Type)
	assert.Equal(t, 0, rs[0].Call.Index)
}

// TestRunAroundMiddleware shows that a Middleware can be tested with Run
// by wrapping the handler by hand.
func TestRunAroundMiddleware(t *testing.T) {
	var seen []string
	mw := eventbus.Middleware(func(next eventbus.HandlerFunc) eventbus.HandlerFunc {
		return func(ctx context.Context, ev eventbus.Event) error {
			info, _ := eventbus.CallInfoFrom(ctx)
			seen = append(seen, fmt.Sprintf("%s/%d", info.Type, info.Attempt))
			return next(ctx, ev)
		}
	})
	inner := func(ctx context.Context, ev eventbus.Event) error { return nil }
	h := func(ctx context.Context, ev *eventbus.UserContext) error { return mw(inner)(ctx, ev) }
	require.True(t, eventbustest.Run(context.Background(), onSend("u"), h).Handled())
	assert.Equal(t, []string{"OnSend/1"}, seen)
}

func TestRunDoesNotWait(t *testing.T) {
	// Run is synchronous: effects are visible as soon as it returns.
	conn := eventbustest.NewMockConn("u")
	ev := &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn, Frame: "hi"}
	res := eventbustest.Run(context.Background(), ev, func(ctx context.Context, ev *eventbus.UserContext) error {
		return ev.Conn.(*eventbustest.MockConn).Write(ev.Frame)
	})
	require.True(t, res.Handled())
	assert.Equal(t, []any{"hi"}, conn.Frames())
}

// verdict is how an event ended after one handler: what a bus does with
// it and whether the attempt counts as a panic.
type verdict struct {
	Outcome  string // handled, stopped, dead-lettered (no retry), retried
	Panicked bool
	TimedOut bool
}

// verdictCases are the handler behaviours both Run and a bus classify.
var verdictCases = []struct {
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

const verdictTimeout = 20 * time.Millisecond

// timeoutFor is the handler timeout of a case: the short one only where
// the case is the timeout. Elsewhere a timeout no attempt reaches on any
// machine, so that a slow attempt (a panic's stack capture under -race on
// a loaded machine) is never also counted as timed out.
func timeoutFor(want verdict) time.Duration {
	if want.TimedOut {
		return verdictTimeout
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

// TestRunAgreesWithBus runs one table of handler behaviours through
// a bus and through Run and checks that both classify each the same way
// (and as the table says). panic(ErrStopChain) is a failure on a bus, so it
// must not be Stopped in Run either. A Goexit cannot be turned into a
// Result (Run leaves t.FailNow to end the test): Run must not return.
func TestRunAgreesWithBus(t *testing.T) {
	for _, c := range verdictCases {
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
