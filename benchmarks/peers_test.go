package benchmarks

// Findings about the peers that decide how they take part in the
// benchmarks. Each test logs its finding and passes when the finding is
// confirmed, so a new peer version that changes behaviour fails here
// rather than skewing a table.

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/alitto/pond/v2"
	EventBus "github.com/asaskevich/EventBus"
	"github.com/imbus/eventbus"
	"github.com/panjf2000/ants/v2"
)

// probeDeadline is how long a probe waits for something that never comes
// when the finding holds (an overtaking event, a deadlocked handler). It
// bounds the test; it does not order anything.
const probeDeadline = 2 * time.Second

// sequence records the order in which handlers of one key ran.
type sequence struct {
	mu  sync.Mutex
	got []int
}

func (s *sequence) add(n int) {
	s.mu.Lock()
	s.got = append(s.got, n)
	s.mu.Unlock()
}

func (s *sequence) list() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.got...)
}

// overtake runs the probe that tells whether a peer keeps one key's order:
// it submits event 1 then event 2 of the same key, where event 1's handler
// is slow — it returns only once event 2 was handled, or after
// probeDeadline. A peer that keeps per-key order handles [1 2] (after the
// deadline); one that does not lets event 2 overtake: [2 1].
func overtake(t *testing.T, submit func(handler func()) error) []int {
	t.Helper()
	var seq sequence
	var n atomic.Int32
	both := make(chan struct{})
	record := func(i int) {
		seq.add(i)
		if n.Add(1) == 2 {
			close(both)
		}
	}
	second := make(chan struct{})
	if err := submit(func() {
		select {
		case <-second:
		case <-time.After(probeDeadline):
		}
		record(1)
	}); err != nil {
		t.Fatal(err)
	}
	if err := submit(func() {
		record(2)
		close(second)
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-both:
	case <-time.After(3 * probeDeadline):
		t.Fatalf("handled %v of [1 2]", seq.list())
	}
	return seq.list()
}

// inOrder submits n events of one key, each a handler that checks its
// position, and counts those handled out of order.
func inOrder(t *testing.T, n int, submit func(handler func()) error) int64 {
	t.Helper()
	var last atomic.Uint64
	var bad, handled atomic.Int64
	all := make(chan struct{})
	for i := range n {
		seq := uint64(i) + 1
		err := submit(func() {
			if last.Swap(seq)+1 != seq {
				bad.Add(1)
			}
			if handled.Add(1) == int64(n) {
				close(all)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(time.Minute):
		t.Fatalf("handled %d of %d", handled.Load(), n)
	}
	return bad.Load()
}

// TestExecutorsReorderOneKey shows why ants and pond take no part in the
// Order scenario: an executor runs a task on whichever worker is free, so
// with several workers a slow event of a key is overtaken by the next
// event of the same key; with one worker they stay in order, but nothing
// runs in parallel any more.
func TestExecutorsReorderOneKey(t *testing.T) {
	executors := []struct {
		name string
		pool func(t *testing.T, workers int) (submit func(func()) error, release func())
	}{
		{"ants", func(t *testing.T, workers int) (func(func()) error, func()) {
			p, err := ants.NewPoolWithFuncGeneric(workers, func(f func()) { f() })
			if err != nil {
				t.Fatal(err)
			}
			return p.Invoke, func() {
				if err := p.ReleaseTimeout(10 * time.Second); err != nil {
					t.Error(err)
				}
			}
		}},
		{"pond", func(t *testing.T, workers int) (func(func()) error, func()) {
			p := pond.NewPool(workers, pond.WithQueueSize(workers*queueSize))
			return p.Go, p.StopAndWait
		}},
	}
	for _, e := range executors {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			workers := shardCount()
			submit, release := e.pool(t, workers)
			got := overtake(t, submit)
			release()
			if got[0] != 2 {
				t.Fatalf("with %d workers one key's events ran in order %v; expected event 2 to overtake event 1", workers, got)
			}
			t.Logf("FINDING: %s with %d workers (as benchmarked) handled one key's events as %v: no per-key order", e.name, workers, got)

			submit, release = e.pool(t, 1)
			bad := inOrder(t, 10_000, submit)
			release()
			if bad != 0 {
				t.Fatalf("with 1 worker %d events ran out of order", bad)
			}
			t.Logf("FINDING: %s keeps one key's order only with 1 worker, i.e. with no parallelism at all", e.name)
		})
	}
}

// TestAsyncPeersReorderOneKey shows why asaskevich/EventBus and watermill
// run the Order scenario in their ordered modes rather than their
// defaults: asynchronous handlers of asaskevich run concurrently, and
// watermill's GoChannel hands each published message to a goroutine of its
// own, which race to deliver.
func TestAsyncPeersReorderOneKey(t *testing.T) {
	t.Run("asaskevich", func(t *testing.T) {
		t.Parallel()
		bus := EventBus.New()
		if err := bus.SubscribeAsync("user", func(f func()) { f() }, false); err != nil {
			t.Fatal(err)
		}
		got := overtake(t, func(h func()) error {
			bus.Publish("user", h)
			return nil
		})
		bus.WaitAsync()
		if got[0] != 2 {
			t.Fatalf("events ran in order %v; expected event 2 to overtake event 1", got)
		}
		t.Logf("FINDING: SubscribeAsync(transactional=false) handled one topic's events as %v: no order", got)
	})

	t.Run("watermill", func(t *testing.T) {
		t.Parallel()
		pubsub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: queueSize}, watermill.NopLogger{})
		msgs, err := pubsub.Subscribe(context.Background(), "user")
		if err != nil {
			t.Fatal(err)
		}
		// One subscriber handles the topic in turn; it counts messages
		// that arrive after a later one.
		const perRound, rounds = 1000, 50
		var inversions atomic.Int64
		roundDone := make(chan struct{})
		var consumer sync.WaitGroup
		consumer.Go(func() {
			var last, n int
			for m := range msgs {
				seq := payloadID(m)
				if seq < last {
					inversions.Add(1)
				}
				last = seq
				m.Ack()
				if n++; n%perRound == 0 {
					last = 0
					roundDone <- struct{}{}
				}
			}
		})
		batch := make([]*message.Message, perRound)
		for i := range batch {
			batch[i] = message.NewMessage(strconv.Itoa(i), idPayload(i+1))
		}
		round := 0
		for ; round < rounds && inversions.Load() == 0; round++ {
			for _, m := range batch {
				if err := pubsub.Publish("user", m); err != nil {
					t.Fatal(err)
				}
			}
			<-roundDone
		}
		if err := pubsub.Close(); err != nil {
			t.Error(err)
		}
		consumer.Wait()
		if inversions.Load() == 0 {
			t.Fatalf("%d messages of one topic from one publisher all arrived in order; expected overtaking", round*perRound)
		}
		t.Logf("FINDING: GoChannel (default config) delivered %d of %d messages of one topic from one publisher after a later one: no order",
			inversions.Load(), round*perRound)
	})
}

