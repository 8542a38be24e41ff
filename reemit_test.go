package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// coreReemitFrame is the Frame of the re-emit tests' user events.
type coreReemitFrame struct {
	tree, depth int
}

// TestReemitIntoOwnPoolWithTinyQueue proves that follow-on events never
// deadlock (see ARCHITECTURE.md, Follow-on adds): with one worker and
// QueueSize 1, every handler emits two events into its own pool, one with its
// own key and one with another key, down to depth 9, while outside producers
// wait for room. Every event of every tree is handled; the follow-ons show as
// Overflow.
func TestReemitIntoOwnPoolWithTinyQueue(t *testing.T) {
	const (
		trees    = 4
		maxDepth = 9
		perTree  = 1<<(maxDepth+1) - 1
		total    = trees * perTree
	)
	bus := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, QueueSize: 1}))

	var (
		handled     atomic.Int64
		perTreeSeen [trees]atomic.Int64
		emitErrs    coreErrs
		maxOverflow atomic.Int64
	)
	mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		f := ev.Frame.(coreReemitFrame)
		perTreeSeen[f.tree].Add(1)
		if f.depth < maxDepth {
			child := coreReemitFrame{tree: f.tree, depth: f.depth + 1}
			other := fmt.Sprintf("reemit-%d-%d", f.tree, f.depth+1)
			emitErrs.add(bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: ev.Conn, Frame: child}))
			emitErrs.add(bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend,
				Conn: &testConn{uid: other}, Frame: child}))
			if o := bus.Stats().User.Overflow; o > maxOverflow.Load() {
				maxOverflow.Store(o) // one worker: no concurrent writer
			}
		}
		handled.Add(1)
		return nil
	})
	mustStart(t, bus)

	var wg sync.WaitGroup
	var addErrs coreErrs
	ctx := deadline(t, 30*time.Second)
	for tree := range trees {
		wg.Go(func() {
			addErrs.add(bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend,
				Conn: &testConn{uid: fmt.Sprintf("root-%d", tree)}, Frame: coreReemitFrame{tree: tree}}))
		})
	}
	coreWaitGroup(t, &wg, 30*time.Second, "outside adds of the roots")
	addErrs.requireNone(t, "outside AddEvent")
	idleWithin(t, bus, 30*time.Second)
	emitErrs.requireNone(t, "follow-on AddEvent")

	require.Equal(t, int64(total), handled.Load())
	for tree := range trees {
		assert.Equal(t, int64(perTree), perTreeSeen[tree].Load(), "events of tree %d", tree)
	}
	assert.Positive(t, maxOverflow.Load(), "follow-ons above QueueSize should show as Overflow")
	st := bus.Stats().User
	assert.Equal(t, uint64(total), st.Added)
	assert.Equal(t, uint64(total), st.Handled)
	atRest(t, "user", st)
}

// TestReemitPusherUserCycle proves that cycles across pools are legal (see
// ARCHITECTURE.md, Follow-on adds): PushOnline emits RecvAck into the user
// pool, RecvAck emits PushOnline back, for many rounds and several
// conversations at once, with one worker and QueueSize 1 in both pools and
// outside producers competing for room. No round is lost and nothing
// deadlocks.
func TestReemitPusherUserCycle(t *testing.T) {
	const (
		cycles = 6
		rounds = 300
		noise  = 200 // outside adds into both pools while the cycles run
	)
	tiny := eventbus.PoolConfig{Workers: 1, QueueSize: 1}
	bus := newBus(t, eventbus.WithUserPool(tiny), eventbus.WithPusherPool(tiny))

	var (
		pushRounds, ackRounds [cycles]atomic.Int64
		noiseSeen             atomic.Int64
		emitErrs              coreErrs
	)
	mustRegister(t, bus, eventbus.EventPushOnline, func(ctx context.Context, ev *eventbus.PushContext) error {
		if ev.Message.MessageID < 0 {
			noiseSeen.Add(1)
			return nil
		}
		c, round := int(ev.Message.MessageSeq), ev.Message.MessageID
		if pushRounds[c].Add(1) != round+1 {
			emitErrs.add(fmt.Errorf("cycle %d: push round %d out of order", c, round))
		}
		if round < rounds-1 {
			emitErrs.add(bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventRecvAck,
				Conn: &testConn{uid: fmt.Sprintf("cycle-%d", c)}, Frame: [2]int64{int64(c), round}}))
		}
		return nil
	})
	mustRegister(t, bus, eventbus.EventRecvAck, func(ctx context.Context, ev *eventbus.UserContext) error {
		f, ok := ev.Frame.([2]int64)
		if !ok {
			noiseSeen.Add(1)
			return nil
		}
		c, round := int(f[0]), f[1]
		if ackRounds[c].Add(1) != round+1 {
			emitErrs.add(fmt.Errorf("cycle %d: ack round %d out of order", c, round))
		}
		m := &eventbus.Message{MessageID: round + 1, MessageSeq: uint64(c),
			ChannelID: fmt.Sprintf("cycle-%d", c), ChannelType: 1}
		emitErrs.add(bus.AddEvent(ctx, &eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: m}))
		return nil
	})
	mustStart(t, bus)

	var wg sync.WaitGroup
	var addErrs coreErrs
	ctx := deadline(t, 30*time.Second)
	for c := range cycles {
		wg.Go(func() {
			m := &eventbus.Message{MessageID: 0, MessageSeq: uint64(c), ChannelID: fmt.Sprintf("cycle-%d", c), ChannelType: 1}
			addErrs.add(bus.AddEvent(ctx, &eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: m}))
		})
	}
	wg.Go(func() {
		for i := range noise {
			addErrs.add(bus.AddEvent(ctx, corePush(eventbus.EventPushOnline, fmt.Sprintf("noise-%d", i%5), -1)))
			addErrs.add(bus.AddEvent(ctx, userEvent(eventbus.EventRecvAck, fmt.Sprintf("noise-%d", i%7))))
		}
	})
	coreWaitGroup(t, &wg, 30*time.Second, "outside adds")
	addErrs.requireNone(t, "outside AddEvent")
	idleWithin(t, bus, 30*time.Second)
	emitErrs.requireNone(t, "the cycle's handlers")

	for c := range cycles {
		assert.Equal(t, int64(rounds), pushRounds[c].Load(), "push rounds of cycle %d", c)
		assert.Equal(t, int64(rounds-1), ackRounds[c].Load(), "ack rounds of cycle %d", c)
	}
	assert.Equal(t, int64(2*noise), noiseSeen.Load())
	st := bus.Stats()
	atRest(t, "user", st.User)
	atRest(t, "pusher", st.Pusher)
}

