package engine

import (
	"sync"
	"sync/atomic"
)

// shard is one FIFO and the state its producers share with its worker.
// Producers append under mu; the worker swaps the whole slice out under mu
// and runs it without the lock, so a wake-up drains everything queued.
type shard[E any] struct {
	mu    sync.Mutex
	items []Item[E]
	// occupied counts items accepted and not yet completed: queued, in the
	// worker's hands or parked for a retry. Capacity is checked against it.
	occupied     int
	sleeping     bool // the worker waits on wake
	stopped      bool // refuse every add: the worker is gone, or Close halted the shard
	spaceWaiters int
	space        chan struct{} // closed when room frees up; made lazily
	wake         chan struct{}

	// Monotonic totals of events accepted and completed (published).
	enqCount, doneCount uint64
	deadLettered        atomic.Uint64 // by Abort, outside the worker

	_ [64]byte // keep neighbouring shards off this cache line
}
