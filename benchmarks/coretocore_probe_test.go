package benchmarks

import (
	"math"
	"runtime"
	"testing"
)

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
