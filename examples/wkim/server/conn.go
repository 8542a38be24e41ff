package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/examples/wkim/wkproto"
)

// conn is one client's WebSocket connection: the connection layer of the
// server. Its goroutine (serve) reads packets and turns them into user
// events; a writer goroutine it owns sends what handlers queue, one packet
// per WebSocket message, in queue order. Handlers never write to the socket
// themselves, so a slow client never holds a pool worker.
type conn struct {
	s      *Server
	id     int64
	ws     *websocket.Conn
	remote string
	log    *slog.Logger

	uid    atomic.Pointer[string]
	cipher atomic.Pointer[wkproto.Cipher]

	// authed receives the result of the CONNECT chain: true once CONNACK
	// success is queued and OnConnect emitted, false when login failed.
	authed chan bool
	// connacked is closed once the handshake has queued CONNACK: the
	// session handler, which may run as soon as OnConnect is added,
	// queues nothing before it.
	connacked chan struct{}

	// Set at login, used by the read loop only.
	se      *session
	limiter *rate.Limiter // SENDs of this connection

	wake     chan struct{} // a packet was queued or a flushing close asked
	stop     chan struct{} // closed by closeWith: the writer closes the socket now
	stopOnce sync.Once

	mu          sync.Mutex
	out         [][]byte // packets waiting for the writer, out[head:]
	head        int
	outBytes    int // bytes in out[head:]
	closeCode   websocket.StatusCode
	closeReason string
	closeLevel  slog.Level
	flush       bool // close once what is queued is written
	abrupt      bool // drop the connection without the close handshake
}

var _ eventbus.Conn = (*conn)(nil)

// UID returns the logged-in user, or "" before login.
func (c *conn) UID() string {
	if p := c.uid.Load(); p != nil {
		return *p
	}
	return ""
}

// ID returns the connection's id, unique in the process.
func (c *conn) ID() int64 { return c.id }

// closeWith closes the connection with a WebSocket close code and reason,
// logged at level when the connection ends. The first reason wins. With
// flush, packets queued before are sent first (a failed CONNACK, a kick's
// DISCONNECT); otherwise the writer closes at once. It never blocks.
func (c *conn) closeWith(code websocket.StatusCode, level slog.Level, reason string, flush bool) {
	c.mu.Lock()
	if c.closeReason == "" {
		c.closeCode, c.closeReason, c.closeLevel = code, reason, level
	}
	if flush {
		c.flush = true
		c.mu.Unlock()
		c.signal()
		return
	}
	c.mu.Unlock()
	c.stopOnce.Do(func() { close(c.stop) })
}

// sendThenClose queues p and closes the connection after it, with a
// WebSocket close code and reason. The reason is recorded before p is
// queued: once the client has p (a refused CONNACK, a kick's DISCONNECT),
// the connection's close reason is already this one, whatever closes it
// next (a server shutdown, the client leaving).
func (c *conn) sendThenClose(p wkproto.Packet, code websocket.StatusCode, level slog.Level, reason string) {
	c.mu.Lock()
	if c.closeReason == "" {
		c.closeCode, c.closeReason, c.closeLevel = code, reason, level
	}
	c.mu.Unlock()
	c.send(p)
	c.closeWith(code, level, reason, true)
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) reason() (websocket.StatusCode, slog.Level, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode, c.closeLevel, c.closeReason
}

// closing reports whether the connection is being closed.
func (c *conn) closing() bool {
	select {
	case <-c.stop:
		return true
	default:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.flush
	}
}

// send queues one packet. It never blocks: when the client does not read
// fast enough to keep its queue within Config.OutboundQueue packets and
// Config.MaxOutboundBytes bytes, the connection is closed (what it had
// not acknowledged goes back to the user's offline queue). It reports
// whether the packet was queued. The queue is a slice that grows with what
// waits, so an idle connection holds no queue memory.
func (c *conn) send(p wkproto.Packet) bool {
	b, err := wkproto.Encode(p)
	if err != nil {
		c.log.Error("encode", "packet", p.Type(), "err", err)
		return false
	}
	cfg := &c.s.cfg
	c.mu.Lock()
	if c.flush || c.closing0() {
		c.mu.Unlock()
		return false
	}
	if len(c.out)-c.head >= cfg.OutboundQueue || c.outBytes+len(b) > cfg.MaxOutboundBytes {
		n, bytes := len(c.out)-c.head, c.outBytes
		c.mu.Unlock()
		c.s.slowClosed.Add(1)
		c.mu.Lock()
		c.abrupt = true // it does not read: no close handshake
		c.mu.Unlock()
		c.closeWith(websocket.StatusTryAgainLater, slog.LevelWarn,
			fmt.Sprintf("slow client: outbound queue full (%d packets, %d bytes waiting)", n, bytes), false)
		// Nor a wait for the write it may be stuck in. Not here: a close
		// handshake under way would make CloseNow wait for it, and the
		// caller may hold the user's session lock.
		go func() { _ = c.ws.CloseNow() }()
		return false
	}
	c.out = append(c.out, b)
	c.outBytes += len(b)
	c.mu.Unlock()
	c.signal()
	return true
}

