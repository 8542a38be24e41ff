package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// The files splitRuns writes, by the suffix added to its prefix.
const (
	oneCPU   = ".1cpu"    // runs with one processor
	near     = ".near"    // runs with more, round trip below nearRoundTrip
	far      = ".far"     // runs with more, round trip at or above it
	unsplit  = ".unsplit" // runs with more that report no round trip
	noSuffix = -1
)

// splitRuns copies each result line of in (lines starting "Benchmark"
// followed by an iteration count) to one of the files prefix+oneCPU,
// prefix+near, prefix+far or prefix+unsplit, so that benchstat compares
// runs of like machine state only: a run with one processor (its name
// has no GOMAXPROCS suffix, as with -test.cpu 1) is placement-free; a
// run with more goes by its core-to-core round trip (c2c-ns), the same
// split as the table's. The first three files are always made, empty if
// no run went there; the last only when a run had no round trip.
func splitRuns(in io.Reader, prefix string) (counts map[string]int, err error) {
	files := map[string]*bufio.Writer{}
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	}()
	open := func(suffix string) (*bufio.Writer, error) {
		if w := files[suffix]; w != nil {
			return w, nil
		}
		f, err := os.Create(prefix + suffix)
		if err != nil {
			return nil, err
		}
		opened = append(opened, f)
		files[suffix] = bufio.NewWriter(f)
		return files[suffix], nil
	}
	for _, s := range []string{oneCPU, near, far} {
		if _, err := open(s); err != nil {
			return nil, err
		}
	}
	counts = map[string]int{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		suffix, ok := stateOf(line)
		if !ok {
			continue
		}
		w, err := open(suffix)
		if err != nil {
			return nil, err
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return nil, err
		}
		counts[suffix]++
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, w := range files {
		if err := w.Flush(); err != nil {
			return nil, err
		}
	}
	return counts, nil
}

// stateOf says which of splitRuns' files a line goes to; false when it is
// not a result line.
func stateOf(line string) (suffix string, ok bool) {
	name, metrics, ok := resultLine(line)
	if !ok {
		return "", false
	}
	if procsOf(name) == noSuffix {
		return oneCPU, true
	}
	for _, m := range metrics {
		if m.unit != "c2c-ns" {
			continue
		}
		if m.value < nearRoundTrip {
			return near, true
		}
		return far, true
	}
	return unsplit, true
}

// procsOf returns the GOMAXPROCS suffix of a benchmark's name ("-2"), or
// noSuffix when the run had one processor (go test leaves the suffix out).
func procsOf(name string) int {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return noSuffix
	}
	n, err := strconv.Atoi(name[i+1:])
	if err != nil || n < 1 {
		return noSuffix
	}
	return n
}
