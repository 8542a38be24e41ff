package engine

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// countDispatcher handles every unit by counting it.
type countDispatcher struct{ n atomic.Int64 }

func (d *countDispatcher) Run(int, *Unit[int]) Verdict {
	d.n.Add(1)
	return Verdict{}
}
func (d *countDispatcher) Goexited(int, *Unit[int]) Verdict      { return Verdict{Outcome: Dead} }
func (d *countDispatcher) Panicked(int, *Unit[int], any) Verdict { return Verdict{Outcome: Dead} }
func (d *countDispatcher) BatchLimit(*Item[int]) int             { return 0 }
func (d *countDispatcher) Mergeable(*Item[int], []Item[int]) int { return 0 }
func (d *countDispatcher) Merge(*Unit[int])                      {}
func (d *countDispatcher) DeadLetter(*Unit[int], int, error)     {}
func (d *countDispatcher) Observe(*Unit[int], Verdict)           {}
func (d *countDispatcher) Idle(int)                              {}

func startEngine(tb testing.TB, shards, queue int) (*Engine[int], *Lifecycle, *countDispatcher) {
	d := &countDispatcher{}
	e, life := startWith(tb, Config{Workers: shards, Shards: shards, QueueSize: queue}, d)
	return e, life, d
}

// startWith starts an engine of cfg with dispatcher d, drained and
// stopped when the test ends.
func startWith(tb testing.TB, cfg Config, d Dispatcher[int]) (*Engine[int], *Lifecycle) {
	life := NewLifecycle()
	e := New[int](cfg, d, life)
	e.Start()
	tb.Cleanup(func() { drainAndStop(tb, life, e) })
	return e, life
}

// drainAndStop closes an engine as the bus does when nothing is stuck:
// refuse outside adds, wait until every accepted item has finished, stop
// the workers and wait for them.
func drainAndStop[E any](tb testing.TB, life *Lifecycle, e *Engine[E]) {
	tb.Helper()
	life.BeginClose()
	e.Barrier()
	if err := WaitIdle(context.Background(), life, nil, e); err != nil {
		tb.Error(err)
	}
	life.Stop()
	<-e.Exited()
}

// TestPushRunsEveryItemOnce checks the engine alone: every pushed item is
// run once and the counters add up at rest.
func TestPushRunsEveryItemOnce(t *testing.T) {
	e, life, d := startEngine(t, 4, 8)
	const n = 10_000
	for i := range n {
		if res := e.Push(&Item[int]{Event: i, Key: uint64(i % 37)}, nil, context.Background()); res != Accepted {
			t.Fatalf("push %d: %v", i, res)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := WaitIdle(ctx, life, nil, e); err != nil {
		t.Fatal(err)
	}
	if got := d.n.Load(); got != n {
		t.Fatalf("ran %d of %d", got, n)
	}
	s := e.Snapshot()
	if s.Added != n || s.Handled != n || s.Queued+s.InFlight+s.Retrying != 0 {
		t.Fatalf("snapshot %+v", s)
	}
}

// BenchmarkEngine measures the engine alone (push → run, no handler
// dispatch), one producer, one key: the floor under the bus's own cost.
func BenchmarkEngine(b *testing.B) {
	e, life, d := startEngine(b, 4, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		e.Push(&Item[int]{Event: i, Key: 1}, nil, context.Background())
	}
	if err := WaitIdle(context.Background(), life, nil, e); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N), "ns/event")
	if d.n.Load() != int64(b.N) {
		b.Fatal("lost items")
	}
}
