package eventbus_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
)

// Benchmarks of this package. Each reports ns/event and events/s; run with
// -benchmem for allocations. Timed regions end when every event has been
// handled (WaitIdle), so they measure add → handled, not just add.
//
//	go test -run '^$' -bench . -benchmem -count 6 . | tee new.txt
//	benchstat old.txt new.txt

func reportRate(b *testing.B, events int, elapsed time.Duration) {
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(events), "ns/event")
	b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
}

// reportHandled ends a timed region that took elapsed: it reports the rate,
// stops the timer and checks that handled counted all b.N events.
func reportHandled(b *testing.B, elapsed time.Duration, handled *atomic.Int64) {
	reportRate(b, b.N, elapsed)
	b.StopTimer()
	if handled.Load() != int64(b.N) {
		b.Fatalf("handled %d of %d", handled.Load(), b.N)
	}
}

// benchBus builds a started bus whose OnSend handler counts calls.
func benchBus(b *testing.B, opts ...eventbus.Option) (*eventbus.Bus, *atomic.Int64) {
	b.Helper()
	bus := newBus(b, opts...)
	handled := &new(paddedCounter).n
	mustRegister(b, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		handled.Add(1)
		return nil
	})
	mustStart(b, bus)
	return bus, handled
}

// paddedCounter is a handler's counter on a cache line of its own. A bare
// atomic.Int64 is a tiny allocation that can share a line with whatever
// was allocated next to it; measured, that false sharing added about 9%
// to BenchmarkAdd/keys=1. Every benchmark, baselines included, counts
// with one.
type paddedCounter struct {
	_ [64]byte
	n atomic.Int64
	_ [64]byte
}

func userEvents(n int) []*eventbus.UserContext {
	evs := make([]*eventbus.UserContext, n)
	for i := range evs {
		evs[i] = userEvent(eventbus.EventOnSend, "user-"+strconv.Itoa(i))
	}
	return evs
}

func waitIdle(b *testing.B, bus *eventbus.Bus) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := bus.WaitIdle(ctx); err != nil {
		b.Fatal(err)
	}
}

// addAll is the timed part of a one-producer benchmark: it adds b.N
// events, cycling through evs, waits until the bus is idle, reports the
// rate and checks that handled counted every event.
func addAll(b *testing.B, bus *eventbus.Bus, handled *atomic.Int64, evs []*eventbus.UserContext) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if err := bus.AddEvent(ctx, evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
	}
	waitIdle(b, bus)
	reportHandled(b, time.Since(start), handled)
}

// BenchmarkAdd measures add → handled with one producer, for one key and
// for many keys: the cost must not grow with the number of keys.
func BenchmarkAdd(b *testing.B) {
	for _, keys := range []int{1, 1_000, 100_000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			bus, handled := benchBus(b)
			addAll(b, bus, handled, userEvents(keys))
		})
	}
}

