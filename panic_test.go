package eventbus_test

import (
	"bytes"
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

var errCorePanicValue = errors.New("panic value that is an error")

// corePanicPool describes, for one pool, how to register a handler that misbehaves
// on "bad" events and how to build events; used by the panic and Goexit
// tests.
type corePanicPool struct {
	name     string
	stats    func(eventbus.Stats) eventbus.PoolStats
	register func(t *testing.T, bus *eventbus.Bus, h func(ctx context.Context, bad bool) error) string
	event    func(key string, bad bool) eventbus.Event
}

func corePanicPools() []corePanicPool {
	return []corePanicPool{
		{
			name:  "user",
			stats: func(s eventbus.Stats) eventbus.PoolStats { return s.User },
			register: func(t *testing.T, bus *eventbus.Bus, h func(context.Context, bool) error) string {
				return mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
					return h(ctx, ev.Frame == "bad")
				}, eventbus.WithName("user-handler")).Name()
			},
			event: func(key string, bad bool) eventbus.Event {
				ev := userEvent(eventbus.EventOnSend, key)
				if bad {
					ev.Frame = "bad"
				}
				return ev
			},
		},
		{
			name:  "channel",
			stats: func(s eventbus.Stats) eventbus.PoolStats { return s.Channel },
			register: func(t *testing.T, bus *eventbus.Bus, h func(context.Context, bool) error) string {
				return mustRegister(t, bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
					return h(ctx, ev.Messages[0].ClientMsgNo == "bad")
				}, eventbus.WithName("channel-handler")).Name()
			},
			event: func(key string, bad bool) eventbus.Event {
				m := &eventbus.Message{ChannelID: key}
				if bad {
					m.ClientMsgNo = "bad"
				}
				return coreChan(eventbus.EventChannelStore, key, m)
			},
		},
		{
			name:  "pusher",
			stats: func(s eventbus.Stats) eventbus.PoolStats { return s.Pusher },
			register: func(t *testing.T, bus *eventbus.Bus, h func(context.Context, bool) error) string {
				return mustRegister(t, bus, eventbus.EventPushOffline, func(ctx context.Context, ev *eventbus.PushContext) error {
					return h(ctx, ev.Message.ClientMsgNo == "bad")
				}, eventbus.WithName("pusher-handler")).Name()
			},
			event: func(key string, bad bool) eventbus.Event {
				ev := corePush(eventbus.EventPushOffline, key, 1)
				if bad {
					ev.Message.ClientMsgNo = "bad"
				}
				return ev
			},
		},
	}
}

// TestPanicInHandlerOfEachPool proves that a panicking handler, in every
// pool, becomes a *PanicError (value and stack) counted in that pool's
// Panics and Failed, reaches the dead-letter sink (no retry with
// MaxAttempts 1), and that the bus — including the panicking event's own
// key and worker — keeps working.
func TestPanicInHandlerOfEachPool(t *testing.T) {
	for _, pl := range corePanicPools() {
		for _, value := range []any{"boom", errCorePanicValue} {
			t.Run(fmt.Sprintf("%s/%T", pl.name, value), func(t *testing.T) {
				sink := &sinkRecorder{}
				one := eventbus.PoolConfig{Workers: 1}
				bus := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 1}),
					eventbus.WithUserPool(one), eventbus.WithChannelPool(one), eventbus.WithPusherPool(one))
				var handled atomic.Int64
				name := pl.register(t, bus, func(ctx context.Context, bad bool) error {
					if bad {
						panic(value)
					}
					handled.Add(1)
					return nil
				})
				mustStart(t, bus)

				bad := pl.event("k0", true)
				require.NoError(t, bus.AddEvent(context.Background(), bad))
				for i := range 10 {
					require.NoError(t, bus.AddEvent(context.Background(), pl.event(fmt.Sprintf("k%d", i%3), false)))
				}
				idleWithin(t, bus, 10*time.Second)
				require.EqualValues(t, 10, handled.Load(), "events after the panic, same key and others")

				st := pl.stats(bus.Stats())
				assert.Equal(t, uint64(1), st.Panics)
				assert.Equal(t, uint64(1), st.Failed)
				assert.Equal(t, uint64(1), st.DeadLettered)
				assert.Equal(t, uint64(10), st.Handled)
				assert.Zero(t, st.Retried)
				atRest(t, pl.name, st)

				letters := sink.all()
				require.Len(t, letters, 1)
				l := letters[0]
				assert.Same(t, bad, l.Event)
				assert.Equal(t, name, l.Handler)
				assert.Equal(t, 1, l.Attempts)
				var pe *eventbus.PanicError
				require.ErrorAs(t, l.Err, &pe)
				assert.Equal(t, value, pe.Value)
				assert.True(t, bytes.Contains(pe.Stack, []byte("panic_test.go")), "stack should show the panicking handler:\n%s", pe.Stack)
				if err, ok := value.(error); ok {
					assert.ErrorIs(t, l.Err, err, "PanicError unwraps to an error value")
				}

				// Still working afterwards.
				for i := range 5 {
					require.NoError(t, bus.AddEvent(context.Background(), pl.event(fmt.Sprintf("k%d", i), false)))
				}
				idleWithin(t, bus, 10*time.Second)
				assert.EqualValues(t, 15, handled.Load())
			})
		}
	}
}

