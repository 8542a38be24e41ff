package engine

import (
	"sync"
	"sync/atomic"
	"time"
)

// shard states: idle (no worker holds it and it is not on the run queue),
// scheduled (on the run queue or held by a worker).
const (
	idle uint8 = iota
	scheduled
)

// shard is one FIFO and the state its producers share with the worker that
// holds it.
//
// The FIFO is the inline item first, then a list of segments taken from
// the engine's free list: an add to an empty shard touches only the shard,
// and no add allocates once the free list is warm. Producers append under
// mu; a worker that takes the shard from the run queue takes the whole FIFO
// in one step under mu (a copy of first and the segment list) and runs it
// without the lock. rt belongs to whichever worker holds the shard (state
// scheduled and taken from the run queue), so it needs no lock.
//
// The fields producers touch sit in the shard's first cache line, the
// inline item in the second.
type shard[E any] struct {
	mu      sync.Mutex
	queued  int32 // items in the FIFO: first, then the segments
	idx     int32 // the shard's index in the engine
	state   uint8
	stopped bool // refuse every add: Close halted the shard, or the engine retired
	halted  bool // Close gave up: a worker never lets the shard go idle while it holds events
	// occupied counts items accepted and not yet given back: queued, in a
	// worker's hands or parked for a retry. Capacity is checked against it.
	occupied   int
	head, tail *segment[E]
	e          *Engine[E]
	rt         *retries[E] // nil until a unit of the shard fails
	first      Item[E]     // the FIFO's first item, when queued > 0; with an interface E, the second cache line
}

// retries is the retry state of a shard: its parked keys, when they are
// due, and the timer that wakes the shard. It is made at the first retry.
type retries[E any] struct {
	parked map[uint64]*parkedKey[E]
	due    dueHeap
	timer  *time.Timer // fires wake
}

// segItems is how many items a segment holds: with an interface E a
// segment fills a 1 KiB allocation.
const segItems = 15

// segment is a block of a shard's FIFO.
type segment[E any] struct {
	items [segItems]Item[E]
	n     int
	next  *segment[E]
}

// segPool is an engine's free list of segments. New fills it for the
// engine's capacity; follow-on adds above it grow it, and a trim gives the
// growth back once the engine is quiet.
//
// Producers take segments and workers give them back, usually on other
// cores at the same time, so the two sides share neither a lock nor a
// cache line: a worker pushes what it gives back on a lock-free stack
// (incoming; pushing only, so no ABA), and a producer pops from the list
// it owns under mu, taking the whole incoming stack in one swap when that
// list runs dry. Each side counts on its own line (taken, given); the
// segments on both lists are given minus taken.
type segPool[E any] struct {
	// The producers' line.
	mu    sync.Mutex
	free  *segment[E]  // under mu
	taken atomic.Int64 // segments taken off the lists (by get, or dropped by trim)
	keep  int64        // segments a trim leaves
	_     [56]byte     // every producer field at least 64 bytes before every worker field
	// The workers' line.
	incoming atomic.Pointer[segment[E]]
	given    atomic.Int64 // segments put on the lists (by fill or put)
	_        [48]byte
}

// count returns how many segments the lists hold: exact when neither side
// is at work, a snapshot otherwise.
func (p *segPool[E]) count() int64 { return p.given.Load() - p.taken.Load() }

// fill links count new segments into the free list.
func (p *segPool[E]) fill(count int) {
	segs := make([]segment[E], count)
	p.mu.Lock()
	for i := range segs {
		segs[i].next = p.free
		p.free = &segs[i]
	}
	p.mu.Unlock()
	p.given.Add(int64(count))
	p.keep = int64(count)
}

// get returns an empty segment, from the free list if it has one.
func (p *segPool[E]) get() *segment[E] {
	p.mu.Lock()
	s := p.free
	if s == nil {
		s = p.incoming.Swap(nil)
	}
	if s != nil {
		p.free, s.next = s.next, nil
		p.taken.Add(1)
	}
	p.mu.Unlock()
	if s == nil {
		s = new(segment[E])
	}
	return s
}

