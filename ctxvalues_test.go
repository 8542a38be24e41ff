package eventbus_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type traceKey struct{}

type hopKey struct{}

// ctxSeen is what one handler of the flow saw in its context.
type ctxSeen struct {
	pool        eventbus.Pool
	trace, hop  any
	err         error
	done        bool
	hasDeadline bool
}

func seeCtx(ctx context.Context) ctxSeen {
	info, _ := eventbus.CallInfoFrom(ctx)
	s := ctxSeen{pool: info.Pool, trace: ctx.Value(traceKey{}), hop: ctx.Value(hopKey{}), err: ctx.Err()}
	select {
	case <-ctx.Done():
		s.done = true
	default:
	}
	_, s.hasDeadline = ctx.Deadline()
	return s
}

func TestHandlerCtxCarriesValuesNotCancellationThroughFlow(t *testing.T) {
	// OnSend -> ChannelDistribute -> PushOnline: every hop sees the producer's
	// trace id; none sees the producer's cancellation or deadline.
	b := newBus(t)
	cancelled := make(chan struct{})
	seen := make(chan ctxSeen, 3)
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		<-cancelled // run only once the producer's context is dead
		seen <- seeCtx(ctx)
		return b.AddEvent(ctx, &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute,
			ChannelID: "g1", ChannelType: 2, Messages: []*eventbus.Message{{ChannelID: "g1", ChannelType: 2}}})
	})
	mustRegister(t, b, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		seen <- seeCtx(ctx)
		// A context derived from the handler's still counts as a follow-on
		// add and brings its own values along.
		hop := context.WithValue(ctx, hopKey{}, "distributed")
		return b.AddEvent(hop, &eventbus.PushContext{EventType: eventbus.EventPushOnline,
			Message: ev.Messages[0], Subscribers: []string{"bob"}})
	})
	mustRegister(t, b, eventbus.EventPushOnline, func(ctx context.Context, ev *eventbus.PushContext) error {
		seen <- seeCtx(ctx)
		return nil
	})
	mustStart(t, b)

	base, cancelBase := context.WithTimeout(context.Background(), time.Hour)
	producer, cancel := context.WithCancel(context.WithValue(base, traceKey{}, "trace-42"))
	require.NoError(t, b.AddEvent(producer, userEvent(eventbus.EventOnSend, "alice")))
	cancel()
	cancelBase()
	require.Error(t, producer.Err())
	close(cancelled)

	want := []struct {
		pool eventbus.Pool
		hop  any
	}{{eventbus.PoolUser, nil}, {eventbus.PoolChannel, nil}, {eventbus.PoolPusher, "distributed"}}
	for _, w := range want {
		s := recvWithin(t, seen, 5*time.Second, string(w.pool)+" handler")
		assert.Equal(t, w.pool, s.pool)
		assert.Equal(t, "trace-42", s.trace, "%s handler sees the producer's value", w.pool)
		assert.Equal(t, w.hop, s.hop, "%s handler", w.pool)
		assert.NoError(t, s.err, "%s handler's ctx is not cancelled with the producer's", w.pool)
		assert.False(t, s.done, "%s handler's Done is open", w.pool)
		assert.False(t, s.hasDeadline, "%s handler has no producer deadline", w.pool)
	}
	idleWithin(t, b, 5*time.Second)
	st := b.Stats()
	assert.EqualValues(t, 1, st.User.Handled)
	assert.EqualValues(t, 1, st.Channel.Handled)
	assert.EqualValues(t, 1, st.Pusher.Handled)
}

func TestHandlerCtxValuesSurviveRetry(t *testing.T) {
	b := newBus(t, eventbus.WithRetry(fastPolicy(2)))
	seen := make(chan ctxSeen, 2)
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		seen <- seeCtx(ctx)
		if info, _ := eventbus.CallInfoFrom(ctx); info.Attempt == 1 {
			return errBoom
		}
		return nil
	})
	mustStart(t, b)
	producer, cancel := context.WithCancel(context.WithValue(context.Background(), traceKey{}, "trace-7"))
	require.NoError(t, b.AddEvent(producer, userEvent(eventbus.EventOnSend, "alice")))
	cancel()
	for i := range 2 {
		s := recvWithin(t, seen, 5*time.Second, "attempt")
		assert.Equal(t, "trace-7", s.trace, "attempt %d", i+1)
		assert.NoError(t, s.err, "attempt %d", i+1)
	}
}

func TestHandlerCtxFromBackgroundHasNoValues(t *testing.T) {
	b := newBus(t)
	seen := make(chan ctxSeen, 1)
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		seen <- seeCtx(ctx)
		return nil
	})
	mustStart(t, b)
	require.NoError(t, b.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "alice")))
	s := recvWithin(t, seen, 5*time.Second, "handler")
	assert.Nil(t, s.trace)
	assert.NoError(t, s.err)
	assert.Equal(t, eventbus.PoolUser, s.pool, "CallInfo is still there")
}

