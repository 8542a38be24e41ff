// Command table renders the output of this module's benchmarks as a
// markdown table: one row per scenario and peer with the median ns/event,
// CPU time per event (cpu-ns/event: every thread of the process, so above
// ns/event when a run kept more than one processor busy), allocs/op and
// events/s over the runs, ns/event relative to ours with the p-value of a
// Mann-Whitney U test (the test benchstat uses; p < 0.05 counts as a
// difference, otherwise it is a tie), and the median of the core-to-core
// round trip measured around each run (c2c-ns): the state of the machine
// the row was measured in.
//
// It reads raw `go test -bench` output, the same file benchstat reads, from
// the files named as arguments or from standard input:
//
//	go test -run '^$' -bench . -benchmem -count 6 | tee new.txt
//	go run ./cmd/table new.txt
//
// Benchmarks that a peer cannot take part in are listed with the reason
// they print when they skip.
//
// With -split PREFIX it writes no table: it copies the result lines to
// PREFIX.1cpu (runs with one processor), PREFIX.near and PREFIX.far (runs
// with more, by their round trip), for benchstat to compare runs of like
// machine state (benchmarks/ab.sh does that for two builds):
//
//	go run ./cmd/table -split /tmp/new new.txt
//	benchstat /tmp/old.near /tmp/new.near
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// base is the peer the others are compared with.
const base = "ours"

// alpha is the significance level, benchstat's default.
const alpha = 0.05

// minRuns is the number of runs below which the table carries a warning.
const minRuns = 6

type cell struct {
	samples map[string][]float64 // unit → one value per run
	skip    string               // why the peer does not take part
}

type results struct {
	scenarios []string
	peers     map[string][]string // scenario → peers in order of appearance
	cells     map[[2]string]*cell
}

func main() {
	splitTo := flag.String("split", "", "instead of a table, copy the result lines to `PREFIX`.1cpu, .near and .far (and .unsplit: runs with more than one processor but no c2c-ns) for benchstat")
	flag.Parse()
	if *splitTo != "" {
		if err := splitFiles(*splitTo, flag.Args()); err != nil {
			fmt.Fprintln(os.Stderr, "table:", err)
			os.Exit(1)
		}
		return
	}
	r := &results{peers: map[string][]string{}, cells: map[[2]string]*cell{}}
	if flag.NArg() == 0 {
		r.read(os.Stdin)
	}
	for _, name := range flag.Args() {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		r.read(f)
		f.Close()
	}
	if len(r.scenarios) == 0 {
		fmt.Fprintln(os.Stderr, "table: no benchmark results named Scenario/peer=NAME in the input")
		os.Exit(1)
	}
	r.write(os.Stdout)
}

// splitFiles runs splitRuns over the named files, or standard input.
func splitFiles(prefix string, names []string) error {
	var in io.Reader = os.Stdin
	if len(names) > 0 {
		readers := make([]io.Reader, 0, len(names))
		for _, name := range names {
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			defer f.Close()
			readers = append(readers, f)
		}
		in = io.MultiReader(readers...)
	}
	_, err := splitRuns(in, prefix)
	return err
}

// split parses "BenchmarkOrder/peer=ants-2" into ("Order", "ants").
func split(name string) (scenario, peer string, ok bool) {
	name = strings.TrimPrefix(name, "Benchmark")
	i := strings.Index(name, "/peer=")
	if i < 0 {
		return "", "", false
	}
	scenario, peer = name[:i], name[i+len("/peer="):]
	if procsOf(peer) != noSuffix {
		peer = peer[:strings.LastIndexByte(peer, '-')]
	}
	return scenario, peer, true
}

func (r *results) cell(scenario, peer string) *cell {
	k := [2]string{scenario, peer}
	c := r.cells[k]
	if c == nil {
		if _, seen := r.peers[scenario]; !seen {
			r.scenarios = append(r.scenarios, scenario)
		}
		r.peers[scenario] = append(r.peers[scenario], peer)
		c = &cell{samples: map[string][]float64{}}
		r.cells[k] = c
	}
	return c
}