// put clears the segments of the list from head to tail (n of them) and
// gives them back, without a lock.
func (p *segPool[E]) put(head, tail *segment[E], n int) {
	for s := head; ; s = s.next {
		clear(s.items[:s.n])
		s.n = 0
		if s == tail {
			break
		}
	}
	for {
		old := p.incoming.Load()
		tail.next = old
		if p.incoming.CompareAndSwap(old, head) {
			break
		}
	}
	p.given.Add(int64(n))
}

// trim drops the free segments above keep.
func (p *segPool[E]) trim() {
	p.mu.Lock()
	if in := p.incoming.Swap(nil); in != nil {
		t := in
		for t.next != nil {
			t = t.next
		}
		t.next, p.free = p.free, in
	}
	for p.count() > p.keep && p.free != nil {
		s := p.free
		p.free, s.next = s.next, nil
		p.taken.Add(1)
	}
	p.mu.Unlock()
}

// over reports whether the free list holds more than a trim leaves.
func (p *segPool[E]) over() bool { return p.count() > p.keep }

// pushLocked appends it to the FIFO. s.mu must be held.
func (s *shard[E]) pushLocked(it *Item[E]) {
	if s.queued == 0 {
		s.first = *it
		s.queued = 1
		return
	}
	s.pushSegment(it)
}

// pushSegment is pushLocked for a FIFO that holds its first item already:
// it goes in the tail segment (kept apart so that pushLocked inlines).
func (s *shard[E]) pushSegment(it *Item[E]) {
	t := s.tail
	if t == nil || t.n == segItems {
		seg := s.e.segs.get()
		if t == nil {
			s.head = seg
		} else {
			t.next = seg
		}
		s.tail, t = seg, seg
	}
	t.items[t.n] = *it
	t.n++
	s.queued++
}

// drainLocked takes the whole FIFO: its first item is copied to *first,
// the rest is the segment list returned. s.mu must be held.
func (s *shard[E]) drainLocked(first *Item[E]) (n int, head *segment[E]) {
	n, head = int(s.queued), s.head
	if n > 0 {
		*first = s.first
		s.first = Item[E]{}
	}
	s.queued, s.head, s.tail = 0, nil, nil
	return n, head
}

// appendFIFO appends the FIFO's items to dst and empties it, giving its
// segments back. s.mu must be held.
func (s *shard[E]) appendFIFOLocked(dst []Item[E]) []Item[E] {
	var first Item[E]
	n, head := s.drainLocked(&first)
	if n == 0 {
		return dst
	}
	dst = append(dst, first)
	s.e.putList(head, func(seg *segment[E]) { dst = append(dst, seg.items[:seg.n]...) })
	return dst
}

// putList gives back the segment list from head, calling each (if not nil)
// on every segment first.
func (e *Engine[E]) putList(head *segment[E], each func(*segment[E])) {
	if head == nil {
		return
	}
	n, tail := 0, head
	for seg := head; seg != nil; seg = seg.next {
		if each != nil {
			each(seg)
		}
		n, tail = n+1, seg
	}
	e.segs.put(head, tail, n)
}

// parkedKeys returns how many keys of the shard wait behind a failed unit.
func (s *shard[E]) parkedKeys() int {
	if s.rt == nil {
		return 0
	}
	return len(s.rt.parked)
}

// retryState returns the shard's retry state, making it at the first retry.
func (s *shard[E]) retryState() *retries[E] {
	if s.rt == nil {
		s.rt = &retries[E]{parked: make(map[uint64]*parkedKey[E])}
	}
	return s.rt
}

// parkedKey holds, in order, the units of one key that wait behind a
// failed unit: the head is the one to retry, the rest arrived after it.
type parkedKey[E any] struct {
	units    []*Unit[E]
	retrying bool // the head has failed and waits for its retry time
}

// holds reports whether the shard still has events: queued or parked.
// s.mu must be held, or the shard held by the caller.
func (s *shard[E]) holds() bool { return s.queued > 0 || s.parkedKeys() > 0 }

