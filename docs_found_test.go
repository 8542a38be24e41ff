package eventbus_test

// Regression tests for behaviour found wrong while documenting engine v2
// and subscribers; each failed on the code it was written against.

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/require"
)

// DESIGN §4.5: "An add from a handler's goroutine with another ctx (e.g.
// context.Background()) that would wait on its own pool is treated as a
// follow-on add, never a deadlock", and §4.14 makes a subscriber's ctx a
// handler ctx. The foreign-ctx check is per engine, though: a chain handler
// is recognised only on the pool's engine and a subscriber only on its own
// lanes. With a type that has both, a chain handler adding with
// context.Background() waits for the subscriber's lane while the
// subscriber, adding the same way, waits for the pool: neither returns
// until Close.
func TestDocsFoundForeignCtxAddsDeadlockWithSubscriber(t *testing.T) {
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, QueueSize: 1}))
	conn := &testConn{uid: "alice", id: 1}
	var inside sync.WaitGroup // both handlers are running the first event
	inside.Add(2)
	results := make(chan error, 2)
	handle := func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame != "first" {
			return nil
		}
		inside.Done()
		inside.Wait()
		// A foreign ctx, from a handler's goroutine, as §4.5 allows.
		results <- b.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn, Frame: "next"})
		return nil
	}
	mustRegister(t, b, eventbus.EventOnSend, handle, eventbus.WithName("chain"))
	_, err := eventbus.Subscribe(b, eventbus.EventOnSend, handle, eventbus.WithName("sub"))
	require.NoError(t, err)
	require.NoError(t, b.Start())
	require.NoError(t, b.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn, Frame: "first"}))

	timeout := time.After(3 * time.Second)
	for range 2 {
		select {
		case err := <-results:
			require.NoError(t, err)
		case <-timeout:
			t.Fatal("a handler's AddEvent(context.Background(), …) is still waiting after 3 s: " +
				"the chain handler waits for the subscriber's lane, the subscriber for the pool")
		}
	}
}

// WithLogger and WithDeadLetter promise that dead letters are logged at
// most once per handler per second (WithLogInterval), and Bus.DeadLetter
// says its letters are "logged like the bus's own dead letters". It logs
// every call: a transport that gives up on a burst of messages floods the
// log.
func TestDocsFoundBusDeadLetterLogIsThrottled(t *testing.T) {
	var lines atomic.Int64
	logger := slog.New(countingHandler{n: &lines, msg: "dead letter"})
	b, err := eventbus.New(eventbus.WithLogger(logger), eventbus.WithDeadLetter(&sinkRecorder{}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	conn := &testConn{uid: "alice", id: 1}
	for range 50 {
		b.DeadLetter(&eventbus.DeadLetter{Event: &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn},
			Err: context.DeadlineExceeded, Attempts: 5, Handler: "nats-relay", Time: time.Now()})
	}
	require.LessOrEqual(t, lines.Load(), int64(1), "50 letters from one handler within a second")
}

// countingHandler counts the records whose message contains msg.
type countingHandler struct {
	n   *atomic.Int64
	msg string
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.msg) {
		h.n.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }
