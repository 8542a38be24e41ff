package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Reliability tests: retries, parking, dead letters, close during retries,
// runtime.Goexit. Helpers shared by the reliability files (retry, soak,
// timeout, batch, observer, deadletter, ctxvalues) carry a "rel" prefix;
// those every test file uses are in helpers_test.go.

var errBoom = errors.New("boom")

// relAdd adds ev with a deadline or fails the test.
func relAdd(t testing.TB, b *eventbus.Bus, ev eventbus.Event) {
	t.Helper()
	require.NoError(t, b.AddEvent(deadline(t, 5*time.Second), ev))
}

// relClose closes b with a deadline and requires a clean close.
func relClose(t testing.TB, b *eventbus.Bus) {
	t.Helper()
	require.NoError(t, b.Close(deadline(t, 5*time.Second)))
}

// relCloseAtEnd closes b in a cleanup, bounded, whatever the test's state.
func relCloseAtEnd(b *eventbus.Bus) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = b.Close(ctx)
}

// fastPolicy is a retry policy of the given attempts with small, exact
// backoffs (1ms, then 2ms).
func fastPolicy(attempts int) eventbus.RetryPolicy {
	return eventbus.RetryPolicy{MaxAttempts: attempts, InitialBackoff: time.Millisecond,
		MaxBackoff: 2 * time.Millisecond, Jitter: -1}
}

// relCall is one handler attempt as a handler saw it.
type relCall struct {
	Handler    string
	Index      int
	Attempt    int
	Start, End time.Time
	Event      eventbus.Event
}

// callLog records handler attempts from any goroutine.
type callLog struct {
	mu    sync.Mutex
	calls []relCall
}

// begin records the start of an attempt from its handler context.
func (l *callLog) begin(ctx context.Context, ev eventbus.Event) int {
	info, _ := eventbus.CallInfoFrom(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, relCall{Handler: info.Handler, Index: info.Index,
		Attempt: info.Attempt, Start: time.Now(), Event: ev})
	return len(l.calls) - 1
}

// end records the end of the attempt begin returned.
func (l *callLog) end(i int) {
	l.mu.Lock()
	l.calls[i].End = time.Now()
	l.mu.Unlock()
}

func (l *callLog) all() []relCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// trail renders calls as "handler:attempt" for compact comparisons.
func (l *callLog) trail() []string {
	var out []string
	for _, c := range l.all() {
		out = append(out, fmt.Sprintf("%s:%d", c.Handler, c.Attempt))
	}
	return out
}

// notifySink records dead letters and signals each on a channel.
type notifySink struct {
	sinkRecorder
	ch chan *eventbus.DeadLetter
}

func newNotifySink() *notifySink {
	return &notifySink{ch: make(chan *eventbus.DeadLetter, 1024)}
}

func (s *notifySink) DeadLetter(d *eventbus.DeadLetter) {
	s.sinkRecorder.DeadLetter(d)
	s.ch <- d
}

func TestRetryDefaultPolicyThreeAttempts(t *testing.T) {
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink)) // no retry option: defaults
	var log callLog
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		defer log.end(log.begin(ctx, ev))
		return errBoom
	}, eventbus.WithName("broken"))
	mustStart(t, b)

	ev := userEvent(eventbus.EventOnSend, "alice")
	relAdd(t, b, ev)
	idleWithin(t, b, 5*time.Second)

	assert.Equal(t, []string{"broken:1", "broken:2", "broken:3"}, log.trail())
	letters := sink.all()
	require.Len(t, letters, 1)
	assert.Same(t, ev, letters[0].Event)
	assert.Equal(t, 3, letters[0].Attempts)
	assert.ErrorIs(t, letters[0].Err, errBoom)

	s := b.Stats().User
	assert.EqualValues(t, 1, s.Added)
	assert.EqualValues(t, 3, s.Failed)
	assert.EqualValues(t, 2, s.Retried)
	assert.EqualValues(t, 1, s.DeadLettered)
	assert.Zero(t, s.Handled)
	atRest(t, "user", s)
}

func TestRetrySucceedsOnThirdAttempt(t *testing.T) {
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithRetry(fastPolicy(0)))
	var log callLog
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		i := log.begin(ctx, ev)
		defer log.end(i)
		if info, _ := eventbus.CallInfoFrom(ctx); info.Attempt < 3 {
			return errBoom
		}
		return nil
	}, eventbus.WithName("flaky"))
	mustStart(t, b)

	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)

	assert.Equal(t, []string{"flaky:1", "flaky:2", "flaky:3"}, log.trail())
	assert.Empty(t, sink.all())
	s := b.Stats().User
	assert.EqualValues(t, 1, s.Handled)
	assert.EqualValues(t, 2, s.Failed)
	assert.EqualValues(t, 2, s.Retried)
	assert.Zero(t, s.DeadLettered)
	atRest(t, "user", s)
}

