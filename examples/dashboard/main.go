// Command dashboard runs a small IM workload on a bus and serves its live
// dashboard (package dashboard), to look at in a browser:
//
//   - Users alice, bob, carol… send messages (EventOnSend). The chain
//     checks and emits a store (EventChannelStore, durable: journaled) and
//     pushes (EventPushOnline, EventPushOffline, durable too).
//   - The channel "group:hot" is slow to store: about 150 ms a message,
//     and gets bursts of 15, so its shard holds work (see the Keys view).
//   - The session service is flaky for bob: each of his sends fails twice
//     and waits, parked, for its retry a second later, with the error
//     (Keys view).
//   - APNs is down for the first 20 seconds: offline pushes fail for good
//     and land in the journal's dead-letter list. Once it is back, the
//     Redrive button on the Dead letters view brings them back, handled.
//   - A "webhook" subscriber of EventOnSend fails now and then and retries.
//
// Run it with: go run ./examples/dashboard, and open the printed URL.
// Flags: -addr (default 127.0.0.1:8080), -for (stop after a duration;
// default: until interrupted), -dir (journal directory; default a
// temporary one).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/dashboard"
	"github.com/imbus/eventbus/journal"
)

type conn struct {
	uid string
	id  int64
}

func (c *conn) UID() string { return c.uid }
func (c *conn) ID() int64   { return c.id }

// send is the frame of an EventOnSend: a message to a channel.
type send struct {
	Channel string
	Text    string
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve the dashboard on")
	dur := flag.Duration("for", 0, "stop after this long (0: until interrupted)")
	dir := flag.String("dir", "", "journal directory (default: a temporary one)")
	flag.Parse()
	if err := run(os.Stdout, *addr, *dur, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "dashboard:", err)
		os.Exit(1)
	}
}

func run(out io.Writer, addr string, dur time.Duration, dir string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "eventbus-dashboard-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	j, err := journal.Open(dir)
	if err != nil {
		return err
	}
	defer j.Close()

	quiet := slog.New(slog.DiscardHandler)
	bus, err := eventbus.New(eventbus.WithLogger(quiet),
		eventbus.WithJournal(j, eventbus.EventChannelStore, eventbus.EventPushOffline),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 4, InitialBackoff: 200 * time.Millisecond, MaxBackoff: 2 * time.Second}))
	if err != nil {
		return err
	}
	// Per-handler counters for the Handlers view: an opt-in middleware.
	hs := dashboard.NewHandlerStats()
	bus.Use(hs.Middleware())
	start := time.Now()
	apnsDown := func() bool { return time.Since(start) < 20*time.Second }

	register := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		// bob's token lookups time out twice before they work.
		if info, _ := eventbus.CallInfoFrom(ctx); ev.Conn.UID() == "bob" && info.Attempt < 3 {
			return errors.New("session service: deadline exceeded looking up bob's token")
		}
		return nil
	}, eventbus.WithName("auth"), eventbus.WithHandlerRetry(eventbus.RetryPolicy{MaxAttempts: 8, InitialBackoff: time.Second, MaxBackoff: time.Second, Jitter: -1}))
	register(err)
	_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		f := ev.Frame.(send)
		m := &eventbus.Message{FromUID: ev.Conn.UID(), ChannelID: f.Channel, ChannelType: 2,
			Payload: []byte(f.Text), Timestamp: time.Now().UnixMilli()}
		return bus.AddEvent(ctx, &eventbus.ChannelContext{EventType: eventbus.EventChannelStore,
			ChannelID: f.Channel, ChannelType: 2, Messages: []*eventbus.Message{m}})
	}, eventbus.WithName("route"))
	register(err)
	_, err = eventbus.Subscribe(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		if rand.IntN(40) == 0 {
			return errors.New("webhook: 502 Bad Gateway")
		}
		return nil
	}, eventbus.WithName("webhook"))
	register(err)
	_, err = eventbus.Register(bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		if ev.ChannelID == "group:hot" {
			time.Sleep(150 * time.Millisecond)
		} else {
			time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Microsecond)
		}
		for _, m := range ev.Messages {
			for _, to := range []string{"alice", "carol", "dave"} {
				if to == m.FromUID {
					continue
				}
				t := eventbus.EventPushOnline
				if to == "dave" {
					if rand.IntN(100) != 0 {
						continue // dave is offline; some messages go to APNs
					}
					t = eventbus.EventPushOffline
				}
				if err := bus.AddEvent(ctx, &eventbus.PushContext{EventType: t, Message: m, Subscribers: []string{to}}); err != nil {
					return err
				}
			}
		}
		return nil
	}, eventbus.WithName("store"))
	register(err)
	_, err = eventbus.Register(bus, eventbus.EventPushOnline, func(ctx context.Context, ev *eventbus.PushContext) error {
		time.Sleep(time.Duration(200+rand.IntN(600)) * time.Microsecond)
		return nil
	}, eventbus.WithName("deliver"))
	register(err)
	_, err = eventbus.Register(bus, eventbus.EventPushOffline, func(ctx context.Context, ev *eventbus.PushContext) error {
		if apnsDown() {
			return eventbus.Permanent(errors.New("apns: 503 service unavailable for device of " + ev.Subscribers[0]))
		}
		return nil
	}, eventbus.WithName("apns"))
	register(err)
	if err := bus.Start(); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/debug/eventbus/", http.StripPrefix("/debug/eventbus",
		dashboard.New(bus, dashboard.WithJournal(j), dashboard.WithActions(), dashboard.WithPayloads(),
			dashboard.WithHandlerStats(hs))))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln) // ends with Shutdown below
	}()
	defer func() { <-served }()
	fmt.Fprintf(out, "dashboard: http://%s/debug/eventbus/\n", ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dur)
		defer cancel()
	}
	workload(ctx, bus)

	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := bus.Close(sctx); err != nil {
		return err
	}
	fmt.Fprintln(out, "dashboard: stopped")
	return nil
}

// workload sends messages from a few users to a few channels, about 300 a
// second, until ctx ends.
func workload(ctx context.Context, bus *eventbus.Bus) {
	users := []string{"alice", "carol", "erin", "frank"}
	channels := []string{"group:general", "group:random", "dm:alice-carol", "group:ops"}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n%300 == 0 {
			// Every 3 s a burst of 15 to the slow channel: about 2 s of
			// work queued on its one key.
			for k := range 15 {
				_ = bus.TryAddEvent(&eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &conn{uid: "alice", id: 9},
					Frame: send{Channel: "group:hot", Text: fmt.Sprintf("burst %d.%d", n/300, k)}})
			}
		}
		for i := range 3 {
			u := users[(n+i)%len(users)]
			ch := channels[(n*7+i)%len(channels)]
			if n%300 == 0 && i == 1 {
				u = "bob"
			}
			text := fmt.Sprintf("message %d from %s", n, u)
			if n%50 == 0 {
				text = `<script>alert("hi")</script> is just text here`
			}
			ev := &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &conn{uid: u, id: int64(i + 1)},
				Frame: send{Channel: ch, Text: text}}
			if err := bus.TryAddEvent(ev); err != nil && !errors.Is(err, eventbus.ErrQueueFull) {
				return
			}
		}
	}
}
