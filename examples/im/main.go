// Command im runs the message flow of an IM server on an eventbus.Bus, the
// way WuKongIM's event-driven core does: the connection layer turns client
// frames into user events, user handlers turn a sent message into a channel
// event, channel handlers store it and fan it out as push events, and pusher
// handlers deliver it online or hand it to offline push.
//
// The clients are mock connections that record the frames the server writes
// to them. The demo prints ten parts, each under a heading:
//
//  1. Clients connect (user pool): "auth" checks the token, a bad one gets
//     CONNACK with a reason and stops the chain (ErrStopChain); "session"
//     logs the user in.
//  2. A client sends (OnSend): "audit", head of the chain, rejects a banned
//     word; "deliver" emits ChannelDistribute as a follow-on event; the
//     channel pool's "store" assigns MessageSeq in order per channel and
//     acks the sender; "fanout" emits one PushOnline per online receiver
//     (eventbus.AddPerReceiver) and one PushOffline for the others.
//  3. Receivers answer RECVACK.
//  4. One receiver's write fails once: the pusher pool is keyed per
//     receiver (eventbus.KeyByReceiver), so only that receiver gets a
//     retry; the others got the message exactly once.
//  5. and 6. A client disconnects; its later messages go to offline push.
//  7. RECVACK again.
//  8. Isolation and back-pressure: the channel pool is stuck on a slow
//     database while the user pool keeps going; the stuck channel's shard
//     is full, so TryAddEvent says ErrQueueFull at once and AddEvent waits
//     until its ctx ends.
//  9. Load: thousands of messages, one at a time and in a burst, with the
//     end-to-end latency from AddEvent to the RECV write.
//  10. Subscribers: a webhook that takes 100 ms a message runs beside the
//     OnSend chain (eventbus.Subscribe), not in it, so storage and push
//     finish long before it does. A statistics subscriber, there from the
//     start, counts every SEND frame.
//
// Handlers run concurrently on three pools, so the demo prints nothing from
// them: after each part it waits with WaitIdle and prints what the mock
// connections and the server recorded, sorted, so the output is the same on
// every run (except the lines with latency figures and timings, which say
// "latency" or "varies").
//
// Run it with: go run ./examples/im
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imbus/eventbus"
)

// EventConnWrite asks the user pool to write a frame to a connection, so
// that everything written to one user goes through that user's ordered
// queue. It is not built in: the demo declares it with Bus.Define.
const EventConnWrite eventbus.EventType = 6

// EventPing is a client's heartbeat: user-pool work that needs no other
// pool, used to show that a stuck channel pool does not hold it up.
const EventPing eventbus.EventType = 7

// groupChannel is WuKongIM's channel type of a group.
const groupChannel uint8 = 2

// bannedWord is what the audit handler rejects.
const bannedWord = "spam"

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "im:", err)
		os.Exit(1)
	}
}

// ---- protocol frames, much simplified from WuKongIM's ----

type connectFrame struct{ UID, Token string }

type connackFrame struct{ Reason string }

type sendFrame struct {
	ClientMsgNo string
	ChannelID   string
	Payload     string
}

type sendackFrame struct {
	ClientMsgNo string
	ChannelID   string
	MessageID   int64
	MessageSeq  uint64
	Reason      string // "" when accepted
}

type recvFrame struct {
	MessageID  int64
	MessageSeq uint64
	ChannelID  string
	FromUID    string
	Payload    string
}

type recvackFrame struct {
	ChannelID  string
	MessageSeq uint64
}

func (f connackFrame) String() string {
	if f.Reason != "" {
		return "CONNACK " + f.Reason
	}
	return "CONNACK ok"
}

func (f sendackFrame) String() string {
	if f.Reason != "" {
		return fmt.Sprintf("SENDACK %s %s %s", f.ClientMsgNo, f.ChannelID, f.Reason)
	}
	return fmt.Sprintf("SENDACK %s %s id=%d seq=%d ok", f.ClientMsgNo, f.ChannelID, f.MessageID, f.MessageSeq)
}

func (f recvFrame) String() string {
	return fmt.Sprintf("RECV %s seq=%d id=%d from %s %q", f.ChannelID, f.MessageSeq, f.MessageID, f.FromUID, f.Payload)
}

// sortKey orders frames for printing: by channel, then by sequence or
// client message number. Frames of one channel reach a connection in order;
// across channels the bus promises no order, so the demo sorts.
func sortKey(f any) string {
	switch f := f.(type) {
	case sendackFrame:
		return f.ChannelID + "/" + f.ClientMsgNo
	case recvFrame:
		return fmt.Sprintf("%s/%08d", f.ChannelID, f.MessageSeq)
	}
	return ""
}

// ---- the mock connection ----

// mockConn is a client connection that records the frames written to it.
// It implements eventbus.Conn; handlers type-assert to it to write.
type mockConn struct {
	id int64

	mu         sync.Mutex
	uid        string
	closed     bool
	failNext   int // writes still to fail with errConnReset (a flaky network)
	writeTries int
	frames     []any
}

var _ eventbus.Conn = (*mockConn)(nil)

var (
	errConnClosed = errors.New("connection closed")
	errConnReset  = errors.New("connection reset by peer")
)

func (c *mockConn) ID() int64 { return c.id }

func (c *mockConn) UID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.uid
}

func (c *mockConn) setUID(uid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.uid = uid
}

