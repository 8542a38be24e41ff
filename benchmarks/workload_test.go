package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
)

// A scenario is one workload every peer runs the same way.
type scenario struct {
	name      string
	keys      int  // distinct keys per producer
	producers int  // goroutines adding events at once
	followOn  bool // the handler emits one event to a second stage, which counts it
	// fanOut > 0 (with followOn) adds a third stage: the second stage's
	// handler emits fanOut events of its key to it, and the third stage
	// counts them. Figures stay per input event.
	fanOut  int
	ordered bool // events carry their position in their key; handlers check it
}

var (
	singleKey  = scenario{name: "SingleKey", keys: 1, producers: 1}
	keys1k     = scenario{name: "Keys1k", keys: 1000, producers: 1}
	producers8 = scenario{name: "Producers8", keys: 64, producers: 8}
	keys100k   = scenario{name: "Keys100k", keys: 100_000, producers: 1}
	followOn   = scenario{name: "FollowOn", keys: 1000, producers: 1, followOn: true}
	perKeyFIFO = scenario{name: "Order", keys: 64, producers: 8, ordered: true}
	// fullFlow is the IM flow OnSend → ChannelDistribute → 10 × PushOnline:
	// a user event (keyed by user) emits one channel event (keyed by
	// channel), whose handler emits one push event per receiver, each keyed
	// by the channel so that every receiver sees the channel in order.
	fullFlow = scenario{name: "FullFlow", keys: 1000, producers: 1, followOn: true, fanOut: 10}
)

// queueSize is the capacity of one shard, the bus's default; channel-based
// peers get the same buffer per shard, pools the same in total.
const queueSize = 1024

// shardCount is the number of workers, shards or topics every peer gets:
// the bus's default, GOMAXPROCS but at least 4.
func shardCount() int { return max(runtime.GOMAXPROCS(0), 4) }

// waitLimit bounds the wait for the last event: a peer that loses events
// fails the benchmark instead of hanging it.
const waitLimit = 2 * time.Minute

// quiet is a logger that discards everything.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testConn is a minimal eventbus.Conn: its UID is the event's key.
type testConn struct{ uid string }

func (c *testConn) UID() string { return c.uid }
func (c *testConn) ID() int64   { return 0 }

// frame is the Frame of every stage-1 event: what a handler needs to find
// without a lookup.
type frame struct {
	id   int                      // index of the event in workload.flat
	key  int                      // index of the event's key
	seq  uint64                   // position in its key, from 1 (ordered scenarios)
	next *eventbus.ChannelContext // the follow-on event of the same key
}

// A workload holds the pre-allocated events of one benchmark run and the
// handler body every peer calls, so that all of them do the same work.
type workload struct {
	sc     scenario
	inputs int64 // events the producers add: figures are per input event
	total  int64 // events the last stage handles: inputs × max(1, fanOut)
	shards int
	seed   maphash.Seed

	flat   []*eventbus.UserContext    // every distinct stage-1 event
	prod   [][]*eventbus.UserContext  // per producer: its events in add order, cycled
	counts []int                      // events each producer adds
	next   []*eventbus.ChannelContext // follow-on event per key
	// fanOut > 0: the third-stage events of each key (pushes[key]), all of
	// them in one slice (pushFlat[key*fanOut+i] = pushes[key][i]). A
	// second-stage event finds its key in its message's MessageID.
	pushes   [][]*eventbus.PushContext
	pushFlat []*eventbus.PushContext

	last []atomic.Uint64 // ordered: last position handled, per key
	// The counters every handler writes sit on a cache line of their own,
	// away from the fields producers read (false sharing would slow every
	// peer's producers alike, and blur the comparison).
	_          [64]byte
	violations atomic.Int64
	handled    atomic.Int64
	_          [64]byte
	done       chan struct{} // closed by the handler of the last event

	errOnce sync.Once
	err     error
	failed  chan struct{} // closed on the first error inside a handler
}

