package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// coreBadInputBus is a started bus with a handler for one type of each pool.
func coreBadInputBus(t *testing.T, opts ...eventbus.Option) *eventbus.Bus {
	t.Helper()
	bus := newBus(t, opts...)
	mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error { return nil })
	mustRegister(t, bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error { return nil })
	mustRegister(t, bus, eventbus.EventPushOnline, func(ctx context.Context, ev *eventbus.PushContext) error { return nil })
	mustStart(t, bus)
	return bus
}

// TestBadInputEventsGiveTypedErrors: every malformed event is refused by
// AddEvent and TryAddEvent with its sentinel error, never a panic, and
// nothing is counted as added.
func TestBadInputEventsGiveTypedErrors(t *testing.T) {
	bus := coreBadInputBus(t)
	conn := &testConn{uid: "u"}
	cases := []struct {
		name string
		ev   eventbus.Event
		want error
	}{
		{"nil event", nil, eventbus.ErrNilEvent},
		{"typed nil *UserContext", (*eventbus.UserContext)(nil), eventbus.ErrNilEvent},
		{"typed nil *ChannelContext", (*eventbus.ChannelContext)(nil), eventbus.ErrNilEvent},
		{"typed nil *PushContext", (*eventbus.PushContext)(nil), eventbus.ErrNilEvent},
		{"UserContext without Conn", &eventbus.UserContext{EventType: eventbus.EventOnSend}, eventbus.ErrNilEvent},
		{"PushContext without Message", &eventbus.PushContext{EventType: eventbus.EventPushOnline, Subscribers: []string{"a"}}, eventbus.ErrNilEvent},
		{"type 0", &eventbus.UserContext{EventType: eventbus.EventUnknown, Conn: conn}, eventbus.ErrUnknownEventType},
		{"undeclared type in the user range", &eventbus.UserContext{EventType: 7, Conn: conn}, eventbus.ErrUnknownEventType},
		{"undeclared type above 29", &eventbus.ChannelContext{EventType: 99, ChannelID: "c"}, eventbus.ErrUnknownEventType},
		{"ChannelContext with a user type", &eventbus.ChannelContext{EventType: eventbus.EventOnSend, ChannelID: "c"}, eventbus.ErrWrongPool},
		{"UserContext with a pusher type", &eventbus.UserContext{EventType: eventbus.EventPushOnline, Conn: conn}, eventbus.ErrWrongPool},
		{"PushContext with a channel type", corePush(eventbus.EventChannelStore, "c", 1), eventbus.ErrWrongPool},
		{"type without handler", userEvent(eventbus.EventConnClose, "u"), eventbus.ErrNoHandler},
		{"channel type without handler", coreChan(eventbus.EventChannelDistribute, "c"), eventbus.ErrNoHandler},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.NotPanics(t, func() {
				assert.ErrorIs(t, bus.AddEvent(context.Background(), c.ev), c.want, "AddEvent")
				assert.ErrorIs(t, bus.TryAddEvent(c.ev), c.want, "TryAddEvent")
			})
		})
	}
	st := bus.Stats()
	assert.Zero(t, st.User.Added+st.Channel.Added+st.Pusher.Added, "refused events are not added")
}

// TestBadInputRegister: Register refuses a nil handler, unknown types and
// a context type of the wrong pool with typed errors, never a panic.
func TestBadInputRegister(t *testing.T) {
	bus := newBus(t)
	okUser := func(ctx context.Context, ev *eventbus.UserContext) error { return nil }
	var nilUser eventbus.Handler[eventbus.UserContext]

	_, err := eventbus.Register[eventbus.UserContext](bus, eventbus.EventOnSend, nil)
	assert.ErrorIs(t, err, eventbus.ErrNilHandler)
	_, err = eventbus.Register(bus, eventbus.EventOnSend, nilUser)
	assert.ErrorIs(t, err, eventbus.ErrNilHandler, "typed nil handler")

	_, err = eventbus.Register(bus, eventbus.EventUnknown, okUser)
	assert.ErrorIs(t, err, eventbus.ErrUnknownEventType, "type 0")
	_, err = eventbus.Register(bus, 6, okUser)
	assert.ErrorIs(t, err, eventbus.ErrUnknownEventType, "undeclared 6")
	_, err = eventbus.Register(bus, 200, okUser)
	assert.ErrorIs(t, err, eventbus.ErrUnknownEventType, "undeclared 200")
	assert.ErrorContains(t, err, "bus.Define(200, pool, name)", "the error says how to declare the type")

	_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.ChannelContext) error { return nil })
	assert.ErrorIs(t, err, eventbus.ErrWrongPool, "channel handler for a user type")
	_, err = eventbus.Register(bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.PushContext) error { return nil })
	assert.ErrorIs(t, err, eventbus.ErrWrongPool, "push handler for a channel type")
	_, err = eventbus.Register(bus, eventbus.EventPushOffline, okUser)
	assert.ErrorIs(t, err, eventbus.ErrWrongPool, "user handler for a pusher type")

	_, err = eventbus.Register(bus, eventbus.EventOnSend, okUser, eventbus.WithHandlerRetry(eventbus.RetryPolicy{MaxAttempts: -1}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "MaxAttempts")

	_, err = eventbus.Register(nil, eventbus.EventOnSend, okUser)
	assert.Error(t, err, "Register on a nil *Bus")
	require.NotPanics(t, func() {
		_, err = eventbus.Register(bus, eventbus.EventOnSend, okUser, nil)
	})
	assert.NoError(t, err, "a nil HandlerOption is ignored")
}

