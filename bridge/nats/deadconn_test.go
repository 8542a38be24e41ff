package natsbridge_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	natsbridge "github.com/imbus/eventbus/bridge/nats"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// closedErr: the errors an add of a dying node may end with once its
// connection is closed or its bus is closing.
func closedErr(err error) bool {
	return errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, eventbus.ErrClosed)
}

// TestDeadConnectionNeverHangsProducers: a node's connections are reset
// so that they cannot reconnect while its producers keep adding; then its
// connection is closed and its bus closed with an expired ctx, without a
// bridge Close, as a dying process does. Every adding goroutine returns
// soon after (well within PublishTimeout, which is long here, so it is the
// close that ends the waits), with an error that says the connection or
// the bus is closed; the node's bridge stops by itself; and the other
// nodes handle every event whose add returned nil, in order.
func TestDeadConnectionNeverHangsProducers(t *testing.T) {
	ts := startServer(t)
	px := startProxy(t, ts.s.Addr().String())
	o := newOrder(-1)
	var slow atomic.Bool
	cfg := bridged()
	cfg.PublishTimeout = 30 * time.Second
	a := startNodeAt(t, px.url(), "a", cfg, slowChannel(o, &slow))
	b := startNode(t, ts, "b", bridged(), slowChannel(o, &slow))
	c := startNode(t, ts, "c", bridged(), slowChannel(o, &slow))
	waitBalanced(t, a, b, c)
	slow.Store(true)

	// Node a's producers: each adds its keys' events in order, adding an
	// event again after an error, until an add says a is closed.
	const aProducers, aKeys = 16, 64
	var lastOK [aKeys]atomic.Uint64 // highest seq stored, per key of a
	var lastTried [aKeys]atomic.Uint64
	var producing sync.WaitGroup
	lastErr := make([]error, aProducers)
	for g := range aProducers {
		producing.Go(func() {
			for seq := uint64(1); ; seq++ {
				for k := g; k < aKeys; k += aProducers {
					for {
						lastTried[k].Store(seq)
						err := a.bus.AddEvent(context.Background(), channelEvent("a"+strconv.Itoa(k), seq))
						if err == nil {
							lastOK[k].Store(seq)
							break
						}
						if closedErr(err) {
							lastErr[g] = err
							return
						}
					}
				}
			}
		})
	}
	// The other nodes' producers run to the end.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	keys, perKey := 100, 20
	produced := make(chan error, 1)
	go func() { produced <- produce(ctx, []*node{b, c}, keys, perKey, 8) }()

	waitUntil(t, 30*time.Second, "node a consuming", func() bool { return a.br.Stats().Delivered > 100 })
	px.refuse()
	waitUntil(t, 10*time.Second, "node a reconnecting with adds waiting", func() bool {
		return a.nc.Status() == nats.RECONNECTING && a.br.Stats().InFlight > 0
	})
	closing := time.Now()
	a.once.Do(func() {}) // closed here, not by the cleanup: no bridge Close
	a.nc.Close()
	expired, cancelExpired := context.WithCancel(context.Background())
	cancelExpired()
	_ = a.bus.Close(expired)
	returned := make(chan struct{})
	go func() { producing.Wait(); close(returned) }()
	waitFor(t, returned, cfg.PublishTimeout, "node a's adds to return")
	took := time.Since(closing)
	t.Logf("every add of node a returned %v after its connection closed (PublishTimeout %v)", took, cfg.PublishTimeout)
	assert.Less(t, took, cfg.PublishTimeout/4, "ended by the close, not by PublishTimeout")
	for g, err := range lastErr {
		assert.True(t, closedErr(err), "producer %d: %v", g, err)
	}
	require.NoError(t, a.bus.Close(context.Background())) // waits for a's workers
	waitUntil(t, 10*time.Second, "node a's bridge stopped by itself", func() bool { return a.br.Stats().Owned == 0 })
	require.ErrorIs(t, a.bus.AddEvent(context.Background(), channelEvent("a0", 1<<40)), eventbus.ErrClosed)

	// The survivors lose nothing: every event stored is handled, in order.
	require.NoError(t, <-produced)
	waitUntil(t, 60*time.Second, "every stored event handled", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		for k := range aKeys {
			if len(uniq(o.seen["a"+strconv.Itoa(k)])) < int(lastOK[k].Load()) {
				return false
			}
		}
		for k := range keys {
			if len(uniq(o.seen[keyName(k)])) < perKey {
				return false
			}
		}
		return true
	})
	o.mu.Lock()
	defer o.mu.Unlock()
	for k := range aKeys {
		key := "a" + strconv.Itoa(k)
		s := uniq(o.seen[key])
		ok, tried := lastOK[k].Load(), lastTried[k].Load()
		require.GreaterOrEqual(t, uint64(len(s)), ok, "key %s: stored up to %d, handled %v", key, ok, s)
		for i, v := range s {
			require.Equal(t, uint64(i+1), v, "key %s: handled %v", key, s)
		}
		require.LessOrEqual(t, uint64(len(s)), tried, "key %s", key)
	}
	for k := range keys {
		require.Len(t, uniq(o.seen[keyName(k)]), perKey, "key %s", keyName(k))
	}
	checkOrderAmongDeliveries(t, o.seen)
}

