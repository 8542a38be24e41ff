package eventbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"time"

	"github.com/imbus/eventbus/internal/engine"
)

// observedPool is a pool's dispatcher when the bus has an observer: it
// times each run for Observe. Without one the engine calls the pool's Run
// directly, one call less per event.
type observedPool struct{ *pool }

// Run times p's run of u for the observer.
func (p observedPool) Run(wid int, u *engine.Unit[Event]) engine.Verdict {
	u.Waited = p.eng.Queued(&u.Items[0])
	start := time.Now()
	v := p.pool.Run(wid, u)
	u.Took = time.Since(start)
	return v
}

// Run runs a unit's chain from u.Index: the engine calls it on the worker
// that holds the unit's shard. The chain is loaded on the first attempt and
// kept for every retry.
func (p *pool) Run(wid int, u *engine.Unit[Event]) engine.Verdict {
	ch, _ := u.Chain.(*chain)
	retry := ch != nil
	if !retry {
		ch = p.chainFor(u.Items[0].Tag)
		if ch == nil || len(ch.handlers) == 0 {
			return engine.Verdict{Outcome: engine.Dead, Err: ErrNoHandler}
		}
		u.Chain, u.Index, u.Attempt = ch, 0, 1
	}
	for u.Index < len(ch.handlers) {
		// Derived again for each handler rather than kept across the
		// handler's call: most chains have one handler, and a value kept
		// across a call is saved and restored around it.
		g, first := p.eng.Gate(wid), &u.Items[0]
		// No handler call starts once Close has given up and returned:
		// the gate is closed (Entered) only right before the call, and
		// Close waits for open gates (see engine.Gate).
		if !g.Enter(p.bus.life) {
			return engine.Verdict{Outcome: givenUp(u), Err: closedErr(u.Err)}
		}
		h := &ch.handlers[u.Index]
		if retry {
			u.Attempt++ // the next attempt of the handler that failed
			retry = false
		} else if first.Track != nil {
			u.Prior = priorAttempts(u, h) // h's first attempt in this life
		}
		// A fresh handler context per attempt (see callCtx).
		attempt := u.Attempt + u.Prior
		var c *callCtx
		slab := &p.slabs[wid]
		if first.Ctx == nil {
			c = slab.quick(h, u.ID, attempt)
		}
		if c == nil {
			c = slab.nextSlow(p, handlerRef{h, EventType(first.Tag), int32(u.Index)}, u.ID, attempt, first.Ctx)
		}
		var err error
		timedOut := false
		switch {
		case p.cfg.HandlerTimeout > 0:
			err, timedOut = p.callWithTimeout(c, h, u, g)
		case p.bus.observer != nil:
			err = invokeRecovering(c, c, h, u.Event, g) // the observer times every attempt
		default: // invoke, written out: one call less on every run
			g.Entered()
			err = h.call(c, u.Event)
			c.markReturned()
		}
		if err != nil {
			return p.failed(u, h, err, timedOut)
		}
		u.Index++
		u.Attempt = 1
	}
	return engine.Verdict{Outcome: engine.Handled}
}

// RunPlain runs items one by one, each from the start of its chain, until
// one does not end Handled (see engine.PlainRunner): the engine calls it
// for a stretch of its batch that needs nothing of the worker between
// runs.
func (p *pool) RunPlain(wid int, u *engine.Unit[Event], items []engine.Item[Event], pl *engine.Plain) (int, engine.Verdict) {
	plainCalls := p.cfg.HandlerTimeout == 0 && p.bus.observer == nil
	g, slab, life := p.eng.Gate(wid), &p.slabs[wid], p.bus.life
	for i := range items {
		it := &items[i]
		u.ID, u.Items, u.Event, u.Err = pl.Start(), items[i:i+1:i+1], it.Event, nil
		ch := p.chainFor(it.Tag)
		if !plainCalls || ch == nil || len(ch.handlers) != 1 {
			u.Chain, u.Index, u.Attempt = nil, 0, 0
			if v := p.Run(wid, u); v.Outcome != engine.Handled {
				return i, v
			}
			continue
		}
		// Run's common case written out: one handler, its first attempt.
		u.Chain, u.Index, u.Attempt = ch, 0, 1
		if !g.Enter(life) {
			return i, engine.Verdict{Outcome: engine.Dead, Err: ErrClosed}
		}
		h := &ch.handlers[0]
		// The context as Run makes it, written out: a helper for both
		// would not inline (quick and nextSlow together are too large).
		var c *callCtx
		if it.Ctx == nil {
			c = slab.quick(h, u.ID, 1)
		}
		if c == nil {
			c = slab.nextSlow(p, handlerRef{h, EventType(it.Tag), 0}, u.ID, 1, it.Ctx)
		}
		g.Entered()
		err := h.call(c, it.Event)
		c.markReturned()
		if err != nil {
			return i, p.failed(u, h, err, false)
		}
	}
	return len(items), engine.Verdict{Outcome: engine.Handled}
}

