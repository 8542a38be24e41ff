package engine

import (
	"testing"
	"time"
)

// TestLatencyWindow: Stats report the current window and the one before;
// a slow run older than that no longer shows, in Max or the quantiles.
func TestLatencyWindow(t *testing.T) {
	e := New[int](Config{Workers: 1, Shards: 1, QueueSize: 1}, &countDispatcher{}, NewLifecycle())
	w := e.workers[0]
	now := int64(1)
	w.winStart = now
	w.record(int64(300*time.Millisecond), 1, int64(300*time.Millisecond), now)
	for range 100 {
		now += int64(time.Millisecond)
		w.record(int64(time.Microsecond), 1, int64(time.Microsecond), now)
	}
	if s := e.Snapshot(); s.Max != 300*time.Millisecond {
		t.Fatalf("Max %v in the slow run's window, want 300ms", s.Max)
	}
	now += latencyWindow // next window: the slow run is in the one before
	w.record(int64(time.Microsecond), 1, int64(time.Microsecond), now)
	if s := e.Snapshot(); s.Max != 300*time.Millisecond {
		t.Fatalf("Max %v one window later, want 300ms", s.Max)
	}
	now += latencyWindow // two windows later: gone
	w.record(int64(2*time.Microsecond), 1, int64(2*time.Microsecond), now)
	s := e.Snapshot()
	if s.Max != 2*time.Microsecond {
		t.Fatalf("Max %v two windows later, want 2µs (the two recent windows)", s.Max)
	}
	if s.P99 > 2*time.Microsecond {
		t.Fatalf("P99 %v two windows later still counts the slow run", s.P99)
	}
}
