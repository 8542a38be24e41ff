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

// TestSubscriberWebhookDoesNotDelayChain: a 100 ms webhook subscriber next
// to a fast chain and a fast stats subscriber. The chain and the stats
// subscriber finish 1 000 events while the webhook has done only a part;
// the webhook later sees every one of them.
func TestSubscriberWebhookDoesNotDelayChain(t *testing.T) {
	const keys, perKey = 200, 5
	const total = keys * perKey
	b := newBus(t)
	var chainDone, statsDone, hookDone atomic.Int64
	allFast := make(chan struct{})
	var fastOnce sync.Once
	fast := func() {
		if chainDone.Load() == total && statsDone.Load() == total {
			fastOnce.Do(func() { close(allFast) })
		}
	}
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		chainDone.Add(1)
		fast()
		return nil
	}, eventbus.WithName("store"))
	_, err := eventbus.Subscribe(b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		statsDone.Add(1)
		fast()
		return nil
	}, eventbus.WithName("stats"))
	require.NoError(t, err)
	_, err = eventbus.Subscribe(b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		time.Sleep(100 * time.Millisecond) // the slow webhook: work that takes time
		hookDone.Add(1)
		return nil
	}, eventbus.WithName("webhook"), eventbus.WithConcurrency(64))
	require.NoError(t, err)
	mustStart(t, b)

	start := time.Now()
	for i := range total {
		relAdd(t, b, userEvent(eventbus.EventOnSend, fmt.Sprint("u", i%keys)))
	}
	recvWithin(t, allFast, 5*time.Second, "chain and stats subscriber")
	fastTook, hookSoFar := time.Since(start), hookDone.Load()
	t.Logf("chain and stats done in %v; webhook had done %d of %d", fastTook, hookSoFar, total)
	assert.Less(t, hookSoFar, int64(total/2), "the webhook is far behind when the fast ones finish")
	idleWithin(t, b, 20*time.Second)
	assert.Equal(t, int64(total), hookDone.Load(), "the webhook saw every event")
	st := b.Stats()
	require.Len(t, st.Subscribers, 2)
	for name, s := range st.Subscribers {
		assert.Equal(t, uint64(total), s.Handled, name)
		atRest(t, name, s)
	}
	assert.Equal(t, uint64(total), st.User.Handled)
}

// TestSubscriberOrderAndExactlyOnce: under 32 producers, every subscriber
// (and the chain) gets each event exactly once, each key's events one at a
// time in add order.
func TestSubscriberOrderAndExactlyOnce(t *testing.T) {
	const producers, keysPer, perKey = 32, 4, 40
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{QueueSize: 16}))
	type seen struct {
		mu      sync.Mutex
		next    map[string]int
		running map[string]bool
		n       int
	}
	check := func(s *seen) eventbus.Handler[eventbus.UserContext] {
		return func(ctx context.Context, ev *eventbus.UserContext) error {
			uid, seq := ev.Conn.UID(), ev.Frame.(int)
			s.mu.Lock()
			if s.running[uid] {
				t.Errorf("key %s runs twice at once", uid)
			}
			s.running[uid] = true
			if seq != s.next[uid] {
				t.Errorf("key %s: got %d, want %d", uid, seq, s.next[uid])
			}
			s.next[uid] = seq + 1
			s.n++
			s.mu.Unlock()
			time.Sleep(time.Duration(seq%3) * 50 * time.Microsecond) // uneven handler times
			s.mu.Lock()
			s.running[uid] = false
			s.mu.Unlock()
			return nil
		}
	}
	all := []*seen{{}, {}, {}}
	for _, s := range all {
		s.next, s.running = map[string]int{}, map[string]bool{}
	}
	mustRegister(t, b, eventbus.EventOnSend, check(all[0]))
	_, err := eventbus.Subscribe(b, eventbus.EventOnSend, check(all[1]), eventbus.WithName("a"))
	require.NoError(t, err)
	_, err = eventbus.Subscribe(b, eventbus.EventOnSend, check(all[2]), eventbus.WithName("b"), eventbus.WithConcurrency(2))
	require.NoError(t, err)
	mustStart(t, b)
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range keysPer * perKey {
				ev := userEvent(eventbus.EventOnSend, fmt.Sprintf("p%d-k%d", p, i%keysPer))
				ev.Frame = i / keysPer
				if err := b.AddEvent(context.Background(), ev); err != nil {
					t.Error(err)
				}
			}
		})
	}
	coreWaitGroup(t, &wg, 30*time.Second, "producers")
	idleWithin(t, b, 30*time.Second)
	for i, s := range all {
		assert.Equal(t, producers*keysPer*perKey, s.n, "receiver %d", i)
	}
}