// wake is the retry timer's function: it puts an idle shard whose retry is
// due back on the run queue.
func (s *shard[E]) wake() {
	s.mu.Lock()
	push := s.scheduleLocked()
	s.mu.Unlock()
	if push {
		s.e.ready(s)
	}
}

// hasDue reports whether a parked key waits for a retry time.
func (s *shard[E]) hasDue() bool { return s.rt != nil && len(s.rt.due) > 0 }

// dueBy reports whether a parked key's retry time has come by now.
func (s *shard[E]) dueBy(now time.Time) bool {
	return s.hasDue() && !s.rt.due[0].at.After(now)
}

// maxIdleBuffer is the largest batch buffer, in items, that a worker of a
// batching engine keeps for long once its engine goes quiet. A burst's
// larger buffers are kept for trimDelay after the last worker went to
// sleep, so that a busy key whose worker keeps catching up does not grow
// its buffer again and again, and then released.
const maxIdleBuffer = 256

// trimDelay is how long an engine keeps a burst's buffers and segments
// after a worker went to sleep.
var trimDelay = time.Second

// parkBuffer keeps a sleeping worker's large batch buffer for the next
// worker that needs one, until the next trim.
func (e *Engine[E]) parkBuffer(b []Item[E]) {
	e.oversizedMu.Lock()
	e.spares = append(e.spares, b[:0])
	e.nspares.Store(int32(len(e.spares)))
	e.oversizedMu.Unlock()
}

// spareBuffer returns a parked buffer, or nil.
func (e *Engine[E]) spareBuffer() []Item[E] {
	e.oversizedMu.Lock()
	defer e.oversizedMu.Unlock()
	if n := len(e.spares); n > 0 {
		b := e.spares[n-1]
		e.spares[n-1] = nil
		e.spares = e.spares[:n-1]
		e.nspares.Store(int32(len(e.spares)))
		return b
	}
	return nil
}

// armTrim makes sure a trim runs trimDelay from now if there is something
// to trim. One timer, armed only after bursts: an idle bus does nothing.
func (e *Engine[E]) armTrim() {
	over := e.segs.over()
	if !over && e.nspares.Load() == 0 {
		return // nothing to trim: no lock on the way to sleep
	}
	e.oversizedMu.Lock()
	defer e.oversizedMu.Unlock()
	if e.trimArmed || (!over && len(e.spares) == 0) {
		return
	}
	e.trimArmed = true
	e.trimMark = e.added.Load()
	if e.trimTimer == nil {
		e.trimTimer = time.AfterFunc(trimDelay, e.trim)
	} else {
		e.trimTimer.Reset(trimDelay)
	}
}

// trim releases parked buffers and the free segments above what New made,
// once the engine took no event for trimDelay: a busy engine whose workers
// keep falling asleep between events keeps its segments.
func (e *Engine[E]) trim() {
	e.oversizedMu.Lock()
	if a := e.added.Load(); a != e.trimMark && e.running.Load() > 0 {
		e.trimMark = a
		e.trimTimer.Reset(trimDelay)
		e.oversizedMu.Unlock()
		return
	}
	e.trimArmed = false
	clear(e.spares)
	e.spares = e.spares[:0]
	e.nspares.Store(0)
	e.oversizedMu.Unlock()
	e.segs.trim()
}

// stopTrim stops the trim timer (engines that exit).
func (e *Engine[E]) stopTrim() {
	e.oversizedMu.Lock()
	defer e.oversizedMu.Unlock()
	if e.trimTimer != nil {
		e.trimTimer.Stop()
	}
	e.trimArmed = false
}

// release gives back the room of n events the shard no longer holds. s.mu
// must be held.
func (s *shard[E]) release(n int) {
	q := s.e.cfg.QueueSize
	if s.occupied > q {
		s.e.over.Add(-int64(s.occupied - max(s.occupied-n, q)))
	}
	s.occupied -= n
}
