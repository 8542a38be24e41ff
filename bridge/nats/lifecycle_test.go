package natsbridge_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	natsbridge "github.com/imbus/eventbus/bridge/nats"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sink records dead letters.
type sink struct {
	mu      sync.Mutex
	letters []*eventbus.DeadLetter
	got     chan struct{}
}

func newSink() *sink { return &sink{got: make(chan struct{}, 100)} }

func (s *sink) DeadLetter(d *eventbus.DeadLetter) {
	s.mu.Lock()
	s.letters = append(s.letters, d)
	s.mu.Unlock()
	s.got <- struct{}{}
}

func (s *sink) all() []*eventbus.DeadLetter {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*eventbus.DeadLetter(nil), s.letters...)
}

// holding registers a channel handler that blocks on release for events
// of channel "hold" and records every event.
func holding(o *order, entered chan<- string, release <-chan struct{}) func(*eventbus.Bus) {
	return func(bus *eventbus.Bus) {
		_, err := eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			if ev.ChannelID == "hold" {
				entered <- ev.ChannelID
				<-release
			}
			o.record(ev.ChannelID, ev.Messages[0].MessageSeq)
			return nil
		})
		if err != nil {
			panic(err)
		}
	}
}

// TestMaxDeliverDeadLetters: an event still unfinished after MaxDeliver
// deliveries (its handler is stuck past AckWait each time) goes to the
// node's dead-letter sink with ErrMaxDeliver; the redeliveries never run
// the handler again.
func TestMaxDeliverDeadLetters(t *testing.T) {
	ts := startServer(t)
	o := newOrder(-1)
	entered, release := make(chan string, 10), make(chan struct{})
	dl := newSink()
	cfg := bridged()
	cfg.AckWait, cfg.MaxDeliver = 200*time.Millisecond, 2
	n := startNode(t, ts, "a", cfg, holding(o, entered, release), eventbus.WithDeadLetter(dl))
	require.NoError(t, n.bus.AddEvent(context.Background(), channelEvent("hold", 1)))
	<-entered
	waitFor(t, dl.got, 10*time.Second, "a dead letter")
	close(release)
	letters := dl.all()
	require.Len(t, letters, 1)
	assert.ErrorIs(t, letters[0].Err, natsbridge.ErrMaxDeliver)
	assert.Equal(t, 2, letters[0].Attempts)
	assert.Equal(t, "natsbridge", letters[0].Handler)
	n.close(t, 10*time.Second)
	assert.Len(t, entered, 0, "the handler ran once")
	st := n.br.Stats()
	assert.GreaterOrEqual(t, st.Duplicates, uint64(2))
	assert.Equal(t, uint64(1), st.DeadLettered)
}

// TestCloseWaitsForInFlight: Close stops fetching and returns only once
// the events in the bus have finished and been acked.
func TestCloseWaitsForInFlight(t *testing.T) {
	ts := startServer(t)
	o := newOrder(-1)
	entered, release := make(chan string, 10), make(chan struct{})
	n := startNode(t, ts, "a", bridged(), holding(o, entered, release))
	ctx := context.Background()
	// The other events are handled before the held one is added: a key
	// that happens to share the held key's shard would wait behind it
	// (see ARCHITECTURE.md, The engine: shards, run queue, workers), and
	// the test is about Close.
	for i := 1; i <= 5; i++ {
		require.NoError(t, n.bus.AddEvent(ctx, channelEvent("other", uint64(i))))
	}
	waitUntil(t, 10*time.Second, "the other events handled", func() bool { return o.distinct() == 5 })
	require.NoError(t, n.bus.AddEvent(ctx, channelEvent("hold", 1)))
	<-entered
	closed := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		closed <- n.br.Close(cctx)
	}()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with an event in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-closed)
	st := n.br.Stats()
	assert.Equal(t, uint64(6), st.Acked)
	assert.Zero(t, st.Owned)
	assert.Equal(t, st.Acquired, st.Released, "every partition handed back")
	n.close(t, 5*time.Second)
}

