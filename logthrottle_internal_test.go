package eventbus

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// logRecords is a slog.Handler that keeps every record.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecords) WithGroup(string) slog.Handler            { return h }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}

// take returns the records kept since the last take, each as its message
// and attributes.
func (h *logRecords) take() []logLine {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logLine
	for _, r := range h.recs {
		l := logLine{msg: r.Message, attrs: map[string]any{}}
		r.Attrs(func(a slog.Attr) bool {
			l.attrs[a.Key] = a.Value.Any()
			return true
		})
		out = append(out, l)
	}
	h.recs = nil
	return out
}

type logLine struct {
	msg   string
	attrs map[string]any
}

// TestLogThrottleGate: with the clock still, one record passes per key
// however many goroutines try at once; the next one, an interval later,
// carries the count of all the others.
func TestLogThrottleGate(t *testing.T) {
	clk := &fakeClock{}
	th := newLogThrottle(time.Second, clk.now)
	a, b := logKey{typ: 3, id: 1}, logKey{typ: 3, id: 1, dead: true}
	const goroutines, each = 8, 500
	var passed atomic.Int64
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				if n, ok := th.allow(a); ok {
					passed.Add(1)
					if n != 0 {
						t.Errorf("first record says %d suppressed", n)
					}
				}
			}
		})
	}
	wg.Wait()
	if got := passed.Load(); got != 1 {
		t.Fatalf("%d records passed in one interval, want 1", got)
	}
	if _, ok := th.allow(b); !ok {
		t.Fatal("another key (dead letters of the same handler) is throttled apart")
	}
	clk.advance(999 * time.Millisecond)
	if _, ok := th.allow(a); ok {
		t.Fatal("a record passed before the interval ended")
	}
	clk.advance(time.Millisecond)
	n, ok := th.allow(a)
	if !ok || n != goroutines*each { // the 3999 of the flood and the one just now
		t.Fatalf("allow after the interval = (%d, %v), want (%d, true)", n, ok, goroutines*each)
	}
	if n, ok := newLogThrottle(-1, clk.now).allow(a); !ok || n != 0 {
		t.Fatal("a negative interval must log everything")
	}
}

// TestFailureLogsThrottledPerHandler: a flood of failing events logs one
// "handler failed" and one "dead letter" line per handler per interval,
// and the next lines say how many were suppressed; successes log nothing.
func TestFailureLogsThrottledPerHandler(t *testing.T) {
	clk := &fakeClock{}
	rec := &logRecords{}
	b, err := New(WithLogger(slog.New(rec)), WithRetry(NoRetry), WithDeadLetter(NewDeadLetterRing(1)),
		WithUserPool(PoolConfig{Workers: 2}),
		optionFunc(func(c *config) { c.clock = clk.now }))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	boom := errors.New("bad frame")
	fail := func(ctx context.Context, ev *UserContext) error { return boom }
	ok := func(ctx context.Context, ev *UserContext) error { return nil }
	for _, r := range []struct {
		t    EventType
		name string
		h    Handler[UserContext]
	}{{EventOnSend, "decode", fail}, {EventRecvAck, "decode", fail}, {EventConnect, "fine", ok}} {
		if _, err := Register(b, r.t, r.h, WithName(r.name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	add := func(typ EventType, n int) {
		t.Helper()
		for i := range n {
			conn := &testConnInternal{uid: string(rune('a' + i%26))}
			if err := b.AddEvent(context.Background(), &UserContext{EventType: typ, Conn: conn}); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
	}

	add(EventOnSend, 300)
	add(EventRecvAck, 50)
	add(EventConnect, 100)
	got := rec.take()
	// One failure line and one dead-letter line for each failing handler:
	// the RecvAck handler has the same name but its own gate.
	count := map[string]int{}
	for _, l := range got {
		count[l.msg+" "+l.attrs["type"].(string)]++
		if _, has := l.attrs["suppressed"]; has {
			t.Errorf("first line of an interval says suppressed: %v", l.attrs)
		}
	}
	want := map[string]int{
		"eventbus: handler failed OnSend": 1, "eventbus: dead letter OnSend": 1,
		"eventbus: handler failed RecvAck": 1, "eventbus: dead letter RecvAck": 1,
	}
	if len(count) != len(want) {
		t.Fatalf("logged %v, want %v", count, want)
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("%q logged %d times, want %d (all: %v)", k, count[k], n, count)
		}
	}

	// Still in the same interval: nothing more is logged.
	add(EventOnSend, 20)
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("logged %d lines inside the interval: %v", len(got), got)
	}

	// An interval later, one more failure: both lines carry the count of
	// those left out (299 + 20 for OnSend).
	clk.advance(time.Second)
	add(EventOnSend, 1)
	got = rec.take()
	if len(got) != 2 {
		t.Fatalf("logged %d lines after the interval, want 2: %v", len(got), got)
	}
	for _, l := range got {
		if l.attrs["handler"] != "decode" || l.attrs["suppressed"] != int64(319) {
			t.Errorf("%s: handler %v suppressed %v, want decode and 319", l.msg, l.attrs["handler"], l.attrs["suppressed"])
		}
	}
	st := b.Stats().User
	if st.DeadLettered != 371 || st.Handled != 100 {
		t.Errorf("Stats count every event: dead-lettered %d (want 371), handled %d (want 100)", st.DeadLettered, st.Handled)
	}
}

type testConnInternal struct{ uid string }

func (c *testConnInternal) UID() string { return c.uid }
func (c *testConnInternal) ID() int64   { return 1 }
