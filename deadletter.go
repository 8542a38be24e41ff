package eventbus

import (
	"sync"
	"time"
)

// DeadLetter is an event the bus gave up on.
type DeadLetter struct {
	Event    Event
	Err      error     // the last error: a handler's, ErrNoHandler or ErrClosed
	Attempts int       // attempts of the handler that failed last (0: none failed)
	Handler  string    // name of that handler, "" if none failed; a subscriber's dead letters always name it
	Time     time.Time // when the bus gave up
}

// DeadLetterSink receives dead letters. It is called from worker goroutines
// (and from Close), possibly concurrently, and should return quickly.
type DeadLetterSink interface {
	DeadLetter(d *DeadLetter)
}

// DeadLetterRing is a DeadLetterSink that keeps the last N dead letters in
// memory. It is the bus's default sink (N = 1024). The zero value keeps the
// last 1024 too. It is safe for concurrent use.
type DeadLetterRing struct {
	mu    sync.Mutex
	buf   []*DeadLetter
	next  int
	total uint64
}

// defaultRingSize is how many letters the bus's default sink and a zero
// DeadLetterRing keep.
const defaultRingSize = 1024

// NewDeadLetterRing returns a ring that keeps the last n dead letters
// (n < 1 keeps one).
func NewDeadLetterRing(n int) *DeadLetterRing {
	return &DeadLetterRing{buf: make([]*DeadLetter, 0, max(n, 1))}
}

// DeadLetter stores d, dropping the oldest letter when the ring is full.
func (r *DeadLetterRing) DeadLetter(d *DeadLetter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	if cap(r.buf) == 0 { // a zero ring
		r.buf = make([]*DeadLetter, 0, defaultRingSize)
	}
	if len(r.buf) < cap(r.buf) {
		r.buf = append(r.buf, d)
		return
	}
	r.buf[r.next] = d
	r.next = (r.next + 1) % len(r.buf)
}

// Letters returns the kept dead letters, oldest first.
func (r *DeadLetterRing) Letters() []*DeadLetter {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*DeadLetter, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}

// Total returns how many dead letters the ring has received, kept or not.
func (r *DeadLetterRing) Total() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}
