package eventbus

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// RetryPolicy says how often and how fast a failed handler is retried.
// Zero fields take the defaults {MaxAttempts: 3, InitialBackoff: 10ms,
// MaxBackoff: 1s, Jitter: 0.2}.
type RetryPolicy struct {
	// MaxAttempts counts all attempts of a handler, the first included:
	// 1 means no retry.
	MaxAttempts int
	// InitialBackoff is the wait before the second attempt; each further
	// wait doubles, up to MaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// Jitter spreads each wait at random by ± that fraction (at most 1);
	// a negative Jitter means none.
	Jitter float64
}

var defaultRetry = RetryPolicy{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: time.Second, Jitter: 0.2}

func (p RetryPolicy) validate(where string) error {
	switch {
	case p.MaxAttempts < 0:
		return fmt.Errorf("eventbus: %s: RetryPolicy.MaxAttempts is negative (%d)", where, p.MaxAttempts)
	case p.InitialBackoff < 0:
		return fmt.Errorf("eventbus: %s: RetryPolicy.InitialBackoff is negative (%v)", where, p.InitialBackoff)
	case p.MaxBackoff < 0:
		return fmt.Errorf("eventbus: %s: RetryPolicy.MaxBackoff is negative (%v)", where, p.MaxBackoff)
	case p.Jitter > 1:
		return fmt.Errorf("eventbus: %s: RetryPolicy.Jitter is above 1 (%v)", where, p.Jitter)
	}
	return nil
}

// withDefaults fills zero fields.
func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = defaultRetry.MaxAttempts
	}
	if p.InitialBackoff == 0 {
		p.InitialBackoff = defaultRetry.InitialBackoff
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = max(defaultRetry.MaxBackoff, p.InitialBackoff)
	}
	if p.Jitter == 0 {
		p.Jitter = defaultRetry.Jitter
	}
	return p
}

// backoff returns the wait after the failed attempt number failed (from 1).
func (p RetryPolicy) backoff(failed int) time.Duration {
	d := p.InitialBackoff
	for i := 1; i < failed && d < p.MaxBackoff; i++ {
		if d > math.MaxInt64/2 {
			d = math.MaxInt64
			break
		}
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	if p.Jitter > 0 {
		// In floating point, so that huge backoffs cannot overflow.
		j := float64(d) * (1 + (rand.Float64()*2-1)*p.Jitter)
		if j >= math.MaxInt64 { // float64(MaxInt64) is 2^63: out of range
			d = math.MaxInt64
		} else {
			d = time.Duration(j)
		}
	}
	return max(d, 0)
}
