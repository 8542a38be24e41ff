package eventbus_test

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// busyFor spins for d: a handler doing d of work.
func busyFor(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

func TestObserverOutcomes(t *testing.T) {
	rec := &obsRecorder{}
	b := newBus(t, eventbus.WithObserver(rec), eventbus.WithRetry(fastPolicy(3)),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	entered, release := make(chan struct{}), make(chan struct{})
	mustRegister(t, b, eventbus.EventOnConnect, func(ctx context.Context, ev *eventbus.UserContext) error {
		close(entered)
		<-release
		return nil
	}, eventbus.WithName("gate"))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		busyFor(5 * time.Millisecond)
		return nil
	}, eventbus.WithName("ok"))
	mustRegister(t, b, eventbus.EventRecvAck, func(ctx context.Context, ev *eventbus.UserContext) error {
		if info, _ := eventbus.CallInfoFrom(ctx); info.Attempt == 1 {
			return errBoom
		}
		return nil
	}, eventbus.WithName("flaky"))
	mustRegister(t, b, eventbus.EventConnClose, func(ctx context.Context, ev *eventbus.UserContext) error {
		return errBoom
	}, eventbus.WithName("broken"), eventbus.WithHandlerRetry(fastPolicy(2)))
	mustRegister(t, b, eventbus.EventConnect, func(ctx context.Context, ev *eventbus.UserContext) error {
		return eventbus.ErrStopChain
	}, eventbus.WithName("stopper"))
	mustStart(t, b)

	// The OnSend event waits at least 20ms behind the gate.
	relAdd(t, b, userEvent(eventbus.EventOnConnect, "gate"))
	recvWithin(t, entered, 5*time.Second, "gate handler")
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	<-time.After(20 * time.Millisecond)
	close(release)
	relAdd(t, b, userEvent(eventbus.EventRecvAck, "bob"))
	relAdd(t, b, userEvent(eventbus.EventConnClose, "carol"))
	relAdd(t, b, userEvent(eventbus.EventConnect, "dave"))
	idleWithin(t, b, 5*time.Second)

	rec.mu.Lock()
	all := append([]eventbus.Observation(nil), rec.obs...)
	rec.mu.Unlock()
	require.Len(t, all, 7, "gate, ok, flaky x2, broken x2, stopper")
	for _, o := range all {
		assert.Equal(t, eventbus.PoolUser, o.Pool)
		assert.Equal(t, 1, o.Events)
		assert.GreaterOrEqual(t, o.Queued, time.Duration(0))
		assert.GreaterOrEqual(t, o.InHandler, time.Duration(0))
	}

	sent := rec.of(eventbus.EventOnSend)
	require.Len(t, sent, 1)
	assert.Equal(t, eventbus.OutcomeHandled, sent[0].Outcome)
	assert.NoError(t, sent[0].Err)
	assert.GreaterOrEqual(t, sent[0].Queued, 20*time.Millisecond, "it waited behind the gate")
	assert.GreaterOrEqual(t, sent[0].InHandler, 5*time.Millisecond, "its handler worked 5ms")

	acks := rec.of(eventbus.EventRecvAck)
	require.Len(t, acks, 2)
	assert.Equal(t, eventbus.OutcomeRetried, acks[0].Outcome)
	assert.Equal(t, "flaky", acks[0].Handler)
	assert.Equal(t, 1, acks[0].Attempt)
	assert.ErrorIs(t, acks[0].Err, errBoom)
	assert.Equal(t, eventbus.OutcomeHandled, acks[1].Outcome)
	assert.GreaterOrEqual(t, acks[1].Queued, acks[0].Queued, "the retry ran later")

	closes := rec.of(eventbus.EventConnClose)
	require.Len(t, closes, 2)
	assert.Equal(t, eventbus.OutcomeRetried, closes[0].Outcome)
	assert.Equal(t, 1, closes[0].Attempt)
	assert.Equal(t, eventbus.OutcomeDeadLettered, closes[1].Outcome)
	assert.Equal(t, "broken", closes[1].Handler)
	assert.Equal(t, 2, closes[1].Attempt)
	assert.ErrorIs(t, closes[1].Err, errBoom)

	stops := rec.of(eventbus.EventConnect)
	require.Len(t, stops, 1)
	assert.Equal(t, eventbus.OutcomeStopped, stops[0].Outcome)
	assert.Equal(t, "stopper", stops[0].Handler)
	assert.Equal(t, 1, stops[0].Attempt)
	assert.ErrorIs(t, stops[0].Err, eventbus.ErrStopChain)

	assert.Equal(t, "handled", eventbus.OutcomeHandled.String())
	assert.Equal(t, "dead-lettered", eventbus.OutcomeDeadLettered.String())
}

