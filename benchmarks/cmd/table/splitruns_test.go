package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSplitRunsByProcessorsAndRoundTrip: each result line lands in the
// file of its state, other lines nowhere, and a run with more than one
// processor but no round trip is kept apart rather than counted near.
func TestSplitRunsByProcessorsAndRoundTrip(t *testing.T) {
	const (
		oneRun  = "BenchmarkSingleKey/peer=ours \t 100\t 60.0 ns/op\t 0 c2c-ns\t 61.0 cpu-ns/event"
		nearRun = "BenchmarkSingleKey/peer=ours-2 \t 100\t 65.0 ns/op\t 110.0 c2c-ns\t 120 cpu-ns/event"
		edgeRun = "BenchmarkFullFlow/peer=chan-2 \t 100\t 700 ns/op\t 250 c2c-ns\t 900 cpu-ns/event"
		farRun  = "BenchmarkFullFlow/peer=ours-2 \t 100\t 1300 ns/op\t 560.5 c2c-ns\t 2000 cpu-ns/event"
		noTrip  = "BenchmarkOrder/peer=ants-2 \t 100\t 40.0 ns/op\t 40.00 ns/event"
	)
	input := strings.Join([]string{"goos: linux", oneRun, nearRun, "--- SKIP: BenchmarkOrder/peer=pond",
		"    pond keeps no per-key order", edgeRun, farRun, noTrip, "PASS", "ok  \tgithub.com/imbus/eventbus/benchmarks\t9.1s"}, "\n") + "\n"
	prefix := filepath.Join(t.TempDir(), "new")
	counts, err := splitRuns(strings.NewReader(input), prefix)
	if err != nil {
		t.Fatal(err)
	}
	for suffix, want := range map[string][]string{
		oneCPU:  {oneRun},
		near:    {nearRun},
		far:     {edgeRun, farRun},
		unsplit: {noTrip},
	} {
		b, err := os.ReadFile(prefix + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s: got %q, want %q", suffix, got, want)
		}
		if counts[suffix] != len(want) {
			t.Errorf("%s: counted %d, want %d", suffix, counts[suffix], len(want))
		}
	}
}

// TestSplitRunsMakesEmptyFilesForStatesWithoutRuns: a comparison script
// can test each state's file for content without checking it exists.
func TestSplitRunsMakesEmptyFilesForStatesWithoutRuns(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "old")
	if _, err := splitRuns(strings.NewReader("BenchmarkX/peer=ours \t 10\t 5 ns/op\n"), prefix); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{near, far} {
		if st, err := os.Stat(prefix + suffix); err != nil || st.Size() != 0 {
			t.Errorf("%s: %v, %v; want an empty file", suffix, st, err)
		}
	}
	if _, err := os.Stat(prefix + unsplit); !os.IsNotExist(err) {
		t.Errorf("%s made without a run to hold: %v", unsplit, err)
	}
}

func TestProcsOf(t *testing.T) {
	for name, want := range map[string]int{
		"BenchmarkA/peer=ours":   noSuffix,
		"BenchmarkA/peer=ours-2": 2,
		"BenchmarkA/peer=ours-x": noSuffix,
		"BenchmarkA-16":          16,
		"BenchmarkA/n=-0":        noSuffix,
	} {
		if got := procsOf(name); got != want {
			t.Errorf("procsOf(%q) = %d, want %d", name, got, want)
		}
	}
}
