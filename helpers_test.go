package eventbus_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testConn is a minimal eventbus.Conn for tests of this package.
type testConn struct {
	uid string
	id  int64
}

func (c *testConn) UID() string { return c.uid }
func (c *testConn) ID() int64   { return c.id }

// quiet is a logger that discards everything.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newBus builds a bus with a quiet logger and the given options, and closes
// it (with a deadline) when the test ends.
func newBus(t testing.TB, opts ...eventbus.Option) *eventbus.Bus {
	t.Helper()
	b, err := eventbus.New(append([]eventbus.Option{eventbus.WithLogger(quiet)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

// deadline returns a context that ends after d, cancelled with the test.
func deadline(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// sinkRecorder is a DeadLetterSink that keeps every letter.
type sinkRecorder struct {
	mu      sync.Mutex
	letters []*eventbus.DeadLetter
}

func (s *sinkRecorder) DeadLetter(d *eventbus.DeadLetter) {
	s.mu.Lock()
	s.letters = append(s.letters, d)
	s.mu.Unlock()
}

func (s *sinkRecorder) all() []*eventbus.DeadLetter {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*eventbus.DeadLetter(nil), s.letters...)
}

func userEvent(t eventbus.EventType, uid string) *eventbus.UserContext {
	return &eventbus.UserContext{EventType: t, Conn: &testConn{uid: uid}}
}

// obsRecorder keeps every observation.
type obsRecorder struct {
	mu  sync.Mutex
	obs []eventbus.Observation
}

func (r *obsRecorder) Observe(o eventbus.Observation) {
	r.mu.Lock()
	r.obs = append(r.obs, o)
	r.mu.Unlock()
}

func (r *obsRecorder) of(typ eventbus.EventType) []eventbus.Observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []eventbus.Observation
	for _, o := range r.obs {
		if o.Type == typ {
			out = append(out, o)
		}
	}
	return out
}

func (r *obsRecorder) outcome(out eventbus.Outcome) []eventbus.Observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	var res []eventbus.Observation
	for _, o := range r.obs {
		if o.Outcome == out {
			res = append(res, o)
		}
	}
	return res
}

// mustRegister registers h or fails the test.
func mustRegister[C eventbus.EventContext](t testing.TB, b *eventbus.Bus, typ eventbus.EventType, h eventbus.Handler[C], opts ...eventbus.HandlerOption) *eventbus.Registration {
	t.Helper()
	r, err := eventbus.Register(b, typ, h, opts...)
	require.NoError(t, err)
	return r
}

// mustStart starts b or fails the test.
func mustStart(t testing.TB, b *eventbus.Bus) {
	t.Helper()
	require.NoError(t, b.Start())
}

// uidsOnShardOf returns n user IDs ("key-0", "key-1", ...) whose OnSend
// events go to the same user-pool shard as uid's, so that one worker takes
// them together with uid's.
func uidsOnShardOf(b *eventbus.Bus, uid string, n int) []string {
	_, want := eventbus.ShardOf(b, userEvent(eventbus.EventOnSend, uid))
	var uids []string
	for i := 0; len(uids) < n; i++ {
		u := fmt.Sprintf("key-%d", i)
		if _, s := eventbus.ShardOf(b, userEvent(eventbus.EventOnSend, u)); s == want {
			uids = append(uids, u)
		}
	}
	return uids
}

// idleWithin waits, at most d, for the bus to be idle.
func idleWithin(t testing.TB, b *eventbus.Bus, d time.Duration) {
	t.Helper()
	require.NoError(t, b.WaitIdle(deadline(t, d)), "bus not idle within %v", d)
}

// recvWithin receives from ch, failing the test after d.
func recvWithin[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
	var zero T
	return zero
}

// checkIdentity checks Added = Handled + Stopped + DeadLettered + Queued +
// InFlight + Retrying.
func checkIdentity(t testing.TB, pool string, s eventbus.PoolStats) {
	t.Helper()
	assert.Equal(t, s.Added, s.Handled+s.Stopped+s.DeadLettered+s.Abandoned+uint64(s.Queued+s.InFlight+s.Retrying),
		"%s pool: Added != Handled+Stopped+DeadLettered+Abandoned+Queued+InFlight+Retrying in %+v", pool, s)
}

// atRest checks the identity and that no gauge is above zero.
func atRest(t testing.TB, pool string, s eventbus.PoolStats) {
	t.Helper()
	checkIdentity(t, pool, s)
	assert.Zero(t, s.Queued, "%s pool Queued", pool)
	assert.Zero(t, s.InFlight, "%s pool InFlight", pool)
	assert.Zero(t, s.Retrying, "%s pool Retrying", pool)
	assert.Zero(t, s.Overflow, "%s pool Overflow", pool)
}

// holdGate holds a handler until released (or until the test ends).
type holdGate struct {
	entered chan context.Context
	release chan struct{}
	once    sync.Once
}

func newHoldGate(t testing.TB) *holdGate {
	g := &holdGate{entered: make(chan context.Context, 1), release: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *holdGate) open() { g.once.Do(func() { close(g.release) }) }

func (g *holdGate) hold(ctx context.Context) {
	g.entered <- ctx
	<-g.release
}

// liveHeap returns the live heap after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// noPanic runs f and returns what it panicked with, if anything.
func noPanic(f func()) (r any) {
	defer func() { r = recover() }()
	f()
	return nil
}

// goexitSink counts dead letters, in all and per event, and calls
// runtime.Goexit on the first, as a sink using require (t.FailNow) does on a
// failed check.
type goexitSink struct {
	once sync.Once
	n    atomic.Int64
	mu   sync.Mutex
	seen map[eventbus.Event]int
}

func (s *goexitSink) DeadLetter(d *eventbus.DeadLetter) {
	s.n.Add(1)
	s.mu.Lock()
	if s.seen == nil {
		s.seen = map[eventbus.Event]int{}
	}
	s.seen[d.Event]++
	s.mu.Unlock()
	s.once.Do(runtime.Goexit)
}

// holdFrame returns a handler that, for the event whose Frame is "hold",
// closes entered and waits for release; every other event returns at once.
func holdFrame(entered, release chan struct{}) eventbus.Handler[eventbus.UserContext] {
	return func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame == "hold" {
			close(entered)
			<-release
		}
		return nil
	}
}

// closeExpired calls Close with a ctx that has already ended, which must
// give up and return a *CloseError, and returns that error.
func closeExpired(t testing.TB, b *eventbus.Bus) *eventbus.CloseError {
	t.Helper()
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	var ce *eventbus.CloseError
	require.ErrorAs(t, b.Close(expired), &ce)
	return ce
}
