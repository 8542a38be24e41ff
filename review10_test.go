package eventbus_test

// Regression tests for issue #10 (outside review) items 1, 7, 8, 9 and 10,
// and the zero-value Bus of issue #13. Each test is named after its item.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type review1Trace struct{}

type review1Span struct{}

type review1Missing struct{}

// liveHeap returns the live heap after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// valueCost returns the best of a few timings of n lookups of a key ctx
// does not hold: the lookup walks every context ctx keeps.
func valueCost(ctx context.Context) time.Duration {
	const n = 200
	best := time.Duration(1<<63 - 1)
	for range 5 {
		start := time.Now()
		for range n {
			if ctx.Value(review1Missing{}) != nil {
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
	producer := context.WithValue(context.Background(), review1Trace{}, "trace-1")
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

// TestReview1_TimeoutHopKeepsNoParent: with HandlerTimeout, a follow-on
// event added with the handler's ctx must take the producer's values, not
// the timer context around the parent's call context (which pins that call,
// its context block and everything they hold, hop after hop).
func TestReview1_TimeoutHopKeepsNoParent(t *testing.T) {
	const hops = 5000
	perHop, early, late := hopChain(t, hops,
		[]eventbus.Option{eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, HandlerTimeout: time.Minute})},
		nil, func(hop int, ctx context.Context) {
			if hop == 1 || hop == hops {
				_, ok := ctx.Deadline()
				assert.True(t, ok, "hop %d has its attempt's deadline", hop)
				assert.Equal(t, "trace-1", ctx.Value(review1Trace{}), "hop %d keeps the producer's values", hop)
			}
		})
	checkHopChain(t, perHop, early, late)
}

// TestReview1_MiddlewareValueHopKeepsNoParent: middleware that adds a value
// to each attempt's ctx (a tracing span) must not make each hop keep the
// previous one's call context either; the span still crosses the hop.
func TestReview1_MiddlewareValueHopKeepsNoParent(t *testing.T) {
	type span struct{ hop, parent int }
	for _, timeout := range []time.Duration{0, time.Minute} {
		t.Run("timeout="+timeout.String(), func(t *testing.T) {
			const hops = 5000
			n := 0
			mw := func(next eventbus.HandlerFunc) eventbus.HandlerFunc {
				return func(ctx context.Context, ev eventbus.Event) error {
					n++
					parent := 0
					if s, ok := ctx.Value(review1Span{}).(span); ok {
						parent = s.hop
					}
					return next(context.WithValue(ctx, review1Span{}, span{hop: n, parent: parent}), ev)
				}
			}
			bad := 0
			perHop, early, late := hopChain(t, hops, []eventbus.Option{
				eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, HandlerTimeout: timeout})},
				[]eventbus.Middleware{mw}, func(hop int, ctx context.Context) {
					s, _ := ctx.Value(review1Span{}).(span)
					if s.hop != hop || s.parent != hop-1 {
						bad++
					}
					if hop == 1 || hop == hops {
						assert.Equal(t, "trace-1", ctx.Value(review1Trace{}), "hop %d keeps the producer's values", hop)
					}
				})
			assert.Zero(t, bad, "hops whose span or trace did not cross the hop")
			checkHopChain(t, perHop, early, late)
		})
	}
}

// TestReview1_FollowOnAddAllocatesNothing: AddEvent allocates nothing when
// ctx is the context a handler was called with, with a HandlerTimeout too.
func TestReview1_FollowOnAddAllocatesNothing(t *testing.T) {
	for _, timeout := range []time.Duration{0, time.Minute} {
		t.Run("timeout="+timeout.String(), func(t *testing.T) {
			b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, QueueSize: 4096, HandlerTimeout: timeout}))
			child := userEvent(eventbus.EventRecvAck, "u")
			mustRegister(t, b, eventbus.EventRecvAck, func(context.Context, *eventbus.UserContext) error { return nil })
			allocs := make(chan float64, 1)
			mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
				allocs <- testing.AllocsPerRun(100, func() {
					if err := b.AddEvent(ctx, child); err != nil {
						panic(err)
					}
				})
				return nil
			})
			mustStart(t, b)
			producer := context.WithValue(context.Background(), review1Trace{}, "trace-1")
			require.NoError(t, b.AddEvent(producer, userEvent(eventbus.EventOnSend, "u")))
			assert.Zero(t, recvWithin(t, allocs, 10*time.Second, "the handler"), "allocations per follow-on add")
			idleWithin(t, b, 10*time.Second)
		})
	}
}

