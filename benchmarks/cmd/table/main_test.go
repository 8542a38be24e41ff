package main

import (
	"math"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestMannWhitney(t *testing.T) {
	for _, tc := range []struct {
		name string
		x, y []float64
		want float64
	}{
		// Fully separated 6 vs 6: 2 orderings of C(12,6) = 924.
		{"separated", []float64{1, 2, 3, 4, 5, 6}, []float64{7, 8, 9, 10, 11, 12}, 2.0 / 924},
		{"identical", []float64{1, 1, 1}, []float64{1, 1, 1}, 1},
		{"interleaved", []float64{1, 3, 5}, []float64{2, 4, 6}, 0.7},
	} {
		if got := mannWhitney(tc.x, tc.y); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: p = %v, want %v", tc.name, got, tc.want)
		}
	}
}

const sample = `goos: linux
BenchmarkOrder/peer=ours-2   	 100	 50.0 ns/op	 110.0 c2c-ns	 90.00 cpu-ns/event	 20000000 events/s	 50.00 ns/event	 0 violations	 0 B/op	 0 allocs/op
BenchmarkOrder/peer=ours-2   	 100	 52.0 ns/op	 130.0 c2c-ns	 100.0 cpu-ns/event	 19230769 events/s	 52.00 ns/event	 0 violations	 0 B/op	 0 allocs/op
BenchmarkOrder/peer=chan-2   	 100	 40.0 ns/op	 25000000 events/s	 40.00 ns/event	 0 violations	 0 B/op	 0 allocs/op
BenchmarkOrder/peer=chan-2   	 100	 41.0 ns/op	 24390243 events/s	 41.00 ns/event	 0 violations	 0 B/op	 0 allocs/op
--- SKIP: BenchmarkOrder/peer=ants
    ants keeps no per-key order: TestExecutorsReorderOneKey/ants
--- SKIP: BenchmarkOrder/peer=pond
    pond keeps no per-key order: TestExecutorsReorderOneKey/pond
PASS
`

// sampleVerbose is how go test -v reports a skipped benchmark.
const sampleVerbose = `BenchmarkOrder/peer=ours-2   	 100	 50.0 ns/op	 50.00 ns/event
BenchmarkOrder/peer=ants
    workload_test.go:261: ants keeps no per-key order: TestExecutorsReorderOneKey/ants
--- SKIP: BenchmarkOrder/peer=ants
BenchmarkOrder/peer=pond
    workload_test.go:261: pond keeps no per-key order: TestExecutorsReorderOneKey/pond
--- SKIP: BenchmarkOrder/peer=pond
PASS
`

// sampleStates has one run of each peer with the vCPUs near and one far.
const sampleStates = `BenchmarkOrder/peer=ours-2   	 100	 50.0 ns/op	 110.0 c2c-ns	 50.00 ns/event
BenchmarkOrder/peer=ours-2   	 100	 80.0 ns/op	 540.0 c2c-ns	 80.00 ns/event
BenchmarkOrder/peer=chan-2   	 100	 40.0 ns/op	 120.0 c2c-ns	 40.00 ns/event
BenchmarkOrder/peer=chan-2   	 100	 60.0 ns/op	 520.0 c2c-ns	 60.00 ns/event
`

func render(in string) string {
	r := &results{peers: map[string][]string{}, cells: map[[2]string]*cell{}}
	r.read(strings.NewReader(in))
	var out strings.Builder
	r.write(&out)
	return out.String()
}

func TestTable(t *testing.T) {
	skips := []string{
		"| Order | ants | — | — | — | — | does not take part: ants keeps no per-key order: TestExecutorsReorderOneKey/ants | — |",
		"| Order | pond | — | — | — | — | does not take part: pond keeps no per-key order: TestExecutorsReorderOneKey/pond | — |",
	}
	for name, tc := range map[string]struct {
		in   string
		want []string
	}{
		"plain": {sample, append([]string{
			"| Order | ours | 51.0 | 95.0 | 0 | 19.6M | base | 120 |",
			"| Order | chan | 40.5 | — | 0 | 24.7M | 0.79× (tie, p=0.333 n=2+2) | — |",
			"fewer than 6 runs",
		}, skips...)},
		"verbose": {sampleVerbose, skips},
		"by state": {sampleStates, []string{
			"| Order | near | 50.0 (1) | 40.0 (1) |",
			"| Order | far | 80.0 (1) | 60.0 (1) |",
		}},
	} {
		out := render(tc.in)
		for _, want := range tc.want {
			if !strings.Contains(out, want) {
				t.Errorf("%s: table lacks %q:\n%s", name, want, out)
			}
		}
	}
}
