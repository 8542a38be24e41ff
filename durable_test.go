package eventbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/journal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// openJournal opens a journal in dir, closed when the test ends.
func openJournal(t testing.TB, dir string) *journal.Journal {
	t.Helper()
	j, err := journal.Open(dir, journal.WithLogger(quiet))
	require.NoError(t, err)
	t.Cleanup(func() { _ = j.Close() })
	return j
}

// storeEvent is a durable channel event carrying seq in its message.
func storeEvent(channel string, seq uint64) *eventbus.ChannelContext {
	return &eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: channel, ChannelType: 2,
		Messages: []*eventbus.Message{{MessageSeq: seq, ChannelID: channel, ChannelType: 2, FromUID: "alice",
			Payload: []byte(fmt.Sprint("m", seq)), Header: map[string]string{"client_seq": fmt.Sprint(seq)}}}}
}

// pending returns the journal's unacked records, once the acks queued so
// far are written (acks do not wait for the disk).
func pending(t testing.TB, j *journal.Journal) []journal.Record {
	t.Helper()
	require.NoError(t, j.Sync())
	recs, err := j.Pending()
	require.NoError(t, err)
	return recs
}

// TestDurableEventsAreAckedWhenHandled: durable events are handled, acked
// and, after a clean Close, a new bus on the same journal replays nothing.
func TestDurableEventsAreAckedWhenHandled(t *testing.T) {
	j := openJournal(t, t.TempDir())
	b := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore))
	var handled atomic.Int64
	var mu sync.Mutex
	ids := map[uint64]bool{}
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		mu.Lock()
		ids[info.EventID] = true
		mu.Unlock()
		handled.Add(1)
		return nil
	})
	mustStart(t, b)
	for i := range 100 {
		relAdd(t, b, storeEvent(fmt.Sprint("g", i%7), uint64(i)))
	}
	require.NoError(t, b.Close(deadline(t, 5*time.Second)))
	assert.Equal(t, int64(100), handled.Load())
	assert.Len(t, ids, 100, "each event has its own record id")
	assert.Empty(t, pending(t, j), "every record acked")

	b2 := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore))
	mustRegister(t, b2, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		t.Error("a clean restart replayed an event")
		return nil
	})
	mustStart(t, b2)
	require.NoError(t, b2.Close(deadline(t, 5*time.Second)))
}

// TestDurableReplayAfterCloseDeadline: events a Close deadline gave up are
// not dead-lettered; the next bus on the journal replays them, each key's
// in order, equal field by field, with the same EventID.
func TestDurableReplayAfterCloseDeadline(t *testing.T) {
	dir := t.TempDir()
	j := openJournal(t, dir)
	sink := &sinkRecorder{}
	b1 := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithDeadLetter(sink),
		eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 1}))
	entered, release := make(chan struct{}), make(chan struct{})
	var firstID atomic.Uint64
	mustRegister(t, b1, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		if ev.Messages[0].MessageSeq == 0 {
			info, _ := eventbus.CallInfoFrom(ctx)
			firstID.Store(info.EventID)
			close(entered)
			<-release
		}
		return nil
	})
	mustStart(t, b1)
	var added []*eventbus.ChannelContext
	for i := range 20 {
		ev := storeEvent(fmt.Sprint("g", i%3), uint64(i))
		added = append(added, ev)
		relAdd(t, b1, ev)
		if i == 0 {
			recvWithin(t, entered, 5*time.Second, "the first handler")
		}
	}
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	var ce *eventbus.CloseError
	require.ErrorAs(t, b1.Close(expired), &ce)
	assert.Equal(t, 20, ce.Left)
	close(release)
	require.NoError(t, b1.Close(deadline(t, 5*time.Second)))
	assert.Empty(t, sink.all(), "durable events are not dead-lettered at a Close deadline")
	assert.GreaterOrEqual(t, len(pending(t, j)), 19)

	b2 := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore))
	var mu sync.Mutex
	got := map[string][]*eventbus.ChannelContext{}
	ids := map[uint64]uint64{} // seq → EventID
	mustRegister(t, b2, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		mu.Lock()
		got[ev.ChannelID] = append(got[ev.ChannelID], ev)
		ids[ev.Messages[0].MessageSeq] = info.EventID
		mu.Unlock()
		return nil
	})
	mustStart(t, b2)
	idleWithin(t, b2, 5*time.Second)
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, evs := range got {
		for k := 1; k < len(evs); k++ {
			assert.Less(t, evs[k-1].Messages[0].MessageSeq, evs[k].Messages[0].MessageSeq, "per-key order")
		}
		n += len(evs)
	}
	assert.GreaterOrEqual(t, n, 19)
	for _, ev := range got["g1"] {
		assert.Equal(t, added[ev.Messages[0].MessageSeq], ev, "replayed equal to what was added")
	}
	if id, ok := ids[0]; ok {
		assert.Equal(t, firstID.Load(), id, "EventID is the record id in both lives")
	}
}

