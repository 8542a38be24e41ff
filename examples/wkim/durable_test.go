package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus/examples/wkim/wkclient"
	"github.com/imbus/eventbus/examples/wkim/wkproto"
)

// process is the wkim binary running in a child process.
type process struct {
	cmd     *exec.Cmd
	url     string // ws://host:port
	stderr  *syncBuffer
	drained chan struct{} // stdout read to its end
}

// buildBinary builds the command into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wkim")
	out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startProcess runs bin with args on a free port and returns once it
// prints its address.
func startProcess(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	p := &process{stderr: &syncBuffer{}, drained: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	p.cmd.Stderr = p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	go func() {
		defer close(p.drained)
		_, _ = io.Copy(io.Discard, r)
	}()
	if err != nil {
		_ = p.cmd.Process.Kill()
		<-p.drained
		_ = p.cmd.Wait()
		t.Fatalf("no address printed: %v\n%s", err, p.stderr)
	}
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "wkim listening on ")
	if !ok {
		t.Fatalf("first line %q", line)
	}
	p.url = url
	return p
}

// kill sends SIGKILL: no Close, no flush.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.drained
	_ = p.cmd.Wait()
}

// stop shuts the process down with SIGINT and returns its exit error.
func (p *process) stop() error {
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		return err
	}
	<-p.drained
	return p.cmd.Wait()
}

func (p *process) put(t *testing.T, admin, path, body string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+strings.TrimPrefix(p.url, "ws://")+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("PUT %s: %s", path, resp.Status)
	}
}

// acked is a message that got a successful SENDACK.
type acked struct {
	id      int64  // MessageID from the SENDACK
	channel string // as the receiver sees it: the sender (person) or the group
	to      []string
}

// recv is a RECV as a receiver got it.
type recv struct {
	id      int64
	seq     uint32
	channel string
	payload string
}

// receiver collects the RECVs of one logged-in user.
type receiver struct {
	mu   sync.Mutex
	got  []recv
	wake chan struct{}
}

func newReceiver() *receiver { return &receiver{wake: make(chan struct{}, 1)} }