// newWorkload pre-allocates the events for total adds in scenario sc. In
// ordered scenarios every add has an event of its own (it carries its
// position); otherwise each producer cycles through one event per key.
func newWorkload(sc scenario, total int) *workload {
	w := &workload{sc: sc, inputs: int64(total), total: int64(total * max(1, sc.fanOut)),
		shards: shardCount(), seed: maphash.MakeSeed(), done: make(chan struct{}), failed: make(chan struct{})}
	nkeys := sc.keys * sc.producers
	conns := make([]testConn, nkeys)
	w.next = make([]*eventbus.ChannelContext, nkeys)
	chans := make([]eventbus.ChannelContext, nkeys)
	for k := range nkeys {
		conns[k].uid = "user-" + strconv.Itoa(k)
		chans[k] = eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute,
			ChannelID: "chan-" + strconv.Itoa(k), ChannelType: 2}
		w.next[k] = &chans[k]
	}
	if sc.fanOut > 0 {
		receivers := make([]string, sc.fanOut)
		for i := range receivers {
			receivers[i] = "receiver-" + strconv.Itoa(i)
		}
		msgs := make([]eventbus.Message, nkeys)
		msgPtrs := make([]*eventbus.Message, nkeys)
		pushes := make([]eventbus.PushContext, nkeys*sc.fanOut)
		w.pushFlat = make([]*eventbus.PushContext, len(pushes))
		w.pushes = make([][]*eventbus.PushContext, nkeys)
		for k := range nkeys {
			msgs[k] = eventbus.Message{MessageID: int64(k), ChannelID: chans[k].ChannelID,
				ChannelType: chans[k].ChannelType, Payload: []byte("hi")}
			msgPtrs[k] = &msgs[k]
			chans[k].Messages = msgPtrs[k : k+1 : k+1]
			for i := range sc.fanOut {
				at := k*sc.fanOut + i
				pushes[at] = eventbus.PushContext{EventType: eventbus.EventPushOnline,
					Message: &msgs[k], Subscribers: receivers[i : i+1 : i+1]}
				w.pushFlat[at] = &pushes[at]
			}
			w.pushes[k] = w.pushFlat[k*sc.fanOut : (k+1)*sc.fanOut : (k+1)*sc.fanOut]
		}
	}
	w.counts = make([]int, sc.producers)
	for p := range w.counts {
		w.counts[p] = total / sc.producers
		if p < total%sc.producers {
			w.counts[p]++
		}
	}
	n := nkeys
	if sc.ordered {
		n = total
		w.last = make([]atomic.Uint64, nkeys)
	}
	evs := make([]eventbus.UserContext, n)
	frames := make([]frame, n)
	w.flat = make([]*eventbus.UserContext, n)
	w.prod = make([][]*eventbus.UserContext, sc.producers)
	at := 0
	for p := range sc.producers {
		size := sc.keys
		if sc.ordered {
			size = w.counts[p]
		}
		w.prod[p] = w.flat[at : at+size : at+size]
		for i := range size {
			key := p*sc.keys + i%sc.keys
			frames[at] = frame{id: at, key: key, seq: uint64(i/sc.keys) + 1, next: w.next[key]}
			evs[at] = eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &conns[key], Frame: &frames[at]}
			w.flat[at] = &evs[at]
			at++
		}
	}
	return w
}

// shard maps a key to one of w.shards shards, as a peer without keys of
// its own must do at every add.
func (w *workload) shard(key string) int {
	return int(maphash.String(w.seed, key) % uint64(w.shards))
}

// handle is the body of the stage-1 handler when there is no second stage.
func (w *workload) handle(ev *eventbus.UserContext) {
	if w.sc.ordered {
		f := ev.Frame.(*frame)
		if w.last[f.key].Swap(f.seq)+1 != f.seq {
			w.violations.Add(1)
		}
	}
	w.count()
}

// handle2 is the body of the second-stage handler when there is no third
// stage.
func (w *workload) handle2(*eventbus.ChannelContext) { w.count() }

// channelKey is the index of a second-stage event's key (fanOut > 0).
func channelKey(ev *eventbus.ChannelContext) int { return int(ev.Messages[0].MessageID) }

// pushesOf returns the third-stage events a second-stage event emits
// (fanOut > 0).
func (w *workload) pushesOf(ev *eventbus.ChannelContext) []*eventbus.PushContext {
	return w.pushes[channelKey(ev)]
}

// handle3 is the body of the third-stage handler.
func (w *workload) handle3(*eventbus.PushContext) { w.count() }

func (w *workload) count() {
	if w.handled.Add(1) == w.total {
		close(w.done)
	}
}

// fail records an error met inside a handler and stops the wait.
func (w *workload) fail(err error) {
	w.errOnce.Do(func() {
		w.err = err
		close(w.failed)
	})
}

// waitDone waits for the handler of the last event: a peer's wait.
func (w *workload) waitDone(ctx context.Context) error {
	select {
	case <-w.done:
		return nil
	case <-w.failed:
		return w.err
	case <-ctx.Done():
		return fmt.Errorf("handled %d of %d events: %w", w.handled.Load(), w.total, ctx.Err())
	}
}

