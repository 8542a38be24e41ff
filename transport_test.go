package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDeliverReportsHowEachEventEnded: the completion callback tells
// handled, stopped and dead-lettered apart, once per event, and is never
// called for an add that failed.
func TestDeliverReportsHowEachEventEnded(t *testing.T) {
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithRetry(eventbus.NoRetry))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		switch ev.Frame {
		case "stop":
			return eventbus.ErrStopChain
		case "fail":
			return errors.New("fails")
		}
		return nil
	})
	mustStart(t, b)
	got := make(chan eventbus.Outcome, 3)
	for _, frame := range []string{"ok", "stop", "fail"} {
		ev := userEvent(eventbus.EventOnSend, frame)
		ev.Frame = frame
		require.NoError(t, b.Deliver(context.Background(), ev, func(o eventbus.Outcome) { got <- o }))
	}
	seen := map[eventbus.Outcome]int{}
	for range 3 {
		seen[recvWithin(t, got, 5*time.Second, "completion")]++
	}
	assert.Equal(t, map[eventbus.Outcome]int{eventbus.OutcomeHandled: 1, eventbus.OutcomeStopped: 1,
		eventbus.OutcomeDeadLettered: 1}, seen)
	assert.Len(t, sink.all(), 1)

	err := b.Deliver(context.Background(), userEvent(eventbus.EventRecvAck, "x"), func(eventbus.Outcome) {
		t.Error("done called for an add that failed")
	})
	require.ErrorIs(t, err, eventbus.ErrNoHandler)
	idleWithin(t, b, 5*time.Second)
}

// TestDeliverAbandonedAtCloseDeadline: events a Close deadline gives up are
// reported abandoned, not dead-lettered, so a transport can redeliver them.
func TestDeliverAbandonedAtCloseDeadline(t *testing.T) {
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	entered, release := make(chan struct{}), make(chan struct{})
	mustRegister(t, b, eventbus.EventOnSend, holdFrame(entered, release))
	mustStart(t, b)
	var mu sync.Mutex
	outcomes := map[string]eventbus.Outcome{}
	deliver := func(uid string, frame any) {
		ev := userEvent(eventbus.EventOnSend, uid)
		ev.Frame = frame
		require.NoError(t, b.Deliver(context.Background(), ev, func(o eventbus.Outcome) {
			mu.Lock()
			outcomes[fmt.Sprint(uid, "/", frame)] = o
			mu.Unlock()
		}))
	}
	deliver("alice", "hold")
	recvWithin(t, entered, 5*time.Second, "holding handler")
	deliver("alice", "behind")
	deliver("bob", "queued")
	ce := closeExpired(t, b)
	assert.Equal(t, 3, ce.Left)
	close(release)
	require.NoError(t, b.Close(deadline(t, 5*time.Second)))
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, eventbus.OutcomeAbandoned, outcomes["alice/behind"])
	assert.Equal(t, eventbus.OutcomeAbandoned, outcomes["bob/queued"])
	assert.Contains(t, []eventbus.Outcome{eventbus.OutcomeHandled, eventbus.OutcomeAbandoned}, outcomes["alice/hold"])
	assert.Empty(t, sink.all(), "abandoned events are not dead-lettered")
	st := b.Stats().User
	assert.GreaterOrEqual(t, st.Abandoned, uint64(2))
	atRest(t, "user", st)
}

// TestOutboundRoutesAddsOfChosenTypes: outside and follow-on adds of a
// routed type go to the route, a routed type needs no local handler, and
// Deliver adds locally.
func TestOutboundRoutesAddsOfChosenTypes(t *testing.T) {
	b := newBus(t)
	var mu sync.Mutex
	var routed []eventbus.Event
	var routedFromHandler atomic.Bool
	require.NoError(t, b.Outbound(func(ctx context.Context, ev eventbus.Event) error {
		if info, ok := eventbus.CallInfoFrom(ctx); ok && info.Type == eventbus.EventOnSend {
			routedFromHandler.Store(true)
		}
		mu.Lock()
		routed = append(routed, ev)
		mu.Unlock()
		return nil
	}, eventbus.EventChannelDistribute))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		return b.AddEvent(ctx, &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "g"})
	})
	mustStart(t, b)
	require.ErrorIs(t, b.Outbound(func(context.Context, eventbus.Event) error { return nil }, eventbus.EventPushOnline),
		eventbus.ErrStarted)

	outside := &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "o"}
	require.NoError(t, b.AddEvent(context.Background(), outside))
	require.NoError(t, b.TryAddEvent(outside))
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)
	mu.Lock()
	assert.Len(t, routed, 3)
	mu.Unlock()
	assert.True(t, routedFromHandler.Load(), "the follow-on add reached the route with the handler's ctx")

	// Locally, the routed type has no handler here.
	err := b.Deliver(context.Background(), outside, func(eventbus.Outcome) {})
	require.ErrorIs(t, err, eventbus.ErrNoHandler)
	assert.Zero(t, b.Stats().Channel.Added)
}

// TestBusDeadLetterFromOutside: a transport's dead letter reaches the sink
// and leaves the stats alone.
func TestBusDeadLetterFromOutside(t *testing.T) {
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink))
	mustStart(t, b)
	ev := userEvent(eventbus.EventOnSend, "alice")
	b.DeadLetter(&eventbus.DeadLetter{Event: ev, Err: errors.New("max deliveries"), Attempts: 5, Handler: "nats"})
	b.DeadLetter(nil) // ignored
	letters := sink.all()
	require.Len(t, letters, 1)
	assert.Same(t, ev, letters[0].Event)
	assert.Zero(t, b.Stats().User.DeadLettered)
	var zero eventbus.Bus
	zero.DeadLetter(&eventbus.DeadLetter{Event: ev}) // a zero Bus does nothing, never panics
}