// Write records f, as a real connection would send it.
func (c *mockConn) Write(f any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeTries++
	if c.closed {
		return errConnClosed
	}
	if c.failNext > 0 {
		c.failNext--
		return errConnReset
	}
	c.frames = append(c.frames, f)
	return nil
}

// tries returns how many writes were tried on the connection.
func (c *mockConn) tries() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeTries
}

func (c *mockConn) failWrites(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failNext = n
}

func (c *mockConn) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
}

func (c *mockConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Frames returns a copy of the frames written so far, in write order.
func (c *mockConn) Frames() []any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.frames)
}

// ---- the server: state and handlers ----

type channel struct {
	subscribers []string
	lastSeq     uint64
	messages    []*eventbus.Message
}

// msgRef names a message a receiver has to acknowledge.
type msgRef struct {
	channelID string
	seq       uint64
}

type offlineNote struct {
	uid string
	msg *eventbus.Message
}

// server holds what an IM server keeps in memory. Handlers depend on an
// eventbus.Emitter, not on the bus, so they could be tested alone.
type server struct {
	bus       eventbus.Emitter
	nextMsgID atomic.Int64

	mu       sync.Mutex
	tokens   map[string]string    // uid -> token: the "auth service"
	online   map[string]*mockConn // uid -> logged-in connection
	channels map[string]*channel
	pending  map[string]map[msgRef]bool // RECV frames waiting for RECVACK, per uid
	acked    int
	offline  []offlineNote

	// For the isolation and load parts.
	dbDown    chan struct{} // closed when the "database" is back
	archived  atomic.Int64
	pings     atomic.Int64
	pingsDone chan struct{}      // closed at the pings-th heartbeat
	sentAt    sync.Map           // ClientMsgNo -> time.Time, for load messages
	arrived   chan time.Duration // end-to-end latency of each load message
	lastRecv  time.Time          // when the last RECV frame was written (under mu)

	// Subscribers of OnSend, beside the chain (see part 10).
	stats   *statistics
	webhook *webhook
}

func newServer(bus eventbus.Emitter) *server {
	s := &server{
		bus:    bus,
		tokens: map[string]string{"alice": "t-alice", "bob": "t-bob", "carol": "t-carol", "dave": "t-dave"},
		online: map[string]*mockConn{},
		channels: map[string]*channel{
			"g1": {subscribers: []string{"alice", "bob", "carol", "dave"}},
			"g2": {subscribers: []string{"alice", "bob", "dave"}},
			"g3": {subscribers: []string{"alice", "bob"}}, // the load test's
			"g4": {subscribers: crowd()},                  // the webhook part's
		},
		pending:   map[string]map[msgRef]bool{},
		dbDown:    make(chan struct{}),
		pingsDone: make(chan struct{}),
		arrived:   make(chan time.Duration, loadBurst),
		stats:     &statistics{sends: map[string]int{}},
		webhook:   &webhook{delay: webhookDelay, posted: map[string][]string{}},
	}
	for _, uid := range crowd() {
		s.tokens[uid] = "t-" + uid
	}
	return s
}

// crowd names the users of part 10: u01, u02…
func crowd() []string {
	uids := make([]string, crowdSize)
	for i := range uids {
		uids[i] = fmt.Sprintf("u%02d", i+1)
	}
	return uids
}

// register builds the handler chains of the flow.
func (s *server) register(bus *eventbus.Bus) error {
	var errs []error
	reg := func(_ *eventbus.Registration, err error) { errs = append(errs, err) }

	// User pool: the connection layer and what clients send.
	reg(eventbus.Register(bus, eventbus.EventOnConnect, s.onConnect, eventbus.WithName("accept")))
	reg(eventbus.Register(bus, eventbus.EventConnect, s.auth, eventbus.WithName("auth")))
	reg(eventbus.Register(bus, eventbus.EventConnect, s.session, eventbus.WithName("session")))
	reg(eventbus.Register(bus, eventbus.EventOnSend, s.deliver, eventbus.WithName("deliver")))
	// First puts the audit at the head of the chain, before "deliver".
	reg(eventbus.Register(bus, eventbus.EventOnSend, s.audit, eventbus.WithName("audit"), eventbus.First()))
	reg(eventbus.Register(bus, eventbus.EventRecvAck, s.recvAck, eventbus.WithName("recvack")))
	reg(eventbus.Register(bus, eventbus.EventConnClose, s.connClose, eventbus.WithName("close")))
	reg(eventbus.Register(bus, EventConnWrite, s.connWrite, eventbus.WithName("write")))
	reg(eventbus.Register(bus, EventPing, s.ping, eventbus.WithName("ping")))

	// Channel pool: store, then fan out.
	reg(eventbus.Register(bus, eventbus.EventChannelDistribute, s.store, eventbus.WithName("store")))
	reg(eventbus.Register(bus, eventbus.EventChannelDistribute, s.fanout, eventbus.WithName("fanout")))
	reg(eventbus.Register(bus, eventbus.EventChannelStore, s.archive, eventbus.WithName("archive")))

	// Pusher pool: online and offline delivery.
	reg(eventbus.Register(bus, eventbus.EventPushOnline, s.pushOnline, eventbus.WithName("recv")))
	reg(eventbus.Register(bus, eventbus.EventPushOffline, s.pushOffline, eventbus.WithName("offline-push")))

	// A subscriber of OnSend: not part of the chain above, it gets every
	// SEND frame the bus accepts, beside the chain and on its own goroutines.
	// (The webhook, the other subscriber, is added while the bus runs: part 10.)
	reg(eventbus.Subscribe(bus, eventbus.EventOnSend, s.stats.Handle, eventbus.WithName("stats")))
	return errors.Join(errs...)
}

