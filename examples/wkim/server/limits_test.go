package server_test

// Each test here is an attack on the server as someone copying it would
// face it, and asserts that the limit holds and that a bystander
// conversation keeps working.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/imbus/eventbus/examples/wkim/server"
	"github.com/imbus/eventbus/examples/wkim/wkclient"
	"github.com/imbus/eventbus/examples/wkim/wkproto"
)

const adminToken = "admin-0123456789abcdef"

// api calls the admin API with bearer (none if empty) and returns the
// status and body.
func (s *testServer) api(t *testing.T, method, path, bearer, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// roundTrip sends from a to b (a person channel), waits for a's SENDACK
// and b's RECV, and returns the time to the RECV.
func roundTrip(t *testing.T, a, b *wkclient.Client, msg string) time.Duration {
	t.Helper()
	start := time.Now()
	send(t, a, b.UID, wkproto.ChannelPerson, msg)
	if ack := nextOf[*wkproto.SendackPacket](t, a); ack.ReasonCode != wkproto.ReasonSuccess {
		t.Fatalf("bystander %s: SENDACK %+v", a.UID, ack)
	}
	r := nextOf[*wkproto.RecvPacket](t, b)
	d := time.Since(start)
	if got := content(t, r); got != msg {
		t.Fatalf("bystander %s got %q, want %q", b.UID, got, msg)
	}
	return d
}

// bystanders logs in two users who talk to each other.
func (s *testServer) bystanders(t *testing.T) (*wkclient.Client, *wkclient.Client) {
	t.Helper()
	return s.dial(t, "by-ann"), s.dial(t, "by-ben")
}

func median(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}

func TestAdminAPIRefusesUnauthenticatedWrites(t *testing.T) {
	s := start(t, server.Config{AdminToken: adminToken, Groups: map[string][]string{"g1": {"alice", "bob"}}})
	alice, bob := s.dial(t, "alice"), s.dial(t, "bob")

	// The attack: take the group over without a credential, or with a
	// client's login token, or a guess.
	for _, bearer := range []string{"", "t-alice", "guess"} {
		for _, c := range []struct{ method, path, body string }{
			{http.MethodPut, "/groups/g1", `{"members":["mallory"]}`},
			{http.MethodPut, "/users/alice/token", `{"token":"mine now"}`},
			{http.MethodGet, "/groups/g1", ""},
			{http.MethodGet, "/stats", ""},
		} {
			if code, body := s.api(t, c.method, c.path, bearer, c.body); code != http.StatusUnauthorized {
				t.Errorf("%s %s with bearer %q: %d %.100s, want 401", c.method, c.path, bearer, code, body)
			}
		}
	}
	if m, _ := s.Group("g1"); strings.Join(m, ",") != "alice,bob" {
		t.Fatalf("g1 is now %v", m)
	}
	// The admin token may not become a login token, which the API would
	// then accept from a client.
	if code, _ := s.api(t, http.MethodPut, "/users/mallory/token", adminToken, `{"token":"`+adminToken+`"}`); code != http.StatusBadRequest {
		t.Fatalf("admin token as a login token: %d, want 400", code)
	}
	// The bystanders: the group still works, and the admin still can.
	send(t, alice, "g1", wkproto.ChannelGroup, "still ours")
	nextOf[*wkproto.SendackPacket](t, alice)
	if r := nextOf[*wkproto.RecvPacket](t, bob); content(t, r) != "still ours" {
		t.Fatalf("bob got %q", r.Payload)
	}
	if code, body := s.api(t, http.MethodPut, "/groups/g2", adminToken, `{"members":["alice"]}`); code != http.StatusOK {
		t.Fatalf("admin PUT: %d %s", code, body)
	}

	// Without an admin token the API is read-only.
	ro := start(t, server.Config{Groups: map[string][]string{"g1": {"alice"}}})
	if code, _ := ro.api(t, http.MethodPut, "/groups/g1", "", `{"members":["mallory"]}`); code != http.StatusForbidden {
		t.Fatalf("PUT without an admin token configured: %d, want 403", code)
	}
	if code, _ := ro.api(t, http.MethodPut, "/users/alice/token", "", `{"token":"x"}`); code != http.StatusForbidden {
		t.Fatalf("PUT token without an admin token configured: %d, want 403", code)
	}
	if code, _ := ro.api(t, http.MethodGet, "/stats", "", ""); code != http.StatusOK {
		t.Fatalf("GET /stats: %d", code)
	}
	if _, err := server.New(server.Config{AdminToken: "short"}); err == nil {
		t.Fatal("a 5-byte admin token was accepted")
	}
}

func TestLoginNeedsTheUsersOwnToken(t *testing.T) {
	s := start(t, server.Config{AdminToken: adminToken})
	for _, u := range []string{"alice", "bob", "mallory"} {
		if code, body := s.api(t, http.MethodPut, "/users/"+u+"/token", adminToken, `{"token":"t-`+u+`"}`); code != http.StatusNoContent {
			t.Fatalf("set %s's token: %d %s", u, code, body)
		}
	}
	dial := func(uid, token string) (*wkclient.Client, error) {
		ctx, cancel := context.WithTimeout(t.Context(), wait)
		defer cancel()
		c, err := wkclient.Dial(ctx, s.url, wkclient.Options{UID: uid, Token: token})
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
		}
		return c, err
	}
	bob, err := dial("bob", "t-bob")
	if err != nil {
		t.Fatal(err)
	}
	send(t, bob, "alice", wkproto.ChannelPerson, "for alice only")
	if ack := nextOf[*wkproto.SendackPacket](t, bob); ack.ReasonCode != wkproto.ReasonSuccess {
		t.Fatalf("SENDACK %+v", ack)
	}
	// The attack: mallory logs in as alice with her own token, or with
	// none, or as a user nobody set up.
	for _, try := range []struct{ uid, token string }{{"alice", "t-mallory"}, {"alice", ""}, {"carol", "t-carol"}} {
		_, err := dial(try.uid, try.token)
		var ce *wkclient.ConnectError
		if !errors.As(err, &ce) || ce.Reason != wkproto.ReasonAuthFail {
			t.Fatalf("login as %s with %q: %v, want CONNACK reason %d", try.uid, try.token, err, wkproto.ReasonAuthFail)
		}
	}
	// alice still gets her message: nobody took it from her queue.
	alice, err := dial("alice", "t-alice")
	if err != nil {
		t.Fatal(err)
	}
	if r := nextOf[*wkproto.RecvPacket](t, alice); content(t, r) != "for alice only" {
		t.Fatalf("alice got %q", r.Payload)
	}
	// A new token replaces the old one.
	if code, _ := s.api(t, http.MethodPut, "/users/bob/token", adminToken, `{"token":"t-bob-2"}`); code != http.StatusNoContent {
		t.Fatal("token change refused")
	}
	if _, err := dial("bob", "t-bob"); err == nil {
		t.Fatal("bob's old token still logs in")
	}
	if _, err := dial("bob", "t-bob-2"); err != nil {
		t.Fatal(err)
	}
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

// Now returns the clock's time.
func (c *fakeClock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// Advance moves the clock on by d.
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func (s *testServer) waitIdle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	must(t, s.WaitIdle(ctx))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestOfflineQueueIsBoundedForGhostsAndFloods(t *testing.T) {
	clock := newFakeClock()
	const max, ttl = 5, time.Hour
	s := start(t, server.Config{MaxOffline: max, OfflineTTL: ttl, Now: clock.Now})
	s.user(t, "bob")
	s.user(t, "carol")
	alice := s.dial(t, "alice")

	// The attack, 1: messages to a uid that never existed.
	for i := range 3 {
		send(t, alice, "ghost", wkproto.ChannelPerson, fmt.Sprint("boo ", i))
		if ack := nextOf[*wkproto.SendackPacket](t, alice); ack.ReasonCode != wkproto.ReasonChannelNotExist {
			t.Fatalf("SEND to a ghost: SENDACK %+v, want reason %d", ack, wkproto.ReasonChannelNotExist)
		}
	}
	// 2: a flood into a real user's queue keeps only the newest.
	const flood = 12
	for i := range flood {
		send(t, alice, "bob", wkproto.ChannelPerson, fmt.Sprint("m", i))
		if ack := nextOf[*wkproto.SendackPacket](t, alice); ack.ReasonCode != wkproto.ReasonSuccess {
			t.Fatalf("SENDACK %+v", ack)
		}
	}
	s.waitIdle(t)
	if st := s.Stats(); st.Offline != flood || st.OfflineDropped != flood-max {
		t.Fatalf("stats %+v: want %d offline, %d dropped", st, flood, flood-max)
	}
	bob := s.dial(t, "bob")
	for i := flood - max; i < flood; i++ {
		if r := nextOf[*wkproto.RecvPacket](t, bob); content(t, r) != fmt.Sprint("m", i) {
			t.Fatalf("bob's replay: got %q, want m%d", r.Payload, i)
		}
	}
	// 3: messages older than the TTL are dropped.
	for i := range 3 {
		send(t, alice, "carol", wkproto.ChannelPerson, fmt.Sprint("old ", i))
		nextOf[*wkproto.SendackPacket](t, alice)
	}
	// A SENDACK comes from the channel pool; the offline push that queues
	// the message runs after it, in the pusher pool: wait for it, so that
	// the three are queued before the clock moves.
	s.waitIdle(t)
	clock.Advance(ttl + time.Minute)
	send(t, alice, "carol", wkproto.ChannelPerson, "fresh")
	nextOf[*wkproto.SendackPacket](t, alice)
	s.waitIdle(t)
	carol := s.dial(t, "carol")
	if r := nextOf[*wkproto.RecvPacket](t, carol); content(t, r) != "fresh" {
		t.Fatalf("carol's replay: got %q, want only the fresh one", r.Payload)
	}
	if st := s.Stats(); st.OfflineDropped != flood-max+3 {
		t.Fatalf("dropped %d, want %d", st.OfflineDropped, flood-max+3)
	}
	// Nothing else is queued for them: the next RECV is a new message.
	roundTrip(t, alice, bob, "hello bob")
	roundTrip(t, alice, carol, "hello carol")
	ann, ben := s.bystanders(t)
	roundTrip(t, ann, ben, "unaffected")
}

func TestGroupSizeIsBounded(t *testing.T) {
	const max = 100
	s := start(t, server.Config{AdminToken: adminToken, MaxGroupMembers: max, Groups: map[string][]string{"g1": {"by-ann", "by-ben"}}})
	members := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"members":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"m%05d"`, i)
		}
		b.WriteString(`]}`)
		return b.String()
	}
	// The attack: 90 000 members, then just one over the limit.
	for _, n := range []int{90000, max + 1} {
		if code, body := s.api(t, http.MethodPut, "/groups/huge", adminToken, members(n)); code != http.StatusRequestEntityTooLarge {
			t.Fatalf("PUT of %d members: %d %.100s, want 413", n, code, body)
		}
	}
	if _, ok := s.Group("huge"); ok {
		t.Fatal("the huge group exists")
	}
	many := make([]string, max+1)
	for i := range many {
		many[i] = fmt.Sprint("m", i)
	}
	if err := s.SetGroup("huge", many); !errors.Is(err, server.ErrTooLarge) {
		t.Fatalf("SetGroup of %d members: %v, want ErrTooLarge", len(many), err)
	}
	if code, body := s.api(t, http.MethodPut, "/groups/big", adminToken, members(max)); code != http.StatusOK {
		t.Fatalf("PUT of %d members: %d %s", max, code, body)
	}
	ann, ben := s.bystanders(t)
	send(t, ann, "g1", wkproto.ChannelGroup, "still here")
	nextOf[*wkproto.SendackPacket](t, ann)
	if r := nextOf[*wkproto.RecvPacket](t, ben); content(t, r) != "still here" {
		t.Fatalf("ben got %q", r.Payload)
	}
}

func TestGroupCountIsBounded(t *testing.T) {
	const max = 3
	s := start(t, server.Config{AdminToken: adminToken, MaxGroups: max, Groups: map[string][]string{"g0": {"by-ann", "by-ben"}}})
	// The attack: one group after another.
	for i := 1; i < 10; i++ {
		code, body := s.api(t, http.MethodPut, fmt.Sprint("/groups/g", i), adminToken, `{"members":["a","b"]}`)
		want := http.StatusOK
		if i >= max {
			want = http.StatusInsufficientStorage
		}
		if code != want {
			t.Fatalf("PUT group %d of at most %d: %d %s, want %d", i+1, max, code, body, want)
		}
	}
	if _, ok := s.Group(fmt.Sprint("g", max)); ok {
		t.Fatalf("group %d exists", max+1)
	}
	// Replacing a group is not creating one.
	if code, _ := s.api(t, http.MethodPut, "/groups/g1", adminToken, `{"members":["a"]}`); code != http.StatusOK {
		t.Fatalf("replacing g1: %d", code)
	}
	ann, ben := s.bystanders(t)
	send(t, ann, "g0", wkproto.ChannelGroup, "still here")
	nextOf[*wkproto.SendackPacket](t, ann)
	if r := nextOf[*wkproto.RecvPacket](t, ben); content(t, r) != "still here" {
		t.Fatalf("ben got %q", r.Payload)
	}
}

// TestSendFloodIsRateLimited: eight connections send as fast as they
// can. Each is accepted at no more than its rate, and a bystander's round
// trip stays within a small multiple of what it is without the flood.
func TestSendFloodIsRateLimited(t *testing.T) {
	// The bystander, bound by the same limit, sends fewer than burst.
	const rate, burst, flooders = 2, 25, 8
	// Small kernel buffers: the kernel would otherwise take tens of
	// megabytes of the flood, which the flooders, in this process, would
	// spend CPU writing (an attacker's CPU is not the server's).
	s := startOn(t, server.Config{SendRate: rate, SendBurst: burst}, func(ln net.Listener) net.Listener { return smallBuffers{ln} })
	ann, ben := s.bystanders(t)
	var sunk atomic.Int64
	drained := make(chan struct{}) // closed once the sink has the bursts
	s.dial(t, "sink", func(o *wkclient.Options) {
		o.OnPacket = func(p wkproto.Packet) {
			if _, ok := p.(*wkproto.RecvPacket); ok && sunk.Add(1) == flooders*burst {
				close(drained)
			}
		}
	})

	const trips = 11
	var unloaded []time.Duration
	for i := range trips {
		unloaded = append(unloaded, roundTrip(t, ann, ben, fmt.Sprint("quiet ", i)))
	}

	var acked atomic.Int64
	flooding := make(chan struct{}) // closed once the bursts are spent
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	started := time.Now()
	for i := range flooders {
		uid := fmt.Sprint("flood", i)
		s.user(t, uid)
		c, err := wkclient.Dial(ctx, s.url, wkclient.Options{UID: uid, Token: "t-" + uid, HTTPClient: smallBufferClient(t), OnPacket: func(p wkproto.Packet) {
			if a, ok := p.(*wkproto.SendackPacket); ok && a.ReasonCode == wkproto.ReasonSuccess {
				if acked.Add(1) == flooders*burst {
					close(flooding)
				}
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		// Packets built beforehand, 50 to a WebSocket message (the server
		// cuts packets from a stream): the flood costs the test little CPU.
		var packets [][]byte
		for n := range 500 {
			if n%50 == 0 {
				packets = append(packets, nil)
			}
			p := &wkproto.SendPacket{ClientSeq: uint32(n + 1), ClientMsgNo: fmt.Sprintf("%s-%d", uid, n), ChannelID: "sink", ChannelType: wkproto.ChannelPerson}
			c.Cipher().SealSend(p, text("flood"))
			b, _ := wkproto.Encode(p)
			packets[len(packets)-1] = append(packets[len(packets)-1], b...)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.CloseNow() // the server reads it no more: no close handshake
			for n := 0; ctx.Err() == nil; n++ {
				if c.WriteRaw(ctx, packets[n%len(packets)]) != nil {
					return
				}
			}
		}()
	}
	// The flood is on once the burst is spent.
	// Measured once the bursts are spent and delivered: from then on,
	// the flood is as fast as the limit lets it be.
	select {
	case <-flooding:
	case <-time.After(wait):
		t.Fatalf("flood never got going: %d SENDACKs", acked.Load())
	}
	select {
	case <-drained:
	case <-time.After(wait):
		t.Fatalf("the bursts never reached the sink: %d RECVs", sunk.Load())
	}
	s.waitIdle(t) // and handled: the RECVACKs too
	drainedAt := time.Now()
	var loaded []time.Duration
	for i := range trips {
		loaded = append(loaded, roundTrip(t, ann, ben, fmt.Sprint("loud ", i)))
	}
	elapsed := time.Since(started)
	n := acked.Load()
	cancel()
	wg.Wait()

	// Accepted: at most each connection's burst and rate over the time.
	if limit := int64(flooders * (burst + rate*elapsed.Seconds() + 1)); n > limit {
		t.Fatalf("%d SENDs of the flood accepted in %v, limit %d", n, elapsed, limit)
	}
	u, l := median(unloaded), median(loaded)
	t.Logf("bystander round trip: p50 %v alone, %v under the flood (%d SENDs accepted in %v, the bursts drained in %v)", u, l, n, elapsed, drainedAt.Sub(started))
	if l > 50*u { // unlimited, it was over 300 times (2 s a round trip here)
		t.Fatalf("bystander's p50 round trip went from %v to %v under the flood", u, l)
	}
}

func TestSlowReaderIsClosedAtItsByteLimit(t *testing.T) {
	const limit = 256 << 10
	// Small kernel buffers on both sides, so that the server's outbound
	// queue fills after a few messages (the kernel would take megabytes).
	s := startOn(t, server.Config{MaxOutboundBytes: limit, MaxUnacked: 1 << 20, SendRate: 1e6, SendBurst: 1e6},
		func(ln net.Listener) net.Listener { return smallBuffers{ln} })
	s.dial(t, "slow", func(o *wkclient.Options) { o.Stalled, o.HTTPClient = true, smallBufferClient(t) })
	alice := s.dial(t, "alice")
	big := strings.Repeat("x", 46<<10) // about 62 KiB once encrypted
	// The attack: a receiver that never reads while messages pile up for
	// it. TCP buffers take some first; then the outbound queue fills.
	for n := 0; s.Stats().SlowClosed == 0; n++ {
		if n == 1000 {
			t.Fatalf("sent %d messages of %d bytes, the slow reader is still open", n, len(big))
		}
		send(t, alice, "slow", wkproto.ChannelPerson, big)
		nextOf[*wkproto.SendackPacket](t, alice)
		if n%16 == 15 {
			s.waitIdle(t)
		}
	}
	ann, ben := s.bystanders(t)
	roundTrip(t, ann, ben, "unaffected")
	roundTrip(t, alice, ann, "the sender too")
	t.Logf("closed after %d RECVs queued", s.Stats().Delivered)
	logs := s.closeLogs(t)
	m := regexp.MustCompile(`slow client: outbound queue full \((\d+) packets, (\d+) bytes waiting\)`).FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no slow-client close in the log")
	}
	if b, _ := strconv.Atoi(m[2]); b > limit {
		t.Fatalf("%s bytes waited, limit %d", m[2], limit)
	}
}

func TestTrickledConnectHitsTheLoginDeadline(t *testing.T) {
	const deadline = 300 * time.Millisecond
	s := start(t, server.Config{ConnectTimeout: deadline})
	s.user(t, "slowpoke")
	keys, err := wkproto.GenerateKey(nil)
	must(t, err)
	connect, err := wkproto.Encode(&wkproto.ConnectPacket{Version: wkproto.Version, DeviceFlag: 1, DeviceID: "d",
		UID: "slowpoke", Token: "t-slowpoke", ClientKey: keys.PublicBase64()})
	must(t, err)
	ws, _, err := websocket.Dial(t.Context(), s.url, nil)
	must(t, err)
	defer ws.CloseNow()
	// The attack: a valid CONNECT, one byte per message, each well within
	// the deadline, the whole far beyond it.
	const every = deadline / 4
	var sent atomic.Int64
	done := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		tick := time.NewTicker(every) // the attacker's pace
		defer tick.Stop()
		for _, b := range connect {
			if ws.Write(context.Background(), websocket.MessageBinary, []byte{b}) != nil {
				return
			}
			sent.Add(1)
			select {
			case <-tick.C:
			case <-done:
				return
			}
		}
	}()
	_, _, err = ws.Read(t.Context())
	close(done)
	<-trickled
	if n := sent.Load(); n >= int64(len(connect)) {
		t.Fatalf("the whole trickled CONNECT (%d bytes over %v) was read: %v", n, time.Duration(n)*every, err)
	}
	if err == nil {
		t.Fatal("the server sent something before login")
	}
	ann, ben := s.bystanders(t)
	roundTrip(t, ann, ben, "unaffected")
	// The read's deadline drops the connection: the reason is in the log.
	if logs := s.closeLogs(t); !strings.Contains(logs, "no CONNECT within "+deadline.String()) {
		t.Fatalf("log lacks the login deadline (client saw %v)", err)
	}
}

func TestReplayedSendIsAnsweredOnceAndDeliveredOnce(t *testing.T) {
	s := start(t, server.Config{})
	alice, bob := s.dial(t, "alice"), s.dial(t, "bob")
	p := &wkproto.SendPacket{ClientSeq: 7, ClientMsgNo: "replay-me", ChannelID: "bob", ChannelType: wkproto.ChannelPerson}
	alice.Cipher().SealSend(p, text("pay you 100"))
	b, err := wkproto.Encode(p)
	must(t, err)
	must(t, alice.WriteRaw(t.Context(), b))
	first := nextOf[*wkproto.SendackPacket](t, alice)
	if r := nextOf[*wkproto.RecvPacket](t, bob); content(t, r) != "pay you 100" {
		t.Fatalf("bob got %q", r.Payload)
	}
	// The attack: the same bytes again.
	must(t, alice.WriteRaw(t.Context(), b))
	if again := nextOf[*wkproto.SendackPacket](t, alice); *again != *first {
		t.Fatalf("replay's SENDACK %+v, want the first's %+v", again, first)
	}
	// As the SDK does after a reconnect: the same message sent again on a
	// new connection (a new key), under a new client sequence.
	alice2 := s.dial(t, "alice")
	p2 := &wkproto.SendPacket{ClientSeq: 1, ClientMsgNo: "replay-me", ChannelID: "bob", ChannelType: wkproto.ChannelPerson}
	alice2.Cipher().SealSend(p2, text("pay you 100"))
	must(t, alice2.WritePacket(t.Context(), p2))
	if again := nextOf[*wkproto.SendackPacket](t, alice2); again.MessageID != first.MessageID || again.MessageSeq != first.MessageSeq || again.ClientSeq != 1 {
		t.Fatalf("resend's SENDACK %+v, want the first's %+v with clientSeq 1", again, first)
	}
	// bob's next RECV is the next message, not a copy.
	roundTrip(t, alice2, bob, "that was all")
	if d := s.Stats().Duplicates; d != 2 {
		t.Fatalf("duplicates %d, want 2", d)
	}
}

func TestForeignOriginIsRefused(t *testing.T) {
	s := start(t, server.Config{Origins: []string{"chat.example.com"}})
	s.user(t, "mallory")
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	// The attack: a page of another site opens the WebSocket in a
	// visitor's browser.
	_, err := wkclient.Dial(ctx, s.url, wkclient.Options{UID: "mallory", Token: "t-mallory",
		Header: http.Header{"Origin": {"https://evil.example"}}})
	var de *wkclient.DialError
	if !errors.As(err, &de) || de.Status != http.StatusForbidden {
		t.Fatalf("foreign origin: %v, want HTTP 403", err)
	}
	ok := s.dial(t, "mallory", func(o *wkclient.Options) { o.Header = http.Header{"Origin": {"https://chat.example.com"}} })
	ann, ben := s.bystanders(t) // no Origin, as apps and Node
	roundTrip(t, ann, ben, "unaffected")
	roundTrip(t, ok, ann, "from the allowed page")
}

func TestLongIDsAreRefused(t *testing.T) {
	s := start(t, server.Config{AdminToken: adminToken})
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	// The attack: a 65 000-byte uid, whose RECVs would be larger than
	// the largest packet.
	long := strings.Repeat("u", 65000)
	_, err := wkclient.Dial(ctx, s.url, wkclient.Options{UID: long, Token: "t"})
	var ce *wkclient.ConnectError
	if !errors.As(err, &ce) || ce.Reason != wkproto.ReasonAuthFail {
		t.Fatalf("65 000-byte uid: %v, want CONNACK reason %d", err, wkproto.ReasonAuthFail)
	}
	if code, _ := s.api(t, http.MethodPut, "/users/"+strings.Repeat("u", 65)+"/token", adminToken, `{"token":"t"}`); code != http.StatusBadRequest {
		t.Fatalf("token for a 65-byte uid: %d, want 400", code)
	}
	if code, _ := s.api(t, http.MethodPut, "/groups/g1", adminToken, `{"members":["`+strings.Repeat("m", 65)+`"]}`); code != http.StatusBadRequest {
		t.Fatalf("group with a 65-byte member: %d, want 400", code)
	}
	ann, ben := s.bystanders(t)
	// A long channel id.
	send(t, ann, strings.Repeat("c", 65000-200), wkproto.ChannelGroup, "x")
	if ack := nextOf[*wkproto.SendackPacket](t, ann); ack.ReasonCode != wkproto.ReasonChannelNotExist {
		t.Fatalf("long channel id: SENDACK %+v", ack)
	}
	// A SEND that fits while its RECV, which adds the sender's uid and
	// ids, would not: from a sender with the longest uid allowed.
	longest := strings.Repeat("s", 64)
	sender := s.dial(t, longest)
	const maxBody = 64 << 10
	var p *wkproto.SendPacket
	// Near the limit (4 base64 bytes per 3 of plaintext), in steps
	// shorter than the gap between the two sizes.
	for n := 48600; ; n += 12 {
		p = &wkproto.SendPacket{ClientSeq: 1, ClientMsgNo: "big", ChannelID: "by-ben", ChannelType: wkproto.ChannelPerson}
		sender.Cipher().SealSend(p, text(strings.Repeat("y", n)))
		sb, _ := wkproto.Encode(p)
		rb, _ := wkproto.Encode(&wkproto.RecvPacket{MsgKey: p.MsgKey, FromUID: longest, ChannelID: longest,
			ChannelType: p.ChannelType, ClientMsgNo: p.ClientMsgNo, Payload: p.Payload})
		if len(sb)-4 <= maxBody && len(rb)-4 > maxBody {
			break
		}
		if len(sb)-4 > maxBody {
			t.Fatal("found no SEND that fits whose RECV does not")
		}
	}
	must(t, sender.WritePacket(t.Context(), p))
	if ack := nextOf[*wkproto.SendackPacket](t, sender); ack.ReasonCode == wkproto.ReasonSuccess {
		t.Fatalf("SEND accepted whose RECV is over the %d-byte limit", maxBody)
	}
	roundTrip(t, sender, ben, "the sender still talks")
	roundTrip(t, ann, ben, "unaffected")
}

// smallBuffers gives every accepted TCP connection small kernel buffers.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(8 << 10)
		_ = tc.SetReadBuffer(8 << 10)
	}
	return c, err
}

// smallBufferClient dials with small kernel buffers (set before connect,
// so that the TCP window stays small).
func smallBufferClient(t *testing.T) *http.Client {
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = errors.Join(syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10),
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4<<10))
		})
		return errors.Join(err, serr)
	}}
	tr := &http.Transport{DialContext: dialer.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestDuplicatesInFlightGetTheFirstSendack sends a SEND and four copies
// in one WebSocket message, so that the copies arrive before the first's
// SENDACK exists: each gets that SENDACK, and the message is delivered
// once.
func TestDuplicatesInFlightGetTheFirstSendack(t *testing.T) {
	s := start(t, server.Config{})
	alice, bob := s.dial(t, "alice"), s.dial(t, "bob")
	var stream []byte
	for i := range 5 {
		p := &wkproto.SendPacket{ClientSeq: uint32(10 + i), ClientMsgNo: "once", ChannelID: "bob", ChannelType: wkproto.ChannelPerson}
		alice.Cipher().SealSend(p, text("just once"))
		b, err := wkproto.Encode(p)
		must(t, err)
		stream = append(stream, b...)
	}
	must(t, alice.WriteRaw(t.Context(), stream))
	first := nextOf[*wkproto.SendackPacket](t, alice)
	seqs := map[uint32]bool{first.ClientSeq: true}
	for range 4 {
		ack := nextOf[*wkproto.SendackPacket](t, alice)
		if ack.MessageID != first.MessageID || ack.MessageSeq != first.MessageSeq || ack.ReasonCode != wkproto.ReasonSuccess {
			t.Fatalf("copy's SENDACK %+v, want the first's %+v", ack, first)
		}
		seqs[ack.ClientSeq] = true
	}
	if len(seqs) != 5 {
		t.Fatalf("SENDACKs answered client sequences %v, want 10 to 14", seqs)
	}
	if r := nextOf[*wkproto.RecvPacket](t, bob); content(t, r) != "just once" {
		t.Fatalf("bob got %q", r.Payload)
	}
	roundTrip(t, alice, bob, "next") // not a copy of the first
}

// TestDuplicateWindowUnderConcurrentSenders: five users send into a group
// at once, each message twice in a row; every member gets every message
// exactly once, and every SEND is answered.
func TestDuplicateWindowUnderConcurrentSenders(t *testing.T) {
	users := []string{"u0", "u1", "u2", "u3", "u4"}
	s := start(t, server.Config{Groups: map[string][]string{"g": users}})
	const perSender = 30
	var mu sync.Mutex
	got := map[string]map[string]int{} // receiver → content → times
	acks := map[string]int{}
	var all sync.WaitGroup
	all.Add(len(users)*perSender*(len(users)-1) + len(users)*perSender*2)
	clients := map[string]*wkclient.Client{}
	for _, u := range users {
		got[u] = map[string]int{}
		clients[u] = s.dial(t, u, func(o *wkclient.Options) {
			o.OnPacket = func(p wkproto.Packet) {
				mu.Lock()
				defer mu.Unlock()
				switch p := p.(type) {
				case *wkproto.RecvPacket:
					var body struct{ Content string }
					_ = json.Unmarshal(p.Payload, &body)
					got[u][body.Content]++
				case *wkproto.SendackPacket:
					acks[u]++
				default:
					return
				}
				all.Done()
			}
		})
	}
	var senders sync.WaitGroup
	for _, u := range users {
		senders.Add(1)
		go func() {
			defer senders.Done()
			c := clients[u]
			for n := range perSender {
				p := &wkproto.SendPacket{ClientSeq: uint32(n + 1), ClientMsgNo: fmt.Sprint(u, "-", n), ChannelID: "g", ChannelType: wkproto.ChannelGroup}
				c.Cipher().SealSend(p, text(fmt.Sprint(u, " ", n)))
				for range 2 {
					if err := c.WritePacket(t.Context(), p); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	senders.Wait()
	done := make(chan struct{})
	go func() { all.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("not everything arrived; stats %+v", s.Stats())
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range users {
		for _, from := range users {
			for n := range perSender {
				want := 1
				if from == r {
					want = 0
				}
				if k := got[r][fmt.Sprint(from, " ", n)]; k != want {
					t.Fatalf("%s got %s's #%d %d times, want %d", r, from, n, k, want)
				}
			}
		}
	}
	if d := s.Stats().Duplicates; d != int64(len(users)*perSender) {
		t.Fatalf("duplicates %d, want %d", d, len(users)*perSender)
	}
}

// TestUserSendRateSurvivesReconnects: a user who spent the burst does not
// get a new one by logging in again.
func TestUserSendRateSurvivesReconnects(t *testing.T) {
	const burst, perSecond = 5, 2
	s := start(t, server.Config{UserSendRate: perSecond, UserSendBurst: burst, SendRate: 1e6, SendBurst: 1e6})
	bob := s.dial(t, "bob")
	alice := s.dial(t, "alice")
	for i := range burst {
		roundTrip(t, alice, bob, fmt.Sprint("burst ", i))
	}
	alice2 := s.dial(t, "alice") // kicks the first: a fresh connection
	start := time.Now()
	roundTrip(t, alice2, bob, "one more")
	// Its token comes 1/perSecond after the burst was spent: a lower
	// bound, which a slow machine only makes longer.
	if d := time.Since(start); d < time.Second/perSecond/2 {
		t.Fatalf("the SEND after a reconnect went through in %v: the burst was refilled", d)
	}
}

func TestConnectionCountIsBounded(t *testing.T) {
	s := start(t, server.Config{MaxConnections: 2})
	ann, ben := s.bystanders(t)
	_, err := s.tryDial(t, "third")
	var de *wkclient.DialError
	if !errors.As(err, &de) || de.Status != http.StatusServiceUnavailable {
		t.Fatalf("third connection: %v, want HTTP 503", err)
	}
	roundTrip(t, ann, ben, "unaffected")
	if n := s.Stats().RefusedConns; n != 1 {
		t.Fatalf("refused %d, want 1", n)
	}
}
