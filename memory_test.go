package eventbus_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestIdleWorkerReleasesLastEvent: an idle worker keeps no reference to the
// last event it ran (nor to its Err and chain): a handled event with a 1 MiB
// frame can be collected once the bus is idle.
func TestIdleWorkerReleasesLastEvent(t *testing.T) {
	bus := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error { return nil })
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	wp := addWeak(t, bus)
	require.NoError(t, bus.WaitIdle(deadline(t, 5*time.Second)))
	runtime.GC()
	runtime.GC()
	retained := isLive(wp)
	// Once the worker runs another event, the first one is released: it
	// was held by the worker's scratch unit, nothing else.
	require.NoError(t, bus.AddEvent(context.Background(), userEvent(eventbus.EventOnSend, "u")))
	require.NoError(t, bus.WaitIdle(deadline(t, 5*time.Second)))
	runtime.GC()
	runtime.GC()
	require.False(t, isLive(wp), "released after the next event")
	assert.False(t, retained, "a handled event (1 MiB frame) stays reachable from the idle worker until it runs another")
}

// isLive reports whether wp's value is still reachable (in a frame of its
// own, so that no strong pointer outlives the check).
//
//go:noinline
func isLive(wp weak.Pointer[eventbus.UserContext]) bool { return wp.Value() != nil }

//go:noinline
func addWeak(t *testing.T, bus *eventbus.Bus) weak.Pointer[eventbus.UserContext] {
	ev := userEvent(eventbus.EventOnSend, "u")
	ev.Frame = make([]byte, 1<<20) // a large frame stays in memory with it
	require.NoError(t, bus.AddEvent(context.Background(), ev))
	return weak.Make(ev)
}

type bigValueKey struct{}

// TestIdleWorkerKeepsNoFinishedContext: once the bus is idle, the
// producers' contexts of finished events cannot be reached from it.
func TestIdleWorkerKeepsNoFinishedContext(t *testing.T) {
	const n = 50
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		return nil
	})
	mustStart(t, b)
	var freed atomic.Int64
	for range n {
		big := new([1 << 20]byte)
		runtime.AddCleanup(big, func(*atomic.Int64) { freed.Add(1) }, &freed)
		ctx := context.WithValue(context.Background(), bigValueKey{}, big)
		require.NoError(t, b.AddEvent(ctx, userEvent(eventbus.EventOnSend, "alice")))
	}
	idleWithin(t, b, 5*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for freed.Load() < n && time.Now().Before(deadline) {
		runtime.GC() // cleanups run after the collection that frees their object
		runtime.Gosched()
	}
	assert.Equal(t, int64(n), freed.Load(), "producer values freed once the bus is idle")
}

// TestBuffersShrinkAfterBurst: a burst of follow-on events into one
// shard does not leave the idle bus holding the burst's buffers.
func TestBuffersShrinkAfterBurst(t *testing.T) {
	const burst = 200_000
	b := newBus(t, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1}))
	mustRegister(t, b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if ev.Frame == "root" {
			for range burst {
				if err := b.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: ev.Conn}); err != nil {
					return eventbus.Permanent(err)
				}
			}
		}
		return nil
	})
	mustStart(t, b)
	warm := userEvent(eventbus.EventOnSend, "alice")
	relAdd(t, b, warm)
	idleWithin(t, b, 5*time.Second)
	before := liveHeap()
	root := userEvent(eventbus.EventOnSend, "alice")
	root.Frame = "root"
	relAdd(t, b, root)
	idleWithin(t, b, 30*time.Second)
	require.Equal(t, uint64(burst+2), b.Stats().User.Handled)
	// The burst's buffers are kept about a second after the workers went
	// to sleep (a busy key reuses them), then released: poll the heap.
	var grew int64
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		if grew = int64(liveHeap()) - int64(before); grew < 1<<20 {
			break
		}
		time.Sleep(50 * time.Millisecond) // polls the heap, an outside state with no event to wait on
	}
	t.Logf("live heap grew by %d KiB after a burst of %d follow-ons", grew/1024, burst)
	assert.Less(t, grew, int64(1<<20), "the idle bus keeps the burst's buffers")
}
