package eventbus_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/journal"
)

// crashChildEnv selects the child mode of TestDurableCrash: it holds the
// journal directory.
const crashChildEnv = "EVENTBUS_DURABLE_CRASH_DIR"

// crashKillAfter is how many "added" lines the parent reads before it
// kills the child.
const crashKillAfter = 2000

// crashEvent names one event of the crash test: its kind ("ch" a channel
// store event added by a producer, "us" a user OnSend event added by a
// producer, "fo" the channel store follow-on an OnSend handler adds), its
// key (channel id or uid) and its sequence number within the key.
type crashEvent struct {
	kind, key string
	seq       uint64
}

func (e crashEvent) String() string { return fmt.Sprintf("%s %s %d", e.kind, e.key, e.seq) }

// crashBus builds a bus whose ChannelStore and OnSend types are durable in
// j (OnSend through jsonCodec, its Frame the decimal sequence number). The
// OnSend handler adds a durable ChannelStore follow-on to channel "f-<uid>"
// with the same sequence number; every handled event is reported to
// handled with its CallInfo.EventID, after work has run.
func crashBus(t testing.TB, j eventbus.Journal, work func(), handled func(crashEvent, uint64)) *eventbus.Bus {
	b := newBus(t, eventbus.WithJournal(j, eventbus.EventChannelStore, eventbus.EventOnSend),
		eventbus.WithCodec(eventbus.EventOnSend, jsonCodec{}),
		eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 4, QueueSize: 64}),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 2, QueueSize: 64}))
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		work()
		info, _ := eventbus.CallInfoFrom(ctx)
		kind := "ch"
		if strings.HasPrefix(ev.ChannelID, "f-") {
			kind = "fo"
		}
		handled(crashEvent{kind, ev.ChannelID, ev.Messages[0].MessageSeq}, info.EventID)
		return nil
	})
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		work()
		info, _ := eventbus.CallInfoFrom(ctx)
		seq, err := strconv.ParseUint(ev.Frame.(string), 10, 64)
		if err != nil {
			return eventbus.Permanent(err)
		}
		handled(crashEvent{"us", ev.Conn.UID(), seq}, info.EventID)
		return b.AddEvent(ctx, storeEvent("f-"+ev.Conn.UID(), seq))
	})
	return b
}

// TestDurableCrash runs this test binary again as a child that adds
// durable events (channel events and OnSend events with a Codec, whose
// handler adds durable follow-ons) from 8 goroutines over 32 keys, with
// handlers that take a while, so that many events are queued or running;
// it prints each event once its AddEvent returned nil, and each event a
// handler handled with its EventID. The parent kills it with SIGKILL after
// crashKillAfter adds and restarts on the directory: every added event was
// handled in one life or the other, so was every follow-on of an added
// OnSend event; the restart replays exactly the pending records, each
// key's in order and ahead of anything new of that key, with EventID the
// record id (the same id as in the first life); and a clean restart
// after that replays nothing.
func TestDurableCrash(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		durableCrashChild(t, dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDurableCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	var killOnce sync.Once
	kill := func() { killOnce.Do(func() { _ = cmd.Process.Signal(syscall.SIGKILL) }) }
	t.Cleanup(kill)
	timer := time.AfterFunc(60*time.Second, kill) // a safety net, never expected to fire
	defer timer.Stop()

	added := map[crashEvent]bool{}
	before := map[crashEvent]uint64{} // handled in the first life → its EventID
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || (f[0] != "added" && f[0] != "handled") {
			continue
		}
		seq, err := strconv.ParseUint(f[3], 10, 64)
		require.NoError(t, err, sc.Text())
		ev := crashEvent{f[1], f[2], seq}
		if f[0] == "added" {
			require.False(t, added[ev], "added twice: %v", ev)
			if added[ev] = true; len(added) == crashKillAfter {
				kill() // the lines already in the pipe are still read
			}
			continue
		}
		require.Len(t, f, 5, sc.Text())
		id, err := strconv.ParseUint(f[4], 10, 64)
		require.NoError(t, err, sc.Text())
		if prev, ok := before[ev]; ok && ev.kind != "fo" {
			assert.Equal(t, prev, id, "%v handled twice in one life under two EventIDs", ev)
		}
		before[ev] = id
	}
	require.NoError(t, sc.Err())
	err = cmd.Wait()
	require.Error(t, err)
	require.Contains(t, err.Error(), "killed", "the child ran until it was killed")
	require.GreaterOrEqual(t, len(added), crashKillAfter)

	// Restart: what the journal holds is what the new bus must replay.
	j := openJournal(t, dir)
	var mu sync.Mutex
	type handling struct {
		ev crashEvent
		id uint64
	}
	var after []handling // each key's in handling order (a key's handlers run one at a time)
	afterIDs := map[crashEvent][]uint64{}
	b := crashBus(t, j, func() {}, func(ev crashEvent, id uint64) {
		mu.Lock()
		after = append(after, handling{ev, id})
		afterIDs[ev] = append(afterIDs[ev], id)
		mu.Unlock()
	})
	recs := pending(t, j)
	pend := map[uint64]crashEvent{}
	for _, r := range recs {
		ev, err := b.DecodeEvent(eventbus.EventType(r.Type), r.Payload)
		require.NoError(t, err, "record %d", r.ID)
		pend[eventbus.DurableEventID(r.ID)] = crashEventOf(t, ev)
	}
	mustStart(t, b)
	idleWithin(t, b, 20*time.Second)
	require.NoError(t, b.Close(deadline(t, 10*time.Second)))

	mu.Lock()
	defer mu.Unlock()
	// At-least-once: every added event, and the follow-on of every added
	// OnSend event, was handled before or after the crash.
	lost := 0
	for ev := range added {
		for _, e := range []crashEvent{ev, {"fo", "f-" + ev.key, ev.seq}} {
			if e.kind == "fo" && ev.kind != "us" {
				continue
			}
			_, b1 := before[e]
			if _, b2 := afterIDs[e]; !b1 && !b2 {
				lost++
				if lost <= 10 {
					t.Errorf("%v (added: %v) was never handled", e, ev)
				}
			}
		}
	}
	assert.Zero(t, lost, "events lost")

	// Every pending record was replayed once, with its record id as
	// EventID, and an event handled in both lives kept its EventID.
	replayed := map[uint64]bool{}
	for id, ev := range pend {
		ids := afterIDs[ev]
		if assert.Contains(t, ids, id, "pending record %d (%v) replayed with its id as EventID", id, ev) {
			replayed[id] = true
		}
		if ev.kind != "fo" {
			assert.Len(t, ids, 1, "%v handled once after the restart", ev)
			if prev, ok := before[ev]; ok {
				assert.Equal(t, prev, id, "%v: EventID in the first life and after the restart", ev)
			}
		}
	}
	// Per key: the replayed records in id order (for the producers' keys,
	// in add order), ahead of anything new of the key: the follow-ons
	// the restart's OnSend handlers add.
	lastSeq := map[string]uint64{}
	lastID := map[string]uint64{}
	newSeen := map[string]bool{}
	for _, h := range after {
		ev := h.ev
		if !replayed[h.id] {
			assert.Equal(t, "fo", ev.kind, "%v handled after the restart but not pending", ev)
			newSeen[ev.key] = true
			continue
		}
		assert.False(t, newSeen[ev.key], "replayed %v after a new event of its key", ev)
		if prev, ok := lastID[ev.key]; ok {
			assert.Greater(t, h.id, prev, "key %s: replayed out of record order", ev.key)
		}
		lastID[ev.key] = h.id
		if prev, ok := lastSeq[ev.key]; ok && ev.kind != "fo" {
			assert.Greater(t, ev.seq, prev, "key %s: replayed out of add order", ev.key)
		}
		lastSeq[ev.key] = ev.seq
	}
	require.NotEmpty(t, pend, "the crash left events to replay")
	t.Logf("child: %d events added, %d handled before SIGKILL; restart: %d records pending, %d events handled",
		len(added), len(before), len(pend), len(after))

	// A clean restart after a clean Close replays nothing.
	require.NoError(t, j.Close())
	j2 := openJournal(t, dir)
	assert.Empty(t, pending(t, j2))
	b2 := crashBus(t, j2, func() {}, func(ev crashEvent, id uint64) { t.Errorf("a clean restart replayed %v", ev) })
	mustStart(t, b2)
	require.NoError(t, b2.Close(deadline(t, 5*time.Second)))
}

