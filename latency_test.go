package eventbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
)

// TestLatencyMaxIsExact: one slow run among thousands of fast ones shows
// in Max with its true duration (every run is counted, not a sample; a
// stretch timed together adds only fast runs to it), and P99 stays with
// the fast ones.
func TestLatencyMaxIsExact(t *testing.T) {
	const slow = 300 * time.Millisecond
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame == "slow" {
			time.Sleep(slow) // the slow run being measured
		}
		return nil
	})
	mustStart(t, b)
	for i := range 5000 {
		ev := userEvent(eventbus.EventOnSend, "alice")
		if i == 2500 {
			ev.Frame = "slow"
		}
		relAdd(t, b, ev)
	}
	idleWithin(t, b, 10*time.Second)
	lat := b.Stats().User.Latency
	t.Logf("latency: %+v", lat)
	assert.GreaterOrEqual(t, lat.Max, slow, "Max shows the slow run")
	assert.Less(t, lat.Max, slow+slow/2)
	assert.Less(t, lat.P99, slow/10, "P99 is the fast runs'")
	assert.Positive(t, lat.P50)
}