// chainFor returns the chain an item of type tag runs: on a subscriber's
// lane its one handler, otherwise the type's chain.
func (p *pool) chainFor(tag uint8) *chain {
	if p.sub != nil {
		return p.sub.chain.Load()
	}
	return p.bus.chains[tag].Load()
}

// invoke closes the gate g and calls the handler. The context stops
// counting as a running handler's once it returns. It recovers nothing: a
// panic unwinds to the worker, which recovers once for all its runs and
// hands it to Panicked, cheaper than a deferred function per call.
func invoke(ctx context.Context, c *callCtx, h *handlerEntry, ev Event, g *engine.Gate) error {
	g.Entered()
	err := h.call(ctx, ev)
	c.markReturned()
	return err
}

// invokeRecovering is invoke turning a panic into a *PanicError itself, for
// callers that must see every attempt end (HandlerTimeout's timer, the
// observer's timing).
func invokeRecovering(ctx context.Context, c *callCtx, h *handlerEntry, ev Event, g *engine.Gate) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.markReturned()
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return invoke(ctx, c, h, ev, g)
}

// callWithTimeout runs one attempt under HandlerTimeout. An attempt that
// fails after its timeout fired is a timed-out failure; one that overran
// its timeout and still returned nil is handled, and counted in Timeouts
// (overran) so that Stats shows it.
func (p *pool) callWithTimeout(c *callCtx, h *handlerEntry, u *engine.Unit[Event], g *engine.Gate) (error, bool) {
	d := p.cfg.HandlerTimeout
	ctx, cancel := context.WithTimeout(c, d)
	defer cancel()
	// A handler that ignores its context cannot be stopped; say so once it
	// has overstayed twice its timeout.
	slow := time.AfterFunc(min(d, math.MaxInt64/2)*2, func() {
		p.bus.log.Warn("eventbus: handler still running after twice its timeout",
			"pool", string(p.kind), "type", p.bus.TypeName(c.ref().typ),
			"handler", h.name, "timeout", d)
	})
	defer slow.Stop()
	if f := p.bus.beforeCall; f != nil {
		f()
	}
	err := invokeRecovering(ctx, c, h, u.Event, g)
	expired := errors.Is(ctx.Err(), context.DeadlineExceeded)
	if err == nil && expired {
		p.overran.Add(uint64(len(u.Items)))
	}
	return err, err != nil && expired
}