// drive adds every event, from sc.producers goroutines (inline for one).
func (w *workload) drive(add func(*eventbus.UserContext) error) error {
	if len(w.prod) == 1 {
		evs := w.prod[0]
		for i := range w.counts[0] {
			if err := add(evs[i%len(evs)]); err != nil {
				return err
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make([]error, len(w.prod))
	for p, evs := range w.prod {
		n := w.counts[p]
		wg.Go(func() {
			for i := range n {
				if err := add(evs[i%len(evs)]); err != nil {
					errs[p] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// check reports an error if events were lost or, in ordered scenarios,
// handled out of order.
func (w *workload) check() error {
	if w.err != nil {
		return w.err
	}
	if got := w.handled.Load(); got != w.total {
		return fmt.Errorf("handled %d of %d events", got, w.total)
	}
	if v := w.violations.Load(); v != 0 {
		return fmt.Errorf("%d events handled out of their key's order", v)
	}
	return nil
}

// A runner is a started peer set up for one workload.
type runner struct {
	add  func(ev *eventbus.UserContext) error // safe for concurrent use
	wait func(ctx context.Context) error      // until every event is handled
	stop func() error                         // releases every goroutine it can
}

// A peer is one way of running the workload.
type peer struct {
	name string
	// without says why the peer cannot take part in a scenario, naming the
	// test in peers_test.go that shows it; "" when it takes part.
	without func(sc scenario) string
	start   func(w *workload) (*runner, error)
}

func (p peer) cannot(sc scenario) string {
	if p.without == nil {
		return ""
	}
	return p.without(sc)
}

// peers in the order they run and show in tables; ours first, as the base.
var peers = []peer{oursPeer, chanPeer, kelindarPeer, asaskevichPeer, watermillPeer, antsPeer, pondPeer}

// runScenario runs sc for every peer as sub-benchmarks named peer=NAME,
// so that `benchstat -col /peer` puts the peers side by side.
func runScenario(b *testing.B, sc scenario) {
	for _, p := range peers {
		b.Run("peer="+p.name, func(b *testing.B) {
			if why := p.cannot(sc); why != "" {
				skip(b, why)
			}
			w := newWorkload(sc, b.N)
			r, err := p.start(w)
			if err != nil {
				b.Fatal(err)
			}
			measure(b, w, r)
		})
	}
}

// skipped remembers which benchmarks already printed why they skip.
var skipped sync.Map

// skip skips b with why. go test prints skips of benchmarks only with -v,
// so without it skip prints the same lines itself, once per benchmark,
// for the reader and for cmd/table; benchstat ignores them.
func skip(b *testing.B, why string) {
	b.Helper()
	if _, dup := skipped.LoadOrStore(b.Name(), true); !dup && !testing.Verbose() {
		fmt.Printf("--- SKIP: %s\n    %s\n", b.Name(), why)
	}
	b.Skip(why)
}

// measure times adding every event until the last one is handled, then
// stops the peer outside the timed region.
func measure(b *testing.B, w *workload, r *runner) {
	defer func() {
		if err := r.stop(); err != nil {
			b.Errorf("stop: %v", err)
		}
	}()
	c2c := coreRoundTrip(probeRoundTrips) // the machine's state for this run
	runtime.GC()                          // the pre-allocated events are not garbage to the timed region
	b.ReportAllocs()
	b.ResetTimer()
	cpuStart, cpuOK := processCPU()
	start := time.Now()
	if err := w.drive(r.add); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err := r.wait(ctx)
	elapsed := time.Since(start)
	cpuEnd, _ := processCPU()
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	// The larger of the round trips before and after: a run during which
	// the vCPUs moved apart, or together, counts as far.
	c2c = max(c2c, coreRoundTrip(probeRoundTrips))
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(w.inputs), "ns/event")
	b.ReportMetric(float64(w.inputs)/elapsed.Seconds(), "events/s")
	b.ReportMetric(c2c, "c2c-ns")
	if cpuOK {
		// CPU time of every thread of the process (producers, workers,
		// the collector) per input event: what the run cost, apart from
		// how well it used the processors. Above ns/event, the run used
		// more than one processor; equal, one.
		b.ReportMetric(float64((cpuEnd-cpuStart).Nanoseconds())/float64(w.inputs), "cpu-ns/event")
	}
	if w.sc.ordered {
		b.ReportMetric(float64(w.violations.Load()), "violations")
	}
	if err := w.check(); err != nil {
		b.Error(err)
	}
}

// runOnce runs a workload of n events through p outside a benchmark: the
// tests use it to check what the benchmarks rely on.
func runOnce(p peer, sc scenario, n int) (*workload, error) {
	w := newWorkload(sc, n)
	r, err := p.start(w)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err = w.drive(r.add)
	if err == nil {
		err = r.wait(ctx)
	}
	return w, errors.Join(err, r.stop())
}

func BenchmarkSingleKey(b *testing.B)  { runScenario(b, singleKey) }
func BenchmarkKeys1k(b *testing.B)     { runScenario(b, keys1k) }
func BenchmarkKeys100k(b *testing.B)   { runScenario(b, keys100k) }
func BenchmarkProducers8(b *testing.B) { runScenario(b, producers8) }
func BenchmarkFollowOn(b *testing.B)   { runScenario(b, followOn) }
func BenchmarkFullFlow(b *testing.B)   { runScenario(b, fullFlow) }
func BenchmarkOrder(b *testing.B)      { runScenario(b, perKeyFIFO) }