// BenchmarkAddChanBaseline is the floor BenchmarkAdd/keys=1 is compared
// with: one producer sends the same pre-allocated events on a buffered
// channel (the bus's default shard capacity) to one goroutine that runs
// the same handler body, and waits until all were handled.
func BenchmarkAddChanBaseline(b *testing.B) {
	ev := userEvent(eventbus.EventOnSend, "user-0")
	in := make(chan *eventbus.UserContext, 1024)
	done := make(chan struct{})
	handled := &new(paddedCounter).n
	n := int64(b.N)
	go func() {
		defer close(done)
		for range in {
			if handled.Add(1) == n {
				return
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		in <- ev
	}
	<-done
	reportRate(b, b.N, time.Since(start))
}

// drainRound is how many events BenchmarkDrain and BenchmarkDrainBatched
// pile up at a time: rounds keep memory bounded.
const drainRound = 1 << 16

// holder is a handler that holds its worker until the benchmark releases
// it: drain benchmarks pile events up behind it.
type holder chan chan struct{}

func (h holder) hold(context.Context) error {
	release := <-h
	<-release
	return nil
}

// drain is the timed part of the drain benchmarks: in rounds of drainRound,
// it adds gate (whose handler is h.hold) and then events ev while the
// worker is held, all untimed, and times the worker emptying the shard.
func drain(b *testing.B, bus *eventbus.Bus, h holder, gate, ev eventbus.Event) time.Duration {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	var elapsed time.Duration
	for done := 0; done < b.N; done += drainRound {
		n := min(drainRound, b.N-done)
		b.StopTimer()
		release := make(chan struct{})
		h <- release
		must(b, bus.AddEvent(ctx, gate)) // holds the worker
		for range n {
			if err := bus.AddEvent(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		close(release)
		waitIdle(b, bus)
		elapsed += time.Since(start)
	}
	return elapsed
}

// BenchmarkDrain measures the worker alone: events pile up in one shard
// while its worker is held, then the timer runs while the worker drains
// them in batches, handler included.
func BenchmarkDrain(b *testing.B) {
	bus := newBus(b, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, QueueSize: drainRound + 1}))
	handled := &new(paddedCounter).n
	h := make(holder, 1)
	mustRegister(b, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		handled.Add(1)
		return nil
	})
	mustRegister(b, bus, eventbus.EventConnect, func(ctx context.Context, ev *eventbus.UserContext) error {
		return h.hold(ctx)
	})
	mustStart(b, bus)
	elapsed := drain(b, bus, h, userEvent(eventbus.EventConnect, "user-0"), userEvent(eventbus.EventOnSend, "user-0"))
	reportHandled(b, elapsed, handled)
}

// BenchmarkDrainBatched is BenchmarkDrain for the channel pool with
// WithBatch: events of one channel pile up while the worker is held, then
// it drains them merging up to 64 adjacent events per handler call.
// ns/event is per original event.
func BenchmarkDrainBatched(b *testing.B) {
	bus := newBus(b, eventbus.WithBatch(eventbus.EventChannelStore, 64),
		eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 1, QueueSize: drainRound + 1}))
	handled := &new(paddedCounter).n
	h := make(holder, 1)
	mustRegister(b, bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		handled.Add(int64(len(ev.Messages)))
		return nil
	})
	mustRegister(b, bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		return h.hold(ctx)
	})
	mustStart(b, bus)
	msg := []*eventbus.Message{{ChannelID: "g", ChannelType: 2, Payload: []byte("hi")}}
	gate := &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "g", ChannelType: 2}
	ev := &eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: "g", ChannelType: 2, Messages: msg}
	reportHandled(b, drain(b, bus, h, gate, ev), handled)
}

// BenchmarkDrainBatchingPool is BenchmarkDrain for events of a type that
// does not batch, in a channel pool where another type does (WithBatch):
// they run as in a pool without batching, in plain stretches.
func BenchmarkDrainBatchingPool(b *testing.B) {
	bus := newBus(b, eventbus.WithBatch(eventbus.EventChannelStore, 64),
		eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 1, QueueSize: drainRound + 1}))
	handled := &new(paddedCounter).n
	h := make(holder, 1)
	gate := &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "g", ChannelType: 2}
	mustRegister(b, bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		if ev == gate {
			return h.hold(ctx)
		}
		handled.Add(int64(len(ev.Messages)))
		return nil
	})
	mustRegister(b, bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		return nil
	})
	mustStart(b, bus)
	msg := []*eventbus.Message{{ChannelID: "g", ChannelType: 2, Payload: []byte("hi")}}
	ev := &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "g", ChannelType: 2, Messages: msg}
	reportHandled(b, drain(b, bus, h, gate, ev), handled)
}

// BenchmarkProducers measures add → handled with 1, 8 and 64 producer
// goroutines, each adding events of its own 64 keys.
func BenchmarkProducers(b *testing.B) {
	for _, producers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) {
			bus, handled := benchBus(b)
			evs := userEvents(producers * 64)
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
				wg.Go(func() {
					for i := range n {
						if err := bus.AddEvent(ctx, mine[i%64]); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			waitIdle(b, bus)
			reportHandled(b, time.Since(start), handled)
		})
	}
}

// BenchmarkTryAddFull measures TryAddEvent refusing an event because its
// shard is full: the cost of back-pressure for a producer that never waits.
func BenchmarkTryAddFull(b *testing.B) {
	bus := newBus(b, eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, QueueSize: 1}))
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	mustRegister(b, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release
		return nil
	})
	mustStart(b, bus)
	defer close(release)
	ev := userEvent(eventbus.EventOnSend, "u")
	if err := bus.TryAddEvent(ev); err != nil { // in flight, blocked
		b.Fatal(err)
	}
	<-started // the shard now holds QueueSize (1) events
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := bus.TryAddEvent(ev); err != eventbus.ErrQueueFull {
			b.Fatalf("got %v, want ErrQueueFull", err)
		}
	}
	reportRate(b, b.N, time.Since(start))
}

