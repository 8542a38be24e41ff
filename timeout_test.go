package eventbus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHandlerTimeoutCancelsEachAttemptAndRetries(t *testing.T) {
	const timeout = 50 * time.Millisecond
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithRetry(fastPolicy(3)),
		eventbus.WithUserPool(eventbus.PoolConfig{HandlerTimeout: timeout}))

	type seen struct {
		attempt      int
		errAtStart   error
		hasDeadline  bool
		untilTimeout time.Duration
		errAtEnd     error
		took         time.Duration
	}
	var mu sync.Mutex
	var attempts []seen
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		start := time.Now()
		info, _ := eventbus.CallInfoFrom(ctx)
		dl, ok := ctx.Deadline()
		s := seen{attempt: info.Attempt, errAtStart: ctx.Err(), hasDeadline: ok, untilTimeout: dl.Sub(start)}
		var err error
		if info.Attempt < 3 || ev.Frame == "always" {
			select { // a handler that honours its context
			case <-ctx.Done():
				err = ctx.Err()
			case <-time.After(5 * time.Second):
				err = errors.New("context never cancelled")
			}
		}
		s.errAtEnd, s.took = err, time.Since(start)
		mu.Lock()
		attempts = append(attempts, s)
		mu.Unlock()
		return err
	}, eventbus.WithName("slow-db"))
	mustStart(t, b)

	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)

	mu.Lock()
	require.Len(t, attempts, 3)
	for i, s := range attempts {
		assert.Equal(t, i+1, s.attempt)
		assert.NoError(t, s.errAtStart, "attempt %d starts with a live context", s.attempt)
		assert.True(t, s.hasDeadline, "attempt %d has a deadline", s.attempt)
		assert.Positive(t, s.untilTimeout, "attempt %d's deadline is ahead", s.attempt)
		assert.LessOrEqual(t, s.untilTimeout, timeout, "attempt %d's deadline is HandlerTimeout away", s.attempt)
		if i < 2 {
			assert.ErrorIs(t, s.errAtEnd, context.DeadlineExceeded, "attempt %d timed out", s.attempt)
			// The deadline is set before the handler starts: it waited from
			// its own start until that deadline, not a whole timeout.
			assert.GreaterOrEqual(t, s.took, s.untilTimeout, "attempt %d was cancelled at its deadline, not before", s.attempt)
			assert.Less(t, s.took, time.Second)
		}
	}
	mu.Unlock()
	assert.Empty(t, sink.all())
	s := b.Stats().User
	assert.EqualValues(t, 2, s.Timeouts)
	assert.EqualValues(t, 2, s.Failed)
	assert.EqualValues(t, 2, s.Retried)
	assert.EqualValues(t, 1, s.Handled)
	atRest(t, "user", s)

	// Timing out on every attempt ends in the sink.
	ev := userEvent(eventbus.EventOnSend, "bob")
	ev.Frame = "always"
	relAdd(t, b, ev)
	idleWithin(t, b, 5*time.Second)
	letters := sink.all()
	require.Len(t, letters, 1)
	assert.ErrorIs(t, letters[0].Err, context.DeadlineExceeded)
	assert.Equal(t, 3, letters[0].Attempts)
	s = b.Stats().User
	assert.EqualValues(t, 5, s.Timeouts)
	assert.EqualValues(t, 1, s.DeadLettered)
	atRest(t, "user", s)
}

func TestHandlerTimeoutOnlyInItsPool(t *testing.T) {
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{HandlerTimeout: time.Minute}))
	got := make(chan bool, 2)
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		_, ok := ctx.Deadline()
		got <- ok
		return nil
	})
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		_, ok := ctx.Deadline()
		got <- ok
		return nil
	})
	mustStart(t, b)
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	assert.True(t, recvWithin(t, got, 5*time.Second, "user handler"), "user pool has a timeout")
	relAdd(t, b, &eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: "g"})
	assert.False(t, recvWithin(t, got, 5*time.Second, "channel handler"), "channel pool has none")
}

func TestCloseNotHeldByHandlerIgnoringContext(t *testing.T) {
	// The handler would run for 10s and ignores its context; Close gives up
	// at its deadline. Once the handler returns, a second Close is clean.
	sink := newNotifySink()
	b, err := eventbus.New(eventbus.WithLogger(quiet), eventbus.WithDeadLetter(sink),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, HandlerTimeout: time.Minute}))
	require.NoError(t, err)
	entered, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(func() {
		unblock()
		relCloseAtEnd(b)
	})
	ctxErr := make(chan error, 1)
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame != "stuck" {
			return nil
		}
		close(entered)
		select { // ignores ctx: stands for 10s of uninterruptible work
		case <-release:
		case <-time.After(10 * time.Second):
		}
		ctxErr <- ctx.Err()
		return nil
	}, eventbus.WithName("stuck"))
	mustStart(t, b)

	stuck := userEvent(eventbus.EventOnSend, "alice")
	stuck.Frame = "stuck"
	relAdd(t, b, stuck)
	recvWithin(t, entered, 5*time.Second, "stuck handler")
	behind := userEvent(eventbus.EventOnSend, "alice")
	relAdd(t, b, behind)

	const wait = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	err = b.Close(ctx)
	took := time.Since(start)
	t.Logf("Close returned after %v: %v", took, err)
	var ce *eventbus.CloseError
	require.ErrorAs(t, err, &ce)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, ce.Left, 2, "the stuck event and the one behind it")
	assert.Less(t, took, wait+500*time.Millisecond, "Close overran its deadline")

	d := recvWithin(t, sink.ch, 2*time.Second, "dead letter of the queued event")
	assert.Same(t, behind, d.Event)
	assert.ErrorIs(t, d.Err, eventbus.ErrClosed)
	assert.ErrorIs(t, b.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "bob")), eventbus.ErrClosed)

	// While the handler is still inside, a short Close reports the wait.
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	assert.Error(t, b.Close(short), "a worker is still inside a handler")

	unblock()
	assert.ErrorIs(t, recvWithin(t, ctxErr, 5*time.Second, "handler return"), context.Canceled,
		"the handler's context was cancelled when Close gave up")
	require.NoError(t, b.Close(deadline(t, 5*time.Second)), "second Close once the handler returned")
	require.NoError(t, b.Close(context.Background()), "and again, at once")

	s := b.Stats().User
	assert.EqualValues(t, 2, s.Added)
	assert.EqualValues(t, 1, s.Handled, "the stuck event ends with its handler's result")
	assert.EqualValues(t, 1, s.DeadLettered)
	assert.Len(t, sink.all(), 1)
	atRest(t, "user", s)
}

// TestHandlerOverrunningTimeoutThenSucceedingCountsTimeout: a handler that
// ignores its context, runs past HandlerTimeout and then returns nil is
// handled (no retry, no failure), and the overrun shows in Stats.Timeouts.
func TestHandlerOverrunningTimeoutThenSucceedingCountsTimeout(t *testing.T) {
	const timeout = 5 * time.Millisecond
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{HandlerTimeout: timeout}))
	var calls int
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		calls++
		<-ctx.Done() // past its timeout, then a success all the same
		return nil
	}, eventbus.WithName("overrun"))
	mustStart(t, b)
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)

	s := b.Stats().User
	assert.Equal(t, 1, calls, "a success after the timeout is not retried")
	assert.EqualValues(t, 1, s.Handled)
	assert.EqualValues(t, 0, s.Failed)
	assert.EqualValues(t, 1, s.Timeouts, "the overrun is counted")
	atRest(t, "user", s)
}
