package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/examples/wkim/wkproto"
)

// Message.Header keys: protocol metadata carried from SEND to RECV.
const (
	HeaderClientSeq = "clientSeq" // the SEND's client sequence, echoed in SENDACK
	HeaderConnID    = "connID"    // the sending connection, which gets the SENDACK
	HeaderTo        = "to"        // person channel: the receiver's uid
	HeaderNoPersist = "noPersist" // "1" when the SEND had the noPersist flag
)

// sendFrame is the Frame of an OnSend event: the packet as read, and the
// message the "verify" handler makes of it.
type sendFrame struct {
	packet *wkproto.SendPacket
	msg    *eventbus.Message
}

// register builds the handler chains.
func (s *Server) register() error {
	var errs []error
	reg := func(_ *eventbus.Registration, err error) { errs = append(errs, err) }
	b := s.bus
	// User pool.
	reg(eventbus.Register(b, eventbus.EventConnect, s.auth, eventbus.WithName("auth")))
	reg(eventbus.Register(b, eventbus.EventConnect, s.handshake, eventbus.WithName("handshake")))
	reg(eventbus.Register(b, eventbus.EventOnConnect, s.online, eventbus.WithName("session")))
	reg(eventbus.Register(b, eventbus.EventOnSend, s.verify, eventbus.WithName("verify")))
	reg(eventbus.Register(b, eventbus.EventOnSend, s.permission, eventbus.WithName("permission")))
	reg(eventbus.Register(b, eventbus.EventOnSend, s.forward, eventbus.WithName("forward")))
	reg(eventbus.Register(b, eventbus.EventRecvAck, s.recvAck, eventbus.WithName("recvack")))
	reg(eventbus.Register(b, eventbus.EventConnClose, s.connClose, eventbus.WithName("close")))
	// Channel pool.
	reg(eventbus.Register(b, s.msgType, s.store, eventbus.WithName("store")))
	reg(eventbus.Register(b, s.msgType, s.fanout, eventbus.WithName("fanout")))
	reg(eventbus.Register(b, s.msgType, s.sendack, eventbus.WithName("sendack")))
	// Pusher pool.
	reg(eventbus.Register(b, eventbus.EventPushOnline, s.deliver, eventbus.WithName("deliver")))
	reg(eventbus.Register(b, eventbus.EventPushOffline, s.offlinePush, eventbus.WithName("offline-push")))
	return errors.Join(errs...)
}

// stop ends a chain on purpose: the event counts as Stopped, not retried.
func stop(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), eventbus.ErrStopChain)
}

// ---- user pool: login ----

// auth checks CONNECT's version and token. A failure answers CONNACK with
// the reason and closes the connection.
func (s *Server) auth(_ context.Context, ev *eventbus.UserContext) error {
	c := ev.Conn.(*conn)
	p := ev.Frame.(*wkproto.ConnectPacket)
	reason, why := wkproto.ReasonSuccess, ""
	switch {
	case p.Version != wkproto.Version:
		reason, why = wkproto.ReasonUnknown, fmt.Sprintf("bad frame: unsupported protocol version %d", p.Version)
	case s.checkID("uid", p.UID) != nil:
		reason, why = wkproto.ReasonAuthFail, fmt.Sprintf("login refused: uid of %d bytes, want 1 to %d", len(p.UID), s.cfg.MaxIDLength)
	case !s.cfg.Authenticate(p.UID, p.Token):
		reason, why = wkproto.ReasonAuthFail, fmt.Sprintf("login refused for uid %q", p.UID)
	case p.ClientKey == "":
		reason, why = wkproto.ReasonUnknown, "bad frame: CONNECT without a client key"
	}
	if reason == wkproto.ReasonSuccess {
		return nil
	}
	c.refuse(reason, why)
	return stop("%s", why)
}

// refuse answers a failed CONNACK and closes the connection after it.
func (c *conn) refuse(reason uint8, why string) {
	c.sendThenClose(&wkproto.ConnackPacket{ReasonCode: reason}, websocket.StatusPolicyViolation, slog.LevelWarn, why)
	c.loginDone(false)
}

