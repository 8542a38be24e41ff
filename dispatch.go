package eventbus

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"runtime/debug"
	"time"

	"github.com/imbus/eventbus/internal/engine"
)

// Run runs a unit's chain from u.Index: the engine calls it on the worker
// that holds the unit's shard. The chain is loaded on the first attempt and
// kept for every retry. With an observer, it times the run for Observe.
func (p *pool) Run(wid int, u *engine.Unit[Event]) engine.Verdict {
	if p.bus.observer == nil {
		return p.run(wid, u)
	}
	u.Waited = p.eng.Queued(&u.Items[0])
	start := time.Now()
	v := p.run(wid, u)
	u.Took = time.Since(start)
	return v
}

func (p *pool) run(wid int, u *engine.Unit[Event]) engine.Verdict {
	ch, _ := u.Chain.(*chain)
	retry := ch != nil
	if !retry {
		if p.sub != nil {
			ch = p.sub.chain.Load() // a subscriber's lane: its one handler
		} else {
			ch = p.bus.chains[u.Event.Type()].Load()
		}
		if ch == nil || len(ch.handlers) == 0 {
			return engine.Verdict{Outcome: engine.Dead, Err: ErrNoHandler}
		}
		u.Chain, u.Index, u.Attempt = ch, 0, 1
	}
	for u.Index < len(ch.handlers) {
		if p.bus.life.Aborted() {
			return engine.Verdict{Outcome: givenUp(u), Err: closedErr(u.Err)}
		}
		if retry {
			u.Attempt++ // the next attempt of the handler that failed
			retry = false
		}
		h := &ch.handlers[u.Index]
		err, timedOut := p.call(wid, u, h)
		if err != nil {
			return p.failed(u, h, err, timedOut)
		}
		u.Index++
		u.Attempt = 1
	}
	return engine.Verdict{Outcome: engine.Handled}
}

// call runs one attempt of one handler with a fresh handler context.
func (p *pool) call(wid int, u *engine.Unit[Event], h *handlerEntry) (err error, timedOut bool) {
	c := p.slabs[wid].next(p, h, u.Items[0].Ctx)
	c.eventID, c.typ = u.ID, u.Event.Type()
	c.index, c.attempt = int32(u.Index), int32(u.Attempt+u.Prior)
	if p.cfg.HandlerTimeout > 0 {
		return p.callWithTimeout(c, h, u.Event)
	}
	return invoke(c, c, h, u.Event), false
}

// invoke calls the handler, turning a panic into a *PanicError. The context
// stops counting as a running handler's once it returns (or exits).
func invoke(ctx context.Context, c *callCtx, h *handlerEntry, ev Event) (err error) {
	defer func() {
		c.returned.Store(true)
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return h.call(ctx, ev)
}

func (p *pool) callWithTimeout(c *callCtx, h *handlerEntry, ev Event) (error, bool) {
	d := p.cfg.HandlerTimeout
	ctx, cancel := context.WithTimeout(c, d)
	defer cancel()
	// A handler that ignores its context cannot be stopped; say so once it
	// has overstayed twice its timeout.
	slow := time.AfterFunc(min(d, math.MaxInt64/2)*2, func() {
		p.bus.log.Warn("eventbus: handler still running after twice its timeout",
			"pool", string(p.kind), "type", p.bus.TypeName(c.typ),
			"handler", h.name, "timeout", d)
	})
	defer slow.Stop()
	err := invoke(ctx, c, h, ev)
	return err, err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded)
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
	if u.Prior > 0 { // attempts an earlier process life used (journal)
		u.Attempt += u.Prior
		u.Prior = 0
	}
	v := engine.Verdict{Failed: true, Panicked: panicked, TimedOut: timedOut}
	policy := p.retry
	if h.retry != nil {
		policy = h.retry.withDefaults()
	}
	switch {
	case (!panicked && IsPermanent(err)) || u.Attempt >= policy.MaxAttempts:
		v.Outcome, v.Err = engine.Dead, err
	case p.bus.life.Aborted():
		v.Outcome, v.Err = givenUp(u), closedErr(err)
	default:
		v.Outcome, v.Delay = engine.Retry, policy.backoff(u.Attempt)
		if p.bus.journal != nil {
			p.persistAttempts(u)
		}
	}
	suppressed, log := p.bus.logs.allow(logKey{typ: u.Event.Type(), id: h.id})
	if !log {
		return v
	}
	level := slog.LevelWarn
	if v.Panicked {
		level = slog.LevelError
	}
	attrs := []any{"pool", string(p.kind), "type", p.bus.TypeName(u.Event.Type()),
		"handler", h.name, "attempt", u.Attempt, "err", err}
	if v.Outcome == engine.Retry {
		attrs = append(attrs, "retry_in", v.Delay)
	}
	if v.Panicked && pe.Stack != nil {
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

// persistAttempts records in the journal the attempts the unit's durable
// events have used, so that MaxAttempts counts across process lives.
func (p *pool) persistAttempts(u *engine.Unit[Event]) {
	for i := range u.Items {
		if d := durableOf(&u.Items[i]); d != nil {
			if err := p.bus.journal.SetAttempts(d.id, u.Attempt); err != nil {
				p.bus.log.Error("eventbus: journal", "record", d.id, "err", err)
			}
		}
	}
}

// Goexited reports a runtime.Goexit in the current handler as a panic.
func (p *pool) Goexited(wid int, u *engine.Unit[Event]) engine.Verdict {
	err := &PanicError{Value: "runtime.Goexit called by handler"}
	ch, _ := u.Chain.(*chain)
	if ch == nil || u.Index >= len(ch.handlers) {
		return engine.Verdict{Outcome: engine.Dead, Err: err, Failed: true, Panicked: true}
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
	return errors.Join(ErrClosed, last)
}

// DeadLetter hands original event i of u to the sink.
func (p *pool) DeadLetter(u *engine.Unit[Event], i int, err error) {
	b := p.bus
	name, attempts, id := "", 0, uint64(0)
	if h := current(u); h != nil && u.Err != nil {
		name, attempts, id = h.name, u.Attempt, h.id
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