func (r *receiver) onPacket(p wkproto.Packet) {
	if m, ok := p.(*wkproto.RecvPacket); ok {
		r.mu.Lock()
		r.got = append(r.got, recv{m.MessageID, m.MessageSeq, m.ChannelID, string(m.Payload)})
		r.mu.Unlock()
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

func (r *receiver) snapshot() []recv {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recv(nil), r.got...)
}

// TestDurableKill9LosesNoAcknowledgedMessage runs the server binary with
// -durable, has four senders send flat out (each waits for its SENDACK)
// to a receiver online, one offline and a group of both, kills the
// process with SIGKILL mid-run, and restarts it on the same directory
// without setting tokens or the group again. Logged in again, the
// receivers get every message that got a successful SENDACK (the online
// one: in the first life or after the restart), under the MessageID of
// its SENDACK, each channel's in order. A message may come again after
// the restart (its acknowledgement was lost with the process), always
// under the same MessageID, so a client drops it by MessageID: the check
// drops MessageIDs seen before, then wants every channel in sequence order
// and every sender's messages in the order sent.
func TestDurableKill9LosesNoAcknowledgedMessage(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	const admin = "admin-token-0123456789"
	args := []string{"-durable", dir, "-admin-token", admin, "-send-rate", "100000", "-send-burst", "1000",
		"-user-send-rate", "100000", "-user-send-burst", "1000"}
	senders := []string{"s0", "s1", "s2", "s3"}
	const killAfter = 200 // successful SENDACKs before the kill

	first := startProcess(t, bin, args...)
	killed := false
	defer func() {
		if !killed {
			first.kill()
		}
	}()
	for _, u := range append([]string{"r0", "r1"}, senders...) {
		first.put(t, admin, "/users/"+u+"/token", `{"token":"t-`+u+`"}`)
	}
	first.put(t, admin, "/groups/g", `{"members":["s0","s1","s2","s3","r0","r1"]}`)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // the first life
	defer cancel()
	dial := func(ctx context.Context, url, uid string, onPacket func(wkproto.Packet)) *wkclient.Client {
		t.Helper()
		c, err := wkclient.Dial(ctx, url, wkclient.Options{UID: uid, Token: "t-" + uid, OnPacket: onPacket})
		if err != nil {
			t.Fatalf("login %s: %v", uid, err)
		}
		return c
	}
	online1 := newReceiver() // r0 in the first life; r1 stays offline
	r0 := dial(ctx, first.url, "r0", online1.onPacket)
	defer r0.CloseNow()

	var mu sync.Mutex
	sent := map[string]acked{} // payload → its SENDACK
	progress := make(chan struct{}, killAfter)
	var wg sync.WaitGroup
	for i, uid := range senders {
		c := dial(ctx, first.url, uid, nil)
		defer c.CloseNow()
		// Each sender keeps up to window SENDs waiting for their SENDACK,
		// until the server is gone. Its client numbers SENDs 1, 2, ...
		const window = 8
		slots := make(chan struct{}, window)
		var pmu sync.Mutex
		pending := map[uint32]struct {
			payload string
			a       acked
		}{}
		readerDone := make(chan struct{})
		wg.Add(2)
		go func() { // SENDACKs
			defer wg.Done()
			defer close(readerDone)
			for {
				p, err := c.Next(ctx)
				if err != nil {
					return // the server is gone
				}
				a, ok := p.(*wkproto.SendackPacket)
				if !ok {
					continue // a RECV of the group
				}
				pmu.Lock()
				m, found := pending[a.ClientSeq]
				delete(pending, a.ClientSeq)
				pmu.Unlock()
				if !found || a.ReasonCode != wkproto.ReasonSuccess {
					t.Errorf("%s: SENDACK %+v for no SEND waiting, or failed", uid, a)
					return
				}
				m.a.id = a.MessageID
				mu.Lock()
				sent[m.payload] = m.a
				mu.Unlock()
				<-slots
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
		go func() { // SENDs
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case slots <- struct{}{}:
				case <-readerDone:
					return
				}
				to, typ, a := "r0", wkproto.ChannelPerson, acked{channel: uid, to: []string{"r0"}}
				switch k % 3 {
				case 1:
					to, a.to = "r1", []string{"r1"}
				case 2:
					to, typ, a = "g", wkproto.ChannelGroup, acked{channel: "g", to: []string{"r0", "r1"}}
				}
				payload := fmt.Sprintf("s%d-%d", i, k)
				pmu.Lock()
				pending[uint32(k+1)] = struct {
					payload string
					a       acked
				}{payload, a}
				pmu.Unlock()
				if seq, err := c.Send(ctx, to, typ, []byte(payload)); err != nil {
					return // the server is gone
				} else if seq != uint32(k+1) {
					t.Errorf("%s: SEND %d got client sequence %d", uid, k+1, seq)
					return
				}
			}
		}()
	}
	for range killAfter {
		select {
		case <-progress:
		case <-ctx.Done():
			t.Fatalf("%d SENDACKs before the deadline:\n%s", len(sent), first.stderr)
		}
	}
	first.kill() // mid-run: every sender is still sending
	killed = true
	wg.Wait()
	r0.CloseNow()
	life1 := online1.snapshot()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d messages got a successful SENDACK before the kill; r0 got %d RECVs", len(sent), len(life1))

	ctx2, cancel2 := context.WithTimeout(t.Context(), 20*time.Second) // the second life
	defer cancel2()
	second := startProcess(t, bin, args...)
	defer func() {
		if second != nil {
			second.kill()
		}
	}()
	got := map[string]*receiver{"r0": newReceiver(), "r1": newReceiver()}
	for uid, r := range got {
		c := dial(ctx2, second.url, uid, r.onPacket) // the tokens survived
		defer c.CloseNow()
	}
	want := map[string]map[string]bool{"r0": {}, "r1": {}} // receiver → payloads
	for payload, a := range sent {
		for _, uid := range a.to {
			want[uid][payload] = true
		}
	}
	missing := func(uid string, life2 []recv) []string {
		have := map[string]bool{}
		for _, m := range life2 {
			have[m.payload] = true
		}
		if uid == "r0" {
			for _, m := range life1 {
				have[m.payload] = true
			}
		}
		var miss []string
		for p := range want[uid] {
			if !have[p] {
				miss = append(miss, p)
			}
		}
		return miss
	}
	for uid, r := range got {
		for len(missing(uid, r.snapshot())) > 0 {
			select {
			case <-r.wake:
			case <-ctx2.Done():
				t.Fatalf("%s: %d acknowledged messages not delivered after the restart, e.g. %v\n%s",
					uid, len(missing(uid, r.snapshot())), missing(uid, r.snapshot())[:1], second.stderr)
			}
		}
	}

	for uid, r := range got {
		seen := map[int64]bool{}
		var msgs []recv
		if uid == "r0" {
			msgs = append(msgs, life1...)
		}
		msgs = append(msgs, r.snapshot()...)
		lastSeq := map[string]uint32{}
		lastK := map[string]int{}
		firstID := map[string]int64{}
		for _, m := range msgs {
			if a, ok := sent[m.payload]; ok && a.id != m.id {
				t.Fatalf("%s: %s came with MessageID %d, its SENDACK said %d", uid, m.payload, m.id, a.id)
			}
			if id, ok := firstID[m.payload]; ok && id != m.id {
				t.Fatalf("%s: %s came as MessageID %d and %d: not a duplicate a client can drop", uid, m.payload, id, m.id)
			}
			firstID[m.payload] = m.id
			if seen[m.id] {
				continue // a duplicate: dropped by MessageID
			}
			seen[m.id] = true
			if m.seq <= lastSeq[m.channel] {
				t.Fatalf("%s: channel %s: seq %d after %d", uid, m.channel, m.seq, lastSeq[m.channel])
			}
			lastSeq[m.channel] = m.seq
			var i, k int
			if _, err := fmt.Sscanf(m.payload, "s%d-%d", &i, &k); err != nil {
				t.Fatalf("%s: payload %q", uid, m.payload)
			}
			key := m.channel + "/" + senders[i]
			if last, ok := lastK[key]; ok && k <= last {
				t.Fatalf("%s: channel %s: %s after message %d of the same sender", uid, m.channel, m.payload, last)
			}
			lastK[key] = k
		}
	}
	if err := second.stop(); err != nil {
		t.Fatalf("graceful stop after the restart: %v\n%s", err, second.stderr)
	}
	second = nil
}
