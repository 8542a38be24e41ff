// Command durable shows durable events (eventbus.WithJournal) surviving a
// crash, and the journal's dead-letter list.
//
//   - The program runs itself again as a worker process that stores chat
//     messages through a bus whose EventChannelStore type is durable: four
//     producers add messages to four channels, and each store takes about
//     a millisecond, so messages pile up in the queues. Each AddEvent
//     returns only once its message is on disk.
//   - After 200 adds have returned, the worker is killed with SIGKILL: no
//     Close, no flush, whatever was queued or running is gone from memory.
//   - The restart opens the same journal directory with a new bus: Start
//     replays every message not acked, each channel's in send order, and
//     the store handler skips the ones the first life already stored
//     (CallInfo.EventID comes from the journal record id, the same in both lives:
//     delivery is at-least-once, handlers dedupe). Nothing is lost.
//   - Offline pushes (EventPushOffline, durable too) fail against a broken
//     APNs and end in the journal's dead-letter list, with handler, error
//     and attempts. Once APNs is back, one is re-driven (Bus.Redrive), the
//     other purged.
//   - After a clean Close, a restart replays nothing.
//
// Counts that depend on when the kill lands are marked "(varies)"; every
// other line is the same on every run.
//
// Run it with: go run ./examples/durable
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/journal"
)

// workerEnv makes the program a worker process; it holds the journal
// directory.
const workerEnv = "EVENTBUS_DURABLE_DEMO_DIR"

// killAfter is how many returned adds the demo waits for before it kills
// the worker.
const killAfter = 200

var discard = slog.New(slog.DiscardHandler)

func main() {
	if dir := os.Getenv(workerEnv); dir != "" {
		if err := worker(dir); err != nil {
			fmt.Fprintln(os.Stderr, "durable worker:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "durable:", err)
		os.Exit(1)
	}
}

// msg names a chat message: its channel and its sequence number there.
type msg struct {
	channel string
	seq     uint64
}

// store is the handler shape both lives use: it gets the message and its
// EventID.
type store func(m msg, id uint64)

// newBus builds the bus of both lives: EventChannelStore and
// EventPushOffline are durable in j.
func newBus(j *journal.Journal, stored store, push eventbus.Handler[eventbus.PushContext]) (*eventbus.Bus, error) {
	bus, err := eventbus.New(
		eventbus.WithLogger(discard), // the demo prints what happened instead
		eventbus.WithJournal(j, eventbus.EventChannelStore, eventbus.EventPushOffline),
		eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 2, QueueSize: 32}),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, Jitter: -1}),
	)
	if err != nil {
		return nil, err
	}
	_, err = eventbus.Register(bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		stored(msg{ev.ChannelID, ev.Messages[0].MessageSeq}, info.EventID)
		return nil
	}, eventbus.WithName("store"))
	if err != nil {
		return nil, err
	}
	if push != nil {
		if _, err := eventbus.Register(bus, eventbus.EventPushOffline, push, eventbus.WithName("apns")); err != nil {
			return nil, err
		}
	}
	return bus, bus.Start()
}

func message(channel string, seq uint64) *eventbus.ChannelContext {
	return &eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: channel, ChannelType: 2,
		Messages: []*eventbus.Message{{ChannelID: channel, ChannelType: 2, MessageSeq: seq, FromUID: "alice",
			Payload: fmt.Appendf(nil, "message %d", seq)}}}
}

// worker is the first life: it adds messages until it is killed, and
// prints a line for every add that returned nil and every message stored.
func worker(dir string) error {
	j, err := journal.Open(dir, journal.WithLogger(discard))
	if err != nil {
		return err
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		line := fmt.Sprintf(format+"\n", args...)
		mu.Lock()
		defer mu.Unlock()
		if _, err := io.WriteString(os.Stdout, line); err != nil {
			os.Exit(1) // the demo is gone
		}
	}
	bus, err := newBus(j, func(m msg, id uint64) {
		time.Sleep(time.Millisecond) // the database write
		say("stored %s %d %d", m.channel, m.seq, id)
	}, nil)
	if err != nil {
		return err
	}
	errs := make(chan error, 4)
	for p := range 4 {
		go func() {
			channel := fmt.Sprint("g", p+1)
			for seq := uint64(1); ; seq++ {
				if err := bus.AddEvent(context.Background(), message(channel, seq)); err != nil {
					errs <- err
					return
				}
				say("added %s %d", channel, seq)
			}
		}()
	}
	return <-errs // only on failure: the demo kills this process
}

