package benchmarks

import (
	"errors"
	"time"

	"github.com/alitto/pond/v2"
	"github.com/imbus/eventbus"
	"github.com/panjf2000/ants/v2"
)

// Executors: goroutine pools given one task per event. They have no notion
// of a key: tasks run on whichever worker is free, so events of one key
// overtake each other unless the pool has one worker
// (TestExecutorsReorderOneKey). They take no part in the Order scenario.
// The follow-on stage is a second pool (and FullFlow's push stage a third):
// a task that submits to its own full pool deadlocks
// (TestReemitFromHandler).
func withoutOrder(name string) func(scenario) string {
	return func(sc scenario) string {
		if sc.ordered {
			return name + " keeps no per-key order with more than one worker: TestExecutorsReorderOneKey/" + name
		}
		return ""
	}
}

// antsPeer is github.com/panjf2000/ants/v2: a PoolWithFuncGeneric of
// shardCount workers per stage (its fastest path: Invoke passes the event,
// no closure per task); Invoke waits while every worker is busy.
var antsPeer = peer{name: "ants", without: withoutOrder("ants"), start: startAnts}

func startAnts(w *workload) (*runner, error) {
	var stage2 *ants.PoolWithFuncGeneric[*eventbus.ChannelContext]
	var stage3 *ants.PoolWithFuncGeneric[*eventbus.PushContext]
	handle := w.handle
	if w.sc.followOn {
		var err error
		handle2 := w.handle2
		if w.sc.fanOut > 0 {
			if stage3, err = ants.NewPoolWithFuncGeneric(w.shards, w.handle3); err != nil {
				return nil, err
			}
			handle2 = func(ev *eventbus.ChannelContext) {
				for _, p := range w.pushesOf(ev) {
					if err := stage3.Invoke(p); err != nil {
						w.fail(err)
					}
				}
			}
		}
		if stage2, err = ants.NewPoolWithFuncGeneric(w.shards, handle2); err != nil {
			return nil, err
		}
		handle = func(ev *eventbus.UserContext) {
			if err := stage2.Invoke(ev.Frame.(*frame).next); err != nil {
				w.fail(err)
			}
		}
	}
	stage1, err := ants.NewPoolWithFuncGeneric(w.shards, handle)
	if err != nil {
		return nil, err
	}
	return &runner{
		add:  stage1.Invoke,
		wait: w.waitDone,
		stop: func() error {
			err := stage1.ReleaseTimeout(10 * time.Second)
			if stage2 != nil {
				err = errors.Join(err, stage2.ReleaseTimeout(10*time.Second))
			}
			if stage3 != nil {
				err = errors.Join(err, stage3.ReleaseTimeout(10*time.Second))
			}
			return err
		},
	}, nil
}

// pondPeer is github.com/alitto/pond/v2: a pool of shardCount workers per
// stage with a bounded queue of shardCount*queueSize tasks (the bus's total
// capacity), given one closure per event with Go (no Task future); Go waits
// while the queue is full.
var pondPeer = peer{name: "pond", without: withoutOrder("pond"), start: startPond}

func startPond(w *workload) (*runner, error) {
	var stage2, stage3 pond.Pool
	if w.sc.followOn {
		stage2 = pond.NewPool(w.shards, pond.WithQueueSize(w.shards*queueSize))
	}
	if w.sc.fanOut > 0 {
		stage3 = pond.NewPool(w.shards, pond.WithQueueSize(w.shards*queueSize))
	}
	stage1 := pond.NewPool(w.shards, pond.WithQueueSize(w.shards*queueSize))
	add := func(ev *eventbus.UserContext) error {
		return stage1.Go(func() { w.handle(ev) })
	}
	switch {
	case stage3 != nil:
		add = func(ev *eventbus.UserContext) error {
			return stage1.Go(func() {
				next := ev.Frame.(*frame).next
				if err := stage2.Go(func() {
					for _, p := range w.pushesOf(next) {
						if err := stage3.Go(func() { w.handle3(p) }); err != nil {
							w.fail(err)
						}
					}
				}); err != nil {
					w.fail(err)
				}
			})
		}
	case stage2 != nil:
		add = func(ev *eventbus.UserContext) error {
			return stage1.Go(func() {
				next := ev.Frame.(*frame).next
				if err := stage2.Go(func() { w.handle2(next) }); err != nil {
					w.fail(err)
				}
			})
		}
	}
	return &runner{
		add:  add,
		wait: w.waitDone,
		stop: func() error {
			stage1.StopAndWait()
			if stage2 != nil {
				stage2.StopAndWait()
			}
			if stage3 != nil {
				stage3.StopAndWait()
			}
			return nil
		},
	}, nil
}