// closing0 is closing without the flush check; c.mu may be held.
func (c *conn) closing0() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// pop takes the next queued packet; with none, it reports whether a
// flushing close was asked.
func (c *conn) pop() (b []byte, flush bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.head < len(c.out) {
		b = c.out[c.head]
		c.out[c.head] = nil
		c.head++
		c.outBytes -= len(b)
		if c.head == len(c.out) { // empty: reuse a small array, drop a big one
			c.out, c.head = c.out[:0], 0
			if cap(c.out) > 64 {
				c.out = nil
			}
		}
		return b, false
	}
	return nil, c.flush
}

// writeLoop sends queued packets until told to close.
func (c *conn) writeLoop(ctx context.Context) {
	closeNow := func() {
		c.mu.Lock()
		abrupt := c.abrupt
		c.mu.Unlock()
		if abrupt {
			_ = c.ws.CloseNow()
			return
		}
		code, _, reason := c.reason()
		if code == 0 {
			code = websocket.StatusNormalClosure
		}
		if len(reason) > 120 { // a close frame holds at most 123 bytes of reason
			reason = reason[:120]
		}
		_ = c.ws.Close(code, reason)
	}
	// write sends one packet; false means the writer is done.
	write := func(b []byte) bool {
		wctx, cancel := context.WithTimeout(ctx, c.s.cfg.WriteTimeout)
		err := c.ws.Write(wctx, websocket.MessageBinary, b)
		cancel()
		if err != nil {
			c.closeWith(websocket.StatusGoingAway, slog.LevelInfo, "write: "+err.Error(), false)
			_ = c.ws.CloseNow()
			return false
		}
		return true
	}
	for {
		select {
		case <-ctx.Done():
			_ = c.ws.CloseNow()
			return
		case <-c.stop:
			c.mu.Lock()
			flush := c.flush
			c.mu.Unlock()
			// A close after flush was asked first: send what is queued
			// (a failed CONNACK, a kick's DISCONNECT).
			for flush {
				b, _ := c.pop()
				if b == nil || !write(b) {
					break
				}
			}
			closeNow()
			return
		default:
		}
		b, flush := c.pop()
		if b != nil {
			if !write(b) {
				return
			}
			continue
		}
		if flush {
			c.stopOnce.Do(func() { close(c.stop) })
			closeNow()
			return
		}
		select {
		case <-ctx.Done():
			_ = c.ws.CloseNow()
			return
		case <-c.stop:
		case <-c.wake:
		}
	}
}

// errBadFrame marks read errors that are the client's fault.
var errBadFrame = errors.New("bad frame")

// errTimeout marks a read that ran out of time.
var errTimeout = errors.New("timeout")

// reader buffers WebSocket messages into a byte stream and cuts packets
// from it: a packet may span messages and a message may hold several.
type reader struct {
	c   *conn
	buf []byte // buf[off:] is read and not yet decoded
	off int
}

