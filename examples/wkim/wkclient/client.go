// Package wkclient is a WuKongIM protocol (version 2) client over
// WebSocket, written against package wkproto as the JS SDK behaves: it
// logs in with the key exchange, sends encrypted and signed messages,
// checks and decrypts what it receives and acknowledges every RECV. The
// tests and the load generator of examples/wkim use it.
//
// It also checks the server: every WebSocket message must hold exactly one
// packet (the SDK cannot read more), and every RECV must carry a valid
// message key; otherwise the client stops with an error.
package wkclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/imbus/eventbus/examples/wkim/wkproto"
)

// Options configure Dial.
type Options struct {
	// UID and Token are sent in CONNECT.
	UID, Token string
	// OnPacket, if set, is called from the client's reader goroutine with
	// every packet received after CONNACK, in order (RECVs already
	// acknowledged and with Payload decrypted). If nil, packets queue up
	// for Next.
	OnPacket func(wkproto.Packet)
	// Version is CONNECT's protocol version; 0 means wkproto.Version.
	Version uint8
	// NoAck leaves RECVs unacknowledged (to test redelivery).
	NoAck bool
	// Stalled stops reading after CONNACK, as a client that is too slow
	// (to test the server's outbound limits). Next and OnPacket then get
	// nothing and Done is closed only by Close.
	Stalled bool
	// HTTPClient dials the WebSocket, e.g. one trusting a test
	// certificate for wss://. Default http.DefaultClient.
	HTTPClient *http.Client
	// Header is sent with the WebSocket upgrade (e.g. an Origin).
	Header http.Header
}

// ConnectError is a CONNACK that refused the login.
type ConnectError struct{ Reason uint8 }

// Error says the login was refused and the CONNACK reason code.
func (e *ConnectError) Error() string {
	return fmt.Sprintf("wkclient: login refused, CONNACK reason %d", e.Reason)
}

// Client is one logged-in connection. Its methods are safe for concurrent
// use, except Next, which one goroutine should call.
type Client struct {
	UID string

	ws        *websocket.Conn
	cipher    *wkproto.Cipher
	onPacket  func(wkproto.Packet)
	noAck     bool
	stalled   bool
	closeOnce sync.Once
	rbuf      []byte // read buffer, used by one reader at a time
	seq       atomic.Uint32

	mu     sync.Mutex
	queue  []wkproto.Packet
	notify chan struct{} // a packet was queued or the reader ended
	err    error         // why the reader ended

	done chan struct{}
}

// Dial connects to url, logs in and starts the reader goroutine, which
// Close stops.
func Dial(ctx context.Context, url string, o Options) (*Client, error) {
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled,
		HTTPClient: o.HTTPClient, HTTPHeader: o.Header})
	if err != nil {
		if resp != nil {
			return nil, &DialError{Status: resp.StatusCode, Err: err}
		}
		return nil, fmt.Errorf("wkclient: dial %s: %w", url, err)
	}
	ws.SetReadLimit(1 << 20)
	c := &Client{UID: o.UID, ws: ws, onPacket: o.OnPacket, noAck: o.NoAck, notify: make(chan struct{}, 1), done: make(chan struct{})}
	if err := c.login(ctx, o); err != nil {
		_ = ws.CloseNow()
		return nil, err
	}
	if o.Stalled {
		c.stalled = true
		return c, nil
	}
	go c.read()
	return c, nil
}

// DialError is a WebSocket upgrade the server answered with an HTTP
// status other than 101 (e.g. 403 for a foreign origin).
type DialError struct {
	Status int
	Err    error
}

// Error says the upgrade failed and its HTTP status.
func (e *DialError) Error() string {
	return fmt.Sprintf("wkclient: upgrade refused with HTTP %d: %v", e.Status, e.Err)
}

// Unwrap returns the WebSocket library's error.
func (e *DialError) Unwrap() error { return e.Err }

func (c *Client) login(ctx context.Context, o Options) error {
	keys, err := wkproto.GenerateKey(nil)
	if err != nil {
		return err
	}
	version := o.Version
	if version == 0 {
		version = wkproto.Version
	}
	err = c.WritePacket(ctx, &wkproto.ConnectPacket{
		Version: version, DeviceFlag: 1, DeviceID: randomHex() + "W",
		UID: o.UID, Token: o.Token, ClientTimestamp: time.Now().UnixMilli(), ClientKey: keys.PublicBase64(),
	})
	if err != nil {
		return err
	}
	p, err := c.readOne(ctx)
	if err != nil {
		return fmt.Errorf("wkclient: waiting for CONNACK: %w", err)
	}
	ack, ok := p.(*wkproto.ConnackPacket)
	if !ok {
		return fmt.Errorf("wkclient: got %v, want CONNACK", p.Type())
	}
	if ack.ReasonCode != wkproto.ReasonSuccess {
		return &ConnectError{Reason: ack.ReasonCode}
	}
	secret, err := keys.Shared(ack.ServerKey)
	if err != nil {
		return err
	}
	c.cipher, err = wkproto.NewCipher(secret, ack.Salt)
	return err
}