// TestDurableAttemptsSurviveRestart: MaxAttempts counts across process
// lives: two attempts before a Close deadline, one after, then the event is
// dead-lettered and moves to the journal's list.
func TestDurableAttemptsSurviveRestart(t *testing.T) {
	j := openJournal(t, t.TempDir())
	attempts := make(chan int, 10)
	fail := func(ctx context.Context, ev *eventbus.ChannelContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		attempts <- info.Attempt
		return errors.New("store down")
	}
	slow := eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	b1 := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithRetry(slow))
	mustRegister(t, b1, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		attempts <- info.Attempt
		if info.Attempt == 2 {
			<-ctx.Done() // the second attempt hangs until Close gives up
		}
		return errors.New("store down")
	}, eventbus.WithName("store")) // attempts count per handler name, across lives
	mustStart(t, b1)
	relAdd(t, b1, storeEvent("g", 1))
	assert.Equal(t, 1, recvWithin(t, attempts, 5*time.Second, "attempt 1"))
	assert.Equal(t, 2, recvWithin(t, attempts, 5*time.Second, "attempt 2"))
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	var ce *eventbus.CloseError
	require.ErrorAs(t, b1.Close(expired), &ce)
	require.NoError(t, b1.Close(deadline(t, 5*time.Second)))
	recs := pending(t, j)
	require.Len(t, recs, 1)
	assert.Equal(t, map[string]int{"store": 1}, recs[0].HandlerAttempts, "the first failed attempt was recorded")

	sink := &sinkRecorder{}
	b2 := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithRetry(slow), eventbus.WithDeadLetter(sink))
	mustRegister(t, b2, eventbus.EventChannelStore, fail, eventbus.WithName("store"))
	mustStart(t, b2)
	idleWithin(t, b2, 5*time.Second)
	close(attempts)
	var second []int
	for a := range attempts {
		second = append(second, a)
	}
	assert.Equal(t, []int{2, 3}, second, "attempt numbers go on from the first life")
	require.Len(t, sink.all(), 1)
	assert.Equal(t, 3, sink.all()[0].Attempts)
	require.NoError(t, j.Sync())
	dls, err := j.DeadLetters()
	require.NoError(t, err)
	require.Len(t, dls, 1)
	assert.Equal(t, "store", dls[0].Handler)
	assert.Equal(t, 3, dls[0].Attempts)
	assert.Contains(t, dls[0].Err, "store down")
	assert.Empty(t, pending(t, j))
}

// TestDurableDeadLetterRedrive: a dead-lettered durable event is listed
// with its reason, re-driven into the bus once the cause is fixed, and
// purged from the list.
func TestDurableDeadLetterRedrive(t *testing.T) {
	j := openJournal(t, t.TempDir())
	b := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithRetry(eventbus.NoRetry),
		eventbus.WithDeadLetter(&sinkRecorder{}))
	store := &flakyStore{}
	store.broken.Store(true)
	mustRegister(t, b, eventbus.EventChannelStore, store.handle, eventbus.WithName("store"))
	mustStart(t, b)
	relAdd(t, b, storeEvent("g", 1))
	relAdd(t, b, storeEvent("g", 2))
	idleWithin(t, b, 5*time.Second)
	require.NoError(t, j.Sync())
	dls, err := j.DeadLetters()
	require.NoError(t, err)
	require.Len(t, dls, 2)
	assert.Equal(t, "disk full", dls[0].Err)
	assert.Equal(t, "store", dls[0].Handler)
	assert.Equal(t, 1, dls[0].Attempts)
	assert.False(t, dls[0].Time.IsZero())

	store.broken.Store(false)
	n, err := b.Redrive(context.Background(), dls[0].ID)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	idleWithin(t, b, 5*time.Second)
	assert.Equal(t, int64(1), store.stored.Load())
	require.NoError(t, j.Sync())
	left, err := j.DeadLetters()
	require.NoError(t, err)
	require.Len(t, left, 1)
	assert.Equal(t, dls[1].ID, left[0].ID)
	n, err = b.Redrive(context.Background()) // all
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	idleWithin(t, b, 5*time.Second)
	assert.Equal(t, int64(2), store.stored.Load())
	require.NoError(t, j.Sync())
	left, err = j.DeadLetters()
	require.NoError(t, err)
	assert.Empty(t, left)
	assert.Empty(t, pending(t, j))
}