// loginDone tells the read loop the login's result, once: a retried
// Connect chain never blocks a worker on it.
func (c *conn) loginDone(ok bool) {
	select {
	case c.authed <- ok:
	default:
	}
}

// handshake does the key exchange, logs the user in on this connection,
// answers CONNACK and emits OnConnect.
func (s *Server) handshake(ctx context.Context, ev *eventbus.UserContext) error {
	c := ev.Conn.(*conn)
	p := ev.Frame.(*wkproto.ConnectPacket)
	keys, err := wkproto.GenerateKey(nil)
	if err != nil {
		c.refuse(wkproto.ReasonUnknown, err.Error())
		return stop("%v", err)
	}
	secret, err := keys.Shared(p.ClientKey)
	if err != nil {
		why := "bad frame: CONNECT client key: " + err.Error()
		c.refuse(wkproto.ReasonUnknown, why)
		return stop("%s", why)
	}
	salt := wkproto.NewSalt()
	cipher, err := wkproto.NewCipher(secret, salt)
	if err != nil {
		c.refuse(wkproto.ReasonUnknown, err.Error())
		return stop("%v", err)
	}
	c.cipher.Store(cipher)
	uid := p.UID
	c.uid.Store(&uid)
	c.log = c.log.With("uid", uid)
	// OnConnect, keyed by the uid now set, goes on the user's key before the
	// client can see CONNACK: it runs before anything this user sends next
	// (the read loop waits for authed before it reads on), and before the
	// OnConnect of any later login of the same user, which can only start
	// after this client saw its CONNACK (so the later login kicks this one,
	// never the reverse). Its handler waits for connacked before it queues
	// anything, so CONNACK is still the first packet the client gets.
	err = s.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnConnect, Conn: c, Frame: p})
	c.send(&wkproto.ConnackPacket{
		TimeDiff:   time.Now().UnixMilli() - p.ClientTimestamp,
		ReasonCode: wkproto.ReasonSuccess,
		ServerKey:  keys.PublicBase64(),
		Salt:       salt,
	})
	close(c.connacked)
	c.loginDone(err == nil)
	if err != nil {
		return eventbus.Permanent(err)
	}
	c.log.Debug("logged in", "device", p.DeviceID)
	return nil
}

// online puts the user online on this connection and replays its offline
// queue.
func (s *Server) online(_ context.Context, ev *eventbus.UserContext) error {
	c := ev.Conn.(*conn)
	<-c.connacked // closed by the handshake that added this event, right after CONNACK
	replayed := s.sessions.online(s, c)
	c.log.Info("online", "replayed", replayed)
	return nil
}

// ---- user pool: SEND ----

