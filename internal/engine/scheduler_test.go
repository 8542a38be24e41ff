package engine

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// modelItem is an event of the scheduler model: its key and its place in
// that key's add order.
type modelItem struct {
	key uint64
	seq int
}

// schedDispatcher checks the scheduler's promises as units run: no two
// units of one key at once, each key's items in add order, each item
// handled exactly once. It fails a share of runs (parked, then retried)
// and makes a few keys slow.
type schedDispatcher struct {
	t        *testing.T
	failRate float64
	slow     map[uint64]bool

	mu      sync.Mutex
	running map[uint64]bool
	next    map[uint64]int // next seq expected per key
	handled atomic.Int64
	rngs    []*rand.Rand // one per worker
}

func (d *schedDispatcher) Run(w int, u *Unit[modelItem]) Verdict {
	key := u.Items[0].Event.key
	d.mu.Lock()
	if d.running[key] {
		d.t.Errorf("key %d runs twice at once", key)
	}
	d.running[key] = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.running[key] = false
		d.mu.Unlock()
	}()
	if d.slow[key] {
		time.Sleep(200 * time.Microsecond) // stands for a slow handler
	}
	if d.rngs[w].Float64() < d.failRate {
		return Verdict{Outcome: Retry, Delay: time.Duration(d.rngs[w].IntN(300)) * time.Microsecond, Failure: RunFailed}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, it := range u.Items {
		if it.Event.seq != d.next[key] {
			d.t.Errorf("key %d: item %d handled, want %d", key, it.Event.seq, d.next[key])
		}
		d.next[key] = it.Event.seq + 1
	}
	d.handled.Add(int64(len(u.Items)))
	return Verdict{Outcome: Handled}
}

func (d *schedDispatcher) Goexited(int, *Unit[modelItem]) Verdict            { return Verdict{Outcome: Dead} }
func (d *schedDispatcher) Panicked(int, *Unit[modelItem], any) Verdict       { return Verdict{Outcome: Dead} }
func (d *schedDispatcher) BatchLimit(*Item[modelItem]) int                   { return 0 }
func (d *schedDispatcher) Mergeable(*Item[modelItem], []Item[modelItem]) int { return 0 }
func (d *schedDispatcher) Merge(*Unit[modelItem])                            {}
func (d *schedDispatcher) DeadLetter(*Unit[modelItem], int, error) {
	d.t.Error("unexpected dead letter")
}
func (d *schedDispatcher) Observe(*Unit[modelItem], Verdict) {}
func (d *schedDispatcher) Idle(int)                          {}

// TestSchedulerModel drives the engine with random adds from many
// producers into random keys, few shards (so keys share them) and a small
// capacity (so producers wait), random retries and a few slow keys, and
// checks per-key order, exclusion and exactly-once delivery, and that the
// counters add up at rest.
func TestSchedulerModel(t *testing.T) {
	for seed := range uint64(6) {
		rng := rand.New(rand.NewPCG(seed, 11))
		workers := 1 + rng.IntN(4)
		shards := 1 << rng.IntN(6)
		queue := 1 + rng.IntN(16)
		keys := 1 + rng.IntN(40)
		d := &schedDispatcher{t: t, failRate: []float64{0, 0.05, 0.2}[seed%3],
			slow: map[uint64]bool{}, running: map[uint64]bool{}, next: map[uint64]int{}}
		for range 2 {
			d.slow[uint64(rng.IntN(keys))] = true
		}
		for w := range workers {
			d.rngs = append(d.rngs, rand.New(rand.NewPCG(seed, uint64(w))))
		}
		life := NewLifecycle()
		e := New[modelItem](Config{Workers: workers, Shards: shards, QueueSize: queue}, d, life)
		e.Start()

		const producers, perProducer = 8, 400
		// Each producer owns the keys k with k % producers == p, so that
		// one goroutine decides each key's add order.
		var wg sync.WaitGroup
		addedPerKey := make([]int, keys) // written by the key's producer only
		for p := range producers {
			wg.Go(func() {
				prng := rand.New(rand.NewPCG(seed, 100+uint64(p)))
				seqs := map[uint64]int{}
				mine := []uint64{}
				for k := p; k < keys; k += producers {
					mine = append(mine, uint64(k))
				}
				if len(mine) == 0 {
					return
				}
				for range perProducer {
					k := mine[prng.IntN(len(mine))]
					it := Item[modelItem]{Event: modelItem{key: k, seq: seqs[k]}, Key: k}
					seqs[k]++
					addedPerKey[k]++
					if res := e.Push(&it, nil, context.Background()); res != Accepted {
						t.Errorf("push: %v", res)
						return
					}
				}
			})
		}
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := WaitIdle(ctx, life, nil, e); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		cancel()
		var want int64
		for k, n := range addedPerKey {
			want += int64(n)
			if d.next[uint64(k)] != n {
				t.Errorf("seed %d: key %d handled up to %d of %d", seed, k, d.next[uint64(k)], n)
			}
		}
		if got := d.handled.Load(); got != want {
			t.Errorf("seed %d: handled %d of %d", seed, got, want)
		}
		snap := e.Snapshot()
		if snap.Added != snap.Handled || snap.Queued != 0 || snap.InFlight != 0 || snap.Retrying != 0 || snap.Overflow != 0 {
			t.Errorf("seed %d: at rest: %+v", seed, snap)
		}
		life.BeginClose()
		e.Barrier()
		life.Stop()
		<-e.Exited()
	}
}