// TestKeptHandlerContextsStayTheirOwn keeps every handler context and reads
// them from other goroutines while later events are handled: contexts of
// one block are handed out while earlier ones are read, some with producer
// values and some without. Each kept context must still report its own
// call (the EventID the handler saw, the same for both handlers of an
// event), its own producer's values, and no longer count as running.
func TestKeptHandlerContextsStayTheirOwn(t *testing.T) {
	const events = 3000 // spans several context blocks
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 2}))
	type kept struct {
		ctx     context.Context
		ev      *eventbus.UserContext
		handler string
		index   int
		id      uint64 // the EventID the handler saw
	}
	keptCh := make(chan kept, 2*events)
	// A chain of two: contexts of one block are made for both handlers,
	// alternately.
	for i, name := range []string{"keeper-a", "keeper-b"} {
		mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
			info, _ := eventbus.CallInfoFrom(ctx)
			keptCh <- kept{ctx, ev, name, i, info.EventID}
			return nil
		}, eventbus.WithName(name))
	}
	mustStart(t, b)

	want := make(map[*eventbus.UserContext]any, events) // event -> trace value, nil for Background
	evs := make([]*eventbus.UserContext, events)
	for i := range evs {
		evs[i] = userEvent(eventbus.EventOnSend, fmt.Sprintf("u%d", i%7))
		if i%3 != 0 {
			want[evs[i]] = i
		} else {
			want[evs[i]] = nil
		}
	}
	var readers sync.WaitGroup
	var ids, idOf sync.Map // EventIDs seen; event -> its EventID
	var bad atomic.Int64
	check := func(k kept) {
		info, ok := eventbus.CallInfoFrom(k.ctx)
		if !ok || info.Handler != k.handler || info.Index != k.index || info.Pool != eventbus.PoolUser ||
			info.Type != eventbus.EventOnSend || info.Attempt != 1 || info.EventID != k.id ||
			k.ctx.Value(traceKey{}) != want[k.ev] {
			bad.Add(1)
		}
	}
	var mu sync.Mutex
	var all []kept
	for range 4 {
		readers.Go(func() {
			for k := range keptCh {
				for range 3 { // read while the worker carves the contexts after it
					check(k)
				}
				mu.Lock()
				all = append(all, k)
				mu.Unlock()
				if k.index == 0 {
					info, _ := eventbus.CallInfoFrom(k.ctx)
					if _, dup := ids.LoadOrStore(info.EventID, true); dup {
						bad.Add(1)
					}
				}
				if id, loaded := idOf.LoadOrStore(k.ev, k.id); loaded && id != k.id {
					bad.Add(1) // the chain's handlers saw different EventIDs
				}
			}
		})
	}
	for _, ev := range evs {
		ctx := context.Background()
		if v := want[ev]; v != nil {
			ctx = context.WithValue(ctx, traceKey{}, v)
		}
		require.NoError(t, b.AddEvent(ctx, ev))
	}
	idleWithin(t, b, 10*time.Second)
	close(keptCh)
	readers.Wait()
	// Unregistering changes nothing for contexts already made.
	require.True(t, b.UnregisterHandler(eventbus.EventOnSend, "keeper-a"))
	for _, k := range all {
		check(k)
	}
	assert.Len(t, all, 2*events)
	assert.Zero(t, bad.Load(), "kept contexts reported another call's info or values")
	n := 0
	ids.Range(func(any, any) bool { n++; return true })
	assert.Equal(t, events, n, "one unique EventID per event")
}

// TestEventIDUniqueInProcess: CallInfo.EventID is unique per accepted event
// in this process: the first events of two buses, each with one user worker,
// get different ids.
func TestEventIDUniqueInProcess(t *testing.T) {
	ids := make(chan uint64, 2)
	for range 2 {
		bus := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
		_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
			info, _ := eventbus.CallInfoFrom(ctx)
			ids <- info.EventID
			return nil
		})
		require.NoError(t, err)
		require.NoError(t, bus.Start())
		require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "u")))
	}
	a := recvWithin(t, ids, 5*time.Second, "first id")
	b := recvWithin(t, ids, 5*time.Second, "second id")
	assert.NotEqual(t, a, b, "two accepted events of one process share EventID %#x", a)
}

type hopTraceKey struct{}

type hopSpanKey struct{}

type missingKey struct{}

