package eventbustest

import (
	"context"
	"slices"
	"sync"

	"github.com/imbus/eventbus"
)

// Record is one event a Recorder accepted.
type Record struct {
	Event eventbus.Event
	// Call describes the handler call whose context the event was added
	// with; FromHandler reports whether there was one (a follow-on event,
	// or an event added from a handler run by Run).
	Call        eventbus.CallInfo
	FromHandler bool
}

// Recorder is an eventbus.Emitter that records events instead of
// dispatching them. Give it to a handler that emits follow-on events in
// place of the *eventbus.Bus, then check what the handler emitted.
//
// The zero value is ready to use. All methods are safe for concurrent use;
// an AddEvent that returns nil happens before Records, Events, OfType, Len
// and Wait report its event. Events are recorded as given (pointers, not
// copies).
type Recorder struct {
	mu      sync.Mutex
	records []Record
	err     error
	changed signal
}

var _ eventbus.Emitter = (*Recorder)(nil)

// AddEvent records ev with the CallInfo of ctx, if any, and returns nil.
// Like the bus, it refuses a nil event (or a typed nil pointer) with
// eventbus.ErrNilEvent; it returns the error set by FailWith, if any. A
// refused event is not recorded. AddEvent never waits and ignores ctx's
// cancellation, as a follow-on add on a bus does.
func (r *Recorder) AddEvent(ctx context.Context, ev eventbus.Event) error {
	if isNilEvent(ev) {
		return eventbus.ErrNilEvent
	}
	rec := Record{Event: ev}
	if ctx != nil {
		rec.Call, rec.FromHandler = eventbus.CallInfoFrom(ctx)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.records = append(r.records, rec)
	r.changed.broadcast()
	return nil
}

func isNilEvent(ev eventbus.Event) bool {
	switch e := ev.(type) {
	case *eventbus.UserContext:
		return e == nil
	case *eventbus.ChannelContext:
		return e == nil
	case *eventbus.PushContext:
		return e == nil
	}
	return true
}

// FailWith makes later AddEvent calls return err and record nothing, as a
// closed or full bus would (for example eventbus.ErrClosed);
// FailWith(nil) makes them succeed again.
func (r *Recorder) FailWith(err error) {
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
}

// Records returns a copy of what was recorded, in the order AddEvent
// accepted it.
func (r *Recorder) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.records)
}

// Events returns the recorded events in order.
func (r *Recorder) Events() []eventbus.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return events(r.records)
}

func events(recs []Record) []eventbus.Event {
	out := make([]eventbus.Event, len(recs))
	for i := range recs {
		out[i] = recs[i].Event
	}
	return out
}

// OfType returns the recorded events of type t, in order.
func (r *Recorder) OfType(t eventbus.EventType) []eventbus.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []eventbus.Event
	for _, rec := range r.records {
		if rec.Event.Type() == t {
			out = append(out, rec.Event)
		}
	}
	return out
}

// Len returns how many events were recorded.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.records)
}

// Wait waits until at least n events were recorded and returns them all,
// in order. When ctx ends first it returns the events so far and an error
// that wraps ctx's and says how many came. Use a ctx with a deadline.
func (r *Recorder) Wait(ctx context.Context, n int) ([]eventbus.Event, error) {
	var out []eventbus.Event
	err := waitFor(ctx, &r.mu, &r.changed, func() (bool, error) {
		if len(r.records) < n {
			return false, nil
		}
		out = events(r.records)
		return true, nil
	})
	if err != nil {
		got := r.Events()
		return got, shortfall("events", len(got), n, err)
	}
	return out, nil
}

// Reset forgets the recorded events; waiters then count from zero. It does
// not clear the error set by FailWith.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.records = nil
	r.mu.Unlock()
}
