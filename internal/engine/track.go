package engine

import "sync/atomic"

// Tracker follows one accepted event through every delivery made of it
// (the chain's engine and, later, each subscriber's) and reports once, when
// the last of them has finished, how the event ended: the worst outcome of
// its deliveries (Handled < Stopped < Dead < Abandoned).
//
// The root package makes one per event a transport or the journal must
// hear about; untracked events pay nothing.
type Tracker struct {
	left  atomic.Int32
	worst atomic.Uint32
	done  func(Outcome)
}

// NewTracker returns a tracker expecting deliveries finishes, that calls
// done with the event's outcome after the last one.
func NewTracker(deliveries int, done func(Outcome)) *Tracker {
	t := &Tracker{done: done}
	t.left.Store(int32(deliveries))
	return t
}

// Cancel takes back n deliveries that were never made (an add refused
// after the tracker was made); done runs if no delivery is left.
func (t *Tracker) Cancel(n int, o Outcome) {
	for range n {
		t.finish(o)
	}
}

func (t *Tracker) finish(o Outcome) {
	for {
		w := t.worst.Load()
		if uint32(o) <= w || t.worst.CompareAndSwap(w, uint32(o)) {
			break
		}
	}
	if t.left.Add(-1) == 0 && t.done != nil {
		t.done(Outcome(t.worst.Load()))
	}
}
