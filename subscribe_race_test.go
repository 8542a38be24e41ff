package eventbus_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
)

// TestSubscribeAndUseConcurrently: Subscribe and Use at the same time, from
// many goroutines, do not deadlock. (Subscribe used to catch up with
// middleware added meanwhile while still holding the bus lock: it hung.)
func TestSubscribeAndUseConcurrently(t *testing.T) {
	b := newBus(t)
	mustStart(t, b)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if g%2 == 0 {
					b.Use(func(next eventbus.HandlerFunc) eventbus.HandlerFunc { return next })
					continue
				}
				_, err := eventbus.Subscribe(b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
					return nil
				}, eventbus.WithName(fmt.Sprintf("s%d-%d", g, i)))
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	coreWaitGroup(t, &wg, 20*time.Second, "Subscribe and Use")
}
