package eventbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/imbus/eventbus/internal/engine"
	"github.com/imbus/eventbus/internal/goid"
)

// Emitter adds events. Handlers that emit follow-on events should depend on
// it rather than on *Bus, so tests can pass an eventbustest.Recorder.
type Emitter interface {
	AddEvent(ctx context.Context, ev Event) error
}

// Bus routes events to three pools of workers and runs their handler
// chains. Build one with New; all methods are safe for concurrent use. A
// zero Bus is not usable: its methods return ErrNotNew (Stats a zero
// Stats, Use nothing).
type Bus struct {
	cfg      config
	log      *slog.Logger
	logs     *logThrottle // how often failures are logged (logthrottle.go)
	sink     DeadLetterSink
	observer Observer
	admit    func(context.Context, Event) error
	seed     uint64 // keyHash seed of the pools' ordering keys
	// beforeCall, set only by tests before Start, runs where a worker
	// commits to a handler call (with a HandlerTimeout only), so that
	// tests can observe that moment itself.
	beforeCall func()

	// mu guards types before Start, the registry's writers and lifecycle
	// transitions. Readers of chains use the atomic pointers only.
	mu     sync.Mutex
	types  [256]typeInfo
	chains [256]atomic.Pointer[chain]
	mws    []Middleware
	// outbound holds the Outbound routes by type; written before Start.
	outbound [256]OutboundFunc
	// journal and durable: WithJournal.
	journal Journal
	durable [256]bool
	regSeq  uint64
	batch   [256]int

	state atomic.Int32
	life  *engine.Lifecycle
	pools [3]*pool
	// engines are the pools' engines and the subscribers' lanes, replaced
	// whole (under mu) when a subscriber comes or goes.
	engines atomic.Pointer[[]*engine.Engine[Event]]

	closing  chan struct{} // holds a token while a Close runs: one at a time
	finished chan struct{} // closed once Close has drained or given up
}

type typeInfo struct {
	pool  Pool // "" when not defined
	index int  // pool.index() (-1 when not defined), kept to route without comparing strings
	name  string
}

const (
	stateNew int32 = iota
	stateStarted
	stateClosed
	// stateStarting: Start replays the journal; adds are refused
	// (ErrNotStarted) until it has queued every replayed event.
	stateStarting
)

// New returns a bus configured by opts. It checks every option and starts
// no goroutine; register handlers, then call Start.
func New(opts ...Option) (*Bus, error) {
	var cfg config
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	if err := errors.Join(cfg.errs...); err != nil {
		return nil, err
	}
	for i, pc := range cfg.pools {
		if err := pc.validate(poolsByIndex[i]); err != nil {
			return nil, err
		}
	}
	if err := cfg.retry.validate("WithRetry"); err != nil {
		return nil, err
	}
	cfg.retry = cfg.retry.withDefaults()
	b := &Bus{cfg: cfg, log: cfg.logger, sink: cfg.sink, observer: cfg.observer,
		journal: cfg.journal, durable: cfg.durable,
		admit: cfg.admit, seed: newHashSeed(),
		closing: make(chan struct{}, 1), finished: make(chan struct{})}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.logs = newLogThrottle(cfg.logInterval, cfg.clock)
	if b.sink == nil {
		b.sink = NewDeadLetterRing(defaultRingSize)
	}
	for t := range b.types {
		if et := EventType(t); et.builtin() {
			b.types[t] = typeInfo{pool: rangePool(et), index: rangePool(et).index(), name: et.String()}
		} else {
			b.types[t].index = -1
		}
	}
	b.life = engine.NewLifecycle()
	b.pools[0] = newUserPool(b, cfg.pools[0])
	b.pools[1] = newChannelPool(b, cfg.pools[1], &b.batch)
	b.pools[2] = newPusherPool(b, cfg.pools[2])
	engines := []*engine.Engine[Event]{b.pools[0].eng, b.pools[1].eng, b.pools[2].eng}
	b.engines.Store(&engines)
	for _, d := range cfg.defines {
		if err := b.Define(d.t, d.pool, d.name); err != nil {
			return nil, err
		}
	}
	if err := b.checkDurable(false); err != nil {
		return nil, err
	}
	return b, nil
}

