package eventbus

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

// TestUnreadableGoroutineIDIsNotAWorker: when the goroutine id
// cannot be read (goid.Get returns 0), the caller is not taken for a
// worker, although workers that are not running have id 0 too.
func TestUnreadableGoroutineIDIsNotAWorker(t *testing.T) {
	saved := goroutineID
	goroutineID = func() int64 { return 0 }
	t.Cleanup(func() { goroutineID = saved })

	b, err := New(WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if b.inHandler(ctx) {
		t.Error("inHandler: a goroutine of unknown id taken for a worker")
	}
	if err := b.Close(ctx); errors.Is(err, ErrInsideHandler) || err != nil {
		t.Errorf("Close of an unstarted bus, from a goroutine of unknown id: %v", err)
	}
}