// TestBadInputLifecycle: adds before Start get ErrNotStarted, after Close
// ErrClosed.
func TestBadInputLifecycle(t *testing.T) {
	bus := newBus(t)
	mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error { return nil })
	ev := userEvent(eventbus.EventOnSend, "u")
	require.ErrorIs(t, bus.AddEvent(context.Background(), ev), eventbus.ErrNotStarted)
	require.ErrorIs(t, bus.TryAddEvent(ev), eventbus.ErrNotStarted)
	mustStart(t, bus)
	require.Error(t, bus.Start(), "Start twice")
	require.NoError(t, bus.AddEvent(context.Background(), ev))
	var noCtx context.Context
	require.NoError(t, bus.AddEvent(noCtx, ev), "a nil ctx is context.Background(), as AddEvent's doc says")
	require.NoError(t, bus.Close(deadline(t, 5*time.Second)))
	assert.Equal(t, uint64(2), bus.Stats().User.Handled, "the event added with a nil ctx ran")
	require.ErrorIs(t, bus.AddEvent(context.Background(), ev), eventbus.ErrClosed)
	require.ErrorIs(t, bus.TryAddEvent(ev), eventbus.ErrClosed)
}

// TestBadInputNegativeConfig: New refuses negative PoolConfig and
// RetryPolicy fields with an error naming the option and the field.
func TestBadInputNegativeConfig(t *testing.T) {
	type poolOpt struct {
		option string
		with   func(eventbus.PoolConfig) eventbus.Option
	}
	pools := []poolOpt{
		{"WithUserPool", eventbus.WithUserPool},
		{"WithChannelPool", eventbus.WithChannelPool},
		{"WithPusherPool", eventbus.WithPusherPool},
	}
	for _, p := range pools {
		for field, cfg := range map[string]eventbus.PoolConfig{
			"Workers":        {Workers: -1},
			"QueueSize":      {QueueSize: -1},
			"HandlerTimeout": {HandlerTimeout: -time.Second},
			"MaxAttempts":    {Retry: &eventbus.RetryPolicy{MaxAttempts: -1}},
			"InitialBackoff": {Retry: &eventbus.RetryPolicy{InitialBackoff: -1}},
			"MaxBackoff":     {Retry: &eventbus.RetryPolicy{MaxBackoff: -1}},
		} {
			t.Run(p.option+"/"+field, func(t *testing.T) {
				var b *eventbus.Bus
				var err error
				require.NotPanics(t, func() { b, err = eventbus.New(eventbus.WithLogger(quiet), p.with(cfg)) })
				require.Error(t, err)
				assert.Nil(t, b)
				assert.Contains(t, err.Error(), field)
				assert.Contains(t, err.Error(), p.option)
			})
		}
	}
	for field, rp := range map[string]eventbus.RetryPolicy{
		"MaxAttempts":    {MaxAttempts: -3},
		"InitialBackoff": {InitialBackoff: -time.Millisecond},
		"MaxBackoff":     {MaxBackoff: -time.Millisecond},
	} {
		t.Run("WithRetry/"+field, func(t *testing.T) {
			b, err := eventbus.New(eventbus.WithLogger(quiet), eventbus.WithRetry(rp))
			require.Error(t, err)
			assert.Nil(t, b)
			assert.Contains(t, err.Error(), field)
			assert.Contains(t, err.Error(), "WithRetry")
		})
	}
	t.Run("negative Jitter means none", func(t *testing.T) {
		_, err := eventbus.New(eventbus.WithLogger(quiet), eventbus.WithRetry(eventbus.RetryPolicy{Jitter: -1}))
		require.NoError(t, err)
	})
	t.Run("nil Option is ignored", func(t *testing.T) {
		bus := newBus(t, nil)
		require.NotNil(t, bus)
	})
}

