package engine

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
)

// runningParent is the parent of follow-on pushes in gateDispatcher: a
// handler that never returns.
var runningParent Parent = new(uint32)

// gateDispatcher commits to a "call" through the worker's gate, and
// records whether it committed after the closer said it had returned.
// Every run pushes a follow-on of its key, so the engine never drains.
type gateDispatcher struct {
	countDispatcher
	e               *Engine[int]
	life            *Lifecycle
	returned        atomic.Bool
	committed, late atomic.Int64
}

func (d *gateDispatcher) Run(wid int, u *Unit[int]) Verdict {
	g := d.e.Gate(wid)
	if !g.Enter(d.life) {
		return Verdict{Outcome: Dead}
	}
	runtime.Gosched() // linger between the check and the commit
	if d.returned.Load() {
		d.late.Add(1)
	}
	d.committed.Add(1)
	g.Entered()
	d.e.Push(&Item[int]{Event: u.Event, Key: u.Key()}, runningParent, nil)
	return Verdict{}
}

// TestGateNoCommitAfterAbortReturns hammers the gates of 8 workers while a
// closer aborts: once Lifecycle.Abort and WaitGates have returned, no
// worker commits to a call.
func TestGateNoCommitAfterAbortReturns(t *testing.T) {
	for round := range 50 {
		d := &gateDispatcher{life: NewLifecycle()}
		d.e = New[int](Config{Workers: 8, Shards: 64, QueueSize: 16}, d, d.life)
		d.e.Start()
		for k := range 32 {
			if res := d.e.Push(&Item[int]{Event: k, Key: uint64(k)}, nil, context.Background()); res != Accepted {
				t.Fatalf("push %d: %v", k, res)
			}
		}
		for d.committed.Load() < 500 {
			runtime.Gosched()
		}
		d.life.BeginClose()
		d.e.Halt()
		d.e.Abort()
		d.life.Abort()
		WaitGates(d.e)
		d.returned.Store(true)
		<-d.e.Exited()
		if n := d.late.Load(); n != 0 {
			t.Fatalf("round %d: %d commits after the closer returned", round, n)
		}
	}
}
