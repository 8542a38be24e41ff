package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// coreCallLog records handler and middleware calls in order.
type coreCallLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *coreCallLog) add(s string) {
	l.mu.Lock()
	l.calls = append(l.calls, s)
	l.mu.Unlock()
}

// take returns the calls so far and forgets them.
func (l *coreCallLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.calls
	l.calls = nil
	return c
}

func (l *coreCallLog) handler(name string) eventbus.Handler[eventbus.UserContext] {
	return func(ctx context.Context, ev *eventbus.UserContext) error {
		l.add(name)
		return nil
	}
}

// runOne adds one OnSend event, waits for the bus to be idle and returns
// the calls it made.
func (l *coreCallLog) runOne(t *testing.T, bus *eventbus.Bus) []string {
	t.Helper()
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "reg")))
	idleWithin(t, bus, 5*time.Second)
	return l.take()
}

// TestRegistryChainOrder: handlers run in registration order; First puts
// one at the head; Replace swaps in place (keeping the old name unless
// WithName gives a new one); names are unique per type; Unregister and
// UnregisterHandler remove one handler and are idempotent; the
// Registration of a replaced handler no longer removes anything.
func TestRegistryChainOrder(t *testing.T) {
	bus := newBus(t)
	log := &coreCallLog{}
	mustStart(t, bus) // Register works before and after Start

	regA := mustRegister(t, bus, eventbus.EventOnSend, log.handler("a"), eventbus.WithName("a"))
	regB := mustRegister(t, bus, eventbus.EventOnSend, log.handler("b"), eventbus.WithName("b"))
	mustRegister(t, bus, eventbus.EventOnSend, log.handler("c"), eventbus.WithName("c"))
	assert.Equal(t, "a", regA.Name())
	require.Equal(t, []string{"a", "b", "c"}, log.runOne(t, bus))

	mustRegister(t, bus, eventbus.EventOnSend, log.handler("d"), eventbus.WithName("d"), eventbus.First())
	require.Equal(t, []string{"d", "a", "b", "c"}, log.runOne(t, bus), "First puts d at the head")

	regB2 := mustRegister(t, bus, eventbus.EventOnSend, log.handler("b2"), eventbus.Replace("b"), eventbus.WithName("b2"))
	assert.Equal(t, "b2", regB2.Name())
	require.Equal(t, []string{"d", "a", "b2", "c"}, log.runOne(t, bus), "Replace swaps in place")

	regC2 := mustRegister(t, bus, eventbus.EventOnSend, log.handler("c'"), eventbus.Replace("c"))
	assert.Equal(t, "c", regC2.Name(), "Replace without WithName keeps the old name")
	require.Equal(t, []string{"d", "a", "b2", "c'"}, log.runOne(t, bus))

	_, err := eventbus.Register(bus, eventbus.EventOnSend, log.handler("x"), eventbus.WithName("a"))
	assert.ErrorIs(t, err, eventbus.ErrDuplicateName)
	_, err = eventbus.Register(bus, eventbus.EventOnSend, log.handler("x"), eventbus.WithName("d"), eventbus.Replace("a"))
	assert.ErrorIs(t, err, eventbus.ErrDuplicateName, "replacing a under the name of d")
	_, err = eventbus.Register(bus, eventbus.EventOnSend, log.handler("x"), eventbus.Replace("nobody"))
	assert.ErrorIs(t, err, eventbus.ErrNoHandler)
	_, err = eventbus.Register(bus, eventbus.EventRecvAck, log.handler("x"), eventbus.WithName("a"))
	assert.NoError(t, err, "names are unique per type only")
	require.Equal(t, []string{"d", "a", "b2", "c'"}, log.runOne(t, bus), "failed Registers change nothing")

	regB.Unregister() // replaced by b2: must not remove it
	require.Equal(t, []string{"d", "a", "b2", "c'"}, log.runOne(t, bus), "a replaced handler's Unregister does nothing")
	regA.Unregister()
	regA.Unregister()
	require.Equal(t, []string{"d", "b2", "c'"}, log.runOne(t, bus))
	assert.True(t, bus.UnregisterHandler(eventbus.EventOnSend, "d"))
	assert.False(t, bus.UnregisterHandler(eventbus.EventOnSend, "d"))
	assert.False(t, bus.UnregisterHandler(eventbus.EventConnClose, "d"), "a type with no chain")
	require.Equal(t, []string{"b2", "c'"}, log.runOne(t, bus))

	regB2.Unregister()
	regC2.Unregister()
	assert.ErrorIs(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "reg")), eventbus.ErrNoHandler,
		"a chain emptied by Unregister")

	// Default names: the function's short name, then #2 while it is taken.
	h := log.handler("anon")
	r1 := mustRegister(t, bus, eventbus.EventOnSend, h)
	r2 := mustRegister(t, bus, eventbus.EventOnSend, h)
	assert.Equal(t, "handler", r1.Name(), "a literal is named after the function it is written in")
	assert.Equal(t, "handler#2", r2.Name())
	assert.True(t, bus.UnregisterHandler(eventbus.EventOnSend, r2.Name()))
	require.Equal(t, []string{"anon"}, log.runOne(t, bus))
}