// valueCost returns the best of a few timings of n lookups of a key ctx
// does not hold: the lookup walks every context ctx keeps.
func valueCost(ctx context.Context) time.Duration {
	const n = 200
	best := time.Duration(1<<63 - 1)
	for range 5 {
		start := time.Now()
		for range n {
			if ctx.Value(missingKey{}) != nil {
				panic("unexpected value")
			}
		}
		best = min(best, time.Since(start))
	}
	return best / n
}

// hopChain runs a chain of follow-on OnSend events, each added by the
// previous one's handler with its own ctx, and measures the live heap and
// the cost of a missed ctx.Value at hop 10 and at the last one.
// check is called with every handler's ctx.
func hopChain(t *testing.T, hops int, opts []eventbus.Option, mws []eventbus.Middleware, check func(hop int, ctx context.Context)) (perHop float64, early, late time.Duration) {
	t.Helper()
	b := newBus(t, append([]eventbus.Option{eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1})}, opts...)...)
	const from = 500
	var heapFrom, heapTo uint64
	hop := 0
	done := make(chan struct{})
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		hop++
		check(hop, ctx)
		switch hop {
		case 10:
			early = valueCost(ctx)
		case from:
			heapFrom = liveHeap()
		case hops:
			heapTo, late = liveHeap(), valueCost(ctx)
			close(done)
			return nil
		}
		return b.AddEvent(ctx, ev)
	})
	b.Use(mws...)
	mustStart(t, b)
	producer := context.WithValue(context.Background(), hopTraceKey{}, "trace-1")
	require.NoError(t, b.AddEvent(producer, userEvent(eventbus.EventOnSend, "u")))
	recvWithin(t, done, 60*time.Second, "the last hop")
	idleWithin(t, b, 10*time.Second)
	return (float64(heapTo) - float64(heapFrom)) / float64(hops-from), early, late
}

// checkHopChain asserts that a chain of hops keeps nothing per hop and that
// ctx.Value does not get slower with depth.
func checkHopChain(t *testing.T, perHop float64, early, late time.Duration) {
	t.Helper()
	t.Logf("live heap per hop: %.1f B; missed ctx.Value: %v at hop 10, %v at the last hop", perHop, early, late)
	assert.Less(t, perHop, 48.0, "every hop keeps its parent's context alive")
	assert.Less(t, late, 20*early+time.Microsecond, "ctx.Value walks every hop's context")
}

// TestTimeoutHopKeepsNoParentContext: with HandlerTimeout, a follow-on event
// added with the handler's ctx takes the producer's values, not the timer
// context around the parent's call context: no hop pins the previous hop's
// call, its context block and what they hold, so the live heap does not grow
// per hop and a missed ctx.Value does not slow down with depth.
func TestTimeoutHopKeepsNoParentContext(t *testing.T) {
	const hops = 5000
	perHop, early, late := hopChain(t, hops,
		[]eventbus.Option{eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, HandlerTimeout: time.Minute})},
		nil, func(hop int, ctx context.Context) {
			if hop == 1 || hop == hops {
				_, ok := ctx.Deadline()
				assert.True(t, ok, "hop %d has its attempt's deadline", hop)
				assert.Equal(t, "trace-1", ctx.Value(hopTraceKey{}), "hop %d keeps the producer's values", hop)
			}
		})
	checkHopChain(t, perHop, early, late)
}

// TestMiddlewareValueHopKeepsNoParentContext: middleware that adds a
// value to each attempt's ctx (a tracing span) does not make a hop keep the
// previous one's call context either; the span still crosses the hop.
func TestMiddlewareValueHopKeepsNoParentContext(t *testing.T) {
	type span struct{ hop, parent int }
	for _, timeout := range []time.Duration{0, time.Minute} {
		t.Run("timeout="+timeout.String(), func(t *testing.T) {
			const hops = 5000
			n := 0
			mw := func(next eventbus.HandlerFunc) eventbus.HandlerFunc {
				return func(ctx context.Context, ev eventbus.Event) error {
					n++
					parent := 0
					if s, ok := ctx.Value(hopSpanKey{}).(span); ok {
						parent = s.hop
					}
					return next(context.WithValue(ctx, hopSpanKey{}, span{hop: n, parent: parent}), ev)
				}
			}
			bad := 0
			perHop, early, late := hopChain(t, hops, []eventbus.Option{
				eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, HandlerTimeout: timeout})},
				[]eventbus.Middleware{mw}, func(hop int, ctx context.Context) {
					s, _ := ctx.Value(hopSpanKey{}).(span)
					if s.hop != hop || s.parent != hop-1 {
						bad++
					}
					if hop == 1 || hop == hops {
						assert.Equal(t, "trace-1", ctx.Value(hopTraceKey{}), "hop %d keeps the producer's values", hop)
					}
				})
			assert.Zero(t, bad, "hops whose span or trace did not cross the hop")
			checkHopChain(t, perHop, early, late)
		})
	}
}