func TestRetryPermanentGoesStraightToDeadLetter(t *testing.T) {
	require.NoError(t, eventbus.Permanent(nil))
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithRetry(fastPolicy(5)))
	var log callLog
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		defer log.end(log.begin(ctx, ev))
		return fmt.Errorf("decode: %w", eventbus.Permanent(errBoom))
	}, eventbus.WithName("decoder"))
	mustStart(t, b)

	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)

	assert.Equal(t, []string{"decoder:1"}, log.trail(), "a permanent error is never retried")
	letters := sink.all()
	require.Len(t, letters, 1)
	assert.True(t, eventbus.IsPermanent(letters[0].Err), "dead letter error %v is permanent", letters[0].Err)
	assert.ErrorIs(t, letters[0].Err, errBoom)
	assert.Equal(t, 1, letters[0].Attempts)
	assert.Equal(t, "decoder", letters[0].Handler)
	assert.False(t, eventbus.IsPermanent(errBoom))

	s := b.Stats().User
	assert.EqualValues(t, 1, s.Failed)
	assert.Zero(t, s.Retried)
	assert.EqualValues(t, 1, s.DeadLettered)
	atRest(t, "user", s)
}

func TestRetryStopChainIsNeverRetried(t *testing.T) {
	for name, stop := range map[string]error{
		"sentinel": eventbus.ErrStopChain,
		"wrapped":  fmt.Errorf("audit rejected message: %w", eventbus.ErrStopChain),
	} {
		t.Run(name, func(t *testing.T) {
			sink := &sinkRecorder{}
			b := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithRetry(fastPolicy(5)))
			var log callLog
			mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
				defer log.end(log.begin(ctx, ev))
				return stop
			}, eventbus.WithName("audit"))
			mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
				defer log.end(log.begin(ctx, ev))
				return nil
			}, eventbus.WithName("store"))
			mustStart(t, b)

			relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
			idleWithin(t, b, 5*time.Second)

			assert.Equal(t, []string{"audit:1"}, log.trail(), "stop ends the chain, no retry")
			assert.Empty(t, sink.all())
			s := b.Stats().User
			assert.EqualValues(t, 1, s.Stopped)
			assert.Zero(t, s.Failed)
			assert.Zero(t, s.Retried)
			assert.Zero(t, s.Handled)
			atRest(t, "user", s)
		})
	}
}

func TestRetryResumesAtFailedHandler(t *testing.T) {
	b := newBus(t, eventbus.WithRetry(fastPolicy(3)))
	var log callLog
	step := func(name string, failUntil int) {
		mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
			defer log.end(log.begin(ctx, ev))
			if info, _ := eventbus.CallInfoFrom(ctx); info.Attempt < failUntil {
				return errBoom
			}
			return nil
		}, eventbus.WithName(name))
	}
	step("h1", 0)
	step("h2", 3) // fails attempts 1 and 2
	step("h3", 0)
	mustStart(t, b)

	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)

	assert.Equal(t, []string{"h1:1", "h2:1", "h2:2", "h2:3", "h3:1"}, log.trail(),
		"the retry starts at the failed handler; h1 runs once")
	var idx []int
	for _, c := range log.all() {
		idx = append(idx, c.Index)
	}
	assert.Equal(t, []int{0, 1, 1, 1, 2}, idx)
	s := b.Stats().User
	assert.EqualValues(t, 1, s.Handled)
	assert.EqualValues(t, 2, s.Retried)
	atRest(t, "user", s)
}