// TestRegistryUseOrder: the first middleware given to Use runs outermost;
// middleware wraps each attempt of each handler, also of handlers
// registered before Use; a nil middleware is ignored.
func TestRegistryUseOrder(t *testing.T) {
	bus := newBus(t)
	log := &coreCallLog{}
	mw := func(name string) eventbus.Middleware {
		return func(next eventbus.HandlerFunc) eventbus.HandlerFunc {
			return func(ctx context.Context, ev eventbus.Event) error {
				info, ok := eventbus.CallInfoFrom(ctx)
				if !ok {
					log.add(name + ": no CallInfo")
				}
				log.add(name + ">" + info.Handler)
				err := next(ctx, ev)
				log.add("<" + name)
				return err
			}
		}
	}
	mustRegister(t, bus, eventbus.EventOnSend, log.handler("h1"), eventbus.WithName("h1"))
	bus.Use(mw("m1"), nil, mw("m2"))
	mustRegister(t, bus, eventbus.EventOnSend, log.handler("h2"), eventbus.WithName("h2"))
	mustStart(t, bus)
	require.Equal(t, []string{
		"m1>h1", "m2>h1", "h1", "<m2", "<m1",
		"m1>h2", "m2>h2", "h2", "<m2", "<m1",
	}, log.runOne(t, bus))

	bus.Use(mw("m3")) // applies to later dispatches, innermost
	require.Equal(t, []string{
		"m1>h1", "m2>h1", "m3>h1", "h1", "<m3", "<m2", "<m1",
		"m1>h2", "m2>h2", "m3>h2", "h2", "<m3", "<m2", "<m1",
	}, log.runOne(t, bus))
}

