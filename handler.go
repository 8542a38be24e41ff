package eventbus

import (
	"context"
	"fmt"
)

// EventContext is the set of event context types a handler can take.
type EventContext interface {
	UserContext | ChannelContext | PushContext
}

// Handler handles one event of a pool. Returning nil passes the event to
// the next handler of the chain; ErrStopChain ends the chain on purpose;
// Permanent(err) sends the event to the dead-letter sink; any other error
// (or a panic, or a timeout) retries the event from this handler.
//
// ctx carries the values of the context given to AddEvent, the bus's
// shutdown signal, the attempt's timeout and the CallInfo; it is meant for
// the duration of the call. Events added with ctx while the handler runs
// are follow-on events: they never wait and keep per-key order.
type Handler[C EventContext] func(ctx context.Context, ev *C) error

// HandlerFunc is a handler with its context type erased, as middleware sees it.
type HandlerFunc func(ctx context.Context, ev Event) error

// Middleware wraps one attempt of one handler. See Bus.Use.
type Middleware func(next HandlerFunc) HandlerFunc

// handlerEntry is one handler in a chain.
type handlerEntry struct {
	id    uint64
	name  string
	fn    HandlerFunc  // the handler itself
	call  HandlerFunc  // fn inside the middleware in force when the chain was built
	retry *RetryPolicy // overrides the pool's policy when set
	// wrapped is how many of the bus's middleware (a list that only
	// grows) call includes.
	wrapped int
}

// chain is an immutable list of handlers; updates replace it whole, so a
// dispatch reads it with one atomic load and keeps it for every attempt.
// A chain's entries belong to it alone: an update copies them into a new
// list (a chain of the same type may share the old list whole), so an
// entry's address fixes its type and position (handler contexts rely on
// it, see handlerRef).
type chain struct {
	handlers []handlerEntry
	// subs are the type's subscribers (subscribe.go): not run by the
	// chain, each on lanes of its own. Kept here so that one atomic load
	// at add time gives both.
	subs []*subscriber
}

// HandlerOption configures Register.
type HandlerOption interface {
	applyHandler(*handlerOptions)
}

type handlerOptions struct {
	name    string
	replace string
	first   bool
	retry   *RetryPolicy
	// concurrency is for Subscribe only.
	concurrency    int
	concurrencySet bool
}

type handlerOptionFunc func(*handlerOptions)

func (f handlerOptionFunc) applyHandler(o *handlerOptions) { f(o) }

// WithName names the handler; names are unique per event type. The default
// is HandlerName of the function, followed by "#2", "#3"… only when that
// name is already taken for the event type.
func WithName(name string) HandlerOption {
	return handlerOptionFunc(func(o *handlerOptions) { o.name = name })
}

// Replace puts the new handler in the place of the handler named name, in
// one atomic step: every event sees either the old handler or the new one,
// never neither. Without WithName the new handler takes over the old name.
// If no handler has that name, Register fails with ErrNoHandler.
func Replace(name string) HandlerOption {
	return handlerOptionFunc(func(o *handlerOptions) { o.replace = name })
}

// First puts the handler at the head of the chain instead of its end.
func First() HandlerOption {
	return handlerOptionFunc(func(o *handlerOptions) { o.first = true })
}

// WithHandlerRetry sets the retry policy used when this handler fails,
// overriding the pool's and the bus's.
func WithHandlerRetry(p RetryPolicy) HandlerOption {
	return handlerOptionFunc(func(o *handlerOptions) { o.retry = &p })
}

// Registration is a registered handler; Unregister removes it.
type Registration struct {
	bus  *Bus
	typ  EventType
	id   uint64
	name string
}

// Name returns the handler's name.
func (r *Registration) Name() string { return r.name }

// Unregister removes the handler from its chain, or the subscriber from its
// type. It returns at once and is idempotent; events whose chain had
// already started may still call the handler, and events already queued
// for a subscriber still run. It does nothing once the handler was
// replaced.
func (r *Registration) Unregister() {
	if r == nil || r.bus == nil {
		return
	}
	r.bus.removeHandler(r.typ, func(h *handlerEntry) bool { return h.id == r.id })
}