// TestStableKeyIsTheSameOnEveryBus: two buses (two processes, as far as
// their shard seeds go) agree on every event's stable key.
func TestStableKeyIsTheSameOnEveryBus(t *testing.T) {
	b1, b2 := newBus(t), newBus(t)
	evs := []eventbus.Event{
		userEvent(eventbus.EventOnSend, "alice"),
		&eventbus.UserContext{EventType: eventbus.EventConnect, Conn: &testConn{id: 42}},
		&eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: "g", ChannelType: 2},
		&eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: &eventbus.Message{ChannelID: "g", ChannelType: 2}},
	}
	keys := map[uint64]bool{}
	for _, ev := range evs {
		k1, err := b1.StableKey(ev)
		require.NoError(t, err)
		k2, err := b2.StableKey(ev)
		require.NoError(t, err)
		assert.Equal(t, k1, k2)
		keys[k1] = true
	}
	assert.Len(t, keys, 3, "the channel and its push share a key; the others differ")
	_, err := b1.StableKey(&eventbus.PushContext{EventType: eventbus.EventPushOnline})
	require.ErrorIs(t, err, eventbus.ErrNilEvent)
}

// TestDeliverHammer: many goroutines deliver at once; every callback runs
// exactly once and the bus ends at rest.
func TestDeliverHammer(t *testing.T) {
	const producers, each = 16, 500
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{QueueSize: 8}))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		return nil
	})
	mustStart(t, b)
	var calls [producers * each]atomic.Int32
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				n := p*each + i
				ev := userEvent(eventbus.EventOnSend, fmt.Sprint("u", n%97))
				if err := b.Deliver(context.Background(), ev, func(eventbus.Outcome) { calls[n].Add(1) }); err != nil {
					t.Error(err)
				}
			}
		})
	}
	coreWaitGroup(t, &wg, 30*time.Second, "producers")
	idleWithin(t, b, 10*time.Second)
	for n := range calls {
		if c := calls[n].Load(); c != 1 {
			t.Fatalf("event %d: done called %d times", n, c)
		}
	}
	atRest(t, "user", b.Stats().User)
}

// TestStableKeyWithKeyByReceiver: a pusher pool keyed per receiver keeps
// stable keys too (the bridge partitions by them on every node).
func TestStableKeyWithKeyByReceiver(t *testing.T) {
	cfg := eventbus.WithPusherPool(eventbus.PoolConfig{KeyFunc: eventbus.KeyByReceiver})
	b1, b2 := newBus(t, cfg), newBus(t, cfg)
	ev := &eventbus.PushContext{EventType: eventbus.EventPushOnline, Subscribers: []string{"bob"},
		Message: &eventbus.Message{ChannelID: "g", ChannelType: 2}}
	k1, err := b1.StableKey(ev)
	require.NoError(t, err)
	k2, err := b2.StableKey(ev)
	require.NoError(t, err)
	assert.Equal(t, k1, k2)
	assert.Equal(t, eventbus.KeyByReceiver(ev), k1)
}

// TestOutboundKnowsTryAdd: a route can tell TryAddEvent (must not wait for
// room) from AddEvent.
func TestOutboundKnowsTryAdd(t *testing.T) {
	b := newBus(t)
	got := make(chan bool, 2)
	require.NoError(t, b.Outbound(func(ctx context.Context, ev eventbus.Event) error {
		got <- eventbus.MayWait(ctx)
		return nil
	}, eventbus.EventChannelDistribute))
	mustStart(t, b)
	ev := &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "g"}
	require.NoError(t, b.AddEvent(context.Background(), ev))
	assert.True(t, <-got, "AddEvent may wait")
	require.NoError(t, b.TryAddEvent(ev))
	assert.False(t, <-got, "TryAddEvent may not")
	assert.True(t, eventbus.MayWait(context.Background()))
}

// TestDeliverAbandonsLastAttemptCutByClose: a Close deadline that cuts
// short a handler's last attempt (NoRetry) reports the event abandoned,
// so its transport redelivers it, and never dead-lettered (which a
// transport acks).
func TestDeliverAbandonsLastAttemptCutByClose(t *testing.T) {
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithRetry(eventbus.NoRetry))
	hanging := make(chan struct{})
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		close(hanging)
		<-ctx.Done()
		return ctx.Err()
	})
	mustStart(t, b)
	got := make(chan eventbus.Outcome, 1)
	require.NoError(t, b.Deliver(context.Background(), userEvent(eventbus.EventOnSend, "alice"),
		func(o eventbus.Outcome) { got <- o }))
	recvWithin(t, hanging, 5*time.Second, "the handler's only attempt")
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	var ce *eventbus.CloseError
	require.ErrorAs(t, b.Close(expired), &ce)
	require.NoError(t, b.Close(deadline(t, 5*time.Second)))
	assert.Equal(t, eventbus.OutcomeAbandoned, recvWithin(t, got, 5*time.Second, "the outcome"))
	assert.Empty(t, sink.all(), "an abandoned event is not dead-lettered")
}
