package natsbridge

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/imbus/eventbus"
)

// Config says which event types cross processes and how. Stream and Types
// are required; every other field has a default, documented on the field.
// Every node of one deployment must use the same Stream, Types and
// Partitions (Start checks Partitions against the stream).
type Config struct {
	// Stream is the JetStream stream that carries the events, and the
	// first token of their subjects (<Stream>.<type>.<partition>). Letters,
	// digits, '-' and '_' only.
	Stream string

	// Types are the bridged event types: an AddEvent of one of them, on
	// any node, is published to the stream, and the node that owns its
	// partition handles it. A user-pool type needs a Codec
	// (eventbus.WithCodec).
	Types []eventbus.EventType

	// Retention is how the stream keeps events, when Start creates it (an
	// existing stream keeps its own). WorkQueue (the default): an ack
	// deletes the event. Limits: acked events stay until MaxAge or
	// MaxBytes, and a full stream refuses publishes (an AddEvent then
	// fails with the server's error) instead of dropping events; about
	// twice the throughput on a file store, as an ack no longer writes a
	// deletion. Under Limits an event not consumed within MaxAge is
	// dropped by the server: choose MaxAge far above any backlog.
	Retention Retention

	// MaxAge and MaxBytes bound a Limits stream (ignored for WorkQueue).
	// Defaults 24h and 1 GiB.
	MaxAge   time.Duration
	MaxBytes int64

	// Partitions is the number of partitions (and durable consumers) the
	// stream is split into; an event's partition is its StableKey modulo
	// Partitions, so events of one key stay in one partition, in order.
	// It caps how many nodes share the work. Default 16.
	Partitions int

	// AckWait is how long JetStream waits for an event's ack before it
	// redelivers it to the partition's owner. The owner drops such a
	// redelivery while the event is still in its bus (it counts only
	// toward MaxDeliver). Default 30s.
	AckWait time.Duration

	// MaxDeliver: an event delivered more than MaxDeliver times without
	// finishing (each delivery outlived AckWait), or whose deliveries
	// never finished MaxDeliver times because the node running it died
	// (counted across takeovers, at least two deaths), goes to the local
	// dead-letter sink (with ErrMaxDeliver) and is not delivered again.
	// Default 5. See the README's MaxDeliver section.
	MaxDeliver int

	// Window is the most publishes in flight (sent, store ack not yet
	// received) on this node; an AddEvent of a bridged type waits for
	// room, bounded by its ctx. Keep it at most the JetStream context's
	// WithPublishAsyncMaxPending (4 000 by default). Default 2048.
	Window int

	// PublishTimeout bounds how long an AddEvent of a bridged type waits
	// for room in the window and for its store ack, in all, while the
	// connection is slow or reconnecting; the error then wraps
	// ErrPublishTimeout (and nats.ErrDisconnected while reconnecting), and
	// the event may or may not be stored. A closed connection, or the
	// bridge or the bus closing, ends the wait at once instead (see
	// Bridge.Close). Default 5s.
	PublishTimeout time.Duration

	// MaxAckPending is the most events of one partition delivered to the
	// owning node and not yet acked (JetStream's MaxAckPending of the
	// partition's consumer). Default 1024.
	MaxAckPending int

	// LeaseTTL is how long a node keeps its partitions without renewing
	// its leases: a node that dies loses them after LeaseTTL and another
	// node takes them over. Renewed every LeaseTTL/3. Default 3s.
	LeaseTTL time.Duration

	// Node names this node in leases and logs. Letters, digits, '-' and
	// '_'; default a random id. Two live nodes must not share a name.
	Node string

	// Logger receives the bridge's logs. Default slog.Default().
	Logger *slog.Logger
}

// Retention is how the stream keeps events (Config.Retention).
type Retention int

const (
	// WorkQueue: an acked event is deleted from the stream.
	WorkQueue Retention = iota
	// Limits: events stay until Config.MaxAge or Config.MaxBytes; a full
	// stream refuses publishes.
	Limits
)