// verify checks a SEND's message key and decrypts its payload. A bad key
// or payload is a bad frame: SENDACK with the reason, then the connection
// closes.
func (s *Server) verify(_ context.Context, ev *eventbus.UserContext) error {
	c := ev.Conn.(*conn)
	f := ev.Frame.(*sendFrame)
	p := f.packet
	plain, err := c.cipher.Load().OpenSend(p)
	if err != nil {
		reason := wkproto.ReasonMsgKeyError
		if errors.Is(err, wkproto.ErrPayload) {
			reason = wkproto.ReasonPayloadDecodeError
		}
		s.badFrames.Add(1)
		why := fmt.Sprintf("bad frame: SEND clientSeq %d: %v", p.ClientSeq, err)
		c.sendThenClose(&wkproto.SendackPacket{ClientSeq: p.ClientSeq, ReasonCode: reason}, websocket.StatusPolicyViolation, slog.LevelWarn, why)
		return stop("%s", why)
	}
	uid := c.UID()
	if len(p.ClientMsgNo) > s.cfg.MaxIDLength || recvSize(uid, p, len(p.Payload)) > s.cfg.MaxPacketSize {
		// Its RECV would be larger than the largest packet a client
		// must read, or its clientMsgNo longer than the window keeps.
		c.send(&wkproto.SendackPacket{ClientSeq: p.ClientSeq, ReasonCode: wkproto.ReasonUnknown})
		return stop("SEND clientSeq %d refused: clientMsgNo of %d bytes or RECV over %d bytes", p.ClientSeq, len(p.ClientMsgNo), s.cfg.MaxPacketSize)
	}
	// A duplicate (a replay, or the SDK sending again after a reconnect)
	// gets the first one's SENDACK, now or when it comes, and no more.
	if first, ack := c.se.first(p.ClientMsgNo, waiter{c.id, p.ClientSeq}, s.cfg.DedupWindow); !first {
		s.duplicates.Add(1)
		if ack != nil {
			dup := *ack
			dup.ClientSeq = p.ClientSeq
			c.send(&dup)
		}
		return stop("duplicate SEND clientMsgNo %q", p.ClientMsgNo)
	}
	m := &eventbus.Message{
		ClientMsgNo: p.ClientMsgNo,
		FromUID:     uid,
		ChannelID:   p.ChannelID,
		ChannelType: p.ChannelType,
		Payload:     plain,
		Timestamp:   s.cfg.Now().UnixMilli(),
		Header: map[string]string{
			HeaderClientSeq: strconv.FormatUint(uint64(p.ClientSeq), 10),
			HeaderConnID:    strconv.FormatInt(c.id, 10),
		},
	}
	if p.Flags&wkproto.FlagNoPersist != 0 {
		m.Header[HeaderNoPersist] = "1"
	}
	if p.ChannelType == wkproto.ChannelPerson {
		// Both directions of a conversation are one channel, one sequence.
		m.Header[HeaderTo] = p.ChannelID
		m.ChannelID = personChannel(uid, p.ChannelID)
	}
	f.msg = m
	return nil
}

// recvSize is the body size of the RECV that a SEND p from uid with a
// payload of n bytes becomes: the payload is encrypted again for each
// receiver, to the same length.
func recvSize(uid string, p *wkproto.SendPacket, n int) int {
	channelID := p.ChannelID
	if p.ChannelType == wkproto.ChannelPerson {
		channelID = uid // a person channel is named after the sender
	}
	// setting, msgKey (32), fromUID, channelID, channelType, clientMsgNo,
	// messageID, messageSeq, timestamp, payload.
	return 1 + 2 + 32 + 2 + len(uid) + 2 + len(channelID) + 1 + 2 + len(p.ClientMsgNo) + 8 + 4 + 4 + n
}

// personChannel is the channel id of the conversation between a and b.
func personChannel(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return a + "@" + b
}

// permission checks that the channel exists and the sender may post in it.
func (s *Server) permission(_ context.Context, ev *eventbus.UserContext) error {
	c := ev.Conn.(*conn)
	f := ev.Frame.(*sendFrame)
	reason := wkproto.ReasonSuccess
	switch {
	case s.checkID("channel id", f.packet.ChannelID) != nil:
		reason = wkproto.ReasonChannelNotExist
	case f.packet.ChannelType == wkproto.ChannelPerson:
		// Only to users who exist: a token was set for them, or they
		// logged in. Offline queues are for real users, not any string.
		if !s.tokens.has(f.packet.ChannelID) && !s.sessions.known(f.packet.ChannelID) {
			reason = wkproto.ReasonChannelNotExist
		}
	case f.packet.ChannelType == wkproto.ChannelGroup:
		members, ok := s.groups.get(f.packet.ChannelID)
		switch {
		case !ok:
			reason = wkproto.ReasonChannelNotExist
		case !contains(members, f.msg.FromUID):
			reason = wkproto.ReasonSubscriberNotExist
		}
	default:
		reason = wkproto.ReasonChannelNotExist
	}
	if reason == wkproto.ReasonSuccess {
		return nil
	}
	ack := &wkproto.SendackPacket{ClientSeq: f.packet.ClientSeq, ReasonCode: reason}
	c.send(ack)
	s.answerDuplicates(c.se, f.packet.ClientMsgNo, ack)
	return stop("SEND to %.64q/%d refused with reason %d", f.packet.ChannelID, f.packet.ChannelType, reason)
}