func TestRetryKeepsChainSnapshotOfFirstAttempt(t *testing.T) {
	// h2's backoff is long enough for the test to change the registry
	// between attempt 1 and attempt 2; attempt 2 checks that it did.
	b := newBus(t, eventbus.WithRetry(fastPolicy(3)))
	var log callLog
	var changed atomic.Bool
	changedBeforeRetry := make(chan bool, 1)
	failed := make(chan struct{}, 1)
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		defer log.end(log.begin(ctx, ev))
		return nil
	}, eventbus.WithName("h1"))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		defer log.end(log.begin(ctx, ev))
		info, _ := eventbus.CallInfoFrom(ctx)
		if info.Attempt == 1 {
			failed <- struct{}{}
			return errBoom
		}
		changedBeforeRetry <- changed.Load()
		return nil
	}, eventbus.WithName("h2"), eventbus.WithHandlerRetry(eventbus.RetryPolicy{
		MaxAttempts: 2, InitialBackoff: 300 * time.Millisecond, Jitter: -1}))
	h3 := mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		defer log.end(log.begin(ctx, ev))
		return nil
	}, eventbus.WithName("h3"))
	mustStart(t, b)

	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	recvWithin(t, failed, 5*time.Second, "first failure of h2")

	// Between the attempts: h3 goes away and h2 is replaced.
	h3.Unregister()
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		defer log.end(log.begin(ctx, ev))
		return nil
	}, eventbus.Replace("h2"), eventbus.WithName("h2new"))
	changed.Store(true)

	require.True(t, recvWithin(t, changedBeforeRetry, 5*time.Second, "retry of h2"),
		"the registry change did not happen before the retry: the test proves nothing")
	idleWithin(t, b, 5*time.Second)
	assert.Equal(t, []string{"h1:1", "h2:1", "h2:2", "h3:1"}, log.trail(),
		"the retrying event keeps the chain it started with")

	// A new event sees the new chain.
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)
	assert.Equal(t, []string{"h1:1", "h2:1", "h2:2", "h3:1", "h1:1", "h2new:1"}, log.trail())
}

func TestRetryPolicyPrecedence(t *testing.T) {
	// Bus: 2 attempts. User pool: 4. A handler option: 5 (or 1).
	sink := &sinkRecorder{}
	poolPolicy := fastPolicy(4)
	b := newBus(t, eventbus.WithDeadLetter(sink),
		eventbus.WithRetry(fastPolicy(2)),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 2, Retry: &poolPolicy}))
	attempts := map[string]*atomic.Int32{}
	for _, n := range []string{"channel-bus", "user-pool", "user-handler5", "user-handler1"} {
		attempts[n] = new(atomic.Int32)
	}
	failUser := func(name string) eventbus.Handler[eventbus.UserContext] {
		return func(ctx context.Context, ev *eventbus.UserContext) error {
			attempts[name].Add(1)
			return errBoom
		}
	}
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		attempts["channel-bus"].Add(1)
		return errBoom
	}, eventbus.WithName("channel-bus"))
	mustRegister(t, b, eventbus.EventOnSend, failUser("user-pool"), eventbus.WithName("user-pool"))
	mustRegister(t, b, eventbus.EventRecvAck, failUser("user-handler5"), eventbus.WithName("user-handler5"),
		eventbus.WithHandlerRetry(fastPolicy(5)))
	mustRegister(t, b, eventbus.EventConnClose, failUser("user-handler1"), eventbus.WithName("user-handler1"),
		eventbus.WithHandlerRetry(eventbus.RetryPolicy{MaxAttempts: 1}))
	mustStart(t, b)

	relAdd(t, b, &eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: "g1", ChannelType: 2})
	relAdd(t, b, userEvent(eventbus.EventOnSend, "u1"))
	relAdd(t, b, userEvent(eventbus.EventRecvAck, "u2"))
	relAdd(t, b, userEvent(eventbus.EventConnClose, "u3"))
	idleWithin(t, b, 5*time.Second)

	want := map[string]int{"channel-bus": 2, "user-pool": 4, "user-handler5": 5, "user-handler1": 1}
	for name, n := range want {
		assert.EqualValues(t, n, attempts[name].Load(), "attempts of %s", name)
	}
	got := map[string]int{}
	for _, d := range sink.all() {
		got[d.Handler] = d.Attempts
	}
	assert.Equal(t, want, got, "dead letters report the attempts of each policy")
}

func TestRetryBackoffBounds(t *testing.T) {
	// InitialBackoff 20ms doubling to MaxBackoff 40ms, no jitter: the waits
	// between a failure and the next attempt are 20, 40, 40ms.
	b := newBus(t, eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 4,
		InitialBackoff: 20 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, Jitter: -1}))
	var log callLog
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		defer log.end(log.begin(ctx, ev))
		return errBoom
	})
	mustStart(t, b)
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)

	calls := log.all()
	require.Len(t, calls, 4)
	want := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 40 * time.Millisecond}
	for i, w := range want {
		gap := calls[i+1].Start.Sub(calls[i].Start)
		wait := calls[i+1].Start.Sub(calls[i].End)
		t.Logf("attempt %d -> %d: start-to-start %v, failure-to-start %v (backoff %v)", i+1, i+2, gap, wait, w)
		assert.GreaterOrEqual(t, wait, w, "wait after failed attempt %d", i+1)
		assert.Less(t, gap, time.Second, "wait after failed attempt %d is absurd", i+1)
	}
}

