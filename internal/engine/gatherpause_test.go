package engine

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// pauseDispatcher blocks the run of item 0 until release, after telling
// entered; other items run at once, and the run of item then, if set,
// calls its function. It records each key's items in the order they ran.
type pauseDispatcher struct {
	countDispatcher
	entered chan struct{}
	release chan struct{}
	then    func(*Unit[int])
	mu      sync.Mutex
	ran     map[uint64][]int
}

func (d *pauseDispatcher) Run(wid int, u *Unit[int]) Verdict {
	if u.Event == 0 {
		d.entered <- struct{}{}
		<-d.release
	}
	if d.then != nil {
		d.then(u)
	}
	d.mu.Lock()
	d.ran[u.Items[0].Key] = append(d.ran[u.Items[0].Key], u.Event)
	d.mu.Unlock()
	return d.countDispatcher.Run(wid, u)
}

func waitIdle(t *testing.T, life *Lifecycle, e *Engine[int]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := WaitIdle(ctx, life, nil, e); err != nil {
		t.Fatal(err)
	}
}

// pauseRig is one worker over one shard with a pauseDispatcher: the
// setting of the pause tests.
type pauseRig struct {
	t    *testing.T
	d    *pauseDispatcher
	life *Lifecycle
	e    *Engine[int]
}

// newPauseRig starts a rig; setup, if not nil, runs before the engine
// starts (to set its test fields).
func newPauseRig(t *testing.T, setup func(*pauseRig)) *pauseRig {
	r := &pauseRig{t: t, life: NewLifecycle(),
		d: &pauseDispatcher{entered: make(chan struct{}), release: make(chan struct{}), ran: map[uint64][]int{}}}
	r.e = New[int](Config{Workers: 1, Shards: 1, QueueSize: 64}, r.d, r.life)
	if setup != nil {
		setup(r)
	}
	r.e.Start()
	t.Cleanup(func() { drainAndStop(t, r.life, r.e) })
	return r
}

// push adds item ev of key 1.
func (r *pauseRig) push(ev int) {
	if res := r.e.Push(&Item[int]{Event: ev, Key: 1}, nil, context.Background()); res != Accepted {
		r.t.Errorf("push %d: %v", ev, res)
	}
}

// stream makes the worker take twice from the shard, item 0 alone, then
// items 1 to 9 (added while item 0 runs), and waits until the engine is
// idle.
func (r *pauseRig) stream() {
	r.push(0)
	<-r.d.entered
	for i := 1; i <= 9; i++ {
		r.push(i)
	}
	r.d.release <- struct{}{}
	waitIdle(r.t, r.life, r.e)
}

// TestGatheringPauseStopsAfterOneThatGathersLittle: a worker that has
// taken from a shard twice in a row and caught up with its producer
// pauses before its next take; once a pause gathers little (the producer
// is slow or done), it does not pause again in that shard, so a stream
// that slows down costs one pause. Each burst here is one such stream:
// its second take runs items 1 to 9, and item 9 adds items 10 to 17,
// queued before the pause, during which nothing arrives; a worker that
// counted those as gathered, or kept pausing anyway, would pause again
// after them. At least one pause in all (the first burst's), at most one
// per burst.
func TestGatheringPauseStopsAfterOneThatGathersLittle(t *testing.T) {
	r := newPauseRig(t, nil)
	const bursts = 5
	r.d.then = func(u *Unit[int]) {
		if u.Event == 9 {
			for i := range gatherEnough / 4 {
				r.push(10 + i)
			}
		}
	}
	for range bursts {
		r.stream()
	}
	pauses := r.e.workers[0].pauses.Load()
	if runtime.GOMAXPROCS(0) == 1 {
		if pauses != 0 {
			t.Fatalf("%d pauses with one processor", pauses)
		}
		return
	}
	if pauses < 1 || pauses > bursts {
		t.Fatalf("%d pauses over %d bursts: want at least 1 and at most one per burst", pauses, bursts)
	}
}