// Define declares event type t, without a built-in meaning, for pool p,
// under name. Types 1–29 must be declared in the pool of their range
// (ErrWrongPool); 30–255 may go to any pool. A built-in or already defined
// type, or a name another type (built-ins included) has, is
// ErrTypeDefined: type names are unique. Define must be called before Start (ErrStarted;
// ErrClosed once the bus is closed).
func (b *Bus) Define(t EventType, p Pool, name string) error {
	if !b.made() {
		return ErrNotNew
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.state.Load() == stateClosed:
		return fmt.Errorf("%w: Define(%d) on a closed bus", ErrClosed, t)
	case b.state.Load() != stateNew:
		return fmt.Errorf("%w: Define(%d) must come before Start", ErrStarted, t)
	case t == EventUnknown:
		return fmt.Errorf("%w: type 0 is reserved", ErrUnknownEventType)
	case t.builtin():
		return fmt.Errorf("%w: Define(%d): %v is built in", ErrTypeDefined, t, t)
	case p.index() < 0:
		return fmt.Errorf("%w: Define(%d): unknown pool %q", ErrWrongPool, t, p)
	case rangePool(t) != "" && rangePool(t) != p:
		return fmt.Errorf("%w: Define(%d): types %s belong to the %s pool", ErrWrongPool, t, rangeOf(t), rangePool(t))
	case b.types[t].pool != "":
		return fmt.Errorf("%w: Define(%d): already defined as %q", ErrTypeDefined, t, b.types[t].name)
	}
	if name == "" {
		name = t.String()
	}
	// Names key Stats (Subscribers, by "<type name>/<name>") and logs: one
	// name for two types would merge them.
	for other := range b.types {
		if b.types[other].pool != "" && b.types[other].name == name {
			return fmt.Errorf("%w: Define(%d): the name %q is taken by type %d", ErrTypeDefined, t, name, other)
		}
	}
	b.types[t] = typeInfo{pool: p, index: p.index(), name: name}
	return nil
}

func rangeOf(t EventType) string {
	switch rangePool(t) {
	case PoolUser:
		return "1–9"
	case PoolChannel:
		return "10–19"
	}
	return "20–29"
}

// TypeName returns the name of t: a built-in name, the name given to
// Define, or "EventType(n)".
func (b *Bus) TypeName(t EventType) string {
	if b == nil {
		return t.String()
	}
	if b.state.Load() == stateNew {
		b.mu.Lock()
		defer b.mu.Unlock()
	}
	return b.typeNameLocked(t)
}

func (b *Bus) typeNameLocked(t EventType) string {
	if n := b.types[t].name; n != "" {
		return n
	}
	return t.String()
}