func TestRetryBackoffCountsFromFailureOfSlowAttempt(t *testing.T) {
	// The backoff is the wait after a failed attempt. Attempt 2 takes 30ms
	// of work before failing; the wait before attempt 3 must still be 40ms,
	// not 40ms minus the time attempt 2 spent in its handler.
	b := newBus(t, eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 3,
		InitialBackoff: 40 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, Jitter: -1}))
	var log callLog
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		defer log.end(log.begin(ctx, ev))
		if info, _ := eventbus.CallInfoFrom(ctx); info.Attempt == 2 {
			<-time.After(30 * time.Millisecond) // slow work, e.g. a database timeout
		}
		return errBoom
	})
	mustStart(t, b)
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)

	calls := log.all()
	require.Len(t, calls, 3)
	for i := range 2 {
		wait := calls[i+1].Start.Sub(calls[i].End)
		t.Logf("failure of attempt %d -> attempt %d: %v", i+1, i+2, wait)
		assert.GreaterOrEqual(t, wait, 40*time.Millisecond, "wait after failed attempt %d", i+1)
	}
}

func TestRetryParksKeyNotShard(t *testing.T) {
	// One worker and one shard: every key shares the shard. "slow" fails and waits
	// a 2s backoff; 100 events of "fast" added behind it are all handled long
	// before that, while slow's later events wait for its retry.
	const backoff = 2 * time.Second
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, Shards: 1}),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 2, InitialBackoff: backoff,
			MaxBackoff: backoff, Jitter: -1}))

	var mu sync.Mutex
	var slowTrail []string // "seq:attempt"
	failedAt := make(chan time.Time, 1)
	fastDone := make(chan time.Time, 1)
	var fastSeen atomic.Int32
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		seq := ev.Frame.(int)
		if ev.Conn.UID() == "fast" {
			if fastSeen.Add(1) == 100 {
				fastDone <- time.Now()
			}
			return nil
		}
		mu.Lock()
		slowTrail = append(slowTrail, fmt.Sprintf("%d:%d", seq, info.Attempt))
		mu.Unlock()
		if seq == 1 && info.Attempt == 1 {
			failedAt <- time.Now()
			return errBoom
		}
		return nil
	})
	mustStart(t, b)

	slow := func(seq int) *eventbus.UserContext {
		ev := userEvent(eventbus.EventOnSend, "slow")
		ev.Frame = seq
		return ev
	}
	relAdd(t, b, slow(1))
	failed := recvWithin(t, failedAt, 5*time.Second, "first failure of slow#1")
	for i := range 100 {
		ev := userEvent(eventbus.EventOnSend, "fast")
		ev.Frame = i
		relAdd(t, b, ev)
		if i%25 == 0 {
			relAdd(t, b, slow(2+i/25)) // slow#2..#5, interleaved
		}
	}
	done := recvWithin(t, fastDone, backoff, "100 fast events while slow waits its backoff")
	t.Logf("100 events of another key handled %v after the failure (backoff %v)", done.Sub(failed), backoff)
	assert.Less(t, done.Sub(failed), backoff/2, "the shard was not held by the parked key")

	mu.Lock()
	assert.Equal(t, []string{"1:1"}, slowTrail, "slow's later events wait behind its retry")
	mu.Unlock()
	require.Eventually(t, func() bool {
		s := b.Stats().User
		return s.Retrying == 1 && s.Queued == 4 && s.InFlight == 0
	}, 2*time.Second, time.Millisecond, "gauges while parked: %+v", b.Stats().User)

	idleWithin(t, b, 5*time.Second)
	mu.Lock()
	assert.Equal(t, []string{"1:1", "1:2", "2:1", "3:1", "4:1", "5:1"}, slowTrail, "per-key order across the retry")
	mu.Unlock()
	s := b.Stats().User
	assert.EqualValues(t, 105, s.Handled)
	atRest(t, "user", s)
}

