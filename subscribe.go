package eventbus

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/imbus/eventbus/internal/engine"
)

// subscriber is a handler outside its type's chain (see ARCHITECTURE.md,
// Subscribers): it has its own lanes (an engine of its own, scheduled like a
// pool's shards), its own workers, retries and dead letters.
type subscriber struct {
	id   uint64
	name string
	typ  EventType
	// chain holds the subscriber's one handler, replaced whole when
	// middleware is added (rewrap).
	chain atomic.Pointer[chain]
	lanes *pool
}

func (s *subscriber) entry() *handlerEntry { return &s.chain.Load().handlers[0] }

// WithConcurrency sets how many goroutines run a subscriber's handler at
// once, each on a different key (one key's events still run one at a time,
// in add order). Default: the Workers of the subscriber's pool. It does not
// change how many events the subscriber holds (its pool's Workers ×
// QueueSize). n must be positive. Only Subscribe takes it; Register
// returns an error for it.
func WithConcurrency(n int) HandlerOption {
	return handlerOptionFunc(func(o *handlerOptions) { o.concurrency, o.concurrencySet = n, true })
}

// Subscribe adds h as an independent subscriber of event type t: not part
// of t's chain, it receives every event of type t accepted after Subscribe
// returns, from the moment the event is accepted, in parallel with the
// chain and every other subscriber, so it also sees the events the chain
// stops or fails. (To react only to events a chain accepted, subscribe to
// a follow-on type the chain emits.) A type with subscribers needs no
// chain handler: AddEvent accepts it.
//
// Per subscriber, one key's events arrive one at a time in add order,
// across retries; different keys run at once, up to WithConcurrency
// goroutines. A subscriber's slowness, errors, panics, timeouts and retries
// never delay the chain or another subscriber while it has room: it has its
// own lanes, scheduled like a pool's shards (a slow key holds back only its
// own lane, and a retry parks that key in that subscriber only), its own
// retry policy (WithHandlerRetry, else the pool's or the bus's) and its own
// dead letters (DeadLetter.Handler is its name). It holds at most its
// pool's Workers × QueueSize events, QueueSize per lane. An event is
// accepted by the chain and every subscriber at once or by none, so while
// one of its lanes is full an outside AddEvent waits and TryAddEvent
// returns ErrQueueFull. Its ctx is a handler ctx: adds made with it are
// follow-on adds; middleware, CallInfo and HandlerTimeout apply.
// Stats().Subscribers counts its deliveries under "<type name>/<name>",
// and the Observer sees its runs with Observation.Subscriber set.
//
// Subscribe is safe at any time, also while events flow; after Close it
// returns ErrClosed. Names are unique per type across the chain and its
// subscribers (ErrDuplicateName); ErrUnknownEventType, ErrWrongPool and
// ErrNilHandler are as for Register; Replace and First are for chain
// handlers and make Subscribe return an error.
// Registration.Unregister (or Bus.UnregisterHandler with its name) stops
// deliveries at once; events already queued for the subscriber still run,
// then its goroutines exit.
func Subscribe[C EventContext](b *Bus, t EventType, h Handler[C], opts ...HandlerOption) (*Registration, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: Subscribe on a nil *Bus", ErrNotNew)
	}
	if h == nil {
		return nil, ErrNilHandler
	}
	var o handlerOptions
	for _, opt := range opts {
		if opt != nil {
			opt.applyHandler(&o)
		}
	}
	switch {
	case o.concurrencySet && o.concurrency <= 0:
		return nil, fmt.Errorf("eventbus: WithConcurrency(%d): must be positive", o.concurrency)
	case o.replace != "" || o.first:
		return nil, errors.New("eventbus: Replace and First are for chain handlers, not Subscribe")
	}
	if o.retry != nil {
		if err := o.retry.validate("WithHandlerRetry"); err != nil {
			return nil, err
		}
	}
	fn := HandlerFunc(func(ctx context.Context, ev Event) error {
		c, _ := any(ev).(*C)
		return h(ctx, c)
	})
	return b.addSubscriber(t, poolOf[C](), fn, HandlerName(h), o)
}

// poolOf returns the pool whose events have context type C.
func poolOf[C EventContext]() Pool {
	switch any((*C)(nil)).(type) {
	case *UserContext:
		return PoolUser
	case *ChannelContext:
		return PoolChannel
	}
	return PoolPusher
}

