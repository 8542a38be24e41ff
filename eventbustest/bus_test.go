package eventbustest_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/eventbustest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var noRetry = eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 1})

func register(t testing.TB, b *eventbustest.Bus, name string, h eventbus.Handler[eventbus.UserContext]) {
	t.Helper()
	_, err := eventbus.Register(b.Bus, eventbus.EventOnSend, h, eventbus.WithName(name))
	require.NoError(t, err)
}

func TestNewBusRunsEvents(t *testing.T) {
	b := eventbustest.NewBus(t)
	var mu sync.Mutex
	var got []any
	register(t, b, "collect", func(ctx context.Context, ev *eventbus.UserContext) error {
		mu.Lock()
		got = append(got, ev.Frame)
		mu.Unlock()
		return nil
	})
	conn := eventbustest.NewMockConn("alice")
	for i := range 10 {
		require.NoError(t, b.AddEvent(context.Background(),
			&eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn, Frame: i}))
	}
	b.Settle()
	mu.Lock()
	assert.Equal(t, []any{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, got)
	mu.Unlock()
	assert.Equal(t, uint64(10), b.Stats().User.Handled)
	assert.Empty(t, b.DeadLetters())
}

func TestNewBusClosesAtCleanup(t *testing.T) {
	var b *eventbustest.Bus
	t.Run("inner", func(t *testing.T) {
		b = eventbustest.NewBus(t)
		register(t, b, "ok", func(context.Context, *eventbus.UserContext) error { return nil })
	})
	// The subtest's cleanup closed the bus.
	assert.ErrorIs(t, b.AddEvent(context.Background(), onSend("u")), eventbus.ErrClosed)
}

func TestNewBusReportsUnexpectedDeadLetters(t *testing.T) {
	f := &fakeTB{}
	b := eventbustest.NewBus(f, noRetry)
	letters := deadLetterOne(t, b)
	require.Len(t, letters, 1)
	assert.Equal(t, "store", letters[0].Handler)
	assert.Equal(t, 1, letters[0].Attempts)
	assert.EqualError(t, letters[0].Err, "db down")

	assert.Empty(t, f.errors(), "nothing is reported before the test ends")
	f.finish()
	errs := f.errors()
	require.Len(t, errs, 1)
	assert.Contains(t, errs[0], "1 unexpected dead letter ")
	assert.Contains(t, errs[0], `OnSend event in handler "store" after 1 attempt: db down`)
	assert.Contains(t, errs[0], "ExpectDeadLetters")
}

func TestNewBusExpectedDeadLetters(t *testing.T) {
	f := &fakeTB{}
	b := eventbustest.NewBus(f, noRetry)
	b.ExpectDeadLetters()
	deadLetterOne(t, b)
	f.finish()
	assert.Empty(t, f.errors())
	assert.Empty(t, f.fatalErrors())
}

func TestNewBusReportsLeftEvents(t *testing.T) {
	f := &fakeTB{}
	b := eventbustest.NewBus(f)
	// Also bounds the cleanup's second Close, which waits for the worker
	// to leave the cancelled handler: not too short for a loaded machine.
	b.Timeout = 250 * time.Millisecond
	started := make(chan struct{}, 2)
	register(t, b, "stuck", func(ctx context.Context, ev *eventbus.UserContext) error {
		started <- struct{}{}
		<-ctx.Done() // until Close gives up and cancels handler contexts
		return ctx.Err()
	})
	require.NoError(t, b.AddEvent(context.Background(), onSend("u")))
	require.NoError(t, b.AddEvent(context.Background(), onSend("u"))) // queued behind
	select {
	case <-started:
	case <-within(t, 5*time.Second).Done():
		t.Fatal("handler did not start")
	}

	f.finish()
	// The cleanup waited for the worker that was inside the handler.
	require.NoError(t, b.Close(within(t, 5*time.Second)))

	errs := f.errors()
	require.Len(t, errs, 2, joined(errs))
	assert.Contains(t, errs[0], "closing the bus at the end of the test")
	assert.Contains(t, errs[0], "2 events left")
	assert.Contains(t, errs[1], "unexpected dead letters")
	assert.Contains(t, errs[1], eventbus.ErrClosed.Error())
}

