package eventbustest_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/eventbustest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func distribute(ch string) *eventbus.ChannelContext {
	return &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: ch, ChannelType: 2}
}

func push(ch string) *eventbus.PushContext {
	return &eventbus.PushContext{EventType: eventbus.EventPushOnline,
		Message: &eventbus.Message{ChannelID: ch, ChannelType: 2}}
}

func TestRecorderRecordsInOrder(t *testing.T) {
	var rec eventbustest.Recorder
	a, b, c := distribute("a"), push("b"), distribute("c")
	for _, ev := range []eventbus.Event{a, b, c} {
		require.NoError(t, rec.AddEvent(context.Background(), ev))
	}
	assert.Equal(t, []eventbus.Event{a, b, c}, rec.Events())
	assert.Equal(t, []eventbus.Event{a, c}, rec.OfType(eventbus.EventChannelDistribute))
	assert.Equal(t, []eventbus.Event{b}, rec.OfType(eventbus.EventPushOnline))
	assert.Empty(t, rec.OfType(eventbus.EventPushOffline))
	assert.Equal(t, 3, rec.Len())
	for _, r := range rec.Records() {
		assert.False(t, r.FromHandler, "Background carries no CallInfo")
	}
}

func TestRecorderKeepsCallInfo(t *testing.T) {
	var rec eventbustest.Recorder
	info := eventbus.CallInfo{Pool: eventbus.PoolUser, Type: eventbus.EventOnSend,
		Handler: "store", Index: 2, Attempt: 3, EventID: 99}
	ev := distribute("g1")
	require.NoError(t, rec.AddEvent(eventbus.ContextWithCallInfo(context.Background(), info), ev))
	require.NoError(t, rec.AddEvent(context.TODO(), push("x")))

	rs := rec.Records()
	require.Len(t, rs, 2)
	assert.Equal(t, eventbustest.Record{Event: ev, Call: info, FromHandler: true}, rs[0])
	assert.False(t, rs[1].FromHandler)
	assert.Zero(t, rs[1].Call)
}

func TestRecorderRefusesNilEvents(t *testing.T) {
	var rec eventbustest.Recorder
	ctx := context.Background()
	assert.ErrorIs(t, rec.AddEvent(ctx, nil), eventbus.ErrNilEvent)
	assert.ErrorIs(t, rec.AddEvent(ctx, (*eventbus.UserContext)(nil)), eventbus.ErrNilEvent)
	assert.ErrorIs(t, rec.AddEvent(ctx, (*eventbus.ChannelContext)(nil)), eventbus.ErrNilEvent)
	assert.ErrorIs(t, rec.AddEvent(ctx, (*eventbus.PushContext)(nil)), eventbus.ErrNilEvent)
	assert.Zero(t, rec.Len())
}

func TestRecorderFailWith(t *testing.T) {
	var rec eventbustest.Recorder
	rec.FailWith(eventbus.ErrClosed)
	assert.ErrorIs(t, rec.AddEvent(context.Background(), distribute("a")), eventbus.ErrClosed)
	assert.Zero(t, rec.Len(), "a refused event is not recorded")

	rec.Reset()
	assert.ErrorIs(t, rec.AddEvent(context.Background(), distribute("a")), eventbus.ErrClosed,
		"Reset keeps the error")

	rec.FailWith(nil)
	require.NoError(t, rec.AddEvent(context.Background(), distribute("b")))
	assert.Equal(t, 1, rec.Len())
}

func TestRecorderReset(t *testing.T) {
	var rec eventbustest.Recorder
	require.NoError(t, rec.AddEvent(context.Background(), distribute("a")))
	rec.Reset()
	assert.Zero(t, rec.Len())
	assert.Empty(t, rec.Events())

	// A wait after Reset counts new events only.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := rec.Wait(ctx, 1)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	ev := push("b")
	require.NoError(t, rec.AddEvent(context.Background(), ev))
	got, err := rec.Wait(within(t, 5*time.Second), 1)
	require.NoError(t, err)
	assert.Equal(t, []eventbus.Event{ev}, got)
}

func TestRecorderWait(t *testing.T) {
	var rec eventbustest.Recorder
	evs := []eventbus.Event{distribute("a"), distribute("b"), push("c")}
	go func() {
		for _, ev := range evs {
			_ = rec.AddEvent(context.Background(), ev)
		}
	}()
	got, err := rec.Wait(within(t, 5*time.Second), 3)
	require.NoError(t, err)
	assert.Equal(t, evs, got)
}

func TestRecorderWaitDeadline(t *testing.T) {
	var rec eventbustest.Recorder
	ev := distribute("a")
	require.NoError(t, rec.AddEvent(context.Background(), ev))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	got, err := rec.Wait(ctx, 2)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "got 1 of 2 events")
	assert.Equal(t, []eventbus.Event{ev}, got)

	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	_, err = rec.Wait(cctx, 5)
	assert.ErrorIs(t, err, context.Canceled)
}

