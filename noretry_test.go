package eventbus_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNoRetry: NoRetry works in each of the three places a policy goes,
// and overrides a retrying policy at a wider level: the failing handler
// runs once and the event goes straight to the dead-letter sink.
func TestNoRetry(t *testing.T) {
	retrying := eventbus.RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Millisecond, Jitter: -1}
	tests := []struct {
		name    string
		opts    []eventbus.Option
		handler []eventbus.HandlerOption
	}{
		{"WithRetry", []eventbus.Option{eventbus.WithRetry(eventbus.NoRetry)}, nil},
		{"PoolConfig.Retry", []eventbus.Option{eventbus.WithRetry(retrying),
			eventbus.WithUserPool(eventbus.PoolConfig{Retry: &eventbus.NoRetry})}, nil},
		{"WithHandlerRetry", []eventbus.Option{eventbus.WithRetry(retrying),
			eventbus.WithUserPool(eventbus.PoolConfig{Retry: &retrying})},
			[]eventbus.HandlerOption{eventbus.WithHandlerRetry(eventbus.NoRetry)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &sinkRecorder{}
			b := newBus(t, append(tt.opts, eventbus.WithDeadLetter(sink))...)
			var calls atomic.Int32
			boom := errors.New("boom")
			mustRegister(t, b, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error {
				calls.Add(1)
				return boom
			}, append(tt.handler, eventbus.WithName("flaky"))...)
			mustStart(t, b)
			require.NoError(t, b.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "u")))
			idleWithin(t, b, 5*time.Second)

			assert.Equal(t, int32(1), calls.Load(), "one attempt, no retry")
			letters := sink.all()
			require.Len(t, letters, 1)
			assert.Equal(t, 1, letters[0].Attempts)
			assert.Equal(t, "flaky", letters[0].Handler)
			assert.ErrorIs(t, letters[0].Err, boom)
			st := b.Stats().User
			assert.Equal(t, uint64(0), st.Retried)
			assert.Equal(t, uint64(1), st.DeadLettered)
		})
	}
	assert.Equal(t, eventbus.RetryPolicy{MaxAttempts: 1}, eventbus.NoRetry, "NoRetry is MaxAttempts 1, as the RetryPolicy doc says")
}
