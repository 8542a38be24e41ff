package natsbridge_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	natsbridge "github.com/imbus/eventbus/bridge/nats"
)

// latencies collects add→handled durations (the add time rides in the
// message's Timestamp, in nanoseconds).
type latencies struct {
	mu   sync.Mutex
	d    []time.Duration
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (l *latencies) handler(bus *eventbus.Bus) {
	_, err := eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		l.add(time.Duration(time.Now().UnixNano() - ev.Messages[0].Timestamp))
		return nil
	})
	if err != nil {
		panic(err)
	}
}

// add records one event's latency; the want-th closes done.
func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
	if l.n.Add(1) == l.want {
		close(l.done)
	}
}

func (l *latencies) report(b *testing.B) {
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.Sort(l.d)
	q := func(f float64) time.Duration { return l.d[int(f*float64(len(l.d)-1))] }
	b.ReportMetric(float64(q(.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(q(.99).Microseconds()), "p99-µs")
}

func stamped(key string, seq uint64) *eventbus.ChannelContext {
	ev := channelEvent(key, seq)
	ev.Messages[0].Timestamp = time.Now().UnixNano()
	return ev
}

// addAll adds b.N events over 1 000 keys from producers goroutines, at
// most rate events/s in all (0: as fast as they go).
func addAll(b *testing.B, buses []*eventbus.Bus, producers, rate int) {
	var wg sync.WaitGroup
	per := b.N / producers
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(int64(time.Second) * int64(producers) / int64(rate))
	}
	for g := range producers {
		wg.Go(func() {
			bus := buses[g%len(buses)]
			next := time.Now()
			for i := range per + boolInt(g < b.N%producers) {
				if interval > 0 {
					next = next.Add(interval)
					if d := time.Until(next); d > 0 {
						t := time.NewTimer(d) // pacing, not synchronisation
						<-t.C
					}
				}
				k := (g + i*producers) % 1000
				if err := bus.AddEvent(context.Background(), stamped("k"+strconv.Itoa(k), uint64(i))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

// BenchmarkBridge: events/s and add→handled latency through the bridge
// (publish, store, fetch, bus, ack), three nodes on one embedded server,
// 1 000 keys, 64 producer goroutines. ns/op is the cost of one event at
// full speed; the "paced" variants add at a fixed rate to read latency
// below saturation. BenchmarkInProcess is the same workload on one bus.
//
// The "-limits" variants use Config.Retention Limits (cumulative acks).
// NATSBRIDGE_PACE=<events/s> adds paced-env and paced-env-limits (to read
// p99 at half of a measured maximum).
func BenchmarkBridge(b *testing.B) {
	type bench struct {
		name      string
		rate      int
		retention natsbridge.Retention
	}
	benches := []bench{{"max", 0, natsbridge.WorkQueue}, {"max-limits", 0, natsbridge.Limits},
		{"paced-20k", 20000, natsbridge.WorkQueue}, {"paced-20k-limits", 20000, natsbridge.Limits}}
	if r, err := strconv.Atoi(os.Getenv("NATSBRIDGE_PACE")); err == nil && r > 0 {
		benches = append(benches, bench{"paced-env", r, natsbridge.WorkQueue}, bench{"paced-env-limits", r, natsbridge.Limits})
	}
	for _, bc := range benches {
		b.Run(bc.name, func(b *testing.B) {
			ts := startServer(b)
			l := &latencies{want: int64(b.N), done: make(chan struct{})}
			var buses []*eventbus.Bus
			var nodes []*node
			cfg := bridged()
			cfg.Retention = bc.retention
			for _, name := range []string{"a", "b", "c"} {
				n := startNode(b, ts, name, cfg, l.handler)
				nodes = append(nodes, n)
				buses = append(buses, n.bus)
			}
			waitBalanced(b, nodes...)
			b.ResetTimer()
			addAll(b, buses, 64, bc.rate)
			waitFor(b, l.done, 5*time.Minute, "every event handled")
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			l.report(b)
		})
	}
}

// BenchmarkInProcess is BenchmarkBridge's workload on one bus, no bridge.
func BenchmarkInProcess(b *testing.B) {
	l := &latencies{want: int64(b.N), done: make(chan struct{})}
	bus, err := eventbus.New(eventbus.WithLogger(testLogger()))
	if err != nil {
		b.Fatal(err)
	}
	l.handler(bus)
	if err := bus.Start(); err != nil {
		b.Fatal(err)
	}
	defer bus.Close(context.Background())
	b.ResetTimer()
	addAll(b, []*eventbus.Bus{bus}, 64, 0)
	waitFor(b, l.done, time.Minute, "every event handled")
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	l.report(b)
}