func run(out io.Writer) error {
	dir, err := os.MkdirTemp("", "eventbus-durable-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// First life: a worker process, killed mid-run.
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), workerEnv+"="+dir)
	cmd.Stderr = os.Stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	fmt.Fprintln(out, "first life: a worker process stores chat messages of 4 channels; each store takes ~1 ms")
	added := map[msg]bool{}
	db := map[uint64]msg{} // the "database": what was stored, by EventID
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		seq, _ := strconv.ParseUint(f[2], 10, 64)
		m := msg{f[1], seq}
		switch f[0] {
		case "added":
			if added[m] = true; len(added) == killAfter {
				_ = cmd.Process.Kill() // SIGKILL: no Close, no flush
			}
		case "stored":
			if len(f) == 4 {
				id, _ := strconv.ParseUint(f[3], 10, 64)
				db[id] = m
			}
		}
	}
	if err := cmd.Wait(); err == nil || len(added) < killAfter {
		return fmt.Errorf("the worker was to be killed after %d adds; it added %d and ended with %v", killAfter, len(added), err)
	}
	fmt.Fprintf(out, "after %d AddEvent calls returned, the worker was killed with SIGKILL\n", killAfter)
	fmt.Fprintf(out, "  at the kill: %d messages added, %d stored (varies)\n", len(added), len(db))

	// Second life: the same directory, a new bus.
	j, err := journal.Open(dir, journal.WithLogger(discard))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nrestart: the journal holds %d messages not acked (varies)\n", j.Stats().Pending)
	var mu sync.Mutex
	replayed, skipped := 0, 0
	inOrder := true
	last := map[string]uint64{}
	var pushes []string
	apnsUp := false
	bus, err := newBus(j, func(m msg, id uint64) {
		mu.Lock()
		defer mu.Unlock()
		replayed++
		if last[m.channel] >= m.seq {
			inOrder = false
		}
		last[m.channel] = m.seq
		if _, done := db[id]; done { // stored before the crash: the ack was lost with the process
			skipped++
			return
		}
		db[id] = m
	}, func(ctx context.Context, ev *eventbus.PushContext) error {
		mu.Lock()
		defer mu.Unlock()
		if !apnsUp {
			return errors.New("apns: 503 service unavailable")
		}
		pushes = append(pushes, ev.Subscribers[0])
		return nil
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bus.WaitIdle(ctx); err != nil {
		return err
	}
	mu.Lock()
	fmt.Fprintf(out, "  Start replayed %d messages (varies), %d of them already stored in the first life (varies): skipped by EventID\n",
		replayed, skipped)
	stored := map[msg]bool{}
	for _, m := range db {
		stored[m] = true
	}
	lost := 0
	for m := range added {
		if !stored[m] {
			lost++
		}
	}
	mu.Unlock()
	fmt.Fprintf(out, "  each channel's messages replayed in send order: %v\n", inOrder)
	fmt.Fprintf(out, "  every message whose AddEvent returned nil is stored: %v\n", lost == 0)
	fmt.Fprintf(out, "  lost: %d\n", lost)

	// Dead letters: offline pushes while APNs is down.
	fmt.Fprintln(out, "\noffline pushes while APNs is down (2 attempts each):")
	for _, uid := range []string{"dave", "erin"} {
		err := bus.AddEvent(ctx, &eventbus.PushContext{EventType: eventbus.EventPushOffline,
			Message:     &eventbus.Message{ChannelID: "g1", ChannelType: 2, FromUID: "alice", Payload: []byte("lunch?")},
			Subscribers: []string{uid}})
		if err != nil {
			return err
		}
	}
	if err := errors.Join(bus.WaitIdle(ctx), j.Sync()); err != nil {
		return err
	}
	dls, err := j.DeadLetters()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  journal dead-letter list: %d\n", len(dls))
	to := map[string]uint64{}
	for _, d := range dls {
		ev, err := bus.DecodeEvent(eventbus.EventType(d.Type), d.Payload)
		if err != nil {
			return err
		}
		uid := ev.(*eventbus.PushContext).Subscribers[0]
		to[uid] = d.ID
		fmt.Fprintf(out, "  dead letter: push to %s handler=%s attempts=%d err=%s\n", uid, d.Handler, d.Attempts, d.Err)
	}
	mu.Lock()
	apnsUp = true
	mu.Unlock()
	n, err := bus.Redrive(ctx, to["dave"])
	if err != nil {
		return err
	}
	if err := bus.WaitIdle(ctx); err != nil {
		return err
	}
	mu.Lock()
	fmt.Fprintf(out, "  APNs is back: Redrive(dave's) re-added %d, delivered to %v\n", n, pushes)
	mu.Unlock()
	n, err = j.Purge(to["erin"])
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  erin's device token was revoked: Purge(erin's) removed %d\n", n)
	if dls, err = j.DeadLetters(); err != nil {
		return err
	}
	fmt.Fprintf(out, "  dead letters left: %d\n", len(dls))

	// A clean Close acks everything: the next start replays nothing.
	if err := bus.Close(ctx); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if err := j.Close(); err != nil {
		return err
	}
	if j, err = journal.Open(dir, journal.WithLogger(discard)); err != nil {
		return err
	}
	again := 0
	bus, err = newBus(j, func(msg, uint64) { mu.Lock(); again++; mu.Unlock() }, nil)
	if err == nil {
		err = bus.Close(ctx)
	}
	if err := errors.Join(err, j.Close()); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nafter a clean Close, a restart replays: %d messages\n", again)
	return nil
}
