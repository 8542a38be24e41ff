package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/imbus/eventbus/examples/wkim/wkclient"
	"github.com/imbus/eventbus/examples/wkim/wkproto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRun starts the command on a free port with a group from the flags,
// has two clients talk in it, and stops it by cancelling its context.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr strings.Builder
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"-addr", "127.0.0.1:0", "-group", "g1=alice, bob", "-token", "s3cret"}, outW, &stderr)
		outW.CloseWithError(err)
		done <- err
	}()
	lines := bufio.NewScanner(outR)
	if !lines.Scan() {
		t.Fatalf("no output: %v", <-done)
	}
	url, ok := strings.CutPrefix(lines.Text(), "wkim listening on ")
	if !ok {
		t.Fatalf("first line %q", lines.Text())
	}
	if !lines.Scan() || lines.Text() != "group g1: alice,bob" {
		t.Fatalf("second line %q", lines.Text())
	}

	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	if _, err := wkclient.Dial(dctx, url, wkclient.Options{UID: "alice", Token: "wrong"}); err == nil {
		t.Fatal("login with the wrong -token succeeded")
	}
	alice, err := wkclient.Dial(dctx, url, wkclient.Options{UID: "alice", Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := wkclient.Dial(dctx, url, wkclient.Options{UID: "bob", Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if _, err := alice.Send(dctx, "g1", wkproto.ChannelGroup, []byte(`{"content":"hi","type":1}`)); err != nil {
		t.Fatal(err)
	}
	p, err := bob.Next(dctx)
	if r, ok := p.(*wkproto.RecvPacket); err != nil || !ok || string(r.Payload) != `{"content":"hi","type":1}` {
		t.Fatalf("bob got %+v, %v", p, err)
	}

	cancel()
	var rest []string
	for lines.Scan() {
		rest = append(rest, lines.Text())
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(rest) != 1 || !strings.HasPrefix(rest[0], "wkim stopped: sent=1 delivered=1 ") {
		t.Fatalf("last lines %q", rest)
	}
	if strings.Contains(stderr.String(), "level=ERROR") {
		t.Fatalf("errors logged:\n%s", stderr.String())
	}
}

func TestGroupFlag(t *testing.T) {
	g := groupFlag{}
	for _, v := range []string{"g1=a,b", "g1=c", "g2= x , ,y"} {
		if err := g.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	if strings.Join(g["g1"], ",") != "a,b,c" || strings.Join(g["g2"], ",") != "x,y" {
		t.Fatalf("groups %v", g)
	}
	for _, bad := range []string{"nogroup", "=a,b"} {
		if err := g.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}
