package eventbus

import (
	"context"
)

// Per-receiver delivery.
//
// A PushContext carries one message for many receivers, and the pusher
// pool keys it by channel: when the write to one receiver of a 500-member
// group fails, retrying the event re-sends the message to the 499 others.
// To deliver and retry per receiver:
//
//  1. give the pusher pool the key of (receiver, channel):
//     eventbus.WithPusherPool(eventbus.PoolConfig{KeyFunc: eventbus.KeyByReceiver});
//  2. emit one PushContext per receiver: AddPerReceiver (or SplitPush and
//     your own adds) instead of one event for the whole group;
//  3. write the pusher handler for one receiver, ev.Subscribers[0].
//
// A failed write then parks only that receiver's key: its later messages
// of that channel wait behind the retry, so each receiver still sees each
// channel in order, while every other receiver goes on at once. The cost
// is one event per receiver instead of one per message.

// KeyByReceiver is a PoolConfig.KeyFunc for the pusher pool that orders
// push events per (receiver, channel) instead of per channel: a
// PushContext with exactly one subscriber is keyed by that subscriber and
// its message's (ChannelID, ChannelType). Events of one receiver in one
// channel run one at a time in add order; different receivers, and one
// receiver's different channels, run in parallel, and a retry holds back
// only its own receiver.
//
// An event with no or several subscribers is keyed by its channel alone,
// so it is not ordered with the single-receiver events of that channel:
// with KeyByReceiver, split every push event of a type (SplitPush,
// AddPerReceiver) or none. A PushContext without a Message, and an event
// that is not a *PushContext, get key 0.
//
// KeyByReceiver hashes two short strings (FNV-1a, the same in every
// process, so Bus.StableKey can partition by it): it does not allocate and
// is safe for concurrent use.
func KeyByReceiver(ev Event) uint64 {
	pc, ok := ev.(*PushContext)
	if !ok || pc == nil || pc.Message == nil {
		return 0
	}
	h := fnvOffset
	if len(pc.Subscribers) == 1 {
		h = h.byte(1).string(pc.Subscribers[0]).byte(0)
	} else {
		h = h.byte(0) // the channel's key stays apart from any receiver's, "" included
	}
	return uint64(h.string(pc.Message.ChannelID).byte(pc.Message.ChannelType))
}

// SplitPush returns one PushContext per receiver of pc, in the order of
// pc.Subscribers: same EventType, same *Message (shared, not copied; no
// handler should modify it), and Subscribers holding that one receiver.
// pc itself is not changed, and the copies do not share pc.Subscribers'
// array, so pc may be reused. It returns nil when pc is nil or has no
// subscribers.
//
// It makes three allocations whatever the number of receivers; it is safe
// for concurrent use as long as pc is not being changed.
func SplitPush(pc *PushContext) []*PushContext {
	if pc == nil || len(pc.Subscribers) == 0 {
		return nil
	}
	n := len(pc.Subscribers)
	subs := make([]string, n)
	copy(subs, pc.Subscribers)
	ctxs := make([]PushContext, n)
	out := make([]*PushContext, n)
	for i := range ctxs {
		ctxs[i] = PushContext{EventType: pc.EventType, Message: pc.Message, Subscribers: subs[i : i+1 : i+1]}
		out[i] = &ctxs[i]
	}
	return out
}

// AddPerReceiver adds one push event per receiver of pc (SplitPush) to e,
// in the order of pc.Subscribers, for a pusher pool keyed with
// KeyByReceiver. Called with a handler's ctx (the usual case: a channel
// handler fanning out), the adds are follow-on events and never wait.
//
// It stops at the first add that fails and returns how many receivers were
// added, pc.Subscribers[:added], with the error: to try again, add only
// pc.Subscribers[added:], so that no receiver gets the message twice.
func AddPerReceiver(ctx context.Context, e Emitter, pc *PushContext) (added int, err error) {
	for _, one := range SplitPush(pc) {
		if err := e.AddEvent(ctx, one); err != nil {
			return added, err
		}
		added++
	}
	return added, nil
}
