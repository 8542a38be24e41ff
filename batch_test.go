package eventbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// batchGate holds the single channel worker inside a ChannelDistribute
// handler for channel "gate", so events added meanwhile sit side by side
// in the shard's FIFO.
type batchGate struct {
	entered, release chan struct{}
}

func newBatchGate(t testing.TB, b *eventbus.Bus, other eventbus.Handler[eventbus.ChannelContext]) *batchGate {
	g := &batchGate{entered: make(chan struct{}), release: make(chan struct{})}
	mustRegister(t, b, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		if ev.ChannelID != "gate" {
			if other != nil {
				return other(ctx, ev)
			}
			return nil
		}
		close(g.entered)
		<-g.release
		return nil
	}, eventbus.WithName("gate"))
	return g
}

// hold adds the gate event and waits until the worker is inside it.
func (g *batchGate) hold(t testing.TB, b *eventbus.Bus) {
	t.Helper()
	relAdd(t, b, &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "gate"})
	recvWithin(t, g.entered, 5*time.Second, "gate handler")
}

// callerEvent is a ChannelStore event whose one message sits in a caller
// array with spare capacity filled with sentinels, to catch any write.
type callerEvent struct {
	ev       *eventbus.ChannelContext
	msg      *eventbus.Message
	backing  []*eventbus.Message
	sentinel *eventbus.Message
}

func newCallerEvent(typ eventbus.EventType, channel string, seq uint64) *callerEvent {
	c := &callerEvent{msg: &eventbus.Message{ChannelID: channel, ChannelType: 2, MessageSeq: seq},
		sentinel: &eventbus.Message{ClientMsgNo: "sentinel"}}
	c.backing = []*eventbus.Message{c.msg, c.sentinel, c.sentinel, c.sentinel}
	c.ev = &eventbus.ChannelContext{EventType: typ, ChannelID: channel, ChannelType: 2, Messages: c.backing[:1]}
	return c
}

// untouched reports whether the bus (or a handler given a merged event)
// wrote to the caller's event or slice.
func (c *callerEvent) untouched() bool {
	return len(c.ev.Messages) == 1 && cap(c.ev.Messages) == 4 && &c.ev.Messages[0] == &c.backing[0] &&
		c.backing[0] == c.msg && c.backing[1] == c.sentinel && c.backing[2] == c.sentinel &&
		c.backing[3] == c.sentinel
}

// batchCall is one call of a ChannelStore handler.
type batchCall struct {
	channel string
	seqs    []uint64
	ev      *eventbus.ChannelContext
	attempt int
}

type batchLog struct {
	mu    sync.Mutex
	calls []batchCall
}

func (l *batchLog) record(ctx context.Context, ev *eventbus.ChannelContext) {
	info, _ := eventbus.CallInfoFrom(ctx)
	c := batchCall{channel: ev.ChannelID, ev: ev, attempt: info.Attempt}
	for _, m := range ev.Messages {
		c.seqs = append(c.seqs, m.MessageSeq)
	}
	l.mu.Lock()
	l.calls = append(l.calls, c)
	l.mu.Unlock()
}

func (l *batchLog) all() []batchCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]batchCall(nil), l.calls...)
}

type eventsObserver struct {
	mu     sync.Mutex
	events []int
}

func (o *eventsObserver) Observe(ob eventbus.Observation) {
	if ob.Type == eventbus.EventChannelStore && ob.Outcome == eventbus.OutcomeHandled {
		o.mu.Lock()
		o.events = append(o.events, ob.Events)
		o.mu.Unlock()
	}
}