// jsonCodec encodes a UserContext's UID and Frame (a string) as JSON.
type jsonCodec struct{ fail bool }

type jsonUser struct {
	UID   string
	Frame string
}

func (c jsonCodec) Encode(ev *eventbus.UserContext) ([]byte, error) {
	if c.fail {
		return nil, errors.New("cannot encode")
	}
	f, _ := ev.Frame.(string)
	return json.Marshal(jsonUser{UID: ev.Conn.UID(), Frame: f})
}

func (c jsonCodec) Decode(data []byte) (*eventbus.UserContext, error) {
	var u jsonUser
	if err := json.Unmarshal(data, &u); err != nil {
		return nil, err
	}
	return &eventbus.UserContext{Conn: &testConn{uid: u.UID}, Frame: u.Frame}, nil
}

// TestDurableUserTypeNeedsCodec: New names a durable user-pool type that
// has no Codec; a codec error is AddEvent's, and nothing is accepted.
func TestDurableUserTypeNeedsCodec(t *testing.T) {
	j := openJournal(t, t.TempDir())
	_, err := eventbus.New(eventbus.WithJournal(j, eventbus.EventOnSend))
	require.ErrorIs(t, err, eventbus.ErrNoCodec)
	assert.Contains(t, err.Error(), "OnSend")

	b := newBus(t, eventbus.WithJournal(j, eventbus.EventOnSend), eventbus.WithCodec(eventbus.EventOnSend, jsonCodec{fail: true}))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error { return nil })
	mustStart(t, b)
	ev := userEvent(eventbus.EventOnSend, "alice")
	ev.Frame = "hi"
	err = b.AddEvent(context.Background(), ev)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot encode")
	assert.Zero(t, b.Stats().User.Added)
	assert.Empty(t, pending(t, j))
}

// TestDurableUserEventsAndFollowOns: a durable user-pool type with a codec,
// whose handler emits durable follow-on channel events: all handled and
// acked, the user event's replay equal to what was added.
func TestDurableUserEventsAndFollowOns(t *testing.T) {
	j := openJournal(t, t.TempDir())
	b := newBus(t, eventbus.WithJournal(j, eventbus.EventOnSend, eventbus.EventChannelStore),
		eventbus.WithCodec(eventbus.EventOnSend, jsonCodec{}))
	var stored atomic.Int64
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		return b.AddEvent(ctx, storeEvent(ev.Conn.UID(), 1))
	})
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		stored.Add(1)
		return nil
	})
	mustStart(t, b)
	var wg sync.WaitGroup
	for p := range 16 { // concurrent durable adds share syncs
		wg.Go(func() {
			for i := range 20 {
				ev := userEvent(eventbus.EventOnSend, fmt.Sprint("u", p))
				ev.Frame = fmt.Sprint(i)
				if err := b.AddEvent(context.Background(), ev); err != nil {
					t.Error(err)
				}
			}
		})
	}
	coreWaitGroup(t, &wg, 30*time.Second, "producers")
	idleWithin(t, b, 10*time.Second)
	assert.Equal(t, int64(320), stored.Load())
	require.NoError(t, b.Close(deadline(t, 5*time.Second)))
	assert.Empty(t, pending(t, j))
	st := j.Stats()
	t.Logf("640 durable records in %d syncs", st.Syncs)
}

