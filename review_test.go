package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// reviewGate holds a handler until released.
type reviewGate struct {
	entered chan context.Context
	release chan struct{}
	once    sync.Once
}

func newReviewGate(t testing.TB) *reviewGate {
	g := &reviewGate{entered: make(chan context.Context, 1), release: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *reviewGate) open() { g.once.Do(func() { close(g.release) }) }

func (g *reviewGate) hold(ctx context.Context) {
	g.entered <- ctx
	<-g.release
}

// chanSink sends every dead letter on a channel.
type chanSink chan *eventbus.DeadLetter

func (s chanSink) DeadLetter(d *eventbus.DeadLetter) { s <- d }

// TestReviewWaitIdleNilContextPanics: Close(nil) is accepted (it is
// replaced by Background) but WaitIdle(nil) dereferences the nil context as
// soon as the bus is not idle.
func TestReviewWaitIdleNilContextPanics(t *testing.T) {
	bus := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	g := newReviewGate(t)
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

// TestReviewFollowOnDecidedBeforeAdmit: whether an add is a follow-on
// ("made with a handler's ctx while that handler runs") is decided once, at
// the start of add, before WithAdmit runs. An add started by a goroutine of
// the handler whose admit is still running when the handler returns is then
// pushed as a follow-on anyway: it bypasses the closing check (accepted
// while Close refuses every outside add) and the capacity check, although
// its handler returned long before and §4.5 says its ctx then counts as an
// outside add. WaitIdle also returned nil between the parent and this child.
func TestReviewFollowOnDecidedBeforeAdmit(t *testing.T) {
	admitEntered, admitRelease := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	releaseAdmit := func() { releaseOnce.Do(func() { close(admitRelease) }) }
	t.Cleanup(releaseAdmit)
	bus := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 2}),
		eventbus.WithAdmit(func(ctx context.Context, ev eventbus.Event) error {
			if u, ok := ev.(*eventbus.UserContext); ok && u.Frame == "late" {
				close(admitEntered)
				<-admitRelease // a rate limiter that waits
			}
			return nil
		}))
	blocker := newReviewGate(t)
	addErr := make(chan error, 1)
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		switch ev.Frame {
		case "parent":
			go func() {
				addErr <- bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend,
					Conn: &testConn{uid: "child"}, Frame: "late"})
			}()
			select { // the add has started (and passed the follow-on test) before we return
			case <-admitEntered:
			case <-time.After(5 * time.Second):
				return errors.New("admit not entered")
			}
		case "blocker":
			blocker.hold(ctx)
		}
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, bus.Start())

	require.NoError(t, bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend,
		Conn: &testConn{uid: "parent"}, Frame: "parent"}))
	// The parent has returned: the bus is idle although the add the
	// parent's goroutine started is still in progress.
	require.NoError(t, bus.WaitIdle(deadline(t, 5*time.Second)))

	// Keep Close draining with a blocked handler, then start it.
	require.NoError(t, bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend,
		Conn: &testConn{uid: "blocker"}, Frame: "blocker"}))
	recvWithin(t, blocker.entered, 5*time.Second, "blocker start")
	closed := make(chan error, 1)
	go func() { closed <- bus.Close(deadline(t, 10*time.Second)) }()
	ctx := deadline(t, 5*time.Second)
	for !errors.Is(bus.TryAddEvent(userEvent(eventbus.EventOnSend, "probe")), eventbus.ErrClosed) {
		require.NoError(t, ctx.Err(), "Close did not start refusing adds")
		runtime.Gosched()
	}

	releaseAdmit()
	err = recvWithin(t, addErr, 5*time.Second, "late add to return")
	blocker.open()
	require.NoError(t, recvWithin(t, closed, 10*time.Second, "Close"))
	assert.ErrorIs(t, err, eventbus.ErrClosed,
		"an add whose handler returned before it reached the queue is an outside add: refused while closing")
}