// Register adds h to the chain of event type t. The handler's context type
// must be that of t's pool (ErrWrongPool); t must be built in or defined
// (ErrUnknownEventType). Register is safe at any time, also while events
// flow: events that start after it returns see the new chain.
func Register[C EventContext](b *Bus, t EventType, h Handler[C], opts ...HandlerOption) (*Registration, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: Register on a nil *Bus", ErrNotNew)
	}
	if h == nil {
		return nil, ErrNilHandler
	}
	var want Pool
	switch any((*C)(nil)).(type) {
	case *UserContext:
		want = PoolUser
	case *ChannelContext:
		want = PoolChannel
	case *PushContext:
		want = PoolPusher
	}
	var o handlerOptions
	for _, opt := range opts {
		if opt != nil {
			opt.applyHandler(&o)
		}
	}
	if o.retry != nil {
		if err := o.retry.validate("WithHandlerRetry"); err != nil {
			return nil, err
		}
	}
	if o.concurrencySet {
		return nil, fmt.Errorf("eventbus: WithConcurrency is for Subscribe: a chain runs one key's events one at a time")
	}
	fn := HandlerFunc(func(ctx context.Context, ev Event) error {
		c, _ := any(ev).(*C)
		return h(ctx, c)
	})
	return b.addHandler(t, want, fn, HandlerName(h), o)
}

// addHandler adds fn to the chain of t. Middleware constructors are user
// code that may call the bus (TypeName, Register, Define): they run outside
// b.mu, on a snapshot of the middleware, and rewrap catches up with
// middleware added meanwhile.
func (b *Bus) addHandler(t EventType, want Pool, fn HandlerFunc, defName string, o handlerOptions) (*Registration, error) {
	if !b.made() {
		return nil, ErrNotNew
	}
	b.mu.Lock()
	mws := b.mws[:len(b.mws):len(b.mws)]
	if b.types[t].pool != want || want == "" {
		mws = nil // an error follows, unless Define comes first: then rewrap
	}
	b.mu.Unlock()
	call := wrap(fn, mws)
	b.mu.Lock()
	r, err := b.addHandlerLocked(t, want, fn, call, len(mws), defName, o)
	stale := err == nil && len(b.mws) > len(mws)
	b.mu.Unlock()
	if stale {
		b.rewrap()
	}
	return r, err
}

func (b *Bus) addHandlerLocked(t EventType, want Pool, fn, call HandlerFunc, wrapped int, defName string, o handlerOptions) (*Registration, error) {
	if b.state.Load() == stateClosed {
		return nil, fmt.Errorf("%w: Register after Close", ErrClosed)
	}
	pool := b.types[t].pool
	if pool == "" {
		return nil, unknownType(t)
	}
	if pool != want {
		return nil, fmt.Errorf("%w: %v is a %s event, the handler takes a %s context", ErrWrongPool, b.typeNameLocked(t), pool, want)
	}
	var old []handlerEntry
	var subs []*subscriber
	if c := b.chains[t].Load(); c != nil {
		old, subs = c.handlers, c.subs
	}
	at := -1
	if o.replace != "" {
		for i := range old {
			if old[i].name == o.replace {
				at = i
			}
		}
		if at < 0 {
			return nil, fmt.Errorf("%w: no handler named %q to replace", ErrNoHandler, o.replace)
		}
		if o.name == "" {
			o.name = o.replace
		}
	}
	b.regSeq++
	// Names are unique across the chain and the subscribers; these come
	// after the chain's handlers, so the index at stays valid.
	names := (&chain{handlers: old, subs: subs}).names()
	name := o.name
	if name == "" {
		name = uniqueName(defName, names, at)
	}
	for i := range names {
		if names[i].name == name && i != at {
			return nil, fmt.Errorf("%w: %q for %v", ErrDuplicateName, name, b.typeNameLocked(t))
		}
	}
	e := handlerEntry{id: b.regSeq, name: name, fn: fn, call: call, wrapped: wrapped, retry: o.retry}
	hs := make([]handlerEntry, 0, len(old)+1)
	switch {
	case at >= 0:
		hs = append(hs, old...)
		hs[at] = e
	case o.first:
		hs = append(append(hs, e), old...)
	default:
		hs = append(append(hs, old...), e)
	}
	b.chains[t].Store(&chain{handlers: hs, subs: subs})
	return &Registration{bus: b, typ: t, id: e.id, name: name}, nil
}

