package engine

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunQueueHandsOutEachShardOnce hammers the run queue from producers
// and consumers at once: every shard queued is taken exactly once, and
// never while it is not queued.
func TestRunQueueHandsOutEachShardOnce(t *testing.T) {
	const (
		shards    = 256
		producers = 8
		consumers = 4
		rounds    = 2000
	)
	var q runQueue
	q.init(shards, consumers)
	var queued [shards]atomic.Bool
	var marks, claims atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for p := range producers {
		wg.Go(func() {
			// Producer p owns shards p, p+producers, ...; it queues each
			// only while it is not queued, as a shard's state ensures.
			for range rounds {
				for i := p; i < shards; i += producers {
					if queued[i].Load() {
						continue
					}
					queued[i].Store(true)
					q.mark(i)
					marks.Add(1)
				}
				runtime.Gosched()
			}
		})
	}
	var cg sync.WaitGroup
	errs := make(chan string, 16)
	for range consumers {
		cg.Go(func() {
			for {
				i := q.claim()
				if i < 0 {
					select {
					case <-stop:
						if q.claim() < 0 && !q.any() {
							return
						}
					default:
					}
					runtime.Gosched()
					continue
				}
				if !queued[i].Load() {
					errs <- "a shard was taken while not queued"
					return
				}
				claims.Add(1)
				queued[i].Store(false)
			}
		})
	}
	wg.Wait()
	close(stop)
	cg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if marks.Load() != claims.Load() {
		t.Fatalf("%d shards queued, %d taken", marks.Load(), claims.Load())
	}
}

// TestRunQueueIsFirstInFirstOut: with one producer and one consumer,
// shards come out in the order they were queued.
func TestRunQueueIsFirstInFirstOut(t *testing.T) {
	var q runQueue
	q.init(64, 1)
	order := rand.Perm(64)
	for _, i := range order {
		q.mark(i)
	}
	for k, want := range order {
		if got := q.claim(); got != want {
			t.Fatalf("claim %d: shard %d, want %d", k, got, want)
		}
	}
	if q.claim() >= 0 || q.any() {
		t.Fatal("the queue is not empty after every shard was taken")
	}
}

// TestSleepingWorkersAlwaysWake pushes bursts from many producers with
// pauses in between, so that workers fall asleep and are woken again and
// again: every burst must be handled (a lost wake-up leaves WaitIdle
// waiting with events queued).
func TestSleepingWorkersAlwaysWake(t *testing.T) {
	d := &countDispatcher{}
	life := NewLifecycle()
	e := New[int](Config{Workers: 4, Shards: 4, QueueSize: 64}, d, life)
	e.Start()
	defer func() {
		// Bounded, so that a lost wake-up fails the test instead of
		// hanging it: abort gives up what is left.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		life.BeginClose()
		e.Barrier()
		if WaitIdle(ctx, life, nil, e) != nil {
			e.Halt()
			e.Abort()
			life.Abort()
		}
		life.Stop()
		<-e.Exited()
	}()
	var pushed atomic.Int64
	for round := range 300 {
		var wg sync.WaitGroup
		for p := range 8 {
			wg.Go(func() {
				for i := range 1 + (round*7+p)%13 {
					if e.Push(Item[int]{Event: i, Key: uint64(round*100 + p*13 + i)}, nil, context.Background()) != Accepted {
						t.Error("push refused")
						return
					}
					pushed.Add(1)
				}
			})
		}
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := WaitIdle(ctx, life, nil, e)
		cancel()
		if err != nil {
			t.Fatalf("round %d: not idle (%d pushed, %d ran): %v", round, pushed.Load(), d.n.Load(), err)
		}
	}
	if d.n.Load() != pushed.Load() {
		t.Fatalf("ran %d of %d", d.n.Load(), pushed.Load())
	}
}

// TestTopShardsListsTheBusiestShards: an engine whose workers have not
// started holds what was pushed; TopShards lists the shards holding the
// most, busiest first, bounded by its buffer, without allocating.
func TestTopShardsListsTheBusiestShards(t *testing.T) {
	e := New[int](Config{Workers: 1, Shards: 1024, QueueSize: 64}, &countDispatcher{}, NewLifecycle())
	defer e.Discard()
	counts := map[uint64]int{1: 5, 2: 3, 3: 1, 4: 7}
	seen := map[int]bool{}
	for key, n := range counts {
		if seen[e.ShardIndex(key)] {
			t.Fatal("test keys share a shard: pick others")
		}
		seen[e.ShardIndex(key)] = true
		for i := range n {
			if e.Push(Item[int]{Event: i, Key: key}, nil, nil) != Accepted {
				t.Fatal("push refused")
			}
		}
	}
	buf := make([]ShardLoad, 0, 3)
	top := e.TopShards(buf)
	want := []uint64{4, 1, 2}
	if len(top) != len(want) {
		t.Fatalf("TopShards: %+v, want 3 shards", top)
	}
	for i, key := range want {
		if top[i].Shard != e.ShardIndex(key) || top[i].Queued != counts[key] || top[i].Held != counts[key] {
			t.Fatalf("TopShards[%d] = %+v, want shard %d with %d", i, top[i], e.ShardIndex(key), counts[key])
		}
	}
	if n := testing.AllocsPerRun(10, func() { e.TopShards(buf) }); n != 0 {
		t.Fatalf("TopShards allocates %v times", n)
	}
}

// TestTopShardsWhileBusy reads TopShards while producers push and workers
// run (the race detector checks its locking).
func TestTopShardsWhileBusy(t *testing.T) {
	e, life, _ := startEngine(t, 4, 64)
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Go(func() {
			for i := range 5000 {
				e.Push(Item[int]{Event: i, Key: uint64(p*1000 + i%50)}, nil, context.Background())
			}
		})
	}
	done := make(chan struct{})
	var rg sync.WaitGroup
	rg.Go(func() {
		buf := make([]ShardLoad, 0, 8)
		for {
			select {
			case <-done:
				return
			default:
			}
			for _, l := range e.TopShards(buf) {
				if l.Held <= 0 || l.Queued > l.Held {
					t.Errorf("bad load %+v", l)
					return
				}
			}
			runtime.Gosched()
		}
	})
	wg.Wait()
	if err := WaitIdle(context.Background(), life, nil, e); err != nil {
		t.Fatal(err)
	}
	close(done)
	rg.Wait()
}
