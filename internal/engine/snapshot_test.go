package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// inspectDispatcher blocks the events of key slowKey until gate closes
// and fails those of key failKey, retrying, until release is set.
type inspectDispatcher struct {
	countDispatcher
	running chan struct{} // one send per slow event that started
	gate    chan struct{}
	release atomic.Bool
	failed  chan struct{} // closed at the first failure
	once    sync.Once
}

const (
	slowKey = 1
	failKey = 2
)

var errInspect = errors.New("inspect: failing")

func (d *inspectDispatcher) Run(w int, u *Unit[int]) Verdict {
	switch u.Key() {
	case slowKey:
		d.running <- struct{}{}
		<-d.gate
	case failKey:
		if !d.release.Load() {
			u.Attempt++
			u.Err = errInspect
			d.once.Do(func() { close(d.failed) })
			return Verdict{Outcome: Retry, Delay: 20 * time.Millisecond, Failure: RunFailed}
		}
	}
	return d.countDispatcher.Run(w, u)
}

// TestBusiestAndParkedReportHeldShardsAndParkedKeys checks that Busiest
// names the shard a blocked key holds, with its queued events, busiest
// first, and that Parked reports the key waiting for a retry with its
// attempt, error and retry time, both without allocating.
func TestBusiestAndParkedReportHeldShardsAndParkedKeys(t *testing.T) {
	d := &inspectDispatcher{running: make(chan struct{}, 8), gate: make(chan struct{}), failed: make(chan struct{})}
	life := NewLifecycle()
	e := New[int](Config{Workers: 4, Shards: 64, QueueSize: 64}, d, life)
	if e.ShardIndex(slowKey) == e.ShardIndex(failKey) {
		t.Fatal("test keys share a shard")
	}
	e.Start()
	var unblock sync.Once
	open := func() { unblock.Do(func() { d.release.Store(true); close(d.gate) }) }
	defer func() {
		open() // also when an assertion failed, or the close would wait forever
		drainAndStop(t, life, e)
	}()
	push := func(ev int, key uint64) {
		if res := e.Push(&Item[int]{Event: ev, Key: key}, nil, context.Background()); res != Accepted {
			t.Fatalf("push: %v", res)
		}
	}
	push(100, slowKey)
	<-d.running // the first slow event is in the worker's hands
	const queued = 5
	for i := range queued {
		push(101+i, slowKey)
	}
	push(7, 3) // another shard with one event
	push(200, failKey)
	<-d.failed

	busy := make([]ShardLoad[int], 0, 2)
	busy = e.Busiest(busy)
	if len(busy) == 0 || busy[0].Shard != e.ShardIndex(slowKey) {
		t.Fatalf("busiest %+v, want shard %d first", busy, e.ShardIndex(slowKey))
	}
	b := busy[0]
	if b.Held != queued+1 || b.Queued != queued || !b.Running || b.Head != 101 || b.HeadKey != slowKey || b.HeadQueued != queued {
		t.Fatalf("busiest shard %+v, want %d held, %d queued, head 101", b, queued+1, queued)
	}
	if len(busy) > 1 && busy[1].Held > b.Held {
		t.Fatalf("not sorted: %+v", busy)
	}

	// The failing key is parked between its attempts; the worker lets its
	// shard go idle while it waits, so Parked sees it.
	parked := make([]ParkedLoad[int], 0, 4)
	deadline := time.Now().Add(time.Minute)
	var fb ShardLoad[int] // the failing key's shard as Busiest shows it
	for {
		parked, _ = e.Parked(parked)
		busy = e.Busiest(make([]ShardLoad[int], 0, 4))
		fb = ShardLoad[int]{}
		for _, b := range busy {
			if b.Shard == e.ShardIndex(failKey) {
				fb = b
			}
		}
		if len(parked) > 0 && fb.HeadParked || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond) // polling a state, not synchronising
	}
	if len(parked) != 1 {
		t.Fatalf("parked %+v, want the failing key", parked)
	}
	p := parked[0]
	if p.Key != failKey || p.Event != 200 || p.Attempt < 1 || !errors.Is(p.Err, errInspect) || p.Events != 1 || p.Due.IsZero() {
		t.Fatalf("parked %+v", p)
	}

	if !fb.HeadParked || fb.Head != 200 || fb.HeadKey != failKey || fb.HeadQueued != 1 || fb.Queued != 0 {
		t.Fatalf("failing key's shard %+v, want its parked event as head", fb)
	}

	allocs := testing.AllocsPerRun(20, func() {
		busy = e.Busiest(busy)
		parked, _ = e.Parked(parked)
	})
	if allocs != 0 {
		t.Errorf("Busiest+Parked allocate %v times per call", allocs)
	}

	open()
	for range queued {
		<-d.running
	}
}

// TestBusiestUnderLoadIsRaceFree reads Busiest and Parked from several
// goroutines while producers push and workers run and retry.
func TestBusiestUnderLoadIsRaceFree(t *testing.T) {
	d := &inspectDispatcher{running: make(chan struct{}, 1<<16), gate: make(chan struct{}), failed: make(chan struct{})}
	close(d.gate)
	life := NewLifecycle()
	e := New[int](Config{Workers: 4, Shards: 16, QueueSize: 256}, d, life)
	e.Start()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 3 {
		wg.Go(func() {
			busy := make([]ShardLoad[int], 0, 4)
			parked := make([]ParkedLoad[int], 0, 4)
			for {
				select {
				case <-stop:
					return
				default:
				}
				busy = e.Busiest(busy)
				parked, _ = e.Parked(parked)
				for _, b := range busy {
					if b.Held <= 0 || b.Queued > b.Held+256 {
						t.Errorf("bad load %+v", b)
					}
				}
			}
		})
	}
	var prod sync.WaitGroup
	for p := range 4 {
		prod.Go(func() {
			for i := range 2000 {
				key := uint64(3 + (i+p)%50)
				if i%500 == 0 {
					key = failKey
				}
				e.Push(&Item[int]{Event: i, Key: key}, nil, context.Background())
			}
		})
	}
	prod.Wait()
	d.release.Store(true)
	close(stop)
	wg.Wait()
	drainAndStop(t, life, e)
}
