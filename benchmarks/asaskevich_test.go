package benchmarks

import (
	"strconv"

	EventBus "github.com/asaskevich/EventBus"
	"github.com/imbus/eventbus"
)

// asaskevichPeer is github.com/asaskevich/EventBus with SubscribeAsync:
// Publish starts a goroutine per event and handler (through reflection).
// Non-transactional handlers run concurrently and keep no order
// (TestAsyncPeersReorderOneKey), so in the Order scenario it runs in its
// ordered mode: transactional handlers, one topic per shard, where Publish
// waits until the topic's previous event is handled. That mode deadlocks
// when a handler publishes to its own topic (TestReemitFromHandler), so the
// other scenarios use the default mode: in FollowOn and FullFlow one topic
// per stage ("user", "channel", "push"), each handler publishing the next
// stage's events from its own goroutine.
var asaskevichPeer = peer{name: "asaskevich", start: startAsaskevich}

func startAsaskevich(w *workload) (*runner, error) {
	bus := EventBus.New()
	topic := func(ev *eventbus.UserContext) string { return "user" }
	var err error
	switch {
	case w.sc.ordered:
		topics := make([]string, w.shards)
		for s := range topics {
			topics[s] = "user/" + strconv.Itoa(s)
			if err = bus.SubscribeAsync(topics[s], w.handle, true); err != nil {
				return nil, err
			}
		}
		topic = func(ev *eventbus.UserContext) string { return topics[w.shard(ev.Conn.UID())] }
	case w.sc.fanOut > 0:
		err = bus.SubscribeAsync("push", w.handle3, false)
		if err == nil {
			err = bus.SubscribeAsync("channel", func(ev *eventbus.ChannelContext) {
				for _, p := range w.pushesOf(ev) {
					bus.Publish("push", p)
				}
			}, false)
		}
		if err == nil {
			err = bus.SubscribeAsync("user", func(ev *eventbus.UserContext) {
				bus.Publish("channel", ev.Frame.(*frame).next)
			}, false)
		}
	case w.sc.followOn:
		err = bus.SubscribeAsync("channel", w.handle2, false)
		if err == nil {
			err = bus.SubscribeAsync("user", func(ev *eventbus.UserContext) {
				bus.Publish("channel", ev.Frame.(*frame).next)
			}, false)
		}
	default:
		err = bus.SubscribeAsync("user", w.handle, false)
	}
	if err != nil {
		return nil, err
	}
	return &runner{
		add: func(ev *eventbus.UserContext) error {
			bus.Publish(topic(ev), ev)
			return nil
		},
		wait: w.waitDone,
		stop: func() error {
			bus.WaitAsync() // the goroutine of the last event may not have returned yet
			return nil
		},
	}, nil
}