// TestNewBusNamesStuckHandler: a test that ends with a handler stuck (one
// that ignores its cancelled context) is told which handler, on which
// event, in both reports of the cleanup.
func TestNewBusNamesStuckHandler(t *testing.T) {
	f := &fakeTB{}
	b := eventbustest.NewBus(f)
	b.Timeout = 100 * time.Millisecond
	started, release := make(chan struct{}), make(chan struct{})
	register(t, b, "stuck", func(ctx context.Context, ev *eventbus.UserContext) error {
		close(started)
		<-release // ignores ctx
		return nil
	})
	require.NoError(t, b.AddEvent(context.Background(), onSend("alice")))
	select {
	case <-started:
	case <-within(t, 5*time.Second).Done():
		t.Fatal("handler did not start")
	}

	f.finish()
	close(release)
	require.NoError(t, b.Close(within(t, 5*time.Second)))

	errs := f.errors()
	require.GreaterOrEqual(t, len(errs), 2, joined(errs))
	assert.Contains(t, errs[0], "closing the bus at the end of the test")
	assert.Contains(t, errs[1], "handlers still running")
	for _, e := range errs[:2] {
		assert.Contains(t, e, `handler "stuck" of OnSend (attempt 1) on user "alice"`, "the report names the handler and the event")
	}
}

func TestNewBusLogsThroughT(t *testing.T) {
	f := &fakeTB{}
	b := eventbustest.NewBus(f, noRetry)
	b.ExpectDeadLetters()
	deadLetterOne(t, b)
	f.finish()
	logs := joined(f.logLines())
	assert.Contains(t, logs, `msg="eventbus: handler failed"`)
	assert.Contains(t, logs, "handler=store")
	assert.NotContains(t, logs, "time=", "t.Log output needs no timestamps")
}

func TestNewLoggerStopsAfterCleanup(t *testing.T) {
	f := &fakeTB{}
	l := eventbustest.NewLogger(f)
	l.Debug("first", "k", 1)
	f.finish()
	l.Error("too late")
	assert.Equal(t, []string{`level=DEBUG msg=first k=1`}, f.logLines())
}

// capture is a slog.Handler that keeps messages.
type capture struct {
	mu   sync.Mutex
	msgs []string
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	c.msgs = append(c.msgs, r.Message)
	c.mu.Unlock()
	return nil
}
func (c *capture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *capture) WithGroup(string) slog.Handler      { return c }

func TestNewBusKeepsUserLogger(t *testing.T) {
	f := &fakeTB{}
	var c capture
	b := eventbustest.NewBus(f, noRetry, eventbus.WithLogger(slog.New(&c)))
	b.ExpectDeadLetters()
	deadLetterOne(t, b)
	f.finish()
	assert.Empty(t, f.logLines())
	c.mu.Lock()
	assert.Contains(t, c.msgs, "eventbus: handler failed")
	c.mu.Unlock()
}

func TestNewBusOverridesDeadLetterSink(t *testing.T) {
	ring := eventbus.NewDeadLetterRing(8)
	b := eventbustest.NewBus(t, noRetry, eventbus.WithDeadLetter(ring))
	b.ExpectDeadLetters()
	deadLetterOne(t, b)
	assert.Zero(t, ring.Total(), "NewBus's sink replaces one given in opts, as documented")
}

func TestNewBusBadOption(t *testing.T) {
	f := &fakeTB{}
	onGoroutine(t, func() {
		eventbustest.NewBus(f, eventbus.WithUserPool(eventbus.PoolConfig{Workers: -1}))
		t.Error("NewBus returned after a bad option")
	})
	fatals := f.fatalErrors()
	require.Len(t, fatals, 1)
	assert.Contains(t, fatals[0], "Workers")
	f.finish()
}