// read collects results and skip reasons. A skip's reason is the indented
// line before "--- SKIP: NAME" (go test -v) or, failing that, the one after
// it (what the benchmarks print without -v).
func (r *results) read(in io.Reader) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var skipping *cell // waits for its reason on the next line
	var logged string  // the last indented line, not yet used
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "    ") {
			reason := strings.TrimSpace(line)
			// go test -v prefixes the reason with "file.go:NN: ".
			if i := strings.Index(reason, ".go:"); i >= 0 {
				if j := strings.Index(reason[i+4:], ": "); j >= 0 {
					reason = reason[i+4+j+2:]
				}
			}
			if skipping != nil {
				skipping.skip, skipping = reason, nil
			} else {
				logged = reason
			}
			continue
		}
		skipping = nil
		if name, ok := strings.CutPrefix(line, "--- SKIP: "); ok {
			if s, p, ok := split(strings.TrimSpace(name)); ok {
				c := r.cell(s, p)
				if logged != "" {
					c.skip = logged
				} else {
					skipping = c
				}
			}
			logged = ""
			continue
		}
		logged = ""
		name, metrics, ok := resultLine(line)
		if !ok {
			continue
		}
		s, p, ok := split(name)
		if !ok {
			continue
		}
		c := r.cell(s, p)
		for _, m := range metrics {
			c.samples[m.unit] = append(c.samples[m.unit], m.value)
		}
	}
}

// metric is one "value unit" pair of a result line.
type metric struct {
	value float64
	unit  string
}

// resultLine parses a benchmark result line: "BenchmarkName N value unit
// value unit ...". ok is false for any other line.
func resultLine(line string) (name string, metrics []metric, ok bool) {
	f := strings.Fields(line)
	if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
		return "", nil, false
	}
	if _, err := strconv.Atoi(f[1]); err != nil {
		return "", nil, false
	}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			break
		}
		metrics = append(metrics, metric{v, f[i+1]})
	}
	return f[0], metrics, true
}

// medianOr returns the median of v for the table, or a dash when the runs
// did not report it (older output, or a system that cannot measure it).
func medianOr(v []float64) string {
	if len(v) == 0 {
		return "—"
	}
	return num(median(v))
}

func (r *results) write(w io.Writer) {
	fmt.Fprintln(w, "| scenario | peer | ns/event | CPU ns/event | allocs/op | events/s | ns/event vs ours | core↔core ns |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|---|--:|")
	few := map[int]bool{}
	for _, s := range r.scenarios {
		ours := r.cells[[2]string{s, base}]
		for _, p := range r.peers[s] {
			c := r.cells[[2]string{s, p}]
			ns := c.samples["ns/event"]
			if len(ns) == 0 {
				why := c.skip
				if why == "" {
					why = "no results"
				}
				fmt.Fprintf(w, "| %s | %s | — | — | — | — | does not take part: %s | — |\n", s, p, escape(why))
				continue
			}
			if len(ns) < minRuns {
				few[len(ns)] = true
			}
			vs := "base"
			if p != base {
				vs = compare(ns, ours)
			}
			if v := median(c.samples["violations"]); v > 0 {
				vs += fmt.Sprintf("; %s order violations", num(v))
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", s, p,
				num(median(ns)), medianOr(c.samples["cpu-ns/event"]), allocs(c.samples["allocs/op"]),
				rate(median(c.samples["events/s"])), vs, medianOr(c.samples["c2c-ns"]))
		}
	}
	if len(few) > 0 {
		fmt.Fprintf(w, "\nWarning: some rows have fewer than %d runs; run with -count %d for a meaningful comparison.\n", minRuns, minRuns)
	}
	r.writeByState(w)
}

// nearRoundTrip splits runs by the machine's state, their core-to-core
// round trip (c2c-ns): below it the two processors share a cache (about
// 100 ns on the reference VM), at or above it they are far apart (about
// 500 ns there).
const nearRoundTrip = 250

// writeByState renders a second table: per scenario and state, each
// peer's median ns/event over the runs made in that state, with their
// count, so that peers are compared only in runs of like machine state.
// It is left out when a run lacks its round trip (older output).
func (r *results) writeByState(w io.Writer) {
	var peers []string
	for _, s := range r.scenarios {
		for _, p := range r.peers[s] {
			c := r.cells[[2]string{s, p}]
			if len(c.samples["ns/event"]) != len(c.samples["c2c-ns"]) {
				return
			}
			if len(c.samples["ns/event"]) > 0 && !slices.Contains(peers, p) {
				peers = append(peers, p)
			}
		}
	}
	if len(peers) == 0 {
		return
	}
	fmt.Fprintf(w, "\nRuns split by their core↔core round trip (near: below %d ns; far: %d ns or more), median ns/event (runs):\n\n", nearRoundTrip, nearRoundTrip)
	fmt.Fprintf(w, "| scenario | state | %s |\n", strings.Join(peers, " | "))
	fmt.Fprintf(w, "|---|---|%s\n", strings.Repeat("--:|", len(peers)))
	for _, s := range r.scenarios {
		for _, near := range []bool{true, false} {
			row, any := make([]string, len(peers)), false
			for i, p := range peers {
				row[i] = "—"
				c := r.cells[[2]string{s, p}]
				if c == nil {
					continue
				}
				var ns []float64
				for j, rt := range c.samples["c2c-ns"] {
					if (rt < nearRoundTrip) == near {
						ns = append(ns, c.samples["ns/event"][j])
					}
				}
				if len(ns) > 0 {
					row[i], any = fmt.Sprintf("%s (%d)", num(median(ns)), len(ns)), true
				}
			}
			if any {
				state := "far"
				if near {
					state = "near"
				}
				fmt.Fprintf(w, "| %s | %s | %s |\n", s, state, strings.Join(row, " | "))
			}
		}
	}
}

