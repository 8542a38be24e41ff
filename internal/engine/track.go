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

	// ID, when not 0, is the unit ID of every unit made of the item (the
	// journal's record id, stable across restarts). Prior is how many
	// attempts earlier process lives used. Info is the creator's.
	ID    uint64
	Prior int
	Info  any
}

// NewTracker returns a tracker expecting deliveries finishes, that calls
// done with the event's outcome after the last one.
func NewTracker(deliveries int, done func(Outcome)) *Tracker {
	t := &Tracker{done: done}
	t.left.Store(int32(deliveries))
	return t
}

// Expect sets how many deliveries the tracker waits for; call it before
// the tracker is shared (before the items are committed).
func (t *Tracker) Expect(deliveries int) { t.left.Store(int32(deliveries)) }

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
