package eventbus_test

import (
	"context"
	"fmt"
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