// randomHex returns 32 random hex digits, as the SDK's GUIDs.
func randomHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// readOne reads one WebSocket message and decodes the one packet it must
// hold.
func (c *Client) readOne(ctx context.Context) (wkproto.Packet, error) {
	typ, r, err := c.ws.Reader(ctx)
	if err != nil {
		return nil, err
	}
	// One buffer for every message: Decode copies what it keeps.
	buf := bytes.NewBuffer(c.rbuf[:0])
	_, err = buf.ReadFrom(r)
	c.rbuf = buf.Bytes()
	if err != nil {
		return nil, err
	}
	msg := c.rbuf
	if typ != websocket.MessageBinary {
		return nil, errors.New("wkclient: server sent a text message")
	}
	p, n, err := wkproto.Decode(msg, 0)
	if err != nil {
		return nil, fmt.Errorf("wkclient: server sent a bad packet: %w", err)
	}
	if n != len(msg) {
		return nil, fmt.Errorf("wkclient: server sent %d bytes after a %v in one WebSocket message (the SDK reads one packet per message)", len(msg)-n, p.Type())
	}
	return p, nil
}

// read receives packets until the connection ends, acknowledging RECVs.
func (c *Client) read() {
	var err error
	defer func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		c.wake()
		close(c.done)
	}()
	for {
		var p wkproto.Packet
		p, err = c.readOne(context.Background())
		if err != nil {
			return
		}
		if r, ok := p.(*wkproto.RecvPacket); ok {
			plain, oerr := c.cipher.OpenRecv(r)
			if oerr != nil {
				err = fmt.Errorf("wkclient: RECV id %d: %w", r.MessageID, oerr)
				_ = c.ws.Close(websocket.StatusPolicyViolation, "bad RECV")
				return
			}
			r.Payload = plain
			if !c.noAck {
				ack := &wkproto.RecvackPacket{Flags: r.Flags, MessageID: r.MessageID, MessageSeq: r.MessageSeq}
				if err = c.WritePacket(context.Background(), ack); err != nil {
					return
				}
			}
		}
		if c.onPacket != nil {
			c.onPacket(p)
			continue
		}
		c.mu.Lock()
		c.queue = append(c.queue, p)
		c.mu.Unlock()
		c.wake()
	}
}

func (c *Client) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Next returns the next packet received (without OnPacket). When the
// connection has ended and nothing is left, it returns why it ended.
func (c *Client) Next(ctx context.Context) (wkproto.Packet, error) {
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			p := c.queue[0]
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return p, nil
		}
		ended := c.isDone()
		err := c.err
		c.mu.Unlock()
		if ended {
			if err == nil {
				err = errors.New("wkclient: connection closed")
			}
			return nil, err
		}
		select {
		case <-c.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Client) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended (nil while it is open). The
// server's close status is websocket.CloseStatus(err).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Send sends plain (e.g. `{"content":"hi","type":1}`) to a channel,
// encrypted and signed, and returns its client sequence, which the
// SENDACK echoes.
func (c *Client) Send(ctx context.Context, channelID string, channelType uint8, plain []byte) (uint32, error) {
	p := &wkproto.SendPacket{Flags: wkproto.FlagRedDot, ClientSeq: c.seq.Add(1), ClientMsgNo: randomHex() + "3",
		ChannelID: channelID, ChannelType: channelType}
	c.cipher.SealSend(p, plain)
	return p.ClientSeq, c.WritePacket(ctx, p)
}

// Cipher returns the connection's cipher, to build packets by hand.
func (c *Client) Cipher() *wkproto.Cipher { return c.cipher }

// WritePacket sends one packet as one WebSocket message.
func (c *Client) WritePacket(ctx context.Context, p wkproto.Packet) error {
	b, err := wkproto.Encode(p)
	if err != nil {
		return err
	}
	return c.WriteRaw(ctx, b)
}

// WriteRaw sends b as one binary WebSocket message, whatever it holds.
func (c *Client) WriteRaw(ctx context.Context, b []byte) error {
	return c.ws.Write(ctx, websocket.MessageBinary, b)
}

// CloseNow drops the connection without the close handshake and waits
// for the reader goroutine.
func (c *Client) CloseNow() error {
	err := c.ws.CloseNow()
	if c.stalled {
		c.closeOnce.Do(func() { close(c.done) })
	}
	<-c.done
	return err
}

// Close closes the connection and waits for the reader goroutine. A
// Stalled client's connection is dropped without the close handshake.
func (c *Client) Close() error {
	if c.stalled {
		c.closeOnce.Do(func() { close(c.done) })
		return c.ws.CloseNow()
	}
	err := c.ws.Close(websocket.StatusNormalClosure, "bye")
	<-c.done
	return err
}
