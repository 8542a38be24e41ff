package natsbridge_test

import (
	"context"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	natsbridge "github.com/imbus/eventbus/bridge/nats"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// On a Limits stream a partition acks cumulatively (AckAll), and the
// server takes the delivery sequence of an AckAll ack as the consumer's
// delivery ack floor: a later ack whose delivery sequence is not above it
// is ignored. A rewind (ResetConsumer) restarts the delivery sequence at
// 1. The bridge acked an event that was in its bus across a rewind with
// the message it kept from before the rewind, whose delivery sequence is
// far above the new ones: the server then ignored the acks of the events
// after it until AckWait brought them back, to be handled a second time
// after later ones. An event that had finished behind an unfinished one
// (and so was not acked yet) came back with the rewind and was handled a
// second time at once.

// TestAcksAfterRewindOnLimitsStreamAreHonoured: two events held in their
// handlers and a finished one behind them when the consumer is reset (the
// bridge sees the gap in the delivery sequences and rewinds); the held
// events are then let go and more follow. The consumer's ack floor
// reaches the last event and nothing is left pending, long before
// AckWait (30 s), and no event is handled twice.
func TestAcksAfterRewindOnLimitsStreamAreHonoured(t *testing.T) {
	ts := startServer(t)
	cfg := bridged()
	cfg.Retention = natsbridge.Limits
	cfg.Partitions = 1
	o := newOrder(-1)
	entered := make(chan string, 16)
	gates := map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{})}
	setup := func(bus *eventbus.Bus) {
		_, err := eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			if g, ok := gates[ev.ChannelID]; ok {
				entered <- ev.ChannelID
				<-g
			}
			o.record(ev.ChannelID, ev.Messages[0].MessageSeq)
			return nil
		})
		if err != nil {
			panic(err)
		}
	}
	// Many shards: a key sharing a held key's shard would wait behind it.
	n := startNode(t, ts, "a", cfg, setup, eventbus.WithChannelPool(eventbus.PoolConfig{Shards: 1 << 16}))
	_, js := ts.connect(t)
	ctx := context.Background()
	info := func() *jetstream.ConsumerInfo {
		t.Helper()
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		cons, err := js.Consumer(ictx, "EVENTS", "EVENTS_p0")
		require.NoError(t, err)
		i, err := cons.Info(ictx)
		require.NoError(t, err)
		return i
	}
	add := func(key string, seq uint64) {
		t.Helper()
		require.NoError(t, n.bus.AddEvent(ctx, channelEvent(key, seq)))
	}
	held := func(key string) {
		t.Helper()
		select {
		case k := <-entered:
			require.Equal(t, key, k)
		case <-time.After(10 * time.Second):
			t.Fatalf("event 1 of %s not in its handler within 10s", key)
		}
	}

	// Deliveries before the rewind: the messages kept for the held events
	// carry delivery sequences 31 and 32.
	const warm = 30
	for i := 1; i <= warm; i++ {
		add("w", uint64(i))
	}
	waitUntil(t, 10*time.Second, "the first events handled and acked", func() bool {
		return o.distinct() == warm && info().AckFloor.Stream == warm
	})
	add("a", 1) // stream sequence 31, held
	held("a")
	add("b", 1) // 32, held
	held("b")
	add("d", 1) // 33, finished behind the held ones: not acked
	waitUntil(t, 10*time.Second, "event 1 of d handled", func() bool { return o.distinct() == warm+1 })

	// Reset the consumer: the next delivery the bridge gets is the
	// consumer's first, not the one after its last, so it rewinds, and the
	// three events come again with delivery sequences 1 to 3.
	st := n.br.Stats()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := js.ResetConsumer(rctx, "EVENTS", "EVENTS_p0")
	cancel()
	require.NoError(t, err)
	waitUntil(t, 20*time.Second, "the bridge to rewind and drop the redeliveries of the held events", func() bool {
		s := n.br.Stats()
		return s.Resets > st.Resets && s.Duplicates >= st.Duplicates+2
	})

	close(gates["a"])
	waitUntil(t, 10*time.Second, "event 1 of a acked", func() bool { return info().AckFloor.Stream >= warm+1 })
	close(gates["b"])
	const more = 5 // delivery sequences 4 to 8: below the ones kept from before the rewind
	for i := 1; i <= more; i++ {
		add("c", uint64(i))
	}
	const last = warm + 3 + more
	waitUntil(t, 10*time.Second, "every event handled", func() bool { return o.distinct() == last })

	// Acks are gathered for 2 ms; 10 s is far below AckWait.
	var i *jetstream.ConsumerInfo
	deadline := time.Now().Add(10 * time.Second)
	for i = info(); (i.AckFloor.Stream != last || i.NumAckPending != 0) && time.Now().Before(deadline); i = info() {
		time.Sleep(20 * time.Millisecond) // polling the server: nothing to wait on
	}
	assert.Equal(t, uint64(last), i.AckFloor.Stream, "ack floor (stream sequence) 10s after every event was handled")
	assert.Zero(t, i.NumAckPending, "events delivered and not acked 10s after every event was handled")

	o.mu.Lock()
	for key, want := range map[string]int{"w": warm, "a": 1, "b": 1, "d": 1, "c": more} {
		s := o.seen[key]
		assert.Len(t, s, want, "key %s handled %v", key, s)
		for j, v := range s {
			assert.Equal(t, uint64(j+1), v, "key %s: position %d of %v", key, j, s)
		}
	}
	o.mu.Unlock()
	assert.GreaterOrEqual(t, n.br.Stats().Duplicates, st.Duplicates+3, "a, b and d delivered again after the rewind, dropped")
	n.close(t, 10*time.Second)
}
