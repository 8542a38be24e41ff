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

// SamplerRunning reports whether h's sampler has a loop running.
func SamplerRunning(h http.Handler) bool {
	s := h.(*Dashboard).sampler
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stop != nil
}

// CSRFToken is the process's token.
func CSRFToken() string { return csrfToken() }