func contains(sorted []string, s string) bool {
	_, ok := slices.BinarySearch(sorted, s)
	return ok
}

// forward gives the message its id and hands it to its channel: a
// follow-on event, so it never waits and keeps this user's order.
//
// In durable mode the channel event is an EventChannelStore, durable: the
// bus appends it to its journal as it is added, without waiting for the
// disk (a follow-on add), and "fanout" waits for that journal's fsync
// before the SENDACK. So one user's SENDs are not held back by the disk
// one by one, and one fsync carries every message added before it.
func (s *Server) forward(ctx context.Context, ev *eventbus.UserContext) error {
	m := ev.Frame.(*sendFrame).msg
	m.MessageID = s.nextMsgID.Add(1)
	return s.bus.AddEvent(ctx, &eventbus.ChannelContext{
		EventType:   s.msgType,
		ChannelID:   m.ChannelID,
		ChannelType: m.ChannelType,
		Messages:    []*eventbus.Message{m},
	})
}

// ---- user pool: RECVACK and close ----

func (s *Server) recvAck(_ context.Context, ev *eventbus.UserContext) error {
	p := ev.Frame.(*wkproto.RecvackPacket)
	if s.sessions.ack(s, ev.Conn.(*conn), p.MessageID) {
		s.acked.Add(1)
	}
	return nil
}

func (s *Server) connClose(_ context.Context, ev *eventbus.UserContext) error {
	c := ev.Conn.(*conn)
	if uid := c.UID(); uid != "" {
		if n := s.sessions.offline(s, c); n > 0 {
			c.log.Info("offline", "requeued", n)
		}
	}
	return nil
}

// ---- channel pool ----

// store gives each message the channel's next sequence and keeps it. In
// durable mode it first reserves the sequence numbers on disk, so that
// they are never handed out again after a crash.
func (s *Server) store(_ context.Context, ev *eventbus.ChannelContext) error {
	ch := s.channels.get(ev.ChannelID, ev.ChannelType)
	if s.dur != nil {
		if err := s.dur.reserve(ch, ev.ChannelID, ev.ChannelType, ch.seq+uint64(len(ev.Messages))); err != nil {
			return err // nothing changed yet: retried
		}
	}
	for _, m := range ev.Messages {
		ch.append(m, s.cfg.History)
	}
	return nil
}

// fanout emits one push event per receiver: the group's members but the
// sender, or the other user of a person channel. In durable mode it first
// appends a delivery record per receiver and waits for the disk (see
// persist), and for the bus's journal to have the messages on disk: the
// SENDACK comes after.
func (s *Server) fanout(ctx context.Context, ev *eventbus.ChannelContext) error {
	if s.dur != nil {
		return s.fanoutDurable(ctx, ev)
	}
	for _, m := range ev.Messages {
		for _, uid := range s.receivers(m) {
			if uid == m.FromUID && m.ChannelType != wkproto.ChannelPerson {
				continue
			}
			if err := s.push1(ctx, m, uid); err != nil {
				return err
			}
		}
	}
	return nil
}

// receivers returns the members of m's group, or the receiver of a person
// message.
func (s *Server) receivers(m *eventbus.Message) []string {
	if m.ChannelType == wkproto.ChannelPerson {
		return []string{m.Header[HeaderTo]}
	}
	members, _ := s.groups.get(m.ChannelID)
	return members
}

// push1 emits the push event of m to uid.
func (s *Server) push1(ctx context.Context, m *eventbus.Message, uid string) error {
	if err := s.bus.AddEvent(ctx, &eventbus.PushContext{
		EventType: eventbus.EventPushOnline, Message: m, Subscribers: []string{uid},
	}); err != nil {
		return eventbus.Permanent(err)
	}
	return nil
}