func TestNewUnstartedBusDefine(t *testing.T) {
	const typing eventbus.EventType = 30
	b := eventbustest.NewUnstartedBus(t)
	require.NoError(t, b.Define(typing, eventbus.PoolUser, "Typing"))
	var rec eventbustest.Recorder
	_, err := eventbus.Register(b.Bus, typing, func(ctx context.Context, ev *eventbus.UserContext) error {
		return rec.AddEvent(ctx, distribute("g"))
	})
	require.NoError(t, err)
	ev := &eventbus.UserContext{EventType: typing, Conn: eventbustest.NewMockConn("u")}
	require.ErrorIs(t, b.AddEvent(context.Background(), ev), eventbus.ErrNotStarted)

	require.NoError(t, b.Start())
	require.NoError(t, b.AddEvent(context.Background(), ev))
	b.Settle()
	rs := rec.Records()
	require.Len(t, rs, 1)
	assert.Equal(t, typing, rs[0].Call.Type)
	assert.Equal(t, "Typing", b.TypeName(typing))
}

func TestWaitDeadLettersDeadline(t *testing.T) {
	b := eventbustest.NewBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	letters, err := b.WaitDeadLetters(ctx, 1)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "got 0 of 1 dead letters")
	assert.Empty(t, letters)
}

func TestSettleFailsWhenNotIdle(t *testing.T) {
	f := &fakeTB{}
	b := eventbustest.NewBus(f)
	b.Timeout = 20 * time.Millisecond
	release := make(chan struct{})
	started := make(chan struct{})
	register(t, b, "slow", func(ctx context.Context, ev *eventbus.UserContext) error {
		close(started)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	require.NoError(t, b.AddEvent(context.Background(), onSend("u")))
	select {
	case <-started:
	case <-within(t, 5*time.Second).Done():
		t.Fatal("handler did not start")
	}
	onGoroutine(t, b.Settle)
	fatals := f.fatalErrors()
	require.Len(t, fatals, 1)
	assert.Contains(t, fatals[0], "bus not idle after 20ms")
	assert.Contains(t, fatals[0], "InFlight:1")

	close(release)
	b.Timeout = 0 // DefaultTimeout for the Close at cleanup
	f.finish()
	assert.Empty(t, f.errors())
}

// deadLetterOne registers a "store" handler that always fails on b, adds
// one event and waits for its dead letter (NewBus's sink records it).
func deadLetterOne(t *testing.T, b *eventbustest.Bus) []*eventbus.DeadLetter {
	t.Helper()
	register(t, b, "store", func(context.Context, *eventbus.UserContext) error { return errors.New("db down") })
	require.NoError(t, b.AddEvent(context.Background(), onSend("u")))
	letters, err := b.WaitDeadLetters(within(t, 5*time.Second), 1)
	require.NoError(t, err)
	return letters
}

// TestNewBusCoversSubscribers: a subscriber's dead letters are reported
// like the chain's, and its counters are checked at cleanup.
func TestNewBusCoversSubscribers(t *testing.T) {
	f := &fakeTB{}
	b := eventbustest.NewBus(f, noRetry)
	_, err := eventbus.Subscribe(b.Bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		return errors.New("webhook down")
	}, eventbus.WithName("webhook"))
	require.NoError(t, err)
	require.NoError(t, b.AddEvent(context.Background(), onSend("u")))
	b.Settle()
	f.finish()
	errs := f.errors()
	require.Len(t, errs, 1, joined(errs))
	assert.Contains(t, errs[0], "1 unexpected dead letter ")
	assert.Contains(t, errs[0], `"webhook"`)
	st := b.Stats().Subscribers["OnSend/webhook"]
	assert.Equal(t, uint64(1), st.DeadLettered)
}