// statistics counts the SEND frames of each user. As a subscriber it runs
// beside the OnSend chain, so it also sees the frames the audit rejects: a
// subscriber that should see only what the chain accepted subscribes to a
// type the chain emits (here ChannelDistribute) instead.
type statistics struct {
	mu    sync.Mutex
	sends map[string]int // uid -> SEND frames
}

func (st *statistics) Handle(ctx context.Context, ev *eventbus.UserContext) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sends[ev.Conn.UID()]++
	return nil
}

// total returns how many SEND frames were counted, and from how many users.
func (st *statistics) total() (frames, users int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, n := range st.sends {
		frames += n
	}
	return frames, len(st.sends)
}

// webhook posts every message sent to the app's HTTP endpoint, which takes
// delay to answer. In the OnSend chain it would hold each user's next
// message back by delay; as a subscriber it holds back only its own work.
type webhook struct {
	delay time.Duration

	mu     sync.Mutex
	posted map[string][]string // uid -> ClientMsgNo, in the order posted
	last   time.Time           // when the last post returned
}

func (w *webhook) Handle(ctx context.Context, ev *eventbus.UserContext) error {
	select {
	case <-time.After(w.delay): // the HTTP round trip
	case <-ctx.Done():
		return ctx.Err()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	uid := ev.Conn.UID()
	w.posted[uid] = append(w.posted[uid], ev.Frame.(sendFrame).ClientMsgNo)
	w.last = time.Now()
	return nil
}

// A socket was accepted. A real server would start its read loop.
func (s *server) onConnect(ctx context.Context, ev *eventbus.UserContext) error {
	if _, ok := ev.Conn.(*mockConn); !ok {
		return eventbus.Permanent(fmt.Errorf("unexpected connection type %T", ev.Conn))
	}
	return nil
}

// Check the CONNECT frame's token.
func (s *server) auth(ctx context.Context, ev *eventbus.UserContext) error {
	conn := ev.Conn.(*mockConn)
	f, ok := ev.Frame.(connectFrame)
	s.mu.Lock()
	valid := ok && f.Token != "" && s.tokens[f.UID] == f.Token
	s.mu.Unlock()
	if !valid {
		_ = conn.Write(connackFrame{Reason: "auth failed"})
		conn.Close()
		return fmt.Errorf("auth %q: bad token: %w", f.UID, eventbus.ErrStopChain)
	}
	return nil
}

// Log the user in.
func (s *server) session(ctx context.Context, ev *eventbus.UserContext) error {
	conn := ev.Conn.(*mockConn)
	uid := ev.Frame.(connectFrame).UID
	conn.setUID(uid)
	s.mu.Lock()
	s.online[uid] = conn
	s.mu.Unlock()
	return conn.Write(connackFrame{})
}

// Reject banned words. The sender learns why from its SENDACK.
func (s *server) audit(ctx context.Context, ev *eventbus.UserContext) error {
	f := ev.Frame.(sendFrame)
	if strings.Contains(f.Payload, bannedWord) {
		_ = ev.Conn.(*mockConn).Write(sendackFrame{ClientMsgNo: f.ClientMsgNo, ChannelID: f.ChannelID,
			Reason: fmt.Sprintf("rejected: banned word %q", bannedWord)})
		return fmt.Errorf("audit %s: banned word: %w", f.ClientMsgNo, eventbus.ErrStopChain)
	}
	return nil
}

// Turn the SEND frame into a message and hand it to its channel.
// Adding with the handler's ctx makes it a follow-on event: it never waits
// and is counted before this handler returns, so WaitIdle sees the flow.
func (s *server) deliver(ctx context.Context, ev *eventbus.UserContext) error {
	f := ev.Frame.(sendFrame)
	msg := &eventbus.Message{
		MessageID:   s.nextMsgID.Add(1),
		ClientMsgNo: f.ClientMsgNo,
		FromUID:     ev.Conn.UID(),
		ChannelID:   f.ChannelID,
		ChannelType: groupChannel,
		Payload:     []byte(f.Payload),
		Timestamp:   time.Now().UnixMilli(),
	}
	return s.bus.AddEvent(ctx, &eventbus.ChannelContext{
		EventType:   eventbus.EventChannelDistribute,
		ChannelID:   f.ChannelID,
		ChannelType: groupChannel,
		Messages:    []*eventbus.Message{msg},
	})
}

// Store each message under the next sequence of its channel,
// then ack the sender. The channel pool runs one channel's events one at a
// time in add order, so sequences follow the order of sending.
func (s *server) store(ctx context.Context, ev *eventbus.ChannelContext) error {
	for _, m := range ev.Messages {
		s.mu.Lock()
		ch := s.channels[m.ChannelID]
		if ch == nil {
			s.mu.Unlock()
			return eventbus.Permanent(fmt.Errorf("no channel %q", m.ChannelID))
		}
		ch.lastSeq++
		m.MessageSeq = ch.lastSeq
		ch.messages = append(ch.messages, m)
		sender := s.online[m.FromUID]
		s.mu.Unlock()
		if sender == nil {
			continue // the sender left; it will sync on reconnect
		}
		err := s.bus.AddEvent(ctx, &eventbus.UserContext{EventType: EventConnWrite, Conn: sender,
			Frame: sendackFrame{ClientMsgNo: m.ClientMsgNo, ChannelID: m.ChannelID, MessageID: m.MessageID, MessageSeq: m.MessageSeq}})
		if err != nil {
			return err
		}
	}
	return nil
}

// Split the subscribers, the sender aside, into online and offline.
// Online receivers get one push event each (AddPerReceiver): the pusher
// pool is keyed per receiver (KeyByReceiver), so a failed write is retried
// for that receiver alone. Offline ones share one event.
func (s *server) fanout(ctx context.Context, ev *eventbus.ChannelContext) error {
	for _, m := range ev.Messages {
		var on, off []string
		s.mu.Lock()
		for _, uid := range s.channels[m.ChannelID].subscribers {
			switch {
			case uid == m.FromUID:
			case s.online[uid] != nil:
				on = append(on, uid)
			default:
				off = append(off, uid)
			}
		}
		s.mu.Unlock()
		if len(on) > 0 {
			if _, err := eventbus.AddPerReceiver(ctx, s.bus, &eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: m, Subscribers: on}); err != nil {
				return err
			}
		}
		if len(off) > 0 {
			if err := s.bus.AddEvent(ctx, &eventbus.PushContext{EventType: eventbus.EventPushOffline, Message: m, Subscribers: off}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Write RECV to one online receiver and wait for its RECVACK. A
// failed write is returned, so the bus retries it, for this receiver only;
// someone who left since the fan-out gets the offline push instead.
func (s *server) pushOnline(ctx context.Context, ev *eventbus.PushContext) error {
	m, uid := ev.Message, ev.Subscribers[0]
	s.mu.Lock()
	conn := s.online[uid]
	s.mu.Unlock()
	var err error
	if conn != nil {
		err = conn.Write(recvFrame{MessageID: m.MessageID, MessageSeq: m.MessageSeq,
			ChannelID: m.ChannelID, FromUID: m.FromUID, Payload: string(m.Payload)})
	}
	if conn == nil || errors.Is(err, errConnClosed) {
		return s.bus.AddEvent(ctx, &eventbus.PushContext{EventType: eventbus.EventPushOffline, Message: m, Subscribers: ev.Subscribers})
	}
	if err != nil {
		return fmt.Errorf("write RECV to %s: %w", uid, err)
	}
	s.mu.Lock()
	if s.pending[uid] == nil {
		s.pending[uid] = map[msgRef]bool{}
	}
	s.pending[uid][msgRef{m.ChannelID, m.MessageSeq}] = true
	s.lastRecv = time.Now()
	s.mu.Unlock()
	if t0, ok := s.sentAt.LoadAndDelete(m.ClientMsgNo); ok {
		s.arrived <- time.Since(t0.(time.Time))
	}
	return nil
}

// The client got the message.
func (s *server) recvAck(ctx context.Context, ev *eventbus.UserContext) error {
	f := ev.Frame.(recvackFrame)
	s.mu.Lock()
	defer s.mu.Unlock()
	ref := msgRef{f.ChannelID, f.MessageSeq}
	if s.pending[ev.Conn.UID()][ref] {
		delete(s.pending[ev.Conn.UID()], ref)
		s.acked++
	}
	return nil
}

// Hand the message to offline push.
func (s *server) pushOffline(ctx context.Context, ev *eventbus.PushContext) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, uid := range ev.Subscribers {
		s.offline = append(s.offline, offlineNote{uid: uid, msg: ev.Message})
	}
	return nil
}

// The client went away.
func (s *server) connClose(ctx context.Context, ev *eventbus.UserContext) error {
	conn := ev.Conn.(*mockConn)
	s.mu.Lock()
	if s.online[conn.UID()] == conn {
		delete(s.online, conn.UID())
	}
	s.mu.Unlock()
	conn.Close()
	return nil
}

// A heartbeat: user-pool work only.
func (s *server) ping(ctx context.Context, ev *eventbus.UserContext) error {
	if s.pings.Add(1) == pings {
		close(s.pingsDone)
	}
	return nil
}

// Archiving to a database that can be down: the handler waits for it (a
// slow channel-pool handler), bounded by its ctx.
func (s *server) archive(ctx context.Context, ev *eventbus.ChannelContext) error {
	select {
	case <-s.dbDown:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.archived.Add(int64(len(ev.Messages)))
	return nil
}

// Write a frame on the user's queue.
func (s *server) connWrite(ctx context.Context, ev *eventbus.UserContext) error {
	if err := ev.Conn.(*mockConn).Write(ev.Frame); err != nil && !errors.Is(err, errConnClosed) {
		return err
	}
	return nil // a closed connection drops the frame; the client syncs later
}

// ---- the clients and the script ----

type client struct {
	uid, token string
	conn       *mockConn
	printed    int  // frames already printed
	acked      int  // frames already looked at for RECVACK
	closed     bool // its closing was printed
}

type demo struct {
	out     io.Writer
	bus     *eventbus.Bus
	srv     *server
	clients []*client // sorted by uid
	crowd   []*client // part 10's users, whose frames are counted, not printed
	offline int       // offline notes already printed
}

// Sizes of the isolation, back-pressure and load parts.
const (
	channelQueue = 64   // the channel pool's QueueSize: one shard holds this many
	pings        = 2000 // heartbeats handled while the channel pool is stuck
	loadOneByOne = 2000 // messages sent one at a time, each waiting for its RECV
	loadBurst    = 5000 // messages sent at once

	crowdSize    = 20                     // users of part 10
	crowdSends   = 5                      // messages each of them sends
	webhookDelay = 100 * time.Millisecond // the webhook's HTTP round trip
	// The webhook runs one user's messages one at a time, in order, and
	// different users' at once, up to this many: at least the number of
	// users sending at once, so that it keeps up.
	webhookConcurrency = 32
)

func run(out io.Writer) error {
	// The bus logs failed attempts at Warn (at most one line per handler
	// per second). The demo's one failure is on purpose, so only errors
	// (panics) reach stderr.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	pool := eventbus.PoolConfig{Workers: 4} // explicit, so Stats print the same everywhere
	channels := pool
	channels.QueueSize = channelQueue
	pushers := pool
	pushers.KeyFunc = eventbus.KeyByReceiver // order and retry per (receiver, channel)
	bus, err := eventbus.New(
		eventbus.WithLogger(logger),
		eventbus.WithUserPool(pool),
		eventbus.WithChannelPool(channels),
		eventbus.WithPusherPool(pushers),
		eventbus.WithRetry(eventbus.RetryPolicy{InitialBackoff: time.Millisecond}),
	)
	if err != nil {
		return err
	}
	if err := bus.Define(EventConnWrite, eventbus.PoolUser, "ConnWrite"); err != nil {
		return err
	}
	if err := bus.Define(EventPing, eventbus.PoolUser, "Ping"); err != nil {
		return err
	}
	srv := newServer(bus)
	if err := srv.register(bus); err != nil {
		return err
	}
	if err := bus.Start(); err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := &demo{out: out, bus: bus, srv: srv}
	for i, uid := range []string{"alice", "bob", "carol", "mallory"} {
		token := "t-" + uid
		if uid == "mallory" {
			token = "stolen"
		}
		d.clients = append(d.clients, &client{uid: uid, token: token, conn: &mockConn{id: int64(i + 1)}})
	}
	for i, uid := range crowd() {
		d.crowd = append(d.crowd, &client{uid: uid, token: "t-" + uid, conn: &mockConn{id: int64(100 + i)}})
	}

	fmt.Fprintln(out, "IM server demo on eventbus: three pools of workers, isolated from each other")
	fmt.Fprintln(out, "  user pool    : what clients send (connect, send, ack), in order per user")
	fmt.Fprintln(out, "  channel pool : store and fan out messages, in order per channel")
	fmt.Fprintln(out, "  pusher pool  : write to receivers' connections, in order per receiver and channel")
	fmt.Fprintln(out, "groups: g1 = alice bob carol dave, g2 = alice bob dave; dave never connects")
	fmt.Fprintln(out, "subscribers of OnSend, beside the chain: stats (from the start), webhook (from part 10)")
	fmt.Fprintln(out, "legend: 'x <- F' the server wrote frame F to x; 'x <~' offline push for x")

	err = errors.Join(
		d.phase(ctx, "1. Four clients connect; mallory's token is wrong, so the auth handler turns her away", d.connectAll),
		d.phase(ctx, "2. alice sends four messages; the audit rejects the one with a banned word, the others are stored, acked (SENDACK) and pushed (RECV)", func(ctx context.Context) error {
			return d.send(ctx, "alice", []sendFrame{
				{"alice-1", "g1", "hi all"},
				{"alice-2", "g1", "cheap " + bannedWord + " here"},
				{"alice-3", "g1", "lunch at noon?"},
				{"alice-4", "g2", "dave, ping"},
			})
		}),
		d.phase(ctx, "3. Receivers acknowledge what they got (RECVACK)", d.ackAll),
		d.phase(ctx, "4. bob's network drops one write: the bus retries the push to bob alone, carol gets the message once", d.flakyWrite),
		d.phase(ctx, "5. carol disconnects", func(ctx context.Context) error {
			return bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventConnClose, Conn: d.client("carol").conn})
		}),
		d.phase(ctx, "6. bob replies; carol is offline now, so she gets an offline push", func(ctx context.Context) error {
			return d.send(ctx, "bob", []sendFrame{{"bob-1", "g1", "yes, noon"}})
		}),
		d.phase(ctx, "7. alice acknowledges", d.ackAll),
		d.section(ctx, "8. Isolation and back-pressure: the channel pool's database hangs", d.stuckDatabase),
		d.section(ctx, "9. Load: end-to-end latency, from AddEvent(OnSend) to the RECV write", d.load),
		d.section(ctx, "10. A slow webhook (100 ms a message) beside the chain: storage and push do not wait for it", d.slowWebhook),
	)
	if err != nil {
		_ = bus.Close(ctx)
		return err
	}
	d.summary()

	if err := bus.Close(ctx); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	fmt.Fprintln(out, "bus closed cleanly")
	return nil
}

// section runs a part of the demo that prints its own results.
func (d *demo) section(ctx context.Context, title string, act func(context.Context) error) error {
	fmt.Fprintf(d.out, "\n== %s\n", title)
	if err := act(ctx); err != nil {
		return fmt.Errorf("%s: %w", title, err)
	}
	return nil
}

// flakyWrite makes bob's next write fail, then alice sends to g1: the push
// to bob fails once and is retried for bob alone.
func (d *demo) flakyWrite(ctx context.Context) error {
	bob, carol := d.client("bob").conn, d.client("carol").conn
	bobBefore, carolBefore := bob.tries(), carol.tries()
	retried := d.bus.Stats().Pusher.Retried
	bob.failWrites(1)
	if err := d.send(ctx, "alice", []sendFrame{{"alice-5", "g1", "can you all read me?"}}); err != nil {
		return err
	}
	if err := d.bus.WaitIdle(ctx); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  writes tried: bob %d (one failed, one retry), carol %d; pusher retries: %d\n",
		bob.tries()-bobBefore, carol.tries()-carolBefore, d.bus.Stats().Pusher.Retried-retried)
	return nil
}

// stuckDatabase blocks the channel pool's "archive" handler, shows that
// the user pool goes on meanwhile and that the stuck channel's shard
// pushes back on producers, then lets the database come back.
func (d *demo) stuckDatabase(ctx context.Context) error {
	out, s := d.out, d.srv
	archive := func(i int) *eventbus.ChannelContext {
		return &eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: "archive", ChannelType: groupChannel,
			Messages: []*eventbus.Message{{ChannelID: "archive", ChannelType: groupChannel, MessageSeq: uint64(i + 1)}}}
	}
	// Fill the archive channel's shard: its first event hangs in the
	// handler, the others queue behind it.
	accepted := 0
	for {
		err := d.bus.TryAddEvent(archive(accepted))
		if errors.Is(err, eventbus.ErrQueueFull) {
			fmt.Fprintf(out, "  TryAddEvent: %d archive events accepted (one shard holds QueueSize = %d), the next one: %v\n",
				accepted, channelQueue, err)
			break
		}
		if err != nil {
			return err
		}
		if accepted++; accepted > 2*channelQueue {
			return errors.New("the shard never filled")
		}
	}
	wait, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := d.bus.AddEvent(wait, archive(accepted))
	fmt.Fprintf(out, "  AddEvent waits for room, until its ctx ends: %v\n", err)
	if !errors.Is(err, eventbus.ErrQueueFull) {
		return fmt.Errorf("AddEvent on a full shard: %v", err)
	}
	st := d.bus.Stats().Channel
	fmt.Fprintf(out, "  channel pool while stuck: %d events held (queued or in flight)\n", st.InFlight+st.Queued)

	// Meanwhile the user pool runs heartbeats at full speed.
	start := time.Now()
	for i := range pings {
		c := d.clients[i%len(d.clients)]
		if err := d.bus.AddEvent(ctx, &eventbus.UserContext{EventType: EventPing, Conn: c.conn}); err != nil {
			return err
		}
	}
	select { // the user pool alone: WaitIdle would wait for the database
	case <-s.pingsDone:
	case <-ctx.Done():
		return ctx.Err()
	}
	fmt.Fprintf(out, "  user pool: %d heartbeats handled while the channel pool is stuck: true\n", pings)
	fmt.Fprintf(out, "  (that took %v; varies)\n", time.Since(start).Round(time.Millisecond))

	close(s.dbDown) // the database is back
	if err := d.bus.WaitIdle(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "  database back: %d archive events stored, none lost\n", s.archived.Load())
	return nil
}

