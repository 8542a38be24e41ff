package eventbus

import (
	"slices"
	"time"

	"github.com/imbus/eventbus/internal/engine"
)

// ShardLoad is a shard that holds events right now (see Bus.Keys): a FIFO
// that some keys hash to, with what it holds.
type ShardLoad struct {
	Pool Pool
	// Subscriber is "<type name>/<subscriber name>" for a subscriber's
	// lane, "" for the pool's own shard.
	Subscriber string
	Shard      int
	// Held counts its events queued, in a worker's hands or parked for a
	// retry; Queued those still in its FIFO.
	Held, Queued int
	// Running is true while a worker holds the shard (or it waits for
	// one on the run queue).
	Running bool
	// Head is the first event of the FIFO and HeadQueued counts the FIFO's
	// events with Head's key. When the FIFO is empty and no worker holds
	// the shard, Head is the failed event of the parked key holding the
	// most events, HeadQueued those events, and HeadParked is true. Head is
	// nil when neither applies (the events are in a worker's hands).
	Head       Event
	HeadQueued int
	HeadParked bool
}

// ParkedKey is a key whose event failed and waits for its retry; the
// key's later events wait behind it (see Bus.Keys).
type ParkedKey struct {
	Pool       Pool
	Subscriber string // as in ShardLoad
	Shard      int
	Event      Event  // the event that failed
	Handler    string // the handler that failed
	Attempt    int    // attempts of that handler so far
	Err        error  // its last error
	Events     int    // the key's events held, the failed one included
	NextTry    time.Time
}

// Keys fills busy, up to cap(busy), with the shards holding the most
// events, busiest first, across the three pools and every subscriber's
// lanes, and parked, up to cap(parked), with keys parked for a retry. It
// answers "why is this key's event not handled": which key holds work and
// which one waits for a retry, after which error.
//
// It takes each shard's lock in turn for a few reads, so it costs the
// producers of a shard a short wait, and allocates a scratch buffer of
// cap(busy) + cap(parked) entries: call it from a tool or a dashboard about
// once a second, never on a hot path. The snapshot is not atomic across
// shards. A shard that a worker holds at that instant does not show its
// parked keys: skipped counts the held shards holding more than their FIFO
// (events in the worker's hands, or parked keys). A key waiting for its
// retry shows once the worker lets its shard go, which it does while the
// key waits.
func (b *Bus) Keys(busy []ShardLoad, parked []ParkedKey) (_ []ShardLoad, _ []ParkedKey, skipped int) {
	busy, parked = busy[:0], parked[:0]
	if !b.made() {
		return busy, parked, 0
	}
	var sb []engine.ShardLoad[Event]
	if cap(busy) > 0 {
		sb = make([]engine.ShardLoad[Event], 0, cap(busy))
	}
	var sp []engine.ParkedLoad[Event]
	if cap(parked) > 0 {
		sp = make([]engine.ParkedLoad[Event], 0, cap(parked))
	}
	visit := func(p *pool, sub string) {
		if cap(busy) > 0 {
			sb = p.eng.Busiest(sb)
			for _, l := range sb {
				sl := ShardLoad{Pool: p.kind, Subscriber: sub, Shard: l.Shard, Held: l.Held,
					Queued: l.Queued, Running: l.Running, Head: l.Head, HeadQueued: l.HeadQueued, HeadParked: l.HeadParked}
				if len(busy) < cap(busy) {
					busy = append(busy, sl)
				} else if least := len(busy) - 1; sl.Held > busy[least].Held {
					busy[least] = sl
				} else {
					continue
				}
				slices.SortStableFunc(busy, func(a, b ShardLoad) int { return b.Held - a.Held })
			}
		}
		if room := cap(parked) - len(parked); room > 0 {
			var n int
			sp, n = p.eng.Parked(sp[:0:room])
			skipped += n
			for _, k := range sp {
				pk := ParkedKey{Pool: p.kind, Subscriber: sub, Shard: k.Shard, Event: k.Event,
					Attempt: k.Attempt, Err: k.Err, Events: k.Events, NextTry: k.Due}
				if ch, _ := k.Chain.(*chain); ch != nil && k.Index < len(ch.handlers) {
					pk.Handler = ch.handlers[k.Index].name
				}
				parked = append(parked, pk)
			}
		}
	}
	for _, p := range b.pools {
		visit(p, "")
	}
	for t := range b.chains {
		if c := b.chains[t].Load(); c != nil {
			for _, s := range c.subs {
				visit(s.lanes, b.TypeName(EventType(t))+"/"+s.name)
			}
		}
	}
	return busy, parked, skipped
}

// TypeInfo describes an event type the bus knows (see Bus.Types).
type TypeInfo struct {
	Type EventType
	Name string
	Pool Pool
	// Handlers are the names of its chain's handlers, in the order they
	// run; Subscribers the names of its subscribers.
	Handlers, Subscribers []string
	// Durable: its events go to the journal (WithJournal). Routed: adds
	// go to an Outbound route instead of the local pool.
	Durable, Routed bool
}

// Types lists the built-in and defined event types in number order, with
// their chains and subscribers as they are at the call. It allocates the
// list; it reads the registry's atomic pointers and takes no lock of the
// hot path. Safe for concurrent use.
func (b *Bus) Types() []TypeInfo {
	if !b.made() {
		return nil
	}
	var out []TypeInfo
	b.mu.Lock()
	types, routed := b.types, b.outbound
	b.mu.Unlock()
	for t := range types {
		if types[t].pool == "" {
			continue
		}
		ti := TypeInfo{Type: EventType(t), Name: types[t].name, Pool: types[t].pool,
			Durable: b.durable[t], Routed: routed[t] != nil}
		if c := b.chains[t].Load(); c != nil {
			for i := range c.handlers {
				ti.Handlers = append(ti.Handlers, c.handlers[i].name)
			}
			for _, s := range c.subs {
				ti.Subscribers = append(ti.Subscribers, s.name)
			}
		}
		out = append(out, ti)
	}
	return out
}

// DeadLetterRing returns the bus's dead-letter sink when it is a
// *DeadLetterRing (the default keeps the last 1024 letters), nil
// otherwise, so that tools can list the recent dead letters.
func (b *Bus) DeadLetterRing() *DeadLetterRing {
	if !b.made() {
		return nil
	}
	r, _ := b.sink.(*DeadLetterRing)
	return r
}
