package natsbridge_test

import (
	"context"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	natsbridge "github.com/imbus/eventbus/bridge/nats"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// A server that shuts down answers every waiting pull request with "409
// Server Shutdown" and sleeps 50 ms before it stops its consumers: the
// client's fetch ends at once, but the request stays on the server, and
// whatever the consumer delivers to it in that time goes to an inbox the
// client no longer reads (the deliveries are counted, and kept as pending
// in the file store across the restart). The bridge rewinds the partition
// at such an error, and a delivery made after the rewind is the
// consumer's first again; the bridge did not check the first delivery it
// received after a rewind, so it missed the gap, handled later events
// ahead of the lost one, and the lost one came back only after AckWait
// (TestServerRestartLosesNothing saw event 11 of a key before 10 once).
// The tests below play that notice on a live server, so the window is
// not left to the race: a spy connection reads the bridge's pull
// requests, answers one of them with the server's 409 and keeps interest
// in its inbox, so the server goes on delivering to it after the
// bridge's fetch has ended.

// pullSpy watches the pull requests of partition 0's consumer.
type pullSpy struct {
	nc   *nats.Conn
	reqs chan *nats.Msg
}

func startPullSpy(t *testing.T, ts *testServer) *pullSpy {
	nc, _ := ts.connect(t)
	s := &pullSpy{nc: nc, reqs: make(chan *nats.Msg, 256)}
	_, err := nc.ChanSubscribe("$JS.API.CONSUMER.MSG.NEXT.EVENTS.EVENTS_p0", s.reqs)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	return s
}

// status returns the status of a header-only message ("" for a delivery).
func status(m *nats.Msg) string {
	if len(m.Data) > 0 || m.Header == nil {
		return ""
	}
	return m.Header.Get("Status")
}

// loseFirstEvent adds event 1 of key through n while the bridge's fetch
// has been ended by a shutdown notice and its request still waits on the
// server, so that the event goes to that request and never reaches the
// bridge. It returns once the request has expired on the server (no
// later event can go to it), or false when the window was missed (the
// request expired before the event was stored: the event went to the
// bridge as usual).
func (s *pullSpy) loseFirstEvent(t *testing.T, n *node, key string) bool {
	t.Helper()
	for len(s.reqs) > 0 { // a fresh request: most of its expiry ahead
		<-s.reqs
	}
	var req *nats.Msg
	select {
	case req = <-s.reqs:
	case <-time.After(10 * time.Second):
		t.Fatal("no pull request from the bridge within 10s")
	}
	inbox := make(chan *nats.Msg, 64)
	sub, err := s.nc.ChanSubscribe(req.Reply, inbox)
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	require.NoError(t, s.nc.Flush())

	resets := n.br.Stats().Resets
	notice := nats.NewMsg(req.Reply)
	notice.Header.Set("Status", "409")
	notice.Header.Set("Description", "Server Shutdown")
	require.NoError(t, s.nc.PublishMsg(notice))
	// The bridge's fetch ends with the notice and it rewinds the
	// partition; or the request expired first (its 408 came before the
	// notice: the fetch ended as usual).
	expired := false
	waitUntil(t, 10*time.Second, "the bridge to rewind after the notice, or the request to expire", func() bool {
		for len(inbox) > 0 {
			if status(<-inbox) == "408" {
				expired = true
			}
		}
		return expired || n.br.Stats().Resets > resets
	})
	if expired {
		return false
	}
	require.NoError(t, n.bus.AddEvent(context.Background(), channelEvent(key, 1)))
	for lost := false; ; {
		select {
		case m := <-inbox:
			switch status(m) {
			case "":
				lost = true // delivered to the abandoned request
			case "408":
				return lost // the request is gone from the server
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the abandoned pull request did not expire within 10s")
		}
	}
}

// handledRecorder registers a channel handler that reports every event
// it runs.
func handledRecorder(got chan<- *eventbus.ChannelContext) func(*eventbus.Bus) {
	return func(bus *eventbus.Bus) {
		_, err := eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			got <- ev
			return nil
		})
		if err != nil {
			panic(err)
		}
	}
}