// TestSubscriberFailuresAreIsolated: a failing subscriber retries and
// dead-letters on its own, a panicking one is contained, and the chain and
// a healthy subscriber handle every event once.
func TestSubscriberFailuresAreIsolated(t *testing.T) {
	const n = 20
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond}))
	var chain, healthy, failing, panicking atomic.Int64
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		chain.Add(1)
		return nil
	})
	_, err := eventbus.Subscribe(b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		healthy.Add(1)
		return nil
	}, eventbus.WithName("healthy"))
	require.NoError(t, err)
	_, err = eventbus.Subscribe(b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		failing.Add(1)
		return errors.New("webhook down")
	}, eventbus.WithName("webhook"))
	require.NoError(t, err)
	_, err = eventbus.Subscribe(b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		panicking.Add(1)
		panic("boom")
	}, eventbus.WithName("crashy"), eventbus.WithHandlerRetry(eventbus.NoRetry))
	require.NoError(t, err)
	mustStart(t, b)
	for i := range n {
		relAdd(t, b, userEvent(eventbus.EventOnSend, fmt.Sprint("u", i)))
	}
	idleWithin(t, b, 10*time.Second)
	assert.Equal(t, int64(n), chain.Load())
	assert.Equal(t, int64(n), healthy.Load())
	assert.Equal(t, int64(3*n), failing.Load(), "three attempts each")
	assert.Equal(t, int64(n), panicking.Load(), "no retry")
	byHandler := map[string]int{}
	for _, d := range sink.all() {
		byHandler[d.Handler]++
	}
	assert.Equal(t, map[string]int{"webhook": n, "crashy": n}, byHandler)
	st := b.Stats()
	assert.Equal(t, uint64(n), st.Subscribers["OnSend/webhook"].DeadLettered)
	assert.Equal(t, uint64(2*n), st.Subscribers["OnSend/webhook"].Retried)
	assert.Equal(t, uint64(n), st.Subscribers["OnSend/crashy"].Panics)
	assert.Equal(t, uint64(n), st.User.Handled)
	assert.Zero(t, st.User.Failed)
	for name, s := range st.Subscribers {
		atRest(t, name, s)
	}
}

// TestSubscriberBackPressure: a full subscriber lane refuses outside adds
// for the chain too (all or none), AddEvent waits for it, and follow-on
// adds never wait.
func TestSubscriberBackPressure(t *testing.T) {
	const queue = 4
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, QueueSize: queue}))
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	var chain, sub atomic.Int64
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		chain.Add(1)
		if ev.Frame == "fan" {
			for range 3 * queue { // follow-ons into the full lane: never wait
				if err := b.AddEvent(ctx, userEvent(eventbus.EventOnSend, "alice")); err != nil {
					return eventbus.Permanent(err)
				}
			}
		}
		return nil
	})
	_, err := eventbus.Subscribe(b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		<-release
		sub.Add(1)
		return nil
	}, eventbus.WithName("slow"))
	require.NoError(t, err)
	mustStart(t, b)

	accepted := 0
	for range 2 * queue {
		if err := b.TryAddEvent(userEvent(eventbus.EventOnSend, "alice")); err == nil {
			accepted++
		} else {
			require.ErrorIs(t, err, eventbus.ErrQueueFull)
		}
	}
	assert.Equal(t, queue, accepted, "the subscriber's lane holds QueueSize")
	idleChain := func() bool { return b.Stats().User.Handled == uint64(accepted) }
	require.Eventually(t, idleChain, 5*time.Second, time.Millisecond, "the chain handles what was accepted")
	assert.Equal(t, int64(accepted), chain.Load(), "refused events never reached the chain")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err = b.AddEvent(ctx, userEvent(eventbus.EventOnSend, "alice"))
	require.ErrorIs(t, err, eventbus.ErrQueueFull, "AddEvent waits for the lane, bounded by ctx")

	// A follow-on burst from the chain goes past the full lane.
	waiting := make(chan error, 1)
	fan := userEvent(eventbus.EventOnSend, "bob")
	fan.Frame = "fan"
	go func() { waiting <- b.AddEvent(context.Background(), fan) }()
	releaseOnce.Do(func() { close(release) })
	require.NoError(t, recvWithin(t, waiting, 5*time.Second, "the outside add once the lane drains"))
	idleWithin(t, b, 10*time.Second)
	total := int64(accepted + 1 + 3*queue)
	assert.Equal(t, total, chain.Load())
	assert.Equal(t, total, sub.Load())
	st := b.Stats()
	atRest(t, "user", st.User)
	atRest(t, "slow", st.Subscribers["OnSend/slow"])
}

