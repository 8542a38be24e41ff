package engine

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Snapshot is an engine's counters at one moment. Gauges are read shard by
// shard, so under load they are approximate; at rest they are exact and
// Added = Handled + Stopped + DeadLettered + Queued + InFlight + Retrying.
type Snapshot struct {
	Workers                              int
	Queued, InFlight, Retrying, Overflow int64
	Added, Handled, Stopped, Failed      uint64
	Retried, DeadLettered, Panics        uint64
	Timeouts, Abandoned                  uint64
	P50, P99, Max                        time.Duration
}

// Snapshot reads the engine's counters.
func (e *Engine[E]) Snapshot() Snapshot {
	snap := Snapshot{Workers: len(e.workers)}
	var hist [histBuckets]uint64
	var finished uint64
	ws := e.workers
	if r := e.reaper.Load(); r != nil {
		ws = append(ws[:len(ws):len(ws)], r)
	}
	for _, w := range ws {
		p := &w.pub
		snap.Handled += p.handled.Load()
		snap.Stopped += p.stopped.Load()
		snap.DeadLettered += p.deadLettered.Load()
		snap.Failed += p.failed.Load()
		snap.Retried += p.retried.Load()
		snap.Panics += p.panics.Load()
		snap.Timeouts += p.timeouts.Load()
		snap.Queued += p.followers.Load()
		snap.Retrying += p.retrying.Load()
		for i := range w.lat {
			w.lat[i].addTo(&hist)
			snap.Max = max(snap.Max, time.Duration(w.lat[i].max.Load()))
		}
	}
	for _, w := range ws {
		snap.Abandoned += w.pub.abandoned.Load()
	}
	finished = snap.Handled + snap.Stopped + snap.DeadLettered + snap.Abandoned
	// Counters only, no shard lock: the FIFOs hold what was added and not
	// yet taken by a worker or by Abort.
	snap.Added = e.added.Load()
	var taken uint64
	for _, w := range ws {
		taken += w.pub.taken.Load()
	}
	taken += uint64(e.stolen.Load())
	fifo := int64(snap.Added - taken)
	snap.Queued += max(0, fifo)
	snap.InFlight = max(0, int64(taken)-int64(finished)-(snap.Queued-max(0, fifo))-snap.Retrying)
	snap.Overflow = e.over.Load()
	if held := int64(snap.Added - e.freed.Load()); held > int64(e.capacity) {
		snap.Overflow = max(snap.Overflow, held-int64(e.capacity))
	}
	// Buckets report their middle value: never above what was seen.
	snap.P50 = min(quantile(&hist, 0.50), snap.Max)
	snap.P99 = min(quantile(&hist, 0.99), snap.Max)
	return snap
}

// histogram is a log-linear latency histogram: four buckets per power of
// two (at most 12.5% error), updated with atomics by its one worker, with
// the maximum recorded.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Int64
}

const histBuckets = 65 * 4

func bucketOf(d time.Duration) int {
	ns := uint64(max(d, 0))
	if ns < 4 {
		return int(ns)
	}
	b := bits.Len64(ns) // >= 3
	sub := (ns >> (b - 3)) & 3
	return b*4 + int(sub)
}

// bucketValue returns the middle of bucket i.
func bucketValue(i int) time.Duration {
	if i < 4 {
		return time.Duration(i)
	}
	b, sub := i/4, uint64(i%4)
	lo := (4 + sub) << (b - 3)
	return time.Duration(lo + (uint64(1)<<(b-3))/2)
}

// record adds n runs of about d each, the longest at most maxd.
func (h *histogram) record(d time.Duration, n uint64, maxd time.Duration) {
	h.counts[bucketOf(d)].Add(n)
	if int64(maxd) > h.max.Load() {
		h.max.Store(int64(maxd))
	}
}

// reset empties the histogram for a new window. Readers summing it at the
// same time see part of the old window: Stats are approximate under load.
func (h *histogram) reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.max.Store(0)
}

func (h *histogram) addTo(dst *[histBuckets]uint64) {
	for i := range h.counts {
		dst[i] += h.counts[i].Load()
	}
}

func quantile(h *[histBuckets]uint64, q float64) time.Duration {
	var total uint64
	for _, c := range h {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total-1)) + 1
	var seen uint64
	for i, c := range h {
		seen += c
		if seen >= rank {
			return bucketValue(i)
		}
	}
	return 0
}
