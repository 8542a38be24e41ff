package natsbridge_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	natsbridge "github.com/imbus/eventbus/bridge/nats"
	"github.com/stretchr/testify/require"
)

// failoverSize is the size of the failover runs: keys × events per key.
func failoverSize() (keys, perKey int) {
	if raceEnabled {
		return 300, 20
	}
	return 1000, 30
}

// slowChannel records like recordChannel and, once armed, slows every
// handler a little, so that events are in flight when a node goes away.
func slowChannel(o *order, slow *atomic.Bool) func(*eventbus.Bus) {
	return func(bus *eventbus.Bus) {
		_, err := eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			if slow.Load() {
				t := time.NewTimer(200 * time.Microsecond)
				<-t.C
			}
			o.record(ev.ChannelID, ev.Messages[0].MessageSeq)
			return nil
		})
		if err != nil {
			panic(err)
		}
	}
}

// partitionTimes records, per partition, which nodes handled its events
// and when events were handled, to tell when a dead node's partitions
// made progress again.
type partitionTimes struct {
	mu    sync.Mutex
	nodes map[int]map[string]bool
	times map[int][]time.Time
}

func (pt *partitionTimes) record(bus *eventbus.Bus, node string, ev *eventbus.ChannelContext) {
	k, err := bus.StableKey(ev)
	if err != nil {
		panic(err)
	}
	p := int(k % natsbridge.DefaultPartitions)
	now := time.Now()
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.nodes[p] == nil {
		pt.nodes[p] = map[string]bool{}
	}
	pt.nodes[p][node] = true
	pt.times[p] = append(pt.times[p], now)
}

// resumed returns, for every partition node handled events of, the
// first time after t one of its events was handled (zero: none yet).
func (pt *partitionTimes) resumed(node string, t time.Time) map[int]time.Time {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	r := map[int]time.Time{}
	for p, ns := range pt.nodes {
		if !ns[node] {
			continue
		}
		r[p] = time.Time{}
		for _, at := range pt.times[p] {
			if at.After(t) {
				r[p] = at
				break
			}
		}
	}
	return r
}

// TestNodeDiesMidRun: one of three nodes loses its connection for good
// while it holds partitions and events in flight (as a crash looks to the
// cluster), while producers keep adding. Its partitions are taken over and
// its events redelivered, with the default Config, within 10 s of its
// death (the design's bound: about LeaseTTL plus a renewal period in
// practice); every event is handled at least once, and no event of a key
// runs before the key's earlier events have run. How long the survivors
// then take to work off the backlog and the events still being added
// depends on the machine's speed and is not bounded here.
func TestNodeDiesMidRun(t *testing.T) {
	keys, perKey := failoverSize()
	total := keys * perKey
	ts := startServer(t)
	o := newOrder(-1)
	pt := &partitionTimes{nodes: map[int]map[string]bool{}, times: map[int][]time.Time{}}
	var slow atomic.Bool
	a := startNode(t, ts, "a", bridged(), slowChannelOn("a", o, &slow, pt))
	b := startNode(t, ts, "b", bridged(), slowChannelOn("b", o, &slow, pt))
	c := startNode(t, ts, "c", bridged(), slowChannelOn("c", o, &slow, pt))
	waitBalanced(t, a, b, c)
	slow.Store(true)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	produced := make(chan error, 1)
	go func() { produced <- produce(ctx, []*node{b, c}, keys, perKey, 16) }()
	waitUntil(t, time.Minute, "a third of the events handled", func() bool { return o.distinct() >= total/3 })
	require.NotZero(t, a.br.Stats().Delivered, "node a consumed before it died")
	died := time.Now()
	a.kill(t)
	waitUntil(t, 10*time.Second, "a's partitions taken over", func() bool {
		return b.br.Stats().Owned+c.br.Stats().Owned == natsbridge.DefaultPartitions
	})
	t.Logf("a's partitions consumed again %v after it died", time.Since(died))
	waitUntil(t, 10*time.Second, "an event of each of a's partitions handled again", func() bool {
		for _, at := range pt.resumed("a", died) {
			if at.IsZero() {
				return false
			}
		}
		return true
	})
	var last time.Duration
	for _, at := range pt.resumed("a", died) {
		last = max(last, at.Sub(died))
	}
	t.Logf("every partition of a handled events again within %v of its death", last)
	require.NoError(t, <-produced)
	waitUntil(t, 3*time.Minute, "every event handled", func() bool { return o.distinct() == total })
	t.Logf("every event handled %v after node a died", time.Since(died))
	dups := o.checkAtLeastOnce(t, keys, perKey)
	t.Logf("%d events, %d handled twice (redelivered after the death)", total, dups)
	t.Logf("rewinds of a's partitions by b and c: %d", b.br.Stats().Resets+c.br.Stats().Resets)
}

