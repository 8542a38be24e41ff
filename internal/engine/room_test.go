package engine

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// holdDispatcher holds the worker in the run of item -1 until hold is
// closed, and counts every item handled.
type holdDispatcher struct {
	countDispatcher
	started chan struct{}
	hold    chan struct{}
}

func (d *holdDispatcher) Run(w int, u *Unit[int]) Verdict {
	if u.Items[0].Event == -1 {
		close(d.started)
		<-d.hold
	}
	return d.countDispatcher.Run(w, u)
}

// TestWaitingProducersSpinThenParkAndAllGetRoom fills a one-worker engine
// whose worker is held, with many producers waiting for room: they yield
// for a while, then park; once the worker goes on, room comes back to all
// of them, every item is handled once and no waiter stays counted.
func TestWaitingProducersSpinThenParkAndAllGetRoom(t *testing.T) {
	const producers, each = 8, 200
	d := &holdDispatcher{started: make(chan struct{}), hold: make(chan struct{})}
	life := NewLifecycle()
	e := New[int](Config{Workers: 1, Shards: 4, QueueSize: 4}, d, life)
	e.Start()
	defer drainAndStop(t, life, e)

	if res := e.Push(&Item[int]{Event: -1, Key: 0}, nil, context.Background()); res != Accepted {
		t.Fatalf("push: %v", res)
	}
	<-d.started
	var wg sync.WaitGroup
	var refused atomic.Int64
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				if res := e.Push(&Item[int]{Event: i, Key: uint64(p)}, nil, context.Background()); res != Accepted {
					refused.Add(1)
				}
			}
		})
	}
	// The held worker gives no room back: waiting producers end their
	// yielding and park.
	for e.spaceSleepers.Load() == 0 {
		runtime.Gosched()
	}
	close(d.hold)
	wg.Wait()
	if err := WaitIdle(context.Background(), life, nil, e); err != nil {
		t.Fatal(err)
	}
	if got, want := d.n.Load(), int64(1+producers*each); got != want || refused.Load() != 0 {
		t.Fatalf("handled %d of %d, %d refused", got, want, refused.Load())
	}
	if w, s := e.spaceWaiters.Load(), e.spaceSleepers.Load(); w != 0 || s != 0 {
		t.Fatalf("%d producers still counted as waiting, %d as parked", w, s)
	}
}

// TestRoomForAnswersByFreedNotItsCachedBound: the capacity check looks at
// the producers' cached lower bound of freed first, but when that says
// "full" it reads freed itself (and caches it): room given back is never
// missed, and a full engine stays full.
func TestRoomForAnswersByFreedNotItsCachedBound(t *testing.T) {
	e := New[int](Config{Workers: 1, QueueSize: 4}, nil, NewLifecycle())
	e.added.Store(4) // capacity 4, all taken
	if e.roomFor(4, 1) {
		t.Fatal("room for a fifth event in an engine of capacity 4 with nothing given back")
	}
	e.freed.Store(3) // three given back; the cached bound still says 0
	if !e.roomFor(4, 1) {
		t.Fatal("no room although 3 of 4 places were given back")
	}
	if got := e.freedSeen.Load(); got != 3 {
		t.Fatalf("cached bound of freed = %d after a check that read freed; want 3", got)
	}
	if e.roomFor(7, 1) {
		t.Fatal("room for an eighth event: 7 added, 3 given back, capacity 4")
	}
	if !e.roomFor(7, 0) {
		t.Fatal("7 added, 3 given back: exactly at capacity, not above it")
	}
}
