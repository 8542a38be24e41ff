package benchmarks

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestProcessCPUCountsEveryGoroutinesWork: a fixed amount of work done by
// two goroutines adds about twice the CPU time that one goroutine doing it
// adds, whichever threads run them, and a sleep adds next to nothing. CPU
// time, unlike wall time, does not depend on what else the machine runs.
func TestProcessCPUCountsEveryGoroutinesWork(t *testing.T) {
	if _, ok := processCPU(); !ok {
		t.Skip("the process's CPU time cannot be read on this system")
	}
	one := cpuUsedBy(func() { inGoroutines(1, busyWork) })
	two := cpuUsedBy(func() { inGoroutines(2, busyWork) })
	idle := cpuUsedBy(func() { time.Sleep(50 * time.Millisecond) })

	if one <= 0 {
		t.Fatalf("busy work used %v of CPU", one)
	}
	if two < one*3/2 {
		t.Errorf("twice the work in two goroutines used %v of CPU, once in one %v: want about twice", two, one)
	}
	if idle >= one/2 {
		t.Errorf("sleeping 50ms used %v of CPU, the busy work %v", idle, one)
	}
}

// cpuUsedBy returns the CPU time the process used while f ran.
func cpuUsedBy(f func()) time.Duration {
	before, _ := processCPU()
	f()
	after, _ := processCPU()
	return after - before
}

// inGoroutines runs f in n goroutines at once and waits for them.
func inGoroutines(n int, f func()) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(f)
	}
	wg.Wait()
}

// busySink keeps busyWork's result alive.
var busySink atomic.Uint64

// busyWork is a fixed amount of computation: some tens of milliseconds of
// one processor.
func busyWork() {
	x := uint64(88172645463325252)
	for range 30_000_000 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	busySink.Add(x)
}
