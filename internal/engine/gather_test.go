package engine

import (
	"math/rand/v2"
	"testing"
	"time"
)

// classEvent is a model event: items of one key merge when their class
// matches and the class has a batch limit above 1.
type classEvent struct{ id, class int }

// modelDispatcher records every unit it runs, fails a share of runs so
// that units are parked and retried, and merges by class.
type modelDispatcher struct {
	t      *testing.T
	rng    *rand.Rand
	limits [3]int // batch limit by class
	fail   float64
	runs   [][]int // ids of the items of each handled unit, in run order
}

func (d *modelDispatcher) Run(_ int, u *Unit[classEvent]) Verdict {
	if d.rng.Float64() < d.fail {
		return Verdict{Outcome: Retry, Failure: RunFailed}
	}
	ids := make([]int, len(u.Items))
	for i := range u.Items {
		ids[i] = u.Items[i].Event.id
	}
	d.runs = append(d.runs, ids)
	return Verdict{Outcome: Handled}
}

func (d *modelDispatcher) Goexited(int, *Unit[classEvent]) Verdict { return Verdict{Outcome: Dead} }
func (d *modelDispatcher) Panicked(int, *Unit[classEvent], any) Verdict {
	return Verdict{Outcome: Dead}
}
func (d *modelDispatcher) BatchLimit(it *Item[classEvent]) int { return d.limits[it.Event.class] }
func (d *modelDispatcher) DeadLetter(*Unit[classEvent], int, error) {
	d.t.Error("unexpected dead letter")
}
func (d *modelDispatcher) Observe(*Unit[classEvent], Verdict) {}
func (d *modelDispatcher) Idle(int)                           {}

func (d *modelDispatcher) Mergeable(head *Item[classEvent], next []Item[classEvent]) int {
	for i := range next {
		if next[i].Event.class != head.Event.class {
			return i
		}
	}
	return len(next)
}

func (d *modelDispatcher) Merge(u *Unit[classEvent]) {
	u.Event = classEvent{id: -1, class: u.Items[0].Event.class}
}

// plainModelDispatcher is modelDispatcher that runs plain stretches too,
// item by item through Run, and records which items came that way.
type plainModelDispatcher struct {
	*modelDispatcher
	plain []int // ids of the items run in plain stretches
}

func (d *plainModelDispatcher) RunPlain(wid int, u *Unit[classEvent], items []Item[classEvent], p *Plain) (int, Verdict) {
	for i := range items {
		u.ID, u.Items, u.Event = p.Start(), items[i:i+1:i+1], items[i].Event
		d.plain = append(d.plain, items[i].Event.id)
		if v := d.Run(wid, u); v.Outcome != Handled {
			return i, v
		}
	}
	return len(items), Verdict{Outcome: Handled}
}

// TestGatherModel drives a worker's step and runDue over random batches:
// several keys, runs of one key, classes that merge or not, limits from 1
// to 6, and in a third of the seeds 20% failed runs (parked, then retried).
// Every item must run exactly once, units never mix keys or classes nor
// exceed their limit, and each key's items run in the order they were added.
func TestGatherModel(t *testing.T) {
	runGatherModel(t, false)
}

// TestPlainStretchesStopAtBatchedTypes is TestGatherModel with a
// dispatcher that runs plain stretches, driven as the worker's loop drives
// them: items of a class that merges (limit above 1) must never run in a
// plain stretch, every guarantee of the model must hold, and items of the
// other classes must run in plain stretches.
func TestPlainStretchesStopAtBatchedTypes(t *testing.T) {
	runGatherModel(t, true)
}

func runGatherModel(t *testing.T, plain bool) {
	plainRan := 0
	for seed := range uint64(3000) {
		rng := rand.New(rand.NewPCG(seed, 7))
		d := &modelDispatcher{t: t, rng: rng, limits: [3]int{1 + rng.IntN(6), 1 + rng.IntN(6), 0}}
		if seed%3 == 0 {
			d.fail = 0.2
		}
		var pd *plainModelDispatcher
		var disp Dispatcher[classEvent] = d
		if plain {
			pd = &plainModelDispatcher{modelDispatcher: d}
			disp = pd
		}
		e := New[classEvent](Config{Batching: true, Shards: 1, QueueSize: 1 << 20}, disp, NewLifecycle())
		w := e.workers[0]
		if plain != (w.plain != nil) {
			t.Fatalf("plain stretches: %v, want %v", w.plain != nil, plain)
		}
		w.cur = &e.shards[0]
		var keys []uint64
		var classes []int
		for range 1 + rng.IntN(3) {
			w.batch, w.pos = w.batch[:0], 0
			if w.anyTaken {
				clear(w.taken)
				w.anyTaken = false
			}
			nkeys := 1 + rng.IntN(4)
			for range 1 + rng.IntN(60) {
				id := len(keys)
				key, class := uint64(rng.IntN(nkeys)), rng.IntN(3)
				if id > 0 && keys[id-1] == key && rng.IntN(4) != 0 { // favour runs
					class = classes[id-1]
				}
				keys, classes = append(keys, key), append(classes, class)
				w.batch = append(w.batch, Item[classEvent]{Event: classEvent{id, class}, Key: key})
			}
			for w.pos < len(w.batch) {
				// As next drives them.
				if w.plain != nil && w.plainNext() {
					w.runPlain()
				} else {
					w.step()
				}
			}
			for w.cur.parkedKeys() > 0 {
				w.runDue(time.Now().Add(time.Hour))
			}
		}

		ran := make([]bool, len(keys))
		last := map[uint64]int{}
		for _, unit := range d.runs {
			head := unit[0]
			if limit := d.limits[classes[head]]; len(unit) > max(limit, 1) {
				t.Fatalf("seed %d: unit %v is over its limit %d", seed, unit, limit)
			}
			for _, id := range unit {
				if ran[id] {
					t.Fatalf("seed %d: item %d ran twice", seed, id)
				}
				ran[id] = true
				if keys[id] != keys[head] || classes[id] != classes[head] {
					t.Fatalf("seed %d: unit %v mixes keys or classes", seed, unit)
				}
				if prev, ok := last[keys[id]]; ok && id < prev {
					t.Fatalf("seed %d: key %d ran item %d after %d", seed, keys[id], id, prev)
				}
				last[keys[id]] = id
			}
		}
		for id, ok := range ran {
			if !ok {
				t.Fatalf("seed %d: item %d never ran", seed, id)
			}
		}
		if pd != nil {
			for _, id := range pd.plain {
				if d.limits[classes[id]] > 1 {
					t.Fatalf("seed %d: item %d of a class that merges (limit %d) ran in a plain stretch", seed, id, d.limits[classes[id]])
				}
			}
			plainRan += len(pd.plain)
		}
	}
	if plain && plainRan == 0 {
		t.Fatal("no item ran in a plain stretch")
	}
}