// TestCloseDeadlineRedelivers: a Close whose deadline passes leaves the
// unfinished events unacked (the bus reports them abandoned at its own
// Close deadline, and the bridge naks them); a node that takes the
// partition over handles them, in order.
func TestCloseDeadlineRedelivers(t *testing.T) {
	ts := startServer(t)
	o := newOrder(-1)
	entered, release := make(chan string, 10), make(chan struct{})
	a := startNode(t, ts, "a", bridged(), holding(o, entered, release),
		eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 1}))
	ctx := context.Background()
	require.NoError(t, a.bus.AddEvent(ctx, channelEvent("hold", 1)))
	for i := 2; i <= 4; i++ {
		require.NoError(t, a.bus.AddEvent(ctx, channelEvent("hold", uint64(i))))
	}
	<-entered
	// The three others must be in a's bus (delivered, queued behind the
	// held one) before the deadline, for the bus to give them up: under
	// load the bridge may still be fetching them when the first one runs.
	waitUntil(t, 10*time.Second, "the other three delivered to a's bus", func() bool {
		return a.bus.Stats().Channel.Added == 4
	})
	expired, cancel := context.WithCancel(ctx)
	cancel()
	err := a.br.Close(expired)
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "unfinished")
	var ce *eventbus.CloseError
	require.ErrorAs(t, a.bus.Close(expired), &ce)
	close(release) // the held handler returns; the bus gave its event up
	require.NoError(t, a.bus.Close(context.Background()))
	a.nc.Close()
	assert.NotZero(t, a.br.Stats().Naked)

	// Another node takes the partition over (after the lease TTL) and
	// handles the four events, in order.
	entered2 := make(chan string, 10)
	b := startNode(t, ts, "b", bridged(), holding(o, entered2, closedChan()))
	waitUntil(t, 15*time.Second, "events redelivered to b", func() bool { return o.distinct() == 4 })
	o.checkAtLeastOnce(t, 1, 4)
	assert.NotZero(t, b.br.Stats().Delivered)
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// TestBackPressureTinyWindow: with a window of one publish, a second add
// waits while the first store ack is outstanding, and gives up when its
// ctx ends (ErrQueueFull and ctx's error); once acks flow again adds
// succeed.
func TestBackPressureTinyWindow(t *testing.T) {
	ts := startServer(t)
	px := startProxy(t, ts.s.Addr().String())
	o := newOrder(-1)
	cfg := bridged()
	cfg.Window = 1
	n := startNodeAt(t, px.url(), "a", cfg, recordChannel(o))
	ctx := context.Background()
	require.NoError(t, n.bus.AddEvent(ctx, channelEvent("k", 1)))

	px.pause() // the server's replies stop reaching the node
	first := make(chan error, 1)
	go func() {
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		first <- n.bus.AddEvent(actx, channelEvent("k", 2))
	}()
	waitUntil(t, 5*time.Second, "the first add in flight", func() bool { return n.br.Stats().InFlight == 1 })
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	errWindow := n.bus.AddEvent(short, channelEvent("k2", 1))
	require.ErrorIs(t, errWindow, eventbus.ErrQueueFull)
	require.ErrorIs(t, errWindow, context.DeadlineExceeded)
	px.unpause()
	require.NoError(t, <-first)
	require.NoError(t, n.bus.AddEvent(ctx, channelEvent("k", 3)))
	waitUntil(t, 10*time.Second, "three events handled", func() bool { return o.distinct() >= 3 })
}

