package benchmarks

import (
	"math"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// coreRoundTrip measures what one cache line costs to go from one core to
// another and back, in ns: two goroutines pass a counter through two
// padded words, each spinning until the other's write arrives, n times.
//
// It explains figures that change from one run to the next for no reason
// in the code. On a virtual machine the host may place the two vCPUs on
// cores that share a cache, where a round trip costs about 100 ns, or far
// apart, where it costs five times as much; the placement can change from
// one minute to the next. Every handoff between a producer and a worker
// pays it, so each result line reports the round trip (metric c2c-ns:
// the larger of the one measured just before its run and just after) and
// the table shows its median per row.
// It returns 0 with fewer than two processors, where spinning would only
// wait for preemption.
func coreRoundTrip(n int) float64 {
	if runtime.GOMAXPROCS(0) < 2 {
		return 0
	}
	var ping, pong struct {
		v atomic.Int64
		_ [56]byte
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := int64(1); i <= int64(n); i++ {
			for ping.v.Load() != i {
			}
			pong.v.Store(i)
		}
	}()
	start := time.Now()
	for i := int64(1); i <= int64(n); i++ {
		ping.v.Store(i)
		for pong.v.Load() != i {
		}
	}
	elapsed := time.Since(start)
	<-done
	return float64(elapsed.Nanoseconds()) / float64(n)
}

// probeRoundTrips is how many round trips coreRoundTrip makes before and
// after each measured run: 2 to 12 ms each, depending on where the vCPUs
// sit.
const probeRoundTrips = 20_000

// TestCoreRoundTripIsMeasuredOnlyWithTwoProcessors: the probe reports a
// positive, finite round trip when two goroutines can run at once, and 0
// (not a hang) with one processor.
func TestCoreRoundTripIsMeasuredOnlyWithTwoProcessors(t *testing.T) {
	if runtime.GOMAXPROCS(0) >= 2 {
		if rt := coreRoundTrip(200); rt <= 0 || math.IsInf(rt, 0) || math.IsNaN(rt) {
			t.Errorf("round trip with %d processors = %v ns; want a positive figure", runtime.GOMAXPROCS(0), rt)
		}
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	if rt := coreRoundTrip(200); rt != 0 {
		t.Errorf("round trip with one processor = %v ns; want 0", rt)
	}
}