// requireFirstBeforeSecond reads handled events until event 2 of key and
// fails if event 1 of key was not among them.
func requireFirstBeforeSecond(t *testing.T, got <-chan *eventbus.ChannelContext, key string) {
	t.Helper()
	first := false
	for {
		select {
		case ev := <-got:
			if ev.ChannelID != key {
				continue
			}
			switch ev.Messages[0].MessageSeq {
			case 1:
				first = true
			case 2:
				require.True(t, first, "key %s: event 2 handled before event 1 (event 1 went to the "+
					"abandoned pull request and was not rewound: it would come back after AckWait)", key)
				return
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("key %s: event 2 not handled within 15s", key)
		}
	}
}

// staleConfig: one partition, and a LeaseTTL that gives fetches the
// longest expiry (1 s), to leave room for the spy's steps.
func staleConfig() natsbridge.Config {
	cfg := bridged()
	cfg.Partitions = 1
	cfg.LeaseTTL = 4 * time.Second
	return cfg
}

// loseAFirstEvent has the spy lose the first event of a fresh key to an
// abandoned pull request (see loseFirstEvent), trying up to five keys, and
// returns that key.
func (s *pullSpy) loseAFirstEvent(t *testing.T, n *node) string {
	t.Helper()
	for attempt := 1; attempt <= 5; attempt++ {
		if k := keyName(attempt); s.loseFirstEvent(t, n, k) {
			return k
		}
	}
	t.Fatal("5 times the pull request expired before the event was stored: the machine is too slow for the window")
	return ""
}

// TestDeliveryToAbandonedFetchAfterRewindIsRewound: a fetch ended by the
// server's shutdown notice is rewound, and the event the server then
// delivers to the abandoned request is lost; the next event the bridge
// fetches shows the gap (its consumer sequence is not the first after a
// rewind), and the bridge rewinds again: event 1 is handled before 2,
// not after AckWait.
func TestDeliveryToAbandonedFetchAfterRewindIsRewound(t *testing.T) {
	ts := startServer(t)
	got := make(chan *eventbus.ChannelContext, 64)
	n := startNode(t, ts, "a", staleConfig(), handledRecorder(got))
	spy := startPullSpy(t, ts)
	key := spy.loseAFirstEvent(t, n)
	require.NoError(t, n.bus.AddEvent(context.Background(), channelEvent(key, 2)))
	requireFirstBeforeSecond(t, got, key)
	n.close(t, 10*time.Second)
}

// TestHandBackAfterLostDeliveryIsDirty: as above, but before the next
// event a node joins and the partition moves to it. The old owner never
// fetched after the lost delivery, so it cannot see a gap; it finds that
// the consumer delivered more than it received and hands the partition
// back dirty, so the new owner rewinds it: event 1 is handled before 2.
func TestHandBackAfterLostDeliveryIsDirty(t *testing.T) {
	ts := startServer(t)
	got := make(chan *eventbus.ChannelContext, 64)
	a := startNode(t, ts, "a", staleConfig(), handledRecorder(got))
	spy := startPullSpy(t, ts)
	key := spy.loseAFirstEvent(t, a)
	// Partition 0 hashes to b among {a, b} (rendezvous): a hands it over.
	b := startNode(t, ts, "b", staleConfig(), handledRecorder(got))
	waitUntil(t, 20*time.Second, "partition 0 handed over to b", func() bool {
		return a.br.Stats().Owned == 0 && b.br.Stats().Owned == 1
	})
	require.NoError(t, b.bus.AddEvent(context.Background(), channelEvent(key, 2)))
	requireFirstBeforeSecond(t, got, key)
	b.close(t, 10*time.Second)
	a.close(t, 10*time.Second)
}
