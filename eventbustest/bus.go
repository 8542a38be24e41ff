package eventbustest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
)

// DefaultTimeout bounds Bus.Settle and the Close that ends a test's bus
// when Bus.Timeout is zero. It is generous on purpose: it only matters when
// a test is about to fail, and a loaded CI machine can be slow.
const DefaultTimeout = 10 * time.Second

// Bus is a bus built for one test by NewBus. It embeds the *eventbus.Bus,
// so it has all of its methods and is an eventbus.Emitter; pass b.Bus to
// eventbus.Register. Its methods are safe for concurrent use, except that
// Settle, like t.FailNow, must be called from the test's goroutine.
type Bus struct {
	*eventbus.Bus

	// Timeout bounds Settle and the Close at the end of the test. Zero
	// means DefaultTimeout. Set it before the bus is used.
	Timeout time.Duration

	t       testing.TB
	sink    *letterSink
	running *running
}

// NewBus returns a started bus built with opts, for the test t:
//
//   - It logs through t.Log (see NewLogger) unless opts hold a WithLogger,
//     so failures show up with the test's output and only when it fails
//     or runs with -v.
//   - It installs its own dead-letter sink, after opts (a WithDeadLetter in
//     opts is overridden): read the letters with DeadLetters or
//     WaitDeadLetters.
//   - When the test ends, t.Cleanup closes the bus within Timeout and marks
//     the test failed if Close reports events left behind, if any pool's
//     counters do not add up (Added = Handled + Stopped + DeadLettered +
//     Abandoned), or
//     if an event was dead-lettered while the test did not call
//     ExpectDeadLetters. When Close gives up, the cleanup waits up to
//     Timeout again for handlers to return, so that their events reach the
//     dead-letter report and no worker outlives the test (goleak).
//
// An invalid option or a failing Start ends the test with t.Fatalf.
// Event types of your own must be defined before Start: pass
// eventbus.WithDefine among opts, or use NewUnstartedBus and Bus.Define.
func NewBus(t testing.TB, opts ...eventbus.Option) *Bus {
	t.Helper()
	b := NewUnstartedBus(t, opts...)
	if err := b.Start(); err != nil {
		t.Fatalf("eventbustest: Start: %v", err)
	}
	return b
}

// NewUnstartedBus is NewBus without the Start, for tests that call
// Bus.Define first (Define must come before Start). Call b.Start() once the
// types are defined.
func NewUnstartedBus(t testing.TB, opts ...eventbus.Option) *Bus {
	t.Helper()
	sink := &letterSink{}
	all := make([]eventbus.Option, 0, len(opts)+2)
	all = append(all, eventbus.WithLogger(NewLogger(t)))
	all = append(all, opts...)
	all = append(all, eventbus.WithDeadLetter(sink))
	bus, err := eventbus.New(all...)
	if err != nil {
		t.Fatalf("eventbustest: New: %v", err)
	}
	b := &Bus{Bus: bus, t: t, sink: sink, running: &running{}}
	bus.Use(b.running.middleware)
	t.Cleanup(b.cleanup)
	return b
}

func (b *Bus) timeout() time.Duration {
	if b.Timeout > 0 {
		return b.Timeout
	}
	return DefaultTimeout
}

// Settle waits until the bus is idle (see eventbus.Bus.WaitIdle). If that
// takes longer than Timeout it fails the test with t.Fatalf, reporting the
// bus's Stats. Call it only from the test's goroutine.
func (b *Bus) Settle() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout())
	defer cancel()
	if err := b.WaitIdle(ctx); err != nil {
		b.t.Fatalf("eventbustest: bus not idle after %v: %v\nstats: %+v", b.timeout(), err, b.Stats())
	}
}

// ExpectDeadLetters tells the bus that this test means to produce dead
// letters, so that they do not fail it when it ends.
func (b *Bus) ExpectDeadLetters() {
	b.sink.mu.Lock()
	b.sink.expected = true
	b.sink.mu.Unlock()
}

// DeadLetters returns the events the bus gave up on so far, in the order
// the sink received them. Reading them does not make them expected.
func (b *Bus) DeadLetters() []*eventbus.DeadLetter {
	b.sink.mu.Lock()
	defer b.sink.mu.Unlock()
	return slices.Clone(b.sink.letters)
}