// Defaults of the optional Config fields.
const (
	DefaultPartitions     = 16
	DefaultAckWait        = 30 * time.Second
	DefaultMaxDeliver     = 5
	DefaultWindow         = 2048
	DefaultMaxAckPending  = 1024
	DefaultLeaseTTL       = 3 * time.Second
	DefaultPublishTimeout = 5 * time.Second
	DefaultMaxAge         = 24 * time.Hour
	DefaultMaxBytes       = 1 << 30
)

// Errors of the bridge. Compare with errors.Is.
var (
	// ErrConfig: Config is invalid; the error names the field.
	ErrConfig = errors.New("natsbridge: invalid config")
	// ErrMaxDeliver: the dead letter of an event delivered more than
	// Config.MaxDeliver times.
	ErrMaxDeliver = errors.New("natsbridge: delivered too many times")
	// ErrClosed: Start after Close; or an add from outside a handler
	// while the bridge or the bus is closing (such an error wraps
	// eventbus.ErrClosed too).
	ErrClosed = errors.New("natsbridge: closed")
	// ErrStarted: Start called twice.
	ErrStarted = errors.New("natsbridge: already started")
	// ErrPublishTimeout: an AddEvent of a bridged type had no room or no
	// store ack within Config.PublishTimeout; the event may be stored.
	ErrPublishTimeout = errors.New("natsbridge: publish timed out")
	// ErrPartitions: the stream was made with another partition count.
	ErrPartitions = errors.New("natsbridge: partition count differs from the stream's")
)

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// withDefaults returns cfg with defaults filled in, or an error naming the
// first bad field.
func (cfg Config) withDefaults() (Config, error) {
	bad := func(field, why string, v any) (Config, error) {
		return Config{}, fmt.Errorf("%w: %s %v: %s", ErrConfig, field, v, why)
	}
	if !tokenRE.MatchString(cfg.Stream) {
		return bad("Stream", "want letters, digits, '-' or '_'", fmt.Sprintf("%q", cfg.Stream))
	}
	if len(cfg.Types) == 0 {
		return bad("Types", "no event type to bridge", "[]")
	}
	seen := map[eventbus.EventType]bool{}
	for _, t := range cfg.Types {
		if seen[t] {
			return bad("Types", "listed twice", t)
		}
		seen[t] = true
	}
	if cfg.Node != "" && !tokenRE.MatchString(cfg.Node) {
		return bad("Node", "want letters, digits, '-' or '_'", fmt.Sprintf("%q", cfg.Node))
	}
	type field struct {
		name string
		v    *int
		def  int
	}
	for _, f := range []field{
		{"Partitions", &cfg.Partitions, DefaultPartitions},
		{"MaxDeliver", &cfg.MaxDeliver, DefaultMaxDeliver},
		{"Window", &cfg.Window, DefaultWindow},
		{"MaxAckPending", &cfg.MaxAckPending, DefaultMaxAckPending},
	} {
		switch {
		case *f.v < 0:
			return bad(f.name, "must not be negative", *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	if cfg.Partitions > 4096 {
		return bad("Partitions", "at most 4096", cfg.Partitions)
	}
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
		min  time.Duration
	}{
		{"AckWait", &cfg.AckWait, DefaultAckWait, 10 * time.Millisecond},
		{"LeaseTTL", &cfg.LeaseTTL, DefaultLeaseTTL, 300 * time.Millisecond},
		{"PublishTimeout", &cfg.PublishTimeout, DefaultPublishTimeout, 10 * time.Millisecond},
	} {
		switch {
		case *f.v < 0:
			return bad(f.name, "must not be negative", *f.v)
		case *f.v == 0:
			*f.v = f.def
		case *f.v < f.min:
			return bad(f.name, fmt.Sprintf("at least %v", f.min), *f.v)
		}
	}
	switch {
	case cfg.Retention != WorkQueue && cfg.Retention != Limits:
		return bad("Retention", "want WorkQueue or Limits", cfg.Retention)
	case cfg.MaxAge < 0:
		return bad("MaxAge", "must not be negative", cfg.MaxAge)
	case cfg.MaxBytes < 0:
		return bad("MaxBytes", "must not be negative", cfg.MaxBytes)
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}
