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

func TestSplitPush(t *testing.T) {
	msg := &eventbus.Message{ChannelID: "g1", ChannelType: 2}
	pc := &eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: msg, Subscribers: []string{"a", "b", "c"}}
	parts := eventbus.SplitPush(pc)
	require.Len(t, parts, 3)
	for i, p := range parts {
		assert.Equal(t, eventbus.EventPushOnline, p.EventType)
		assert.Same(t, msg, p.Message)
		assert.Equal(t, []string{pc.Subscribers[i]}, p.Subscribers)
		assert.Equal(t, 1, cap(p.Subscribers), "an append to one part must not write into the next")
	}
	pc.Subscribers[0] = "changed"
	assert.Equal(t, "a", parts[0].Subscribers[0], "parts do not share pc's array")
	assert.Nil(t, eventbus.SplitPush(nil))
	assert.Nil(t, eventbus.SplitPush(&eventbus.PushContext{Message: msg}))
}

func TestKeyByReceiver(t *testing.T) {
	push := func(ch string, typ uint8, subs ...string) eventbus.Event {
		return &eventbus.PushContext{EventType: eventbus.EventPushOnline,
			Message: &eventbus.Message{ChannelID: ch, ChannelType: typ}, Subscribers: subs}
	}
	k := eventbus.KeyByReceiver
	assert.Equal(t, k(push("g1", 2, "bob")), k(push("g1", 2, "bob")), "same receiver, same channel: one key")
	assert.NotEqual(t, k(push("g1", 2, "bob")), k(push("g1", 2, "carol")), "receivers apart")
	assert.NotEqual(t, k(push("g1", 2, "bob")), k(push("g2", 2, "bob")), "channels apart")
	assert.NotEqual(t, k(push("g1", 2, "bob")), k(push("g1", 1, "bob")), "channel types apart")
	assert.Equal(t, k(push("g1", 2, "a", "b")), k(push("g1", 2)), "several receivers: the channel's key")
	assert.NotEqual(t, k(push("g1", 2, "a", "b")), k(push("g1", 2, "")), "not the key of receiver \"\"")
	assert.Zero(t, k(&eventbus.PushContext{}))
	assert.Zero(t, k(&eventbus.UserContext{}))
	ev := push("g1", 2, "bob")
	assert.Zero(t, testing.AllocsPerRun(100, func() { k(ev) }), "KeyByReceiver allocates nothing")
}

// TestPerReceiverPush: a 500-member group gets three messages, one push
// event per receiver, on a pusher pool keyed by receiver. The write to one
// receiver fails once: that receiver alone gets a retry, the 499 others
// get each message exactly once, and everyone sees the channel in order.
func TestPerReceiverPush(t *testing.T) {
	const members, messages, unlucky = 500, 3, "u137"
	b := newBus(t,
		eventbus.WithPusherPool(eventbus.PoolConfig{Workers: 4}),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: 5 * time.Millisecond, Jitter: -1}))
	var (
		mu       sync.Mutex
		attempts = map[string]int{}      // writes tried, per receiver
		got      = map[string][]uint64{} // sequences delivered, per receiver
		retried  []string
		failed   bool
	)
	write := func(ctx context.Context, ev *eventbus.PushContext) error {
		uid := ev.Subscribers[0]
		info, _ := eventbus.CallInfoFrom(ctx)
		mu.Lock()
		defer mu.Unlock()
		attempts[uid]++
		if info.Attempt > 1 {
			retried = append(retried, uid)
		}
		if uid == unlucky && !failed {
			failed = true
			return errors.New("write: connection reset")
		}
		got[uid] = append(got[uid], ev.Message.MessageSeq)
		return nil
	}
	mustRegister(t, b, eventbus.EventPushOnline, write, eventbus.WithName("write"))
	// The channel handler fans out per receiver, as follow-on events.
	var group []string
	for i := range members {
		group = append(group, fmt.Sprintf("u%d", i))
	}
	mustRegister(t, b, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		for _, m := range ev.Messages {
			n, err := eventbus.AddPerReceiver(ctx, b, &eventbus.PushContext{EventType: eventbus.EventPushOnline,
				Message: m, Subscribers: group})
			if err != nil || n != members {
				return fmt.Errorf("added %d of %d: %w", n, members, err)
			}
		}
		return nil
	}, eventbus.WithName("fanout"))
	mustStart(t, b)
	for seq := uint64(1); seq <= messages; seq++ {
		require.NoError(t, b.AddEvent(context.Background(), &eventbus.ChannelContext{
			EventType: eventbus.EventChannelDistribute, ChannelID: "g1", ChannelType: 2,
			Messages: []*eventbus.Message{{ChannelID: "g1", ChannelType: 2, MessageSeq: seq}}}))
	}
	idleWithin(t, b, 10*time.Second)

	mu.Lock()
	defer mu.Unlock()
	require.True(t, failed, "the unlucky write failed once")
	assert.Equal(t, []string{unlucky}, retried, "only the failed receiver is retried")
	for _, uid := range group {
		want := messages
		if uid == unlucky {
			want++ // the failed write and its retry
		}
		assert.Equal(t, want, attempts[uid], "writes to %s", uid)
		assert.Equal(t, []uint64{1, 2, 3}, got[uid], "%s: each message once, in channel order", uid)
	}
	st := b.Stats().Pusher
	assert.Equal(t, uint64(members*messages), st.Handled)
	assert.Equal(t, uint64(1), st.Retried)
	assert.Zero(t, st.DeadLettered)
}

