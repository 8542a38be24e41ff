package eventbus

import (
	"context"
	"sort"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/imbus/eventbus/internal/engine"
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
// does not allocate, and are one 32-bit word each: what they share (the
// pool, the handlers called, the producers' values, the event IDs) is in
// their block. Handler contexts are most of what a bus allocates, so their
// size sets how often the garbage collector runs: at 4 bytes a context, a
// run of handlers costs the collector a quarter of what 16 bytes did.
type callCtx struct {
	// word packs the context: bit 0 is set (atomically) once the handler
	// returns; the other bits are written once, with a plain store, before
	// the context is handed out, and read atomically after (see ctxNext
	// and the constants beside it).
	word uint32
}

// engine.Running reads a parent's returned bit as the word's lowest: this
// fails to compile if ctxReturned moves.
var _ = [1]struct{}{}[ctxReturned-1]

// The fields of callCtx.word. The attempt number is kept in the word when
// it fits; 0 there means the block's exceptions hold it. ctxNext tells how
// the event ID follows from the previous context's (see callCtx.call).
const (
	ctxReturned    = 1 << 0 // the handler returned; the engine reads it (engine.Parent is &word)
	ctxNext        = 1 << 1 // event ID: the previous context's plus one (else the same)
	ctxSlotShift   = 2      // bits 2-12: index in the block's ctxs
	ctxSlotBits    = 11
	ctxHandShift   = ctxSlotShift + ctxSlotBits // bits 13-20: index in the block's handlers
	ctxHandBits    = 8
	ctxAttShift    = ctxHandShift + ctxHandBits // bits 21-31: attempt, 1 to ctxMaxAttempt
	ctxMaxAttempt  = 1<<(32-ctxAttShift) - 1
	ctxMaxHandlers = 1 << ctxHandBits
)

// handlerRef is a handler as a block's contexts see it: the entry, the
// event type it handles and its position in that type's chain. An
// entry's address fixes both (chains are per type and never reorder an
// entry list in place), so a block lists each entry once.
type handlerRef struct {
	entry *handlerEntry
	typ   EventType
	index int32
}

// slot and handler read the word atomically: markReturned may set its bit
// at the same time (an atomic load is a plain load on amd64 and arm64).
func (c *callCtx) slot() int { return slotOf(atomic.LoadUint32(&c.word)) }

// slotOf is the slot a context word holds.
func slotOf(w uint32) int { return int(w>>ctxSlotShift) & (1<<ctxSlotBits - 1) }
func (c *callCtx) handler() int {
	return int(atomic.LoadUint32(&c.word)>>ctxHandShift) & (ctxMaxHandlers - 1)
}

// markReturned records that the handler the context was made for returned.
func (c *callCtx) markReturned() { atomic.OrUint32(&c.word, ctxReturned) }

// ctxGroup is how many contexts of a block share one checkpoint (the event
// ID of the group's first context) and one array of producers' values.
const ctxGroup = 64

// ctxBlock is a block of handler contexts carved by one worker of one pool.
// Its only pointers are the header words, so the garbage collector scans a
// few hundred bytes of it and no context. A handler that keeps a context
// keeps its whole block alive (8 KiB), and with it the producers' contexts
// of the block's other calls (at most ctxBlockSize; a worker going idle
// lets go of a block that holds any, see ctxSlab.release).
//
// Event IDs are not stored per context: most calls of a worker are the
// next unit's (ID + 1) or the same unit's next handler (same ID), which a
// bit of the word tells; each group of ctxGroup contexts starts from a
// checkpoint, and an ID that is neither (a new block of IDs, a durable
// event's own ID) or an attempt too large for the word is an exception,
// kept in a list.
//
// The lists in the header are read by kept contexts of the block while the
// worker extends them, so each is published through an atomic pointer or
// count.
type ctxBlock struct {
	pool *pool
	// handlers lists the handlers the block's contexts were made for, in
	// the order of their first call; a new handler gets a new list (a
	// block sees as many as the chains it runs have, usually a few).
	handlers atomic.Pointer[[]handlerRef]
	// exceptions holds the contexts whose event ID or attempt the word
	// does not give, in slot order: the first nexc entries of the array
	// published last (it is replaced, never changed below nexc, as it
	// grows).
	exceptions atomic.Pointer[[]ctxException]
	nexc       atomic.Int32
	// values holds the producers' contexts of each group, by slot; made
	// the first time a context of the group has values (most producers
	// pass Background).
	values [ctxGroups]atomic.Pointer[[ctxGroup]context.Context]
	// marks holds the event ID of each group's first context.
	marks [ctxGroups]uint64
	ctxs  [ctxBlockSize]callCtx
}

// ctxException is the event ID and attempt of a context whose word does
// not give them.
type ctxException struct {
	slot    int32
	attempt int32
	id      uint64
}

// ctxBlockSize makes a ctxBlock 8184 bytes: with the allocator's 8-byte
// header of an object that holds pointers, exactly its 8 KiB size class
// (TestCtxBlockFitsItsSizeClass checks it). The last group is two contexts
// short for that header. It must stay below 1<<ctxSlotBits, the room
// callCtx.word has for a slot.
const (
	ctxGroups    = 30
	ctxBlockSize = ctxGroups*ctxGroup - 2
)

// block returns the block c was carved from. c lies in block.ctxs at
// c.slot, so the block starts at a fixed distance before c, inside the
// same allocation.
func (c *callCtx) block() *ctxBlock { return c.blockAt(c.slot()) }

// blockAt is block for c's slot, already read.
func (c *callCtx) blockAt(slot int) *ctxBlock {
	first := unsafe.Add(unsafe.Pointer(c), -slot*int(unsafe.Sizeof(callCtx{})))
	return (*ctxBlock)(unsafe.Add(first, -int(unsafe.Offsetof(ctxBlock{}.ctxs))))
}

// call returns the event ID and attempt number of the call c was made for.
// The ID is the group's checkpoint or the last exception before c in its
// group, plus one for each context after it that starts the next unit: a
// walk of at most ctxGroup words, only when CallInfo is asked for.
func (c *callCtx) call() (id uint64, attempt int) {
	w := atomic.LoadUint32(&c.word)
	i := slotOf(w)
	b := c.blockAt(i)
	attempt = int(w >> ctxAttShift)
	from := i &^ (ctxGroup - 1)
	id = b.marks[from/ctxGroup]
	if n := int(b.nexc.Load()); n > 0 {
		exc := (*b.exceptions.Load())[:n]
		// The last exception at or before i.
		k := sort.Search(n, func(k int) bool { return int(exc[k].slot) > i }) - 1
		if k >= 0 && int(exc[k].slot) >= from {
			e := exc[k]
			from, id = int(e.slot), e.id
			if int(e.slot) == i && attempt == 0 {
				attempt = int(e.attempt)
			}
		}
	}
	for j := from + 1; j <= i; j++ {
		if atomic.LoadUint32(&b.ctxs[j].word)&ctxNext != 0 {
			id++
		}
	}
	return id, attempt
}

func (c *callCtx) pool() *pool { return c.block().pool }

// ref returns the handler the context was made for.
func (c *callCtx) ref() *handlerRef { return &(*c.block().handlers.Load())[c.handler()] }

// entry returns the handler the context was made for.
func (c *callCtx) entry() *handlerEntry { return c.ref().entry }

// values returns the producer's context the handler takes its values from,
// or nil.
func (c *callCtx) values() context.Context {
	i := c.slot()
	return c.blockAt(i).valuesAt(i)
}

// valuesAt returns the producer's context kept for the context at slot i,
// or nil.
func (b *ctxBlock) valuesAt(i int) context.Context {
	if vs := b.values[i/ctxGroup].Load(); vs != nil {
		return vs[i%ctxGroup]
	}
	return nil
}

// follow returns what an add to bus b with c itself as its context needs,
// reading c's word once: the producer's context the event takes its
// values from (c's), and c when the add is a follow-on of c's handler (see
// runningOn), nil otherwise.
func (c *callCtx) follow(b *Bus) (*callCtx, context.Context) {
	w := atomic.LoadUint32(&c.word)
	i := slotOf(w)
	blk := c.blockAt(i)
	values := blk.valuesAt(i)
	if !runningIn(w, blk, b) {
		return nil, values
	}
	return c, values
}

// runningOn reports whether c's handler is a handler of bus b that has
// not returned: an add with c (or a context derived from it) is then a
// follow-on of that handler, and a wait on b from it could wait for ever.
func (c *callCtx) runningOn(b *Bus) bool {
	w := atomic.LoadUint32(&c.word)
	return runningIn(w, c.blockAt(slotOf(w)), b)
}

// runningIn is runningOn for a context word w already read, in block blk.
func runningIn(w uint32, blk *ctxBlock, b *Bus) bool {
	return w&ctxReturned == 0 && blk.pool.bus == b
}

// running reports whether the handler the context was made for has not
// returned yet.
func (c *callCtx) running() bool { return engine.Running(&c.word) }

func (c *callCtx) info() CallInfo {
	p, r := c.pool(), c.ref()
	id, attempt := c.call()
	return CallInfo{Pool: p.kind, Type: r.typ, TypeName: p.bus.typeNameLocked(r.typ), Handler: r.entry.name,
		Index: int(r.index), Attempt: attempt, EventID: id}
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
// an event added with ctx, where c is callOf(ctx), when ctx is not a
// handler's own context (for that, see callCtx.follow: the same source, so
// chains of follow-on events stay flat): ctx itself when it can never be
// cancelled (Background, or values on top of it: no allocation), the
// values ctx adds over a handler's context copied onto that context's
// source (never the handler's call machinery: its timeout, its context
// block), and ctx without its cancellation otherwise.
func valuesOf(ctx context.Context, c *callCtx) context.Context {
	if ctx == nil {
		return nil
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
// (64 bytes) at least a cache line away from the next slab's and from
// whatever the allocator puts before the first, so that workers on
// different cores never write one line.
type ctxSlab struct {
	_     [64]byte
	block *ctxBlock
	n     int32 // contexts of block handed out
	// limit is where quick stops: the next group's first context (or the
	// block's end), which nextSlow hands out.
	limit int32
	// last is the index in the block's handler list of the handler
	// called last (chains of one handler never search); lastH is its
	// entry, nil until a handler is found in this block.
	last uint32
	// hasValues tells that a context of the block holds a producer's
	// context (see release).
	hasValues bool
	handlers  []handlerRef // the block's handler list as last published
	lastH     *handlerEntry
	lastID    uint64 // event ID of the context handed out last
}

// quick returns a fresh context for a call of p's handler h, for event id
// and attempt, in the common case (room in the block, the handler called
// last, not a group's first context, an ID the word tells) and nil
// otherwise (then nextSlow does it). Calls with a producer's values go to
// nextSlow. It is small enough to be inlined into the dispatch. h's type
// and position are those listed with it (see handlerRef).
func (s *ctxSlab) quick(h *handlerEntry, id uint64, attempt int) *callCtx {
	n, d := s.n, id-s.lastID
	if n >= s.limit || s.lastH != h || d > 1 || uint(attempt-1) >= ctxMaxAttempt {
		return nil
	}
	c := &s.block.ctxs[n]
	c.word = uint32(d)*ctxNext | uint32(n)<<ctxSlotShift | s.last<<ctxHandShift | uint32(attempt)<<ctxAttShift
	s.n, s.lastID = n+1, id
	return c
}

// nextSlow returns a fresh context for a call of p's handler h, for event
// id and attempt, when quick cannot: a new block is due, the handler
// changed, a group starts, the ID or attempt is an exception, or values,
// the producer's context, is not nil.
func (s *ctxSlab) nextSlow(p *pool, h handlerRef, id uint64, attempt int, values context.Context) *callCtx {
	if s.block == nil || s.n >= ctxBlockSize {
		s.newBlock(p)
	}
	if s.lastH != h.entry && !s.find(h) {
		// The block's handler list is full.
		s.newBlock(p)
		s.find(h)
	}
	n := int(s.n)
	w := uint32(n)<<ctxSlotShift | s.last<<ctxHandShift
	fits := attempt >= 1 && attempt <= ctxMaxAttempt
	if fits {
		w |= uint32(attempt) << ctxAttShift
	}
	switch {
	case n%ctxGroup == 0:
		s.block.marks[n/ctxGroup] = id
		if !fits {
			s.except(n, id, attempt)
		}
	case fits && id == s.lastID:
	case fits && id == s.lastID+1:
		w |= ctxNext
	default:
		s.except(n, id, attempt)
	}
	c := &s.block.ctxs[n]
	c.word = w
	s.n, s.lastID = int32(n+1), id
	s.limit = int32(min(n/ctxGroup*ctxGroup+ctxGroup, ctxBlockSize))
	if values != nil {
		s.setValues(n, values)
	}
	return c
}

// newBlock starts a new block of contexts for p.
func (s *ctxSlab) newBlock(p *pool) {
	s.block, s.n, s.limit, s.handlers, s.lastH, s.hasValues = &ctxBlock{pool: p}, 0, 0, nil, nil, false
}

// except records the event ID and attempt of the context at slot n in the
// block's exceptions. The list is published with its full length: entries
// are written past the count readers see, then counted; a full list is
// replaced by a copy twice as long.
func (s *ctxSlab) except(n int, id uint64, attempt int) {
	b := s.block
	k := int(b.nexc.Load())
	var list []ctxException
	if p := b.exceptions.Load(); p != nil {
		list = *p
	}
	if k == len(list) {
		grown := make([]ctxException, max(4, 2*len(list)))
		copy(grown, list)
		list = grown
		b.exceptions.Store(&grown)
	}
	list[k] = ctxException{slot: int32(n), attempt: int32(attempt), id: id}
	b.nexc.Store(int32(k + 1))
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
// it is not there, and reports false when the list is full. The list grows
// by copy, so kept contexts reading the old one are not disturbed.
func (s *ctxSlab) find(h handlerRef) bool {
	for i, e := range s.handlers {
		if e == h {
			s.lastH, s.last = h.entry, uint32(i)
			return true
		}
	}
	if len(s.handlers) == ctxMaxHandlers {
		return false
	}
	hs := append(s.handlers[:len(s.handlers):len(s.handlers)], h)
	s.block.handlers.Store(&hs)
	s.handlers, s.last, s.lastH = hs, uint32(len(hs)-1), h.entry
	return true
}

// release drops the current block when it holds producers' values, so
// that an idle worker keeps no finished event's context alive. Contexts that
// handlers kept still reach their block; a block without values holds only
// handler entries and is kept for the next event.
func (s *ctxSlab) release() {
	if s.block != nil && s.hasValues {
		s.block, s.n, s.limit, s.handlers, s.lastH, s.hasValues = nil, 0, 0, nil, nil, false
	}
}

// setValues keeps values, the producer's context, for the context at slot
// n, in its group's array (made on the group's first values).
func (s *ctxSlab) setValues(n int, values context.Context) {
	g := &s.block.values[n/ctxGroup]
	vs := g.Load()
	if vs == nil {
		vs = new([ctxGroup]context.Context)
		g.Store(vs)
	}
	vs[n%ctxGroup] = values
	s.hasValues = true
}