func TestCloseDuringRetryBackoff(t *testing.T) {
	// The event waits a 10s backoff; Close with a 200ms deadline gives up
	// quickly and the event reaches the sink with ErrClosed and its error.
	sink := newNotifySink()
	b, err := eventbus.New(eventbus.WithLogger(quiet), eventbus.WithDeadLetter(sink),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: 10 * time.Second,
			MaxBackoff: 10 * time.Second, Jitter: -1}))
	require.NoError(t, err)
	t.Cleanup(func() { relCloseAtEnd(b) })
	failed := make(chan struct{}, 1)
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		failed <- struct{}{}
		return errBoom
	}, eventbus.WithName("flaky"))
	mustStart(t, b)
	ev := userEvent(eventbus.EventOnSend, "alice")
	relAdd(t, b, ev)
	recvWithin(t, failed, 5*time.Second, "first attempt")
	require.Eventually(t, func() bool { return b.Stats().User.Retrying == 1 }, 2*time.Second, time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = b.Close(ctx)
	took := time.Since(start)
	var ce *eventbus.CloseError
	require.ErrorAs(t, err, &ce)
	assert.GreaterOrEqual(t, ce.Left, 1)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, took, time.Second, "Close waited for the backoff")
	t.Logf("Close gave up after %v with %d left", took, ce.Left)

	d := recvWithin(t, sink.ch, 2*time.Second, "dead letter of the parked event")
	assert.Same(t, ev, d.Event)
	assert.ErrorIs(t, d.Err, eventbus.ErrClosed)
	assert.ErrorIs(t, d.Err, errBoom, "the dead letter keeps the last handler error")
	assert.Equal(t, "flaky", d.Handler)
	assert.Equal(t, 1, d.Attempts, "one attempt ran before Close gave up")

	require.NoError(t, b.Close(deadline(t, 5*time.Second)), "a second Close waits for the workers")
	s := b.Stats().User
	assert.EqualValues(t, 1, s.DeadLettered)
	assert.EqualValues(t, 1, s.Failed)
	atRest(t, "user", s)
}

func TestGoexitIsRetriedAsPanicAndWorkerReplaced(t *testing.T) {
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithDeadLetter(sink), eventbus.WithRetry(fastPolicy(3)),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	var handled atomic.Int32
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		if ev.Frame == "exit-once" && info.Attempt == 1 {
			runtime.Goexit()
		}
		if ev.Frame == "exit-always" {
			runtime.Goexit()
		}
		handled.Add(1)
		return nil
	}, eventbus.WithName("exiter"))
	mustStart(t, b)

	ev := userEvent(eventbus.EventOnSend, "alice")
	ev.Frame = "exit-once"
	relAdd(t, b, ev)
	always := userEvent(eventbus.EventOnSend, "bob")
	always.Frame = "exit-always"
	relAdd(t, b, always)
	for range 10 {
		relAdd(t, b, userEvent(eventbus.EventOnSend, "carol"))
	}
	idleWithin(t, b, 5*time.Second)

	assert.EqualValues(t, 11, handled.Load(), "the replaced worker handles later events")
	letters := sink.all()
	require.Len(t, letters, 1)
	assert.Same(t, always, letters[0].Event)
	var pe *eventbus.PanicError
	assert.ErrorAs(t, letters[0].Err, &pe, "Goexit is reported as a *PanicError")
	assert.Equal(t, 3, letters[0].Attempts)

	s := b.Stats().User
	assert.EqualValues(t, 4, s.Panics, "1 + 3 Goexits")
	assert.EqualValues(t, 4, s.Failed)
	assert.EqualValues(t, 3, s.Retried)
	assert.EqualValues(t, 11, s.Handled)
	assert.EqualValues(t, 1, s.DeadLettered)
	atRest(t, "user", s)
	relClose(t, b)
}

// TestRetryBackoffNeverOverflows: huge backoffs (centuries) stay positive
// and capped, with jitter, instead of wrapping into an immediate retry.
// With Jitter 1 half the draws push the wait above the largest Duration, so
// 20 keys make a missed overflow a one-in-a-million event.
func TestRetryBackoffNeverOverflows(t *testing.T) {
	const keys = 20
	huge := time.Duration(math.MaxInt64 - 1)
	bus := newBus(t,
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 5, InitialBackoff: huge, MaxBackoff: huge, Jitter: 1}),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	attempts := make(chan int, 4*keys)
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		attempts <- info.Attempt
		return errors.New("fail")
	})
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	for k := range keys {
		require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, fmt.Sprint("u", k))))
	}
	for range keys {
		require.Equal(t, 1, <-attempts)
	}
	// The retries wait (practically) forever; none may come at once.
	// WaitIdle with a short deadline shows the events parked, not spinning.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, bus.WaitIdle(ctx), context.DeadlineExceeded)
	require.Len(t, attempts, 0, "a retry came at once: the backoff overflowed")
	require.Equal(t, int64(keys), bus.Stats().User.Retrying)
	// Close gives up on the parked retries at once instead of waiting.
	closeCtx, cancelClose := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelClose()
	var ce *eventbus.CloseError
	require.ErrorAs(t, bus.Close(closeCtx), &ce)
	require.Equal(t, keys, ce.Left)
}