// TestSubscriberOnlyTypeAndUnregister: a type with only a subscriber is
// accepted; Unregister stops deliveries at once while queued events still
// run, and its goroutines end (goleak checks at exit).
func TestSubscriberOnlyTypeAndUnregister(t *testing.T) {
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var got atomic.Int64
	reg, err := eventbus.Subscribe(b, eventbus.EventRecvAck, func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame == "hold" {
			entered <- struct{}{}
			<-release
		}
		got.Add(1)
		return nil
	})
	require.NoError(t, err)
	mustStart(t, b)
	hold := userEvent(eventbus.EventRecvAck, "alice")
	hold.Frame = "hold"
	relAdd(t, b, hold)
	recvWithin(t, entered, 5*time.Second, "subscriber")
	relAdd(t, b, userEvent(eventbus.EventRecvAck, "alice"))
	reg.Unregister()
	reg.Unregister()
	require.ErrorIs(t, b.AddEvent(context.Background(), userEvent(eventbus.EventRecvAck, "alice")), eventbus.ErrNoHandler)
	close(release)
	idleWithin(t, b, 5*time.Second)
	assert.Equal(t, int64(2), got.Load(), "events queued before Unregister still ran")
}

// TestSubscriberCloseDrainsLanes: Close runs every event a subscriber holds
// to the end before it returns. (At a deadline, what a subscriber still
// holds is counted in Left and dead-lettered under its name:
// TestSubscriberDeadLettersAtCloseDeadlineNameIt.)
func TestSubscriberCloseDrainsLanes(t *testing.T) {
	b := newBus(t)
	var got atomic.Int64
	_, err := eventbus.Subscribe(b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		time.Sleep(time.Millisecond) // some work
		got.Add(1)
		return nil
	})
	require.NoError(t, err)
	mustStart(t, b)
	for i := range 50 {
		relAdd(t, b, userEvent(eventbus.EventOnSend, fmt.Sprint("u", i%5)))
	}
	require.NoError(t, b.Close(deadline(t, 10*time.Second)))
	assert.Equal(t, int64(50), got.Load())
}

// TestSubscribeBadInput: names are unique across the chain and the
// subscribers; bad options and wrong pools are errors.
func TestSubscribeBadInput(t *testing.T) {
	b := newBus(t)
	h := func(ctx context.Context, ev *eventbus.UserContext) error { return nil }
	mustRegister(t, b, eventbus.EventOnSend, h, eventbus.WithName("audit"))
	_, err := eventbus.Subscribe(b, eventbus.EventOnSend, h, eventbus.WithName("audit"))
	require.ErrorIs(t, err, eventbus.ErrDuplicateName)
	_, err = eventbus.Subscribe(b, eventbus.EventOnSend, h, eventbus.WithName("hook"))
	require.NoError(t, err)
	_, err = eventbus.Register(b, eventbus.EventOnSend, h, eventbus.WithName("hook"))
	require.ErrorIs(t, err, eventbus.ErrDuplicateName)
	_, err = eventbus.Subscribe(b, eventbus.EventOnSend, h, eventbus.WithConcurrency(0))
	require.Error(t, err)
	_, err = eventbus.Register(b, eventbus.EventOnSend, h, eventbus.WithConcurrency(2))
	require.Error(t, err)
	_, err = eventbus.Subscribe(b, eventbus.EventChannelStore, h)
	require.ErrorIs(t, err, eventbus.ErrWrongPool)
	_, err = eventbus.Subscribe[eventbus.UserContext](b, eventbus.EventOnSend, nil)
	require.ErrorIs(t, err, eventbus.ErrNilHandler)
	assert.True(t, b.UnregisterHandler(eventbus.EventOnSend, "hook"), "UnregisterHandler finds subscribers by name")
}