// load sends messages from alice to g3 (alice and bob) and measures, for
// each, the time from AddEvent to the RECV write on bob's connection: user
// pool, channel pool (store, fanout) and pusher pool.
func (d *demo) load(ctx context.Context) error {
	alice := d.client("alice").conn
	send := func(i int) error {
		no := fmt.Sprintf("load-%d", i)
		d.srv.sentAt.Store(no, time.Now())
		return d.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: alice,
			Frame: sendFrame{no, "g3", "load"}})
	}
	collect := func(n int) ([]time.Duration, error) {
		lat := make([]time.Duration, 0, n)
		for range n {
			select {
			case l := <-d.srv.arrived:
				lat = append(lat, l)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return lat, nil
	}
	// One at a time: each message is sent once the previous one arrived.
	var lat []time.Duration
	for i := range loadOneByOne {
		if err := send(i); err != nil {
			return err
		}
		l, err := collect(1)
		if err != nil {
			return err
		}
		lat = append(lat, l...)
	}
	fmt.Fprintf(d.out, "  %d messages one at a time: %s\n", loadOneByOne, percentiles(lat))
	// A burst: all at once; latency then includes the wait in the queues.
	start := time.Now()
	for i := range loadBurst {
		if err := send(loadOneByOne + i); err != nil {
			return err
		}
	}
	lat, err := collect(loadBurst)
	if err != nil {
		return err
	}
	took := time.Since(start)
	fmt.Fprintf(d.out, "  %d messages in a burst: %s\n", loadBurst, percentiles(lat))
	fmt.Fprintf(d.out, "  (burst throughput: %.0f messages/s; varies)\n", float64(loadBurst)/took.Seconds())
	if err := d.bus.WaitIdle(ctx); err != nil {
		return err
	}
	if err := d.ackAll(ctx); err != nil {
		return err
	}
	return d.bus.WaitIdle(ctx)
}

// slowWebhook subscribes a webhook that takes 100 ms a message to OnSend
// while the bus runs, has 20 users send 5 messages each at once, and
// compares, from the same run, when every message had been stored and
// pushed with when the webhook had posted them all.
func (d *demo) slowWebhook(ctx context.Context) error {
	out, s := d.out, d.srv
	_, err := eventbus.Subscribe(d.bus, eventbus.EventOnSend, s.webhook.Handle,
		eventbus.WithName("webhook"), eventbus.WithConcurrency(webhookConcurrency))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  the webhook subscribes to OnSend while the server runs: %v a message, up to %d users at once (WithConcurrency)\n",
		webhookDelay, webhookConcurrency)
	for _, c := range d.crowd {
		err := errors.Join(
			d.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnConnect, Conn: c.conn}),
			d.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventConnect, Conn: c.conn,
				Frame: connectFrame{UID: c.uid, Token: c.token}}),
		)
		if err != nil {
			return err
		}
	}
	if err := d.bus.WaitIdle(ctx); err != nil {
		return err
	}

	start := time.Now()
	for i := range crowdSends {
		for _, c := range d.crowd {
			f := sendFrame{fmt.Sprintf("%s-%d", c.uid, i+1), "g4", "hello"}
			if err := d.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: c.conn, Frame: f}); err != nil {
				return err
			}
		}
	}
	if err := d.bus.WaitIdle(ctx); err != nil { // subscribers included
		return err
	}
	s.mu.Lock()
	stored, pushedAt := len(s.channels["g4"].messages), s.lastRecv
	s.mu.Unlock()
	recv := 0
	for _, c := range d.crowd {
		for _, f := range c.conn.Frames() {
			if _, ok := f.(recvFrame); ok {
				recv++
			}
		}
	}
	w := s.webhook
	w.mu.Lock()
	posted, inOrder, postedAt := 0, true, w.last
	for _, c := range d.crowd {
		got := w.posted[c.uid]
		posted += len(got)
		for i, no := range got {
			inOrder = inOrder && no == fmt.Sprintf("%s-%d", c.uid, i+1)
		}
	}
	w.mu.Unlock()
	fmt.Fprintf(out, "  %d users (u01 … u%02d) each send %d messages to g4 at once: %d messages\n",
		crowdSize, crowdSize, crowdSends, crowdSize*crowdSends)
	fmt.Fprintf(out, "  stored: %d, RECV frames written: %d, posted to the webhook: %d\n", stored, recv, posted)
	fmt.Fprintf(out, "  the webhook got each user's messages one at a time, in send order: %v\n", inOrder)
	fmt.Fprintln(out, "  How long it took, from the first SEND (same run):")
	fmt.Fprintf(out, "    storage and push (the chain): every message stored and pushed after %v (varies)\n",
		pushedAt.Sub(start).Round(time.Millisecond))
	fmt.Fprintf(out, "    the webhook (a subscriber):   every message posted after %v (varies)\n",
		postedAt.Sub(start).Round(time.Millisecond))
	fmt.Fprintf(out, "  storage and push finished before the webhook, without waiting for it: %v\n", pushedAt.Before(postedAt))
	fmt.Fprintf(out, "  (in the OnSend chain, the webhook would hold each user's messages back: the %dth could not be stored before %v)\n",
		crowdSends, crowdSends*webhookDelay)

	n, err := d.ack(ctx, d.crowd)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  the %d users acknowledge: RECVACK x%d\n", crowdSize, n)
	return d.bus.WaitIdle(ctx)
}