func TestObserverQueuedExcludesHandlerTime(t *testing.T) {
	// On an idle bus an event waits microseconds; its handler works 30ms.
	// Queued is the wait before the run, InHandler the run.
	// Queued is bounded by the time from the add to the handler's entry
	// (measured here, so the bound holds on a machine of any speed).
	rec := &obsRecorder{}
	b := newBus(t, eventbus.WithObserver(rec))
	entered := make(chan time.Time, 1)
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		entered <- time.Now()
		busyFor(30 * time.Millisecond)
		return nil
	})
	mustStart(t, b)
	added := time.Now()
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)
	wait := (<-entered).Sub(added)
	obs := rec.of(eventbus.EventOnSend)
	require.Len(t, obs, 1)
	t.Logf("Queued %v, InHandler %v; add to handler entry %v", obs[0].Queued, obs[0].InHandler, wait)
	assert.GreaterOrEqual(t, obs[0].InHandler, 30*time.Millisecond)
	assert.LessOrEqual(t, obs[0].Queued, wait, "Queued counts the handler's 30ms")
}

func TestObserverDeadLetterReportsRunTime(t *testing.T) {
	// The last failed attempt is a run of the chain like any other: its
	// OutcomeDeadLettered observation says how long it took.
	rec := &obsRecorder{}
	b := newBus(t, eventbus.WithObserver(rec), eventbus.WithRetry(fastPolicy(1)))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		busyFor(10 * time.Millisecond)
		return errBoom
	})
	mustStart(t, b)
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)
	obs := rec.of(eventbus.EventOnSend)
	require.Len(t, obs, 1)
	assert.Equal(t, eventbus.OutcomeDeadLettered, obs[0].Outcome)
	assert.GreaterOrEqual(t, obs[0].InHandler, 10*time.Millisecond, "InHandler of the final attempt")
}

func TestObserverSeesGoexitAttempt(t *testing.T) {
	// Every failed attempt is observed, a runtime.Goexit included.
	rec := &obsRecorder{}
	b := newBus(t, eventbus.WithObserver(rec), eventbus.WithRetry(fastPolicy(2)))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if info, _ := eventbus.CallInfoFrom(ctx); info.Attempt == 1 {
			runtime.Goexit()
		}
		return nil
	}, eventbus.WithName("exiter"))
	mustStart(t, b)
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)
	assert.EqualValues(t, 1, b.Stats().User.Retried)
	obs := rec.of(eventbus.EventOnSend)
	var outcomes []eventbus.Outcome
	for _, o := range obs {
		outcomes = append(outcomes, o.Outcome)
	}
	require.Equal(t, []eventbus.Outcome{eventbus.OutcomeRetried, eventbus.OutcomeHandled}, outcomes)
	var pe *eventbus.PanicError
	assert.ErrorAs(t, obs[0].Err, &pe)
	assert.Equal(t, "exiter", obs[0].Handler)
}

type panickyObserver struct{ calls atomic.Int64 }

func (o *panickyObserver) Observe(eventbus.Observation) {
	o.calls.Add(1)
	panic("observer exploded")
}