// TestConfigErrors: New checks Config and the bus before anything runs.
func TestConfigErrors(t *testing.T) {
	ts := startServer(t)
	_, js := ts.connect(t)
	newBus := func() *eventbus.Bus {
		b, err := eventbus.New()
		require.NoError(t, err)
		return b
	}
	types := []eventbus.EventType{eventbus.EventChannelDistribute}
	for name, cfg := range map[string]natsbridge.Config{
		"Stream":         {Types: types},
		"Stream ":        {Stream: "A.B", Types: types},
		"Types":          {Stream: "S"},
		"Partitions":     {Stream: "S", Types: types, Partitions: -1},
		"AckWait":        {Stream: "S", Types: types, AckWait: -time.Second},
		"LeaseTTL":       {Stream: "S", Types: types, LeaseTTL: time.Millisecond},
		"Window":         {Stream: "S", Types: types, Window: -3},
		"Node":           {Stream: "S", Types: types, Node: "a b"},
		"PublishTimeout": {Stream: "S", Types: types, PublishTimeout: time.Microsecond},
		"Retention":      {Stream: "S", Types: types, Retention: 7},
		"MaxAge":         {Stream: "S", Types: types, Retention: natsbridge.Limits, MaxAge: -time.Second},
		"MaxBytes":       {Stream: "S", Types: types, Retention: natsbridge.Limits, MaxBytes: -1},
	} {
		_, err := natsbridge.New(newBus(), js, cfg)
		require.ErrorIs(t, err, natsbridge.ErrConfig, name)
		assert.Contains(t, err.Error(), trimSpace(name), name)
	}
	_, err := natsbridge.New(newBus(), js, natsbridge.Config{Stream: "S", Types: []eventbus.EventType{eventbus.EventOnSend}})
	require.ErrorIs(t, err, natsbridge.ErrConfig)
	assert.Contains(t, err.Error(), "WithCodec")
	_, err = natsbridge.New(newBus(), js, natsbridge.Config{Stream: "S", Types: []eventbus.EventType{77}})
	require.ErrorIs(t, err, natsbridge.ErrConfig)
	_, err = natsbridge.New(nil, js, natsbridge.Config{Stream: "S", Types: types})
	require.ErrorIs(t, err, natsbridge.ErrConfig)

	started := newBus()
	require.NoError(t, started.Start())
	_, err = natsbridge.New(started, js, natsbridge.Config{Stream: "S", Types: types})
	require.ErrorIs(t, err, eventbus.ErrStarted)
	require.NoError(t, started.Close(context.Background()))
}

func trimSpace(s string) string {
	for len(s) > 0 && s[len(s)-1] == ' ' {
		s = s[:len(s)-1]
	}
	return s
}

// TestStartErrors: a stream that cannot be created, and one made with
// another partition count, fail Start with a clear error; Close after a
// failed Start is fine.
func TestStartErrors(t *testing.T) {
	ts := startServer(t)
	_, js := ts.connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Another stream already owns the subjects.
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"EVENTS.>"}})
	require.NoError(t, err)
	bus, err := eventbus.New()
	require.NoError(t, err)
	br, err := natsbridge.New(bus, js, natsbridge.Config{Stream: "EVENTS",
		Types: []eventbus.EventType{eventbus.EventChannelDistribute}, Logger: testLogger()})
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	err = br.Start(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "create stream EVENTS")
	require.NoError(t, br.Close(ctx))
	require.ErrorIs(t, br.Start(ctx), natsbridge.ErrClosed)
	require.NoError(t, bus.Close(ctx))

	// A stream made with 16 partitions, a node configured with 8.
	require.NoError(t, js.DeleteStream(ctx, "OTHER"))
	o := newOrder(-1)
	startNode(t, ts, "a", bridged(), recordChannel(o))
	bus2, err := eventbus.New()
	require.NoError(t, err)
	cfg := bridged()
	cfg.Partitions, cfg.Logger = 8, testLogger()
	br2, err := natsbridge.New(bus2, js, cfg)
	require.NoError(t, err)
	require.NoError(t, bus2.Start())
	require.ErrorIs(t, br2.Start(ctx), natsbridge.ErrPartitions)
	require.NoError(t, bus2.Close(ctx))
}