// slowChannelOn is slowChannel that also records, in pt, which node
// handled which partition's events and when.
func slowChannelOn(name string, o *order, slow *atomic.Bool, pt *partitionTimes) func(*eventbus.Bus) {
	return func(bus *eventbus.Bus) {
		_, err := eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			if slow.Load() {
				t := time.NewTimer(200 * time.Microsecond)
				<-t.C
			}
			pt.record(bus, name, ev)
			o.record(ev.ChannelID, ev.Messages[0].MessageSeq)
			return nil
		})
		if err != nil {
			panic(err)
		}
	}
}

// TestConnectionCutMidRun: every connection of the cluster is cut twice
// mid-run and the clients reconnect: nothing is lost and per-key order
// holds among deliveries.
func TestConnectionCutMidRun(t *testing.T) {
	keys, perKey := failoverSize()
	total := keys * perKey
	ts := startServer(t)
	px := startProxy(t, ts.s.Addr().String())
	o := newOrder(-1)
	var slow atomic.Bool
	a := startNodeAt(t, px.url(), "a", bridged(), slowChannel(o, &slow))
	b := startNodeAt(t, px.url(), "b", bridged(), slowChannel(o, &slow))
	waitBalanced(t, a, b)
	slow.Store(true)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	produced := make(chan error, 1)
	go func() { produced <- produceRetrying(ctx, []*node{a, b}, keys, perKey, 16) }()
	for _, frac := range []int{4, 2} {
		waitUntil(t, 30*time.Second, "events handled", func() bool { return o.distinct() >= total/frac })
		px.cut()
	}
	require.NoError(t, <-produced)
	// An event the cut left unacked on the server comes back at the latest
	// after AckWait (the default, 30 s): wait that long and some more for
	// a loaded machine.
	waitUntil(t, natsbridge.DefaultAckWait+30*time.Second, "every event handled", func() bool { return o.distinct() == total })
	dups := o.checkAtLeastOnce(t, keys, perKey)
	t.Logf("%d events, %d handled twice", total, dups)
}

// TestServerRestartLosesNothing: the server stops (events stored, some
// unacked) and starts again on the same store directory; the nodes
// reconnect and every event is handled, in order.
func TestServerRestartLosesNothing(t *testing.T) {
	keys, perKey := 200, 20
	total := keys * perKey
	ts := startServer(t)
	o := newOrder(-1)
	var slow atomic.Bool
	slow.Store(true)
	a := startNode(t, ts, "a", bridged(), slowChannel(o, &slow))
	b := startNode(t, ts, "b", bridged(), slowChannel(o, &slow))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// The first half, then a restart while it is being handled.
	require.NoError(t, produceRange(ctx, []*node{a, b}, keys, 1, perKey/2, 8))
	ts.stop()
	ts.start()
	require.NoError(t, produceRetryingRange(ctx, []*node{a, b}, keys, perKey/2+1, perKey, 8))
	waitUntil(t, 60*time.Second, "every event handled", func() bool { return o.distinct() == total })
	dups := o.checkAtLeastOnce(t, keys, perKey)
	t.Logf("%d events, %d handled twice", total, dups)
}
