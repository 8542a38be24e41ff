package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"os"
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

// TestDurableAcksHaveNoFsyncOfTheirOwn: journal/README.md says acks are
// "written with the next commit, no fsync of their own". Found: the
// journal's committer fsyncs every batch it writes, ack-only ones too
// (journal/commit.go: commit → write always calls fdatasync). With one
// producer, each durable AddEvent then costs two fsyncs: its own, and the
// one of the previous event's ack, which the next Append queues behind
// (BenchmarkDurableAdd/durable/producers=1 shows events/fsync ≈ 0.5–0.7).
// It is in the journal package, which this branch does not touch: the
// test runs only with EVENTBUS_RUN_FOUND=1 until the journal is fixed.
func TestDurableAcksHaveNoFsyncOfTheirOwn(t *testing.T) {
	if os.Getenv("EVENTBUS_RUN_FOUND") == "" {
		t.Skip("journal fsyncs ack-only batches (see the comment); run with EVENTBUS_RUN_FOUND=1")
	}
	j := openJournal(t, t.TempDir())
	b := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore))
	done := make(chan struct{}, 1)
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		done <- struct{}{}
		return nil
	})
	mustStart(t, b)
	const n = 50
	before := j.Stats().Syncs
	for i := range n {
		relAdd(t, b, storeEvent("g", uint64(i)))
		recvWithin(t, done, 5*time.Second, "the handler") // its ack is queued as the next add starts
	}
	idleWithin(t, b, 5*time.Second)
	syncs := j.Stats().Syncs - before
	assert.LessOrEqual(t, syncs, uint64(n+n/5), "fsyncs for %d durable adds, one at a time, each acked before the next", n)
	assert.Empty(t, pending(t, j))
}
