package benchmarks

import (
	"context"
	"errors"
	"time"

	"github.com/imbus/eventbus"
)

// oursPeer is the bus with its defaults: GOMAXPROCS (at least 4) workers
// per pool, QueueSize 1024, no middleware, no observer. Stage 1 runs in the
// user pool (EventOnSend), the follow-on stage in the channel pool
// (EventChannelDistribute), added with the handler's ctx; with a third stage
// (FullFlow) its handler adds the push events to the pusher pool
// (EventPushOnline, keyed by the message's channel), with its ctx too. It
// waits with bus.WaitIdle.
var oursPeer = peer{name: "ours", start: startOurs}

func startOurs(w *workload) (*runner, error) {
	bus, err := eventbus.New(eventbus.WithLogger(quiet))
	if err != nil {
		return nil, err
	}
	if w.sc.followOn {
		_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
			return bus.AddEvent(ctx, ev.Frame.(*frame).next)
		})
		switch {
		case err != nil:
		case w.sc.fanOut > 0:
			_, err = eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
				for _, push := range w.pushesOf(ev) {
					if err := bus.AddEvent(ctx, push); err != nil {
						return err
					}
				}
				return nil
			})
			if err == nil {
				_, err = eventbus.Register(bus, eventbus.EventPushOnline, func(ctx context.Context, ev *eventbus.PushContext) error {
					w.handle3(ev)
					return nil
				})
			}
		default:
			_, err = eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
				w.handle2(ev)
				return nil
			})
		}
	} else {
		_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
			w.handle(ev)
			return nil
		})
	}
	if err == nil {
		err = bus.Start()
	}
	stop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return bus.Close(ctx)
	}
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	ctx := context.Background()
	return &runner{
		add:  func(ev *eventbus.UserContext) error { return bus.AddEvent(ctx, ev) },
		wait: bus.WaitIdle,
		stop: stop,
	}, nil
}
