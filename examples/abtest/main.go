// Command abtest hot-plugs handlers while traffic flows: an A/B test of the
// OnSend "audit" handler, as WuKongIM's seed does by swapping handlers in
// and out of a running server.
//
// Four producers add OnSend events from their own goroutines. Meanwhile the
// main goroutine swaps the audit variant twenty times with eventbus.Replace,
// which puts the new handler in the old one's place in one atomic step, and
// plugs a "shadow" handler in (WithName) and out (Registration.Unregister)
// half way through. A chain is read once when its event starts, so every
// event runs through exactly one variant: none is lost in a swap, none is
// seen twice. The demo proves it by marking each event in the variant that
// saw it, and checks that each producer's events kept their order.
//
// The split between A and B varies from run to run; the final lines do not.
//
// Run it with: go run ./examples/abtest
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imbus/eventbus"
)

const (
	producers   = 4
	perProducer = 5000
	total       = producers * perProducer
	swaps       = 20
	step        = total / swaps // a swap every step adds
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "abtest:", err)
		os.Exit(1)
	}
}

// conn is the smallest eventbus.Conn: one logged-in user.
type conn struct{ uid string }

func (c conn) UID() string { return c.uid }
func (c conn) ID() int64   { return 0 }

// send is the frame each event carries: who produced it and its number.
type send struct {
	producer int
	id       int // 0..total-1, unique
	seq      int // position in its producer's stream
	text     string
}

// tally is what the handlers record, indexed by event id.
type tally struct {
	variant [total]atomic.Int32 // how many audit variants saw the event
	deliver [total]atomic.Int32 // how many times the chain's end saw it
	last    [producers]atomic.Int64
	order   atomic.Bool // a producer's events arrived out of order

	a, b, flaggedA, flaggedB, shadow atomic.Int64
}

// audit returns an audit handler: A flags the exact word, B ignores case.
// Both only flag (an A/B test in shadow mode): neither stops the chain.
func (t *tally) audit(caseless bool, seen, flagged *atomic.Int64) eventbus.Handler[eventbus.UserContext] {
	return func(ctx context.Context, ev *eventbus.UserContext) error {
		f := ev.Frame.(send)
		t.variant[f.id].Add(1)
		seen.Add(1)
		text := f.text
		if caseless {
			text = strings.ToLower(text)
		}
		if strings.Contains(text, "spam") {
			flagged.Add(1)
		}
		return nil
	}
}

// deliverHandler ends the chain; it checks per-key order on the way: one
// producer is one user, whose events run one at a time in add order.
func (t *tally) deliverHandler(ctx context.Context, ev *eventbus.UserContext) error {
	f := ev.Frame.(send)
	t.deliver[f.id].Add(1)
	if prev := t.last[f.producer].Swap(int64(f.seq)); prev != int64(f.seq)-1 {
		t.order.Store(true)
	}
	return nil
}

func run(out io.Writer) error {
	bus, err := eventbus.New(
		eventbus.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 4, QueueSize: 256}),
	)
	if err != nil {
		return err
	}
	t := &tally{}
	for i := range t.last {
		t.last[i].Store(-1)
	}
	variantA := t.audit(false, &t.a, &t.flaggedA)
	variantB := t.audit(true, &t.b, &t.flaggedB)
	if _, err := eventbus.Register(bus, eventbus.EventOnSend, variantA, eventbus.WithName("audit-A")); err != nil {
		return err
	}
	if _, err := eventbus.Register(bus, eventbus.EventOnSend, t.deliverHandler, eventbus.WithName("deliver")); err != nil {
		return err
	}
	if err := bus.Start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Producers: each one user, adding its events in order. Every step-th
	// add (counted over all producers) signals the swapper.
	var added atomic.Int64
	tick := make(chan struct{}, swaps) // never blocks a producer
	errs := make(chan error, producers)
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			c := conn{uid: fmt.Sprintf("user-%d", p)}
			for i := range perProducer {
				text := "hello"
				if i%10 == 0 {
					text = "Spam offer"
				} else if i%10 == 5 {
					text = "spam offer"
				}
				ev := &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: c,
					Frame: send{producer: p, id: p*perProducer + i, seq: i, text: text}}
				if err := bus.AddEvent(ctx, ev); err != nil {
					errs <- err
					return
				}
				if n := added.Add(1); n%step == step/2 {
					tick <- struct{}{}
				}
			}
		})
	}

	// The swapper: on each tick, put the other variant in place of the
	// current one. Old and new never coexist and never are both absent.
	current := "audit-A"
	var shadow *eventbus.Registration
	var swapErr error
swapping:
	for i := 1; i <= swaps; i++ {
		select {
		case <-tick:
		case err := <-errs: // a producer gave up: no more ticks will come
			swapErr = err
			break swapping
		}
		next, h := "audit-B", variantB
		if current == "audit-B" {
			next, h = "audit-A", variantA
		}
		if _, err := eventbus.Register(bus, eventbus.EventOnSend, h, eventbus.Replace(current), eventbus.WithName(next)); err != nil {
			swapErr = err
			break
		}
		current = next
		switch i {
		case 5:
			shadow, err = eventbus.Register(bus, eventbus.EventOnSend,
				func(ctx context.Context, ev *eventbus.UserContext) error { t.shadow.Add(1); return nil },
				eventbus.WithName("shadow"))
			if err != nil {
				swapErr = err
			}
		case 15:
			shadow.Unregister()
			shadow.Unregister() // idempotent
		}
		if swapErr != nil {
			break
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		swapErr = errors.Join(swapErr, err)
	}
	if swapErr != nil {
		_ = bus.Close(ctx)
		return swapErr
	}
	if err := bus.WaitIdle(ctx); err != nil {
		return err
	}

	fmt.Fprintf(out, "A/B test of the OnSend audit handler: %d producers x %d events, %d hot swaps with Replace\n",
		producers, perProducer, swaps)
	fmt.Fprintf(out, "variant A (exact word) ran %d events, flagged %d\n", t.a.Load(), t.flaggedA.Load())
	fmt.Fprintf(out, "variant B (any case)   ran %d events, flagged %d\n", t.b.Load(), t.flaggedB.Load())
	fmt.Fprintf(out, "shadow handler, plugged in after swap 5 and out after swap 15, ran %d events\n", t.shadow.Load())

	var once, lost, twice, delivered int
	for id := range total {
		switch t.variant[id].Load() {
		case 0:
			lost++
		case 1:
			once++
		default:
			twice++
		}
		if t.deliver[id].Load() == 1 {
			delivered++
		}
	}
	st := bus.Stats().User
	if err := bus.Close(ctx); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	fmt.Fprintln(out, "--")
	fmt.Fprintf(out, "active variant at the end: %s\n", current)
	fmt.Fprintf(out, "A + B: %d\n", t.a.Load()+t.b.Load())
	fmt.Fprintf(out, "added: %d\n", added.Load())
	fmt.Fprintf(out, "handled (Stats.User): %d of %d added\n", st.Handled, st.Added)
	fmt.Fprintf(out, "delivered exactly once: %d\n", delivered)
	fmt.Fprintf(out, "seen by exactly one variant: %d\n", once)
	fmt.Fprintf(out, "seen by two variants: %d\n", twice)
	fmt.Fprintf(out, "per-user order kept: %v\n", !t.order.Load())
	fmt.Fprintf(out, "lost: %d\n", lost)
	if lost != 0 || twice != 0 || delivered != total || st.Handled != total || t.order.Load() {
		return errors.New("hot swap lost, duplicated or reordered events")
	}
	return nil
}
