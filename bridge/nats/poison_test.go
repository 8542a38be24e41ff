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

// crash is a node whose handler hit the poison event: the handler waits
// on released until the test has killed the node.
type crash struct {
	node     string
	released chan struct{}
}

// poisonous registers a handler that records every event and "crashes
// its node" on the event of channel "poison": it reports the crash and
// blocks until the test has stopped the node abruptly.
func poisonous(name string, o *order, crashes chan<- crash) func(*eventbus.Bus) {
	return func(bus *eventbus.Bus) {
		_, err := eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			if ev.ChannelID == "poison" {
				c := crash{node: name, released: make(chan struct{})}
				crashes <- c
				<-c.released
				return errors.New("the node died in this handler")
			}
			o.record(ev.ChannelID, ev.Messages[0].MessageSeq)
			return nil
		})
		if err != nil {
			panic(err)
		}
	}
}

// crashNode stops n as a process crash would, as far as the cluster can
// tell: its connection closes first (no ack, no renewal, no hand-back),
// its bridge and bus give up at once; then the handler stuck in the
// poison event is let go so the test leaks nothing.
func crashNode(n *node, released chan struct{}) {
	n.once.Do(func() {
		n.nc.Close()
		expired, cancel := context.WithCancel(context.Background())
		cancel()
		_ = n.br.Close(expired)
		_ = n.bus.Close(expired)
		close(released)
		_ = n.bus.Close(context.Background())
	})
}

// TestPoisonEventDeadLetteredAfterMaxDeliverDeaths: an event whose
// handler crashes every node that runs it is dead-lettered, with
// ErrMaxDeliver, after at most MaxDeliver node deaths, although every
// takeover rewinds its partition (which restarts JetStream's own delivery
// count); every other event, of its partition too, is handled, per key in
// order.
func TestPoisonEventDeadLetteredAfterMaxDeliverDeaths(t *testing.T) {
	ts := startServer(t)
	o := newOrder(-1)
	dl := newSink()
	crashes := make(chan crash, 10)
	cfg := bridged()
	cfg.MaxDeliver, cfg.LeaseTTL = 2, time.Second
	nodes := map[string]*node{}
	var all []*node
	for _, name := range []string{"a", "b", "c"} {
		n := startNode(t, ts, name, cfg, poisonous(name, o, crashes), eventbus.WithDeadLetter(dl))
		nodes[name] = n
		all = append(all, n)
	}
	waitBalanced(t, all...)
	producer := startProducer(t, ts, cfg)

	keys, perKey := 200, 10
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	require.NoError(t, produceRange(ctx, []*node{producer}, keys, 1, perKey/2, 8))
	require.NoError(t, producer.bus.AddEvent(ctx, channelEvent("poison", 1)))
	require.NoError(t, produceRange(ctx, []*node{producer}, keys, perKey/2+1, perKey, 8))

	deaths := 0
	for waiting := true; waiting; {
		select {
		case c := <-crashes:
			deaths++
			t.Logf("node %s crashed in the poison event's handler", c.node)
			require.LessOrEqual(t, deaths, cfg.MaxDeliver, "more node deaths than MaxDeliver")
			crashNode(nodes[c.node], c.released)
		case <-dl.got:
			waiting = false
		case <-time.After(60 * time.Second):
			t.Fatalf("no dead letter after %d node deaths", deaths)
		}
	}
	letters := dl.all()
	require.Len(t, letters, 1)
	assert.ErrorIs(t, letters[0].Err, natsbridge.ErrMaxDeliver)
	assert.Contains(t, letters[0].Err.Error(), "never finished")
	assert.Equal(t, cfg.MaxDeliver, letters[0].Attempts)
	assert.Equal(t, "poison", letters[0].Event.(*eventbus.ChannelContext).ChannelID)
	t.Logf("dead-lettered after %d node deaths: %v", deaths, letters[0].Err)

	waitUntil(t, 60*time.Second, "every other event handled", func() bool { return o.distinct() == keys*perKey })
	dups := o.checkAtLeastOnce(t, keys, perKey)
	t.Logf("%d events, %d handled twice", keys*perKey, dups)
	select {
	case c := <-crashes:
		t.Fatalf("node %s ran the poison event after its dead letter", c.node)
	default:
	}
}

// startProducer is a node that publishes bridged events and consumes
// none: its bridge is never started.
func startProducer(t testing.TB, ts *testServer, cfg natsbridge.Config) *node {
	t.Helper()
	bus, err := eventbus.New(eventbus.WithLogger(testLogger()))
	require.NoError(t, err)
	nc, js := ts.connect(t)
	cfg.Node, cfg.Logger = "producer", testLogger()
	br, err := natsbridge.New(bus, js, cfg)
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	n := &node{name: "producer", bus: bus, nc: nc, js: js, br: br}
	t.Cleanup(func() { n.close(t, 10*time.Second) })
	return n
}