// compare gives a peer's ns/event relative to ours, with its p-value.
func compare(ns []float64, ours *cell) string {
	if ours == nil || len(ours.samples["ns/event"]) == 0 {
		return "— (no results for " + base + ")"
	}
	b := ours.samples["ns/event"]
	ratio := median(ns) / median(b)
	p := mannWhitney(ns, b)
	verdict := "tie"
	switch {
	case p < alpha && ratio > 1:
		verdict = "ours faster"
	case p < alpha && ratio < 1:
		verdict = "ours slower"
	}
	return fmt.Sprintf("%.2f× (%s, p=%.3f n=%d+%d)", ratio, verdict, p, len(ns), len(b))
}

func escape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// num prints a value with three significant digits.
func num(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "—"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func allocs(xs []float64) string {
	if len(xs) == 0 {
		return "—"
	}
	return strconv.FormatFloat(median(xs), 'f', -1, 64)
}

// rate prints events/s as 1.23M or 456k.
func rate(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case v >= 1e6:
		return num(v/1e6) + "M"
	case v >= 1e3:
		return num(v/1e3) + "k"
	}
	return num(v)
}

// mannWhitney returns the two-sided p-value of the Mann-Whitney U test of
// x against y: exact when no value is tied, from the normal approximation
// with tie and continuity corrections otherwise.
func mannWhitney(x, y []float64) float64 {
	n1, n2 := len(x), len(y)
	if n1 == 0 || n2 == 0 {
		return 1
	}
	type obs struct {
		v     float64
		fromX bool
	}
	all := make([]obs, 0, n1+n2)
	for _, v := range x {
		all = append(all, obs{v, true})
	}
	for _, v := range y {
		all = append(all, obs{v, false})
	}
	slices.SortFunc(all, func(a, b obs) int {
		switch {
		case a.v < b.v:
			return -1
		case a.v > b.v:
			return 1
		}
		return 0
	})
	var r1, ties float64
	tied := false
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].v == all[i].v {
			j++
		}
		rank := float64(i+j+1) / 2 // ranks i+1..j, averaged
		for k := i; k < j; k++ {
			if all[k].fromX {
				r1 += rank
			}
		}
		if t := float64(j - i); t > 1 {
			tied = true
			ties += t*t*t - t
		}
		i = j
	}
	u := r1 - float64(n1*(n1+1))/2
	if !tied {
		return exactU(n1, n2, int(math.Round(u)))
	}
	n := float64(n1 + n2)
	mu := float64(n1*n2) / 2
	sigma := math.Sqrt(float64(n1*n2) / 12 * ((n + 1) - ties/(n*(n-1))))
	if sigma == 0 {
		return 1
	}
	z := math.Max(math.Abs(u-mu)-0.5, 0) / sigma
	return math.Min(1, math.Erfc(z/math.Sqrt2))
}

// exactU is the two-sided p-value of U = u for samples of n1 and n2
// without ties, from the exact distribution of U.
func exactU(n1, n2, u int) float64 {
	// count[i][j][k]: orderings of i x's and j y's with U = k. The largest
	// value is an x (adding j to U) or a y (adding nothing).
	count := make([][][]float64, n1+1)
	for i := range count {
		count[i] = make([][]float64, n2+1)
		for j := range count[i] {
			count[i][j] = make([]float64, i*j+1)
			switch {
			case i == 0 || j == 0:
				count[i][j][0] = 1
			default:
				for k := range count[i][j] {
					if k-j >= 0 && k-j < len(count[i-1][j]) {
						count[i][j][k] += count[i-1][j][k-j]
					}
					if k < len(count[i][j-1]) {
						count[i][j][k] += count[i][j-1][k]
					}
				}
			}
		}
	}
	dist := count[n1][n2]
	var total, low, high float64
	for k, c := range dist {
		total += c
		if k <= u {
			low += c
		}
		if k >= u {
			high += c
		}
	}
	return math.Min(1, 2*math.Min(low, high)/total)
}