// TestPerReceiverPushIsolation: while one receiver's writes keep failing,
// the others of its group and channel are served: the failing receiver's
// writes succeed only once all the others have their messages. On a
// pusher pool keyed by channel, the others would wait behind its retries
// and it would end in the dead-letter sink.
func TestPerReceiverPushIsolation(t *testing.T) {
	const members, messages, unlucky = 200, 3, "u42"
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink),
		eventbus.WithPusherPool(eventbus.PoolConfig{Workers: 2, KeyFunc: eventbus.KeyByReceiver}),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 10000, InitialBackoff: time.Millisecond,
			MaxBackoff: time.Millisecond, Jitter: -1}))
	var (
		mu     sync.Mutex
		others int      // deliveries to the other receivers
		mine   []uint64 // deliveries to the unlucky one
		tries  int
	)
	mustRegister(t, b, eventbus.EventPushOnline, func(ctx context.Context, ev *eventbus.PushContext) error {
		mu.Lock()
		defer mu.Unlock()
		if ev.Subscribers[0] != unlucky {
			others++
			return nil
		}
		tries++
		if others < (members-1)*messages {
			return errors.New("write: connection reset") // until everyone else is served
		}
		mine = append(mine, ev.Message.MessageSeq)
		return nil
	}, eventbus.WithName("write"))
	mustStart(t, b)
	group := make([]string, members)
	for i := range group {
		group[i] = fmt.Sprintf("u%d", i)
	}
	for seq := uint64(1); seq <= messages; seq++ {
		_, err := eventbus.AddPerReceiver(context.Background(), b, &eventbus.PushContext{EventType: eventbus.EventPushOnline,
			Message: &eventbus.Message{ChannelID: "g1", ChannelType: 2, MessageSeq: seq}, Subscribers: group})
		require.NoError(t, err)
	}
	idleWithin(t, b, 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, sink.all(), "the failing receiver got through")
	assert.Equal(t, (members-1)*messages, others)
	assert.Equal(t, []uint64{1, 2, 3}, mine, "its messages in order, after the others")
	assert.Greater(t, tries, messages, "its first write failed at least once")
}

// fakeEmitter records adds and fails the n-th one.
type fakeEmitter struct {
	added  []eventbus.Event
	failAt int
}

func (e *fakeEmitter) AddEvent(ctx context.Context, ev eventbus.Event) error {
	if len(e.added) == e.failAt {
		return eventbus.ErrQueueFull
	}
	e.added = append(e.added, ev)
	return nil
}

func TestAddPerReceiverStopsAtFirstError(t *testing.T) {
	e := &fakeEmitter{failAt: 2}
	pc := &eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: &eventbus.Message{},
		Subscribers: []string{"a", "b", "c", "d"}}
	n, err := eventbus.AddPerReceiver(context.Background(), e, pc)
	assert.ErrorIs(t, err, eventbus.ErrQueueFull)
	assert.Equal(t, 2, n)
	require.Len(t, e.added, 2)
	assert.Equal(t, []string{"b"}, e.added[1].(*eventbus.PushContext).Subscribers)
	// Trying again with the rest delivers each receiver once.
	e.failAt = -1
	n, err = eventbus.AddPerReceiver(context.Background(), e,
		&eventbus.PushContext{EventType: pc.EventType, Message: pc.Message, Subscribers: pc.Subscribers[n:]})
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Len(t, e.added, 4)
}