// TestGoexitInHandlerDoesNotKillBus: a handler calling runtime.Goexit (as
// t.FailNow does) is reported as a *PanicError and the pool carries on:
// later events of the same worker and key are handled, and a retried
// attempt after a Goexit also runs. goleak (TestMain) checks that the
// replaced worker goroutines are all gone after Close.
func TestGoexitInHandlerDoesNotKillBus(t *testing.T) {
	for _, pl := range corePanicPools() {
		t.Run(pl.name+"/dead-letter", func(t *testing.T) {
			sink := &sinkRecorder{}
			one := eventbus.PoolConfig{Workers: 1}
			bus := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 1}),
				eventbus.WithUserPool(one), eventbus.WithChannelPool(one), eventbus.WithPusherPool(one))
			var handled atomic.Int64
			pl.register(t, bus, func(ctx context.Context, bad bool) error {
				if bad {
					runtime.Goexit()
				}
				handled.Add(1)
				return nil
			})
			mustStart(t, bus)
			for round := range 3 { // several Goexits: each replaced worker works too
				require.NoError(t, bus.AddEvent(context.Background(), pl.event("k0", true)))
				for i := range 6 {
					require.NoError(t, bus.AddEvent(context.Background(), pl.event(fmt.Sprintf("k%d", i%2), false)))
				}
				idleWithin(t, bus, 10*time.Second)
				require.EqualValues(t, 6*(round+1), handled.Load(), "round %d", round)
			}
			st := pl.stats(bus.Stats())
			assert.Equal(t, uint64(3), st.Panics)
			assert.Equal(t, uint64(3), st.DeadLettered)
			assert.Equal(t, uint64(18), st.Handled)
			atRest(t, pl.name, st)
			letters := sink.all()
			require.Len(t, letters, 3)
			for _, l := range letters {
				var pe *eventbus.PanicError
				assert.ErrorAs(t, l.Err, &pe)
			}
			require.NoError(t, bus.Close(deadline(t, 5*time.Second)))
		})
	}

	t.Run("user/retried", func(t *testing.T) {
		bus := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}),
			eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, Jitter: -1}))
		var order []string // one worker, one key: no concurrent access
		mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
			info, _ := eventbus.CallInfoFrom(ctx)
			if ev.Frame == "bad" && info.Attempt < 3 {
				runtime.Goexit() // from the first run and from a parked retry
			}
			order = append(order, fmt.Sprintf("%v#%d", ev.Frame, info.Attempt))
			return nil
		})
		mustStart(t, bus)
		for _, f := range []string{"bad", "next-1", "next-2"} {
			require.NoError(t, bus.AddEvent(context.Background(),
				&eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &testConn{uid: "same"}, Frame: f}))
		}
		idleWithin(t, bus, 10*time.Second)
		require.NoError(t, bus.Close(deadline(t, 5*time.Second)))
		assert.Equal(t, []string{"bad#3", "next-1#1", "next-2#1"}, order, "retried in place, key order kept")
		st := bus.Stats().User
		assert.Equal(t, uint64(2), st.Panics)
		assert.Equal(t, uint64(2), st.Retried)
		assert.Equal(t, uint64(3), st.Handled)
		atRest(t, "user", st)
	})
}

