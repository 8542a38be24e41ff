package eventbus

import (
	"context"
	"sync/atomic"
	"time"
)

// CallInfo describes the handler call a context belongs to.
type CallInfo struct {
	Pool    Pool
	Type    EventType
	Handler string // the handler's name
	Index   int    // its position in the chain
	Attempt int    // attempt number, from 1
	EventID uint64 // unique per run unit in this process (a batch shares one)
}

// CallInfoFrom returns the CallInfo of a handler's context, or false when
// ctx is not (derived from) one.
func CallInfoFrom(ctx context.Context) (CallInfo, bool) {
	if c := callOf(ctx); c != nil {
		return c.info(), true
	}
	if ctx == nil {
		return CallInfo{}, false
	}
	info, ok := ctx.Value(callInfoKey{}).(CallInfo)
	return info, ok
}

// ContextWithCallInfo returns a copy of ctx that CallInfoFrom reads info
// from. It is for running handlers outside a bus, in tests (see the
// eventbustest package); a bus gives handlers their CallInfo itself.
func ContextWithCallInfo(ctx context.Context, info CallInfo) context.Context {
	return context.WithValue(ctx, callInfoKey{}, info)
}

type callKey struct{}

type callInfoKey struct{}

// callCtx is the context of one handler attempt. It takes its values from
// the producer's context (without its cancellation) and its cancellation
// from the bus's abort signal. Each attempt gets its own callCtx, never
// reused, so a context kept by a handler stays valid; they are carved from
// per-worker slabs so that a dispatch does not allocate.
//
// It is kept small (one slab block serves many calls): CallInfo is built
// from it on demand.
type callCtx struct {
	pool    *pool
	values  context.Context // producer's context, wrapped WithoutCancel; may be nil
	handler *handlerEntry
	eventID uint64
	index   int32
	attempt int32
	typ     EventType
	// returned is set once the handler returns. Slab memory starts zeroed,
	// so a fresh context counts as running without a store.
	returned atomic.Bool
}

// running reports whether the handler the context was made for has not
// returned yet.
func (c *callCtx) running() bool { return !c.returned.Load() }

// Running implements engine.Parent.
func (c *callCtx) Running() bool { return c.running() }

func (c *callCtx) info() CallInfo {
	return CallInfo{Pool: c.pool.kind, Type: c.typ, Handler: c.handler.name,
		Index: int(c.index), Attempt: int(c.attempt), EventID: c.eventID}
}

func (c *callCtx) bus() *Bus { return c.pool.bus }

func (c *callCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *callCtx) Done() <-chan struct{}       { return c.bus().life.AbortContext().Done() }
func (c *callCtx) Err() error                  { return c.bus().life.AbortContext().Err() }

func (c *callCtx) Value(key any) any {
	if _, ok := key.(callKey); ok {
		return c
	}
	if c.values == nil {
		return nil
	}
	return c.values.Value(key)
}

// AfterFunc lets the context package attach derived contexts to the bus's
// abort signal without a goroutine each.
func (c *callCtx) AfterFunc(f func()) (stop func() bool) {
	return context.AfterFunc(c.bus().life.AbortContext(), f)
}

func (c *callCtx) String() string { return "eventbus.handlerContext(" + c.handler.name + ")" }

// callOf finds the callCtx ctx is or derives from.
func callOf(ctx context.Context) *callCtx {
	if ctx == nil {
		return nil
	}
	if c, ok := ctx.(*callCtx); ok {
		return c
	}
	c, _ := ctx.Value(callKey{}).(*callCtx)
	return c
}

// valuesOf returns what a handler context should take its values from for
// an event added with ctx: the same source for a handler's own context (so
// chains of follow-on events stay flat), ctx itself when it can never be
// cancelled (Background, or values on top of it: no allocation), and ctx
// without its cancellation otherwise.
func valuesOf(ctx context.Context) context.Context {
	if ctx == nil {
		return nil
	}
	if c, ok := ctx.(*callCtx); ok {
		return c.values
	}
	if ctx.Done() == nil {
		return ctx
	}
	return context.WithoutCancel(ctx)
}

// ctxSlab hands out callCtx values carved from larger blocks, one block
// allocation per slabSize handler calls.
type ctxSlab struct {
	buf []callCtx
}

const slabSize = 256

func (s *ctxSlab) next() *callCtx {
	if len(s.buf) == 0 {
		s.buf = make([]callCtx, slabSize)
	}
	c := &s.buf[0]
	s.buf = s.buf[1:]
	return c
}
