// Command probe prints append throughput, records per fsync and latency of
// the journal with P producers (a diagnostic for the README figures).
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imbus/eventbus/journal"
)

func main() {
	p := flag.Int("p", 64, "producers")
	n := flag.Int("n", 50000, "records")
	linger := flag.Duration("linger", journal.DefaultLinger, "linger")
	flag.Parse()
	dir, _ := os.MkdirTemp(".", "probe")
	defer os.RemoveAll(dir)
	j, err := journal.Open(dir, journal.WithLogger(slog.New(slog.DiscardHandler)), journal.WithLinger(*linger))
	if err != nil {
		panic(err)
	}
	defer j.Close()
	payload := make([]byte, 128)
	var left atomic.Int64
	left.Store(int64(*n))
	lat := make([][]time.Duration, *p)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range *p {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				t := time.Now()
				if _, err := j.Append(journal.Record{Payload: payload}); err != nil {
					panic(err)
				}
				lat[w] = append(lat[w], time.Since(t))
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	st := j.Stats()
	fmt.Printf("p=%d linger=%v: %.0f rec/s, %.1f rec/fsync, %.0f µs/fsync, p50 %v p99 %v\n", *p, *linger,
		float64(*n)/el.Seconds(), float64(*n)/float64(st.Syncs), float64(el.Microseconds())/float64(st.Syncs),
		all[len(all)/2], all[len(all)*99/100])
}
