package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDeadLetterFieldsOfBrokenHandler(t *testing.T) {
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithRetry(fastPolicy(2)))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		return nil
	}, eventbus.WithName("validate"))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		return fmt.Errorf("store message: %w", errBoom)
	}, eventbus.WithName("store"))
	mustStart(t, b)

	before := time.Now()
	ev := userEvent(eventbus.EventOnSend, "alice")
	relAdd(t, b, ev)
	idleWithin(t, b, 5*time.Second)
	after := time.Now()

	letters := sink.all()
	require.Len(t, letters, 1)
	d := letters[0]
	assert.Same(t, ev, d.Event, "the dead letter carries the event as added")
	assert.ErrorIs(t, d.Err, errBoom)
	assert.EqualError(t, d.Err, "store message: boom")
	assert.Equal(t, 2, d.Attempts)
	assert.Equal(t, "store", d.Handler, "the handler that failed, not the first of the chain")
	assert.False(t, d.Time.Before(before), "Time %v before the add %v", d.Time, before)
	assert.False(t, d.Time.After(after), "Time %v after idle %v", d.Time, after)

	s := b.Stats().User
	assert.EqualValues(t, 1, s.DeadLettered)
	atRest(t, "user", s)
}

func TestDeadLetterRingKeepsLastN(t *testing.T) {
	ring := eventbus.NewDeadLetterRing(3)
	assert.Empty(t, ring.Letters())
	assert.Zero(t, ring.Total())
	var all []*eventbus.DeadLetter
	for i := range 5 {
		d := &eventbus.DeadLetter{Err: fmt.Errorf("letter %d", i), Attempts: i}
		all = append(all, d)
		ring.DeadLetter(d)
		want := all[max(0, len(all)-3):]
		require.Equal(t, want, ring.Letters(), "after %d letters: the last 3, oldest first", i+1)
	}
	assert.EqualValues(t, 5, ring.Total())

	one := eventbus.NewDeadLetterRing(0)
	one.DeadLetter(all[0])
	one.DeadLetter(all[1])
	assert.Equal(t, all[1:2], one.Letters(), "n < 1 keeps one letter")
	assert.EqualValues(t, 2, one.Total())
}

func TestDeadLetterRingAsBusSink(t *testing.T) {
	ring := eventbus.NewDeadLetterRing(4)
	b := newBus(t, eventbus.WithDeadLetter(ring), eventbus.WithRetry(fastPolicy(1)))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		return fmt.Errorf("event %v: %w", ev.Frame, errBoom)
	}, eventbus.WithName("broken"))
	mustStart(t, b)
	var evs []*eventbus.UserContext
	for i := range 10 {
		ev := userEvent(eventbus.EventOnSend, "alice") // one key: dead letters in add order
		ev.Frame = i
		evs = append(evs, ev)
		relAdd(t, b, ev)
	}
	idleWithin(t, b, 5*time.Second)

	assert.EqualValues(t, 10, ring.Total())
	letters := ring.Letters()
	require.Len(t, letters, 4)
	for i, d := range letters {
		assert.Same(t, evs[6+i], d.Event, "letter %d", i)
		assert.Equal(t, 1, d.Attempts)
		assert.Equal(t, "broken", d.Handler)
	}
	assert.EqualValues(t, 10, b.Stats().User.DeadLettered)
}

func TestDeadLetterNoHandlerWhenChainEmptiedWhileQueued(t *testing.T) {
	// One worker: a gate event holds it while three OnSend events queue up;
	// their only handler goes away before they run.
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	entered, release := make(chan struct{}), make(chan struct{})
	mustRegister(t, b, eventbus.EventConnect, func(ctx context.Context, ev *eventbus.UserContext) error {
		close(entered)
		<-release
		return nil
	}, eventbus.WithName("gate"))
	var ran int
	reg := mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		ran++
		return nil
	}, eventbus.WithName("send"))
	mustStart(t, b)

	relAdd(t, b, userEvent(eventbus.EventConnect, "alice"))
	recvWithin(t, entered, 5*time.Second, "gate handler")
	var evs []eventbus.Event
	for _, uid := range []string{"alice", "bob", "carol"} {
		ev := userEvent(eventbus.EventOnSend, uid)
		evs = append(evs, ev)
		relAdd(t, b, ev)
	}
	reg.Unregister()
	reg.Unregister() // idempotent
	err := b.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "dave"))
	assert.ErrorIs(t, err, eventbus.ErrNoHandler, "no handler at add time")
	close(release)
	idleWithin(t, b, 5*time.Second)

	assert.Zero(t, ran, "the removed handler never ran")
	letters := sink.all()
	require.Len(t, letters, 3)
	// Different keys: their dead letters may come in any order.
	for _, d := range letters {
		assert.Contains(t, evs, d.Event)
		assert.ErrorIs(t, d.Err, eventbus.ErrNoHandler)
		assert.Zero(t, d.Attempts, "no handler ran")
		assert.Empty(t, d.Handler)
	}
	s := b.Stats().User
	assert.EqualValues(t, 4, s.Added)
	assert.EqualValues(t, 1, s.Handled)
	assert.EqualValues(t, 3, s.DeadLettered)
	assert.Zero(t, s.Failed)
	atRest(t, "user", s)
}