// BenchmarkFollowOn measures a handler that emits one follow-on event into
// the channel pool with its own context, per event.
func BenchmarkFollowOn(b *testing.B) {
	bus := newBus(b)
	handled := &new(paddedCounter).n
	ch := &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "c"}
	mustRegister(b, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		return bus.AddEvent(ctx, ch)
	})
	mustRegister(b, bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		handled.Add(1)
		return nil
	})
	mustStart(b, bus)
	addAll(b, bus, handled, []*eventbus.UserContext{userEvent(eventbus.EventOnSend, "u")})
}

// BenchmarkFlow measures the full IM flow, OnSend → ChannelDistribute
// (batched) → PushOnline to 10 subscribers, against a hand-written
// pipeline of channels and goroutines doing the same work.
func BenchmarkFlow(b *testing.B) {
	const channels, subscribers = 64, 10
	subs := make([]string, subscribers)
	for i := range subs {
		subs[i] = "s" + strconv.Itoa(i)
	}
	msgs := make([]*eventbus.Message, channels)
	sends := make([]*eventbus.UserContext, channels)
	for i := range msgs {
		msgs[i] = &eventbus.Message{ChannelID: "g" + strconv.Itoa(i), ChannelType: 2, Payload: []byte("hi")}
		sends[i] = &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &testConn{uid: "u" + strconv.Itoa(i)}, Frame: msgs[i]}
	}

	b.Run("bus", func(b *testing.B) {
		bus := newBus(b, eventbus.WithBatch(eventbus.EventChannelDistribute, 64))
		pushed := &new(paddedCounter).n
		seqs := make([]uint64, channels) // one channel per shard key: no race
		index := make(map[string]int, channels)
		for i, m := range msgs {
			index[m.ChannelID] = i
		}
		pushes := make([]*eventbus.PushContext, channels)
		dists := make([]*eventbus.ChannelContext, channels)
		for i, m := range msgs {
			pushes[i] = &eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: m, Subscribers: subs}
			dists[i] = &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: m.ChannelID, ChannelType: 2, Messages: msgs[i : i+1]}
		}
		mustRegister(b, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
			m := ev.Frame.(*eventbus.Message)
			return bus.AddEvent(ctx, dists[index[m.ChannelID]])
		})
		mustRegister(b, bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			i := index[ev.ChannelID]
			for range ev.Messages {
				seqs[i]++
				if err := bus.AddEvent(ctx, pushes[i]); err != nil {
					return err
				}
			}
			return nil
		})
		mustRegister(b, bus, eventbus.EventPushOnline, func(ctx context.Context, ev *eventbus.PushContext) error {
			pushed.Add(int64(len(ev.Subscribers)))
			return nil
		})
		mustStart(b, bus)
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			if err := bus.AddEvent(ctx, sends[i%channels]); err != nil {
				b.Fatal(err)
			}
		}
		waitIdle(b, bus)
		reportRate(b, b.N, time.Since(start))
		b.StopTimer()
		if pushed.Load() != int64(b.N*subscribers) {
			b.Fatalf("pushed %d, want %d", pushed.Load(), b.N*subscribers)
		}
	})

	b.Run("chan-baseline", func(b *testing.B) {
		shards := max(4, runtime.GOMAXPROCS(0))
		pushed := &new(paddedCounter).n
		var userWG, chanWG, pushWG, done sync.WaitGroup
		userQ := make([]chan *eventbus.UserContext, shards)
		chanQ := make([]chan *eventbus.Message, shards)
		pushQ := make([]chan *eventbus.Message, shards)
		index := make(map[string]int, channels)
		for i, m := range msgs {
			index[m.ChannelID] = i
		}
		seqs := make([]uint64, channels) // each channel is on one goroutine
		for s := range shards {
			userQ[s] = make(chan *eventbus.UserContext, 1024)
			chanQ[s] = make(chan *eventbus.Message, 1024)
			pushQ[s] = make(chan *eventbus.Message, 1024)
		}
		for s := range shards {
			userWG.Go(func() {
				for ev := range userQ[s] {
					m := ev.Frame.(*eventbus.Message)
					chanQ[index[m.ChannelID]%shards] <- m
				}
			})
			chanWG.Go(func() {
				for m := range chanQ[s] {
					seqs[index[m.ChannelID]]++
					pushQ[index[m.ChannelID]%shards] <- m
				}
			})
			pushWG.Go(func() {
				for range pushQ[s] {
					pushed.Add(subscribers)
					done.Done()
				}
			})
		}
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		done.Add(b.N)
		for i := range b.N {
			userQ[i%channels%shards] <- sends[i%channels]
		}
		done.Wait()
		reportRate(b, b.N, time.Since(start))
		b.StopTimer()
		for _, stage := range []struct {
			close func()
			wg    *sync.WaitGroup
		}{
			{func() { closeAll(userQ) }, &userWG},
			{func() { closeAll(chanQ) }, &chanWG},
			{func() { closeAll(pushQ) }, &pushWG},
		} {
			stage.close()
			stage.wg.Wait()
		}
		if pushed.Load() != int64(b.N*subscribers) {
			b.Fatalf("pushed %d, want %d", pushed.Load(), b.N*subscribers)
		}
	})
}

