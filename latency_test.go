package eventbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
)

// TestLatencyMaxIsExact: with an Observer, one slow run among thousands of
// fast ones shows in Max with its true duration (every run is timed alone,
// not a sample), and P99 stays with the fast ones. The bounds on Max are
// the slow handler's own measured duration below and, above, the time from
// the entry of the handler before it to the entry of the one after it (one
// worker, one key: the slow run lies between them), so they hold on a
// machine of any speed. Without an Observer, Max still shows the slow run
// (never below its duration) and P99 stays with the fast ones.
func TestLatencyMaxIsExact(t *testing.T) {
	for _, observed := range []bool{true, false} {
		name := "without observer"
		if observed {
			name = "with observer"
		}
		t.Run(name, func(t *testing.T) { checkLatencyMax(t, observed) })
	}
}

func checkLatencyMax(t *testing.T, observed bool) {
	const (
		slow   = 300 * time.Millisecond
		events = 5000
		slowAt = events / 2
	)
	opts := []eventbus.Option{eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1})}
	if observed {
		opts = append(opts, eventbus.WithObserver(&obsRecorder{}))
	}
	b := newBus(t, opts...)
	var before, after time.Time // entries of the handlers around the slow one
	var took time.Duration      // the slow handler's own duration
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		switch ev.Frame.(int) {
		case slowAt - 1:
			before = time.Now()
		case slowAt:
			start := time.Now()
			time.Sleep(slow) // the slow run being measured
			took = time.Since(start)
		case slowAt + 1:
			after = time.Now()
		}
		return nil
	})
	mustStart(t, b)
	for i := range events {
		ev := userEvent(eventbus.EventOnSend, "alice")
		ev.Frame = i
		relAdd(t, b, ev)
	}
	idleWithin(t, b, 30*time.Second)
	lat := b.Stats().User.Latency
	t.Logf("latency: %+v; the slow handler took %v, %v between its neighbours' entries", lat, took, after.Sub(before))
	assert.GreaterOrEqual(t, lat.Max, took, "Max shows the slow run")
	if observed {
		assert.LessOrEqual(t, lat.Max, after.Sub(before), "Max is the slow run's, no more")
	}
	assert.Less(t, lat.P99, slow/10, "P99 is the fast runs'")
	assert.Positive(t, lat.P50)
}
