package benchmarks

import (
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/imbus/eventbus"
)

// watermillPeer is watermill's GoChannel Pub/Sub, one topic per shard with
// one subscriber goroutine each that handles and acks its messages in turn
// (OutputChannelBuffer: queueSize). Messages carry an index into the
// pre-allocated events as their payload; Publish copies them. By default
// Publish hands each message to a goroutine of its own, which keeps no
// order (TestAsyncPeersReorderOneKey), so in the Order scenario it runs
// with BlockPublishUntilSubscriberAck, which does keep it — and deadlocks
// when a handler publishes to its own topic (TestReemitFromHandler). Each
// stage has a topic per shard: "user.N", "channel.N" and, in FullFlow,
// "push.N" (keyed by the message's channel).
var watermillPeer = peer{name: "watermill", start: startWatermill}

func idPayload(id int) message.Payload {
	return binary.LittleEndian.AppendUint64(nil, uint64(id))
}

func payloadID(m *message.Message) int { return int(binary.LittleEndian.Uint64(m.Payload)) }

func startWatermill(w *workload) (*runner, error) {
	pubsub := gochannel.NewGoChannel(gochannel.Config{
		OutputChannelBuffer:            queueSize,
		BlockPublishUntilSubscriberAck: w.sc.ordered,
	}, watermill.NopLogger{})
	ctx, cancel := context.WithCancel(context.Background())
	var consumers sync.WaitGroup
	stop := func() error {
		err := pubsub.Close()
		cancel()
		consumers.Wait()
		return err
	}
	consume := func(topic string, handle func(*message.Message)) error {
		msgs, err := pubsub.Subscribe(ctx, topic)
		if err != nil {
			return err
		}
		consumers.Go(func() {
			for m := range msgs {
				handle(m)
				m.Ack()
			}
		})
		return nil
	}

	msgs := make([]*message.Message, len(w.flat))
	for i := range msgs {
		msgs[i] = message.NewMessage(strconv.Itoa(i), idPayload(i))
	}
	users := make([]string, w.shards)
	chans := make([]string, w.shards)
	pushes := make([]string, w.shards)
	for s := range users {
		users[s] = "user." + strconv.Itoa(s)
		chans[s] = "channel." + strconv.Itoa(s)
		pushes[s] = "push." + strconv.Itoa(s)
	}
	var err error
	if w.sc.followOn {
		next := make([]*message.Message, len(w.next))
		for k := range next {
			next[k] = message.NewMessage("next-"+strconv.Itoa(k), idPayload(k))
		}
		handle2 := func(m *message.Message) { w.handle2(w.next[payloadID(m)]) }
		if w.sc.fanOut > 0 {
			push := make([]*message.Message, len(w.pushFlat))
			for i := range push {
				push[i] = message.NewMessage("push-"+strconv.Itoa(i), idPayload(i))
			}
			for s := 0; s < w.shards && err == nil; s++ {
				err = consume(pushes[s], func(m *message.Message) { w.handle3(w.pushFlat[payloadID(m)]) })
			}
			handle2 = func(m *message.Message) {
				k := payloadID(m)
				for i, p := range w.pushes[k] {
					if err := pubsub.Publish(pushes[w.shard(p.Message.ChannelID)], push[k*w.sc.fanOut+i]); err != nil {
						w.fail(err)
					}
				}
			}
		}
		for s := 0; s < w.shards && err == nil; s++ {
			err = errors.Join(
				consume(chans[s], handle2),
				consume(users[s], func(m *message.Message) {
					f := w.flat[payloadID(m)].Frame.(*frame)
					if err := pubsub.Publish(chans[w.shard(f.next.ChannelID)], next[f.key]); err != nil {
						w.fail(err)
					}
				}))
		}
	} else {
		for s := 0; s < w.shards && err == nil; s++ {
			err = consume(users[s], func(m *message.Message) { w.handle(w.flat[payloadID(m)]) })
		}
	}
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	return &runner{
		add: func(ev *eventbus.UserContext) error {
			return pubsub.Publish(users[w.shard(ev.Conn.UID())], msgs[ev.Frame.(*frame).id])
		},
		wait: w.waitDone,
		stop: stop,
	}, nil
}