// percentiles describes a set of latencies.
func percentiles(lat []time.Duration) string {
	slices.Sort(lat)
	at := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	return fmt.Sprintf("latency p50=%v p99=%v max=%v", at(0.50).Round(time.Microsecond),
		at(0.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
}

func (d *demo) client(uid string) *client {
	for _, c := range d.clients {
		if c.uid == uid {
			return c
		}
	}
	panic("no client " + uid)
}

// phase runs one part of the script, waits until the whole flow it caused
// has been handled, and prints what happened.
func (d *demo) phase(ctx context.Context, title string, act func(context.Context) error) error {
	fmt.Fprintf(d.out, "\n== %s\n", title)
	if err := act(ctx); err != nil {
		return fmt.Errorf("%s: %w", title, err)
	}
	if err := d.bus.WaitIdle(ctx); err != nil {
		return fmt.Errorf("%s: wait: %w", title, err)
	}
	d.printFrames()
	d.printOffline()
	return nil
}

// connectAll is what the connection layer and the clients do on login.
func (d *demo) connectAll(ctx context.Context) error {
	for _, c := range d.clients {
		err := errors.Join(
			d.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnConnect, Conn: c.conn}),
			d.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventConnect, Conn: c.conn,
				Frame: connectFrame{UID: c.uid, Token: c.token}}),
		)
		if err != nil {
			return err
		}
	}
	return nil
}

