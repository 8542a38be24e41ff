package natsbridge_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	natsbridge "github.com/imbus/eventbus/bridge/nats"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// serverGoroutines are goroutines nats-server leaves behind after
// Shutdown and WaitForShutdown returned (timers of its own, not ours).
func serverGoroutines() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	}
}

// testServer is an embedded nats-server with JetStream on a directory.
type testServer struct {
	t    testing.TB
	dir  string
	port int
	s    *server.Server
}

func startServer(t testing.TB) *testServer {
	ts := &testServer{t: t, dir: t.TempDir(), port: -1}
	ts.start()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) start() {
	opts := &server.Options{Host: "127.0.0.1", Port: ts.port, JetStream: true, StoreDir: ts.dir,
		NoLog: true, NoSigs: true, MaxPayload: 8 << 20}
	s, err := server.NewServer(opts)
	require.NoError(ts.t, err)
	s.Start()
	require.True(ts.t, s.ReadyForConnections(10*time.Second), "nats-server not ready")
	ts.port = s.Addr().(*net.TCPAddr).Port
	ts.s = s
}

// stop shuts the server down and waits for it (idempotent).
func (ts *testServer) stop() {
	if ts.s == nil {
		return
	}
	ts.s.Shutdown()
	ts.s.WaitForShutdown()
	ts.s = nil
}

func (ts *testServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(ts.port) }

// connect opens a client connection that reconnects for ever.
func (ts *testServer) connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	return connect(t, ts.url())
}

func connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

// testLogger discards logs unless -v asks for them... they are discarded:
// tests assert on behaviour, and the logs of cut connections are noisy.
func testLogger() *slog.Logger {
	if os.Getenv("NATSBRIDGE_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// node is one process of the cluster: a bus, its connection, its bridge.
type node struct {
	name string
	bus  *eventbus.Bus
	nc   *nats.Conn
	js   jetstream.JetStream
	br   *natsbridge.Bridge
	once sync.Once
}

// startNode makes a bus with opts, lets setup register handlers, then
// connects, bridges cfg and starts both.
func startNode(t testing.TB, ts *testServer, name string, cfg natsbridge.Config, setup func(*eventbus.Bus), opts ...eventbus.Option) *node {
	t.Helper()
	return startNodeAt(t, ts.url(), name, cfg, setup, opts...)
}

// startNodeAt is startNode connecting to url (a proxy, say).
func startNodeAt(t testing.TB, url string, name string, cfg natsbridge.Config, setup func(*eventbus.Bus), opts ...eventbus.Option) *node {
	t.Helper()
	bus, err := eventbus.New(append([]eventbus.Option{eventbus.WithLogger(testLogger())}, opts...)...)
	require.NoError(t, err)
	setup(bus)
	nc, js := connect(t, url)
	cfg.Node = name
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	br, err := natsbridge.New(bus, js, cfg)
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, br.Start(ctx))
	n := &node{name: name, bus: bus, nc: nc, js: js, br: br}
	t.Cleanup(func() { n.close(t, 20*time.Second) })
	return n
}

// close closes bridge, bus and connection, in that order (once).
func (n *node) close(t testing.TB, within time.Duration) {
	n.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		if err := n.br.Close(ctx); err != nil {
			t.Errorf("%s: bridge close: %v", n.name, err)
		}
		if err := n.bus.Close(ctx); err != nil {
			t.Errorf("%s: bus close: %v", n.name, err)
		}
		n.nc.Close()
	})
}

// kill drops the node as a crash would, as far as the cluster can tell:
// its connection closes first (no ack, no lease renewal, no hand-back),
// then its bus and bridge are stopped so the test leaks nothing.
func (n *node) kill(t testing.TB) {
	n.once.Do(func() {
		n.nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = n.br.Close(ctx)
		_ = n.bus.Close(ctx)
	})
}

// order records, per key, the sequence numbers handled, across nodes.
type order struct {
	mu    sync.Mutex
	seen  map[string][]uint64
	total int
	want  int
	done  chan struct{}
}

func newOrder(want int) *order {
	return &order{seen: map[string][]uint64{}, want: want, done: make(chan struct{})}
}

func (o *order) record(key string, seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen[key] = append(o.seen[key], seq)
	o.total++
	if o.total == o.want { // want -1: never
		close(o.done)
	}
}

// distinct counts distinct (key, seq) pairs handled.
func (o *order) distinct() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, s := range o.seen {
		n += len(uniq(s))
	}
	return n
}

func uniq(s []uint64) []uint64 {
	c := slices.Clone(s)
	slices.Sort(c)
	return slices.Compact(c)
}

