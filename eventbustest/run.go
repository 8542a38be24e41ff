package eventbustest

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync/atomic"

	"github.com/imbus/eventbus"
)

// Result is what became of an event that Run passed through a chain.
type Result struct {
	// Ran is how many handlers were called, the one that ended the chain
	// included.
	Ran int
	// Err is what ended the chain early: the error of the handler that
	// returned one (ErrStopChain and Permanent errors included), a
	// *eventbus.PanicError, eventbus.ErrNoHandler for an empty chain, or
	// eventbus.ErrNilEvent / eventbus.ErrNilHandler for bad input. It is
	// nil when every handler returned nil.
	Err error
	// Stopped reports that a handler returned eventbus.ErrStopChain, or an
	// error wrapping it: a bus would count the event as Stopped and not
	// retry it. A panic is never a stop, whatever its value: a bus retries
	// panic(eventbus.ErrStopChain) as a failure, and so Run reports it as
	// a Panic, not Stopped.
	Stopped bool
	// Permanent reports that a handler returned an eventbus.Permanent
	// error (not a panic, and not a stop): a bus would dead-letter the
	// event without retrying it. Any other Err is one a bus retries.
	Permanent bool
	// Panic is set when a handler panicked (or called runtime.Goexit on a
	// bus), as a bus counts it in Stats.Panics; Err holds the same error.
	Panic *eventbus.PanicError
	// Handler is the name of the handler that ended the chain early, as
	// its CallInfo gave it; "" when the chain ran to its end.
	Handler string
}

// Handled reports whether every handler ran and returned nil, as a bus
// would count the event as Handled.
func (r Result) Handled() bool { return r.Err == nil }

var lastEventID atomic.Uint64

// Run passes ev through handlers, in order, on the calling goroutine, with
// the chain semantics of a bus and without starting one: nil goes on to
// the next handler; an error that is or wraps eventbus.ErrStopChain ends
// the chain as Stopped; any other error ends it with Err; a panic is
// recovered into a *eventbus.PanicError and, as on a bus, is a failure
// whatever its value. Run makes a single attempt: it reports a failure but
// does not retry it.
//
// Each handler gets ctx with a CallInfo (eventbus.ContextWithCallInfo) as a
// bus would give it: the pool of C, ev's type, the handler's name (the
// name a bus gives a handler registered without WithName:
// eventbus.HandlerName of the function, with "#2", "#3"… when an earlier
// handler of the chain has it; RunNamed takes names of your own), Index
// from 0, Attempt 1, and an EventID unique to this Run. A nil ctx means
// context.Background().
//
// Run does not check ev's type against a pool; that takes a bus (Define).
// Because handlers run on the caller's goroutine, a handler that calls
// t.FailNow ends the test as usual (a bus would report that
// runtime.Goexit as a *eventbus.PanicError). Handlers that emit follow-on
// events should be built on an eventbus.Emitter; pass them a Recorder.
func Run[C eventbus.EventContext](ctx context.Context, ev *C, handlers ...eventbus.Handler[C]) Result {
	return run(ctx, ev, nil, handlers)
}

// run is Run with names[i], when not "", as the name of handlers[i].
func run[C eventbus.EventContext](ctx context.Context, ev *C, names []string, handlers []eventbus.Handler[C]) Result {
	if ctx == nil {
		ctx = context.Background()
	}
	if ev == nil {
		return Result{Err: eventbus.ErrNilEvent}
	}
	if len(handlers) == 0 {
		return Result{Err: eventbus.ErrNoHandler}
	}
	typ := any(ev).(eventbus.Event).Type()
	info := eventbus.CallInfo{
		Pool:     poolOf[C](),
		Type:     typ,
		TypeName: typ.String(),
		Attempt:  1,
		EventID:  lastEventID.Add(1),
	}
	given := chainNames(names, handlers)
	for i, h := range handlers {
		info.Index = i
		info.Handler = given[i]
		if h == nil {
			return Result{Ran: i, Err: fmt.Errorf("%w: handler %d of %d", eventbus.ErrNilHandler, i+1, len(handlers)),
				Handler: info.Handler}
		}
		err := call(eventbus.ContextWithCallInfo(ctx, info), h, ev)
		if err == nil {
			continue
		}
		// Classify as a bus does (its dispatch is the contract): a
		// panic is a failure whatever its value.
		res := Result{Ran: i + 1, Err: err, Handler: info.Handler}
		res.Panic, _ = err.(*eventbus.PanicError)
		res.Stopped = res.Panic == nil && errors.Is(err, eventbus.ErrStopChain)
		res.Permanent = res.Panic == nil && !res.Stopped && eventbus.IsPermanent(err)
		return res
	}
	return Result{Ran: len(handlers)}
}

// call runs h, turning a panic into a *eventbus.PanicError.
func call[C eventbus.EventContext](ctx context.Context, h eventbus.Handler[C], ev *C) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &eventbus.PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return h(ctx, ev)
}

func poolOf[C eventbus.EventContext]() eventbus.Pool {
	switch any((*C)(nil)).(type) {
	case *eventbus.UserContext:
		return eventbus.PoolUser
	case *eventbus.ChannelContext:
		return eventbus.PoolChannel
	}
	return eventbus.PoolPusher
}

// chainNames names each handler as a bus would: the name given, else
// eventbus.HandlerName with "#n" when an earlier handler has that name.
func chainNames[C eventbus.EventContext](given []string, handlers []eventbus.Handler[C]) []string {
	names := make([]string, len(handlers))
	taken := make(map[string]bool, len(handlers))
	for i, h := range handlers {
		if i < len(given) && given[i] != "" {
			names[i] = given[i]
		} else {
			base := eventbus.HandlerName(h)
			names[i] = base
			for n := 2; taken[names[i]]; n++ {
				names[i] = base + "#" + strconv.Itoa(n)
			}
		}
		taken[names[i]] = true
	}
	return names
}
