package eventbus_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/journal"
)

// Benchmarks of durable events (WithJournal). The journal lives in the
// test's temp dir, so the figures are those of its file system:
//
//	go test -run '^$' -bench 'Durable' -benchmem -count 6 . | tee durable.txt

// BenchmarkDurableAdd measures add → handled of EventChannelStore events
// with 1, 8 and 64 producer goroutines, each adding events of its own 64
// channels: "durable" with the type in a journal (each AddEvent returns
// once its event is fsync'd; concurrent adds share syncs), "memory"
// without, the same workload. It reports events/s, the p50 and p99 of one
// AddEvent call, and (durable) events per fsync.
func BenchmarkDurableAdd(b *testing.B) {
	for _, durable := range []bool{true, false} {
		name := "memory"
		if durable {
			name = "durable"
		}
		for _, producers := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%s/producers=%d", name, producers), func(b *testing.B) {
				var j *journal.Journal
				var opts []eventbus.Option
				if durable {
					j = openJournal(b, b.TempDir())
					opts = append(opts, eventbus.WithJournal(j, eventbus.EventChannelStore))
				}
				bus := newBus(b, opts...)
				handled := &new(paddedCounter).n
				mustRegister(b, bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
					handled.Add(1)
					return nil
				})
				mustStart(b, bus)
				evs := make([]*eventbus.ChannelContext, producers*64)
				for i := range evs {
					evs[i] = storeEvent(fmt.Sprint("channel-", i), uint64(i))
				}
				lat := make([][]time.Duration, producers)
				var syncs uint64
				if j != nil {
					syncs = j.Stats().Syncs
				}
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for p := range producers {
					n := b.N / producers
					if p < b.N%producers {
						n++
					}
					mine := evs[p*64 : (p+1)*64]
					lat[p] = make([]time.Duration, 0, n)
					wg.Go(func() {
						for i := range n {
							t0 := time.Now()
							if err := bus.AddEvent(ctx, mine[i%64]); err != nil {
								b.Error(err)
								return
							}
							lat[p] = append(lat[p], time.Since(t0))
						}
					})
				}
				wg.Wait()
				waitIdle(b, bus)
				reportHandled(b, time.Since(start), handled)
				var all []time.Duration
				for _, l := range lat {
					all = append(all, l...)
				}
				reportAddLatency(b, all)
				if j != nil {
					if n := j.Stats().Syncs - syncs; n > 0 {
						b.ReportMetric(float64(b.N)/float64(n), "events/fsync")
					}
				}
			})
		}
	}
}

// reportAddLatency reports the p50 and p99 of AddEvent calls, in µs.
func reportAddLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-add-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-add-µs")
}

// replayRecords is how many pending records BenchmarkDurableReplay
// replays per iteration.
const replayRecords = 100_000

// BenchmarkDurableReplay measures a restart: a journal directory holding
// replayRecords pending EventChannelStore records over 1 000 channels
// (written untimed), then, timed, journal.Open (reading and checking every
// frame from disk), a new bus's Start (replaying them into the queues) and
// the handlers running and acking every one (WaitIdle). It reports
// events/s of the whole, and the share of each step in ns/event.
func BenchmarkDurableReplay(b *testing.B) {
	enc := newBus(b) // only encodes
	recs := make([]journal.Record, replayRecords)
	for i := range recs {
		ev := storeEvent(fmt.Sprint("channel-", i%1000), uint64(i))
		data, err := enc.EncodeEvent(ev)
		must(b, err)
		recs[i] = journal.Record{Type: uint8(eventbus.EventChannelStore), Key: uint64(i % 1000), Payload: data}
	}
	b.ReportAllocs()
	b.ResetTimer()
	var open, start, drain time.Duration
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		j, err := journal.Open(dir, journal.WithLogger(quiet))
		must(b, err)
		for k := 0; k < len(recs); k += 4096 {
			_, err := j.Append(recs[k:min(k+4096, len(recs))]...)
			must(b, err)
		}
		must(b, j.Close())
		b.StartTimer()

		t0 := time.Now()
		j, err = journal.Open(dir, journal.WithLogger(quiet))
		must(b, err)
		t1 := time.Now()
		bus, err := eventbus.New(eventbus.WithLogger(quiet), eventbus.WithJournal(j, eventbus.EventChannelStore))
		must(b, err)
		handled := &new(paddedCounter).n
		mustRegister(b, bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			handled.Add(1)
			return nil
		})
		mustStart(b, bus)
		t2 := time.Now()
		waitIdle(b, bus)
		t3 := time.Now()
		open, start, drain = open+t1.Sub(t0), start+t2.Sub(t1), drain+t3.Sub(t2)

		b.StopTimer()
		if handled.Load() != replayRecords {
			b.Fatalf("replayed %d of %d", handled.Load(), replayRecords)
		}
		must(b, bus.Close(context.Background()))
		must(b, j.Close())
		b.StartTimer()
	}
	events := float64(b.N * replayRecords)
	b.ReportMetric(events/(open+start+drain).Seconds(), "events/s")
	b.ReportMetric(float64(open.Nanoseconds())/events, "open-ns/event")
	b.ReportMetric(float64(start.Nanoseconds())/events, "start-ns/event")
	b.ReportMetric(float64(drain.Nanoseconds())/events, "drain-ns/event")
	b.ReportMetric(events/start.Seconds(), "start-events/s")
}