// next returns the next packet, reading messages as needed, each within
// timeout and all within ctx's deadline.
func (r *reader) next(ctx context.Context, timeout time.Duration) (wkproto.Packet, error) {
	for {
		if r.off < len(r.buf) {
			p, n, err := wkproto.Decode(r.buf[r.off:], r.c.s.cfg.MaxPacketSize)
			if err == nil {
				r.off += n
				return p, nil
			}
			if !errors.Is(err, wkproto.ErrShort) {
				return nil, fmt.Errorf("%w: %w", errBadFrame, err)
			}
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		typ, msg, err := r.c.ws.Reader(rctx)
		if err == nil {
			if r.off > 0 { // drop what was decoded; the array is reused
				r.buf = r.buf[:copy(r.buf, r.buf[r.off:])]
				r.off = 0
			}
			r.buf, err = appendAll(r.buf, msg)
		}
		cancel()
		if err != nil {
			switch {
			case errors.Is(err, websocket.ErrMessageTooBig):
				return nil, fmt.Errorf("%w: WebSocket message over %d bytes", errBadFrame, r.c.s.cfg.MaxPacketSize+5)
			case errors.Is(rctx.Err(), context.DeadlineExceeded):
				return nil, fmt.Errorf("%w: no complete packet within %v", errTimeout, timeout)
			}
			return nil, err
		}
		if typ != websocket.MessageBinary {
			return nil, fmt.Errorf("%w: text WebSocket message", errBadFrame)
		}
	}
}

// appendAll appends what r holds to b, as io.ReadAll does, reusing b's
// spare capacity: Decode copies what it keeps, so the buffer of one
// connection serves every message.
func appendAll(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// serve runs the connection: CONNECT first, then a loop that turns
// packets into user events, until the client leaves, breaks the protocol
// or is closed by the server. It returns when the writer has stopped and
// ConnClose has been added.
func (c *conn) serve(ctx context.Context) {
	s := c.s
	ctx, cancel := context.WithCancel(ctx)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop(ctx)
	}()
	defer func() {
		c.closeWith(websocket.StatusNormalClosure, slog.LevelDebug, "client left", false)
		<-writerDone
		cancel()
		s.forget(c)
		// ConnClose goes through the bus even while it drains, so the
		// session is always cleaned up; only a closed bus refuses it.
		_ = s.bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventConnClose, Conn: c})
		_, level, reason := c.reason()
		c.log.Log(context.Background(), level, "connection closed", "reason", reason)
	}()

	r := &reader{c: c}
	if !c.login(ctx, r) {
		return
	}
	for {
		p, err := r.next(ctx, s.cfg.IdleTimeout)
		if err != nil {
			c.readFailed(err)
			return
		}
		switch p := p.(type) {
		case *wkproto.PingPacket:
			c.send(&wkproto.PongPacket{})
		case *wkproto.SendPacket:
			if !c.waitToSend(ctx) {
				return
			}
			err = s.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: c, Frame: &sendFrame{packet: p}})
		case *wkproto.RecvackPacket:
			err = s.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventRecvAck, Conn: c, Frame: p})
		case *wkproto.DisconnectPacket:
			c.closeWith(websocket.StatusNormalClosure, slog.LevelDebug, "client sent DISCONNECT", false)
			return
		default:
			s.badFrames.Add(1)
			c.closeWith(websocket.StatusProtocolError, slog.LevelWarn, "bad frame: unexpected "+p.Type().String(), false)
			return
		}
		if err != nil {
			c.closeWith(websocket.StatusGoingAway, slog.LevelInfo, "bus: "+err.Error(), false)
			return
		}
	}
}

// waitToSend takes a token of the connection's and of the user's SEND
// rate. Over its rate, a client is not read until it may send again: TCP
// pushes back on it, and it costs nothing. It reports false if the
// connection closed meanwhile.
func (c *conn) waitToSend(ctx context.Context) bool {
	now := time.Now()
	r1, r2 := c.limiter.ReserveN(now, 1), c.se.limiter.ReserveN(now, 1)
	d := max(r1.DelayFrom(now), r2.DelayFrom(now))
	if d == 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.stop:
	case <-ctx.Done():
	}
	r1.Cancel()
	r2.Cancel()
	return false
}

// login reads CONNECT, runs the Connect chain and waits for its verdict,
// all within ConnectTimeout from the upgrade: the deadline does not
// restart when a byte arrives.
func (c *conn) login(ctx context.Context, r *reader) bool {
	s := c.s
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	p, err := r.next(ctx, s.cfg.ConnectTimeout)
	if err != nil {
		if errors.Is(err, errTimeout) {
			err = fmt.Errorf("%w: login: no CONNECT within %v", errTimeout, s.cfg.ConnectTimeout)
		}
		c.readFailed(err)
		return false
	}
	connect, ok := p.(*wkproto.ConnectPacket)
	if !ok {
		s.badFrames.Add(1)
		c.closeWith(websocket.StatusProtocolError, slog.LevelWarn, "bad frame: first packet is "+p.Type().String()+", not CONNECT", false)
		return false
	}
	if err := s.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventConnect, Conn: c, Frame: connect}); err != nil {
		c.closeWith(websocket.StatusTryAgainLater, slog.LevelWarn, "bus: "+err.Error(), false)
		return false
	}
	select {
	case ok := <-c.authed:
		if ok {
			c.se = s.sessions.get(c.UID())
			c.se.initLimiter(&s.cfg)
			c.limiter = rate.NewLimiter(rate.Limit(s.cfg.SendRate), s.cfg.SendBurst)
		}
		return ok
	case <-c.stop:
	case <-ctx.Done():
		if s.base.Err() == nil {
			c.closeWith(websocket.StatusTryAgainLater, slog.LevelWarn, "login not handled in time", false)
		}
	}
	return false
}

// readFailed closes the connection after a failed read, with the reason.
func (c *conn) readFailed(err error) {
	switch {
	case errors.Is(err, errBadFrame):
		c.s.badFrames.Add(1)
		code := websocket.StatusProtocolError
		if errors.Is(err, wkproto.ErrTooLarge) || errors.Is(err, websocket.ErrMessageTooBig) {
			code = websocket.StatusMessageTooBig
		}
		c.closeWith(code, slog.LevelWarn, err.Error(), false)
	case websocket.CloseStatus(err) != -1:
		c.closeWith(websocket.StatusNormalClosure, slog.LevelDebug, "client closed: "+websocket.CloseStatus(err).String(), false)
	default:
		c.closeWith(websocket.StatusGoingAway, slog.LevelInfo, "read: "+err.Error(), false)
	}
}