// TestAddFromReturnedHandlerIsOutsideAdd: an add made with a handler's ctx
// is a follow-on only if that handler is still running when the event goes
// on its queue, after WithAdmit. An add started by a goroutine of a handler,
// whose admit is still running when the handler returns, is an outside add
// (see ARCHITECTURE.md, Follow-on adds): WaitIdle may return before it, and
// Close refuses it with ErrClosed as it refuses every outside add.
func TestAddFromReturnedHandlerIsOutsideAdd(t *testing.T) {
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
	blocker := newHoldGate(t)
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

	closed := closeBehindBlocker(t, bus, blocker)

	releaseAdmit()
	err = recvWithin(t, addErr, 5*time.Second, "late add to return")
	blocker.open()
	require.NoError(t, recvWithin(t, closed, 10*time.Second, "Close"))
	assert.ErrorIs(t, err, eventbus.ErrClosed,
		"an add whose handler returned before it reached the queue is an outside add: refused while closing")
}

// closeBehindBlocker adds an event whose handler (one that holds blocker
// for Frame "blocker") keeps Close draining, starts Close once the handler
// runs, and returns when bus refuses outside adds: the bus is closing.
// Close's result comes on the channel returned.
func closeBehindBlocker(t *testing.T, bus *eventbus.Bus, blocker *holdGate) <-chan error {
	t.Helper()
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
	return closed
}

// TestHandlerContextOnAnotherBusIsOutsideAdd: a handler of one bus that
// adds to another bus with its context (itself, or one derived from it)
// makes an outside add there, not a follow-on: a closing bus refuses it
// with ErrClosed, as it refuses every outside add, where it would accept a
// follow-on of its own running handler.
func TestHandlerContextOnAnotherBusIsOutsideAdd(t *testing.T) {
	type key struct{}
	for name, derive := range map[string]func(context.Context) context.Context{
		"own":     func(ctx context.Context) context.Context { return ctx },
		"derived": func(ctx context.Context) context.Context { return context.WithValue(ctx, key{}, 1) },
	} {
		t.Run(name, func(t *testing.T) {
			other := newBus(t)
			blocker := newHoldGate(t)
			mustRegister(t, other, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
				if ev.Frame == "blocker" {
					blocker.hold(ctx)
				}
				return nil
			})
			mustStart(t, other)
			closed := closeBehindBlocker(t, other, blocker)

			bus := newBus(t)
			addErr := make(chan error, 1)
			mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
				addErr <- other.AddEvent(derive(ctx), userEvent(eventbus.EventOnSend, "from-another-bus"))
				return nil
			})
			mustStart(t, bus)
			require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "parent")))
			err := recvWithin(t, addErr, 5*time.Second, "the add to the other bus")
			blocker.open()
			require.NoError(t, recvWithin(t, closed, 10*time.Second, "Close"))
			assert.ErrorIs(t, err, eventbus.ErrClosed, "another bus's handler context made a follow-on add")
		})
	}
}

// TestFollowOnAddAllocatesNothing: AddEvent allocates nothing when
// ctx is the context a handler was called with, with a HandlerTimeout too.
func TestFollowOnAddAllocatesNothing(t *testing.T) {
	for _, timeout := range []time.Duration{0, time.Minute} {
		t.Run("timeout="+timeout.String(), func(t *testing.T) {
			b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, QueueSize: 4096, HandlerTimeout: timeout}))
			child := userEvent(eventbus.EventRecvAck, "u")
			mustRegister(t, b, eventbus.EventRecvAck, func(context.Context, *eventbus.UserContext) error { return nil })
			allocs := make(chan float64, 1)
			mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
				allocs <- testing.AllocsPerRun(100, func() {
					if err := b.AddEvent(ctx, child); err != nil {
						panic(err)
					}
				})
				return nil
			})
			mustStart(t, b)
			producer := context.WithValue(context.Background(), hopTraceKey{}, "trace-1")
			require.NoError(t, b.AddEvent(producer, userEvent(eventbus.EventOnSend, "u")))
			assert.Zero(t, recvWithin(t, allocs, 10*time.Second, "the handler"), "allocations per follow-on add")
			idleWithin(t, b, 10*time.Second)
		})
	}
}