// TestGatheringPausesKeepEachKeysOrder hammers few shards from many
// producers, each streaming its own keys, with fewer workers than
// producers, so workers catch up, pause and take again while adds go on:
// every item runs once, each key's in add order.
func TestGatheringPausesKeepEachKeysOrder(t *testing.T) {
	d := &pauseDispatcher{ran: map[uint64][]int{}}
	e, life := startWith(t, Config{Workers: 2, Shards: 4, QueueSize: 256}, d)
	const producers, keysEach, perKey = 8, 3, 2000
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := 1; i <= perKey; i++ {
				for k := range keysEach {
					key := uint64(p*keysEach + k)
					if res := e.Push(&Item[int]{Event: i, Key: key}, nil, context.Background()); res != Accepted {
						t.Errorf("push key %d item %d: %v", key, i, res)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	waitIdle(t, life, e)
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.ran) != producers*keysEach {
		t.Fatalf("%d keys ran, want %d", len(d.ran), producers*keysEach)
	}
	for key, items := range d.ran {
		if len(items) != perKey {
			t.Fatalf("key %d: %d items ran, want %d", key, len(items), perKey)
		}
		for i, ev := range items {
			if ev != i+1 {
				t.Fatalf("key %d: item %d ran at position %d", key, ev, i+1)
			}
		}
	}
	var pauses uint64
	for _, w := range e.workers {
		pauses += w.pauses.Load()
	}
	t.Logf("%d gathering pauses", pauses)
}

// TestGatheringPauseIsNoRunsTime: the time a worker pauses is not counted
// in the run times its Stats report. The pause is lengthened to 1 s
// here, far above any run of the test (the longest, item 0's, lasts while
// the test adds nine items), so a pause counted in a run would show as a
// Max above it.
func TestGatheringPauseIsNoRunsTime(t *testing.T) {
	const pause = time.Second
	r := newPauseRig(t, func(r *pauseRig) { r.e.gatherPause = int64(pause) })
	r.d.then = func(u *Unit[int]) {
		if u.Event == 9 {
			r.push(10) // arrives for the pause to gather, after items 1 to 9
		}
	}
	r.stream()
	if runtime.GOMAXPROCS(0) > 1 && r.e.workers[0].pauses.Load() == 0 {
		t.Fatal("the worker never paused: the test did not exercise the pause")
	}
	if max := r.e.Snapshot().Max; max >= pause {
		t.Fatalf("Max run time %v counts the %v pause", max, pause)
	}
}

// TestGatheringPauseGoesOnWhilePausesGather: a pause during which enough
// items arrive (here the test adds them from the pause itself) leaves the
// worker pausing: it pauses again once it has run them, and stops after
// that second pause, which gathers nothing.
func TestGatheringPauseGoesOnWhilePausesGather(t *testing.T) {
	want := uint64(2)
	if runtime.GOMAXPROCS(0) == 1 {
		want = 0 // the producer could not run during a pause
	}
	calls := 0
	r := newPauseRig(t, func(r *pauseRig) {
		r.e.onPause = func() { // on the worker's goroutine
			calls++
			if calls == 1 {
				for i := range gatherEnough / 4 {
					r.push(10 + i) // arrive during the first pause
				}
			}
		}
	})
	r.stream()
	if got := r.e.workers[0].pauses.Load(); got != want {
		t.Fatalf("%d pauses, want %d: one that gathered %d items, then one that gathered none", got, want, gatherEnough/4)
	}
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	for i, ev := range r.d.ran[1] {
		if ev != i {
			t.Fatalf("item %d ran at position %d", ev, i)
		}
	}
}

// TestWantsPauseOnlyWhenTheWorkerCaughtUp checks the pause's conditions
// one at a time: a worker whose producer waits for room is what the
// producer waits for, and a small shard is full, not caught up, below
// gatherEnough items.
func TestWantsPauseOnlyWhenTheWorkerCaughtUp(t *testing.T) {
	e := New[int](Config{Workers: 1, Shards: 1, QueueSize: 16}, &countDispatcher{}, NewLifecycle())
	w, s := e.workers[0], &e.shards[0]
	if e.caughtUp != 4 {
		t.Fatalf("caughtUp %d with QueueSize 16, want a quarter: 4", e.caughtUp)
	}
	w.gathering, w.rounds, s.queued = true, 2, 3
	if runtime.GOMAXPROCS(0) == 1 {
		if w.wantsPause(s) {
			t.Fatal("pauses with one processor, where the producer cannot run meanwhile")
		}
		return
	}
	if !w.wantsPause(s) {
		t.Fatal("no pause: streaming, caught up, nothing else waiting")
	}
	for _, c := range []struct {
		why  string
		set  func()
		undo func()
	}{
		{"a pause gathered little", func() { w.gathering = false }, func() { w.gathering = true }},
		{"one take only", func() { w.rounds = 1 }, func() { w.rounds = 2 }},
		{"a quarter of the room queued", func() { s.queued = 4 }, func() { s.queued = 3 }},
		{"a producer waits for room", func() { e.spaceWaiters.Add(1) }, func() { e.spaceWaiters.Add(-1) }},
	} {
		c.set()
		if w.wantsPause(s) {
			t.Errorf("pauses although %s", c.why)
		}
		c.undo()
	}
	e.rq.mark(0)
	if w.wantsPause(s) {
		t.Error("pauses although another shard waits")
	}
}

// TestGatheringPauseAimsAtATargetTake checks the pause's length: at the
// rate items arrived since the last take, long enough for gatherTarget
// items by the next take, within [gatherPause/2, 4×gatherPause]; so with
// one producer's rate, a worker that ran its batch in half the time (and
// found half as many items queued) pauses longer.
func TestGatheringPauseAimsAtATargetTake(t *testing.T) {
	const base = 4000
	w := &worker[int]{e: &Engine[int]{gatherPause: base}}
	pause := func(takenAt, now int64, queued int32) int64 {
		w.takenAt, w.last = takenAt, now
		return w.pauseFor(queued)
	}
	// One item per 100 ns: a slow worker's batch took 6 µs, a fast one's 3.
	slow, fast := pause(1000, 7000, 60), pause(1000, 4000, 30)
	if want := int64(6000 * (gatherTarget - 60) / 60); slow != want {
		t.Errorf("slow worker pauses %d ns, want %d", slow, want)
	}
	if want := int64(3000 * (gatherTarget - 30) / 30); fast != want {
		t.Errorf("fast worker pauses %d ns, want %d", fast, want)
	}
	if fast <= slow {
		t.Errorf("the faster worker pauses %d ns, not longer than the slower one's %d", fast, slow)
	}
	for _, c := range []struct {
		why          string
		takenAt, now int64
		queued       int32
		want         int64
	}{
		{"no take timed yet", 0, 5000, 30, base},
		{"nothing arrived", 1000, 4000, 0, base},
		{"more than the target arrived", 1000, 4000, gatherTarget + 10, base / 2},
		{"a trickle", 1000, 101000, 1, 4 * base},
	} {
		if got := pause(c.takenAt, c.now, c.queued); got != c.want {
			t.Errorf("%s: pause %d ns, want %d", c.why, got, c.want)
		}
	}
}

// TestVerdictFitsRegisters: a Verdict of more than 32 bytes is assembled
// in memory on every run (see Verdict).
func TestVerdictFitsRegisters(t *testing.T) {
	if size := unsafe.Sizeof(Verdict{}); size > 32 {
		t.Fatalf("Verdict is %d bytes, more than the 32 the compiler keeps in registers", size)
	}
}