// TestReview7_MiddlewareConstructorMayCallBus: middleware constructors are
// user code and may call the bus (to label a metric, say); they must not
// run under the bus's lock, where TypeName, Register or Define deadlock.
func TestReview7_MiddlewareConstructorMayCallBus(t *testing.T) {
	b, err := eventbus.New(eventbus.WithLogger(quiet))
	require.NoError(t, err)
	const custom eventbus.EventType = 40
	ran := make(chan string, 16)
	var labels []string
	first := true
	mw := func(next eventbus.HandlerFunc) eventbus.HandlerFunc {
		labels = append(labels, b.TypeName(eventbus.EventOnSend))
		if first {
			first = false
			if err := b.Define(custom, eventbus.PoolUser, "custom"); err != nil {
				panic(err)
			}
			if _, err := eventbus.Register(b, eventbus.EventRecvAck, func(context.Context, *eventbus.UserContext) error { return nil }); err != nil {
				panic(err)
			}
		}
		return func(ctx context.Context, ev eventbus.Event) error {
			ran <- b.TypeName(ev.Type())
			return next(ctx, ev)
		}
	}
	done := make(chan error, 1)
	go func() {
		if _, err := eventbus.Register(b, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil }); err != nil {
			done <- err
			return
		}
		b.Use(mw) // constructs for the OnSend handler, which registers a RecvAck one
		_, err := eventbus.Register(b, custom, func(context.Context, *eventbus.UserContext) error { return nil })
		done <- err
	}()
	require.NoError(t, recvWithin(t, done, 5*time.Second, "Use and Register with a constructor that calls the bus"))
	t.Cleanup(func() { _ = b.Close(deadline(t, 10*time.Second)) })
	assert.NotEmpty(t, labels)
	mustStart(t, b)
	for _, typ := range []eventbus.EventType{eventbus.EventOnSend, eventbus.EventRecvAck, custom} {
		require.NoError(t, b.AddEvent(context.Background(), userEvent(typ, "u")))
		assert.Equal(t, b.TypeName(typ), recvWithin(t, ran, 5*time.Second, "the middleware of "+b.TypeName(typ)))
	}
}

// TestReview7_UseAndRegisterConcurrently: with constructors run outside
// the lock, handlers registered while Use runs still get every middleware.
func TestReview7_UseAndRegisterConcurrently(t *testing.T) {
	const n = 4
	b := newBus(t)
	var calls [n]atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			b.Use(func(next eventbus.HandlerFunc) eventbus.HandlerFunc {
				_ = b.TypeName(eventbus.EventOnSend)
				return func(ctx context.Context, ev eventbus.Event) error {
					calls[i].Add(1)
					return next(ctx, ev)
				}
			})
		})
		wg.Go(func() {
			mustRegister(t, b, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil },
				eventbus.WithName(fmt.Sprint("h", i)))
		})
	}
	wg.Wait()
	mustStart(t, b)
	require.NoError(t, b.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "u")))
	idleWithin(t, b, 5*time.Second)
	for i := range n {
		assert.Equal(t, int64(n), calls[i].Load(), "middleware %d: one call per handler", i)
	}
}

// noPanic runs f and returns what it panicked with, if anything.
func noPanic(f func()) (r any) {
	defer func() { r = recover() }()
	f()
	return nil
}

// TestReview9_ZeroDeadLetterRing: a zero DeadLetterRing is usable: it keeps
// the last 1024 letters, like the bus's default sink.
func TestReview9_ZeroDeadLetterRing(t *testing.T) {
	var r eventbus.DeadLetterRing
	var last *eventbus.DeadLetter
	require.Nil(t, noPanic(func() {
		for i := range 2000 {
			last = &eventbus.DeadLetter{Attempts: i}
			r.DeadLetter(last)
		}
	}), "zero DeadLetterRing panicked")
	letters := r.Letters()
	require.Len(t, letters, 1024)
	assert.Same(t, last, letters[len(letters)-1])
	assert.Equal(t, 2000-1024, letters[0].Attempts)
	assert.Equal(t, uint64(2000), r.Total())
}

// TestReview9_CloseZeroBus: Close on a zero Bus returns ErrNotNew at once
// instead of blocking until its ctx ends (for ever with Background).
func TestReview9_CloseZeroBus(t *testing.T) {
	var b eventbus.Bus
	done := make(chan error, 1)
	go func() { done <- b.Close(context.Background()) }()
	err := recvWithin(t, done, 5*time.Second, "Close on a zero Bus")
	assert.ErrorIs(t, err, eventbus.ErrNotNew)
}

// TestReview9_PanickingKeyFunc: a KeyFunc that panics is bad input, as a
// panicking Conn is: AddEvent returns ErrNilEvent naming the KeyFunc, the
// panic never reaches its caller, and the event is not counted.
func TestReview9_PanickingKeyFunc(t *testing.T) {
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{KeyFunc: func(ev eventbus.Event) uint64 {
		return uint64(len(ev.(*eventbus.UserContext).Conn.UID())) // panics on a nil Conn
	}}))
	mustRegister(t, b, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil })
	mustStart(t, b)
	for name, add := range map[string]func() error{
		"AddEvent": func() error {
			return b.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend})
		},
		"TryAddEvent": func() error { return b.TryAddEvent(&eventbus.UserContext{EventType: eventbus.EventOnSend}) },
	} {
		var err error
		require.Nil(t, noPanic(func() { err = add() }), "%s: a panicking KeyFunc reached the caller", name)
		require.ErrorIs(t, err, eventbus.ErrNilEvent, name)
		assert.Contains(t, err.Error(), "KeyFunc panicked", name)
	}
	st := b.Stats().User
	assert.Zero(t, st.Added)
	assert.Zero(t, st.Rejected)
	// The pool still works.
	require.NoError(t, b.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "u")))
	idleWithin(t, b, 5*time.Second)
	atRest(t, "user", b.Stats().User)
}