func (s *Server) fanoutDurable(ctx context.Context, ev *eventbus.ChannelContext) error {
	var ds []delivery
	for _, m := range ev.Messages {
		for _, uid := range s.receivers(m) {
			if uid != m.FromUID || m.ChannelType == wkproto.ChannelPerson {
				ds = append(ds, delivery{m, uid})
			}
		}
	}
	// The messages' records in the bus's journal reach the disk while
	// their delivery records are written to the server's.
	synced := make(chan error, 1)
	go func() { synced <- s.dur.bus.Sync() }()
	ds, err := s.persist(ds)
	if err = errors.Join(err, <-synced); err != nil {
		return err // nothing emitted yet: retried
	}
	for _, d := range ds {
		if err := s.push1(ctx, d.m, d.uid); err != nil {
			return err
		}
	}
	return nil
}

// sendack answers each sender: the message is stored and its push events
// are queued. As those are queued before the SENDACK, a client that waits
// for the SENDACK before sending on has its messages reach every receiver
// in the order sent, across channels too.
//
// It only writes to connections, which never fails; a handler that could
// fail after adding follow-on events (fanout, deliver) marks that failure
// Permanent, as a retry would add them again.
func (s *Server) sendack(_ context.Context, ev *eventbus.ChannelContext) error {
	for _, m := range ev.Messages {
		s.sent.Add(1)
		id, _ := strconv.ParseInt(m.Header[HeaderConnID], 10, 64)
		seq, _ := strconv.ParseUint(m.Header[HeaderClientSeq], 10, 32)
		ack := &wkproto.SendackPacket{MessageID: m.MessageID, ClientSeq: uint32(seq),
			MessageSeq: uint32(m.MessageSeq), ReasonCode: wkproto.ReasonSuccess}
		if c := s.conn(id); c != nil {
			c.send(ack)
		}
		s.answerDuplicates(s.sessions.get(m.FromUID), m.ClientMsgNo, ack)
	}
	return nil
}

// answerDuplicates records the SENDACK of clientMsgNo in the sender's
// window and sends it to the duplicates that waited for it.
func (s *Server) answerDuplicates(se *session, clientMsgNo string, ack *wkproto.SendackPacket) {
	for _, w := range se.acked(clientMsgNo, ack) {
		if c := s.conn(w.connID); c != nil {
			dup := *ack
			dup.ClientSeq = w.clientSeq
			c.send(&dup)
		}
	}
}

// ---- pusher pool ----

// deliver writes the message to the receiver's connection, or queues it
// for the next login and emits PushOffline.
func (s *Server) deliver(ctx context.Context, ev *eventbus.PushContext) error {
	for _, uid := range ev.Subscribers {
		if s.sessions.deliver(s, uid, ev.Message) {
			continue
		}
		if err := s.bus.AddEvent(ctx, &eventbus.PushContext{
			EventType: eventbus.EventPushOffline, Message: ev.Message, Subscribers: []string{uid},
		}); err != nil {
			return eventbus.Permanent(err)
		}
	}
	return nil
}

// offlinePush is where a real server would call APNs or FCM; the message
// itself is already in the receiver's offline queue.
func (s *Server) offlinePush(_ context.Context, ev *eventbus.PushContext) error {
	s.log.Debug("offline push", "to", ev.Subscribers, "channel", ev.Message.ChannelID, "seq", ev.Message.MessageSeq)
	return nil
}

// recvPacket is m as uid receives it, encrypted and signed with cipher.
func recvPacket(m *eventbus.Message, cipher *wkproto.Cipher) *wkproto.RecvPacket {
	channelID := m.ChannelID
	if m.ChannelType == wkproto.ChannelPerson {
		channelID = m.FromUID // a person channel is named after the other user
	}
	p := &wkproto.RecvPacket{
		Flags:       wkproto.FlagRedDot,
		FromUID:     m.FromUID,
		ChannelID:   channelID,
		ChannelType: m.ChannelType,
		ClientMsgNo: m.ClientMsgNo,
		MessageID:   m.MessageID,
		MessageSeq:  uint32(m.MessageSeq),
		Timestamp:   uint32(m.Timestamp / 1000),
	}
	if m.Header[HeaderNoPersist] == "1" {
		p.Flags |= wkproto.FlagNoPersist
	}
	cipher.SealRecv(p, m.Payload)
	return p
}