// Start checks the configuration against the defined types and starts the
// workers. Handlers may be registered before or after.
func (b *Bus) Start() error {
	if !b.made() {
		return ErrNotNew
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state.Load() {
	case stateStarted:
		return ErrStarted
	case stateClosed:
		return ErrClosed
	}
	for t, n := range b.cfg.batch {
		if b.types[t].pool != PoolChannel {
			return fmt.Errorf("%w: WithBatch(%v): batching is for channel-pool types", ErrWrongPool, b.typeNameLocked(t))
		}
		b.batch[t] = n
	}
	if err := b.checkDurableLocked(); err != nil {
		return err
	}
	var err error
	if b.journal != nil {
		// Queued before the workers start and before any add (adds are
		// refused until Start returns): each key's replayed events come
		// first, in their original order, and no record appended now can
		// be replayed as well.
		b.state.Store(stateStarting)
		err = b.replay()
	}
	// Started before the workers run: a replayed event's handler adds
	// follow-on events, which stateStarting would refuse.
	b.state.Store(stateStarted)
	for _, e := range b.allEngines() {
		e.Start()
	}
	return err
}

// AddEvent queues ev for its pool and returns; a worker runs its handler
// chain later. Events with the same key run one at a time, in the order
// they were added.
//
// Called from outside a handler, AddEvent waits while the event's shard
// holds QueueSize events, its pool Workers × QueueSize, or one of its
// type's subscribers a full lane, until ctx ends (the error then wraps
// both ErrQueueFull and ctx's error) or the bus closes (ErrClosed). Called
// with a running handler's ctx, it adds a follow-on event: it never waits,
// ignores ctx's cancellation and is accepted while the bus drains. From a
// handler's goroutine with another ctx, an add that would wait on the
// handler's own pool is taken as a follow-on add instead.
//
// A durable type (WithJournal) returns nil only once the event is on
// disk; a type routed with Outbound goes to its route instead.
//
// The handler's context will carry ctx's values, never its cancellation.
// When ctx derives from a handler's context (a HandlerTimeout, values added
// by middleware), the event keeps the values only: those added on top of
// the handler's context are copied once, so a chain of follow-on events
// holds no handler context of the hops before it. AddEvent allocates
// nothing when ctx is context.Background() or the context a handler was
// called with, HandlerTimeout or not. A nil ctx is accepted and taken as
// context.Background(): an outside add without values. A nil ev (or a
// typed nil context) is ErrNilEvent, and a nil *Bus ErrNotNew, never a
// panic.
func (b *Bus) AddEvent(ctx context.Context, ev Event) error {
	return b.add(ctx, ev, true, nil, false)
}

// TryAddEvent is AddEvent that never waits: ErrQueueFull when the shard,
// the pool or a subscriber's lane is full. It takes no context, so it is
// never a follow-on add.
func (b *Bus) TryAddEvent(ev Event) error {
	return b.add(context.Background(), ev, false, nil, false)
}

// addLocal adds ev to its pool, bypassing Outbound routes, with a tracker
// to tell when it has finished (nil for none).
func (b *Bus) addLocal(ctx context.Context, ev Event, wait bool, track *engine.Tracker) error {
	return b.add(ctx, ev, wait, track, true)
}

func (b *Bus) add(ctx context.Context, ev Event, wait bool, track *engine.Tracker, local bool) error {
	if b == nil {
		return fmt.Errorf("%w: AddEvent on a nil *Bus", ErrNotNew)
	}
	if st := b.state.Load(); st == stateNew || st == stateStarting {
		if !b.made() {
			return ErrNotNew
		}
		return ErrNotStarted
	}
	p, t := b.routeQuick(ev)
	if p == nil {
		var err error
		if p, t, err = b.route(ev); err != nil {
			return err
		}
	}
	// The item is filled as its parts are known, field by field: what is
	// in it already is not kept in registers across the calls below, and
	// a composite literal would be built aside and copied (the copy's wide
	// loads stall on the narrow stores just made). Its Ctx is the
	// producer's context for its values, nil (the common case) for none.
	var it engine.Item[Event]
	it.Event, it.Track, it.Tag = ev, track, uint8(t)
	var c *callCtx
	switch {
	case ctx == nil:
		ctx = background
	case isBackground(ctx):
	default:
		if own, ok := ctx.(*callCtx); ok {
			// A handler's own context, as follow-on adds pass it.
			c, it.Ctx = own.follow(b)
			break
		}
		c = callOf(ctx)
		it.Ctx = valuesOf(ctx, c)
		if c != nil && !c.runningOn(b) {
			c = nil
		}
	}
	if c == nil && b.life.Closing() {
		return ErrClosed
	}
	if send := b.outbound[t]; send != nil && !local {
		if !wait {
			ctx = tryAddCtx // TryAddEvent: the route must not wait for room
		}
		return send(ctx, ev)
	}
	ch := b.chains[t].Load()
	if ch == nil || (len(ch.handlers) == 0 && len(ch.subs) == 0) {
		return fmt.Errorf("%w: %v", ErrNoHandler, b.typeNameLocked(t))
	}
	key, err := p.key(ev)
	if err != nil {
		return err
	}
	if b.admit != nil {
		if err := b.admit(ctx, ev); err != nil {
			p.rejected.Add(1)
			return err
		}
	}
	it.Key = key
	if b.observer != nil {
		it.Added = p.eng.Since()
	}
	var waitCtx context.Context // nil: never wait
	if wait {
		waitCtx = ctx
	}
	var parent engine.Parent
	if c != nil {
		parent = &c.word
	}
	var res engine.PushResult
	switch {
	case b.durable[t] && track == nil:
		if res, err = b.addDurable(p, ch, it, parent, waitCtx); err != nil {
			return err
		}
	case len(ch.subs) == 0:
		res = p.eng.Push(&it, parent, waitCtx)
	default:
		res = b.fanOut(p, ch, it, parent, waitCtx)
	}
	switch res {
	case engine.Accepted:
		return nil
	case engine.Full:
		return ErrQueueFull
	case engine.Cancelled:
		return fmt.Errorf("%w: %w", ErrQueueFull, ctx.Err())
	default:
		return ErrClosed
	}
}

// background is compared with producers' contexts: the common case needs
// neither a handler-context lookup nor values.
var background = context.Background()

// backgroundType is the type word of background held in a context.Context.
var backgroundType = typeWord(background)

// isBackground reports whether ctx is context.Background(). Only the type
// words are compared: Background's type has size zero and is made only by
// Background, so its type is its identity, and the check is one compare
// instead of the runtime call an interface comparison makes.
func isBackground(ctx context.Context) bool { return typeWord(ctx) == backgroundType }

// typeWord returns the first word of an interface value: its type.
func typeWord(ctx context.Context) unsafe.Pointer {
	return (*[2]unsafe.Pointer)(unsafe.Pointer(&ctx))[0]
}

// typeOf returns ev's type and the index (in Bus.pools) of the pool its
// concrete type belongs to; the index is noPool for a nil event, typed or
// not.
func typeOf(ev Event) (t EventType, want int) {
	switch e := ev.(type) {
	case *UserContext:
		if e != nil {
			return e.EventType, 0
		}
	case *ChannelContext:
		if e != nil {
			return e.EventType, 1
		}
	case *PushContext:
		if e != nil {
			return e.EventType, 2
		}
	}
	return 0, noPool
}

// noPool is typeOf's pool index for a nil event: unlike every typeInfo
// index (-1 for an undefined type), it matches none.
const noPool = -2

// routeQuick is route's common case, small enough to inline: it returns
// ev's pool and type when ev is a non-nil event of a type defined in that
// pool, and a nil pool otherwise (route then says what is wrong).
func (b *Bus) routeQuick(ev Event) (*pool, EventType) {
	t, want := typeOf(ev)
	if b.types[t].index != want { // -1 when not defined, noPool for no event
		return nil, 0
	}
	return b.pools[want], t
}

// route finds the pool of ev and checks its type.
func (b *Bus) route(ev Event) (*pool, EventType, error) {
	t, want := typeOf(ev)
	if want == noPool {
		return nil, 0, ErrNilEvent
	}
	info := &b.types[t]
	if info.pool == "" {
		return nil, 0, unknownType(t)
	}
	if info.index != want {
		return nil, 0, fmt.Errorf("%w: %v is a %s event, not a %s one", ErrWrongPool, info.name, info.pool, poolsByIndex[want])
	}
	return b.pools[want], t, nil
}

// WaitIdle returns nil once, at some instant after the call, no event in
// any pool was queued, in flight or waiting for a retry. Follow-on events
// are counted before their handler returns, so a flow of events is idle
// only when all of it is done. WaitIdle does not stop producers. It returns
// ErrNotStarted before Start, nil after Close, ctx's error when ctx ends,
// and ErrInsideHandler when called from a handler.
func (b *Bus) WaitIdle(ctx context.Context) error {
	if b == nil {
		return fmt.Errorf("%w: WaitIdle on a nil *Bus", ErrNotNew)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if isClosed(b.finished) {
		return nil
	}
	if b.state.Load() == stateNew {
		if !b.made() {
			return ErrNotNew
		}
		return ErrNotStarted
	}
	// A handler's own event is never idle, so checking for idle first is
	// safe, and spares the idle case the goroutine-id lookup.
	if engine.Idle(b.allEngines()...) {
		return nil
	}
	if b.inHandler(ctx) {
		return ErrInsideHandler
	}
	return engine.WaitIdle(ctx, b.life, b.finished, b.allEngines()...)
}

// inHandler reports whether the caller is a handler of this bus: by its
// context, or by being one of the bus's worker goroutines.
func (b *Bus) inHandler(ctx context.Context) bool {
	if c := callOf(ctx); c != nil && c.runningOn(b) {
		return true
	}
	id := goroutineID()
	if id == 0 { // unreadable: never taken for a worker (idle workers have 0)
		return false
	}
	for _, e := range b.allEngines() {
		if e.IsWorker(id) {
			return true
		}
	}
	return false
}

// goroutineID reads the caller's goroutine id (a variable for tests).
var goroutineID = goid.Get

// Close shuts the bus down gracefully, like http.Server.Shutdown:
//
//  1. From now on, outside AddEvent and TryAddEvent calls, including those
//     already waiting for room, return ErrClosed.
//  2. Every pool keeps running until nothing is queued, in flight or
//     waiting for a retry anywhere in the bus; follow-on events are still
//     accepted and retries run their course.
//  3. The workers exit and Close returns nil.
//
// If ctx ends with events left, Close gives up: handler contexts are
// cancelled, and Close returns a *CloseError counting the events not
// finished, at once — it runs no user code after the deadline, and no
// handler call starts after it returns (a worker that was about to start
// one when the deadline hit has started it before Close returns, or gives
// the event up). The workers then hand every event not handled to the dead-letter sink with
// ErrClosed (events with a completion callback are reported abandoned
// instead) and exit; a worker inside a handler does so once the handler
// returns. A later Close waits, bounded by its ctx, for that to end and
// returns nil once every worker has exited (so after it, every dead letter
// has been delivered). If the bus drains just as ctx ends, Close returns
// nil. Close from inside a handler returns ErrInsideHandler at once.
func (b *Bus) Close(ctx context.Context) error {
	if !b.made() {
		return ErrNotNew
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if b.inHandler(ctx) {
		return ErrInsideHandler
	}
	// Take the token without looking at ctx first: an expired ctx must
	// still close the bus (and then give up at once).
	select {
	case b.closing <- struct{}{}:
	default:
		select {
		case b.closing <- struct{}{}:
		case <-ctx.Done():
			return &CloseError{Left: b.unfinished(), Err: ctx.Err()}
		}
	}
	defer func() { <-b.closing }()
	b.mu.Lock()
	prev := b.state.Swap(stateClosed)
	b.mu.Unlock()
	switch {
	case prev == stateNew:
		b.life.BeginClose()
		b.life.Stop()
		for _, e := range b.allEngines() {
			e.Discard()
		}
		closeOnce(b.finished)
		return nil
	case isClosed(b.finished):
		return b.waitWorkers(ctx)
	}

	b.life.BeginClose()
	for _, e := range b.allEngines() {
		e.Barrier()
	}
	if engine.WaitIdle(ctx, b.life, nil, b.allEngines()...) == nil {
		// Nothing is in flight, so no worker is inside a handler: they
		// all exit at once.
		b.stopWorkers()
		return nil
	}
	// Stop every shard and count what is left before handler contexts are
	// cancelled: a handler that returns on cancellation lets its worker
	// dead-letter its events at once, and a count taken after would miss
	// them; a shard still open would take follow-on events after its count.
	left := 0
	for _, e := range b.allEngines() {
		left += e.Halt()
	}
	if left == 0 {
		// The bus drained just as ctx ended: nothing to give up.
		b.stopWorkers()
		return nil
	}
	// Hand idle shards that still hold events to the workers before they
	// learn of the abort, so none exits while such a shard waits.
	for _, e := range b.allEngines() {
		e.Abort()
	}
	b.life.Abort()
	// A worker that passed its abort check before the line above is
	// committed to its handler call; wait for those few instructions, so
	// that no handler call starts after Close returns.
	engine.WaitGates(b.allEngines()...)
	closeOnce(b.finished)
	return &CloseError{Left: left, Err: ctx.Err()}
}

// stopWorkers lets the workers of a bus with nothing left exit, waits for
// them and releases kept handler contexts.
func (b *Bus) stopWorkers() {
	b.life.Stop()
	for _, e := range b.allEngines() {
		<-e.Exited()
	}
	b.life.Release() // contexts kept by handlers end too
	closeOnce(b.finished)
}

// waitWorkers waits for every worker goroutine to exit, bounded by ctx.
func (b *Bus) waitWorkers(ctx context.Context) error {
	for _, e := range b.allEngines() {
		select {
		case <-e.Exited():
		case <-ctx.Done():
			return &CloseError{Left: b.unfinished(), Err: ctx.Err()}
		}
	}
	return nil
}

// unfinished counts accepted events that have not finished.
func (b *Bus) unfinished() int {
	n := 0
	for _, e := range b.allEngines() {
		n += e.Unfinished()
	}
	return n
}

// made reports whether b was built by New (a zero Bus was not).
func (b *Bus) made() bool { return b != nil && b.life != nil }

// allEngines returns the engines of the pools and of the subscribers.
func (b *Bus) allEngines() []*engine.Engine[Event] { return *b.engines.Load() }

func closeOnce(ch chan struct{}) {
	if !isClosed(ch) {
		close(ch)
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// safely runs user code (a sink, an observer) on a worker, recovering and
// logging a panic so that it cannot kill the worker.
func (b *Bus) safely(what string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			b.log.Error("eventbus: "+what+" panicked", "panic", r)
		}
	}()
	f()
}
