package benchmarks

import (
	"sync"

	"github.com/imbus/eventbus"
)

// chanPeer is the honest floor: what one would write by hand. One
// goroutine per shard reads a buffered channel (queueSize); the key is
// hashed to a shard at every add, so one key's events keep their order.
// The follow-on stage is a second set of shards fed by the first; in
// FullFlow a third set, fed by the second, takes the push events, each
// hashed by its message's channel at every add.
var chanPeer = peer{name: "chan", start: startChan}

func startChan(w *workload) (*runner, error) {
	var stage1, stage2, stage3 sync.WaitGroup
	in := make([]chan *eventbus.UserContext, w.shards)
	var out []chan *eventbus.ChannelContext
	var push []chan *eventbus.PushContext
	if w.sc.fanOut > 0 {
		push = make([]chan *eventbus.PushContext, w.shards)
		for s := range push {
			push[s] = make(chan *eventbus.PushContext, queueSize)
			stage3.Go(func() {
				for ev := range push[s] {
					w.handle3(ev)
				}
			})
		}
	}
	if w.sc.followOn {
		out = make([]chan *eventbus.ChannelContext, w.shards)
		for s := range out {
			out[s] = make(chan *eventbus.ChannelContext, queueSize)
			stage2.Go(func() {
				for ev := range out[s] {
					if push != nil {
						for _, p := range w.pushesOf(ev) {
							push[w.shard(p.Message.ChannelID)] <- p
						}
						continue
					}
					w.handle2(ev)
				}
			})
		}
	}
	for s := range in {
		in[s] = make(chan *eventbus.UserContext, queueSize)
		stage1.Go(func() {
			for ev := range in[s] {
				if out != nil {
					next := ev.Frame.(*frame).next
					out[w.shard(next.ChannelID)] <- next
					continue
				}
				w.handle(ev)
			}
		})
	}
	return &runner{
		add: func(ev *eventbus.UserContext) error {
			in[w.shard(ev.Conn.UID())] <- ev
			return nil
		},
		wait: w.waitDone,
		stop: func() error {
			for _, c := range in {
				close(c)
			}
			stage1.Wait()
			for _, c := range out {
				close(c)
			}
			stage2.Wait()
			for _, c := range push {
				close(c)
			}
			stage3.Wait()
			return nil
		},
	}, nil
}