func TestObserverPanicIsRecovered(t *testing.T) {
	obs := &panickyObserver{}
	sink := &sinkRecorder{}
	b, err := eventbus.New(eventbus.WithLogger(quiet), eventbus.WithObserver(obs), eventbus.WithDeadLetter(sink),
		eventbus.WithRetry(fastPolicy(2)), eventbus.WithUserPool(eventbus.PoolConfig{Workers: 2}))
	require.NoError(t, err)
	t.Cleanup(func() { relCloseAtEnd(b) })
	var handled atomic.Int64
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame == "bad" {
			return errBoom
		}
		handled.Add(1)
		return nil
	})
	mustStart(t, b)
	bad := userEvent(eventbus.EventOnSend, "u0")
	bad.Frame = "bad"
	relAdd(t, b, bad)
	for i := range 50 {
		relAdd(t, b, userEvent(eventbus.EventOnSend, []string{"u0", "u1", "u2"}[i%3]))
	}
	idleWithin(t, b, 5*time.Second)

	assert.EqualValues(t, 50, handled.Load())
	assert.Len(t, sink.all(), 1, "the dead letter reached the sink")
	assert.EqualValues(t, 52, obs.calls.Load(), "50 handled + 1 retried + 1 dead-lettered")
	s := b.Stats().User
	assert.EqualValues(t, 50, s.Handled)
	assert.EqualValues(t, 1, s.DeadLettered)
	assert.Zero(t, s.Panics, "an observer panic is not a handler panic")
	atRest(t, "user", s)
	relClose(t, b)
}

func TestStatsLatencyQuantiles(t *testing.T) {
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	before := b.Stats().User.Latency
	assert.Zero(t, before, "no samples before any event")
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame == "slow" {
			busyFor(2 * time.Millisecond)
		}
		return nil
	})
	mustStart(t, b)
	slow := userEvent(eventbus.EventOnSend, "alice")
	slow.Frame = "slow" // the first run is sampled
	relAdd(t, b, slow)
	idleWithin(t, b, 5*time.Second)
	for range 1000 {
		relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	}
	idleWithin(t, b, 5*time.Second)

	lat := b.Stats().User.Latency
	t.Logf("latency: P50 %v, P99 %v, Max %v", lat.P50, lat.P99, lat.Max)
	assert.Positive(t, lat.P50)
	assert.LessOrEqual(t, lat.P50, lat.P99)
	assert.LessOrEqual(t, lat.P99, lat.Max)
	assert.GreaterOrEqual(t, lat.Max, 2*time.Millisecond, "the slow run is the maximum")
	assert.Less(t, lat.P50, 2*time.Millisecond, "most runs are fast")
	assert.Less(t, lat.Max, time.Second)
}

func TestStatsLatencyQuantilesNeverAboveMax(t *testing.T) {
	// One sampled run of about 17ms: P50 and P99 are that run, and so is
	// Max. A quantile above Max is impossible data.
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		busyFor(17 * time.Millisecond)
		return nil
	})
	mustStart(t, b)
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)
	lat := b.Stats().User.Latency
	t.Logf("latency: P50 %v, P99 %v, Max %v", lat.P50, lat.P99, lat.Max)
	assert.GreaterOrEqual(t, lat.Max, 17*time.Millisecond)
	assert.LessOrEqual(t, lat.P50, lat.P99)
	assert.LessOrEqual(t, lat.P99, lat.Max, "P99 above Max")
}

// goexitObserver calls runtime.Goexit the first time it sees outcome.
type goexitObserver struct {
	outcome eventbus.Outcome
	once    sync.Once
}

func (o *goexitObserver) Observe(ob eventbus.Observation) {
	if ob.Outcome == o.outcome {
		o.once.Do(runtime.Goexit)
	}
}

// TestObserverGoexitAfterStopIsNotRetried: an observer calling
// Goexit after a Stopped run does not turn the stop into a failure.
func TestObserverGoexitAfterStopIsNotRetried(t *testing.T) {
	b := newBus(t, eventbus.WithObserver(&goexitObserver{outcome: eventbus.OutcomeStopped}),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	var runs atomic.Int64
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		runs.Add(1)
		return eventbus.ErrStopChain
	})
	mustStart(t, b)
	relAdd(t, b, userEvent(eventbus.EventOnSend, "alice"))
	idleWithin(t, b, 5*time.Second)
	st := b.Stats().User
	assert.Equal(t, int64(1), runs.Load(), "the handler ran once")
	assert.Equal(t, uint64(1), st.Stopped)
	assert.Zero(t, st.Failed)
	assert.Zero(t, st.Retried)
	assert.Zero(t, st.Panics)
	atRest(t, "user", st)
}
