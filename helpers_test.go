package eventbus_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
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