// failed turns a handler's error into a verdict: stop, retry or give up.
func (p *pool) failed(u *engine.Unit[Event], h *handlerEntry, err error, timedOut bool) engine.Verdict {
	// A panic is a failure whatever its value: panic(ErrStopChain) does not
	// stop the chain on purpose, panic(Permanent(err)) is retried.
	pe, panicked := err.(*PanicError)
	if !panicked && errors.Is(err, ErrStopChain) {
		return engine.Verdict{Outcome: engine.Stopped, Err: err}
	}
	u.Err = err
	if u.Prior > 0 { // attempts earlier process lives used (journal)
		u.Attempt += u.Prior
		u.Prior = 0
	}
	if u.Items[0].Track != nil {
		u.Attempt += legacyAttempts(u)
	}
	v := engine.Verdict{Failure: engine.RunFailed}
	if panicked {
		v.Failure |= engine.RunPanicked
	}
	if timedOut {
		v.Failure |= engine.RunTimedOut
	}
	policy := p.retry
	if h.retry != nil {
		policy = h.retry.withDefaults()
	}
	// An abort wins over the attempt count: a last attempt that Close's
	// deadline cut short (its handler returned the cancelled context's
	// error) is given up, so a durable record stays for the next start and
	// a tracked event is reported abandoned, never dead-lettered.
	switch {
	case !panicked && IsPermanent(err):
		v.Outcome, v.Err = engine.Dead, err
	case p.bus.life.Aborted():
		v.Outcome, v.Err = givenUp(u), closedErr(err)
	case u.Attempt >= policy.MaxAttempts:
		v.Outcome, v.Err = engine.Dead, err
	default:
		v.Outcome, v.Delay = engine.Retry, policy.backoff(u.Attempt)
		if p.bus.journal != nil {
			p.persistAttempts(u, h)
		}
	}
	suppressed, log := p.bus.logs.allow(logKey{typ: u.Event.Type(), id: h.id})
	if !log {
		return v
	}
	level := slog.LevelWarn
	if v.Panicked() {
		level = slog.LevelError
	}
	attrs := []any{"pool", string(p.kind), "type", p.bus.TypeName(u.Event.Type()),
		"handler", h.name, "attempt", u.Attempt, "err", err}
	if v.Outcome == engine.Retry {
		attrs = append(attrs, "retry_in", v.Delay)
	}
	if v.Panicked() && pe.Stack != nil {
		attrs = append(attrs, "stack", string(pe.Stack))
	}
	p.bus.log.Log(context.Background(), level, "eventbus: handler failed", withSuppressed(attrs, suppressed)...)
	return v
}

// givenUp is the outcome of a unit the bus gives up at a Close deadline:
// dead-lettered, or abandoned when a tracker (Deliver, the journal) will
// have it delivered again.
func givenUp(u *engine.Unit[Event]) engine.Outcome {
	if u.Items[0].Track != nil {
		return engine.Abandoned
	}
	return engine.Dead
}

// persistAttempts records in the journal the attempts handler h has used
// of the unit's durable events, so that MaxAttempts counts h's attempts
// across process lives (and no other handler's).
func (p *pool) persistAttempts(u *engine.Unit[Event], h *handlerEntry) {
	for i := range u.Items {
		if d := durableOf(&u.Items[i]); d != nil {
			if err := p.bus.journal.SetHandlerAttempts(d.id, h.name, u.Attempt); err != nil {
				p.bus.log.Error("eventbus: journal", "record", d.id, "err", err)
			}
		}
	}
}

// priorAttempts returns how many attempts of handler h earlier process
// lives used of the unit's durable events (the most of any, for a batch).
func priorAttempts(u *engine.Unit[Event], h *handlerEntry) int {
	n := 0
	for i := range u.Items {
		if d := durableOf(&u.Items[i]); d != nil {
			n = max(n, d.prior[h.name])
		}
	}
	return n
}

// legacyAttempts takes the single attempts count that records of an older
// release carry (no per-handler counts), so that it is charged once, to
// the first handler that fails, as that release did.
func legacyAttempts(u *engine.Unit[Event]) int {
	n := 0
	for i := range u.Items {
		if d := durableOf(&u.Items[i]); d != nil && d.legacy.Load() != 0 {
			n = max(n, int(d.legacy.Swap(0)))
		}
	}
	return n
}

// Goexited reports a runtime.Goexit in the current handler as a panic.
func (p *pool) Goexited(wid int, u *engine.Unit[Event]) engine.Verdict {
	return p.callFailed(wid, u, &PanicError{Value: "runtime.Goexit called by handler"})
}