// TestReviewAbortObservesQueuedEventsAsOne: when Close gives up, Engine.Abort
// hands every event stolen from a shard's FIFO to DeadLetter as one unit,
// whatever their types and keys, so the Observer gets a single
// OutcomeDeadLettered observation with Events = 2 and the Type of the first
// event only: the RecvAck dead letter is reported as an OnSend one.
func TestReviewAbortObservesQueuedEventsAsOne(t *testing.T) {
	obs := &obsRecorder{}
	sink := &sinkRecorder{}
	bus := newBus(t, eventbus.WithObserver(obs), eventbus.WithDeadLetter(sink),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	g := newReviewGate(t)
	_, err := eventbus.Register(bus, eventbus.EventOnConnect, func(ctx context.Context, ev *eventbus.UserContext) error {
		g.hold(ctx)
		return nil
	})
	require.NoError(t, err)
	for _, typ := range []eventbus.EventType{eventbus.EventOnSend, eventbus.EventRecvAck} {
		_, err := eventbus.Register(bus, typ, func(ctx context.Context, ev *eventbus.UserContext) error { return nil })
		require.NoError(t, err)
	}
	require.NoError(t, bus.Start())
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnConnect, "gate")))
	recvWithin(t, g.entered, 5*time.Second, "gate handler")
	// Both wait in the one shard's FIFO behind the gate.
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "a")))
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventRecvAck, "b")))

	expired, cancel := context.WithCancel(context.Background())
	cancel()
	var ce *eventbus.CloseError
	require.ErrorAs(t, bus.Close(expired), &ce)
	g.open()
	require.NoError(t, bus.Close(deadline(t, 5*time.Second)))

	require.Len(t, sink.all(), 2)
	var types []eventbus.EventType
	for _, o := range obs.outcome(eventbus.OutcomeDeadLettered) {
		for range o.Events {
			types = append(types, o.Type)
		}
	}
	assert.ElementsMatch(t, []eventbus.EventType{eventbus.EventOnSend, eventbus.EventRecvAck}, types,
		"one dead-letter observation per event type (got %+v)", obs.outcome(eventbus.OutcomeDeadLettered))
}

// TestReviewAbortDeadLetterBlamesHandlerThatNeverRan: the chain is
// [first, second]. Close gives up while first runs; when first returns nil,
// run() moves to second, sets Attempt = 1 and only then sees the abort. The
// dead letter says second failed after 1 attempt, though second never ran
// (DeadLetter documents Attempts 0 = never ran, Handler = the one that
// failed last).
func TestReviewAbortDeadLetterBlamesHandlerThatNeverRan(t *testing.T) {
	sink := make(chanSink, 4)
	bus := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	g := newReviewGate(t)
	secondRan := make(chan struct{}, 1)
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		g.hold(ctx)
		return nil
	}, eventbus.WithName("first"))
	require.NoError(t, err)
	_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		secondRan <- struct{}{}
		return nil
	}, eventbus.WithName("second"))
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "u")))
	recvWithin(t, g.entered, 5*time.Second, "first handler")

	expired, cancel := context.WithCancel(context.Background())
	cancel()
	require.Error(t, bus.Close(expired))
	g.open()
	d := recvWithin(t, sink, 5*time.Second, "dead letter")
	require.NoError(t, bus.Close(deadline(t, 5*time.Second)))
	require.Empty(t, secondRan, "second never ran")
	assert.ErrorIs(t, d.Err, eventbus.ErrClosed)
	assert.False(t, d.Handler == "second" && d.Attempts > 0,
		"dead letter claims %q made %d attempt(s), but it never ran", d.Handler, d.Attempts)
}

// TestReviewEventIDUniqueInProcess: CallInfo.EventID is documented as
// "unique per accepted event in this process", but it is built from a
// per-shard counter, the shard index and the pool: the first event of any
// bus with one user worker gets the same id (1<<20).
func TestReviewEventIDUniqueInProcess(t *testing.T) {
	ids := make(chan uint64, 2)
	for range 2 {
		bus := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
		_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
			info, _ := eventbus.CallInfoFrom(ctx)
			ids <- info.EventID
			return nil
		})
		require.NoError(t, err)
		require.NoError(t, bus.Start())
		require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "u")))
	}
	a := recvWithin(t, ids, 5*time.Second, "first id")
	b := recvWithin(t, ids, 5*time.Second, "second id")
	assert.NotEqual(t, a, b, "two accepted events of one process share EventID %#x", a)
}

// TestReviewWorkerRetainsLastEvent: step() no longer resets w.unit after a
// unit (removed in 9c26b0b), so an idle worker keeps its last event (and
// its Err and chain) reachable until it runs another one.
func TestReviewWorkerRetainsLastEvent(t *testing.T) {
	bus := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error { return nil })
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	wp := addWeak(t, bus)
	require.NoError(t, bus.WaitIdle(deadline(t, 5*time.Second)))
	runtime.GC()
	runtime.GC()
	retained := isLive(wp)
	// Once the worker runs another event, the first one is released: it
	// was held by the worker's scratch unit, nothing else.
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "u")))
	require.NoError(t, bus.WaitIdle(deadline(t, 5*time.Second)))
	runtime.GC()
	runtime.GC()
	require.False(t, isLive(wp), "released after the next event")
	assert.False(t, retained, "a handled event (1 MiB frame) stays reachable from the idle worker until it runs another")
}

// isLive reports whether wp's value is still reachable (in a frame of its
// own, so that no strong pointer outlives the check).
//
//go:noinline
func isLive(wp weak.Pointer[eventbus.UserContext]) bool { return wp.Value() != nil }