// TestRegistryCallInfo: CallInfoFrom gives a handler its pool, type, name,
// index in the chain, attempt number and an event ID shared by all calls
// for one event and distinct between events, in each pool.
func TestRegistryCallInfo(t *testing.T) {
	bus := newBus(t, eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, Jitter: -1}))
	var mu sync.Mutex
	var infos []eventbus.CallInfo
	record := func(ctx context.Context) {
		info, ok := eventbus.CallInfoFrom(ctx)
		if !ok {
			info.Handler = "missing CallInfo"
		}
		mu.Lock()
		infos = append(infos, info)
		mu.Unlock()
	}
	take := func() []eventbus.CallInfo {
		mu.Lock()
		defer mu.Unlock()
		c := infos
		infos = nil
		return c
	}
	failedOnce := false
	mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		record(ctx)
		return nil
	}, eventbus.WithName("first"))
	mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		record(ctx)
		if !failedOnce { // one key, one worker at a time: no race
			failedOnce = true
			return errors.New("fail the first attempt")
		}
		return nil
	}, eventbus.WithName("second"))
	mustRegister(t, bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		record(ctx)
		return nil
	}, eventbus.WithName("store"))
	mustRegister(t, bus, eventbus.EventPushOffline, func(ctx context.Context, ev *eventbus.PushContext) error {
		record(ctx)
		return nil
	}, eventbus.WithName("offline"))
	mustStart(t, bus)

	_, ok := eventbus.CallInfoFrom(context.Background())
	assert.False(t, ok, "no CallInfo outside a handler")

	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "ci")))
	idleWithin(t, bus, 5*time.Second)
	got := take()
	require.Len(t, got, 3)
	id := got[0].EventID
	assert.NotZero(t, id)
	want := []eventbus.CallInfo{
		{Pool: eventbus.PoolUser, Type: eventbus.EventOnSend, TypeName: "OnSend", Handler: "first", Index: 0, Attempt: 1, EventID: id},
		{Pool: eventbus.PoolUser, Type: eventbus.EventOnSend, TypeName: "OnSend", Handler: "second", Index: 1, Attempt: 1, EventID: id},
		{Pool: eventbus.PoolUser, Type: eventbus.EventOnSend, TypeName: "OnSend", Handler: "second", Index: 1, Attempt: 2, EventID: id},
	}
	assert.Equal(t, want, got, "a retry resumes at the failed handler with the next attempt number")

	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "ci")))
	require.NoError(t, bus.AddEvent(context.Background(), coreChan(eventbus.EventChannelStore, "ci")))
	require.NoError(t, bus.AddEvent(context.Background(), corePush(eventbus.EventPushOffline, "ci", 1)))
	idleWithin(t, bus, 5*time.Second)
	got = take()
	require.Len(t, got, 4)
	ids := map[uint64]bool{id: true}
	byHandler := map[string]eventbus.CallInfo{}
	for _, info := range got {
		byHandler[info.Handler] = info
	}
	assert.Equal(t, byHandler["first"].EventID, byHandler["second"].EventID, "one event, one ID")
	for _, name := range []string{"second", "store", "offline"} {
		info := byHandler[name]
		assert.NotZero(t, info.EventID, name)
		assert.False(t, ids[info.EventID], "%s: event IDs are unique", name)
		ids[info.EventID] = true
		assert.Equal(t, 1, info.Attempt, name)
	}
	assert.Equal(t, eventbus.CallInfo{Pool: eventbus.PoolChannel, Type: eventbus.EventChannelStore, TypeName: "ChannelStore", Handler: "store",
		Attempt: 1, EventID: byHandler["store"].EventID}, byHandler["store"])
	assert.Equal(t, eventbus.CallInfo{Pool: eventbus.PoolPusher, Type: eventbus.EventPushOffline, TypeName: "PushOffline", Handler: "offline",
		Attempt: 1, EventID: byHandler["offline"].EventID}, byHandler["offline"])
}

type coreCtxKey struct{}

// TestRegistryHandlerContext: the handler's context carries the values of
// AddEvent's context but not its cancellation, also through a follow-on
// event (see ARCHITECTURE.md, Handler contexts).
func TestRegistryHandlerContext(t *testing.T) {
	bus := newBus(t)
	type seen struct {
		value any
		err   error
	}
	got := make(chan seen, 2)
	mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		got <- seen{ctx.Value(coreCtxKey{}), ctx.Err()}
		return bus.AddEvent(ctx, coreChan(eventbus.EventChannelStore, "ctx"))
	})
	mustRegister(t, bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		got <- seen{ctx.Value(coreCtxKey{}), ctx.Err()}
		return nil
	})
	mustStart(t, bus)
	pctx, cancel := context.WithCancel(context.WithValue(context.Background(), coreCtxKey{}, "trace-42"))
	require.NoError(t, bus.AddEvent(pctx, userEvent(eventbus.EventOnSend, "ctx")))
	cancel() // the producer's cancellation must not reach the handler
	for _, where := range []string{"handler", "follow-on handler"} {
		s := recvWithin(t, got, 5*time.Second, where)
		assert.Equal(t, "trace-42", s.value, where)
		assert.NoError(t, s.err, where)
	}
}