func (b *Bus) addSubscriber(t EventType, want Pool, fn HandlerFunc, defName string, o handlerOptions) (*Registration, error) {
	if !b.made() {
		return nil, ErrNotNew
	}
	b.mu.Lock()
	mws := b.mws[:len(b.mws):len(b.mws)]
	b.mu.Unlock()
	call := wrap(fn, mws) // middleware constructors run outside b.mu

	b.mu.Lock()
	r, err := b.addSubscriberLocked(t, want, fn, call, mws, defName, o)
	stale := err == nil && len(b.mws) > len(mws)
	b.mu.Unlock()
	if stale {
		b.rewrap() // middleware added meanwhile; it takes b.mu itself
	}
	return r, err
}

// addSubscriberLocked registers a subscriber whose call was wrapped with
// mws. b.mu must be held.
func (b *Bus) addSubscriberLocked(t EventType, want Pool, fn, call HandlerFunc, mws []Middleware, defName string, o handlerOptions) (*Registration, error) {
	if b.state.Load() == stateClosed {
		return nil, fmt.Errorf("%w: Subscribe after Close", ErrClosed)
	}
	pool := b.types[t].pool
	if pool == "" {
		return nil, unknownType(t)
	}
	if pool != want {
		return nil, fmt.Errorf("%w: %v is a %s event, the handler takes a %s context", ErrWrongPool, b.typeNameLocked(t), pool, want)
	}
	old := b.chains[t].Load()
	if old == nil {
		old = &chain{}
	}
	names := old.names()
	name := o.name
	if name == "" {
		name = uniqueName(defName, names, -1)
	}
	for i := range names {
		if names[i].name == name {
			return nil, fmt.Errorf("%w: %q for %v", ErrDuplicateName, name, b.typeNameLocked(t))
		}
	}
	b.regSeq++
	parent := b.pools[pool.index()]
	cfg := parent.cfg
	cfg.KeyFunc = nil // parent.key already applies it
	if o.concurrencySet {
		cfg.Workers = o.concurrency
	}
	s := &subscriber{id: b.regSeq, name: name, typ: t}
	s.chain.Store(&chain{handlers: []handlerEntry{{id: s.id, name: name, fn: fn, call: call,
		wrapped: len(mws), retry: o.retry}}})
	s.lanes = newEngine(b, pool, cfg, parent.key, false, parent.cfg.Workers*parent.cfg.QueueSize, s)
	if parent.cfg.Retry != nil {
		s.lanes.retry = parent.retry
	}
	subs := append(old.subs[:len(old.subs):len(old.subs)], s)
	b.chains[t].Store(&chain{handlers: old.handlers, subs: subs})
	b.addEngineLocked(s.lanes.eng)
	if b.state.Load() == stateStarted {
		s.lanes.eng.Start()
	}
	return &Registration{bus: b, typ: t, id: s.id, name: name}, nil
}

// names lists the handler entries of the chain and of its subscribers,
// for name checks.
func (c *chain) names() []handlerEntry {
	if len(c.subs) == 0 {
		return c.handlers
	}
	all := append([]handlerEntry(nil), c.handlers...)
	for _, s := range c.subs {
		all = append(all, *s.entry())
	}
	return all
}

// addEngineLocked adds e to the engines Close, WaitIdle and Stats cover,
// dropping retired engines whose workers have exited. b.mu must be held.
func (b *Bus) addEngineLocked(e *engine.Engine[Event]) {
	old := *b.engines.Load()
	engines := make([]*engine.Engine[Event], 0, len(old)+1)
	for _, x := range old {
		select {
		case <-x.Exited():
			if x.Retired() {
				continue
			}
		default:
		}
		engines = append(engines, x)
	}
	engines = append(engines, e)
	b.engines.Store(&engines)
}

// removeSubscriberLocked drops the first subscriber of c that match
// accepts and retires its lanes. b.mu must be held.
func (b *Bus) removeSubscriberLocked(t EventType, c *chain, match func(*handlerEntry) bool) bool {
	for i, s := range c.subs {
		if match(s.entry()) {
			subs := make([]*subscriber, 0, len(c.subs)-1)
			subs = append(append(subs, c.subs[:i]...), c.subs[i+1:]...)
			b.chains[t].Store(&chain{handlers: c.handlers, subs: subs})
			s.lanes.eng.Retire()
			return true
		}
	}
	return false
}

// target is one engine an event goes to: the chain's pool or a subscriber's
// lanes, with the room reserved in it.
type target struct {
	eng  *engine.Engine[Event]
	slot engine.Slot[Event]
	held bool
}

