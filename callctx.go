package eventbus

import (
	"context"
	"sync/atomic"
	"time"
	"unsafe"
)

// CallInfo describes the handler call a context belongs to.
type CallInfo struct {
	Pool Pool
	Type EventType
	// TypeName is the type's name as Bus.TypeName gives it: a built-in
	// name, the name given to Define, or "EventType(n)".
	TypeName string
	Handler  string // the handler's name
	Index    int    // its position in the chain
	Attempt  int    // attempt number, from 1
	// EventID is unique per run unit in this process (a batch shares one),
	// across durable and other events; a durable event's is
	// DurableEventID(its record id), the same in every process life.
	EventID uint64
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
// reused, so a context kept by a handler stays valid.
//
// Contexts are carved from per-worker blocks (ctxBlock), so that a dispatch
// does not allocate, and hold no pointer: what they share (the pool, the
// handlers called, the producers' values) is in their block's header. The
// garbage collector then never scans them and filling one needs no write
// barrier, which is most of what a handler context costs.
type callCtx struct {
	eventID uint64
	attempt int32
	// word packs what finds the context's block and handler, and whether
	// the handler returned: bit 0 is set (atomically) once the handler
	// returns, bits 1-15 hold the index in the block's ctxs (to find the
	// block), bits 16-31 the index in the block's handlers, which also
	// gives the event type and the handler's position in its chain.
	// Block memory starts zeroed, so a fresh context counts as running;
	// one plain store fills the rest before the context is handed out;
	// later reads are atomic. Packed, a context is 16 bytes: handler
	// contexts are most of what a bus allocates, and the fewer bytes, the
	// rarer the garbage collector's cycles.
	word uint32
}

// handlerRef is a handler as a block's contexts see it: the entry, the
// event type it handles and its position in that type's chain. An
// entry's address fixes both (chains are per type and never reorder an
// entry list in place), so a block lists each entry once.
type handlerRef struct {
	entry *handlerEntry
	typ   EventType
	index int32
}

// ctxWord packs a context's slot and handler index (see callCtx.word).
func ctxWord(slot, handler int) uint32 { return uint32(handler)<<16 | uint32(slot)<<1 }

const ctxReturned = 1 // callCtx.word's bit: the handler returned

// slot and handler read word atomically: markReturned may set its bit at
// the same time (an atomic load is a plain load on amd64 and arm64).
func (c *callCtx) slot() int    { return int(atomic.LoadUint32(&c.word)>>1) & 0x7fff }
func (c *callCtx) handler() int { return int(atomic.LoadUint32(&c.word) >> 16) }

// markReturned records that the handler the context was made for returned.
func (c *callCtx) markReturned() { atomic.OrUint32(&c.word, ctxReturned) }

// ctxBlock is a block of handler contexts carved by one worker of one pool.
// Its only pointers are the header words, so the garbage collector scans a
// few words of it whatever its size. A handler that keeps a context keeps
// its whole block alive (8 KiB).
//
// The lists in the header are read by kept contexts of the block while the
// worker extends them, so each is published through an atomic pointer.
type ctxBlock struct {
	pool *pool
	// handlers lists the handlers the block's contexts were made for, in
	// the order of their first call; a new handler gets a new list (a
	// block sees as many as the chains it runs have, usually a few).
	handlers atomic.Pointer[[]handlerRef]
	// values holds the producers' contexts, by slot; made the first time
	// a context of the block has values (most producers pass Background).
	values atomic.Pointer[[ctxBlockSize]context.Context]
	ctxs   [ctxBlockSize]callCtx
}

// ctxBlockSize makes a ctxBlock (a 24-byte header and 16-byte contexts)
// 8184 bytes, just under the allocator's 8 KiB size class: 511 contexts
// would round the block up to the 9472-byte class and waste 13%.
// TestCtxBlockFitsItsSizeClass checks it. It must stay below 1<<15, the
// room callCtx.word has for a slot.
const ctxBlockSize = 510

// block returns the block c was carved from. c lies in block.ctxs at
// c.slot, so the block starts at a fixed distance before c, inside the
// same allocation.
func (c *callCtx) block() *ctxBlock {
	first := unsafe.Add(unsafe.Pointer(c), -c.slot()*int(unsafe.Sizeof(callCtx{})))
	return (*ctxBlock)(unsafe.Add(first, -int(unsafe.Offsetof(ctxBlock{}.ctxs))))
}

func (c *callCtx) pool() *pool { return c.block().pool }

// ref returns the handler the context was made for.
func (c *callCtx) ref() *handlerRef { return &(*c.block().handlers.Load())[c.handler()] }

// entry returns the handler the context was made for.
func (c *callCtx) entry() *handlerEntry { return c.ref().entry }

// values returns the producer's context the handler takes its values from,
// or nil.
func (c *callCtx) values() context.Context {
	if vs := c.block().values.Load(); vs != nil {
		return vs[c.slot()]
	}
	return nil
}

// running reports whether the handler the context was made for has not
// returned yet.
func (c *callCtx) running() bool { return atomic.LoadUint32(&c.word)&ctxReturned == 0 }

// Running implements engine.Parent.
func (c *callCtx) Running() bool { return c.running() }

func (c *callCtx) info() CallInfo {
	p, r := c.pool(), c.ref()
	return CallInfo{Pool: p.kind, Type: r.typ, TypeName: p.bus.typeNameLocked(r.typ), Handler: r.entry.name,
		Index: int(r.index), Attempt: int(c.attempt), EventID: c.eventID}
}

func (c *callCtx) bus() *Bus { return c.pool().bus }

func (c *callCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *callCtx) Done() <-chan struct{}       { return c.bus().life.AbortContext().Done() }
func (c *callCtx) Err() error                  { return c.bus().life.AbortContext().Err() }

func (c *callCtx) Value(key any) any {
	if _, ok := key.(callKey); ok {
		return c
	}
	if v := c.values(); v != nil {
		return v.Value(key)
	}
	return nil
}

// AfterFunc lets the context package attach derived contexts to the bus's
// abort signal without a goroutine each.
func (c *callCtx) AfterFunc(f func()) (stop func() bool) {
	return context.AfterFunc(c.bus().life.AbortContext(), f)
}

func (c *callCtx) String() string {
	return "eventbus.handlerContext(" + c.entry().name + ")"
}

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
// an event added with ctx, where c is callOf(ctx): the same source for a
// handler's own context (so chains of follow-on events stay flat), ctx
// itself when it can never be cancelled (Background, or values on top of
// it: no allocation), the values ctx adds over a handler's context copied
// onto that context's source (never the handler's call machinery: its
// timeout, its context block), and ctx without its cancellation otherwise.
func valuesOf(ctx context.Context, c *callCtx) context.Context {
	if ctx == nil {
		return nil
	}
	if c != nil && ctx == context.Context(c) {
		return c.values()
	}
	if ctx.Done() == nil {
		return ctx
	}
	if c != nil {
		if v, ok := detachValues(ctx, c); ok {
			return v
		}
	}
	return context.WithoutCancel(ctx)
}

// ctxSlab hands out one worker's handler contexts, a block at a time.
//
// A worker writes its slab at every handler call, and the pool keeps its
// workers' slabs side by side: the padding keeps each slab's fields
// (56 bytes) at least a cache line away from the next slab's and from
// whatever the allocator puts before the first, so that workers on
// different cores never write one line.
type ctxSlab struct {
	_     [64]byte
	block *ctxBlock
	n     int // contexts of block handed out
	// the block's handler list as last published, and the index in it of
	// the handler called last (chains of one handler never search)
	handlers []handlerRef
	last     uint32
	lastH    *handlerEntry // handlers[last].entry; nil until a handler is found in this block
	_        [8]byte
}

// quick returns a fresh context for a call of p's handler h in the common
// case (room in the block, the handler called last, no producer's values)
// and nil otherwise (then nextSlow does it). It is small enough to be
// inlined into the dispatch. h's type and position are those listed with
// it (see handlerRef).
func (s *ctxSlab) quick(h *handlerEntry, values context.Context) *callCtx {
	if s.lastH != h || s.n >= ctxBlockSize || values != nil {
		return nil
	}
	c := &s.block.ctxs[s.n]
	c.word = ctxWord(s.n, int(s.last))
	s.n++
	return c
}

// nextSlow returns a fresh context for a call of p's handler h when quick
// cannot: a new block is due, the handler changed or values, the
// producer's context, is not nil.
func (s *ctxSlab) nextSlow(p *pool, h handlerRef, values context.Context) *callCtx {
	if s.block == nil || s.n == ctxBlockSize {
		s.block, s.n, s.handlers, s.lastH = &ctxBlock{pool: p}, 0, nil, nil
	}
	c := &s.block.ctxs[s.n]
	if s.lastH != h.entry {
		s.find(h)
	}
	c.word = ctxWord(s.n, int(s.last))
	s.n++
	if values != nil {
		s.setValues(c, values)
	}
	return c
}

// lastCtx returns the context handed out last (the current call's while a
// handler runs), or nil.
func (s *ctxSlab) lastCtx() *callCtx {
	if s.block == nil || s.n == 0 {
		return nil
	}
	return &s.block.ctxs[s.n-1]
}

// find points s.last at h in the block's handler list, adding it first if
// it is not there. The list grows by copy, so kept contexts reading the
// old one are not disturbed.
func (s *ctxSlab) find(h handlerRef) {
	s.lastH = h.entry
	for i, e := range s.handlers {
		if e == h {
			s.last = uint32(i)
			return
		}
	}
	hs := append(s.handlers[:len(s.handlers):len(s.handlers)], h)
	s.block.handlers.Store(&hs)
	s.handlers, s.last = hs, uint32(len(hs)-1)
}

// release drops the current block when it holds producers' values, so
// that an idle worker keeps no finished event's context alive. Contexts that
// handlers kept still reach their block; a block without values holds only
// handler entries and is kept for the next event.
func (s *ctxSlab) release() {
	if s.block != nil && s.block.values.Load() != nil {
		s.block, s.n, s.handlers, s.lastH = nil, 0, nil, nil
	}
}

func (s *ctxSlab) setValues(c *callCtx, values context.Context) {
	vs := s.block.values.Load()
	if vs == nil {
		vs = new([ctxBlockSize]context.Context)
		s.block.values.Store(vs)
	}
	vs[c.slot()] = values
}
