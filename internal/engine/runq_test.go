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
					if e.Push(&Item[int]{Event: i, Key: uint64(round*100 + p*13 + i)}, nil, context.Background()) != Accepted {
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

// TestSleepingWorkersExitOnStopAbortOrRetire checks that workers asleep on
// their wake channel alone still exit when the Lifecycle stops or aborts,
// or when their engine retires: each of these sets its flag and then wakes
// every sleeper. Three engines share the Lifecycle, as a bus's pools do.
func TestSleepingWorkersExitOnStopAbortOrRetire(t *testing.T) {
	for _, how := range []string{"stop", "abort", "retire"} {
		t.Run(how, func(t *testing.T) {
			life := NewLifecycle()
			var engines []*Engine[int]
			for range 3 {
				e := New[int](Config{Workers: 4, Shards: 8, QueueSize: 4}, &countDispatcher{}, life)
				e.Start()
				engines = append(engines, e)
			}
			for _, e := range engines {
				// Let each engine run an event, then wait until all its
				// workers sleep: the exit must come from the wake.
				if res := e.Push(&Item[int]{Event: 1, Key: 1}, nil, context.Background()); res != Accepted {
					t.Fatalf("push: %v", res)
				}
				for e.rq.sleepers.Load() < 4 || !Idle(e) {
					runtime.Gosched()
				}
			}
			switch how {
			case "stop":
				life.Stop()
			case "abort":
				life.Abort()
			case "retire":
				for _, e := range engines {
					e.Retire()
				}
			}
			for i, e := range engines {
				select {
				case <-e.Exited():
				case <-time.After(10 * time.Second):
					t.Fatalf("engine %d: %d workers still running after %s", i, e.running.Load(), how)
				}
			}
			life.Stop()
			life.Release()
			life.queuesMu.Lock()
			defer life.queuesMu.Unlock()
			if len(life.queues) != 0 {
				t.Fatalf("%d run queues still watched after every engine exited", len(life.queues))
			}
		})
	}
}

// TestIdleWorkersAreHandedShardsDirectly checks the wake-up path from an
// add on an idle engine: with every worker asleep and none looking, each
// add gives its shard to a sleeper with the wake, never through the ring
// (whose tail does not move), and the woken worker runs it.
func TestIdleWorkersAreHandedShardsDirectly(t *testing.T) {
	const workers = 4
	e, life, d := startEngine(t, workers, 8)
	for round := range 20 {
		waitAllAsleep(t, e, workers)
		tail := e.rq.tail.Load()
		// Two keys on two shards: the second add finds a sleeper too, as
		// the worker handed the first shard does not count as looking.
		k1, k2 := uint64(round), uint64(round)
		for e.ShardIndex(k2) == e.ShardIndex(k1) {
			k2 += 1000
		}
		for _, k := range []uint64{k1, k2} {
			if e.Push(&Item[int]{Event: round, Key: k}, nil, context.Background()) != Accepted {
				t.Fatal("push refused")
			}
		}
		if got := e.rq.tail.Load(); got != tail {
			t.Fatalf("round %d: %d shards went through the ring, want 0", round, got-tail)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := WaitIdle(ctx, life, nil, e)
		cancel()
		if err != nil {
			t.Fatalf("round %d: not idle: %v", round, err)
		}
		if got, want := d.n.Load(), int64(2*(round+1)); got != want {
			t.Fatalf("round %d: ran %d, want %d", round, got, want)
		}
	}
}

// waitAllAsleep waits until n workers of e sleep with none looking.
func waitAllAsleep(t *testing.T, e *Engine[int], n int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.rq.sleepers.Load() != n || e.rq.looking.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d workers asleep, %d looking", e.rq.sleepers.Load(), n, e.rq.looking.Load())
		}
		runtime.Gosched()
	}
}