// TestBadInputAdmitRejection: the WithAdmit function's error goes back to
// the caller (outside adds, TryAddEvent and follow-ons alike), the event is
// not added, and the pool counts it as Rejected.
func TestBadInputAdmitRejection(t *testing.T) {
	errRate := errors.New("rate limited")
	admitted := make(chan eventbus.Event, 16)
	bus := newBus(t, eventbus.WithAdmit(func(ctx context.Context, ev eventbus.Event) error {
		if u, ok := ev.(*eventbus.UserContext); ok && u.Conn.UID() == "spammer" {
			return errRate
		}
		if c, ok := ev.(*eventbus.ChannelContext); ok && c.ChannelID == "spam" {
			return errRate
		}
		admitted <- ev
		return nil
	}))
	followOn := make(chan error, 1)
	var mu sync.Mutex
	var handled []string
	mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		mu.Lock()
		handled = append(handled, ev.Conn.UID())
		mu.Unlock()
		if ev.Conn.UID() == "emitter" {
			followOn <- bus.AddEvent(ctx, coreChan(eventbus.EventChannelStore, "spam"))
		}
		return nil
	})
	mustRegister(t, bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error { return nil })
	mustStart(t, bus)

	assert.ErrorIs(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "spammer")), errRate)
	assert.ErrorIs(t, bus.TryAddEvent(userEvent(eventbus.EventOnSend, "spammer")), errRate)
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "emitter")))
	assert.ErrorIs(t, recvWithin(t, followOn, 5*time.Second, "the follow-on add"), errRate)
	idleWithin(t, bus, 5*time.Second)

	assert.Equal(t, []string{"emitter"}, handled)
	st := bus.Stats()
	assert.Equal(t, uint64(2), st.User.Rejected)
	assert.Equal(t, uint64(1), st.User.Added)
	assert.Equal(t, uint64(1), st.Channel.Rejected)
	assert.Zero(t, st.Channel.Added)
	assert.Len(t, admitted, 1)
}

// TestBadInputFullShard: with the only worker busy and the shard holding
// QueueSize events, TryAddEvent gets ErrQueueFull at once and AddEvent
// waits until its ctx ends, then returns an error that is both
// ErrQueueFull and ctx's error. Once the worker drains, adds succeed.
func TestBadInputFullShard(t *testing.T) {
	bus := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, QueueSize: 2}))
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock)
	started := make(chan struct{}, 1)
	mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Conn.UID() == "blocker" {
			started <- struct{}{}
			<-release
		}
		return nil
	})
	mustStart(t, bus)
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "blocker")))
	recvWithin(t, started, 5*time.Second, "the blocking handler")
	require.NoError(t, bus.TryAddEvent(userEvent(eventbus.EventOnSend, "second")), "room for QueueSize events")

	require.ErrorIs(t, bus.TryAddEvent(userEvent(eventbus.EventOnSend, "third")), eventbus.ErrQueueFull)

	start := time.Now()
	err := bus.AddEvent(deadline(t, 30*time.Millisecond), userEvent(eventbus.EventOnSend, "third"))
	assert.ErrorIs(t, err, eventbus.ErrQueueFull)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond, "AddEvent waits for room until ctx ends")

	cctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan error, 1)
	go func() { waiting <- bus.AddEvent(cctx, userEvent(eventbus.EventOnSend, "fourth")) }()
	cancel()
	err = recvWithin(t, waiting, 5*time.Second, "AddEvent with a cancelled ctx")
	assert.ErrorIs(t, err, eventbus.ErrQueueFull)
	assert.ErrorIs(t, err, context.Canceled)

	st := bus.Stats().User
	assert.Equal(t, uint64(2), st.Added, "refused adds are not added")
	assert.Equal(t, int64(2), st.Queued+st.InFlight)

	// A waiting add gets in once the worker drains.
	got := make(chan error, 1)
	go func() { got <- bus.AddEvent(deadline(t, 10*time.Second), userEvent(eventbus.EventOnSend, "patient")) }()
	unblock()
	require.NoError(t, recvWithin(t, got, 10*time.Second, "the waiting add"))
	idleWithin(t, bus, 5*time.Second)
	require.NoError(t, bus.TryAddEvent(userEvent(eventbus.EventOnSend, "later")))
	idleWithin(t, bus, 5*time.Second)
	st = bus.Stats().User
	assert.Equal(t, uint64(4), st.Handled)
	atRest(t, "user", st)
}

