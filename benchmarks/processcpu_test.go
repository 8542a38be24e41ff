package benchmarks

import (
	"runtime"
	"testing"
	"time"
)

// TestProcessCPUCountsEveryBusyThread: two goroutines that each spin for
// a while add about twice that to the process's CPU time when two
// processors run them, and a sleep adds next to nothing.
func TestProcessCPUCountsEveryBusyThread(t *testing.T) {
	before, ok := processCPU()
	if !ok {
		t.Skip("the process's CPU time cannot be read on this system")
	}
	const spin = 50 * time.Millisecond
	done := make(chan struct{})
	for range 2 {
		go func() {
			defer func() { done <- struct{}{} }()
			for start := time.Now(); time.Since(start) < spin; {
			}
		}()
	}
	<-done
	<-done
	busy, _ := processCPU()
	time.Sleep(spin)
	idle, _ := processCPU()

	// Each spinning goroutine ran for spin of wall time, so at least that
	// much CPU was used, and with two processors nearly twice as much.
	if used := busy - before; used < spin {
		t.Fatalf("two goroutines spinning %v used %v of CPU, want at least %v", spin, used, spin)
	}
	if used := busy - before; runtime.GOMAXPROCS(0) >= 2 && used <= spin+spin/2 {
		t.Errorf("two goroutines spinning %v on two processors used %v of CPU, want over %v", spin, used, spin+spin/2)
	}
	if used := idle - busy; used >= spin/2 {
		t.Errorf("sleeping %v used %v of CPU, want under %v", spin, used, spin/2)
	}
}