func TestDeadLetterSinkPanicDoesNotKillWorker(t *testing.T) {
	b := newBus(t, eventbus.WithDeadLetter(panicSink{}), eventbus.WithRetry(fastPolicy(1)),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	var handled int
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame == "bad" {
			return errBoom
		}
		handled++
		return nil
	})
	mustStart(t, b)
	bad := userEvent(eventbus.EventOnSend, "alice")
	bad.Frame = "bad"
	relAdd(t, b, bad)
	for range 5 {
		relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	}
	idleWithin(t, b, 5*time.Second)
	assert.Equal(t, 5, handled)
	s := b.Stats().User
	assert.EqualValues(t, 1, s.DeadLettered)
	atRest(t, "user", s)
}

type panicSink struct{}

func (panicSink) DeadLetter(*eventbus.DeadLetter) { panic("sink exploded") }

// TestGoexitInSinkDoesNotKillShard: a dead-letter sink that calls
// runtime.Goexit (as require does on a failed check) does not end the
// shard it runs on: the next accepted event of that shard still runs.
func TestGoexitInSinkDoesNotKillShard(t *testing.T) {
	bus := newBus(t, eventbus.WithDeadLetter(&goexitSink{}), eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	handled := make(chan string, 4)
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame == "bad" {
			return eventbus.Permanent(errors.New("bad"))
		}
		handled <- ev.Conn.UID()
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	bad := userEvent(eventbus.EventOnSend, "a")
	bad.Frame = "bad"
	require.NoError(t, bus.AddEvent(context.Background(), bad))
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "b")))

	select {
	case uid := <-handled:
		assert.Equal(t, "b", uid)
	case <-time.After(3 * time.Second):
		t.Error("an accepted event was never handled: the worker died in the sink and was not replaced")
	}
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	_ = bus.Close(expired) // do not make the cleanup Close wait for a dead worker
}

// TestZeroDeadLetterRingKeepsLast1024: a zero DeadLetterRing is usable: it
// keeps the last 1024 letters, like the bus's default sink.
func TestZeroDeadLetterRingKeepsLast1024(t *testing.T) {
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

// TestGoexitSinkAfterRetriesDoesNotWedgeKey: a sink that calls
// Goexit while a retried event is dead-lettered leaves its key free: the
// key's next event runs, WaitIdle returns and the stats add up.
func TestGoexitSinkAfterRetriesDoesNotWedgeKey(t *testing.T) {
	sink := &goexitSink{}
	b := newBus(t, eventbus.WithDeadLetter(sink),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond}),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	second := make(chan struct{})
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame == "second" {
			close(second)
			return nil
		}
		return errors.New("always fails")
	})
	mustStart(t, b)
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	ev := userEvent(eventbus.EventOnSend, "alice")
	ev.Frame = "second"
	relAdd(t, b, ev)
	recvWithin(t, second, 5*time.Second, "the key's next event")
	idleWithin(t, b, 5*time.Second)
	st := b.Stats().User
	assert.Equal(t, uint64(2), st.Added)
	assert.Equal(t, uint64(1), st.Handled)
	assert.Equal(t, uint64(1), st.DeadLettered)
	assert.Equal(t, int64(1), sink.n.Load())
	atRest(t, "user", st)
}

// TestBusDeadLetterLogIsThrottled: Bus.DeadLetter's letters are logged like the
// bus's own dead letters: at most once per handler per second
// (WithLogInterval), so a transport that gives up on a burst of messages
// logs one line, not one per letter.
func TestBusDeadLetterLogIsThrottled(t *testing.T) {
	var lines atomic.Int64
	logger := slog.New(countingHandler{n: &lines, msg: "dead letter"})
	b, err := eventbus.New(eventbus.WithLogger(logger), eventbus.WithDeadLetter(&sinkRecorder{}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	conn := &testConn{uid: "alice", id: 1}
	for range 50 {
		b.DeadLetter(&eventbus.DeadLetter{Event: &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn},
			Err: context.DeadlineExceeded, Attempts: 5, Handler: "nats-relay", Time: time.Now()})
	}
	require.LessOrEqual(t, lines.Load(), int64(1), "50 letters from one handler within a second")
}

// countingHandler counts the records whose message contains msg.
type countingHandler struct {
	n   *atomic.Int64
	msg string
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.msg) {
		h.n.Add(1)
	}
	return nil
}

func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

func (h countingHandler) WithGroup(string) slog.Handler { return h }
