package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/imbus/eventbus/examples/wkim/server"
	"github.com/imbus/eventbus/examples/wkim/wkclient"
	"github.com/imbus/eventbus/examples/wkim/wkproto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const wait = 10 * time.Second

// logBuffer collects the server's log for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type testServer struct {
	*server.Server
	url  string
	base string // http://host:port
	log  *logBuffer
}

// start runs a server on a free port until the test ends; then it checks
// that Close returns nil (the bus drained everything) and Serve returned.
func start(t *testing.T, cfg server.Config) *testServer {
	t.Helper()
	return startOn(t, cfg, nil)
}

// startOn is start with the listener wrapped by wrap, if not nil.
func startOn(t *testing.T, cfg server.Config, wrap func(net.Listener) net.Listener) *testServer {
	t.Helper()
	logs := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		ln = wrap(ln)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	return &testServer{Server: srv, url: "ws://" + ln.Addr().String(), base: "http://" + ln.Addr().String(), log: logs}
}

// closeLogs closes the server and returns its log. Close waits for every
// connection's goroutine, so every close reason is logged by then.
func (s *testServer) closeLogs(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return s.log.String()
}

func (s *testServer) dial(t *testing.T, uid string, opts ...func(*wkclient.Options)) *wkclient.Client {
	t.Helper()
	c, err := s.tryDial(t, uid, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", uid, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// user gives uid its login token, "t-"+uid, as the application server
// would through the admin API.
func (s *testServer) user(t *testing.T, uid string) {
	t.Helper()
	if err := s.SetUserToken(uid, "t-"+uid); err != nil {
		t.Fatal(err)
	}
}

// tryDial logs uid in with its token, "t-"+uid, which it sets first.
func (s *testServer) tryDial(t *testing.T, uid string, opts ...func(*wkclient.Options)) (*wkclient.Client, error) {
	t.Helper()
	if len(uid) <= 64 {
		s.user(t, uid)
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	o := wkclient.Options{UID: uid, Token: "t-" + uid}
	for _, f := range opts {
		f(&o)
	}
	return wkclient.Dial(ctx, s.url, o)
}

func text(s string) []byte { return []byte(`{"content":"` + s + `","type":1}`) }

func send(t *testing.T, c *wkclient.Client, channel string, typ uint8, content string) uint32 {
	t.Helper()
	seq, err := c.Send(t.Context(), channel, typ, text(content))
	if err != nil {
		t.Fatalf("%s send: %v", c.UID, err)
	}
	return seq
}

func next(t *testing.T, c *wkclient.Client) wkproto.Packet {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	p, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("%s: waiting for a packet: %v", c.UID, err)
	}
	return p
}

func nextOf[P wkproto.Packet](t *testing.T, c *wkclient.Client) P {
	t.Helper()
	p := next(t, c)
	q, ok := p.(P)
	if !ok {
		t.Fatalf("%s: got %v %+v, want %T", c.UID, p.Type(), p, q)
	}
	return q
}

// content is the text of a RECV's decrypted JSON payload.
func content(t *testing.T, r *wkproto.RecvPacket) string {
	t.Helper()
	var v struct {
		Content string `json:"content"`
		Type    int    `json:"type"`
	}
	if err := json.Unmarshal(r.Payload, &v); err != nil || v.Type != 1 {
		t.Fatalf("RECV payload %q: %v", r.Payload, err)
	}
	return v.Content
}

// closed waits until the server closes c and returns the close status.
func closed(t *testing.T, c *wkclient.Client) websocket.StatusCode {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatalf("%s: connection still open", c.UID)
	}
	return websocket.CloseStatus(c.Err())
}

func TestLogin(t *testing.T) {
	s := start(t, server.Config{Authenticate: func(uid, token string) bool { return token == "t-"+uid }})
	c := s.dial(t, "alice")
	// A heartbeat is answered by PONG.
	if err := c.WritePacket(t.Context(), &wkproto.PingPacket{}); err != nil {
		t.Fatal(err)
	}
	nextOf[*wkproto.PongPacket](t, c)

	_, err := s.tryDial(t, "mallory", func(o *wkclient.Options) { o.Token = "guess" })
	var ce *wkclient.ConnectError
	if !errors.As(err, &ce) || ce.Reason != wkproto.ReasonAuthFail {
		t.Fatalf("bad token: %v, want CONNACK reason %d", err, wkproto.ReasonAuthFail)
	}
	_, err = s.tryDial(t, "old", func(o *wkclient.Options) { o.Version = 1 })
	if !errors.As(err, &ce) || ce.Reason != wkproto.ReasonUnknown {
		t.Fatalf("version 1: %v, want a refused CONNACK", err)
	}
	if logs := s.closeLogs(t); !strings.Contains(logs, "unsupported protocol version 1") {
		t.Errorf("log lacks the reason for the version-1 close")
	}
}

func TestPersonToPerson(t *testing.T) {
	s := start(t, server.Config{})
	alice, bob := s.dial(t, "alice"), s.dial(t, "bob")
	for i := 1; i <= 3; i++ {
		seq := send(t, alice, "bob", wkproto.ChannelPerson, fmt.Sprint("hi bob ", i))
		ack := nextOf[*wkproto.SendackPacket](t, alice)
		if ack.ClientSeq != seq || ack.ReasonCode != wkproto.ReasonSuccess || ack.MessageSeq != uint32(i) || ack.MessageID == 0 {
			t.Fatalf("SENDACK %+v, want clientSeq %d, seq %d, success", ack, seq, i)
		}
		r := nextOf[*wkproto.RecvPacket](t, bob)
		// The receiver sees the channel named after the sender.
		if r.ChannelID != "alice" || r.ChannelType != wkproto.ChannelPerson || r.FromUID != "alice" ||
			r.MessageSeq != uint32(i) || r.MessageID != ack.MessageID || content(t, r) != fmt.Sprint("hi bob ", i) {
			t.Fatalf("bob got %+v (%q)", r, r.Payload)
		}
	}
	// The answer is in the same conversation: the sequence goes on.
	send(t, bob, "alice", wkproto.ChannelPerson, "hi alice")
	if ack := nextOf[*wkproto.SendackPacket](t, bob); ack.MessageSeq != 4 {
		t.Fatalf("bob's SENDACK %+v, want seq 4", ack)
	}
	r := nextOf[*wkproto.RecvPacket](t, alice)
	if r.ChannelID != "bob" || r.MessageSeq != 4 || content(t, r) != "hi alice" {
		t.Fatalf("alice got %+v", r)
	}
	if h := s.History("alice@bob", wkproto.ChannelPerson); len(h) != 4 || h[3].FromUID != "bob" ||
		h[0].Header[server.HeaderClientSeq] != "1" {
		t.Fatalf("history %+v", h)
	}
}

func TestGroup(t *testing.T) {
	s := start(t, server.Config{AdminToken: adminToken, Groups: map[string][]string{"g1": {"alice", "bob", "carol"}}})
	alice, bob, carol, dave := s.dial(t, "alice"), s.dial(t, "bob"), s.dial(t, "carol"), s.dial(t, "dave")

	send(t, dave, "g1", wkproto.ChannelGroup, "let me in")
	if ack := nextOf[*wkproto.SendackPacket](t, dave); ack.ReasonCode != wkproto.ReasonSubscriberNotExist {
		t.Fatalf("non-member SENDACK %+v, want reason %d", ack, wkproto.ReasonSubscriberNotExist)
	}
	send(t, alice, "nope", wkproto.ChannelGroup, "anyone?")
	if ack := nextOf[*wkproto.SendackPacket](t, alice); ack.ReasonCode != wkproto.ReasonChannelNotExist {
		t.Fatalf("unknown group SENDACK %+v, want reason %d", ack, wkproto.ReasonChannelNotExist)
	}

	send(t, alice, "g1", wkproto.ChannelGroup, "lunch?")
	nextOf[*wkproto.SendackPacket](t, alice)
	for _, c := range []*wkclient.Client{bob, carol} {
		r := nextOf[*wkproto.RecvPacket](t, c)
		if r.ChannelID != "g1" || r.ChannelType != wkproto.ChannelGroup || r.FromUID != "alice" || r.MessageSeq != 1 || content(t, r) != "lunch?" {
			t.Fatalf("%s got %+v", c.UID, r)
		}
	}
	// The group API adds dave; the sender never gets its own message.
	if code, body := s.api(t, http.MethodPut, "/groups/g1", adminToken, `{"members":["alice","bob","carol","dave"]}`); code != http.StatusOK {
		t.Fatalf("PUT /groups/g1: %d %s", code, body)
	}
	send(t, dave, "g1", wkproto.ChannelGroup, "thanks")
	if ack := nextOf[*wkproto.SendackPacket](t, dave); ack.ReasonCode != wkproto.ReasonSuccess || ack.MessageSeq != 2 {
		t.Fatalf("dave's SENDACK %+v", ack)
	}
	for _, c := range []*wkclient.Client{alice, bob, carol} {
		if r := nextOf[*wkproto.RecvPacket](t, c); r.FromUID != "dave" || r.MessageSeq != 2 {
			t.Fatalf("%s got %+v", c.UID, r)
		}
	}
	code, got := s.api(t, http.MethodGet, "/groups/g1", adminToken, "")
	var body struct{ Members []string }
	if err := json.Unmarshal([]byte(got), &body); err != nil || code != http.StatusOK || strings.Join(body.Members, ",") != "alice,bob,carol,dave" {
		t.Fatalf("GET /groups/g1: %d %s %v", code, got, err)
	}
}

func TestOfflineReplay(t *testing.T) {
	s := start(t, server.Config{Groups: map[string][]string{"g1": {"alice", "dave"}}})
	s.user(t, "dave")
	alice := s.dial(t, "alice")
	var want []string
	for i := range 4 {
		ch, typ := "g1", wkproto.ChannelGroup
		if i%2 == 1 {
			ch, typ = "dave", wkproto.ChannelPerson
		}
		msg := fmt.Sprint("while you were out ", i)
		send(t, alice, ch, typ, msg)
		if ack := nextOf[*wkproto.SendackPacket](t, alice); ack.ReasonCode != wkproto.ReasonSuccess {
			t.Fatalf("SENDACK %+v", ack)
		}
		want = append(want, msg)
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if err := s.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Offline != 4 || st.Delivered != 0 {
		t.Fatalf("stats %+v: want 4 offline, 0 delivered", st)
	}

	// dave logs in without acknowledging: he gets all four, in order. Push
	// events are keyed by receiver and alice waited for each SENDACK, which
	// comes after the push events are queued, so the order holds across
	// the two channels too.
	dave1 := s.dial(t, "dave", func(o *wkclient.Options) { o.NoAck = true })
	got := func(c *wkclient.Client) []string {
		var out []string
		for range want {
			out = append(out, content(t, nextOf[*wkproto.RecvPacket](t, c)))
		}
		return out
	}
	if g := got(dave1); strings.Join(g, "|") != strings.Join(want, "|") {
		t.Fatalf("replay %q, want %q", g, want)
	}
	if err := dave1.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	// Unacknowledged, so they are replayed again on the next login, then
	// acknowledged.
	dave2 := s.dial(t, "dave")
	if g := got(dave2); strings.Join(g, "|") != strings.Join(want, "|") {
		t.Fatalf("second replay %q, want %q", g, want)
	}
	// Once online, new messages come straight through.
	send(t, alice, "g1", wkproto.ChannelGroup, "welcome back")
	if r := nextOf[*wkproto.RecvPacket](t, dave2); content(t, r) != "welcome back" || r.MessageSeq != 3 {
		t.Fatalf("online RECV %+v", r)
	}
}

// TestOrderPerReceiver has several senders post into two groups and
// person channels at once; every receiver must see each channel's
// messages exactly once, in growing sequence order, and each sender's
// messages in the order sent, none missing.
func TestOrderPerReceiver(t *testing.T) {
	users := []string{"u0", "u1", "u2", "u3", "u4"}
	s := start(t, server.Config{Groups: map[string][]string{"ga": users, "gb": users[:3]}})
	const perSender = 40
	type stream struct {
		lastSeq uint32
		lastN   map[string]int // per sender
		count   int
	}
	var mu sync.Mutex
	seen := map[string]map[string]*stream{} // receiver → channel → stream
	var errs []string
	var received sync.WaitGroup
	clients := map[string]*wkclient.Client{}
	for _, u := range users {
		seen[u] = map[string]*stream{}
		c, err := s.tryDial(t, u, func(o *wkclient.Options) {
			o.OnPacket = func(p wkproto.Packet) {
				r, ok := p.(*wkproto.RecvPacket)
				if !ok {
					return
				}
				var body struct{ Content string }
				_ = json.Unmarshal(r.Payload, &body)
				var n int
				var from string
				fmt.Sscanf(body.Content, "%s %d", &from, &n)
				mu.Lock()
				defer mu.Unlock()
				st := seen[u][r.ChannelID]
				if st == nil {
					st = &stream{lastN: map[string]int{}}
					seen[u][r.ChannelID] = st
				}
				// Sequences grow; gaps are the receiver's own messages.
				if r.MessageSeq <= st.lastSeq {
					errs = append(errs, fmt.Sprintf("%s/%s: seq %d after %d", u, r.ChannelID, r.MessageSeq, st.lastSeq))
				}
				if n != st.lastN[from]+1 || from != r.FromUID {
					errs = append(errs, fmt.Sprintf("%s/%s: %s's #%d after #%d", u, r.ChannelID, from, n, st.lastN[from]))
				}
				st.lastSeq, st.lastN[from] = r.MessageSeq, n
				st.count++
				received.Done()
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		clients[u] = c
	}
	// Each sender: perSender messages to ga (4 receivers), gb if a member
	// (2 receivers) and to the next user (1 receiver).
	for i := range users {
		received.Add(perSender * 4)
		if i < 3 {
			received.Add(perSender * 2)
		}
		received.Add(perSender)
	}
	var senders sync.WaitGroup
	for i, u := range users {
		senders.Add(1)
		go func() {
			defer senders.Done()
			c := clients[u]
			for n := 1; n <= perSender; n++ {
				msg := text(fmt.Sprintf("%s %d", u, n))
				_, err1 := c.Send(t.Context(), "ga", wkproto.ChannelGroup, msg)
				var err2 error
				if i < 3 {
					_, err2 = c.Send(t.Context(), "gb", wkproto.ChannelGroup, msg)
				}
				_, err3 := c.Send(t.Context(), users[(i+1)%len(users)], wkproto.ChannelPerson, msg)
				if err := errors.Join(err1, err2, err3); err != nil {
					t.Errorf("%s: %v", u, err)
					return
				}
			}
		}()
	}
	senders.Wait()
	done := make(chan struct{})
	go func() { received.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("not every RECV arrived; stats %+v", s.Stats())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("%d order errors, first: %s", len(errs), strings.Join(errs[:min(5, len(errs))], "; "))
	}
	if n := seen["u0"]["ga"].count; n != 4*perSender {
		t.Fatalf("u0 saw %d in ga, want %d", n, 4*perSender)
	}
}

// TestBadFrames sends broken packets on their own connections: each is
// closed with a reason, while a conversation on other connections goes on.
func TestBadFrames(t *testing.T) {
	s := start(t, server.Config{MaxPacketSize: 1024})
	alice, bob := s.dial(t, "alice"), s.dial(t, "bob")
	talk := func(msg string) {
		t.Helper()
		send(t, alice, "bob", wkproto.ChannelPerson, msg)
		nextOf[*wkproto.SendackPacket](t, alice)
		if r := nextOf[*wkproto.RecvPacket](t, bob); content(t, r) != msg {
			t.Fatalf("bob got %q, want %q", r.Payload, msg)
		}
	}
	talk("before")

	signed := func(c *wkclient.Client) *wkproto.SendPacket {
		p := &wkproto.SendPacket{ClientSeq: 1, ClientMsgNo: "x", ChannelID: "bob", ChannelType: wkproto.ChannelPerson}
		c.Cipher().SealSend(p, text("x"))
		return p
	}
	tests := []struct {
		name   string
		packet func(c *wkclient.Client) []byte
		status websocket.StatusCode
		log    string
		ack    uint8 // a SENDACK reason expected before the close
	}{
		{"unknown type", func(*wkclient.Client) []byte { return []byte{0xc0, 0x00} }, websocket.StatusProtocolError, "unknown packet type", 0},
		{"oversized", func(*wkclient.Client) []byte { return []byte{0x30, 0x81, 0x08} }, websocket.StatusMessageTooBig, "packet too large", 0},
		{"length longer than 4 bytes", func(*wkclient.Client) []byte { return []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01} }, websocket.StatusProtocolError, "remaining length longer", 0},
		{"truncated SEND", func(c *wkclient.Client) []byte {
			b, _ := wkproto.Encode(signed(c))
			b[1] = 10 // the body claims 10 bytes, cutting the channel id
			return b[:12]
		}, websocket.StatusProtocolError, "truncated", 0},
		{"bad signature", func(c *wkclient.Client) []byte {
			p := signed(c)
			p.MsgKey = strings.Repeat("0", 32)
			b, _ := wkproto.Encode(p)
			return b
		}, websocket.StatusPolicyViolation, "message key mismatch", wkproto.ReasonMsgKeyError},
		{"payload not ciphertext", func(c *wkclient.Client) []byte {
			p := signed(c)
			p.Payload = []byte("plain")
			c.Cipher().SignSend(p)
			b, _ := wkproto.Encode(p)
			return b
		}, websocket.StatusPolicyViolation, "payload does not decrypt", wkproto.ReasonPayloadDecodeError},
		{"CONNACK from a client", func(*wkclient.Client) []byte {
			b, _ := wkproto.Encode(&wkproto.ConnackPacket{Salt: "x"})
			return b
		}, websocket.StatusProtocolError, "unexpected CONNACK", 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := s.dial(t, fmt.Sprint("bad", i))
			if err := c.WriteRaw(t.Context(), tt.packet(c)); err != nil {
				t.Fatal(err)
			}
			if tt.ack != 0 {
				if ack := nextOf[*wkproto.SendackPacket](t, c); ack.ReasonCode != tt.ack {
					t.Fatalf("SENDACK %+v, want reason %d", ack, tt.ack)
				}
			}
			if st := closed(t, c); st != tt.status {
				t.Fatalf("close status %v (%v), want %v", st, c.Err(), tt.status)
			}
			if !strings.Contains(c.Err().Error(), tt.log) {
				t.Fatalf("reason %q not in the close frame: %v", tt.log, c.Err())
			}
		})
	}

	// Before login: a first packet that is not CONNECT, and a text frame.
	for _, raw := range []struct {
		typ  websocket.MessageType
		b    []byte
		want string
	}{
		{websocket.MessageBinary, []byte{0x70}, "first packet is PING"},
		{websocket.MessageText, []byte("hello"), "text WebSocket message"},
	} {
		ws, _, err := websocket.Dial(t.Context(), s.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := ws.Write(t.Context(), raw.typ, raw.b); err != nil {
			t.Fatal(err)
		}
		_, _, err = ws.Read(t.Context())
		if websocket.CloseStatus(err) != websocket.StatusProtocolError || !strings.Contains(err.Error(), raw.want) {
			t.Fatalf("raw %q: %v, want a protocol-error close saying %q", raw.b, err, raw.want)
		}
		_ = ws.CloseNow()
	}

	talk("after") // the good connections never noticed
	if n := s.Stats().BadFrames; n != int64(len(tests)+2) {
		t.Fatalf("bad frames counted: %d, want %d", n, len(tests)+2)
	}
	logs := s.closeLogs(t)
	for _, tt := range tests {
		if !strings.Contains(logs, `level=WARN msg="connection closed"`) || !strings.Contains(logs, tt.log) {
			t.Errorf("log lacks the reason %q", tt.log)
		}
	}
}

// TestFraming: the server cuts packets out of a byte stream, so a packet
// may span WebSocket messages and a message may hold several.
func TestFraming(t *testing.T) {
	s := start(t, server.Config{})
	alice, bob := s.dial(t, "alice"), s.dial(t, "bob")
	var stream []byte
	for i := 1; i <= 3; i++ {
		p := &wkproto.SendPacket{ClientSeq: uint32(100 + i), ClientMsgNo: fmt.Sprint("n", i), ChannelID: "bob", ChannelType: wkproto.ChannelPerson}
		alice.Cipher().SealSend(p, text(fmt.Sprint("m", i)))
		b, _ := wkproto.Encode(p)
		stream = append(stream, b...)
	}
	// Two and a half packets, then the rest.
	cut := len(stream) - 7
	for _, part := range [][]byte{stream[:cut], stream[cut:]} {
		if err := alice.WriteRaw(t.Context(), part); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		if ack := nextOf[*wkproto.SendackPacket](t, alice); ack.ClientSeq != uint32(100+i) {
			t.Fatalf("SENDACK %+v, want clientSeq %d", ack, 100+i)
		}
		if r := nextOf[*wkproto.RecvPacket](t, bob); content(t, r) != fmt.Sprint("m", i) {
			t.Fatalf("bob got %q", r.Payload)
		}
	}
}

// TestKick: a second login of the same user takes over; the first
// connection gets DISCONNECT and is closed.
func TestKick(t *testing.T) {
	s := start(t, server.Config{})
	first := s.dial(t, "alice")
	second := s.dial(t, "alice")
	d := nextOf[*wkproto.DisconnectPacket](t, first)
	if d.ReasonCode != wkproto.ReasonConnectKick {
		t.Fatalf("DISCONNECT %+v", d)
	}
	closed(t, first)
	bob := s.dial(t, "bob")
	send(t, bob, "alice", wkproto.ChannelPerson, "which one?")
	if r := nextOf[*wkproto.RecvPacket](t, second); content(t, r) != "which one?" {
		t.Fatalf("second got %+v", r)
	}
}

// TestCloseWithClients: Close says goodbye to every connection.
func TestCloseWithClients(t *testing.T) {
	s := start(t, server.Config{})
	a, b := s.dial(t, "alice"), s.dial(t, "bob")
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wkclient.Client{a, b} {
		if st := closed(t, c); st != websocket.StatusGoingAway {
			t.Fatalf("%s: close status %v, want going away", c.UID, st)
		}
	}
	if _, err := s.tryDial(t, "carol"); err == nil {
		t.Fatal("dial after Close succeeded")
	}
}