//go:noinline
func addWeak(t *testing.T, bus *eventbus.Bus) weak.Pointer[eventbus.UserContext] {
	ev := userEvent(eventbus.EventOnSend, "u")
	ev.Frame = make([]byte, 1<<20) // a large frame stays in memory with it
	require.NoError(t, bus.AddEvent(context.Background(), ev))
	return weak.Make(ev)
}

// goexitSink calls runtime.Goexit on its first letter, as a test sink using
// require/t.FailNow does on a failed check.
type goexitSink struct{ once sync.Once }

func (s *goexitSink) DeadLetter(*eventbus.DeadLetter) {
	s.once.Do(runtime.Goexit)
}

// TestReviewGoexitInSinkKillsShard: Goexit is only caught inside execute
// (a handler). The sink runs in finish, outside it, so a sink calling
// runtime.Goexit ends the worker goroutine with no replacement: the shard
// is not stopped, later events are accepted and never run, and WaitIdle
// and Close can only give up.
func TestReviewGoexitInSinkKillsShard(t *testing.T) {
	bus := newBus(t, eventbus.WithDeadLetter(&goexitSink{}), eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	handled := make(chan string, 4)
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame == "bad" {
			return eventbus.Permanent(errors.New("bad"))
		}
		handled <- ev.Conn.UID()
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	bad := userEvent(eventbus.EventOnSend, "a")
	bad.Frame = "bad"
	require.NoError(t, bus.AddEvent(context.Background(), bad))
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "b")))

	select {
	case uid := <-handled:
		assert.Equal(t, "b", uid)
	case <-time.After(3 * time.Second):
		t.Error("an accepted event was never handled: the worker died in the sink and was not replaced")
	}
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	_ = bus.Close(expired) // do not make the cleanup Close wait for a dead worker
}

// TestReviewTypedNilConnIsBadInput: a typed nil Conn whose methods panic
// gets ErrNilEvent from AddEvent, not a panic.
func TestReviewTypedNilConnIsBadInput(t *testing.T) {
	bus := newBus(t)
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil })
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	var conn *testConn // UID() dereferences it
	err = bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn})
	require.ErrorIs(t, err, eventbus.ErrNilEvent)
	require.Zero(t, bus.Stats().User.Added)
}

// countingGoexitSink counts dead letters per event and calls runtime.Goexit
// on the first one, as a sink using t.FailNow would.
type countingGoexitSink struct {
	once sync.Once
	mu   sync.Mutex
	seen map[eventbus.Event]int
}

func (s *countingGoexitSink) DeadLetter(d *eventbus.DeadLetter) {
	s.mu.Lock()
	s.seen[d.Event]++
	s.mu.Unlock()
	s.once.Do(runtime.Goexit)
}

// TestReviewGoexitInSinkDuringAbort: a sink that calls runtime.Goexit on a
// worker, while the worker dead-letters what it holds after Close gave up,
// neither loses nor repeats a dead letter: every event ends exactly once.
func TestReviewGoexitInSinkDuringAbort(t *testing.T) {
	sink := &countingGoexitSink{seen: map[eventbus.Event]int{}}
	bus := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	first, second := newReviewGate(t), newReviewGate(t)
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		switch ev.Frame {
		case "first":
			first.hold(ctx)
		case "second":
			second.hold(ctx)
		}
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	add := func(uid string, frame any) *eventbus.UserContext {
		ev := userEvent(eventbus.EventOnSend, uid)
		ev.Frame = frame
		require.NoError(t, bus.AddEvent(context.Background(), ev))
		return ev
	}
	add("u", "first")
	recvWithin(t, first.entered, 5*time.Second, "first handler start")
	// These queue while the worker is held, so that it takes them all in
	// its next batch: they are in its hands, not in the FIFO, when Close
	// gives up during the second hold.
	add("u", "second")
	var queued []*eventbus.UserContext
	for i := range 5 {
		queued = append(queued, add("u", fmt.Sprint("k", i)))
	}
	first.open()
	recvWithin(t, second.entered, 5*time.Second, "second handler start")
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	var ce *eventbus.CloseError
	require.ErrorAs(t, bus.Close(expired), &ce)
	second.open()
	require.NoError(t, bus.Close(deadline(t, 5*time.Second)))

	sink.mu.Lock()
	defer sink.mu.Unlock()
	for i, ev := range queued {
		assert.Equal(t, 1, sink.seen[ev], "queued event %d dead-lettered %d times", i, sink.seen[ev])
	}
	s := bus.Stats().User
	assert.Equal(t, s.Added, s.Handled+s.Stopped+s.DeadLettered, "%+v", s)
	assert.Equal(t, uint64(len(queued)), s.DeadLettered)
}