func closeAll[T any](chs []chan T) {
	for _, c := range chs {
		close(c)
	}
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkIdleLatency measures the time from AddEvent on an idle bus to
// the start of the handler, one event at a time, against a goroutine
// waiting on a channel. It reports percentiles in nanoseconds (see reportLatency).
func BenchmarkIdleLatency(b *testing.B) {
	b.Run("bus", func(b *testing.B) {
		bus := newBus(b)
		var sent time.Time
		lat := make([]time.Duration, 0, b.N)
		got := make(chan struct{})
		mustRegister(b, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
			lat = append(lat, time.Since(sent))
			got <- struct{}{}
			return nil
		})
		mustStart(b, bus)
		ev := userEvent(eventbus.EventOnSend, "u")
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			sent = time.Now()
			if err := bus.AddEvent(ctx, ev); err != nil {
				b.Fatal(err)
			}
			<-got
			// The worker is asleep again before the next add. Background:
			// waitIdle's timeout would add a timer and allocations to every
			// round (the test binary's -timeout still bounds a hang).
			if err := bus.WaitIdle(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		reportLatency(b, lat)
	})
	b.Run("chan-baseline", func(b *testing.B) {
		var sent time.Time
		lat := make([]time.Duration, 0, b.N)
		in := make(chan *eventbus.UserContext, 1)
		got := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for range in {
				lat = append(lat, time.Since(sent))
				got <- struct{}{}
			}
		})
		ev := userEvent(eventbus.EventOnSend, "u")
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			sent = time.Now()
			in <- ev
			<-got
		}
		b.StopTimer()
		close(in)
		wg.Wait()
		reportLatency(b, lat)
	})
}

// reportLatency reports the 10th, 50th, 90th and 99th percentiles of lat:
// whether a difference is in the tail or at every percentile.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	for _, q := range []int{10, 50, 90, 99} {
		b.ReportMetric(float64(lat[len(lat)*q/100].Nanoseconds()), fmt.Sprintf("p%d-ns", q))
	}
}

// BenchmarkSubscribers measures add → handled by the chain and by 0, 1
// and 4 fast subscribers, one producer over 1 000 keys. ns/delivery is the
// cost per handler run (chain and subscribers); allocs/op is per input
// event.
func BenchmarkSubscribers(b *testing.B) {
	for _, subs := range []int{0, 1, 4} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			bus, handled := benchBus(b)
			for i := range subs {
				_, err := eventbus.Subscribe(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
					handled.Add(1)
					return nil
				}, eventbus.WithName(fmt.Sprint("sub", i)))
				must(b, err)
			}
			evs := userEvents(1_000)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if err := bus.AddEvent(ctx, evs[i%len(evs)]); err != nil {
					b.Fatal(err)
				}
			}
			waitIdle(b, bus)
			elapsed := time.Since(start)
			deliveries := b.N * (1 + subs)
			reportRate(b, b.N, elapsed)
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(deliveries), "ns/delivery")
			b.StopTimer()
			if handled.Load() != int64(deliveries) {
				b.Fatalf("handled %d of %d", handled.Load(), deliveries)
			}
		})
	}
}