// WaitDeadLetters waits until at least n events were dead-lettered and
// returns all the letters so far. When ctx ends first it returns those
// there are and an error wrapping ctx's. Waiting does not make the letters
// expected: call ExpectDeadLetters too.
func (b *Bus) WaitDeadLetters(ctx context.Context, n int) ([]*eventbus.DeadLetter, error) {
	s := b.sink
	var out []*eventbus.DeadLetter
	err := waitFor(ctx, &s.mu, &s.changed, func() (bool, error) {
		if len(s.letters) < n {
			return false, nil
		}
		out = slices.Clone(s.letters)
		return true, nil
	})
	if err != nil {
		got := b.DeadLetters()
		return got, shortfall("dead letters", len(got), n, err)
	}
	return out, nil
}

func (b *Bus) cleanup() {
	t := b.t
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout())
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("eventbustest: closing the bus at the end of the test: %v%s", err, b.running.describe())
		// Handler contexts are cancelled now. Wait as long again for the
		// workers still inside a handler: events they hold reach the
		// dead-letter sink only once those handlers return.
		again, cancel := context.WithTimeout(context.Background(), b.timeout())
		defer cancel()
		if err := b.Close(again); err != nil {
			t.Errorf("eventbustest: handlers still running %v after their context was cancelled: %v%s", b.timeout(), err, b.running.describe())
		}
	} else {
		b.checkCounts()
	}
	s := b.sink
	s.mu.Lock()
	letters, expected := slices.Clone(s.letters), s.expected
	s.mu.Unlock()
	if expected || len(letters) == 0 {
		return
	}
	var msg strings.Builder
	letter := "letters"
	if len(letters) == 1 {
		letter = "letter"
	}
	fmt.Fprintf(&msg, "eventbustest: %d unexpected dead %s (call ExpectDeadLetters if the test wants them):", len(letters), letter)
	const most = 10
	for i, d := range letters {
		if i == most {
			fmt.Fprintf(&msg, "\n\t… and %d more", len(letters)-most)
			break
		}
		fmt.Fprintf(&msg, "\n\t%s", b.describe(d))
	}
	t.Error(msg.String())
}

// describe says in one line which event died where and why.
func (b *Bus) describe(d *eventbus.DeadLetter) string {
	what := "event"
	if d.Event != nil {
		what = b.TypeName(d.Event.Type()) + " event"
	}
	if d.Handler == "" {
		return fmt.Sprintf("%s: %v", what, d.Err)
	}
	attempts := "attempts"
	if d.Attempts == 1 {
		attempts = "attempt"
	}
	return fmt.Sprintf("%s in handler %q after %d %s: %v", what, d.Handler, d.Attempts, attempts, d.Err)
}

// checkCounts checks that every accepted event ended somewhere, once the
// bus has drained.
func (b *Bus) checkCounts() {
	st := b.Stats()
	type named struct {
		name string
		s    eventbus.PoolStats
	}
	all := []named{{"user pool", st.User}, {"channel pool", st.Channel}, {"pusher pool", st.Pusher}}
	for name, s := range st.Subscribers {
		all = append(all, named{"subscriber " + name, s})
	}
	for _, p := range all {
		s := p.s
		if s.Queued != 0 || s.InFlight != 0 || s.Retrying != 0 ||
			s.Added != s.Handled+s.Stopped+s.DeadLettered+s.Abandoned {
			b.t.Errorf("eventbustest: %s does not add up after Close: Added %d != Handled %d + Stopped %d + DeadLettered %d (Queued %d, InFlight %d, Retrying %d)",
				p.name, s.Added, s.Handled, s.Stopped, s.DeadLettered, s.Queued, s.InFlight, s.Retrying)
		}
	}
}

// letterSink keeps every dead letter of a test's bus.
type letterSink struct {
	mu       sync.Mutex
	letters  []*eventbus.DeadLetter
	expected bool
	changed  signal
}

func (s *letterSink) DeadLetter(d *eventbus.DeadLetter) {
	s.mu.Lock()
	s.letters = append(s.letters, d)
	s.changed.broadcast()
	s.mu.Unlock()
}

// NewLogger returns a logger that writes each record, at every level, as
// one line of t.Log, so a bus's warnings appear with the test that caused
// them, and only when it fails or runs with -v. Records logged after the
// test and its cleanups have finished (by a handler still running, say)
// are dropped instead of making the testing package panic.
func NewLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{} // t.Log output is already in order
			}
			return a
		},
	}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}
