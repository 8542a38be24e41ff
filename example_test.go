package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/imbus/eventbus"
)

// exConn stands for a server's connection type in the examples. A real
// one also holds the socket; handlers type-assert eventbus.Conn to it.
type exConn struct {
	uid string
	id  int64
}

func (c *exConn) UID() string { return c.uid }
func (c *exConn) ID() int64   { return c.id }

// exQuiet keeps the bus's failure logs out of the examples' output.
var exQuiet = slog.New(slog.DiscardHandler)

// exSend is the OnSend event of a text message from conn to a group.
func exSend(conn eventbus.Conn, group, text string) *eventbus.UserContext {
	return &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn,
		Frame: &eventbus.Message{FromUID: conn.UID(), ChannelID: group, ChannelType: 2, Payload: []byte(text)}}
}

func exText(ev *eventbus.UserContext) string {
	return string(ev.Frame.(*eventbus.Message).Payload)
}

// The life of a bus: New, Register, Start, AddEvent, WaitIdle, Close.
// Events of one user are handled one at a time, in the order they were
// added.
func Example() {
	bus, err := eventbus.New(eventbus.WithLogger(exQuiet))
	if err != nil {
		log.Fatal(err)
	}
	_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		fmt.Printf("%s sent %q\n", ev.Conn.UID(), exText(ev))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}

	alice := &exConn{uid: "alice", id: 1}
	for _, text := range []string{"hello", "how are you?", "bye"} {
		if err := bus.AddEvent(context.Background(), exSend(alice, "g1", text)); err != nil {
			log.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.WaitIdle(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("handled:", bus.Stats().User.Handled)
	if err := bus.Close(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// alice sent "hello"
	// alice sent "how are you?"
	// alice sent "bye"
	// handled: 3
}

// A chain of handlers for one event type: an audit that rejects some
// messages with ErrStopChain, then a store. Register appends to the chain;
// First puts the audit in front although it is registered last. A rejected
// event counts as Stopped and is not retried.
func ExampleRegister() {
	bus, err := eventbus.New(eventbus.WithLogger(exQuiet))
	if err != nil {
		log.Fatal(err)
	}
	store := func(ctx context.Context, ev *eventbus.UserContext) error {
		fmt.Printf("store: %q\n", exText(ev))
		return nil
	}
	audit := func(ctx context.Context, ev *eventbus.UserContext) error {
		if strings.Contains(exText(ev), "spam") {
			return fmt.Errorf("audit: %q rejected: %w", exText(ev), eventbus.ErrStopChain)
		}
		return nil
	}
	if _, err := eventbus.Register(bus, eventbus.EventOnSend, store, eventbus.WithName("store")); err != nil {
		log.Fatal(err)
	}
	if _, err := eventbus.Register(bus, eventbus.EventOnSend, audit, eventbus.WithName("audit"), eventbus.First()); err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}

	bob := &exConn{uid: "bob", id: 2}
	for _, text := range []string{"hi", "cheap spam here", "see you"} {
		if err := bus.AddEvent(context.Background(), exSend(bob, "g1", text)); err != nil {
			log.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.WaitIdle(ctx); err != nil {
		log.Fatal(err)
	}
	st := bus.Stats().User
	fmt.Printf("handled %d, stopped %d\n", st.Handled, st.Stopped)
	if err := bus.Close(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// store: "hi"
	// store: "see you"
	// handled 2, stopped 1
}

// Follow-on events: a user handler turns a sent message into a channel
// event, the channel handler stores it and fans it out as a push event,
// the pusher delivers it. Handlers emit through the ctx they were given,
// so follow-on adds never wait, and they depend on an Emitter rather than
// on *Bus so that tests can pass an eventbustest.Recorder. WaitIdle
// returns only when the whole flow is done.
func ExampleEmitter() {
	bus, err := eventbus.New(eventbus.WithLogger(exQuiet))
	if err != nil {
		log.Fatal(err)
	}
	members := map[string][]string{"g1": {"alice", "bob", "carol"}}

	onSend := func(em eventbus.Emitter) eventbus.Handler[eventbus.UserContext] {
		return func(ctx context.Context, ev *eventbus.UserContext) error {
			m := ev.Frame.(*eventbus.Message)
			return em.AddEvent(ctx, &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute,
				ChannelID: m.ChannelID, ChannelType: m.ChannelType, Messages: []*eventbus.Message{m}})
		}
	}
	var seq uint64 // g1's last sequence: one channel's events run one at a time, so no lock
	distribute := func(em eventbus.Emitter) eventbus.Handler[eventbus.ChannelContext] {
		return func(ctx context.Context, ev *eventbus.ChannelContext) error {
			for _, m := range ev.Messages {
				seq++
				m.MessageSeq = seq // "store"
				var to []string
				for _, uid := range members[ev.ChannelID] {
					if uid != m.FromUID {
						to = append(to, uid)
					}
				}
				err := em.AddEvent(ctx, &eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: m, Subscribers: to})
				if err != nil {
					return err
				}
			}
			return nil
		}
	}
	pushOnline := func(ctx context.Context, ev *eventbus.PushContext) error {
		fmt.Printf("deliver %s#%d %q to %v\n", ev.Message.ChannelID, ev.Message.MessageSeq, ev.Message.Payload, ev.Subscribers)
		return nil
	}

	if _, err := eventbus.Register(bus, eventbus.EventOnSend, onSend(bus)); err != nil {
		log.Fatal(err)
	}
	if _, err := eventbus.Register(bus, eventbus.EventChannelDistribute, distribute(bus)); err != nil {
		log.Fatal(err)
	}
	if _, err := eventbus.Register(bus, eventbus.EventPushOnline, pushOnline); err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}

	alice := &exConn{uid: "alice", id: 1}
	for _, text := range []string{"lunch?", "at noon"} {
		if err := bus.AddEvent(context.Background(), exSend(alice, "g1", text)); err != nil {
			log.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.WaitIdle(ctx); err != nil {
		log.Fatal(err)
	}
	st := bus.Stats()
	fmt.Println("handled:", st.User.Handled, st.Channel.Handled, st.Pusher.Handled)
	if err := bus.Close(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// deliver g1#1 "lunch?" to [bob carol]
	// deliver g1#2 "at noon" to [bob carol]
	// handled: 2 2 2
}

// Hot-plug: Replace swaps a handler in place, in one step, while events
// flow (an A/B switch without a gap); UnregisterHandler removes it by name.
// An event type with no handler left is refused with ErrNoHandler.
func ExampleReplace() {
	bus, err := eventbus.New(eventbus.WithLogger(exQuiet))
	if err != nil {
		log.Fatal(err)
	}
	filter := func(version string) eventbus.Handler[eventbus.UserContext] {
		return func(ctx context.Context, ev *eventbus.UserContext) error {
			fmt.Printf("filter %s: %q\n", version, exText(ev))
			return nil
		}
	}
	if _, err := eventbus.Register(bus, eventbus.EventOnSend, filter("A"), eventbus.WithName("filter")); err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	carol := &exConn{uid: "carol", id: 3}
	send := func(text string) error {
		if err := bus.AddEvent(ctx, exSend(carol, "g1", text)); err != nil {
			return err
		}
		return bus.WaitIdle(ctx)
	}

	if err := send("one"); err != nil {
		log.Fatal(err)
	}
	reg, err := eventbus.Register(bus, eventbus.EventOnSend, filter("B"), eventbus.Replace("filter"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("replaced:", reg.Name())
	if err := send("two"); err != nil {
		log.Fatal(err)
	}

	fmt.Println("removed:", bus.UnregisterHandler(eventbus.EventOnSend, "filter"))
	err = send("three")
	fmt.Println("no handler:", errors.Is(err, eventbus.ErrNoHandler))
	if err := bus.Close(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// filter A: "one"
	// replaced: filter
	// filter B: "two"
	// removed: true
	// no handler: true
}

// Middleware wraps every attempt of every handler; the first given to Use
// runs outermost. Here it reports each attempt with the CallInfo the bus
// puts in the handler's context: the store fails once and is retried.
func ExampleBus_Use() {
	bus, err := eventbus.New(eventbus.WithLogger(exQuiet),
		eventbus.WithRetry(eventbus.RetryPolicy{InitialBackoff: time.Millisecond}))
	if err != nil {
		log.Fatal(err)
	}
	bus.Use(func(next eventbus.HandlerFunc) eventbus.HandlerFunc {
		return func(ctx context.Context, ev eventbus.Event) error {
			info, _ := eventbus.CallInfoFrom(ctx)
			err := next(ctx, ev)
			fmt.Printf("%s %s/%s attempt %d: %v\n", info.Pool, info.Type, info.Handler, info.Attempt, err)
			return err
		}
	})
	failures := 1
	store := func(ctx context.Context, ev *eventbus.UserContext) error {
		if failures > 0 {
			failures--
			return errors.New("database busy")
		}
		return nil
	}
	if _, err := eventbus.Register(bus, eventbus.EventOnSend, store, eventbus.WithName("store")); err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}
	if err := bus.AddEvent(context.Background(), exSend(&exConn{uid: "dave", id: 4}, "g1", "hi")); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.WaitIdle(ctx); err != nil {
		log.Fatal(err)
	}
	if err := bus.Close(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// user OnSend/store attempt 1: database busy
	// user OnSend/store attempt 2: <nil>
}

// exPrintSink is a DeadLetterSink that prints what the bus gave up on.
type exPrintSink struct{}

func (exPrintSink) DeadLetter(d *eventbus.DeadLetter) {
	fmt.Printf("dead letter: %v in %s after %d attempts: %v\n", d.Event.Type(), d.Handler, d.Attempts, d.Err)
}

// Retries and dead letters: an ordinary error is retried with backoff
// (the key waits, the rest of its shard goes on); after the last attempt
// the event goes to the dead-letter sink. Permanent skips the retries.
// Both events below belong to one user, so the second waits for the
// first one's retries: the output order is fixed.
func ExampleWithDeadLetter() {
	bus, err := eventbus.New(eventbus.WithLogger(exQuiet), eventbus.WithDeadLetter(exPrintSink{}),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond}))
	if err != nil {
		log.Fatal(err)
	}
	store := func(ctx context.Context, ev *eventbus.UserContext) error {
		return errors.New("database down")
	}
	ack := func(ctx context.Context, ev *eventbus.UserContext) error {
		return eventbus.Permanent(fmt.Errorf("malformed ack %v", ev.Frame))
	}
	if _, err := eventbus.Register(bus, eventbus.EventOnSend, store, eventbus.WithName("store")); err != nil {
		log.Fatal(err)
	}
	if _, err := eventbus.Register(bus, eventbus.EventRecvAck, ack, eventbus.WithName("ack")); err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}
	erin := &exConn{uid: "erin", id: 5}
	for _, ev := range []eventbus.Event{
		exSend(erin, "g1", "hi"),
		&eventbus.UserContext{EventType: eventbus.EventRecvAck, Conn: erin, Frame: "?"},
	} {
		if err := bus.AddEvent(context.Background(), ev); err != nil {
			log.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.WaitIdle(ctx); err != nil {
		log.Fatal(err)
	}
	st := bus.Stats().User
	fmt.Printf("failed %d, retried %d, dead-lettered %d\n", st.Failed, st.Retried, st.DeadLettered)
	if err := bus.Close(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// dead letter: OnSend in store after 3 attempts: database down
	// dead letter: RecvAck in ack after 1 attempts: malformed ack ?
	// failed 4, retried 2, dead-lettered 2
}

// Back-pressure: a shard holds at most QueueSize events (in flight ones
// included). TryAddEvent refuses at once with ErrQueueFull; AddEvent waits
// for room, bounded by its ctx.
func ExampleBus_TryAddEvent() {
	bus, err := eventbus.New(eventbus.WithLogger(exQuiet),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, QueueSize: 1}))
	if err != nil {
		log.Fatal(err)
	}
	release := make(chan struct{})
	slow := func(ctx context.Context, ev *eventbus.UserContext) error {
		select {
		case <-release:
		case <-ctx.Done(): // the bus gave up closing
		}
		return nil
	}
	if _, err := eventbus.Register(bus, eventbus.EventOnSend, slow); err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}
	frank := &exConn{uid: "frank", id: 6}
	if err := bus.AddEvent(context.Background(), exSend(frank, "g1", "1")); err != nil {
		log.Fatal(err)
	}

	fmt.Println("TryAddEvent:", bus.TryAddEvent(exSend(frank, "g1", "2")))
	short, cancelShort := context.WithTimeout(context.Background(), 10*time.Millisecond)
	err = bus.AddEvent(short, exSend(frank, "g1", "2"))
	cancelShort()
	fmt.Println("AddEvent: full:", errors.Is(err, eventbus.ErrQueueFull),
		"deadline:", errors.Is(err, context.DeadlineExceeded))

	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.WaitIdle(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("after drain:", bus.TryAddEvent(exSend(frank, "g1", "3")))
	if err := bus.Close(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("handled:", bus.Stats().User.Handled)
	// Output:
	// TryAddEvent: eventbus: queue full
	// AddEvent: full: true deadline: true
	// after drain: <nil>
	// handled: 2
}

// Close drains: events already accepted, and the follow-on events they
// cause, still run; adds from outside are refused with ErrClosed as soon as
// Close begins.
func ExampleBus_Close() {
	bus, err := eventbus.New(eventbus.WithLogger(exQuiet))
	if err != nil {
		log.Fatal(err)
	}
	_, err = eventbus.Register(bus, eventbus.EventConnClose, func(ctx context.Context, ev *eventbus.UserContext) error {
		fmt.Println("goodbye", ev.Conn.UID())
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}
	for i, uid := range []string{"gina", "gina", "gina"} {
		ev := &eventbus.UserContext{EventType: eventbus.EventConnClose, Conn: &exConn{uid: uid, id: int64(10 + i)}}
		if err := bus.AddEvent(context.Background(), ev); err != nil {
			log.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("close:", bus.Close(ctx)) // no WaitIdle: Close drains
	err = bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventConnClose, Conn: &exConn{uid: "gina"}})
	fmt.Println("after close:", err)
	fmt.Println("handled:", bus.Stats().User.Handled)
	// Output:
	// goodbye gina
	// goodbye gina
	// goodbye gina
	// close: <nil>
	// after close: eventbus: bus closed
	// handled: 3
}

// Event types without a built-in meaning are declared before Start; 30–255
// may go to any pool.
func ExampleBus_Define() {
	const EventTyping eventbus.EventType = 30
	bus, err := eventbus.New(eventbus.WithLogger(exQuiet))
	if err != nil {
		log.Fatal(err)
	}
	if err := bus.Define(EventTyping, eventbus.PoolUser, "Typing"); err != nil {
		log.Fatal(err)
	}
	_, err = eventbus.Register(bus, EventTyping, func(ctx context.Context, ev *eventbus.UserContext) error {
		fmt.Println(ev.Conn.UID(), "is typing")
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(EventTyping, "is", bus.TypeName(EventTyping))
	if err := bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: EventTyping, Conn: &exConn{uid: "hana", id: 7}}); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.Close(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// EventType(30) is Typing
	// hana is typing
}

// ObserverFunc turns a function into an Observer, as http.HandlerFunc
// does for handlers: here it prints the outcome of every run of a chain.
// A real one would feed counters and histograms (see contrib/otel).
func ExampleObserverFunc() {
	obs := eventbus.ObserverFunc(func(o eventbus.Observation) {
		if o.Err != nil {
			fmt.Printf("%s %v: %s in %q, attempt %d: %v\n", o.Pool, o.Type, o.Outcome, o.Handler, o.Attempt, o.Err)
			return
		}
		fmt.Printf("%s %v: %s\n", o.Pool, o.Type, o.Outcome)
	})
	bus, err := eventbus.New(eventbus.WithLogger(exQuiet), eventbus.WithObserver(obs),
		eventbus.WithRetry(eventbus.RetryPolicy{InitialBackoff: time.Millisecond}))
	if err != nil {
		log.Fatal(err)
	}
	failures := 1
	store := func(ctx context.Context, ev *eventbus.UserContext) error {
		if failures > 0 { // one key: handler calls never overlap
			failures--
			return errors.New("database busy")
		}
		return nil
	}
	if _, err := eventbus.Register(bus, eventbus.EventOnSend, store, eventbus.WithName("store")); err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}
	if err := bus.AddEvent(context.Background(), exSend(&exConn{uid: "erin"}, "g1", "hi")); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.Close(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// user OnSend: retried in "store", attempt 1: database busy
	// user OnSend: handled
}

// DeadLetterFunc turns a function into a DeadLetterSink: here every event
// the bus gives up on is printed. With NoRetry the first failure is final.
func ExampleDeadLetterFunc() {
	sink := eventbus.DeadLetterFunc(func(d *eventbus.DeadLetter) {
		fmt.Printf("gave up on %v in %q after %d attempt(s): %v\n", d.Event.Type(), d.Handler, d.Attempts, d.Err)
	})
	bus, err := eventbus.New(eventbus.WithLogger(exQuiet), eventbus.WithDeadLetter(sink),
		eventbus.WithRetry(eventbus.NoRetry))
	if err != nil {
		log.Fatal(err)
	}
	push := func(ctx context.Context, ev *eventbus.PushContext) error {
		return errors.New("APNs unreachable")
	}
	if _, err := eventbus.Register(bus, eventbus.EventPushOffline, push, eventbus.WithName("apns")); err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}
	msg := &eventbus.Message{ChannelID: "g1", ChannelType: 2, Payload: []byte("hi")}
	err = bus.AddEvent(context.Background(), &eventbus.PushContext{EventType: eventbus.EventPushOffline,
		Message: msg, Subscribers: []string{"dave"}})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.Close(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// gave up on PushOffline in "apns" after 1 attempt(s): APNs unreachable
}

// webhook is a handler object in the style of an IM server's modules: its
// Handle method is the handler.
type webhook struct {
	mu   sync.Mutex
	sent []string
}

func (w *webhook) Handle(ctx context.Context, ev *eventbus.UserContext) error {
	time.Sleep(20 * time.Millisecond) // stands for the HTTP call
	w.mu.Lock()
	w.sent = append(w.sent, exText(ev))
	w.mu.Unlock()
	return nil
}

// Subscribers run next to the chain, each with its own lanes, order and
// retries: the slow webhook does not hold back storage.
func ExampleSubscribe() {
	bus, err := eventbus.New(eventbus.WithLogger(exQuiet))
	if err != nil {
		log.Fatal(err)
	}
	stored := make(chan string, 3)
	store := func(ctx context.Context, ev *eventbus.UserContext) error {
		stored <- exText(ev)
		return nil
	}
	hook := &webhook{}
	if _, err := eventbus.Register(bus, eventbus.EventOnSend, store, eventbus.WithName("store")); err != nil {
		log.Fatal(err)
	}
	if _, err := eventbus.Subscribe(bus, eventbus.EventOnSend, hook.Handle,
		eventbus.WithName("webhook"), eventbus.WithConcurrency(16)); err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}
	bob := &exConn{uid: "bob", id: 2}
	for _, text := range []string{"one", "two", "three"} {
		if err := bus.AddEvent(context.Background(), exSend(bob, "g1", text)); err != nil {
			log.Fatal(err)
		}
	}
	for range 3 {
		fmt.Println("stored:", <-stored) // long before the webhook is done
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.Close(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("webhook sent:", hook.sent) // one key: in order
	fmt.Println("webhook handled:", bus.Stats().Subscribers["OnSend/webhook"].Handled)
	// Output:
	// stored: one
	// stored: two
	// stored: three
	// webhook sent: [one two three]
	// webhook handled: 3
}
