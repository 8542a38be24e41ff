package eventbus

import (
	"fmt"
	"sync/atomic"

	"github.com/imbus/eventbus/internal/engine"
)

// pool is what the three pools share: configuration, the engine that owns
// shards and workers, and the dispatch of handler chains (dispatch.go).
// user_pool.go, channel_pool.go and pusher_pool.go hold what differs.
type pool struct {
	bus   *Bus
	kind  Pool
	cfg   PoolConfig
	retry RetryPolicy
	key   func(Event) (uint64, error)
	// batch holds WithBatch limits by event type; nil when the pool does
	// not batch.
	batch *[256]int
	eng   *engine.Engine[Event]
	slabs []ctxSlab // one per worker, used only by that worker
	// sub is set on a subscriber's lanes: the pool runs that subscriber's
	// handler instead of the type's chain.
	sub *subscriber

	rejected atomic.Uint64
	// overran counts attempts that ran past HandlerTimeout and then
	// returned nil: handled, yet counted in Timeouts.
	overran atomic.Uint64
}

func newPool(b *Bus, kind Pool, cfg PoolConfig, key func(Event) (uint64, error), batching bool) *pool {
	return newEngine(b, kind, cfg.withDefaults(), key, batching, 0, nil)
}

// newEngine builds a pool's dispatcher and engine: a pool's own, or a
// subscriber's lanes (sub set, capacity the pool's).
func newEngine(b *Bus, kind Pool, cfg PoolConfig, key func(Event) (uint64, error), batching bool, capacity int, sub *subscriber) *pool {
	p := &pool{bus: b, kind: kind, cfg: cfg, retry: b.cfg.retry, key: key, sub: sub}
	if cfg.Retry != nil {
		p.retry = cfg.Retry.withDefaults()
	}
	if cfg.KeyFunc != nil {
		kf := cfg.KeyFunc
		p.key = func(ev Event) (key uint64, err error) {
			// A KeyFunc that panics is bad input, as a Conn that panics
			// is: an error for the caller, not a panic.
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("%w: %s pool KeyFunc panicked: %v", ErrNilEvent, kind, r)
				}
			}()
			return kf(ev), nil
		}
	}
	p.slabs = make([]ctxSlab, cfg.Workers)
	var d engine.Dispatcher[Event] = p
	if b.observer != nil {
		d = observedPool{p}
	}
	p.eng = engine.New[Event](engine.Config{
		Batching:  batching,
		Observe:   b.observer != nil,
		Workers:   cfg.Workers,
		Shards:    cfg.Shards,
		QueueSize: cfg.QueueSize,
		Capacity:  capacity,
		Insider:   func() bool { return b.inPool(kind) },
		ErrClosed: ErrClosed,
	}, d, b.life)
	return p
}
