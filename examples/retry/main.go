// Command retry shows what the bus does when handlers fail.
//
//   - A flaky "store" handler fails twice (a database timeout) and succeeds
//     on its third attempt; eventbus.CallInfoFrom(ctx).Attempt tells it
//     which attempt it is on. While its channel waits for the retry, the
//     same worker goes on with another channel: a retry parks the key, not
//     the worker.
//   - A broken "offline-push" handler fails every attempt; after the last
//     one its event lands in the dead-letter sink, a DeadLetterRing given
//     with WithDeadLetter.
//   - A "decode" handler returns eventbus.Permanent(err): no retry, straight
//     to the dead-letter sink.
//
// The retry policy is fast (2 ms, doubling) so the demo runs in a few
// milliseconds. Failures are logged at Warn by the bus; the demo discards
// its log because they are expected, and prints what it recorded instead.
//
// Run it with: go run ./examples/retry
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imbus/eventbus"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "retry:", err)
		os.Exit(1)
	}
}

type conn struct{ uid string }

func (c conn) UID() string { return c.uid }
func (c conn) ID() int64   { return 1 }

var (
	errDBTimeout = errors.New("db timeout")
	errAPNs      = errors.New("apns: 503 service unavailable")
	errMalformed = errors.New("malformed SEND frame")
)

// journal records what handlers did, one list per pool. With one worker
// per pool, each list is in the order the worker ran the handlers.
type journal struct {
	mu    sync.Mutex
	lines map[eventbus.Pool][]string
}

func (j *journal) log(ctx context.Context, format string, args ...any) {
	info, _ := eventbus.CallInfoFrom(ctx)
	line := fmt.Sprintf("%-12s attempt %d: ", info.Handler, info.Attempt) + fmt.Sprintf(format, args...)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.lines[info.Pool] = append(j.lines[info.Pool], line)
}

func run(out io.Writer) error {
	policy := eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: 2 * time.Millisecond,
		MaxBackoff: 10 * time.Millisecond, Jitter: -1}
	dead := eventbus.NewDeadLetterRing(16)
	one := eventbus.PoolConfig{Workers: 1}
	bus, err := eventbus.New(
		eventbus.WithLogger(slog.New(slog.DiscardHandler)),
		eventbus.WithRetry(policy),
		eventbus.WithDeadLetter(dead),
		eventbus.WithUserPool(one), eventbus.WithChannelPool(one), eventbus.WithPusherPool(one),
	)
	if err != nil {
		return err
	}
	j := &journal{lines: map[eventbus.Pool][]string{}}

	// The channel pool's handler. "slow" holds the only worker until the
	// next two events are queued, so that the worker takes them together.
	started, release := make(chan struct{}), make(chan struct{})
	store := func(ctx context.Context, ev *eventbus.ChannelContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		switch {
		case ev.ChannelID == "slow":
			close(started)
			<-release
		case ev.ChannelID == "orders" && info.Attempt < 3:
			j.log(ctx, "%-6s %v", ev.ChannelID, errDBTimeout)
			return errDBTimeout
		default:
			j.log(ctx, "%-6s stored", ev.ChannelID)
		}
		return nil
	}
	offlinePush := func(ctx context.Context, ev *eventbus.PushContext) error {
		j.log(ctx, "%v", errAPNs)
		return errAPNs
	}
	decode := func(ctx context.Context, ev *eventbus.UserContext) error {
		j.log(ctx, "%v (Permanent: no retry)", errMalformed)
		return eventbus.Permanent(errMalformed)
	}
	err = errors.Join(
		second(eventbus.Register(bus, eventbus.EventChannelStore, store, eventbus.WithName("store"))),
		second(eventbus.Register(bus, eventbus.EventPushOffline, offlinePush, eventbus.WithName("offline-push"))),
		second(eventbus.Register(bus, eventbus.EventOnSend, decode, eventbus.WithName("decode"))),
		bus.Start(),
	)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	storeIn := func(channelID string) error {
		return bus.AddEvent(ctx, &eventbus.ChannelContext{EventType: eventbus.EventChannelStore,
			ChannelID: channelID, ChannelType: 2})
	}
	if err := storeIn("slow"); err != nil {
		return err
	}
	<-started
	err = errors.Join(
		storeIn("orders"),
		storeIn("chat"),
		bus.AddEvent(ctx, &eventbus.PushContext{EventType: eventbus.EventPushOffline,
			Message: &eventbus.Message{ChannelID: "orders", ChannelType: 2, FromUID: "alice"}, Subscribers: []string{"dave"}}),
		bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn{uid: "mallory"},
			Frame: []byte{0xde, 0xad}}),
	)
	close(release)
	if err != nil {
		_ = bus.Close(ctx)
		return err
	}
	if err := bus.WaitIdle(ctx); err != nil {
		return err
	}

	fmt.Fprintf(out, "retry policy: %d attempts, backoff %v doubling up to %v, no jitter\n",
		policy.MaxAttempts, policy.InitialBackoff, policy.MaxBackoff)
	for _, p := range []eventbus.Pool{eventbus.PoolChannel, eventbus.PoolPusher, eventbus.PoolUser} {
		fmt.Fprintf(out, "\n%s pool (one worker):\n", p)
		for _, line := range j.lines[p] {
			fmt.Fprintf(out, "  %s\n", line)
		}
		if p != eventbus.PoolChannel {
			continue
		}
		// The journal of the one channel worker shows whether "chat" ran
		// between the first and the second attempt of "orders".
		chat := slices.IndexFunc(j.lines[p], func(l string) bool { return strings.Contains(l, "chat") })
		retry := slices.IndexFunc(j.lines[p], func(l string) bool { return strings.Contains(l, "attempt 2: orders") })
		fmt.Fprintf(out, "  \"chat\" stored while \"orders\" waited for its retry (key parked, not the worker): %v\n",
			chat >= 0 && chat < retry)
	}

	letters := dead.Letters()
	slices.SortFunc(letters, func(a, b *eventbus.DeadLetter) int { return cmp.Compare(a.Handler, b.Handler) })
	fmt.Fprintf(out, "\ndead letters: %d\n", dead.Total())
	for _, d := range letters {
		fmt.Fprintf(out, "  dead letter: type=%v handler=%s attempts=%d permanent=%v err=%v\n",
			d.Event.Type(), d.Handler, d.Attempts, eventbus.IsPermanent(d.Err), d.Err)
	}

	st := bus.Stats()
	fmt.Fprintln(out, "\nStats:")
	for _, p := range []struct {
		name string
		s    eventbus.PoolStats
	}{{"user", st.User}, {"channel", st.Channel}, {"pusher", st.Pusher}} {
		fmt.Fprintf(out, "  %-8s added=%d handled=%d failed=%d retried=%d deadlettered=%d\n",
			p.name, p.s.Added, p.s.Handled, p.s.Failed, p.s.Retried, p.s.DeadLettered)
	}
	if err := bus.Close(ctx); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	fmt.Fprintln(out, "bus closed cleanly")
	return nil
}

// second returns the error of a (value, error) pair.
func second[T any](_ T, err error) error { return err }