// TestPanicsAmidBatchesAndRetriesLoseNothing hammers the worker's one
// recovery point (a panic unwinds from the handler to the worker's loop):
// producers add events of a few keys while a single worker runs them in
// batches; some events panic on their first attempt only (their retry, from
// the parked key, succeeds), some on every attempt (dead-lettered after
// three). Every event must end exactly once, each key's events must be
// handled in add order, and the counters must add up.
func TestPanicsAmidBatchesAndRetriesLoseNothing(t *testing.T) {
	const producers, perProducer, keys = 4, 300, 8
	sink := &sinkRecorder{}
	bus := newBus(t, eventbus.WithDeadLetter(sink),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Jitter: -1}),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	type seqKey struct {
		uid string
		n   int
	}
	var mu sync.Mutex
	last := map[string]int{}
	attempts := map[seqKey]int{}
	var outOfOrder, handled atomic.Int64
	mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		n := ev.Frame.(int)
		k := seqKey{ev.Conn.UID(), n}
		mu.Lock()
		attempts[k]++
		a := attempts[k]
		mu.Unlock()
		switch {
		case n%7 == 3:
			panic(fmt.Sprintf("always %v", k))
		case n%5 == 1 && a == 1:
			panic(fmt.Sprintf("once %v", k))
		}
		mu.Lock()
		if n <= last[k.uid] {
			outOfOrder.Add(1)
		}
		last[k.uid] = n
		mu.Unlock()
		handled.Add(1)
		return nil
	})
	mustStart(t, bus)

	// Each producer owns keys of its own, so that a key's add order is
	// its producer's order.
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := 1; i <= perProducer; i++ {
				ev := userEvent(eventbus.EventOnSend, fmt.Sprintf("p%d-k%d", p, i%(keys/producers)))
				ev.Frame = i
				if err := bus.AddEvent(context.Background(), ev); err != nil {
					t.Errorf("add: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	idleWithin(t, bus, 30*time.Second)

	always := 0
	for i := 1; i <= perProducer; i++ {
		if i%7 == 3 {
			always++
		}
	}
	always *= producers
	total := producers * perProducer
	assert.Zero(t, outOfOrder.Load(), "a key's events handled out of add order")
	assert.EqualValues(t, total-always, handled.Load())
	assert.Len(t, sink.all(), always)
	for _, l := range sink.all() {
		var pe *eventbus.PanicError
		if assert.ErrorAs(t, l.Err, &pe) {
			assert.Contains(t, fmt.Sprint(pe.Value), "always")
			assert.True(t, bytes.Contains(pe.Stack, []byte("panic_test.go")), "stack shows the handler")
		}
		assert.Equal(t, 3, l.Attempts)
	}
	st := bus.Stats().User
	assert.EqualValues(t, total-always, st.Handled)
	assert.EqualValues(t, always, st.DeadLettered)
	atRest(t, "user", st)
}

// TestFailureAmidQueuedEventsEndsEachEventOnce fails one event in the
// middle of a run of queued events that a worker takes together (a panic,
// runtime.Goexit or an error, on its first attempt only): the events
// before it are handled once and counted at once, the failed one is
// retried and handled, the events after it run once, in order, and the
// counters add up.
func TestFailureAmidQueuedEventsEndsEachEventOnce(t *testing.T) {
	for _, how := range []string{"panic", "goexit", "error"} {
		t.Run(how, func(t *testing.T) {
			const queueSize = 16
			bus := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, QueueSize: queueSize}),
				eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Jitter: -1}))
			// Keys on the gate's shard; the last two check the shard's
			// room at the end.
			uids := uidsOnShardOf(bus, "gate", 8)
			uids, holdUID, fillUID := uids[:6], uids[6], uids[7]
			failing := uids[2]
			gate, started := make(chan struct{}), make(chan struct{})
			hold, holding := make(chan struct{}), make(chan struct{})
			t.Cleanup(func() { close(hold) })
			var mu sync.Mutex
			var order []string
			attempts := map[string]int{}
			handledBeforeFailure := make(chan uint64, 1)
			mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
				uid := ev.Conn.UID()
				switch uid {
				case "gate":
					close(started)
					<-gate
					return nil
				case holdUID:
					close(holding)
					<-hold
					return nil
				case fillUID:
					return nil
				}
				mu.Lock()
				attempts[uid]++
				a := attempts[uid]
				mu.Unlock()
				if uid == failing && a == 1 {
					// The gate and the two events before are done and
					// already counted.
					handledBeforeFailure <- bus.Stats().User.Handled
					switch how {
					case "panic":
						panic("first attempt")
					case "goexit":
						runtime.Goexit()
					default:
						return errors.New("first attempt")
					}
				}
				mu.Lock()
				order = append(order, uid)
				mu.Unlock()
				return nil
			})
			mustStart(t, bus)
			require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "gate")))
			recvWithin(t, started, 5*time.Second, "the gate handler")
			for _, uid := range uids {
				require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, uid)))
			}
			close(gate)
			assert.Equal(t, uint64(3), recvWithin(t, handledBeforeFailure, 5*time.Second, "the failing handler"))
			idleWithin(t, bus, 10*time.Second)

			mu.Lock()
			defer mu.Unlock()
			for _, uid := range uids {
				want := 1
				if uid == failing {
					want = 2
				}
				assert.Equal(t, want, attempts[uid], "attempts of %s", uid)
			}
			// The failed event's key is parked for its retry; the other
			// keys go on in add order.
			var others []string
			for _, uid := range order {
				if uid != failing {
					others = append(others, uid)
				}
			}
			assert.Equal(t, append(append([]string{}, uids[:2]...), uids[3:]...), others)
			assert.Len(t, order, len(uids))
			st := bus.Stats().User
			assert.Equal(t, uint64(len(uids)+1), st.Handled)
			assert.Equal(t, uint64(1), st.Failed)
			atRest(t, "user", st)

			// Every event gave its room back: with one held, the shard
			// takes queueSize-1 more.
			mu.Unlock()
			defer mu.Lock()
			require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, holdUID)))
			recvWithin(t, holding, 5*time.Second, "the hold handler")
			fill := userEvent(eventbus.EventOnSend, fillUID)
			accepted := 0
			for bus.TryAddEvent(fill) == nil {
				accepted++
			}
			assert.Equal(t, queueSize-1, accepted, "room left in the shard")
		})
	}
}
