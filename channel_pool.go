package eventbus

import (
	"github.com/imbus/eventbus/internal/engine"
)

// newChannelPool builds the channel pool: storage and fan-out, keyed by
// channel, with opt-in merging of adjacent events (WithBatch).
func newChannelPool(b *Bus, cfg PoolConfig, batch *[256]int) *pool {
	seed := b.seed
	p := newPool(b, PoolChannel, cfg, func(ev Event) (uint64, error) {
		c := ev.(*ChannelContext)
		return channelKey(seed, c.ChannelID, c.ChannelType), nil
	}, len(b.cfg.batch) > 0)
	p.batch = batch
	return p
}

// channelKey is the ordering key of a channel, shared by the channel and
// pusher pools.
func channelKey(seed uint64, id string, typ uint8) uint64 {
	return keyHash(seed, id) ^ (uint64(typ)+1)*connIDSalt
}

// BatchLimit returns the WithBatch limit of the item's type (0: no
// batching).
func (p *pool) BatchLimit(it *engine.Item[Event]) int {
	if p.batch == nil {
		return 0
	}
	return p.batch[it.Tag]
}

// Mergeable returns how many of next continue head's batch, in order:
// same type, same channel. The engine has already checked that the keys
// are equal.
func (p *pool) Mergeable(head *engine.Item[Event], next []engine.Item[Event]) int {
	h, ok := head.Event.(*ChannelContext)
	if !ok {
		return 0
	}
	for i := range next {
		n, ok := next[i].Event.(*ChannelContext)
		if !ok || n.EventType != h.EventType || n.ChannelID != h.ChannelID || n.ChannelType != h.ChannelType {
			return i
		}
	}
	return len(next)
}

// Merge builds the batch's event: a new ChannelContext whose Messages are
// those of every original event, in order, in a new slice.
func (p *pool) Merge(u *engine.Unit[Event]) {
	first := u.Items[0].Event.(*ChannelContext)
	// Room for one message per event, the common case; events with more
	// grow the slice as append does.
	msgs := make([]*Message, 0, len(u.Items))
	for i := range u.Items {
		// One message, the common case, is one store: appending a slice
		// goes through the runtime's typed copy.
		if ms := u.Items[i].Event.(*ChannelContext).Messages; len(ms) == 1 {
			msgs = append(msgs, ms[0])
		} else {
			msgs = append(msgs, ms...)
		}
	}
	u.Event = &ChannelContext{EventType: first.EventType, ChannelID: first.ChannelID,
		ChannelType: first.ChannelType, Messages: msgs}
}