// send is a client sending SEND frames on its connection.
func (d *demo) send(ctx context.Context, uid string, frames []sendFrame) error {
	conn := d.client(uid).conn
	for _, f := range frames {
		if err := d.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn, Frame: f}); err != nil {
			return err
		}
	}
	return nil
}

// ackAll is every connected client answering the RECV frames it got.
func (d *demo) ackAll(ctx context.Context) error {
	for _, c := range d.clients {
		n, err := d.ack(ctx, []*client{c})
		if err != nil {
			return err
		}
		if n > 0 {
			fmt.Fprintf(d.out, "  %-8s -> RECVACK x%d\n", c.uid, n)
		}
	}
	return nil
}

// ack has clients answer the RECV frames they got since their last ack,
// and returns how many RECVACK frames they sent.
func (d *demo) ack(ctx context.Context, clients []*client) (int, error) {
	n := 0
	for _, c := range clients {
		frames := c.conn.Frames()
		for _, f := range frames[c.acked:] {
			if r, ok := f.(recvFrame); ok {
				err := d.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventRecvAck, Conn: c.conn,
					Frame: recvackFrame{ChannelID: r.ChannelID, MessageSeq: r.MessageSeq}})
				if err != nil {
					return n, err
				}
				n++
			}
		}
		c.acked = len(frames)
	}
	return n, nil
}

