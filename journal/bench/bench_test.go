package bench

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type atomicCounter struct{ v atomic.Uint64 }

func (c *atomicCounter) next() uint64 { return c.v.Add(1) }
func (c *atomicCounter) set(v uint64) { c.v.Store(v) }

var payload = make([]byte, 128) // about an encoded ChannelContext with one message

func mustOpen(b *testing.B, o opener, dir string) store {
	b.Helper()
	s, err := o.open(dir)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkAppend: P producers, each waiting for its own record to be
// durable before it appends the next. Reports records/s and latency
// quantiles of one append. "bus" is eventbus's durable AddEvent on the
// log (an event carrying the same payload, encoded, journaled, handled
// and acked), so the table shows what the bus adds to the log.
func BenchmarkAppend(b *testing.B) {
	for _, o := range append(slices.Clone(stores), opener{"bus", openBus}) {
		for _, p := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%s/producers=%d", o.name, p), func(b *testing.B) {
				s := mustOpen(b, o, b.TempDir())
				defer s.close()
				lat := make([][]time.Duration, p)
				var left atomic.Int64
				left.Store(int64(b.N))
				var wg sync.WaitGroup
				syncs0 := syncsOf(s)
				b.ResetTimer()
				start := time.Now()
				for w := range p {
					wg.Go(func() {
						for left.Add(-1) >= 0 {
							t := time.Now()
							if _, err := s.append(payload); err != nil {
								b.Error(err)
								return
							}
							lat[w] = append(lat[w], time.Since(t))
						}
					})
				}
				wg.Wait()
				el := time.Since(start)
				b.StopTimer()
				all := slices.Concat(lat...)
				slices.Sort(all)
				b.ReportMetric(float64(b.N)/el.Seconds(), "rec/s")
				b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
				if n := syncsOf(s) - syncs0; n > 0 {
					b.ReportMetric(float64(b.N)/float64(n), "rec/fsync")
				}
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// syncsOf returns how many fsyncs s made so far (the journal counts
// them), or 0.
func syncsOf(s store) uint64 {
	switch s := s.(type) {
	case *logStore:
		return s.j.Stats().Syncs
	case *busStore:
		return s.j.Stats().Syncs
	}
	return 0
}

// BenchmarkAck: cost of acking one record, from one goroutine, in calls of
// 64 ids (as a bus batches them), plus one sync at the end.
func BenchmarkAck(b *testing.B) {
	for _, o := range stores {
		b.Run(o.name, func(b *testing.B) {
			s := mustOpen(b, o, b.TempDir())
			defer s.close()
			ids := fill(b, s, b.N)
			b.ResetTimer()
			for c := range slices.Chunk(ids, 64) {
				if err := s.ack(c); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.sync(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkAckOne: acking one record per call (no batching by the caller).
func BenchmarkAckOne(b *testing.B) {
	for _, o := range stores {
		if o.name == "bbolt" {
			continue // one fsync'd transaction per ack: not a candidate this way
		}
		b.Run(o.name, func(b *testing.B) {
			s := mustOpen(b, o, b.TempDir())
			defer s.close()
			ids := fill(b, s, b.N)
			b.ResetTimer()
			for _, id := range ids {
				if err := s.ack([]uint64{id}); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.sync(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// fill appends n records, 1000 per write, and returns their ids.
func fill(b *testing.B, s store, n int) []uint64 {
	b.Helper()
	ids := make([]uint64, 0, n)
	for len(ids) < n {
		got, err := s.bulk(min(1000, n-len(ids)), payload)
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, got...)
	}
	return ids
}

// BenchmarkReplay: open a store holding 1M unacked records (alone, or
// with 1M acked ones interleaved, as a crash mid-run leaves it) and read
// them all. Reports records/s of open + replay.
func BenchmarkReplay(b *testing.B) {
	const n = 1 << 20
	for _, interleaved := range []bool{false, true} {
		for _, o := range stores {
			b.Run(fmt.Sprintf("%s/acked-interleaved=%v", o.name, interleaved), func(b *testing.B) {
				benchReplay(b, o, n, interleaved)
			})
		}
	}
}

func benchReplay(b *testing.B, o opener, n int, interleaved bool) {
	{
		{
			dir := b.TempDir()
			s := mustOpen(b, o, dir)
			total := n
			if interleaved {
				total = 2 * n
			}
			ids := fill(b, s, total)
			var acked []uint64
			for i, id := range ids {
				if interleaved && i%2 == 1 {
					acked = append(acked, id)
				}
			}
			for c := range slices.Chunk(acked, 4096) {
				if err := s.ack(c); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.sync(); err != nil {
				b.Fatal(err)
			}
			if err := s.close(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				s := mustOpen(b, o, dir)
				count := 0
				if err := s.replay(func(uint64, []byte) { count++ }); err != nil {
					b.Fatal(err)
				}
				if count != n {
					b.Fatalf("replayed %d records, want %d", count, n)
				}
				if err := s.close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/time.Since(start).Seconds(), "rec/s")
		}
	}
}
