package eventbus

import "time"

// Stats is a snapshot of the bus's counters, per pool.
type Stats struct {
	User, Channel, Pusher PoolStats
	// Subscribers holds each subscriber's counters, keyed by
	// "<type name>/<subscriber name>" (e.g. "OnSend/webhook"), with the
	// same identity as a pool's. Nil when there are none.
	Subscribers map[string]PoolStats
}

// PoolStats are one pool's counters. Gauges are read shard by shard and are
// approximate under load; at rest they are exact and
// Added = Handled + Stopped + DeadLettered + Abandoned + Queued + InFlight +
// Retrying.
type PoolStats struct {
	Workers int
	// Gauges: events waiting in a FIFO (or behind a parked key), taken by a
	// worker, waiting to be retried, and above the shards' capacity (added
	// by handlers, which never wait).
	Queued, InFlight, Retrying, Overflow int64
	// Added events were accepted. Each ends Handled, Stopped or
	// DeadLettered. Failed counts failed attempts, Retried the retries they
	// caused; Panics are failed attempts that panicked. Timeouts counts
	// attempts that ran past HandlerTimeout: failed ones, and ones that
	// returned nil after it (counted Handled too, not Failed). All
	// count original events: a failing batch of n events counts n.
	// Rejected counts adds refused by the WithAdmit function.
	Added, Handled, Stopped, Failed, Retried, DeadLettered, Panics, Timeouts, Rejected uint64
	// Abandoned counts events added with Deliver that a Close deadline
	// gave up without a dead letter (their transport redelivers them).
	Abandoned uint64
	// Latency of one pass of the chain (or of a subscriber's handler),
	// over the last 10 to 20 seconds; see LatencyStats for how it is
	// measured.
	Latency LatencyStats
}

// LatencyStats describe how long runs took in a recent window (the last 10
// to 20 seconds). Every run is counted; P50 and P99 come from a log-linear
// histogram (at most 12.5% off). To spare a clock read per run, a busy
// worker times up to 16 back-to-back runs of one batch with one reading
// and counts each at their mean, so Max is never below the slowest run's
// time and above it by at most the few fast runs timed with it (a 300 ms
// run among 1 µs ones shows as 300 ms). With an Observer (WithObserver)
// every run is timed alone and Max is exact. All are 0 when nothing ran in
// the window.
type LatencyStats struct {
	P50, P99, Max time.Duration
}

// Stats returns the counters of every pool and subscriber. It reads
// counters only (no lock of the hot path) and may be called at any time.
func (b *Bus) Stats() Stats {
	if !b.made() {
		return Stats{}
	}
	st := Stats{User: b.pools[0].stats(), Channel: b.pools[1].stats(), Pusher: b.pools[2].stats()}
	for t := range b.chains {
		if c := b.chains[t].Load(); c != nil {
			for _, s := range c.subs {
				if st.Subscribers == nil {
					st.Subscribers = map[string]PoolStats{}
				}
				st.Subscribers[b.TypeName(EventType(t))+"/"+s.name] = s.lanes.stats()
			}
		}
	}
	return st
}

func (p *pool) stats() PoolStats {
	s := p.eng.Snapshot()
	return PoolStats{
		Workers: s.Workers,
		Queued:  s.Queued, InFlight: s.InFlight, Retrying: s.Retrying, Overflow: s.Overflow,
		Added: s.Added, Handled: s.Handled, Stopped: s.Stopped, Failed: s.Failed,
		Retried: s.Retried, DeadLettered: s.DeadLettered, Panics: s.Panics,
		Timeouts: s.Timeouts + p.overran.Load(), Rejected: p.rejected.Load(), Abandoned: s.Abandoned,
		Latency: LatencyStats{P50: s.P50, P99: s.P99, Max: s.Max},
	}
}
