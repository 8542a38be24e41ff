package eventbus

import (
	"context"
	"fmt"
	"strconv"

	"github.com/imbus/eventbus/internal/engine"
)

// This file holds the extension points a transport (the NATS bridge in
// bridge/nats, or any other) and the journal build on: route chosen types
// out of the process, add an event locally and hear when it has finished,
// and hand a letter to the dead-letter sink from outside.

// OutboundFunc takes an event of a routed type instead of the local pool
// (see Bus.Outbound). It is called on the goroutine of AddEvent or
// TryAddEvent, with AddEvent's ctx (a handler's ctx for follow-on adds),
// and its error is returned to that caller. For TryAddEvent, MayWait(ctx)
// is false: the route should return ErrQueueFull rather than wait for room.
type OutboundFunc func(ctx context.Context, ev Event) error

// Outbound routes AddEvent and TryAddEvent of the given types to send
// instead of their local pool, from outside and from handlers alike: a
// transport publishes them, and the node that consumes them adds them
// locally with Deliver. Neither the chain nor the subscribers of a routed
// type run on this node for such adds, and a routed type needs no local
// handler. Outbound must be called before Start; every type must be
// defined (ErrUnknownEventType) and may be routed once; send must not be
// nil (ErrNilHandler).
func (b *Bus) Outbound(send OutboundFunc, types ...EventType) error {
	if send == nil {
		return fmt.Errorf("%w: Outbound: send is nil", ErrNilHandler)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.beforeStartLocked("Outbound"); err != nil {
		return err
	}
	for _, t := range types {
		if b.types[t].pool == "" {
			return fmt.Errorf("%w: Outbound: %d", ErrUnknownEventType, t)
		}
		if b.outbound[t] != nil {
			return fmt.Errorf("eventbus: Outbound: %v is already routed", b.typeNameLocked(t))
		}
	}
	for _, t := range types {
		b.outbound[t] = send
	}
	return nil
}

// tryAddKey marks the ctx an OutboundFunc gets from TryAddEvent.
type tryAddKey struct{}

// tryAddCtx is that ctx: one value, made once.
var tryAddCtx = context.WithValue(context.Background(), tryAddKey{}, true)

// MayWait reports whether the add that called an OutboundFunc with ctx may
// wait for room: false for TryAddEvent, true for AddEvent (bounded by ctx).
func MayWait(ctx context.Context) bool {
	return ctx == nil || ctx.Value(tryAddKey{}) == nil
}

// beforeStartLocked says why a setup call can no longer be made. b.mu must
// be held.
func (b *Bus) beforeStartLocked(what string) error {
	switch b.state.Load() {
	case stateStarted:
		return fmt.Errorf("%w: %s must come before Start", ErrStarted, what)
	case stateClosed:
		return fmt.Errorf("%w: %s after Close", ErrClosed, what)
	}
	return nil
}

// Closing returns a channel that is closed when Close begins, from which
// moment the bus refuses outside adds. A transport waits on it so that an
// outside add it is holding (waiting for room or for an acknowledgement)
// returns ErrClosed at once, as the bus's own waiting adds do, and so
// that its goroutines stop with the bus. It costs nothing; a Bus not
// built by New returns nil (a channel that never closes).
func (b *Bus) Closing() <-chan struct{} {
	if !b.made() {
		return nil
	}
	return b.life.ClosingCh()
}

// OutcomeAbandoned reports, to a Deliver callback only, an event the bus
// gave up at a Close deadline: it was neither handled nor dead-lettered,
// so its transport should redeliver it.
const OutcomeAbandoned Outcome = OutcomeDeadLettered + 1

// Deliver adds ev to its local pool, never to an Outbound route, and calls
// done once, on a bus goroutine, when the chain and every subscriber have
// finished with it: OutcomeHandled, OutcomeStopped, OutcomeDeadLettered,
// or OutcomeAbandoned when a Close deadline gave it up (it is then not
// dead-lettered, and counts in PoolStats.Abandoned). It waits for room as
// AddEvent does; when it returns an error, done is never called. A nil
// done makes it AddEvent without the Outbound route. done must be fast and
// must not block: it runs on a worker (or, after a Close deadline, on the
// goroutine that gives the remaining events up).
//
// This is the "event finished" moment a transport acknowledges a message
// on and the journal acknowledges a record on.
func (b *Bus) Deliver(ctx context.Context, ev Event, done func(Outcome)) error {
	if done == nil {
		return b.addLocal(ctx, ev, true, nil)
	}
	return b.addLocal(ctx, ev, true, engine.NewTracker(1, func(o engine.Outcome) { done(outcomeOf(o)) }))
}

// outcomeOf maps an engine outcome to the public one.
func outcomeOf(o engine.Outcome) Outcome {
	switch o {
	case engine.Handled:
		return OutcomeHandled
	case engine.Stopped:
		return OutcomeStopped
	case engine.Dead:
		return OutcomeDeadLettered
	}
	return OutcomeAbandoned
}

// DeadLetter hands d to the bus's dead-letter sink, logged like the bus's
// own dead letters, for events a transport gives up on (after its own
// maximum of deliveries, say). It does not change Stats: the event was
// never added to this bus. A nil d, or a Bus not built by New, is ignored.
// With this method *Bus is also a DeadLetterSink (but never make a bus its
// own sink).
func (b *Bus) DeadLetter(d *DeadLetter) {
	if d == nil || !b.made() {
		return
	}
	pool, typ := "", ""
	var t EventType
	if d.Event != nil {
		if p, et, err := b.route(d.Event); err == nil {
			pool, typ, t = string(p.kind), b.TypeName(et), et
		}
	}
	// Throttled like the bus's own dead letters, per type for letters
	// from outside (id 0 is no handler's).
	if n, ok := b.logs.allow(logKey{typ: t, id: 0, dead: true}); ok {
		b.log.Warn("eventbus: dead letter", withSuppressed([]any{"pool", pool, "type", typ,
			"handler", d.Handler, "attempts", d.Attempts, "err", d.Err}, n)...)
	}
	b.safely("dead-letter sink", func() { b.sink.DeadLetter(d) })
}

// StableKey returns ev's ordering key computed the same way in every
// process: FNV-1a of the UID (or, before login, the connection id), or of
// the channel's id and type, or the pool's KeyFunc when it has one.
// Transports that partition events across processes use it, so that events
// with equal keys land in the same partition on every node. (The bus's own
// shard keys use a per-process random seed.) Like AddEvent, it returns an
// error for an event it cannot route or key (nil, of an undefined type,
// with a nil Conn or Message).
func (b *Bus) StableKey(ev Event) (uint64, error) {
	p, _, err := b.route(ev)
	if err != nil {
		return 0, err
	}
	if p.cfg.KeyFunc != nil {
		return p.key(ev)
	}
	h := fnvOffset // FNV-1a, as KeyByReceiver: no per-process seed
	switch e := ev.(type) {
	case *UserContext:
		if _, err := p.key(ev); err != nil { // a nil or panicking Conn
			return 0, err
		}
		if uid := e.Conn.UID(); uid != "" {
			h = h.string(uid)
		} else {
			h = h.string("\x00conn:" + strconv.FormatInt(e.Conn.ID(), 10))
		}
	case *ChannelContext:
		h = h.string(e.ChannelID).byte(0).byte(e.ChannelType)
	case *PushContext:
		if e.Message == nil {
			return 0, fmt.Errorf("%w: PushContext.Message is nil", ErrNilEvent)
		}
		h = h.string(e.Message.ChannelID).byte(0).byte(e.Message.ChannelType)
	}
	return uint64(h), nil
}