// TestScenarios runs every scenario once, small, for every peer taking
// part in it: no event lost, and in the Order scenario no event of a key
// handled before an earlier one.
func TestScenarios(t *testing.T) {
	for _, sc := range []scenario{singleKey, keys1k, keys100k, producers8, followOn, fullFlow, perKeyFIFO} {
		// 8 000 adds per run; FullFlow handles fanOut events per input, so
		// it gets every key twice: 2 000 inputs, 20 000 pushes.
		n := 8_000
		if sc.fanOut > 0 {
			n = 2 * sc.keys
		}
		for _, p := range peers {
			t.Run(sc.name+"/peer="+p.name, func(t *testing.T) {
				if why := p.cannot(sc); why != "" {
					t.Skip(why)
				}
				w, err := runOnce(p, sc, n)
				if err == nil {
					err = w.check()
				}
				if err != nil {
					t.Fatal(err)
				}
				if sc.ordered {
					t.Logf("%s kept the order of each of %d keys over %d events from %d producers",
						p.name, sc.keys*sc.producers, w.total, sc.producers)
				}
			})
		}
	}
}

// finishes runs f in a goroutine and reports whether it returned within
// probeDeadline.
func finishes(f func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
		return true
	case <-time.After(probeDeadline):
		return false
	}
}

