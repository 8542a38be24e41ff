package eventbus

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"time"
)

// Option configures New.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// PoolConfig configures one pool. Zero fields take the defaults.
type PoolConfig struct {
	// Workers is the number of worker goroutines. Any free worker takes
	// the next shard with work, so a handler that blocks (on I/O, a lock,
	// a slow webhook) holds back only its own shard, until every worker is
	// blocked: size Workers for the number of handlers you expect to be
	// blocked at once, plus the cores you want busy. It is also the
	// default WithConcurrency of the pool's subscribers. Default:
	// GOMAXPROCS, at least 4.
	Workers int
	// QueueSize bounds what one shard holds (queued, in flight or waiting
	// to retry); the pool holds at most Workers × QueueSize. Outside adds
	// wait (AddEvent) or fail with ErrQueueFull (TryAddEvent) while either
	// limit is reached; follow-on adds never wait. Each subscriber of the
	// pool's types has the same two limits, per lane and in all.
	// Default 1024.
	QueueSize int
	// Shards is the number of FIFOs keys hash to, rounded up to a power of
	// two; each subscriber of the pool's types has as many lanes. Each is
	// drained by one worker at a time, so a slow handler also holds back
	// the few keys that share its shard; more shards make that rarer, at
	// about 160 bytes each, and at some speed when many keys spread over
	// them. Default 1024.
	Shards int
	// HandlerTimeout bounds each handler attempt, the pool's subscribers'
	// included, by cancelling its context; the worker still waits for the
	// handler to return. 0 means no timeout.
	HandlerTimeout time.Duration
	// Retry overrides the bus's retry policy for this pool; &NoRetry
	// turns retries off. See RetryPolicy for what zero fields mean.
	Retry *RetryPolicy
	// KeyFunc overrides the pool's ordering key. Events with equal keys run
	// one at a time in add order. KeyByReceiver is one for the pusher
	// pool: per (receiver, channel), so that a failed write is retried for
	// its receiver alone (see SplitPush). It is called for every add, on
	// the producer's goroutine: keep it cheap and safe for concurrent use;
	// if it panics, AddEvent returns an error wrapping ErrNilEvent instead.
	KeyFunc func(Event) uint64
}

const (
	defaultQueueSize = 1024
	defaultShards    = 1024
)

func (c PoolConfig) validate(pool Pool) error {
	where := "With" + poolTitle(pool) + "Pool"
	switch {
	case c.Workers < 0:
		return fmt.Errorf("eventbus: %s: PoolConfig.Workers is negative (%d)", where, c.Workers)
	case c.Shards < 0:
		return fmt.Errorf("eventbus: %s: PoolConfig.Shards is negative (%d)", where, c.Shards)
	case c.QueueSize < 0:
		return fmt.Errorf("eventbus: %s: PoolConfig.QueueSize is negative (%d)", where, c.QueueSize)
	case c.HandlerTimeout < 0:
		return fmt.Errorf("eventbus: %s: PoolConfig.HandlerTimeout is negative (%v)", where, c.HandlerTimeout)
	}
	if c.Retry != nil {
		return c.Retry.validate(where)
	}
	return nil
}

func (c PoolConfig) withDefaults() PoolConfig {
	if c.Workers == 0 {
		c.Workers = max(runtime.GOMAXPROCS(0), 4)
	}
	if c.QueueSize == 0 {
		c.QueueSize = defaultQueueSize
	}
	if c.Shards == 0 {
		c.Shards = defaultShards
	}
	return c
}

func poolTitle(p Pool) string {
	switch p {
	case PoolUser:
		return "User"
	case PoolChannel:
		return "Channel"
	case PoolPusher:
		return "Pusher"
	}
	return string(p)
}

type config struct {
	pools    [3]PoolConfig
	retry    RetryPolicy
	batch    map[EventType]int
	sink     DeadLetterSink
	admit    func(context.Context, Event) error
	logger   *slog.Logger
	observer Observer
	defines  []definition
	codecs   map[EventType]Codec // WithCodec
	journal  Journal             // WithJournal
	durable  [256]bool           // WithJournal's types
	errs     []error

	logInterval time.Duration    // WithLogInterval
	clock       func() time.Time // for the log throttle; nil: time.Now (tests set it)
}

type definition struct {
	t    EventType
	pool Pool
	name string
}

// WithUserPool configures the user pool.
func WithUserPool(c PoolConfig) Option {
	return optionFunc(func(cfg *config) { cfg.pools[0] = c })
}