func TestBatchMergesAdjacentEventsOfOneKey(t *testing.T) {
	obs := &eventsObserver{}
	b := newBus(t, eventbus.WithBatch(eventbus.EventChannelStore, 4), eventbus.WithObserver(obs),
		eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 1}))
	var log batchLog
	var order []string // handler calls on channel A, across both types
	var mu sync.Mutex
	gate := newBatchGate(t, b, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		mu.Lock()
		order = append(order, "D")
		mu.Unlock()
		return nil
	})
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		log.record(ctx, ev)
		if ev.ChannelID == "A" {
			mu.Lock()
			order = append(order, fmt.Sprint(len(ev.Messages)))
			mu.Unlock()
		}
		if len(ev.Messages) > 1 {
			// The merged event is the bus's: writing it must not reach callers.
			ev.Messages[0] = nil
			ev.Messages = append(ev.Messages, &eventbus.Message{ClientMsgNo: "handler"})
			ev.ChannelID = "scribbled"
		}
		return nil
	}, eventbus.WithName("store"))
	mustStart(t, b)

	gate.hold(t, b)
	// A1 A2 B1 A3 D(A) A4 A5 A6 A7 A8 A9, all queued behind the gate.
	var evs []*callerEvent
	add := func(c *callerEvent) *callerEvent {
		evs = append(evs, c)
		relAdd(t, b, c.ev)
		return c
	}
	var a []*callerEvent
	a = append(a, add(newCallerEvent(eventbus.EventChannelStore, "A", 1)))
	a = append(a, add(newCallerEvent(eventbus.EventChannelStore, "A", 2)))
	bEv := add(newCallerEvent(eventbus.EventChannelStore, "B", 1))
	a = append(a, add(newCallerEvent(eventbus.EventChannelStore, "A", 3)))
	add(newCallerEvent(eventbus.EventChannelDistribute, "A", 100))
	for seq := uint64(4); seq <= 9; seq++ {
		a = append(a, add(newCallerEvent(eventbus.EventChannelStore, "A", seq)))
	}
	close(gate.release)
	idleWithin(t, b, 5*time.Second)

	calls := log.all()
	var got [][]uint64
	for _, c := range calls {
		if c.channel != "B" {
			got = append(got, c.seqs)
		}
	}
	assert.Equal(t, [][]uint64{{1, 2, 3}, {4, 5, 6, 7}, {8, 9}}, got,
		"A's adjacent events merged up to 4, never across the Distribute event")
	mu.Lock()
	assert.Equal(t, []string{"3", "D", "4", "2"}, order, "key order holds across types")
	mu.Unlock()

	for _, c := range calls {
		switch {
		case c.channel == "B":
			assert.Same(t, bEv.ev, c.ev, "a lone event is passed as added")
		case len(c.seqs) > 1:
			for _, orig := range evs {
				assert.NotSame(t, orig.ev, c.ev, "a batch is a bus-owned event")
			}
		}
	}
	for _, c := range evs {
		assert.True(t, c.untouched(), "caller's event %d of %s was written: %+v", c.msg.MessageSeq, c.ev.ChannelID, c.ev)
		assert.Contains(t, []string{"A", "B"}, c.ev.ChannelID)
	}
	assert.Equal(t, "A", a[0].ev.ChannelID)

	s := b.Stats().Channel
	assert.EqualValues(t, 12, s.Added, "gate + 11 original events")
	assert.EqualValues(t, 12, s.Handled, "Stats count original events")
	atRest(t, "channel", s)
	obs.mu.Lock()
	assert.ElementsMatch(t, []int{3, 1, 4, 2}, obs.events, "observations count the events of each batch")
	obs.mu.Unlock()
}

