package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/require"
)

// TestKeysNamesTheBlockedKeyAndTheParkedOne runs a bus with one key held
// by a blocked handler and one key failing, and checks that Keys shows the
// blocked key's shard first with its queued events, and the failing key
// parked with its handler, attempt, error and next try.
func TestKeysNamesTheBlockedKeyAndTheParkedOne(t *testing.T) {
	errFlaky := errors.New("flaky: store unavailable")
	b := newBus(t, eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 1000,
		InitialBackoff: 5 * time.Millisecond, MaxBackoff: 5 * time.Millisecond}))
	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release) // before the bus's Close, which runs later
	user := func(uid string) *eventbus.UserContext {
		return &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &testConn{uid: uid}}
	}
	// The failing key must not share the blocked key's shard, or it would
	// wait behind it (see ARCHITECTURE.md, The engine: shards, run queue,
	// workers) instead of failing.
	_, slowShard := eventbus.ShardOf(b, user("slow"))
	flakyUID := "flaky"
	for i := 0; ; i++ {
		if _, s := eventbus.ShardOf(b, user(flakyUID)); s != slowShard {
			break
		}
		flakyUID = fmt.Sprint("flaky-", i)
	}
	var failing sync.Mutex
	fail := true
	_, err := eventbus.Register(b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		switch ev.Conn.UID() {
		case "slow":
			select {
			case started <- struct{}{}:
			default:
			}
			<-gate
		case flakyUID:
			failing.Lock()
			defer failing.Unlock()
			if fail {
				return errFlaky
			}
		}
		return nil
	}, eventbus.WithName("store"))
	require.NoError(t, err)
	require.NoError(t, b.Start())

	add := func(uid string) {
		require.NoError(t, b.AddEvent(context.Background(), user(uid)))
	}
	add("slow")
	<-started
	const queued = 4
	for range queued {
		add("slow")
	}
	add(flakyUID)

	busy := make([]eventbus.ShardLoad, 0, 3)
	parked := make([]eventbus.ParkedKey, 0, 3)
	until := time.Now().Add(time.Minute)
	for {
		busy, parked, _ = b.Keys(busy, parked)
		if len(parked) > 0 && parked[0].Attempt >= 2 || time.Now().After(until) {
			break
		}
		time.Sleep(time.Millisecond) // polling a state, not synchronising
	}
	require.NotEmpty(t, busy)
	top := busy[0]
	require.Equal(t, eventbus.PoolUser, top.Pool)
	require.Equal(t, queued+1, top.Held)
	require.Equal(t, queued, top.Queued)
	require.Equal(t, queued, top.HeadQueued)
	require.Equal(t, "slow", top.Head.(*eventbus.UserContext).Conn.UID())
	for i := 1; i < len(busy); i++ {
		require.LessOrEqual(t, busy[i].Held, busy[i-1].Held)
	}

	require.Len(t, parked, 1)
	p := parked[0]
	require.Equal(t, flakyUID, p.Event.(*eventbus.UserContext).Conn.UID())
	require.Equal(t, "store", p.Handler)
	require.ErrorIs(t, p.Err, errFlaky)
	require.GreaterOrEqual(t, p.Attempt, 2)
	require.Equal(t, 1, p.Events)
	require.False(t, p.NextTry.IsZero())

	failing.Lock()
	fail = false
	failing.Unlock()
	release()
	require.NoError(t, b.WaitIdle(deadline(t, time.Minute)))
	busy, parked, _ = b.Keys(busy, parked)
	require.Empty(t, busy)
	require.Empty(t, parked)
}

// TestTypesListsChainsInOrderAndSubscribers checks Types against the
// registrations made.
func TestTypesListsChainsInOrderAndSubscribers(t *testing.T) {
	b := newBus(t, eventbus.WithDefine(40, eventbus.PoolChannel, "Audit"))
	nop := func(context.Context, *eventbus.UserContext) error { return nil }
	_, err := eventbus.Register(b, eventbus.EventOnSend, nop, eventbus.WithName("auth"))
	require.NoError(t, err)
	_, err = eventbus.Register(b, eventbus.EventOnSend, nop, eventbus.WithName("store"))
	require.NoError(t, err)
	_, err = eventbus.Register(b, eventbus.EventOnSend, nop, eventbus.WithName("rate"), eventbus.First())
	require.NoError(t, err)
	_, err = eventbus.Subscribe(b, eventbus.EventOnSend, nop, eventbus.WithName("webhook"))
	require.NoError(t, err)
	var onSend, audit *eventbus.TypeInfo
	types := b.Types()
	for i := range types {
		switch types[i].Type {
		case eventbus.EventOnSend:
			onSend = &types[i]
		case 40:
			audit = &types[i]
		}
	}
	require.NotNil(t, onSend)
	require.Equal(t, []string{"rate", "auth", "store"}, onSend.Handlers)
	require.Equal(t, []string{"webhook"}, onSend.Subscribers)
	require.Equal(t, eventbus.PoolUser, onSend.Pool)
	require.NotNil(t, audit)
	require.Equal(t, "Audit", audit.Name)
	require.Equal(t, eventbus.PoolChannel, audit.Pool)
	require.NotNil(t, b.DeadLetterRing(), "the default sink is a ring")
}