// TestDurableRedriveSeesFreshDeadLetters: once WaitIdle has returned, the
// events it waited for have been dead-lettered, so Bus.Redrive re-drives
// them: Redrive first calls the store's Sync when it has one, so the
// DeadLetter writes queued before it are in the journal's list when it reads
// it.
func TestDurableRedriveSeesFreshDeadLetters(t *testing.T) {
	j := openJournal(t, t.TempDir())
	b := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithRetry(eventbus.NoRetry))
	store := &flakyStore{}
	mustRegister(t, b, eventbus.EventChannelStore, store.handle)
	mustStart(t, b)
	const rounds = 20
	for i := range rounds {
		store.broken.Store(true)
		relAdd(t, b, storeEvent(fmt.Sprint("g", i), uint64(i)))
		idleWithin(t, b, 5*time.Second)
		store.broken.Store(false)
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
	assert.Equal(t, int64(rounds), store.stored.Load())
}

// TestDurableAcksHaveNoFsyncOfTheirOwn: acks are written with the next commit,
// with no fsync of their own (journal/README.md): a batch nobody waits for is
// written without an fsync. With one producer adding durable events one at a
// time, each acked before the next, the journal makes about one fsync per
// event, not two.
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

// TestDurableReplayAheadOfAddsDuringStart: Start queues each key's replayed
// events ahead of any later add of that key (see ARCHITECTURE.md, Durable
// types and the journal): adds are refused with ErrNotStarted until Start has
// queued the replay, so a producer that retries on ErrNotStarted while Start
// replays gets its event run once, after every replayed event of its key.
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

// flakyStore is a ChannelStore handler that fails with "disk full" while
// broken is set, and counts the events it stores.
type flakyStore struct {
	broken atomic.Bool
	stored atomic.Int64
}

func (s *flakyStore) handle(ctx context.Context, ev *eventbus.ChannelContext) error {
	if s.broken.Load() {
		return errors.New("disk full")
	}
	s.stored.Add(1)
	return nil
}

// TestDurableLastAttemptCutByCloseIsReplayed: a Close deadline that cuts
// short a durable event's last attempt (NoRetry) leaves its record for the
// next start: it is not in the journal's dead-letter list, and the next bus
// on the journal handles it with the same EventID.
func TestDurableLastAttemptCutByCloseIsReplayed(t *testing.T) {
	j := openJournal(t, t.TempDir())
	sink := &sinkRecorder{}
	b1 := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithRetry(eventbus.NoRetry),
		eventbus.WithDeadLetter(sink))
	hanging := make(chan uint64, 1)
	mustRegister(t, b1, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		hanging <- info.EventID
		<-ctx.Done()
		return ctx.Err()
	})
	mustStart(t, b1)
	relAdd(t, b1, storeEvent("g", 1))
	id := recvWithin(t, hanging, 5*time.Second, "the handler's only attempt")
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	var ce *eventbus.CloseError
	require.ErrorAs(t, b1.Close(expired), &ce)
	require.NoError(t, b1.Close(deadline(t, 5*time.Second)))
	assert.Empty(t, sink.all(), "not dead-lettered")
	require.NoError(t, j.Sync())
	dls, err := j.DeadLetters()
	require.NoError(t, err)
	assert.Empty(t, dls, "the record is not in the journal's dead-letter list")
	left := pending(t, j)
	require.Len(t, left, 1, "the record is left for the next start")
	rec, ok := eventbus.RecordID(id)
	require.True(t, ok, "a durable event's EventID names its record")
	assert.Equal(t, left[0].ID, rec)

	b2 := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithRetry(eventbus.NoRetry))
	replayed := make(chan uint64, 1)
	mustRegister(t, b2, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		replayed <- info.EventID
		return nil
	})
	mustStart(t, b2)
	assert.Equal(t, id, recvWithin(t, replayed, 5*time.Second, "the replayed event"))
	relClose(t, b2)
	assert.Empty(t, pending(t, j))
}

