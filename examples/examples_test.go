package examples_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// goTool returns the go command: the one on PATH, else the one of the
// toolchain that built the test.
func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	name := "go"
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	//lint:ignore SA1019 only a fallback when go is not on PATH
	p := filepath.Join(runtime.GOROOT(), "bin", name)
	if !fileExists(p) {
		t.Fatal("no go command found: put go on PATH to run the examples")
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestExamples builds every demo once and runs each, checking the lines
// that show it worked, so that a broken demo fails CI.
func TestExamples(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goTool(t), "build", "-o", dir+string(filepath.Separator), "./im", "./abtest", "./retry", "./durable")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	tests := []struct {
		name string
		want []string
	}{
		{"im", []string{
			`mallory  <- CONNACK auth failed`,
			`alice    <- SENDACK alice-2 g1 rejected: banned word "spam"`,
			`bob      <- RECV g1 seq=2 id=2 from alice "lunch at noon?"`,
			"writes tried: bob 2 (one failed, one retry), carol 1; pusher retries: 1\n",
			`carol    <- RECV g1 seq=3 id=4 from alice "can you all read me?"`,
			`carol    <~ offline push: g1 seq=4 from bob "yes, noon"`,
			"TryAddEvent: 64 archive events accepted (one shard holds QueueSize = 64), the next one: eventbus: queue full\n",
			"AddEvent waits for room, until its ctx ends: eventbus: queue full: context deadline exceeded\n",
			"user pool: 2000 heartbeats handled while the channel pool is stuck: true\n",
			"database back: 64 archive events stored, none lost\n",
			"2000 messages one at a time: latency p50=",
			"5000 messages in a burst: latency p50=",
			"stored: 100, RECV frames written: 1900, posted to the webhook: 100\n",
			"the webhook got each user's messages one at a time, in send order: true\n",
			"storage and push finished before the webhook, without waiting for it: true\n",
			`RECV acknowledged: 8908, waiting for RECVACK: 0`,
			"stats subscriber: 7106 SEND frames from 22 users",
			`every receiver saw each channel in sequence order: true`,
			"  user                 4  25168    25166        2       0        0     0       0         0\n",
			"  channel              4   7169     7169        0       0        0     0       0         0\n",
			"  pusher               4   8913     8913        0       1        1     0       0         0\n",
			"  OnSend/stats         4   7106     7106        0       0        0     0       0         0\n",
			"  OnSend/webhook      32    100      100        0       0        0     0       0         0\n",
			`added = handled + stopped + dead): true`,
			"bus closed cleanly\n",
		}},
		{"abtest", []string{
			"A + B: 20000\n",
			"handled (Stats.User): 20000 of 20000 added\n",
			"seen by exactly one variant: 20000\n",
			"seen by two variants: 0\n",
			"per-user order kept: true\n",
			"lost: 0\n",
		}},
		{"retry", []string{
			"store        attempt 3: orders stored\n",
			"(key parked, not the worker): true\n",
			"offline-push attempt 3: apns: 503 service unavailable\n",
			"dead letter: type=OnSend handler=decode attempts=1 permanent=true err=malformed SEND frame\n",
			"dead letter: type=PushOffline handler=offline-push attempts=3 permanent=false err=apns: 503 service unavailable\n",
			"channel  added=3 handled=3 failed=2 retried=2 deadlettered=0\n",
			"bus closed cleanly\n",
		}},
		{"durable", []string{
			"after 200 AddEvent calls returned, the worker was killed with SIGKILL\n",
			"  each channel's messages replayed in send order: true\n",
			"  every message whose AddEvent returned nil is stored: true\n",
			"  lost: 0\n",
			"  journal dead-letter list: 2\n",
			"  dead letter: push to dave handler=apns attempts=2 err=apns: 503 service unavailable\n",
			"  dead letter: push to erin handler=apns attempts=2 err=apns: 503 service unavailable\n",
			"  APNs is back: Redrive(dave's) re-added 1, delivered to [dave]\n",
			"  erin's device token was revoked: Purge(erin's) removed 1\n",
			"  dead letters left: 0\n",
			"after a clean Close, a restart replays: 0 messages\n",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := runDemo(t, filepath.Join(dir, tt.name))
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}

	// The im and durable demos promise the same output on every run,
	// latencies and lines marked "varies" aside.
	for _, name := range []string{"im", "durable"} {
		t.Run(name+"-deterministic", func(t *testing.T) {
			t.Parallel()
			bin := filepath.Join(dir, name)
			if a, b := stable(runDemo(t, bin)), stable(runDemo(t, bin)); a != b {
				t.Errorf("two runs differ:\n%s\n----\n%s", a, b)
			}
		})
	}
}

// runDemo runs a built demo with a 60 s limit and returns its stdout. Any
// stderr output (the demos log only unexpected failures) fails the test.
func runDemo(t *testing.T, bin string) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), err, &stdout, &stderr)
	}
	if stderr.Len() > 0 {
		t.Errorf("%s wrote to stderr:\n%s", filepath.Base(bin), &stderr)
	}
	return stdout.String()
}

// stable drops the lines that legitimately vary between runs.
func stable(out string) string {
	var keep []string
	for line := range strings.Lines(out) {
		if !strings.Contains(line, "latency") && !strings.Contains(line, "varies") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "")
}
