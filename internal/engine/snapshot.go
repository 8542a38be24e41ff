package engine

import (
	"slices"
	"time"
)

// ShardLoad describes one shard that holds events, for inspection tools.
type ShardLoad[E any] struct {
	Shard int
	// Held counts the events the shard holds: queued, in a worker's hands
	// or parked for a retry.
	Held int
	// Queued counts the events in its FIFO, not yet taken by a worker.
	Queued int
	// Running is true while the shard is on the run queue or held by a
	// worker.
	Running bool
	// Head is the FIFO's first event, HeadKey its key and HeadQueued how
	// many events of the FIFO have it. When the FIFO is empty and no
	// worker holds the shard, Head is instead the failed event of the
	// parked key holding the most events, HeadQueued those events, and
	// HeadParked is true. Otherwise Head is the zero E.
	Head       E
	HeadKey    uint64
	HeadQueued int
	HeadParked bool
}

// ParkedLoad describes one key parked for a retry, for inspection tools.
type ParkedLoad[E any] struct {
	Shard int
	Key   uint64
	// Event, Chain, Index, Attempt and Err are those of the key's head
	// unit: the one that failed and waits for its retry.
	Event   E
	Chain   any
	Index   int
	Attempt int
	Err     error
	// Events counts the key's events held behind the failure, the head's
	// included; Retrying is false once the head's retry has started.
	Events   int
	Retrying bool
	// Due is when the retry runs; zero if not known.
	Due time.Time
}

// Busiest fills dst, up to cap(dst), with the shards that hold the most
// events, busiest first, and returns it. It allocates nothing: the caller
// owns dst and can reuse it.
//
// It takes each shard's lock in turn for a few reads (and a scan of the
// head key in the FIFO of the shards it keeps), so it costs producers of
// the same shard a short wait: call it from a tool, about once a second,
// never from a handler's hot path.
func (e *Engine[E]) Busiest(dst []ShardLoad[E]) []ShardLoad[E] {
	dst = dst[:0]
	if cap(dst) == 0 {
		return dst
	}
	least := 0 // index in dst of the entry with the fewest events, once full
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		held := s.occupied
		if held == 0 || (len(dst) == cap(dst) && held <= dst[least].Held) {
			s.mu.Unlock()
			continue
		}
		l := ShardLoad[E]{Shard: i, Held: held, Queued: int(s.queued), Running: s.state != idle}
		if s.queued > 0 {
			l.Head, l.HeadKey, l.HeadQueued = s.first.Event, s.first.Key, 1
			for seg := s.head; seg != nil; seg = seg.next {
				for j := range seg.n {
					if seg.items[j].Key == l.HeadKey {
						l.HeadQueued++
					}
				}
			}
		} else if s.state == idle && s.rt != nil {
			// Idle: parked is stable while we hold mu (see Parked).
			for key, pk := range s.rt.parked {
				n := 0
				for _, u := range pk.units {
					n += len(u.Items)
				}
				if len(pk.units) > 0 && n > l.HeadQueued {
					l.Head, l.HeadKey, l.HeadQueued, l.HeadParked = pk.units[0].Event, key, n, true
				}
			}
		}
		s.mu.Unlock()
		if len(dst) < cap(dst) {
			dst = append(dst, l)
		} else {
			dst[least] = l
		}
		if len(dst) == cap(dst) {
			least = 0
			for j := range dst {
				if dst[j].Held < dst[least].Held {
					least = j
				}
			}
		}
	}
	slices.SortFunc(dst, func(a, b ShardLoad[E]) int { return b.Held - a.Held })
	return dst
}

// Parked fills dst, up to cap(dst), with the keys parked for a retry and
// returns it. A worker owns the parked keys of the shard it holds without
// a lock, so the keys of such a shard are left out: skipped counts the
// held shards that hold more than their FIFO (events in the worker's
// hands, or parked keys). It allocates nothing.
//
// Like Busiest it takes each shard's lock in turn; call it from a tool,
// never from a handler's hot path.
func (e *Engine[E]) Parked(dst []ParkedLoad[E]) (_ []ParkedLoad[E], skipped int) {
	dst = dst[:0]
	for i := range e.shards {
		if len(dst) == cap(dst) {
			break
		}
		s := &e.shards[i]
		s.mu.Lock()
		if s.state != idle {
			// A worker may be changing parked and due right now.
			if s.occupied > int(s.queued) {
				skipped++
			}
			s.mu.Unlock()
			continue
		}
		// Idle: no worker holds the shard, and none can take it while we
		// hold mu (scheduling takes it), so parked and due are stable.
		if s.rt == nil {
			s.mu.Unlock()
			continue
		}
		for key, pk := range s.rt.parked {
			if len(dst) == cap(dst) {
				break
			}
			if len(pk.units) == 0 {
				continue
			}
			u := pk.units[0]
			p := ParkedLoad[E]{Shard: i, Key: key, Event: u.Event, Chain: u.Chain,
				Index: u.Index, Attempt: u.Attempt, Err: u.Err, Retrying: pk.retrying}
			for _, w := range pk.units {
				p.Events += len(w.Items)
			}
			for _, d := range s.rt.due {
				if d.key == key && (p.Due.IsZero() || d.at.Before(p.Due)) {
					p.Due = d.at
				}
			}
			dst = append(dst, p)
		}
		s.mu.Unlock()
	}
	return dst, skipped
}