// TestRegistryDefine proves the rules of Define (see ARCHITECTURE.md, Routing
// and event types): before Start only; type 0 and built-in types refused;
// 1–29 only in the pool of their range; 30–255 in any pool; once per type;
// TypeName knows defined names and String only built-in ones; a defined type
// is routed to its pool.
func TestRegistryDefine(t *testing.T) {
	bus := newBus(t)
	require.ErrorIs(t, bus.Define(eventbus.EventUnknown, eventbus.PoolUser, "zero"), eventbus.ErrUnknownEventType)
	require.Error(t, bus.Define(eventbus.EventOnSend, eventbus.PoolUser, "again"), "a built-in type")
	require.Error(t, bus.Define(50, eventbus.Pool("elsewhere"), "x"), "an unknown pool")

	require.NoError(t, bus.Define(7, eventbus.PoolUser, "Typing"))
	require.ErrorIs(t, bus.Define(8, eventbus.PoolChannel, "x"), eventbus.ErrWrongPool, "8 is in the user range")
	require.ErrorIs(t, bus.Define(15, eventbus.PoolPusher, "x"), eventbus.ErrWrongPool, "15 is in the channel range")
	require.ErrorIs(t, bus.Define(29, eventbus.PoolUser, "x"), eventbus.ErrWrongPool, "29 is in the pusher range")
	require.NoError(t, bus.Define(12, eventbus.PoolChannel, "ChannelTrim"))
	require.NoError(t, bus.Define(25, eventbus.PoolPusher, "PushSilent"))
	require.NoError(t, bus.Define(30, eventbus.PoolPusher, "Webhook"))
	require.NoError(t, bus.Define(31, eventbus.PoolUser, "Presence"))
	require.NoError(t, bus.Define(255, eventbus.PoolChannel, ""))
	require.Error(t, bus.Define(30, eventbus.PoolPusher, "twice"), "defined twice")

	assert.Equal(t, "Typing", bus.TypeName(7))
	assert.Equal(t, "Webhook", bus.TypeName(30))
	assert.Equal(t, "EventType(255)", bus.TypeName(255), "no name given")
	assert.Equal(t, "OnSend", bus.TypeName(eventbus.EventOnSend))
	assert.Equal(t, "EventType(99)", bus.TypeName(99), "undefined")
	assert.Equal(t, "EventType(30)", eventbus.EventType(30).String(), "String knows built-ins only")
	for typ, name := range map[eventbus.EventType]string{
		eventbus.EventConnect: "Connect", eventbus.EventOnConnect: "OnConnect", eventbus.EventOnSend: "OnSend",
		eventbus.EventRecvAck: "RecvAck", eventbus.EventConnClose: "ConnClose",
		eventbus.EventChannelDistribute: "ChannelDistribute", eventbus.EventChannelStore: "ChannelStore",
		eventbus.EventPushOnline: "PushOnline", eventbus.EventPushOffline: "PushOffline",
	} {
		assert.Equal(t, name, typ.String())
	}
	assert.Equal(t, "EventType(6)", eventbus.EventType(6).String())

	var mu sync.Mutex
	var handled []string
	note := func(s string) {
		mu.Lock()
		handled = append(handled, s)
		mu.Unlock()
	}
	_, err := eventbus.Register(bus, 30, func(ctx context.Context, ev *eventbus.UserContext) error { return nil })
	assert.ErrorIs(t, err, eventbus.ErrWrongPool, "30 was defined for the pusher pool")
	mustRegister(t, bus, 30, func(ctx context.Context, ev *eventbus.PushContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		note(fmt.Sprintf("%s/%s", info.Pool, bus.TypeName(ev.EventType)))
		return nil
	})
	mustRegister(t, bus, 31, func(ctx context.Context, ev *eventbus.UserContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		note(fmt.Sprintf("%s/%s", info.Pool, bus.TypeName(ev.EventType)))
		return nil
	})
	mustStart(t, bus)
	err = bus.Define(40, eventbus.PoolUser, "late")
	require.ErrorIs(t, err, eventbus.ErrStarted, "Define after Start")
	assert.True(t, strings.HasPrefix(err.Error(), "eventbus:"), err.Error())
	assert.Equal(t, "EventType(40)", bus.TypeName(40))

	require.NoError(t, bus.AddEvent(context.Background(), corePush(30, "hook", 1)))
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(31, "someone")))
	assert.ErrorIs(t, bus.AddEvent(context.Background(), userEvent(30, "someone")), eventbus.ErrWrongPool)
	assert.ErrorIs(t, bus.AddEvent(context.Background(), coreChan(7, "c")), eventbus.ErrWrongPool)
	assert.ErrorIs(t, bus.AddEvent(context.Background(), userEvent(7, "someone")), eventbus.ErrNoHandler)
	idleWithin(t, bus, 5*time.Second)
	mu.Lock()
	defer mu.Unlock()
	assert.ElementsMatch(t, []string{"pusher/Webhook", "user/Presence"}, handled)
}