// crashEventOf names a decoded event of the crash test.
func crashEventOf(t testing.TB, ev eventbus.Event) crashEvent {
	switch e := ev.(type) {
	case *eventbus.ChannelContext:
		kind := "ch"
		if strings.HasPrefix(e.ChannelID, "f-") {
			kind = "fo"
		}
		return crashEvent{kind, e.ChannelID, e.Messages[0].MessageSeq}
	case *eventbus.UserContext:
		seq, err := strconv.ParseUint(e.Frame.(string), 10, 64)
		require.NoError(t, err)
		return crashEvent{"us", e.Conn.UID(), seq}
	}
	t.Fatalf("unexpected event %T", ev)
	return crashEvent{}
}

// durableCrashChild is the child of TestDurableCrash: it adds events until
// it is killed, printing one line per add that returned nil and per event
// handled. Each line is one write, so the parent reads whole lines only.
func durableCrashChild(t *testing.T, dir string) {
	j, err := journal.Open(dir, journal.WithSegmentSize(64<<10), journal.WithLogger(quiet))
	require.NoError(t, err)
	var mu sync.Mutex
	print := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		mu.Lock()
		defer mu.Unlock()
		if _, err := os.Stdout.WriteString(line); err != nil {
			os.Exit(3) // the parent is gone
		}
	}
	// Handlers take a while (a simulated store write), so that events pile
	// up in the queues and many are running when the kill comes.
	work := func() { time.Sleep(time.Millisecond) }
	b := crashBus(t, j, work, func(ev crashEvent, id uint64) { print("handled %v %d\n", ev, id) })
	mustStart(t, b)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			ctx := context.Background()
			for seq := uint64(1); ; seq++ {
				// Each producer owns its keys: 3 channels and 1 user, so
				// each key's add order is this loop's order.
				var ev eventbus.Event
				var name crashEvent
				if seq%4 == 0 {
					uid := fmt.Sprint("u", g)
					ev = &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &testConn{uid: uid}, Frame: fmt.Sprint(seq)}
					name = crashEvent{"us", uid, seq}
				} else {
					ch := fmt.Sprintf("c%d-%d", g, seq%4)
					ev = storeEvent(ch, seq)
					name = crashEvent{"ch", ch, seq}
				}
				if err := b.AddEvent(ctx, ev); err != nil {
					fmt.Fprintln(os.Stderr, "child: AddEvent:", err)
					os.Exit(2)
				}
				print("added %v\n", name)
			}
		})
	}
	wg.Wait() // never: the parent kills this process
}