// printFrames prints, per client, the frames written since the last phase.
func (d *demo) printFrames() {
	for _, c := range d.clients {
		frames := c.conn.Frames()
		fresh := frames[c.printed:]
		c.printed = len(frames)
		slices.SortStableFunc(fresh, func(a, b any) int { return cmp.Compare(sortKey(a), sortKey(b)) })
		for _, f := range fresh {
			fmt.Fprintf(d.out, "  %-8s <- %v\n", c.uid, f)
		}
		if !c.closed && c.conn.isClosed() {
			c.closed = true
			fmt.Fprintf(d.out, "  %-8s    connection closed\n", c.uid)
		}
	}
}

// printOffline prints the offline pushes recorded since the last phase.
func (d *demo) printOffline() {
	d.srv.mu.Lock()
	fresh := slices.Clone(d.srv.offline[d.offline:])
	d.offline = len(d.srv.offline)
	d.srv.mu.Unlock()
	slices.SortFunc(fresh, func(a, b offlineNote) int {
		return cmp.Or(cmp.Compare(a.uid, b.uid), cmp.Compare(a.msg.ChannelID, b.msg.ChannelID),
			cmp.Compare(a.msg.MessageSeq, b.msg.MessageSeq))
	})
	for _, n := range fresh {
		m := n.msg
		fmt.Fprintf(d.out, "  %-8s <~ offline push: %s seq=%d from %s %q\n", n.uid, m.ChannelID, m.MessageSeq, m.FromUID, m.Payload)
	}
}