// checkOrderAmongDeliveries: no event of a key ran before every earlier
// event of the key had run once. o.mu must be held.
func checkOrderAmongDeliveries(t testing.TB, seen map[string][]uint64) {
	t.Helper()
	for k, s := range seen {
		var high uint64
		for i, v := range s {
			require.LessOrEqual(t, v, high+1, "key %s: event %d before %d (position %d of %v)", k, v, high+1, i, s)
			high = max(high, v)
		}
	}
}

// TestPublishTimeoutWhileReconnecting: while the connection only
// reconnects (the server unreachable), an add waits PublishTimeout for its
// store ack, and an add behind it in a full window waits PublishTimeout
// for room; both then fail with ErrPublishTimeout wrapping
// nats.ErrDisconnected.
func TestPublishTimeoutWhileReconnecting(t *testing.T) {
	ts := startServer(t)
	px := startProxy(t, ts.s.Addr().String())
	o := newOrder(-1)
	cfg := bridged()
	// Long enough that the first add is seen waiting for its ack (InFlight
	// 1) before its timeout ends the wait, even when the test's goroutine
	// is descheduled for a while: at 500 ms that window was missed once.
	cfg.PublishTimeout, cfg.Window = 2*time.Second, 1
	n := startNodeAt(t, px.url(), "a", cfg, recordChannel(o))
	require.NoError(t, n.bus.AddEvent(context.Background(), channelEvent("k", 1)))
	px.refuse()
	waitUntil(t, 10*time.Second, "reconnecting", func() bool { return n.nc.Status() == nats.RECONNECTING })

	type result struct {
		err  error
		took time.Duration
	}
	results := make(chan result, 2)
	add := func(seq uint64) {
		start := time.Now()
		err := n.bus.AddEvent(context.Background(), channelEvent("k", seq))
		results <- result{err, time.Since(start)}
	}
	go add(2)
	waitUntil(t, 5*time.Second, "the first add waiting for its ack", func() bool { return n.br.Stats().InFlight == 1 })
	go add(3) // waits for room
	for range 2 {
		var r result
		select {
		case r = <-results:
		case <-time.After(10 * cfg.PublishTimeout):
			t.Fatalf("an add still waits after %v (PublishTimeout %v)", 10*cfg.PublishTimeout, cfg.PublishTimeout)
		}
		require.ErrorIs(t, r.err, natsbridge.ErrPublishTimeout)
		require.ErrorIs(t, r.err, nats.ErrDisconnected)
		assert.GreaterOrEqual(t, r.took, cfg.PublishTimeout-cfg.PublishTimeout/10, "%v", r.err)
		t.Logf("%v after %v", r.err, r.took)
	}
	n.nc.Close()
	err := n.bus.AddEvent(context.Background(), channelEvent("k", 4))
	require.ErrorIs(t, err, nats.ErrConnectionClosed, "a new add fails at once on a closed connection")
}

// TestCloseEndsWaitingOutsideAdds: adds from outside a handler that wait
// for their store ack (the server's replies held back) fail with
// eventbus.ErrClosed as soon as the bridge begins closing, and new ones
// fail at once; a follow-on add from a handler still publishes.
func TestCloseEndsWaitingOutsideAdds(t *testing.T) {
	ts := startServer(t)
	px := startProxy(t, ts.s.Addr().String())
	entered, release := make(chan string, 10), make(chan struct{})
	followOn := make(chan error, 1)
	o := newOrder(-1)
	n := startNodeAt(t, px.url(), "a", bridged(), func(bus *eventbus.Bus) {
		_, err := eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			o.record(ev.ChannelID, ev.Messages[0].MessageSeq)
			if ev.ChannelID == "hold" {
				entered <- ev.ChannelID
				<-release
				followOn <- bus.AddEvent(ctx, channelEvent("next", 1))
			}
			return nil
		})
		require.NoError(t, err)
	})
	require.NoError(t, n.bus.AddEvent(context.Background(), channelEvent("hold", 1)))
	<-entered
	px.pause()
	const waiting = 8
	errs := make(chan error, waiting)
	for i := range waiting {
		go func() { errs <- n.bus.AddEvent(context.Background(), channelEvent("w", uint64(i))) }()
	}
	waitUntil(t, 5*time.Second, "adds waiting for their acks", func() bool { return n.br.Stats().InFlight == waiting })
	closed := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		closed <- n.br.Close(cctx)
	}()
	for range waiting {
		select {
		case err := <-errs:
			require.ErrorIs(t, err, eventbus.ErrClosed)
			require.ErrorIs(t, err, natsbridge.ErrClosed)
		case <-time.After(natsbridge.DefaultPublishTimeout / 2):
			t.Fatal("an add still waits after the bridge began closing")
		}
	}
	require.ErrorIs(t, n.bus.AddEvent(context.Background(), channelEvent("w", 99)), eventbus.ErrClosed)
	px.unpause()
	close(release)
	require.NoError(t, <-followOn, "a follow-on add publishes while the bridge closes")
	require.NoError(t, <-closed)
	n.close(t, 10*time.Second)
}