// TestEventIDsUniqueAcrossDurableAndPlainEvents: in one bus, durable events
// (whose EventID comes from their record id) and plain ones (from the
// process's counter) never share an EventID, and a durable event's EventID
// maps back to its record.
func TestEventIDsUniqueAcrossDurableAndPlainEvents(t *testing.T) {
	const pairs = 300
	j := openJournal(t, t.TempDir())
	b := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore))
	var mu sync.Mutex
	owner := map[uint64]string{} // EventID → the event that had it
	var dups []string
	record := func(ctx context.Context, what string) {
		info, _ := eventbus.CallInfoFrom(ctx)
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := owner[info.EventID]; ok {
			dups = append(dups, fmt.Sprintf("%s and %s share EventID %#x", prev, what, info.EventID))
		}
		owner[info.EventID] = what
	}
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		record(ctx, fmt.Sprint("durable ", ev.Messages[0].MessageSeq))
		return nil
	})
	mustRegister(t, b, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		record(ctx, fmt.Sprint("plain ", ev.Messages[0].MessageSeq))
		return nil
	})
	mustStart(t, b)
	for i := range pairs {
		relAdd(t, b, storeEvent(fmt.Sprint("g", i%5), uint64(i)))
		plain := storeEvent(fmt.Sprint("g", i%5), uint64(i))
		plain.EventType = eventbus.EventChannelDistribute
		relAdd(t, b, plain)
	}
	idleWithin(t, b, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(dups) > 0 {
		t.Errorf("%d EventIDs shared, the first: %s", len(dups), dups[0])
	}
	assert.Equal(t, 2*pairs, len(owner), "one EventID per event")
	durable := 0
	for id, what := range owner {
		rec, ok := eventbus.RecordID(id)
		assert.Equal(t, what[:7] == "durable", ok, "%s: RecordID(%#x) says durable=%v", what, id, ok)
		if ok {
			durable++
			assert.Equal(t, id, eventbus.DurableEventID(rec))
		}
	}
	assert.Equal(t, pairs, durable)
}

// fastRetry is MaxAttempts 3 with 1 ms waits.
var fastRetry = eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}

// endLife closes b at an expired deadline (a handler hangs on its ctx),
// then waits for its workers: the process life ends with the record
// unacked.
func endLife(t *testing.T, b *eventbus.Bus) {
	t.Helper()
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	var ce *eventbus.CloseError
	require.ErrorAs(t, b.Close(expired), &ce)
	require.NoError(t, b.Close(deadline(t, 5*time.Second)))
}

// TestDurableAttemptsCountPerHandlerAcrossLives: MaxAttempts counts one
// handler's attempts over all process lives. Handler a failed twice before
// the restart; after it, a succeeds and b fails for the first time ever: b
// is retried (its attempts 1 and 2), not dead-lettered on a's count.
func TestDurableAttemptsCountPerHandlerAcrossLives(t *testing.T) {
	j := openJournal(t, t.TempDir())
	hanging := make(chan struct{})
	b1 := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithRetry(fastRetry))
	mustRegister(t, b1, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		if info, _ := eventbus.CallInfoFrom(ctx); info.Attempt == 3 {
			close(hanging)
			<-ctx.Done() // the process life ends in a's third attempt
		}
		return errors.New("a down")
	}, eventbus.WithName("a"))
	mustRegister(t, b1, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		return nil
	}, eventbus.WithName("b"))
	mustStart(t, b1)
	relAdd(t, b1, storeEvent("g", 1))
	recvWithin(t, hanging, 5*time.Second, "a's third attempt")
	endLife(t, b1)

	sink := &sinkRecorder{}
	b2 := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithRetry(fastRetry),
		eventbus.WithDeadLetter(sink))
	var mu sync.Mutex
	var calls []string
	call := func(ctx context.Context) int {
		info, _ := eventbus.CallInfoFrom(ctx)
		mu.Lock()
		calls = append(calls, fmt.Sprint(info.Handler, info.Attempt))
		mu.Unlock()
		return info.Attempt
	}
	mustRegister(t, b2, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		call(ctx)
		return nil
	}, eventbus.WithName("a"))
	var bCalls atomic.Int32
	mustRegister(t, b2, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		call(ctx)
		if bCalls.Add(1) == 1 {
			return errors.New("b down once")
		}
		return nil
	}, eventbus.WithName("b"))
	mustStart(t, b2)
	idleWithin(t, b2, 5*time.Second)
	assert.Empty(t, sink.all(), "b is not dead-lettered on a's attempts")
	mu.Lock()
	assert.Equal(t, []string{"a3", "b1", "b2"}, calls, "a goes on from its own count, b from its own")
	mu.Unlock()
	assert.Empty(t, pending(t, j), "handled and acked")
}