func TestBatchRetriedAsUnitAndDeadLettersOriginals(t *testing.T) {
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithBatch(eventbus.EventChannelStore, 8), eventbus.WithDeadLetter(sink),
		eventbus.WithRetry(fastPolicy(2)), eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 1}))
	var log batchLog
	gate := newBatchGate(t, b, nil)
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		log.record(ctx, ev)
		info, _ := eventbus.CallInfoFrom(ctx)
		if ev.ChannelID == "broken" || info.Attempt == 1 {
			return errBoom
		}
		return nil
	}, eventbus.WithName("store"))
	mustStart(t, b)

	gate.hold(t, b)
	var broken []*eventbus.ChannelContext
	for seq := uint64(1); seq <= 3; seq++ {
		c := newCallerEvent(eventbus.EventChannelStore, "broken", seq)
		broken = append(broken, c.ev)
		relAdd(t, b, c.ev)
	}
	for seq := uint64(1); seq <= 2; seq++ {
		c := newCallerEvent(eventbus.EventChannelStore, "flaky", seq)
		relAdd(t, b, c.ev)
	}
	close(gate.release)
	idleWithin(t, b, 5*time.Second)

	byChannel := map[string][]batchCall{}
	for _, c := range log.all() {
		byChannel[c.channel] = append(byChannel[c.channel], c)
	}
	for name, n := range map[string]int{"broken": 3, "flaky": 2} {
		calls := byChannel[name]
		require.Len(t, calls, 2, "%s: two attempts of one unit", name)
		for i, c := range calls {
			assert.Len(t, c.seqs, n, "%s attempt %d carries the whole batch", name, i+1)
			assert.Equal(t, i+1, c.attempt)
		}
		assert.Same(t, calls[0].ev, calls[1].ev, "%s: the retry runs the same batch", name)
	}

	letters := sink.all()
	require.Len(t, letters, 3, "one dead letter per original event")
	for i, d := range letters {
		assert.Same(t, broken[i], d.Event, "letter %d is the original event, in order", i)
		assert.ErrorIs(t, d.Err, errBoom)
		assert.Equal(t, 2, d.Attempts)
		assert.Equal(t, "store", d.Handler)
	}
	s := b.Stats().Channel
	assert.EqualValues(t, 6, s.Added)
	assert.EqualValues(t, 3, s.Handled, "gate + the two flaky originals")
	assert.EqualValues(t, 3, s.DeadLettered)
	assert.EqualValues(t, 3*2+2*1, s.Failed, "failed attempts count original events: broken 3×2, flaky 2×1")
	assert.EqualValues(t, 3+2, s.Retried, "retries count original events")
	atRest(t, "channel", s)
}

func TestBatchOnlyForChannelTypes(t *testing.T) {
	for _, typ := range []eventbus.EventType{eventbus.EventOnSend, eventbus.EventPushOnline, eventbus.EventUnknown} {
		_, err := eventbus.New(eventbus.WithBatch(typ, 4))
		assert.ErrorIs(t, err, eventbus.ErrWrongPool, "WithBatch(%v)", typ)
	}
	_, err := eventbus.New(eventbus.WithBatch(eventbus.EventChannelStore, 0))
	assert.Error(t, err, "n must be at least 1")

	// A type defined later is checked by Start.
	b := newBus(t, eventbus.WithBatch(40, 4))
	require.NoError(t, b.Define(40, eventbus.PoolUser, "Typing"))
	assert.ErrorIs(t, b.Start(), eventbus.ErrWrongPool)

	ok := newBus(t, eventbus.WithBatch(41, 4))
	require.NoError(t, ok.Define(41, eventbus.PoolChannel, "Archive"))
	assert.NoError(t, ok.Start())
}