// TestWaitIdleNilContextDoesNotPanic: WaitIdle(nil), like Close(nil), takes a
// nil ctx as Background: while a handler runs it neither panics nor hangs,
// and it returns once the handler is released.
func TestWaitIdleNilContextDoesNotPanic(t *testing.T) {
	bus := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	g := newHoldGate(t)
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		g.hold(ctx)
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "u")))
	recvWithin(t, g.entered, 5*time.Second, "handler start")

	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		//lint:ignore SA1012 a nil ctx on purpose
		_ = bus.WaitIdle(nil)
	}()
	// WaitIdle(nil) must neither panic nor hang: it returns once the
	// held handler is released.
	g.open()
	r := recvWithin(t, done, 5*time.Second, "WaitIdle to return")
	require.Nil(t, r, "WaitIdle(nil) panicked")
}

// TestTypedNilConnIsBadInput: a typed nil Conn whose methods panic gets
// ErrNilEvent from AddEvent, not a panic, and the event is not counted.
func TestTypedNilConnIsBadInput(t *testing.T) {
	bus := newBus(t)
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil })
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	var conn *testConn // UID() dereferences it
	err = bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn})
	require.ErrorIs(t, err, eventbus.ErrNilEvent)
	require.Zero(t, bus.Stats().User.Added)
}

// TestPanickingKeyFuncIsBadInput: a KeyFunc that panics is bad input, as a
// panicking Conn is: AddEvent returns ErrNilEvent naming the KeyFunc, the
// panic never reaches its caller, and the event is not counted.
func TestPanickingKeyFuncIsBadInput(t *testing.T) {
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{KeyFunc: func(ev eventbus.Event) uint64 {
		return uint64(len(ev.(*eventbus.UserContext).Conn.UID())) // panics on a nil Conn
	}}))
	mustRegister(t, b, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil })
	mustStart(t, b)
	for name, add := range map[string]func() error{
		"AddEvent": func() error {
			return b.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend})
		},
		"TryAddEvent": func() error { return b.TryAddEvent(&eventbus.UserContext{EventType: eventbus.EventOnSend}) },
	} {
		var err error
		require.Nil(t, noPanic(func() { err = add() }), "%s: a panicking KeyFunc reached the caller", name)
		require.ErrorIs(t, err, eventbus.ErrNilEvent, name)
		assert.Contains(t, err.Error(), "KeyFunc panicked", name)
	}
	st := b.Stats().User
	assert.Zero(t, st.Added)
	assert.Zero(t, st.Rejected)
	// The pool still works.
	require.NoError(t, b.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "u")))
	idleWithin(t, b, 5*time.Second)
	atRest(t, "user", b.Stats().User)
}

// TestUnmadeBusMethodsReturnErrNotNew: every method of a zero Bus, and of a nil
// *Bus, returns ErrNotNew (or a harmless zero result), at once, without a
// panic.
func TestUnmadeBusMethodsReturnErrNotNew(t *testing.T) {
	for name, b := range map[string]*eventbus.Bus{"zero Bus": new(eventbus.Bus), "nil *Bus": nil} {
		t.Run(name, func(t *testing.T) { checkUnmadeBus(t, b) })
	}
}

func checkUnmadeBus(t *testing.T, b *eventbus.Bus) {
	ctx := deadline(t, 5*time.Second)
	ev := userEvent(eventbus.EventOnSend, "u")
	errs := map[string]func() error{
		"Start":  b.Start,
		"Define": func() error { return b.Define(40, eventbus.PoolUser, "x") },
		"Register": func() error {
			_, err := eventbus.Register(b, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil })
			return err
		},
		"Subscribe": func() error {
			_, err := eventbus.Subscribe(b, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil })
			return err
		},
		"AddEvent":    func() error { return b.AddEvent(ctx, ev) },
		"TryAddEvent": func() error { return b.TryAddEvent(ev) },
		"WaitIdle":    func() error { return b.WaitIdle(ctx) },
		"Close":       func() error { return b.Close(ctx) },
	}
	for name, call := range errs {
		done := make(chan error, 1)
		go func() {
			var err error
			if r := noPanic(func() { err = call() }); r != nil {
				err = fmt.Errorf("panicked: %v", r)
			}
			done <- err
		}()
		err := recvWithin(t, done, 5*time.Second, name+" on an unmade Bus")
		assert.ErrorIs(t, err, eventbus.ErrNotNew, name)
		if err != nil {
			assert.Contains(t, err.Error(), "New", "%s: the error says to use New", name)
		}
	}
	assert.Nil(t, noPanic(func() {
		b.Use(func(next eventbus.HandlerFunc) eventbus.HandlerFunc { return next })
		assert.Equal(t, eventbus.Stats{}, b.Stats())
		assert.Equal(t, "OnSend", b.TypeName(eventbus.EventOnSend))
		assert.False(t, b.UnregisterHandler(eventbus.EventOnSend, "x"))
	}), "a method of an unmade Bus panicked")
}
