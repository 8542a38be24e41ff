package natsbridge

import (
	"context"
	"fmt"

	"github.com/imbus/eventbus"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// send is the bus's Outbound route for the bridged types: it publishes ev
// to its partition's subject and returns once JetStream has stored it.
// Publishes are asynchronous on the wire (many callers share the
// connection, each waiting only for its own ack); at most Config.Window
// are in flight. When the window is full, send waits for room until ctx
// ends: the error then wraps eventbus.ErrQueueFull and ctx's error, as a
// full bus would.
//
// When ctx ends while the ack is outstanding, send returns ctx's error
// and the event may or may not be stored (a caller that adds it again
// may make a duplicate: delivery is at-least-once). Its window slot is
// freed at once; the JetStream context's own limit on pending acks
// (WithPublishAsyncMaxPending) still bounds what the client holds.
func (br *Bridge) send(ctx context.Context, ev eventbus.Event) error {
	t, err := eventType(ev)
	if err != nil {
		return err
	}
	key, err := br.bus.StableKey(ev)
	if err != nil {
		return err
	}
	data, err := br.bus.EncodeEvent(ev)
	if err != nil {
		return fmt.Errorf("natsbridge: encode %s: %w", br.bus.TypeName(t), err)
	}
	subject := br.subjects[t][key%uint64(br.cfg.Partitions)]

	select {
	case br.window <- struct{}{}:
	default:
		if !eventbus.MayWait(ctx) { // TryAddEvent: no waiting for room
			br.stats.publishErrors.Add(1)
			return fmt.Errorf("%w: natsbridge: publish window full (%d in flight)", eventbus.ErrQueueFull, br.cfg.Window)
		}
		select {
		case br.window <- struct{}{}:
		case <-ctx.Done():
			br.stats.publishErrors.Add(1)
			return fmt.Errorf("%w: natsbridge: publish window full (%d in flight): %w",
				eventbus.ErrQueueFull, br.cfg.Window, ctx.Err())
		}
	}
	defer func() { <-br.window }()

	f, err := br.js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: data},
		jetstream.WithExpectStream(br.cfg.Stream))
	if err != nil {
		br.stats.publishErrors.Add(1)
		br.log.Error("natsbridge: publish failed", "subject", subject, "err", err)
		return fmt.Errorf("natsbridge: publish %s: %w", subject, err)
	}
	select {
	case <-f.Ok():
		br.stats.published.Add(1)
		return nil
	case err := <-f.Err():
		br.stats.publishErrors.Add(1)
		br.log.Error("natsbridge: publish not stored", "subject", subject, "err", err)
		return fmt.Errorf("natsbridge: publish %s: %w", subject, err)
	case <-ctx.Done():
		br.stats.publishErrors.Add(1)
		return fmt.Errorf("natsbridge: publish %s: store ack not received: %w", subject, ctx.Err())
	}
}

// eventType returns ev's type, or ErrNilEvent.
func eventType(ev eventbus.Event) (eventbus.EventType, error) {
	switch e := ev.(type) {
	case *eventbus.UserContext:
		if e != nil {
			return e.EventType, nil
		}
	case *eventbus.ChannelContext:
		if e != nil {
			return e.EventType, nil
		}
	case *eventbus.PushContext:
		if e != nil {
			return e.EventType, nil
		}
	}
	return 0, eventbus.ErrNilEvent
}