// asaskevichPublishInSyncHandler publishes from a synchronous handler. It
// never returns: Publish holds the bus's lock while it calls synchronous
// handlers. TestMain ignores the goroutine it strands.
//
//go:noinline
func asaskevichPublishInSyncHandler(bus EventBus.Bus) {
	bus.Publish("b")
}

// asaskevichRepublishInTxHandler publishes to the topic of the running
// transactional handler. It never returns: the handler's lock is held
// until the running call returns. TestMain ignores the goroutine it
// strands.
//
//go:noinline
func asaskevichRepublishInTxHandler(bus EventBus.Bus) {
	bus.Publish("a", 1)
}

// TestReemitFromHandler shows which peers deadlock when a handler emits a
// follow-on event into its own stage — the IM flow's cycles (a push that
// writes to a user connection) need it. The bus accepts such an event
// above capacity; the peers below wait for room or for a lock that only
// the waiting handler can free. This is why the FollowOn scenario gives
// every peer a separate second stage, and why asaskevich and watermill
// use their ordered modes only in the Order scenario.
func TestReemitFromHandler(t *testing.T) {
	t.Run("ours", func(t *testing.T) {
		t.Parallel()
		// One worker with a queue of one: every re-emit lands on a full shard.
		bus, err := eventbus.New(eventbus.WithLogger(quiet),
			eventbus.WithUserPool(eventbus.PoolConfig{Workers: 1, QueueSize: 1}))
		if err != nil {
			t.Fatal(err)
		}
		var children atomic.Int64
		child := &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &testConn{uid: "u"}}
		_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
			if ev == child {
				children.Add(1)
				return nil
			}
			return bus.AddEvent(ctx, child)
		})
		if err == nil {
			err = bus.Start()
		}
		if err != nil {
			t.Fatal(err)
		}
		const parents = 64
		parent := &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &testConn{uid: "u"}}
		ok := finishes(func() {
			for range parents {
				if err := bus.AddEvent(context.Background(), parent); err != nil {
					t.Error(err)
					return
				}
			}
			if err := bus.WaitIdle(context.Background()); err != nil {
				t.Error(err)
			}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := bus.Close(ctx); err != nil {
			t.Error(err)
		}
		if !ok || children.Load() != parents {
			t.Fatalf("re-emit into a full shard: finished=%v, %d of %d follow-on events handled", ok, children.Load(), parents)
		}
		t.Logf("ours: %d handlers each re-emitted into their own full shard (1 worker, QueueSize 1): all handled", parents)
	})

	t.Run("chan", func(t *testing.T) {
		t.Parallel()
		// The hand-written baseline: a shard goroutine sends a follow-on
		// event into its own channel. rescue only exists to free it after
		// the probe.
		const parents = 8
		in := make(chan int, 1)
		rescue, allDone := make(chan struct{}), make(chan struct{})
		var handled int
		var worker, feeder sync.WaitGroup
		worker.Go(func() {
			for {
				select {
				case depth := <-in:
					if depth == 0 {
						select {
						case in <- 1:
						case <-rescue:
						}
					} else if handled++; handled == parents {
						close(allDone)
					}
				case <-rescue:
					return
				}
			}
		})
		feeder.Go(func() {
			for range parents {
				select {
				case in <- 0:
				case <-rescue:
					return
				}
			}
		})
		select {
		case <-allDone:
			t.Fatal("expected the shard goroutine to block on its own full channel")
		case <-time.After(probeDeadline):
		}
		close(rescue)
		feeder.Wait()
		worker.Wait()
		t.Logf("FINDING: chan: a shard goroutine that sends a follow-on event into its own full channel deadlocks")
	})

	t.Run("asaskevich/sync", func(t *testing.T) {
		t.Parallel()
		bus := EventBus.New()
		err := errors.Join(
			bus.Subscribe("b", func() {}),
			bus.Subscribe("a", func() { asaskevichPublishInSyncHandler(bus) }))
		if err != nil {
			t.Fatal(err)
		}
		if finishes(func() { bus.Publish("a") }) {
			t.Fatal("expected Publish from a synchronous handler to deadlock")
		}
		t.Logf("FINDING: asaskevich: Publish from a Subscribe (synchronous) handler deadlocks, on any topic")
	})

	t.Run("asaskevich/transactional", func(t *testing.T) {
		t.Parallel()
		bus := EventBus.New()
		again := make(chan struct{})
		err := bus.SubscribeAsync("a", func(depth int) {
			if depth == 0 {
				asaskevichRepublishInTxHandler(bus)
				return
			}
			close(again)
		}, true)
		if err != nil {
			t.Fatal(err)
		}
		bus.Publish("a", 0)
		select {
		case <-again:
			t.Fatal("expected a re-publish from a transactional handler to deadlock")
		case <-time.After(probeDeadline):
		}
		t.Logf("FINDING: asaskevich: SubscribeAsync(transactional=true), its ordered mode, deadlocks when a handler publishes to its own topic")
	})

	t.Run("watermill/blocking", func(t *testing.T) {
		t.Parallel()
		pubsub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: queueSize,
			BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
		msgs, err := pubsub.Subscribe(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		second := make(chan struct{})
		var consumer, publisher sync.WaitGroup
		consumer.Go(func() {
			n := 0
			for m := range msgs {
				if n++; n == 1 {
					_ = pubsub.Publish("a", message.NewMessage("2", nil)) // returns once Close gives up
				} else if n == 2 {
					close(second)
				}
				m.Ack()
			}
		})
		publisher.Go(func() { _ = pubsub.Publish("a", message.NewMessage("1", nil)) })
		select {
		case <-second:
			t.Fatal("expected a re-publish from a handler to deadlock")
		case <-time.After(probeDeadline):
		}
		// Close ends the wait for acks, which frees everything.
		if !finishes(func() { _ = pubsub.Close(); publisher.Wait(); consumer.Wait() }) {
			t.Fatal("watermill did not recover on Close")
		}
		t.Logf("FINDING: watermill: GoChannel with BlockPublishUntilSubscriberAck, its ordered mode, deadlocks when a handler publishes to its own topic")
	})

	t.Run("ants", func(t *testing.T) {
		t.Parallel()
		const workers = 2
		var started, children atomic.Int32
		allStarted, allChildren := make(chan struct{}), make(chan struct{})
		var p *ants.PoolWithFuncGeneric[int]
		p, err := ants.NewPoolWithFuncGeneric(workers, func(depth int) {
			if depth > 0 {
				if children.Add(1) == workers {
					close(allChildren)
				}
				return
			}
			if started.Add(1) == workers {
				close(allStarted)
			}
			<-allStarted // every worker busy with a parent
			if err := p.Invoke(1); err != nil && !errors.Is(err, ants.ErrPoolClosed) {
				t.Error(err)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		for range workers {
			if err := p.Invoke(0); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-allChildren:
			t.Fatal("expected tasks that submit to their own busy pool to deadlock")
		case <-time.After(probeDeadline):
		}
		running, waiting := p.Running(), p.Waiting()
		if err := p.ReleaseTimeout(10 * time.Second); err != nil { // wakes the blocked Invokes
			t.Error(err)
		}
		t.Logf("FINDING: ants: tasks that submit to their own pool deadlock once every worker does (%d running, %d blocked in Invoke)", running, waiting)
	})

	t.Run("pond", func(t *testing.T) {
		t.Parallel()
		const workers = 2
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := pond.NewPool(workers, pond.WithQueueSize(workers), pond.WithContext(ctx))
		ready, allChildren := make(chan struct{}), make(chan struct{})
		var children atomic.Int32
		parent := func() {
			<-ready
			err := p.Go(func() {
				if children.Add(1) == workers {
					close(allChildren)
				}
			})
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Error(err)
			}
		}
		for range workers {
			if err := p.Go(parent); err != nil { // one per worker
				t.Fatal(err)
			}
		}
		for range workers {
			if err := p.Go(func() {}); err != nil { // fills the queue
				t.Fatal(err)
			}
		}
		close(ready)
		select {
		case <-allChildren:
			t.Fatal("expected tasks that submit to their own full pool to deadlock")
		case <-time.After(probeDeadline):
		}
		running, queued := p.RunningWorkers(), p.WaitingTasks()
		cancel() // ends the blocked Go calls
		p.StopAndWait()
		t.Logf("FINDING: pond: with a bounded queue (as benchmarked), tasks that submit to their own full pool deadlock (%d workers running, %d tasks queued); the default unbounded queue does not, at the cost of unbounded memory", running, queued)
	})
}