// fanOut is fanOutWith without prepare.
func (b *Bus) fanOut(p *pool, ch *chain, it engine.Item[Event], parent engine.Parent, wait context.Context) engine.PushResult {
	return b.fanOutWith(p, ch, it, parent, wait, nil)
}

// fanOutWith adds it to the chain's engine (when the chain has handlers)
// and to every subscriber's lanes, all at once or not at all: it reserves
// room in each; when one is full, it gives back what it holds and, for an
// outside add with wait, waits for room in that one first, then tries the
// others again. A subscriber unregistered meanwhile is skipped. prepare,
// if set, runs once room is held everywhere and before any commit (the
// journal's append) and gives the item's tracker; its error gives the
// room back and ends the add.
func (b *Bus) fanOutWith(p *pool, ch *chain, it engine.Item[Event], parent engine.Parent, wait context.Context, prepare func() (*engine.Tracker, error)) engine.PushResult {
	var buf [8]target // no allocation for up to 7 subscribers
	targets := buf[:0]
	if len(ch.handlers) > 0 {
		targets = append(targets, target{eng: p.eng})
	}
	for _, s := range ch.subs {
		targets = append(targets, target{eng: s.lanes.eng})
	}
	first := -1 // the target to wait for, tried before the others
	for {
		failed, res := b.reserveAll(targets, first, it.Key, parent, wait)
		if failed < 0 {
			break
		}
		for i := range targets {
			if tg := &targets[i]; tg.held {
				tg.eng.Cancel(tg.slot)
				tg.held = false
			}
		}
		if res != engine.Full || wait == nil {
			return res
		}
		if b.inPool(p.kind) {
			// A handler of this pool (chain or subscriber) with a foreign
			// ctx: a follow-on add in every engine, or it could wait for
			// room only it can make.
			parent, first = alwaysRunning, -1
			continue
		}
		first = failed
	}
	live := 0
	for i := range targets {
		if targets[i].held {
			live++
		}
	}
	if live == 0 {
		return engine.Closed // every subscriber went away
	}
	if prepare != nil {
		t, err := prepare()
		if err != nil {
			for i := range targets {
				if tg := &targets[i]; tg.held {
					tg.eng.Cancel(tg.slot)
				}
			}
			return engine.Accepted // the caller reports prepare's error
		}
		it.Track = t
	}
	if it.Track != nil {
		it.Track.Expect(live)
	}
	for i := range targets {
		if tg := &targets[i]; tg.held {
			tg.eng.Commit(tg.slot, it)
		}
	}
	return engine.Accepted
}

// reserveAll reserves room in every target, first (if ≥ 0) before the
// others and waiting for it. It returns the index of the target that
// refused, and why, or -1.
func (b *Bus) reserveAll(targets []target, first int, key uint64, parent engine.Parent, wait context.Context) (int, engine.PushResult) {
	try := func(i int, w context.Context) engine.PushResult {
		tg := &targets[i]
		if tg.eng == nil {
			return engine.Accepted
		}
		slot, r := tg.eng.Reserve(key, parent, w)
		switch {
		case r == engine.Accepted:
			tg.slot, tg.held = slot, true
		case r == engine.Closed && tg.eng.Retired():
			tg.eng = nil // unsubscribed meanwhile: no longer a target
			r = engine.Accepted
		}
		return r
	}
	if first >= 0 {
		if r := try(first, wait); r != engine.Accepted {
			return first, r
		}
	}
	for i := range targets {
		if i == first {
			continue
		}
		if r := try(i, nil); r != engine.Accepted {
			return i, r
		}
	}
	return -1, engine.Accepted
}

// inPool reports whether the calling goroutine is a worker of pool kind's
// engine or of the lanes of one of its subscribers: an add from there that
// would wait on that pool is made a follow-on add (see ARCHITECTURE.md,
// Follow-on adds), since those workers may be the only ones that can make
// room. Called only on the waiting path of an add.
func (b *Bus) inPool(kind Pool) bool {
	id := goroutineID()
	if id == 0 {
		return false
	}
	if b.pools[kind.index()].eng.IsWorker(id) {
		return true
	}
	for t := range b.chains {
		if b.types[t].pool != kind {
			continue
		}
		if c := b.chains[t].Load(); c != nil {
			for _, s := range c.subs {
				if s.lanes.eng.IsWorker(id) {
					return true
				}
			}
		}
	}
	return false
}
