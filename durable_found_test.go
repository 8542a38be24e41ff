package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imbus/eventbus"
)

// TestDurableRedriveSeesFreshDeadLetters: once WaitIdle has returned, the
// events it waited for have been dead-lettered, so Bus.Redrive re-drives
// them. Found: Redrive read the journal's list without waiting for the
// DeadLetter writes queued before it (the journal applies them to its list
// once written), so right after WaitIdle it found nothing to re-drive and
// returned 0, nil: the dead letters stayed in the list, and nothing said so.
// Fixed in durable.go: Redrive first calls the store's Sync when it has one.
func TestDurableRedriveSeesFreshDeadLetters(t *testing.T) {
	j := openJournal(t, t.TempDir())
	b := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithRetry(eventbus.NoRetry))
	var broken atomic.Bool
	var stored atomic.Int64
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		if broken.Load() {
			return errors.New("disk full")
		}
		stored.Add(1)
		return nil
	})
	mustStart(t, b)
	const rounds = 20
	for i := range rounds {
		broken.Store(true)
		relAdd(t, b, storeEvent(fmt.Sprint("g", i), uint64(i)))
		idleWithin(t, b, 5*time.Second)
		broken.Store(false)
		n, err := b.Redrive(context.Background())
		require.NoError(t, err)
		if !assert.Equal(t, 1, n, "round %d: the event dead-lettered before WaitIdle returned is re-driven", i) {
			break
		}
		idleWithin(t, b, 5*time.Second)
	}
	require.NoError(t, j.Sync())
	dls, err := j.DeadLetters()
	require.NoError(t, err)
	assert.Empty(t, dls)
	assert.Equal(t, int64(rounds), stored.Load())
}