// TestSinkGoexitDuringBatchDeadLetterLosesNone: a sink calling
// Goexit on the first dead letter of a failed batch still receives every
// original event of the batch.
func TestSinkGoexitDuringBatchDeadLetterLosesNone(t *testing.T) {
	const n = 5
	sink := &goexitSink{}
	b := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithBatch(eventbus.EventChannelStore, n),
		eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 1}))
	entered, release := make(chan struct{}), make(chan struct{})
	mustRegister(t, b, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		close(entered)
		<-release
		return nil
	})
	var batches atomic.Int64
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		batches.Add(1)
		return eventbus.Permanent(fmt.Errorf("store down (%d messages)", len(ev.Messages)))
	})
	mustStart(t, b)
	// Hold the only worker on the same channel, so the stores queue up
	// behind it and are merged into one batch.
	relAdd(t, b, &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "g", ChannelType: 2})
	recvWithin(t, entered, 5*time.Second, "the holding handler")
	for i := range n {
		relAdd(t, b, &eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: "g", ChannelType: 2,
			Messages: []*eventbus.Message{{MessageSeq: uint64(i)}}})
	}
	close(release)
	idleWithin(t, b, 5*time.Second)
	st := b.Stats().Channel
	assert.Equal(t, int64(1), batches.Load(), "the five stores ran as one batch")
	assert.Equal(t, int64(n), sink.n.Load(), "the sink got every original event")
	assert.Equal(t, uint64(n), st.DeadLettered)
	atRest(t, "channel", st)
}

// TestBatchingPoolKeepsEachChannelsOrderAcrossTypes hammers a channel pool
// that batches one type (ChannelStore) while another (ChannelDistribute)
// runs unmerged, from many producers at once: each channel's events, of
// both types, interleaved at random, some failing once and retried, must
// all be handled exactly once and in the order they were added, merged
// batches included.
func TestBatchingPoolKeepsEachChannelsOrderAcrossTypes(t *testing.T) {
	const producers, channelsEach, perChannel = 8, 4, 150
	b := newBus(t, eventbus.WithBatch(eventbus.EventChannelStore, 8),
		eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 4, Shards: 16}),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, Jitter: -1}))
	var mu sync.Mutex
	seen := map[string][]uint64{}
	var merged atomic.Int64
	handle := func(failEvery uint64) eventbus.Handler[eventbus.ChannelContext] {
		return func(ctx context.Context, ev *eventbus.ChannelContext) error {
			info, _ := eventbus.CallInfoFrom(ctx)
			for _, m := range ev.Messages {
				if info.Attempt == 1 && m.MessageSeq%failEvery == 0 {
					return fmt.Errorf("seq %d fails once", m.MessageSeq)
				}
			}
			if len(ev.Messages) > 1 {
				merged.Add(1)
			}
			mu.Lock()
			for _, m := range ev.Messages {
				seen[ev.ChannelID] = append(seen[ev.ChannelID], m.MessageSeq)
			}
			mu.Unlock()
			return nil
		}
	}
	mustRegister(t, b, eventbus.EventChannelStore, handle(17))
	mustRegister(t, b, eventbus.EventChannelDistribute, handle(13))
	mustStart(t, b)

	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p), 1))
			next := make([]uint64, channelsEach)
			for range channelsEach * perChannel {
				c := rng.IntN(channelsEach)
				for next[c] == perChannel {
					c = (c + 1) % channelsEach
				}
				next[c]++
				id := fmt.Sprintf("p%d-c%d", p, c)
				typ := eventbus.EventChannelStore
				if rng.IntN(3) == 0 {
					typ = eventbus.EventChannelDistribute
				}
				msg := &eventbus.Message{ChannelID: id, ChannelType: 2, MessageSeq: next[c]}
				ev := &eventbus.ChannelContext{EventType: typ, ChannelID: id, ChannelType: 2, Messages: []*eventbus.Message{msg}}
				if err := b.AddEvent(context.Background(), ev); err != nil {
					t.Errorf("add %s/%d: %v", id, next[c], err)
					return
				}
			}
		})
	}
	wg.Wait()
	idleWithin(t, b, 30*time.Second)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, producers*channelsEach)
	for id, seqs := range seen {
		require.Len(t, seqs, perChannel, "channel %s: every event handled once", id)
		for i, s := range seqs {
			require.Equal(t, uint64(i+1), s, "channel %s: handled out of order: %v", id, seqs)
		}
	}
	t.Logf("merged calls: %d", merged.Load())
	assert.Positive(t, merged.Load(), "some ChannelStore events were merged")
}
