package main

import (
	"bytes"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"))
}

// TestClusterDemo runs the demo small: it must report nothing lost and
// order held.
func TestClusterDemo(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, 40, 10, 8, false); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !bytes.Contains(out.Bytes(), []byte("OK: nothing lost")) {
		t.Fatalf("unexpected output:\n%s", out.String())
	}
	t.Log("\n" + out.String())
}