// TestReview9_DefineErrorsWrapSentinels: every error of Define is
// errors.Is-able and prefixed "eventbus:".
func TestReview9_DefineErrorsWrapSentinels(t *testing.T) {
	b := newBus(t)
	require.NoError(t, b.Define(40, eventbus.PoolUser, "custom"))
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"built in", b.Define(eventbus.EventOnSend, eventbus.PoolUser, "x"), eventbus.ErrTypeDefined},
		{"already defined", b.Define(40, eventbus.PoolChannel, "again"), eventbus.ErrTypeDefined},
		{"unknown pool", b.Define(41, eventbus.Pool("bogus"), "x"), eventbus.ErrWrongPool},
		{"pool of another range", b.Define(6, eventbus.PoolChannel, "x"), eventbus.ErrWrongPool},
		{"reserved", b.Define(0, eventbus.PoolUser, "x"), eventbus.ErrUnknownEventType},
	} {
		require.Error(t, c.err, c.name)
		assert.ErrorIs(t, c.err, c.want, c.name)
		assert.Regexp(t, "^eventbus: ", c.err.Error(), c.name)
	}
	mustStart(t, b)
	assert.ErrorIs(t, b.Define(42, eventbus.PoolUser, "late"), eventbus.ErrStarted)
}

// TestReview9_DefineAfterClose: Define on a closed bus says it is closed
// (ErrClosed), not that it must come before Start.
func TestReview9_DefineAfterClose(t *testing.T) {
	for _, started := range []bool{false, true} {
		b := newBus(t)
		if started {
			mustStart(t, b)
		}
		require.NoError(t, b.Close(deadline(t, 5*time.Second)))
		err := b.Define(40, eventbus.PoolUser, "late")
		assert.ErrorIs(t, err, eventbus.ErrClosed, "started %v", started)
		assert.NotErrorIs(t, err, eventbus.ErrStarted, "started %v", started)
		assert.NotContains(t, err.Error(), "before Start", "started %v", started)
	}
}

// TestReview13_ZeroValueBus: every method of a zero Bus, and of a nil
// *Bus, returns ErrNotNew (or a harmless zero result), at once, without a
// panic.
func TestReview13_ZeroValueBus(t *testing.T) {
	for name, b := range map[string]*eventbus.Bus{"zero Bus": new(eventbus.Bus), "nil *Bus": nil} {
		t.Run(name, func(t *testing.T) { checkUnmadeBus(t, b) })
	}
}

func checkUnmadeBus(t *testing.T, b *eventbus.Bus) {
	ctx := deadline(t, 5*time.Second)
	ev := userEvent(eventbus.EventOnSend, "u")
	errs := map[string]func() error{
		"Start":  b.Start,
		"Define": func() error { return b.Define(40, eventbus.PoolUser, "x") },
		"Register": func() error {
			_, err := eventbus.Register(b, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil })
			return err
		},
		"Subscribe": func() error {
			_, err := eventbus.Subscribe(b, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil })
			return err
		},
		"AddEvent":    func() error { return b.AddEvent(ctx, ev) },
		"TryAddEvent": func() error { return b.TryAddEvent(ev) },
		"WaitIdle":    func() error { return b.WaitIdle(ctx) },
		"Close":       func() error { return b.Close(ctx) },
	}
	for name, call := range errs {
		done := make(chan error, 1)
		go func() {
			var err error
			if r := noPanic(func() { err = call() }); r != nil {
				err = fmt.Errorf("panicked: %v", r)
			}
			done <- err
		}()
		err := recvWithin(t, done, 5*time.Second, name+" on an unmade Bus")
		assert.ErrorIs(t, err, eventbus.ErrNotNew, name)
		if err != nil {
			assert.Contains(t, err.Error(), "New", "%s: the error says to use New", name)
		}
	}
	assert.Nil(t, noPanic(func() {
		b.Use(func(next eventbus.HandlerFunc) eventbus.HandlerFunc { return next })
		assert.Equal(t, eventbus.Stats{}, b.Stats())
		assert.Equal(t, "OnSend", b.TypeName(eventbus.EventOnSend))
		assert.False(t, b.UnregisterHandler(eventbus.EventOnSend, "x"))
	}), "a method of an unmade Bus panicked")
}

// TestReview10_NoItsTypos: the possessive is "its". Comments here spell
// "it is" out, so the contraction in a comment is always a typo.
func TestReview10_NoItsTypos(t *testing.T) {
	for _, dir := range []string{".", "eventbustest", "internal/goid"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		for _, f := range files {
			src, err := os.ReadFile(f)
			require.NoError(t, err)
			for i, line := range strings.Split(string(src), "\n") {
				if c := strings.Index(line, "//"); c >= 0 && itsTypo.MatchString(line[c:]) {
					t.Errorf("%s:%d: %s", f, i+1, strings.TrimSpace(line))
				}
			}
		}
	}
}

var itsTypo = regexp.MustCompile(`(?i)\bit's\b`)