// TestRecorderAsBusStandIn shows the point of a Recorder: the same handler
// emits into a bus or into the recorder, through eventbus.Emitter.
func TestRecorderAsBusStandIn(t *testing.T) {
	fanOut := func(em eventbus.Emitter) eventbus.Handler[eventbus.ChannelContext] {
		return func(ctx context.Context, ev *eventbus.ChannelContext) error {
			for _, m := range ev.Messages {
				if err := em.AddEvent(ctx, &eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: m}); err != nil {
					return err
				}
			}
			return nil
		}
	}
	var rec eventbustest.Recorder
	msgs := []*eventbus.Message{{MessageID: 1, ChannelID: "g"}, {MessageID: 2, ChannelID: "g"}}
	res := eventbustest.Run(context.Background(),
		&eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "g", Messages: msgs},
		fanOut(&rec))
	require.True(t, res.Handled(), "%+v", res)
	rs := rec.Records()
	require.Len(t, rs, 2)
	for i, r := range rs {
		assert.Same(t, msgs[i], r.Event.(*eventbus.PushContext).Message)
		assert.True(t, r.FromHandler)
		assert.Equal(t, eventbus.PoolChannel, r.Call.Pool)
		assert.Equal(t, eventbus.EventChannelDistribute, r.Call.Type)
	}

	// The recorder's error reaches the handler's result.
	rec.FailWith(eventbus.ErrClosed)
	res = eventbustest.Run(context.Background(),
		&eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "g", Messages: msgs},
		fanOut(&rec))
	assert.ErrorIs(t, res.Err, eventbus.ErrClosed)
}

// TestRecorderCallInfoFromBus checks that a Recorder sees the CallInfo a
// real bus gives its handlers.
func TestRecorderCallInfoFromBus(t *testing.T) {
	b := eventbustest.NewBus(t)
	var rec eventbustest.Recorder
	_, err := eventbus.Register(b.Bus, eventbus.EventOnSend,
		func(ctx context.Context, ev *eventbus.UserContext) error {
			return rec.AddEvent(ctx, distribute("g"))
		}, eventbus.WithName("relay"))
	require.NoError(t, err)
	require.NoError(t, b.AddEvent(context.Background(),
		&eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: eventbustest.NewMockConn("u")}))
	_, err = rec.Wait(within(t, 5*time.Second), 1)
	require.NoError(t, err)
	r := rec.Records()[0]
	assert.True(t, r.FromHandler)
	assert.Equal(t, "relay", r.Call.Handler)
	assert.Equal(t, eventbus.PoolUser, r.Call.Pool)
	assert.Equal(t, eventbus.EventOnSend, r.Call.Type)
	assert.Equal(t, 1, r.Call.Attempt)
	assert.NotZero(t, r.Call.EventID)
}

// TestRecorderHammer adds from many goroutines while others read, wait
// and reset; run with -race.
func TestRecorderHammer(t *testing.T) {
	const adders, perAdder = 16, 500
	var rec eventbustest.Recorder
	// A guard against a hang, not a speed limit: it ran out at 10 s with
	// -race -count=3 beside four busy loops (7 769 of 8 000 events).
	ctx := within(t, 2*time.Minute)
	start := make(chan struct{})
	var wg sync.WaitGroup
	type key struct{ a, i int }
	sent := make(map[*eventbus.ChannelContext]key)
	evs := make([][]*eventbus.ChannelContext, adders)
	for a := range adders {
		for i := range perAdder {
			ev := distribute("c")
			evs[a] = append(evs[a], ev)
			sent[ev] = key{a, i}
		}
	}
	for a := range adders {
		wg.Go(func() {
			<-start
			actx := eventbus.ContextWithCallInfo(context.Background(), eventbus.CallInfo{Index: a})
			for _, ev := range evs[a] {
				if err := rec.AddEvent(actx, ev); err != nil {
					t.Errorf("AddEvent: %v", err)
					return
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			<-start
			for range 50 {
				_ = rec.Events()
				_ = rec.OfType(eventbus.EventChannelDistribute)
				_ = rec.Records()
				_ = rec.Len()
			}
			if _, err := rec.Wait(ctx, adders*perAdder/2); err != nil {
				t.Errorf("Wait: %v", err)
			}
		})
	}
	close(start)
	_, err := rec.Wait(ctx, adders*perAdder)
	require.NoError(t, err)
	wg.Wait()

	rs := rec.Records()
	require.Len(t, rs, adders*perAdder)
	next := make([]int, adders)
	for _, r := range rs {
		k, ok := sent[r.Event.(*eventbus.ChannelContext)]
		require.True(t, ok)
		require.Equal(t, k.a, r.Call.Index, "CallInfo kept with its event")
		require.Equal(t, next[k.a], k.i, "adder %d out of order", k.a)
		next[k.a]++
	}

	// Reset and FailWith race with adds too.
	var wg2 sync.WaitGroup
	boom := errors.New("boom")
	for a := range 8 {
		wg2.Go(func() {
			for i := range 200 {
				switch {
				case a == 0 && i%10 == 0:
					rec.Reset()
				case a == 1 && i%20 == 0:
					rec.FailWith(boom)
				case a == 1 && i%20 == 10:
					rec.FailWith(nil)
				default:
					if err := rec.AddEvent(context.Background(), distribute("x")); err != nil && !errors.Is(err, boom) {
						t.Errorf("AddEvent: %v", err)
					}
				}
			}
		})
	}
	wg2.Wait()
}
