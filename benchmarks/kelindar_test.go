package benchmarks

import (
	"context"

	"github.com/imbus/eventbus"
	"github.com/kelindar/event"
)

// kelindarPeer is github.com/kelindar/event: one consumer goroutine per
// subscription, fed by a publisher that appends to its queue. One
// subscription gets every event of its type, so to run keys in parallel
// each shard is an event type of its own (SubscribeTo), and an event's
// Type() is its key's shard: one key keeps its order. The dispatcher wakes
// consumers on a 500 µs ticker, not on publish.
var kelindarPeer = peer{name: "kelindar", start: startKelindar}

// kUser and kChannel carry the bus's events through the dispatcher; their
// type number is their shard (stage 2 numbers follow stage 1's, stage 3's
// follow stage 2's).
type kUser struct {
	shard uint32
	ev    *eventbus.UserContext
}

func (e kUser) Type() uint32 { return e.shard }

type kChannel struct {
	shard uint32
	ev    *eventbus.ChannelContext
}

func (e kChannel) Type() uint32 { return e.shard }

type kPush struct {
	shard uint32
	ev    *eventbus.PushContext
}

func (e kPush) Type() uint32 { return e.shard }

func startKelindar(w *workload) (*runner, error) {
	d := event.NewDispatcher()
	n := uint32(w.shards)
	var subs []context.CancelFunc
	for s := range n {
		switch {
		case w.sc.fanOut > 0:
			subs = append(subs, event.SubscribeTo(d, 1+2*n+s, func(e kPush) { w.handle3(e.ev) }))
			subs = append(subs, event.SubscribeTo(d, 1+n+s, func(e kChannel) {
				for _, p := range w.pushesOf(e.ev) {
					event.Publish(d, kPush{shard: 1 + 2*n + uint32(w.shard(p.Message.ChannelID)), ev: p})
				}
			}))
		case w.sc.followOn:
			subs = append(subs, event.SubscribeTo(d, 1+n+s, func(e kChannel) { w.handle2(e.ev) }))
		}
		if w.sc.followOn {
			subs = append(subs, event.SubscribeTo(d, 1+s, func(e kUser) {
				next := e.ev.Frame.(*frame).next
				event.Publish(d, kChannel{shard: 1 + n + uint32(w.shard(next.ChannelID)), ev: next})
			}))
			continue
		}
		subs = append(subs, event.SubscribeTo(d, 1+s, func(e kUser) { w.handle(e.ev) }))
	}
	return &runner{
		add: func(ev *eventbus.UserContext) error {
			event.Publish(d, kUser{shard: 1 + uint32(w.shard(ev.Conn.UID())), ev: ev})
			return nil
		},
		wait: w.waitDone,
		stop: func() error {
			// Neither Unsubscribe nor Close wakes a consumer: its goroutine
			// stays parked in (*consumer).Listen (see TestMain).
			for _, cancel := range subs {
				cancel()
			}
			return d.Close()
		},
	}, nil
}
