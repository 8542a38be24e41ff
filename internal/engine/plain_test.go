package engine

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// plainDispatcher is a PlainRunner: it runs stretches of items through
// run, one by one, as the bus's dispatcher does. run (nil: count only)
// sees each item's event.
type plainDispatcher struct {
	countDispatcher
	run func(ev int)
}

func (d *plainDispatcher) Run(wid int, u *Unit[int]) Verdict {
	if d.run != nil {
		d.run(u.Event)
	}
	return d.countDispatcher.Run(wid, u)
}

func (d *plainDispatcher) RunPlain(wid int, u *Unit[int], items []Item[int], p *Plain) (int, Verdict) {
	for i := range items {
		u.ID, u.Items, u.Event = p.Start(), items[i:i+1:i+1], items[i].Event
		if v := d.Run(wid, u); v.Outcome != Handled {
			return i, v
		}
	}
	return len(items), Verdict{Outcome: Handled}
}

// TestWaitingProducersGetRoomDuringAPlainStretch fills a shard while its
// worker is held, has producers wait for room, then lets the worker run
// the queued items in a plain stretch whose last handler waits for those
// producers: each finished item's room must go to them at once, as
// between steps, not when the stretch ends (which here would be never).
func TestWaitingProducersGetRoomDuringAPlainStretch(t *testing.T) {
	const gateEv, lastEv, producers = -1, -2, 3
	gate, started := make(chan struct{}), make(chan struct{})
	pushed := make(chan struct{})
	waited := make(chan bool, 1)
	d := &plainDispatcher{run: func(ev int) {
		switch ev {
		case gateEv:
			close(started)
			<-gate
		case lastEv:
			select {
			case <-pushed:
				waited <- true
			case <-time.After(10 * time.Second):
				waited <- false
			}
		}
	}}
	e, _ := startWith(t, Config{Workers: 1, Shards: 1, QueueSize: 16}, d)
	if e.workers[0].plain == nil {
		t.Fatal("the worker runs no plain stretches")
	}

	push := func(ev int, wait context.Context) PushResult {
		return e.Push(&Item[int]{Event: ev, Key: 1}, nil, wait)
	}
	if push(gateEv, nil) != Accepted {
		t.Fatal("push refused")
	}
	<-started
	// The gate in hand and 15 queued, the last one lastEv: full.
	for i := range 14 {
		if push(i, nil) != Accepted {
			t.Fatalf("push %d refused", i)
		}
	}
	if push(lastEv, nil) != Accepted || push(100, nil) != Full {
		t.Fatal("the shard does not hold 16 items")
	}
	var wg sync.WaitGroup
	for i := range producers {
		wg.Go(func() {
			if res := push(200+i, context.Background()); res != Accepted {
				t.Errorf("producer %d: %v", i, res)
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.spaceWaiters.Load() < producers {
		if time.Now().After(deadline) {
			t.Fatalf("%d producers wait for room, want %d", e.spaceWaiters.Load(), producers)
		}
		runtime.Gosched()
	}
	go func() {
		wg.Wait()
		close(pushed)
	}()
	close(gate)
	if !<-waited {
		t.Fatal("producers still wait for room that finished items of the stretch hold")
	}
}

// TestPlainStretchIsInStatsOnceIdle checks that a plain stretch's runs are
// timed before its last item counts as finished: once the engine looks
// idle, its latency histogram holds every run.
func TestPlainStretchIsInStatsOnceIdle(t *testing.T) {
	e, _ := startWith(t, Config{Workers: 1, Shards: 1, QueueSize: 16}, &plainDispatcher{})
	w := e.workers[0]
	recorded := func() uint64 {
		var hist [histBuckets]uint64
		for i := range w.lat {
			w.lat[i].addTo(&hist)
		}
		var n uint64
		for _, c := range hist {
			n += c
		}
		return n
	}
	const rounds = 20000
	missed := 0
	for i := range rounds {
		if e.Push(&Item[int]{Event: i, Key: 1}, nil, nil) != Accepted {
			t.Fatal("push refused")
		}
		for !Idle(e) {
			runtime.Gosched()
		}
		if recorded() < uint64(i+1) {
			missed++
		}
	}
	if missed > 0 {
		t.Fatalf("%d of %d times the engine was idle with its last run not in the latency histogram", missed, rounds)
	}
}
