package eventbus

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// RetryPolicy says how often and how fast a failed handler is retried.
// It is set bus-wide with WithRetry, per pool with PoolConfig.Retry and per
// handler with WithHandlerRetry; the most specific one wins.
//
// Zero values, the one place they are stated:
//
//   - A zero field takes its default; the zero RetryPolicy is the
//     default policy {MaxAttempts: 3, InitialBackoff: 10ms,
//     MaxBackoff: 1s, Jitter: 0.2}.
//   - Jitter 0 is therefore the default 0.2, not "no jitter": a negative
//     Jitter means none.
//   - MaxAttempts 1 means no retry: the first failure goes to the
//     dead-letter sink. NoRetry is that policy, spelled out.
//   - MaxBackoff 0 is the larger of 1s and InitialBackoff.
//   - A negative field (Jitter aside) or a Jitter above 1 makes New or
//     Register fail with an error naming the field.
//
// Errors wrapped by Permanent and the ErrStopChain family are never
// retried, whatever the policy.
type RetryPolicy struct {
	// MaxAttempts counts all attempts of a handler, the first included:
	// 1 means no retry. 0 means 3.
	MaxAttempts int
	// InitialBackoff is the wait before the second attempt; each further
	// wait doubles, up to MaxBackoff. 0 means 10ms.
	InitialBackoff time.Duration
	// MaxBackoff caps the wait between attempts. 0 means 1s (or
	// InitialBackoff, if that is larger).
	MaxBackoff time.Duration
	// Jitter spreads each wait at random by ± that fraction (at most 1),
	// so that keys failing together do not retry together. 0 means 0.2;
	// a negative Jitter means none.
	Jitter float64
}

// NoRetry is the retry policy that never retries: a handler's first
// failure sends the event to the dead-letter sink. Use it wherever a
// RetryPolicy goes: WithRetry(eventbus.NoRetry), PoolConfig{Retry:
// &eventbus.NoRetry}, WithHandlerRetry(eventbus.NoRetry). It is a
// variable only so that its address can be taken; do not change it.
var NoRetry = RetryPolicy{MaxAttempts: 1}

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
