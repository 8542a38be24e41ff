package eventbus_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestIsolationBlockedChannelPoolDoesNotStallUsers proves that pools are
// isolated (one engine per pool; see ARCHITECTURE.md, The engine: shards,
// run queue, workers): with the channel pool's only worker stuck in a
// handler and its shard full, user events are still handled, and so are
// their follow-on events into the stuck pool (accepted above capacity,
// never waiting), and the pusher pool keeps working too.
func TestIsolationBlockedChannelPoolDoesNotStallUsers(t *testing.T) {
	const (
		producers   = 8
		perProducer = 250
		total       = producers * perProducer
	)
	bus := newBus(t,
		eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 1, QueueSize: 2}),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 4, QueueSize: 16}))

	stuck := make(chan struct{})
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock) // runs before newBus's Close
	var stuckOnce sync.Once
	var chanHandled atomic.Int64
	mustRegister(t, bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		stuckOnce.Do(func() {
			close(stuck)
			<-release // a database that hangs until the end of the test
		})
		chanHandled.Add(1)
		return nil
	})

	var userHandled atomic.Int64
	allUsers := make(chan struct{})
	var emitErrs coreErrs
	mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		// Each user event hands work to the stuck channel pool.
		emitErrs.add(bus.AddEvent(ctx, coreChan(eventbus.EventChannelStore, "store-"+ev.Conn.UID())))
		if userHandled.Add(1) == total {
			close(allUsers)
		}
		return nil
	})
	pushed := make(chan struct{}, 1)
	mustRegister(t, bus, eventbus.EventPushOnline, func(ctx context.Context, ev *eventbus.PushContext) error {
		pushed <- struct{}{}
		return nil
	})
	mustStart(t, bus)

	require.NoError(t, bus.AddEvent(context.Background(), coreChan(eventbus.EventChannelStore, "first")))
	recvWithin(t, stuck, 5*time.Second, "the channel handler to start")

	var wg sync.WaitGroup
	var addErrs coreErrs
	ctx := deadline(t, 20*time.Second)
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				addErrs.add(bus.AddEvent(ctx, userEvent(eventbus.EventOnSend, fmt.Sprintf("iso-%d-%d", p, i%37))))
			}
		})
	}
	coreWaitGroup(t, &wg, 20*time.Second, "producers of user events")
	addErrs.requireNone(t, "AddEvent of user events")
	recvWithin(t, allUsers, 20*time.Second, "every user event to be handled while the channel pool is stuck")
	emitErrs.requireNone(t, "follow-on adds into the stuck channel pool")

	// The pusher pool is not held up either.
	require.NoError(t, bus.AddEvent(context.Background(), corePush(eventbus.EventPushOnline, "p", 1)))
	recvWithin(t, pushed, 5*time.Second, "a push event while the channel pool is stuck")

	// The channel pool really is stuck and full: nothing handled, its
	// shard over capacity, outside adds refused.
	st := bus.Stats()
	assert.Zero(t, chanHandled.Load(), "channel events handled while the handler is stuck")
	assert.Equal(t, uint64(total+1), st.Channel.Added)
	assert.Equal(t, int64(total+1-2), st.Channel.Overflow, "follow-ons above the channel shard's capacity")
	require.ErrorIs(t, bus.TryAddEvent(coreChan(eventbus.EventChannelStore, "late")), eventbus.ErrQueueFull)

	unblock()
	idleWithin(t, bus, 20*time.Second)
	assert.Equal(t, int64(total+1), chanHandled.Load(), "channel events handled after the release")
	st = bus.Stats()
	assert.Equal(t, uint64(total), st.User.Handled)
	assert.Equal(t, uint64(total+1), st.Channel.Handled)
	atRest(t, "user", st.User)
	atRest(t, "channel", st.Channel)
}
