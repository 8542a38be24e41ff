package dashboard

import (
	"net/http"
	"time"
)

// SetSampleInterval makes the sampler tick every d and returns a function
// that restores the interval.
func SetSampleInterval(d time.Duration) (restore func()) {
	old := sampleInterval
	sampleInterval = d
	return func() { sampleInterval = old }
}

// SamplerRunning reports whether h's sampler has a loop running or not
// yet returned.
func SamplerRunning(h http.Handler) bool {
	s := h.(*handler).sampler
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		return true
	}
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// CSRFToken is the process's token.
func CSRFToken() string { return csrfToken() }
