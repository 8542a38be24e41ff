// Command replayprobe times Open and Replay of a journal holding n
// unacked records (a diagnostic for the README figures).
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/imbus/eventbus/journal"
)

func main() {
	n := flag.Int("n", 1<<20, "records")
	keep := flag.String("dir", "", "use (and keep) this journal; fill it only if empty")
	rounds := flag.Int("rounds", 3, "opens")
	flag.Parse()
	dir := *keep
	if dir == "" {
		dir, _ = os.MkdirTemp(".", "replayprobe")
		defer os.RemoveAll(dir)
	}
	quiet := journal.WithLogger(slog.New(slog.DiscardHandler))
	j, err := journal.Open(dir, quiet)
	if err != nil {
		panic(err)
	}
	if j.Stats().Pending > 0 {
		*n = 0
	}
	recs := make([]journal.Record, 1000)
	for i := range recs {
		recs[i] = journal.Record{Type: 11, Key: 42, Payload: make([]byte, 128)}
	}
	for i := 0; i < *n; i += len(recs) {
		if _, err := j.Append(recs...); err != nil {
			panic(err)
		}
	}
	j.Close()
	for range *rounds {
		runtime.GC()
		t0 := time.Now()
		j, err = journal.Open(dir, quiet)
		if err != nil {
			panic(err)
		}
		t1 := time.Now()
		count := 0
		j.Replay(func(journal.Record) error { count++; return nil })
		t2 := time.Now()
		j.Close()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Printf("open %v replay %v: %.0f rec/s (%d records, %d GCs so far)\n", t1.Sub(t0), t2.Sub(t1),
			float64(count)/t2.Sub(t0).Seconds(), count, ms.NumGC)
	}
}