// WithChannelPool configures the channel pool.
func WithChannelPool(c PoolConfig) Option {
	return optionFunc(func(cfg *config) { cfg.pools[1] = c })
}

// WithPusherPool configures the pusher pool.
func WithPusherPool(c PoolConfig) Option {
	return optionFunc(func(cfg *config) { cfg.pools[2] = c })
}

// WithRetry sets the bus-wide retry policy (WithRetry(NoRetry): none).
// PoolConfig.Retry and WithHandlerRetry override it. Without WithRetry the
// bus uses the zero RetryPolicy, i.e. the defaults RetryPolicy documents.
func WithRetry(p RetryPolicy) Option {
	return optionFunc(func(cfg *config) { cfg.retry = p })
}

// WithBatch lets a channel-pool worker merge up to n events of type t that
// are adjacent in one key's order into one *ChannelContext, owned by the
// bus, whose Messages are those of the events in order. Events' own slices
// are never written. A batch is retried as a unit; if it fails for good,
// each original event goes to the dead-letter sink. Stats count original
// events. t must be a channel-pool type (checked by Start for types defined
// later); n must be at least 1.
func WithBatch(t EventType, n int) Option {
	return optionFunc(func(cfg *config) {
		if n < 1 {
			cfg.errs = append(cfg.errs, fmt.Errorf("eventbus: WithBatch(%v): n must be at least 1, got %d", t, n))
			return
		}
		if p := rangePool(t); t == EventUnknown || (p != "" && p != PoolChannel) {
			cfg.errs = append(cfg.errs, fmt.Errorf("%w: WithBatch(%v): batching is for channel-pool types", ErrWrongPool, t))
			return
		}
		if cfg.batch == nil {
			cfg.batch = make(map[EventType]int)
		}
		cfg.batch[t] = n
	})
}

// WithDeadLetter sets where events the bus gives up on go. The default
// keeps the last 1024 in a DeadLetterRing. Dead letters are also logged
// at Warn level, at most one line per handler per second
// (WithLogInterval).
func WithDeadLetter(sink DeadLetterSink) Option {
	return optionFunc(func(cfg *config) { cfg.sink = sink })
}

// WithAdmit sets a function that runs before every add (follow-on events
// included: CallInfoFrom(ctx) tells them apart). Its error is returned to
// the caller and the event is not added; the pool counts it as Rejected.
// Use it for rate limits and quotas.
func WithAdmit(admit func(ctx context.Context, ev Event) error) Option {
	return optionFunc(func(cfg *config) { cfg.admit = admit })
}

// WithLogger sets the logger for failures, panics, slow handlers and dead
// letters; nothing is logged per successful event, and failures and dead
// letters are each logged at most once per handler per second
// (WithLogInterval). Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(cfg *config) { cfg.logger = l })
}

// WithObserver sets a hook told about every run of a chain.
func WithObserver(obs Observer) Option {
	return optionFunc(func(cfg *config) { cfg.observer = obs })
}

// WithDefine declares event type t for pool p under name, as Bus.Define
// does, when the bus is built: handy where the bus is started right away,
// as eventbustest.NewBus does. New returns Define's error, if any.
func WithDefine(t EventType, p Pool, name string) Option {
	return optionFunc(func(cfg *config) { cfg.defines = append(cfg.defines, definition{t, p, name}) })
}

// WithCodec sets the Codec that encodes and decodes events of user-pool
// type t for the journal (Bus.EncodeEvent, Bus.DecodeEvent): a UserContext
// holds the user's own Conn and Frame types, which only the user can turn
// into bytes. Channel- and pusher-pool contexts need none. t must not be 0
// or a type of the channel or pusher range; c must not be nil. A later
// WithCodec for the same type replaces the earlier one.
func WithCodec(t EventType, c Codec) Option {
	return optionFunc(func(cfg *config) {
		switch p := rangePool(t); {
		case c == nil:
			cfg.errs = append(cfg.errs, fmt.Errorf("eventbus: WithCodec(%v): nil Codec", t))
			return
		case t == EventUnknown:
			cfg.errs = append(cfg.errs, fmt.Errorf("%w: WithCodec: type 0 is reserved", ErrUnknownEventType))
			return
		case p != "" && p != PoolUser:
			cfg.errs = append(cfg.errs, fmt.Errorf("%w: WithCodec(%v): the bus encodes %s-pool contexts itself; a Codec is for user-pool types", ErrWrongPool, t, p))
			return
		}
		if cfg.codecs == nil {
			cfg.codecs = make(map[EventType]Codec)
		}
		cfg.codecs[t] = c
	})
}
