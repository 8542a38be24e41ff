package engine

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// stallDispatcher counts runs and blocks the run of event 1 until release
// is closed, after closing started.
type stallDispatcher struct {
	countDispatcher
	started, release chan struct{}
}

func (d *stallDispatcher) Run(wid int, u *Unit[int]) Verdict {
	if u.Event == 1 {
		close(d.started)
		<-d.release
	}
	return d.countDispatcher.Run(wid, u)
}

// TestTrackedItemIsReportedWhenItsProducerStallsAfterPushing checks that a
// worker running a tracked item always tells its tracker, even when the
// item's producer is descheduled right after it unlocked the shard: the
// worker must not take the item for an untracked one and count it handled
// on the fast path.
func TestTrackedItemIsReportedWhenItsProducerStallsAfterPushing(t *testing.T) {
	d := &stallDispatcher{started: make(chan struct{}), release: make(chan struct{})}
	e, _ := startWith(t, Config{Workers: 1, Shards: 1, QueueSize: 8}, d)

	// The worker holds the shard, blocked in the run of event 1, so the
	// tracked item's push finds it held and only appends.
	if e.Push(&Item[int]{Event: 1, Key: 7}, nil, context.Background()) != Accepted {
		t.Fatal("push refused")
	}
	<-d.started
	// The producer of the tracked item stalls after its unlock until the
	// worker has run and counted the item.
	e.afterTrackedPush = func() {
		close(d.release)
		deadline := time.Now().Add(5 * time.Second)
		for e.Unfinished() > 0 && time.Now().Before(deadline) {
			runtime.Gosched()
		}
	}
	reported := make(chan Outcome, 1)
	tr := NewTracker(1, func(o Outcome) { reported <- o })
	if e.Push(&Item[int]{Event: 2, Key: 7, Track: tr}, nil, context.Background()) != Accepted {
		t.Fatal("push refused")
	}
	select {
	case o := <-reported:
		if o != Handled {
			t.Fatalf("tracker told %v, want Handled", o)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the tracked item ran but its tracker was never told")
	}
}