// Panicked reports a panic that left the current handler's call (see
// invoke). It runs before the stack unwinds: the stack trace shows the
// handler.
func (p *pool) Panicked(wid int, u *engine.Unit[Event], r any) engine.Verdict {
	return p.callFailed(wid, u, &PanicError{Value: r, Stack: debug.Stack()})
}

// callFailed ends the current handler's call, which did not return, with
// err: its context no longer counts as running, and the unit fails there.
func (p *pool) callFailed(wid int, u *engine.Unit[Event], err *PanicError) engine.Verdict {
	if c := p.slabs[wid].lastCtx(); c != nil {
		c.markReturned()
	}
	ch, _ := u.Chain.(*chain)
	if ch == nil || u.Index >= len(ch.handlers) {
		return engine.Verdict{Outcome: engine.Dead, Err: err, Failure: engine.RunFailed | engine.RunPanicked}
	}
	return p.failed(u, &ch.handlers[u.Index], err, false)
}

// Idle drops what worker wid keeps of finished events: its context block,
// when producers' values are in it.
func (p *pool) Idle(wid int) { p.slabs[wid].release() }

// current returns the handler the unit is at (the one that failed or
// stopped it), or nil when its chain has not started or has ended.
func current(u *engine.Unit[Event]) *handlerEntry {
	if ch, _ := u.Chain.(*chain); ch != nil && u.Index < len(ch.handlers) {
		return &ch.handlers[u.Index]
	}
	return nil
}

func closedErr(last error) error {
	if last == nil {
		return ErrClosed
	}
	// One line, "eventbus: bus closed: <last>", so that a log record of
	// the dead letter stays on one line; errors.Is finds both.
	return fmt.Errorf("%w: %w", ErrClosed, last)
}

// DeadLetter hands original event i of u to the sink.
func (p *pool) DeadLetter(u *engine.Unit[Event], i int, err error) {
	b := p.bus
	name, attempts, id := "", 0, uint64(0)
	if h := current(u); h != nil && u.Err != nil {
		name, attempts, id = h.name, u.Attempt, h.id
	} else if p.sub != nil {
		// A subscriber's lane runs one handler, the subscriber: its dead
		// letters name it even when none of its attempts failed (a Close
		// deadline), so the sink can tell the chain had the event.
		name = p.sub.name
	}
	ev := u.Items[i].Event
	noteDead(&u.Items[i], name, attempts, err)
	if n, ok := b.logs.allow(logKey{typ: ev.Type(), id: id, dead: true}); ok {
		b.log.Warn("eventbus: dead letter", withSuppressed([]any{"pool", string(p.kind), "type", b.TypeName(ev.Type()),
			"handler", name, "attempts", attempts, "err", err}, n)...)
	}
	b.safely("dead-letter sink", func() {
		b.sink.DeadLetter(&DeadLetter{Event: ev, Err: err, Attempts: attempts, Handler: name, Time: time.Now()})
	})
}

// Observe reports one run of u to the observer.
func (p *pool) Observe(u *engine.Unit[Event], v engine.Verdict) {
	p.observe(u, v, u.Waited)
}

// observe reports one run of u (u.Took long, after waiting queued) to the
// observer.
func (p *pool) observe(u *engine.Unit[Event], v engine.Verdict, queued time.Duration) {
	t := u.Event.Type()
	o := Observation{Pool: p.kind, Type: t, TypeName: p.bus.typeNameLocked(t), Events: len(u.Items),
		Queued: queued, InHandler: u.Took, Attempt: u.Attempt}
	switch v.Outcome {
	case engine.Handled:
		o.Outcome = OutcomeHandled
	case engine.Stopped:
		o.Outcome, o.Err = OutcomeStopped, v.Err
	case engine.Retry:
		o.Outcome, o.Err = OutcomeRetried, u.Err
	case engine.Dead, engine.Abandoned:
		o.Outcome, o.Err = OutcomeDeadLettered, v.Err
	}
	if h := current(u); h != nil && v.Outcome != engine.Handled {
		o.Handler = h.name
	}
	if p.sub != nil {
		o.Subscriber = p.sub.name
	}
	p.bus.safely("observer", func() { p.bus.observer.Observe(o) })
}
