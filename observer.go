package eventbus

import "time"

// Outcome is what an Observation reports.
type Outcome uint8

// Outcomes reported to an Observer.
const (
	OutcomeHandled      Outcome = iota + 1 // the chain ran to its end
	OutcomeStopped                         // a handler returned ErrStopChain
	OutcomeRetried                         // an attempt failed (Err); a retry is scheduled
	OutcomeDeadLettered                    // the bus gave up on the event
)

func (o Outcome) String() string {
	switch o {
	case OutcomeHandled:
		return "handled"
	case OutcomeStopped:
		return "stopped"
	case OutcomeRetried:
		return "retried"
	case OutcomeDeadLettered:
		return "dead-lettered"
	}
	return "unknown"
}

// Observation describes one run of an event's chain or of a subscriber
// (Subscriber says which), or a dead letter.
// Every failed attempt is reported, as OutcomeRetried or, if it was the
// last, OutcomeDeadLettered, with the error in Err.
type Observation struct {
	Pool Pool
	Type EventType
	// TypeName is the type's name as Bus.TypeName gives it, so that an
	// Observer made before its bus still names defined types.
	TypeName string
	Outcome  Outcome
	Handler  string // the handler that failed or stopped the chain, if any
	// Subscriber is the subscriber's name for a run of a subscriber
	// (Subscribe), "" for a run of the chain.
	Subscriber string
	Attempt    int // attempt number of that handler
	Events     int // original events in the run: more than 1 for a batch
	// Queued is how long the event waited from AddEvent to this run;
	// InHandler is how long this run of the chain took.
	Queued, InHandler time.Duration
	Err               error
}

// Observer receives an Observation for every run of a chain or subscriber, so metrics
// systems (Prometheus, OpenTelemetry…) can be wired without this module
// depending on them. Observe is called on the bus's goroutines (workers
// and, for the events a Close whose ctx ended gives up, a goroutine that
// dead-letters them after Close has returned), never on the caller of
// Close; calls may be concurrent. It must be fast; a panic in it is
// recovered and logged.
type Observer interface {
	Observe(o Observation)
}