// checkExactlyOnce: every key saw 1..perKey, each once, in order.
func (o *order) checkExactlyOnce(t testing.TB, keys, perKey int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	require.Len(t, o.seen, keys)
	for k, s := range o.seen {
		require.Len(t, s, perKey, "key %s: handled %d times for %d events", k, len(s), perKey)
		for i, v := range s {
			require.Equal(t, uint64(i+1), v, "key %s: position %d", k, i)
		}
	}
}

// checkAtLeastOnce: every key saw 1..perKey at least once, and no event
// ran before all of its key's earlier events had run at least once
// (a redelivery may go back, never skip ahead).
func (o *order) checkAtLeastOnce(t testing.TB, keys, perKey int) (dups int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	require.Len(t, o.seen, keys)
	for k, s := range o.seen {
		var high uint64
		for i, v := range s {
			require.LessOrEqual(t, v, high+1, "key %s: event %d handled before event %d (position %d of %v)",
				k, v, high+1, i, s)
			high = max(high, v)
		}
		require.Equal(t, uint64(perKey), high, "key %s", k)
		require.Len(t, uniq(s), perKey, "key %s", k)
		dups += len(s) - perKey
	}
	return dups
}

// keyName names key i.
func keyName(i int) string { return "k" + strconv.Itoa(i) }

// channelEvent is event seq of key: a ChannelDistribute for channel key.
func channelEvent(key string, seq uint64) *eventbus.ChannelContext {
	return &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: key, ChannelType: 2,
		Messages: []*eventbus.Message{{MessageSeq: seq, ChannelID: key, ChannelType: 2}}}
}

// recordChannel registers a handler that records channel events in o.
func recordChannel(o *order) func(*eventbus.Bus) {
	return func(bus *eventbus.Bus) {
		_, err := eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			o.record(ev.ChannelID, ev.Messages[0].MessageSeq)
			return nil
		})
		if err != nil {
			panic(err)
		}
	}
}

// produce adds perKey events to each of keys keys from producers
// goroutines, each key's events in order from one goroutine, through the
// given nodes in turn. It returns the first error.
func produce(ctx context.Context, nodes []*node, keys, perKey, producers int) error {
	return produceWith(ctx, nodes, keys, 1, perKey, producers, false)
}

// waitFor waits for ch, failing the test after d.
func waitFor(t testing.TB, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// waitUntil polls cond until it holds, failing after d. Used only where
// the state belongs to other processes' worth of machinery (leases,
// redeliveries) that signal nothing a test can wait on.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// waitBalanced waits until the nodes own all partitions between them and
// each owns some.
func waitBalanced(t testing.TB, nodes ...*node) {
	t.Helper()
	waitUntil(t, 20*time.Second, "partitions shared", func() bool {
		sum := 0
		for _, n := range nodes {
			o := n.br.Stats().Owned
			if o == 0 {
				return false
			}
			sum += o
		}
		return sum == natsbridge.DefaultPartitions
	})
}

// produceRange is produce for sequence numbers from..to of every key.
func produceRange(ctx context.Context, nodes []*node, keys, from, to, producers int) error {
	return produceWith(ctx, nodes, keys, from, to, producers, false)
}

// produceRetrying is produce that adds an event again when its add fails
// (a connection cut makes the add fail; the event may still be stored,
// then it is there twice: at-least-once).
func produceRetrying(ctx context.Context, nodes []*node, keys, perKey, producers int) error {
	return produceWith(ctx, nodes, keys, 1, perKey, producers, true)
}

func produceRetryingRange(ctx context.Context, nodes []*node, keys, from, to, producers int) error {
	return produceWith(ctx, nodes, keys, from, to, producers, true)
}

func produceWith(ctx context.Context, nodes []*node, keys, from, to, producers int, retry bool) error {
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for g := range producers {
		wg.Go(func() {
			n := nodes[g%len(nodes)]
			for seq := from; seq <= to; seq++ {
				for k := g; k < keys; k += producers {
					for {
						// Without retries an add must not fail: it is
						// bounded by ctx and PublishTimeout only. With
						// retries (cuts), a short wait brings a cut add
						// back sooner.
						actx, cancel := ctx, context.CancelFunc(func() {})
						if retry {
							actx, cancel = context.WithTimeout(ctx, 2*time.Second)
						}
						err := n.bus.AddEvent(actx, channelEvent(keyName(k), uint64(seq)))
						cancel()
						if err == nil {
							break
						}
						if !retry || ctx.Err() != nil {
							errs <- fmt.Errorf("producer %d: key %d seq %d: %w", g, k, seq, err)
							return
						}
						t := time.NewTimer(20 * time.Millisecond) // the connection is coming back
						select {
						case <-t.C:
						case <-ctx.Done():
						}
						t.Stop()
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}