// TestRegistryWithDefine: WithDefine declares a type when the bus is built,
// with Define's rules and errors.
func TestRegistryWithDefine(t *testing.T) {
	bus := newBus(t, eventbus.WithDefine(42, eventbus.PoolChannel, "Archive"))
	assert.Equal(t, "Archive", bus.TypeName(42))
	got := make(chan string, 1)
	_, err := eventbus.Register(bus, 42, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		got <- ev.ChannelID
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	require.NoError(t, bus.AddEvent(context.Background(), &eventbus.ChannelContext{EventType: 42, ChannelID: "g1"}))
	select {
	case id := <-got:
		assert.Equal(t, "g1", id)
	case <-time.After(5 * time.Second):
		t.Fatal("the defined type's handler never ran")
	}

	_, err = eventbus.New(eventbus.WithDefine(12, eventbus.PoolUser, "Wrong"))
	assert.ErrorIs(t, err, eventbus.ErrWrongPool, "1–29 keep their range's pool")
	_, err = eventbus.New(eventbus.WithDefine(eventbus.EventOnSend, eventbus.PoolUser, "Again"))
	assert.Error(t, err, "built-in types cannot be redefined")
}

// TestMiddlewareConstructorMayCallBus: middleware constructors are user code
// and may call the bus (to label a metric, say): they run outside the bus's
// lock, so TypeName, Register and Define called from one return instead of
// deadlocking.
func TestMiddlewareConstructorMayCallBus(t *testing.T) {
	b, err := eventbus.New(eventbus.WithLogger(quiet))
	require.NoError(t, err)
	const custom eventbus.EventType = 40
	ran := make(chan string, 16)
	var labels []string
	first := true
	mw := func(next eventbus.HandlerFunc) eventbus.HandlerFunc {
		labels = append(labels, b.TypeName(eventbus.EventOnSend))
		if first {
			first = false
			if err := b.Define(custom, eventbus.PoolUser, "custom"); err != nil {
				panic(err)
			}
			if _, err := eventbus.Register(b, eventbus.EventRecvAck, func(context.Context, *eventbus.UserContext) error { return nil }); err != nil {
				panic(err)
			}
		}
		return func(ctx context.Context, ev eventbus.Event) error {
			ran <- b.TypeName(ev.Type())
			return next(ctx, ev)
		}
	}
	done := make(chan error, 1)
	go func() {
		if _, err := eventbus.Register(b, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil }); err != nil {
			done <- err
			return
		}
		b.Use(mw) // constructs for the OnSend handler, which registers a RecvAck one
		_, err := eventbus.Register(b, custom, func(context.Context, *eventbus.UserContext) error { return nil })
		done <- err
	}()
	require.NoError(t, recvWithin(t, done, 5*time.Second, "Use and Register with a constructor that calls the bus"))
	t.Cleanup(func() { _ = b.Close(deadline(t, 10*time.Second)) })
	assert.NotEmpty(t, labels)
	mustStart(t, b)
	for _, typ := range []eventbus.EventType{eventbus.EventOnSend, eventbus.EventRecvAck, custom} {
		require.NoError(t, b.AddEvent(context.Background(), userEvent(typ, "u")))
		assert.Equal(t, b.TypeName(typ), recvWithin(t, ran, 5*time.Second, "the middleware of "+b.TypeName(typ)))
	}
}

