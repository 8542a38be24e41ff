package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/journal"
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
// Fixed in the journal: a batch nobody waits for is written without an
// fsync of its own.
func TestDurableAcksHaveNoFsyncOfTheirOwn(t *testing.T) {
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

// TestDurableReplayAheadOfAddsDuringStart: Start queues each key's
// replayed events "ahead of any later add of that key" (DESIGN §6). Found:
// Start marks the bus started before it replays, so an AddEvent made while
// Start is still replaying (a producer that began before Start returned,
// retrying on ErrNotStarted) is accepted and queued between the replayed
// events of its key: it runs before older events of that key. Its record,
// appended while the journal's Replay is still going through the pending
// records, is then replayed too: the event runs twice. Fixed: adds are
// refused (ErrNotStarted) until Start has queued the replay.
func TestDurableReplayAheadOfAddsDuringStart(t *testing.T) {
	dir := t.TempDir()
	j := openJournal(t, dir)
	const n = 20_000
	enc := newBus(t) // only encodes
	recs := make([]journal.Record, n)
	for i := range recs {
		data, err := enc.EncodeEvent(storeEvent("g", uint64(i)))
		require.NoError(t, err)
		recs[i] = journal.Record{Type: uint8(eventbus.EventChannelStore), Payload: data}
	}
	_, err := j.Append(recs...)
	require.NoError(t, err)

	b := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore))
	var mu sync.Mutex
	var order []uint64
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		mu.Lock()
		order = append(order, ev.Messages[0].MessageSeq)
		mu.Unlock()
		return nil
	})
	var startReturned atomic.Bool
	addedEarly := make(chan bool, 1)
	go func() {
		for { // a producer that starts with the process: it adds as soon as the bus takes events
			err := b.AddEvent(context.Background(), storeEvent("g", n))
			if !errors.Is(err, eventbus.ErrNotStarted) {
				assert.NoError(t, err)
				addedEarly <- !startReturned.Load()
				return
			}
			runtime.Gosched()
		}
	}()
	mustStart(t, b)
	startReturned.Store(true)
	early := recvWithin(t, addedEarly, 10*time.Second, "the producer's add")
	idleWithin(t, b, 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	var at []int
	for i, seq := range order {
		if seq == n {
			at = append(at, i)
		}
	}
	t.Logf("the producer's AddEvent returned before Start did: %v; its event ran at positions %v of %d", early, at, len(order))
	assert.Equal(t, []int{n}, at, "the new event of key g runs once, after the %d replayed events of g", n)
}
