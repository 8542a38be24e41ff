package engine

import (
	"runtime"
	"sync/atomic"
)

// Gate is one worker's way into user code that must never start after a
// bus that gave up draining (Lifecycle.Abort) has said so: a handler call.
//
// The worker opens the gate (Enter), which fails once the bus aborted, then
// prepares the call and closes the gate (Entered) right before it. The
// closer of the bus, after Lifecycle.Abort, waits (WaitGates) until every
// gate is closed. Both sides use sequentially consistent atomics (Enter
// stores, then loads the abort flag; Abort stores the flag, then WaitGates
// loads the gates), so either the worker sees the abort and gives up, or
// the closer sees the gate open and waits until the worker has committed to
// the call: every call the closer does not wait for either was committed
// to before it looked, or is never made. What remains after Entered is the
// call instruction itself (no lock, allocation or system call).
//
// Cost: two uncontended atomic stores and one load per handler call; the
// gate sits in its worker's own memory, so workers do not share its line.
type Gate struct {
	open atomic.Uint32
}

// Enter opens the gate, or reports false (gate left closed) when the bus
// has aborted: the caller must then give its unit up instead of calling
// user code. Only the worker that owns the gate calls it.
func (g *Gate) Enter(l *Lifecycle) bool {
	g.open.Store(1)
	if l.aborted.Load() {
		g.open.Store(0)
		return false
	}
	return true
}

// Entered closes the gate: the worker is committed to the call it prepared
// and makes it next. Every Enter that returned true must be followed by
// Entered before any user code runs or the worker blocks.
func (g *Gate) Entered() { g.open.Store(0) }

// Gate returns worker wid's gate.
func (e *Engine[E]) Gate(wid int) *Gate { return &e.workers[wid].gate }

// WaitGates waits until no worker of the engines is between Enter and
// Entered. Call it after Lifecycle.Abort: from then on no worker of these
// engines starts a call it had not committed to. The wait lasts a few
// instructions of each worker (longer only if a worker is descheduled
// there); it never waits for user code.
func WaitGates[E any](engines ...*Engine[E]) {
	for _, e := range engines {
		for _, w := range e.workers {
			for w.gate.open.Load() != 0 {
				runtime.Gosched()
			}
		}
	}
}
