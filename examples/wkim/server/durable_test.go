package server_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/imbus/eventbus/examples/wkim/server"
	"github.com/imbus/eventbus/examples/wkim/wkclient"
	"github.com/imbus/eventbus/examples/wkim/wkproto"
	"github.com/imbus/eventbus/journal"
)

// login logs uid in with the token "t-"+uid without setting it first:
// after a restart, the token must come from the journal.
func (s *testServer) login(t *testing.T, uid string) *wkclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	c, err := wkclient.Dial(ctx, s.url, wkclient.Options{UID: uid, Token: "t-" + uid})
	if err != nil {
		t.Fatalf("login %s: %v", uid, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitAcked waits until the server has handled n RECVACKs: a client
// acknowledges a RECV before it hands it over, and the server reads the
// RECVACK later; one not handled before Close is delivered again.
func (s *testServer) waitAcked(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for s.Stats().Acked < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d RECVACKs handled, want %d", s.Stats().Acked, n)
		}
		s.waitIdle(t)
		time.Sleep(time.Millisecond) // the RECVACKs are still on the wire
	}
}

// sendOK sends and returns the SENDACK, which must be a success.
func sendOK(t *testing.T, c *wkclient.Client, channel string, typ uint8, msg string) *wkproto.SendackPacket {
	t.Helper()
	seq := send(t, c, channel, typ, msg)
	for {
		if ack, ok := next(t, c).(*wkproto.SendackPacket); ok && ack.ClientSeq == seq {
			if ack.ReasonCode != wkproto.ReasonSuccess {
				t.Fatalf("%s: SENDACK %+v", msg, ack)
			}
			return ack
		}
	}
}

// TestDurableRestartKeepsQueuesTokensGroupsAndSequences closes a durable
// server and starts another on its directory: the offline queues come
// back in order with their MessageIDs and sequences (those past
// MaxOffline stay dropped), acknowledged messages do not come back, the
// login tokens and the group set through the API still hold, and each
// channel's sequence goes on past every number handed out before.
func TestDurableRestartKeepsQueuesTokensGroupsAndSequences(t *testing.T) {
	dir := t.TempDir()
	cfg := server.Config{Durable: dir, MaxOffline: 4}
	s1 := start(t, cfg)
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		s1.user(t, u)
	}
	must(t, s1.SetGroup("g", []string{"alice", "bob", "carol"}))
	alice, carol := s1.login(t, "alice"), s1.login(t, "carol")

	type sent struct {
		msg string
		ack *wkproto.SendackPacket
	}
	var toBob []sent // bob is offline: two person, two group messages
	for i := range 2 {
		for _, ch := range []struct {
			id  string
			typ uint8
		}{{"bob", wkproto.ChannelPerson}, {"g", wkproto.ChannelGroup}} {
			msg := fmt.Sprintf("%s %d", ch.id, i)
			toBob = append(toBob, sent{msg, sendOK(t, alice, ch.id, ch.typ, msg)})
		}
	}
	for i := range 6 { // dave is offline; his queue keeps the newest 4
		sendOK(t, alice, "dave", wkproto.ChannelPerson, fmt.Sprint("dave ", i))
	}
	for range 2 { // carol is online: she receives and acknowledges the group's
		nextOf[*wkproto.RecvPacket](t, carol)
	}
	s1.waitAcked(t, 2) // carol's
	s1.closeLogs(t)

	s2 := start(t, cfg)
	if st := s2.Stats(); st.Journals == nil || st.Journals["server"].Pending == 0 {
		t.Fatalf("journal stats %+v", st.Journals)
	}
	if _, err := wkclient.Dial(t.Context(), s2.url, wkclient.Options{UID: "bob", Token: "wrong"}); err == nil {
		t.Fatal("bob logged in with a wrong token after the restart")
	}
	bob := s2.login(t, "bob") // his token survived
	for _, want := range toBob {
		r := nextOf[*wkproto.RecvPacket](t, bob)
		if got := content(t, r); got != want.msg || r.MessageID != want.ack.MessageID || r.MessageSeq != want.ack.MessageSeq {
			t.Fatalf("bob's replay: %q id %d seq %d, want %q id %d seq %d",
				got, r.MessageID, r.MessageSeq, want.msg, want.ack.MessageID, want.ack.MessageSeq)
		}
	}
	dave := s2.login(t, "dave")
	for i := 2; i < 6; i++ {
		if r := nextOf[*wkproto.RecvPacket](t, dave); content(t, r) != fmt.Sprint("dave ", i) {
			t.Fatalf("dave's replay: %q, want dave %d", content(t, r), i)
		}
	}
	alice2, carol2 := s2.login(t, "alice"), s2.login(t, "carol")
	// The group survived, and its sequence goes on past the first life's.
	ack := sendOK(t, alice2, "g", wkproto.ChannelGroup, "after")
	if last := toBob[len(toBob)-1].ack.MessageSeq; ack.MessageSeq <= last {
		t.Fatalf("group seq %d after the restart, the first life reached %d", ack.MessageSeq, last)
	}
	for _, c := range []*wkclient.Client{bob, carol2} { // carol's acknowledged ones do not come back
		if r := nextOf[*wkproto.RecvPacket](t, c); content(t, r) != "after" || r.MessageSeq != ack.MessageSeq {
			t.Fatalf("%s: %q seq %d, want the new message, seq %d", c.UID, content(t, r), r.MessageSeq, ack.MessageSeq)
		}
	}
	s2.waitAcked(t, 4+4+2) // bob's, dave's, "after" by bob and carol
	s2.closeLogs(t)

	// Everything was acknowledged: a third life replays nothing.
	s3 := start(t, cfg)
	alice3, bob3 := s3.login(t, "alice"), s3.login(t, "bob")
	roundTrip(t, alice3, bob3, "third life")
	s3.waitAcked(t, 1)
	s3.closeLogs(t)
	j, err := journal.Open(filepath.Join(dir, "server"))
	must(t, err)
	defer j.Close()
	pending := map[uint8]int{}
	must(t, j.Replay(func(r journal.Record) error { pending[r.Type]++; return nil }))
	// Type 1 is a delivery (durable.go): none is left. The others: 4
	// tokens, 1 group, a sequence reservation per channel (3).
	if pending[1] != 0 || len(pending) != 3 || pending[2]+pending[3]+pending[4] != 8 {
		t.Fatalf("server journal after the third life: records by type %v", pending)
	}
}
