package natsbridge_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	natsbridge "github.com/imbus/eventbus/bridge/nats"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// raceEnabled is set by race_test.go under -race.
var raceEnabled bool

// testRetention is the retention bridged() asks for (TestLimitsRetention
// runs tests again with Limits).
var testRetention = natsbridge.WorkQueue

func bridged() natsbridge.Config {
	return natsbridge.Config{Stream: "EVENTS", Types: []eventbus.EventType{eventbus.EventChannelDistribute},
		Retention: testRetention}
}

// TestLimitsRetention runs the tests that involve acks again on a stream
// with limits retention (those whose acks matter most, to keep the suite
// short), where partitions ack cumulatively (AckAll): an
// event is never acked before it and every earlier event of its
// partition have finished, so a death, a Close deadline or a poison
// event loses nothing and keeps order.
func TestLimitsRetention(t *testing.T) {
	testRetention = natsbridge.Limits
	defer func() { testRetention = natsbridge.WorkQueue }()
	for name, test := range map[string]func(*testing.T){
		"OneNodeRoundTrip": TestOneNodeRoundTrip,
		"MaxDeliver":       TestMaxDeliverDeadLetters,
		"CloseWaits":       TestCloseWaitsForInFlight,
		"CloseDeadline":    TestCloseDeadlineRedelivers,
		"NodeDies":         TestNodeDiesMidRun,
		"PoisonEvent":      TestPoisonEventDeadLetteredAfterMaxDeliverDeaths,
	} {
		t.Run(name, test)
	}
}

// TestOneNodeRoundTrip: an add of a bridged type is stored in the stream,
// comes back to the only node and is handled there, once.
func TestOneNodeRoundTrip(t *testing.T) {
	ts := startServer(t)
	o := newOrder(10)
	n := startNode(t, ts, "a", bridged(), recordChannel(o))
	ctx := context.Background()
	for i := 1; i <= 10; i++ {
		require.NoError(t, n.bus.AddEvent(ctx, channelEvent("k", uint64(i))))
	}
	waitFor(t, o.done, 10*time.Second, "10 events")
	o.checkExactlyOnce(t, 1, 10)
	n.close(t, 10*time.Second)
	st := n.br.Stats()
	assert.Equal(t, uint64(10), st.Published)
	assert.Equal(t, uint64(10), st.Delivered)
	assert.Equal(t, uint64(10), st.Acked)
	assert.Equal(t, uint64(10), n.bus.Stats().Channel.Handled)
}

// TestThreeNodesExactlyOnceInOrder: three nodes, each its own bus and
// connection, share the partitions; events added on every node over 1 000
// keys are each handled exactly once, per key in add order. 100 000
// events; 10 000 under -race (the race detector slows the server and the
// bus about tenfold on this 2-core machine).
//
// Exactly once holds in a normal run. On a machine so starved that a
// node cannot renew a lease within LeaseTTL (seen with GOMAXPROCS=1, the
// race detector and four busy loops: 124 events/s), the cluster takes the
// node for dead and rewinds its partitions: the test then checks what
// holds after a failure (each event at least once, order among
// deliveries) and says why.
func TestThreeNodesExactlyOnceInOrder(t *testing.T) {
	keys, perKey := 1000, 100
	if raceEnabled {
		perKey = 10
	}
	total := keys * perKey
	ts := startServer(t)
	o := newOrder(-1)
	// What this test shows does not depend on the machine's speed: an
	// add may wait for its store ack as long as the whole run may take.
	const budget = 3 * time.Minute
	cfg := bridged()
	cfg.PublishTimeout = budget
	var nodes []*node
	for _, name := range []string{"a", "b", "c"} {
		nodes = append(nodes, startNode(t, ts, name, cfg, recordChannel(o)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	require.NoError(t, produce(ctx, nodes, keys, perKey, 48))
	t.Logf("published in %v; handled so far %d", time.Since(start), o.distinct())
	waitUntil(t, budget, "every event handled", func() bool { return o.distinct() == total })
	t.Logf("%d events through 3 nodes in %v (%.0f/s)", total, time.Since(start), float64(total)/time.Since(start).Seconds())
	for _, n := range nodes {
		n.close(t, 20*time.Second)
	}
	var delivered, lost, resets uint64
	for _, n := range nodes {
		st := n.br.Stats()
		t.Logf("%s: %+v", n.name, st)
		delivered += st.Delivered
		lost += st.Lost
		resets += st.Resets
		assert.Zero(t, st.DeadLettered)
	}
	if lost > 0 || resets > 0 {
		dups := o.checkAtLeastOnce(t, keys, perKey)
		t.Logf("not a normal run: %d leases lost, %d rewinds (the machine starved the nodes): "+
			"checked at-least-once and order among deliveries; %d events handled twice", lost, resets, dups)
		return
	}
	o.checkExactlyOnce(t, keys, perKey)
	assert.Equal(t, uint64(total), delivered)
}

// TestSequenceForDedupe: a handler sees the stream sequence of the message
// its event came from (Sequence), distinct per event, so it can dedupe
// redeliveries; TryAddEvent of a bridged type publishes too.
func TestSequenceForDedupe(t *testing.T) {
	ts := startServer(t)
	seqs := make(chan uint64, 4)
	n := startNode(t, ts, "a", bridged(), func(bus *eventbus.Bus) {
		_, err := eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			seq, ok := natsbridge.Sequence(ctx)
			if !ok {
				return eventbus.Permanent(errors.New("no stream sequence in the handler's ctx"))
			}
			seqs <- seq
			return nil
		})
		require.NoError(t, err)
	})
	require.NoError(t, n.bus.AddEvent(context.Background(), channelEvent("k", 1)))
	require.NoError(t, n.bus.AddEvent(context.Background(), channelEvent("k", 2)))
	require.NoError(t, n.bus.TryAddEvent(channelEvent("k", 3)))
	got := map[uint64]bool{}
	for range 3 {
		select {
		case s := <-seqs:
			got[s] = true
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the bridged events")
		}
	}
	assert.Len(t, got, 3, "distinct sequences")
	assert.NotContains(t, got, uint64(0))
	n.close(t, 10*time.Second)
}
