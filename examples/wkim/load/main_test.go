package main

import (
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRun is a small load run: 30 clients in groups of 4 (the last of 2),
// 5 messages each; every RECV must arrive and the figures be printed.
func TestRun(t *testing.T) {
	var out strings.Builder
	if err := run([]string{"-clients", "30", "-messages", "5", "-group", "4", "-timeout", "30s"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	// 7 groups of 4 (3 receivers each) and one of 2 (1 receiver):
	// 28·5·3 + 2·5·1 = 430 RECVs.
	for _, want := range []string{
		`30 clients connected to ws://127\.0\.0\.1:\d+, 8 groups of up to 4; each sends 5 messages`,
		`sent 150 messages in \S+: \d+ msg/s accepted`,
		`delivered 430 RECVs in \S+: \d+ msg/s`,
		`SEND→RECV latency: p50 \S+, p99 \S+, max \S+`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestFlags(t *testing.T) {
	var out strings.Builder
	if err := run([]string{"-clients", "1"}, &out); err == nil {
		t.Fatal("-clients 1 accepted")
	}
}
