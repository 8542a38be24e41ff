package eventbus

import "fmt"

// newPusherPool builds the pusher pool: delivery to receivers, keyed by the
// message's channel so that every receiver sees a channel in order.
func newPusherPool(b *Bus, cfg PoolConfig) *pool {
	seed := b.seed
	return newPool(b, PoolPusher, cfg, func(ev Event) (uint64, error) {
		m := ev.(*PushContext).Message
		if m == nil {
			return 0, fmt.Errorf("%w: PushContext.Message is nil", ErrNilEvent)
		}
		return channelKey(seed, m.ChannelID, m.ChannelType), nil
	}, false)
}
