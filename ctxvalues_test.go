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
// call, its own producer's values, and no longer count as running.
func TestKeptHandlerContextsStayTheirOwn(t *testing.T) {
	const events = 3000 // spans several context blocks
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 2}))
	type kept struct {
		ctx     context.Context
		ev      *eventbus.UserContext
		handler string
		index   int
	}
	keptCh := make(chan kept, 2*events)
	// A chain of two: contexts of one block are made for both handlers,
	// alternately.
	for i, name := range []string{"keeper-a", "keeper-b"} {
		mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
			keptCh <- kept{ctx, ev, name, i}
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
	var ids sync.Map
	var bad atomic.Int64
	check := func(k kept) {
		info, ok := eventbus.CallInfoFrom(k.ctx)
		if !ok || info.Handler != k.handler || info.Index != k.index || info.Pool != eventbus.PoolUser ||
			info.Type != eventbus.EventOnSend || info.Attempt != 1 ||
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