// UnregisterHandler removes the handler or subscriber named name from t
// and reports whether there was one. Like Registration.Unregister, it
// returns at once; chains already started may still call the handler.
func (b *Bus) UnregisterHandler(t EventType, name string) bool {
	return b.removeHandler(t, func(h *handlerEntry) bool { return h.name == name })
}

func (b *Bus) removeHandler(t EventType, match func(*handlerEntry) bool) bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.chains[t].Load()
	if c == nil {
		return false
	}
	for i := range c.handlers {
		if match(&c.handlers[i]) {
			hs := make([]handlerEntry, 0, len(c.handlers)-1)
			hs = append(append(hs, c.handlers[:i]...), c.handlers[i+1:]...)
			b.chains[t].Store(&chain{handlers: hs, subs: c.subs})
			return true
		}
	}
	return b.removeSubscriberLocked(t, c, match)
}

// Use adds middleware around every handler attempt. The first middleware
// given to Use runs outermost. Use is safe at any time; events that start
// after it returns run through the new middleware, events already started
// keep the chain they began with. A Middleware is called (constructed) once
// per handler, and again for every handler when Use adds middleware; it is
// called without any lock of the bus held, so it may call the bus
// (TypeName, Register, Define). On a Bus not built by New it does nothing.
func (b *Bus) Use(mw ...Middleware) {
	if !b.made() {
		return
	}
	b.mu.Lock()
	for _, m := range mw {
		if m != nil {
			b.mws = append(b.mws, m)
		}
	}
	b.mu.Unlock()
	b.rewrap()
}

// rewrap wraps again every handler whose call misses middleware added
// since it was wrapped. The constructors run outside b.mu; if handlers or
// middleware were added meanwhile, it goes round again for those only.
func (b *Bus) rewrap() {
	type wrapping struct {
		n    int
		call HandlerFunc
	}
	done := map[uint64]wrapping{}
	for {
		b.mu.Lock()
		mws := b.mws[:len(b.mws):len(b.mws)]
		var todo []handlerEntry
		for t := range b.chains {
			if c := b.chains[t].Load(); c != nil {
				for _, h := range c.names() {
					if w, ok := done[h.id]; h.wrapped < len(mws) && (!ok || w.n != len(mws)) {
						todo = append(todo, h)
					}
				}
			}
		}
		if len(todo) == 0 {
			b.storeWrapped(len(mws), func(id uint64) (HandlerFunc, bool) {
				w, ok := done[id]
				return w.call, ok && w.n == len(mws)
			})
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		for _, h := range todo {
			done[h.id] = wrapping{n: len(mws), call: wrap(h.fn, mws)}
		}
	}
}

// storeWrapped replaces, in every chain, the calls of handlers wrapped with
// fewer than n middleware by those call gives. Every such handler has one.
func (b *Bus) storeWrapped(n int, call func(id uint64) (HandlerFunc, bool)) {
	for t := range b.chains {
		c := b.chains[t].Load()
		if c == nil {
			continue
		}
		var hs []handlerEntry
		for i, h := range c.handlers {
			if h.wrapped >= n {
				continue
			}
			if hs == nil {
				hs = append([]handlerEntry(nil), c.handlers...)
			}
			hs[i].call, _ = call(h.id)
			hs[i].wrapped = n
		}
		if hs != nil {
			b.chains[t].Store(&chain{handlers: hs, subs: c.subs})
		}
		for _, s := range c.subs {
			if e := *s.entry(); e.wrapped < n {
				e.call, _ = call(e.id)
				e.wrapped = n
				s.chain.Store(&chain{handlers: []handlerEntry{e}})
			}
		}
	}
}

// wrap applies mws to fn so that mws[0] runs outermost.
func wrap(fn HandlerFunc, mws []Middleware) HandlerFunc {
	for i := len(mws) - 1; i >= 0; i-- {
		if next := mws[i](fn); next != nil {
			fn = next
		}
	}
	return fn
}
