package natsbridge

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/imbus/eventbus"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// send is the bus's Outbound route for the bridged types: it publishes ev
// to its partition's subject and returns once JetStream has stored it.
// Publishes are asynchronous on the wire (many callers share the
// connection, each waiting only for its own ack); at most Config.Window
// are in flight. When the window is full, send waits for room; the error
// of a wait that ends wraps eventbus.ErrQueueFull, as a full bus's would.
//
// A wait (for room, then for the store ack) ends, at the latest:
//   - when ctx ends (ctx's error);
//   - at once when the connection is closed (nats.ErrConnectionClosed);
//   - at once, for an add from outside a handler, when the bridge or the
//     bus begins closing (eventbus.ErrClosed and ErrClosed): as the bus
//     refuses outside adds then, while follow-on adds of handlers still
//     in the bus go on;
//   - after Config.PublishTimeout in all (ErrPublishTimeout, wrapping
//     nats.ErrDisconnected while the connection is reconnecting).
//
// When a wait for the store ack ends, the event may or may not be
// stored (a caller that adds it again may make a duplicate: delivery is
// at-least-once). Its window slot is freed at once; the JetStream
// context's own limit on pending acks (WithPublishAsyncMaxPending) still
// bounds what the client holds.
func (br *Bridge) send(ctx context.Context, ev eventbus.Event) error {
	t, err := eventType(ev)
	if err != nil {
		return err
	}
	key, err := br.bus.StableKey(ev)
	if err != nil {
		return err
	}
	subject := br.subjects[t][key%uint64(br.cfg.Partitions)]
	w := waiter{br: br, ctx: ctx, subject: subject}
	defer w.release()
	if isClosed(br.closingCh) && w.outside() {
		br.stats.publishErrors.Add(1)
		return w.closedErr("the bridge is closed")
	}
	data, err := br.bus.EncodeEvent(ev)
	if err != nil {
		return fmt.Errorf("natsbridge: encode %s: %w", br.bus.TypeName(t), err)
	}

	select {
	case br.window <- struct{}{}:
	default:
		if !eventbus.MayWait(ctx) { // TryAddEvent: no waiting for room
			br.stats.publishErrors.Add(1)
			return fmt.Errorf("%w: natsbridge: publish window full (%d in flight)", eventbus.ErrQueueFull, br.cfg.Window)
		}
		if err := w.forRoom(); err != nil {
			br.stats.publishErrors.Add(1)
			return err
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
	if err := w.forAck(f); err != nil {
		br.stats.publishErrors.Add(1)
		return err
	}
	br.stats.published.Add(1)
	return nil
}

// pollEvery is how often a waiting add checks whether the connection has
// closed and whether PublishTimeout has passed: how promptly it notices.
const pollEvery = 25 * time.Millisecond

// timers are reused by waiting adds (one per add in flight).
var timers sync.Pool

// waiter bounds the waits of one add (see send).
type waiter struct {
	br      *Bridge
	ctx     context.Context
	subject string
	start   time.Time   // of the first wait; zero before
	timer   *time.Timer // nil before the first wait
	follow  int8        // 0: not known yet; 1: a follow-on add; -1: from outside
}

// outside reports whether the add comes from outside a handler (a
// follow-on add carries the handler's ctx).
func (w *waiter) outside() bool {
	if w.follow == 0 {
		w.follow = -1
		if _, ok := eventbus.CallInfoFrom(w.ctx); ok {
			w.follow = 1
		}
	}
	return w.follow < 0
}

// arm starts (or restarts) the poll timer, and returns the channels that
// end an outside add's wait (nil for a follow-on add: never ready).
func (w *waiter) arm() (bridgeClosing, busClosing <-chan struct{}) {
	if w.timer == nil {
		w.start = time.Now()
		if t, ok := timers.Get().(*time.Timer); ok {
			t.Reset(pollEvery)
			w.timer = t
		} else {
			w.timer = time.NewTimer(pollEvery)
		}
	}
	if w.outside() {
		return w.br.closingCh, w.br.bus.Closing()
	}
	return nil, nil
}

func (w *waiter) release() {
	if w.timer != nil {
		w.timer.Stop()
		timers.Put(w.timer)
		w.timer = nil
	}
}

// tick runs when the poll timer fires: an error once the connection is
// closed or PublishTimeout has passed, else the timer is re-armed.
func (w *waiter) tick(what string, cause error) error {
	nc := w.br.js.Conn()
	if nc.IsClosed() {
		return fmt.Errorf("natsbridge: publish %s: waiting for %s: %w", w.subject, what, nats.ErrConnectionClosed)
	}
	waited := time.Since(w.start)
	if left := w.br.cfg.PublishTimeout - waited; left > 0 {
		w.timer.Reset(min(left, pollEvery))
		return nil
	}
	status := nc.Status()
	if status != nats.CONNECTED {
		cause = nats.ErrDisconnected
	}
	return fmt.Errorf("%w: %s: no %s within %v (connection %s): %w",
		ErrPublishTimeout, w.subject, what, w.br.cfg.PublishTimeout, status, cause)
}

func (w *waiter) closedErr(why string) error {
	return fmt.Errorf("natsbridge: publish %s: %w (%s): %w", w.subject, eventbus.ErrClosed, why, ErrClosed)
}

// forRoom waits for a slot of the publish window.
func (w *waiter) forRoom() error {
	br := w.br
	for {
		bridgeClosing, busClosing := w.arm()
		select {
		case br.window <- struct{}{}:
			return nil
		case <-w.ctx.Done():
			return fmt.Errorf("%w: natsbridge: publish window full (%d in flight): %w",
				eventbus.ErrQueueFull, br.cfg.Window, w.ctx.Err())
		case <-bridgeClosing:
			return w.closedErr("the bridge is closing")
		case <-busClosing:
			return w.closedErr("the bus is closing")
		case <-w.timer.C:
			if err := w.tick("room in the publish window", eventbus.ErrQueueFull); err != nil {
				return err
			}
		}
	}
}

// forAck waits for the store ack of f.
func (w *waiter) forAck(f jetstream.PubAckFuture) error {
	br := w.br
	for {
		bridgeClosing, busClosing := w.arm()
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			br.log.Error("natsbridge: publish not stored", "subject", w.subject, "err", err)
			return fmt.Errorf("natsbridge: publish %s: %w", w.subject, err)
		case <-w.ctx.Done():
			return fmt.Errorf("natsbridge: publish %s: store ack not received: %w", w.subject, w.ctx.Err())
		case <-bridgeClosing:
			return w.closedErr("the bridge is closing; the event may be stored")
		case <-busClosing:
			return w.closedErr("the bus is closing; the event may be stored")
		case <-w.timer.C:
			if err := w.tick("store ack", context.DeadlineExceeded); err != nil {
				return err
			}
		}
	}
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
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