func (d *demo) summary() {
	out, s := d.out, d.srv
	fmt.Fprintln(out, "\n== summary")
	s.mu.Lock()
	for _, id := range []string{"g1", "g2"} {
		ch := s.channels[id]
		fmt.Fprintf(out, "channel %s, messages stored: %d\n", id, len(ch.messages))
		for _, m := range ch.messages {
			fmt.Fprintf(out, "  seq=%d id=%d from %-6s %q\n", m.MessageSeq, m.MessageID, m.FromUID, m.Payload)
		}
	}
	fmt.Fprintf(out, "channel g3 (load), messages stored: %d\n", len(s.channels["g3"].messages))
	fmt.Fprintf(out, "channel g4 (webhook), messages stored: %d\n", len(s.channels["g4"].messages))
	waiting := 0
	for _, refs := range s.pending {
		waiting += len(refs)
	}
	fmt.Fprintf(out, "RECV acknowledged: %d, waiting for RECVACK: %d\n", s.acked, waiting)
	fmt.Fprintf(out, "offline pushes: %d\n", len(s.offline))
	s.mu.Unlock()
	frames, users := s.stats.total()
	fmt.Fprintf(out, "stats subscriber: %d SEND frames from %d users (the audit's rejection included: it runs beside the chain, not after it)\n",
		frames, users)

	// Per-key order: the pusher pool is keyed by channel, so each receiver
	// must have seen every channel's sequence numbers rising.
	inOrder := true
	for _, c := range slices.Concat(d.clients, d.crowd) {
		last := map[string]uint64{}
		for _, f := range c.conn.Frames() {
			if r, ok := f.(recvFrame); ok {
				inOrder = inOrder && r.MessageSeq > last[r.ChannelID]
				last[r.ChannelID] = r.MessageSeq
			}
		}
	}
	fmt.Fprintf(out, "every receiver saw each channel in sequence order: %v\n", inOrder)

	st := d.bus.Stats()
	fmt.Fprintf(out, "\nStats %-10s %7s %6s %8s %8s %7s %8s %5s %7s %9s\n", "", "workers", "added", "handled",
		"stopped", "failed", "retried", "dead", "queued", "inflight")
	pools := []struct {
		name string
		ps   eventbus.PoolStats
	}{{"user", st.User}, {"channel", st.Channel}, {"pusher", st.Pusher}}
	// Each subscriber counts its deliveries like a pool (Stats.Subscribers).
	for _, name := range slices.Sorted(maps.Keys(st.Subscribers)) {
		pools = append(pools, struct {
			name string
			ps   eventbus.PoolStats
		}{name, st.Subscribers[name]})
	}
	balanced := true
	for _, p := range pools {
		ps := p.ps
		fmt.Fprintf(out, "  %-14s %7d %6d %8d %8d %7d %8d %5d %7d %9d\n", p.name, ps.Workers, ps.Added, ps.Handled,
			ps.Stopped, ps.Failed, ps.Retried, ps.DeadLettered, ps.Queued, ps.InFlight)
		balanced = balanced && ps.Added == ps.Handled+ps.Stopped+ps.DeadLettered
	}
	fmt.Fprintf(out, "every accepted event handled or stopped (added = handled + stopped + dead): %v\n", balanced)
	fmt.Fprintln(out, "the two stopped user events: mallory's CONNECT (auth) and alice-2 (audit)")
	fmt.Fprintf(out, "latency of one pass of a chain, per pool, over the %d events above (varies from run to run):\n",
		st.User.Handled+st.Channel.Handled+st.Pusher.Handled)
	for _, p := range pools[:3] {
		l := p.ps.Latency
		fmt.Fprintf(out, "  latency %-8s p50=%v p99=%v max=%v\n", p.name, l.P50, l.P99, l.Max)
	}
}