// TestUseAndRegisterConcurrentlyApplyEveryMiddleware: handlers registered
// while Use runs (its constructors run outside the lock) still get every
// middleware.
func TestUseAndRegisterConcurrentlyApplyEveryMiddleware(t *testing.T) {
	const n = 4
	b := newBus(t)
	var calls [n]atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			b.Use(func(next eventbus.HandlerFunc) eventbus.HandlerFunc {
				_ = b.TypeName(eventbus.EventOnSend)
				return func(ctx context.Context, ev eventbus.Event) error {
					calls[i].Add(1)
					return next(ctx, ev)
				}
			})
		})
		wg.Go(func() {
			mustRegister(t, b, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil },
				eventbus.WithName(fmt.Sprint("h", i)))
		})
	}
	wg.Wait()
	mustStart(t, b)
	require.NoError(t, b.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "u")))
	idleWithin(t, b, 5*time.Second)
	for i := range n {
		assert.Equal(t, int64(n), calls[i].Load(), "middleware %d: one call per handler", i)
	}
}

// TestDefineErrorsWrapSentinels: every error of Define is
// errors.Is-able and prefixed "eventbus:".
func TestDefineErrorsWrapSentinels(t *testing.T) {
	b := newBus(t)
	require.NoError(t, b.Define(40, eventbus.PoolUser, "custom"))
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"built in", b.Define(eventbus.EventOnSend, eventbus.PoolUser, "x"), eventbus.ErrTypeDefined},
		{"already defined", b.Define(40, eventbus.PoolChannel, "again"), eventbus.ErrTypeDefined},
		{"unknown pool", b.Define(41, eventbus.Pool("bogus"), "x"), eventbus.ErrWrongPool},
		{"pool of another range", b.Define(6, eventbus.PoolChannel, "x"), eventbus.ErrWrongPool},
		{"reserved", b.Define(0, eventbus.PoolUser, "x"), eventbus.ErrUnknownEventType},
	} {
		require.Error(t, c.err, c.name)
		assert.ErrorIs(t, c.err, c.want, c.name)
		assert.Regexp(t, "^eventbus: ", c.err.Error(), c.name)
	}
	mustStart(t, b)
	assert.ErrorIs(t, b.Define(42, eventbus.PoolUser, "late"), eventbus.ErrStarted)
}

// TestDefineAfterCloseReturnsErrClosed: Define on a closed bus says it is
// closed (ErrClosed), not that it must come before Start.
func TestDefineAfterCloseReturnsErrClosed(t *testing.T) {
	for _, started := range []bool{false, true} {
		b := newBus(t)
		if started {
			mustStart(t, b)
		}
		require.NoError(t, b.Close(deadline(t, 5*time.Second)))
		err := b.Define(40, eventbus.PoolUser, "late")
		assert.ErrorIs(t, err, eventbus.ErrClosed, "started %v", started)
		assert.NotErrorIs(t, err, eventbus.ErrStarted, "started %v", started)
		assert.NotContains(t, err.Error(), "before Start", "started %v", started)
	}
}

// TestDefineRefusesANameTakenByAnotherType: type names are unique, built-in
// ones included, so that two types never share a Stats().Subscribers key
// (one subscriber's counts would hide the other's).
func TestDefineRefusesANameTakenByAnotherType(t *testing.T) {
	bus := newBus(t)
	require.NoError(t, bus.Define(30, eventbus.PoolUser, "Webhook"))
	err := bus.Define(31, eventbus.PoolPusher, "Webhook")
	require.ErrorIs(t, err, eventbus.ErrTypeDefined, "a name another defined type has")
	assert.Contains(t, err.Error(), "Webhook")
	require.ErrorIs(t, bus.Define(32, eventbus.PoolUser, "OnSend"), eventbus.ErrTypeDefined, "a built-in type's name")
	require.NoError(t, bus.Define(40, eventbus.PoolUser, "EventType(41)"))
	require.ErrorIs(t, bus.Define(41, eventbus.PoolUser, ""), eventbus.ErrTypeDefined, "a default name another type has")
	assert.Equal(t, "EventType(31)", bus.TypeName(31), "a refused Define defines nothing")

	// With unique names every subscriber keeps its own Stats key.
	require.NoError(t, bus.Define(33, eventbus.PoolUser, "Audit"))
	h := func(ctx context.Context, ev *eventbus.UserContext) error { return nil }
	for _, typ := range []eventbus.EventType{30, 33} {
		_, err := eventbus.Subscribe(bus, typ, h, eventbus.WithName("sub"))
		require.NoError(t, err)
	}
	mustStart(t, bus)
	assert.Len(t, bus.Stats().Subscribers, 2)
}
