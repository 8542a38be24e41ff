package eventbus

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus/internal/goid"
)

// goroutineObserver records the goroutine of every dead-letter observation.
type goroutineObserver struct {
	mu  sync.Mutex
	ids []int64
}

func (o *goroutineObserver) Observe(ob Observation) {
	if ob.Outcome == OutcomeDeadLettered {
		o.mu.Lock()
		o.ids = append(o.ids, goid.Get())
		o.mu.Unlock()
	}
}

// TestCloseRunsNoUserCodeAfterDeadline: as Observer's and Close's
// docs say, a Close whose ctx ended returns at once and runs no user code:
// the queued events it gives up are dead-lettered and observed on another
// goroutine, all of them by the time a second Close returns nil.
func TestCloseRunsNoUserCodeAfterDeadline(t *testing.T) {
	obs := &goroutineObserver{}
	b, err := New(WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), WithObserver(obs),
		WithUserPool(PoolConfig{Workers: 1}), WithDeadLetter(NewDeadLetterRing(8)))
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	if _, err := Register(b, EventOnSend, func(ctx context.Context, ev *UserContext) error {
		if ev.Frame == "hold" {
			close(entered)
			<-release
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	conn := &testConnInternal{uid: "u"}
	add := func(frame any) {
		if err := b.AddEvent(context.Background(), &UserContext{EventType: EventOnSend, Conn: conn, Frame: frame}); err != nil {
			t.Fatal(err)
		}
	}
	add("hold")
	<-entered
	for range 3 {
		add("queued")
	}
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	me := goid.Get()
	var ce *CloseError
	if err := b.Close(expired); !errors.As(err, &ce) {
		t.Fatalf("Close with an expired ctx: %v, want a *CloseError", err)
	}
	close(release)
	ctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := b.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	onClose := 0
	for _, id := range obs.ids {
		if id == me {
			onClose++
		}
	}
	if onClose != 0 {
		t.Errorf("%d observations on Close's goroutine, want none", onClose)
	}
	// The three queued events, each dead-lettered and observed once.
	if len(obs.ids) != 3 {
		t.Errorf("%d dead-letter observations, want 3", len(obs.ids))
	}
}