// TestSubscriberObservedAndWrapped: middleware applies to subscribers
// (also middleware added after Subscribe) and the Observer sees their runs
// under their name.
func TestSubscriberObservedAndWrapped(t *testing.T) {
	var mu sync.Mutex
	var subs []string
	obs := eventbus.ObserverFunc(func(o eventbus.Observation) {
		mu.Lock()
		subs = append(subs, o.Subscriber)
		mu.Unlock()
	})
	b := newBus(t, eventbus.WithObserver(obs))
	var wrapped atomic.Int64
	_, err := eventbus.Subscribe(b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		info, ok := eventbus.CallInfoFrom(ctx)
		assert.True(t, ok)
		assert.Equal(t, "hook", info.Handler)
		return nil
	}, eventbus.WithName("hook"))
	require.NoError(t, err)
	b.Use(func(next eventbus.HandlerFunc) eventbus.HandlerFunc {
		return func(ctx context.Context, ev eventbus.Event) error {
			wrapped.Add(1)
			return next(ctx, ev)
		}
	})
	mustStart(t, b)
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)
	assert.Equal(t, int64(1), wrapped.Load())
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"hook"}, subs)
}

// TestForeignCtxAddsFromChainAndSubscriberDoNotDeadlock: an add from a
// handler's goroutine with a foreign ctx (context.Background()) that would
// wait on its own pool is taken as a follow-on add, never a deadlock, and a
// subscriber's ctx is a handler ctx (see ARCHITECTURE.md, Follow-on adds).
// Both engines of a type with a chain handler and a subscriber recognise
// both: each of the two, adding with context.Background() while the other
// fills the pool's queue or the subscriber's lane, returns.
func TestForeignCtxAddsFromChainAndSubscriberDoNotDeadlock(t *testing.T) {
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, QueueSize: 1}))
	conn := &testConn{uid: "alice", id: 1}
	var inside sync.WaitGroup // both handlers are running the first event
	inside.Add(2)
	results := make(chan error, 2)
	handle := func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame != "first" {
			return nil
		}
		inside.Done()
		inside.Wait()
		// A foreign ctx, from a handler's goroutine: a follow-on add.
		results <- b.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn, Frame: "next"})
		return nil
	}
	mustRegister(t, b, eventbus.EventOnSend, handle, eventbus.WithName("chain"))
	_, err := eventbus.Subscribe(b, eventbus.EventOnSend, handle, eventbus.WithName("sub"))
	require.NoError(t, err)
	require.NoError(t, b.Start())
	require.NoError(t, b.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn, Frame: "first"}))

	timeout := time.After(3 * time.Second)
	for range 2 {
		select {
		case err := <-results:
			require.NoError(t, err)
		case <-timeout:
			t.Fatal("a handler's AddEvent(context.Background(), …) is still waiting after 3 s: " +
				"the chain handler waits for the subscriber's lane, the subscriber for the pool")
		}
	}
}

// TestSubscriberDeadLettersAtCloseDeadlineNameIt: the events a Close
// deadline takes from a subscriber (held in its lane, none of them failed)
// are dead-lettered under the subscriber's name, so the sink can tell that
// the chain handled them and only the subscriber missed them.
func TestSubscriberDeadLettersAtCloseDeadlineNameIt(t *testing.T) {
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	entered, release := make(chan struct{}), make(chan struct{})
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		return nil
	}, eventbus.WithName("store"))
	_, err := eventbus.Subscribe(b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame == "hold" {
			close(entered)
			<-release
		}
		return nil
	}, eventbus.WithName("webhook"))
	require.NoError(t, err)
	mustStart(t, b)
	hold := userEvent(eventbus.EventOnSend, "alice")
	hold.Frame = "hold"
	relAdd(t, b, hold)
	recvWithin(t, entered, 5*time.Second, "subscriber")
	for range 3 {
		relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	}
	chainDone := func() bool { return b.Stats().User.Handled == 4 }
	require.Eventually(t, chainDone, 5*time.Second, time.Millisecond, "the chain is done")
	ce := closeExpired(t, b)
	assert.Equal(t, 4, ce.Left, "the subscriber's held and queued events")
	close(release)
	require.NoError(t, b.Close(deadline(t, 5*time.Second)))
	letters := sink.all()
	require.Len(t, letters, 3, "the subscriber's three queued events")
	for _, d := range letters {
		assert.ErrorIs(t, d.Err, eventbus.ErrClosed)
		assert.Equal(t, "webhook", d.Handler, "a subscriber's dead letter names the subscriber")
		assert.Zero(t, d.Attempts, "none of its attempts failed")
	}
}