// TestDurableSubscriberAttemptsDoNotCountForChain: a subscriber's failures
// count against the subscriber alone. It failed twice before the restart;
// after it, the chain's first failure ever is retried, not made final.
func TestDurableSubscriberAttemptsDoNotCountForChain(t *testing.T) {
	j := openJournal(t, t.TempDir())
	hanging := make(chan struct{})
	b1 := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithRetry(fastRetry))
	mustRegister(t, b1, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		return nil
	}, eventbus.WithName("store"))
	_, err := eventbus.Subscribe(b1, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		if info, _ := eventbus.CallInfoFrom(ctx); info.Attempt == 3 {
			close(hanging)
			<-ctx.Done()
		}
		return errors.New("webhook down")
	}, eventbus.WithName("webhook"))
	require.NoError(t, err)
	mustStart(t, b1)
	relAdd(t, b1, storeEvent("g", 1))
	recvWithin(t, hanging, 5*time.Second, "the subscriber's third attempt")
	endLife(t, b1)

	sink := &sinkRecorder{}
	b2 := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithRetry(fastRetry),
		eventbus.WithDeadLetter(sink))
	chainAttempts := make(chan int, 10)
	mustRegister(t, b2, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		chainAttempts <- info.Attempt
		if len(chainAttempts) == 1 { // its first call in this life
			return errors.New("store down once")
		}
		return nil
	}, eventbus.WithName("store"))
	hookAttempts := make(chan int, 10)
	_, err = eventbus.Subscribe(b2, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		hookAttempts <- info.Attempt
		return nil
	}, eventbus.WithName("webhook"))
	require.NoError(t, err)
	mustStart(t, b2)
	idleWithin(t, b2, 5*time.Second)
	assert.Empty(t, sink.all(), "the chain is not dead-lettered on the subscriber's attempts")
	close(chainAttempts)
	close(hookAttempts)
	var chain, hook []int
	for a := range chainAttempts {
		chain = append(chain, a)
	}
	for a := range hookAttempts {
		hook = append(hook, a)
	}
	assert.Equal(t, []int{1, 2}, chain, "the chain's attempts are its own")
	assert.Equal(t, []int{3}, hook, "the subscriber goes on from its own count")
	assert.Empty(t, pending(t, j), "handled and acked")
}

// TestDurableOlderRecordChargesItsCountOnce: a record written by an older
// release carries one attempts count and no per-handler counts; it is
// charged once, to the first handler that fails, as that release did.
func TestDurableOlderRecordChargesItsCountOnce(t *testing.T) {
	j := openJournal(t, t.TempDir())
	sink := &sinkRecorder{}
	b := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore), eventbus.WithRetry(fastRetry),
		eventbus.WithDeadLetter(sink))
	data, err := b.EncodeEvent(storeEvent("g", 1))
	require.NoError(t, err)
	id, err := j.Append(journal.Record{Type: uint8(eventbus.EventChannelStore), Key: 1, Payload: data})
	require.NoError(t, err)
	require.NoError(t, j.SetAttempts(id, 2)) // what an older release wrote
	require.NoError(t, j.Sync())             // applied before Start replays it
	attempts := make(chan string, 10)
	for _, name := range []string{"a", "b"} {
		mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			info, _ := eventbus.CallInfoFrom(ctx)
			attempts <- fmt.Sprint(info.Handler, info.Attempt)
			if name == "b" {
				return errors.New("b down")
			}
			return nil
		}, eventbus.WithName(name))
	}
	mustStart(t, b)
	idleWithin(t, b, 5*time.Second)
	close(attempts)
	var got []string
	for a := range attempts {
		got = append(got, a)
	}
	assert.Equal(t, []string{"a1", "b1"}, got, "b's first failure is charged the 2 older attempts: final")
	require.Len(t, sink.all(), 1)
	assert.Equal(t, 3, sink.all()[0].Attempts)
	assert.Equal(t, "b", sink.all()[0].Handler)
}
