package eventbus

import (
	"sync"
	"sync/atomic"
	"time"
)

// defaultLogInterval is how often, at most, a handler's failures and its
// dead letters are each logged, unless WithLogInterval says otherwise.
const defaultLogInterval = time.Second

// WithLogInterval bounds the log volume of failures: for each handler
// (per event type), at most one "handler failed" record and one "dead
// letter" record are logged per interval d. The next record logged for
// that handler carries "suppressed": the number of records of its kind
// that were not logged since the previous one. A flood of bad events then
// costs a line per handler per second, not a line per event; Stats and
// the Observer still count every failure, and the dead-letter sink still
// receives every letter.
//
// d == 0 takes the default, one second; d < 0 logs every record.
//
// The check is two atomic operations on the failure path only; successful
// events never reach it.
func WithLogInterval(d time.Duration) Option {
	return optionFunc(func(cfg *config) { cfg.logInterval = d })
}

// logThrottle decides which failure records are logged: at most one per
// key per interval. It is safe for concurrent use and lock-free once a
// key has been seen.
type logThrottle struct {
	every int64 // nanoseconds; <= 0: log everything
	now   func() time.Time
	gates sync.Map // logKey -> *logGate
}

// logKey names what is throttled together: the records of one kind
// (failure or dead letter) of one handler. id is the handler's
// registration id (0 for letters no handler failed, e.g. ErrNoHandler);
// typ keeps those apart per event type.
type logKey struct {
	typ  EventType
	id   uint64
	dead bool
}

// logGate is the state of one key: the time before which records are
// suppressed, and how many were.
type logGate struct {
	next       atomic.Int64
	suppressed atomic.Int64
}

func newLogThrottle(every time.Duration, now func() time.Time) *logThrottle {
	if every == 0 {
		every = defaultLogInterval
	}
	if now == nil {
		now = time.Now
	}
	return &logThrottle{every: int64(every), now: now}
}

// allow reports whether a record for k should be logged now and, if so,
// how many records for k were suppressed since the last one logged.
func (t *logThrottle) allow(k logKey) (suppressed int64, ok bool) {
	if t == nil || t.every <= 0 { // nil: a Bus not built by New logs everything
		return 0, true
	}
	g, found := t.gates.Load(k)
	if !found {
		g, _ = t.gates.LoadOrStore(k, new(logGate))
	}
	gate := g.(*logGate)
	now := t.now().UnixNano()
	next := gate.next.Load()
	if now < next || !gate.next.CompareAndSwap(next, now+t.every) {
		// Counted for the next record logged; a count added just after
		// that record's Swap goes with the one after.
		gate.suppressed.Add(1)
		return 0, false
	}
	return gate.suppressed.Swap(0), true
}

// withSuppressed adds the "suppressed" attribute when records were left
// out.
func withSuppressed(attrs []any, n int64) []any {
	if n > 0 {
		attrs = append(attrs, "suppressed", n)
	}
	return attrs
}
