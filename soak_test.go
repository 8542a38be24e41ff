package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The fault soak: 200,000 events over 800 keys in two pools, 4 producers,
// shards of 64 events (producers wait for room), fast retries, and
// handlers that fail about 10% of their calls (errors, panics,
// runtime.Goexit, permanent errors, stops) or do a little busy work.
// Faults are drawn from a random source per key with a fixed seed; a key's
// handlers run one at a time, so the draws, and every figure, are the same
// on each run. It takes about 2s with -race on 2 cores, so it always runs
// in full, -short or not.

const (
	soakEvents    = 200_000
	soakUserKeys  = 400 // keys 0..399: OnSend, chain validate -> deliver
	soakChanKeys  = 400 // keys 400..799: ChannelStore, chain store
	soakProducers = 4
	soakSeed      = 20260401
	soakAttempts  = 3 // the default
	soakQueueSize = 64
)

var errSoak = errors.New("soak: injected failure")

// soakKey is the state of one key. Only that key's handlers touch it, and
// they run one at a time: the race detector checks the per-key FIFO.
type soakKey struct {
	rng     *rand.Rand
	started int // seq of the last event whose first handler started
	handled int // seq of the last handled event

	calls, errs, panics, goexits, perms, stops, busy int
	dead, handledN                                   int
	outOfOrder                                       []string
}

// soakOutcome values.
const (
	soakHandled uint32 = iota + 1
	soakStopped
	soakDead
)

type soakState struct {
	keys      []*soakKey
	chanKey   map[string]int
	outcome   []atomic.Uint32
	doubles   atomic.Int64
	dead      [2]atomic.Int64 // by pool: user, channel
	badLetter atomic.Int64
}

func (s *soakState) mark(idx int, what uint32) {
	if !s.outcome[idx].CompareAndSwap(0, what) {
		s.doubles.Add(1)
	}
}

// call runs one handler attempt for event idx, number seq of key k.
func (s *soakState) call(ctx context.Context, k *soakKey, idx, seq int, last bool) error {
	info, _ := eventbus.CallInfoFrom(ctx)
	k.calls++
	if info.Index == 0 && info.Attempt == 1 {
		if seq != k.started+1 {
			k.outOfOrder = append(k.outOfOrder, fmt.Sprintf("started %d after %d", seq, k.started))
		}
		k.started = seq
	}
	finalAttempt := info.Attempt == soakAttempts
	switch r := k.rng.IntN(1000); {
	case r < 50:
		k.errs++
		if finalAttempt {
			k.dead++
		}
		return fmt.Errorf("event %d: %w", idx, errSoak)
	case r < 88:
		k.panics++
		if finalAttempt {
			k.dead++
		}
		panic(errSoak)
	case r < 90: // reported as a panic; the worker goroutine is replaced
		k.panics++
		k.goexits++
		if finalAttempt {
			k.dead++
		}
		runtime.Goexit()
	case r < 95:
		k.perms++
		k.dead++
		return eventbus.Permanent(errSoak)
	case r < 100:
		k.stops++
		s.mark(idx, soakStopped)
		return fmt.Errorf("audit: %w", eventbus.ErrStopChain)
	case r < 150:
		k.busy++
		busyFor(3 * time.Microsecond)
	}
	if last {
		if seq <= k.handled {
			k.outOfOrder = append(k.outOfOrder, fmt.Sprintf("handled %d after %d", seq, k.handled))
		}
		k.handled = seq
		k.handledN++
		s.mark(idx, soakHandled)
	}
	return nil
}

// DeadLetter checks and counts a dead letter.
func (s *soakState) DeadLetter(d *eventbus.DeadLetter) {
	var idx, pool int
	switch ev := d.Event.(type) {
	case *eventbus.UserContext:
		idx = ev.Frame.([2]int)[0]
	case *eventbus.ChannelContext:
		idx, pool = int(ev.Messages[0].MessageID), 1
	}
	var pe *eventbus.PanicError
	if !(errors.Is(d.Err, errSoak) || errors.As(d.Err, &pe)) || d.Attempts < 1 || d.Attempts > soakAttempts {
		s.badLetter.Add(1)
	}
	s.dead[pool].Add(1)
	s.mark(idx, soakDead)
}

func TestSoak200kEventsWithInjectedFaults(t *testing.T) {
	st := &soakState{chanKey: map[string]int{}, outcome: make([]atomic.Uint32, soakEvents)}
	for i := range soakUserKeys + soakChanKeys {
		st.keys = append(st.keys, &soakKey{rng: rand.New(rand.NewPCG(soakSeed, uint64(i)))})
		if i >= soakUserKeys {
			st.chanKey["ch"+strconv.Itoa(i)] = i
		}
	}
	silent := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError + 4}))
	b, err := eventbus.New(eventbus.WithLogger(silent), eventbus.WithDeadLetter(st),
		eventbus.WithRetry(eventbus.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}),
		// Small shards: producers wait for room while keys sit parked.
		eventbus.WithUserPool(eventbus.PoolConfig{QueueSize: soakQueueSize}),
		eventbus.WithChannelPool(eventbus.PoolConfig{QueueSize: soakQueueSize}))
	require.NoError(t, err)
	t.Cleanup(func() { relCloseAtEnd(b) })

	user := func(last bool) eventbus.Handler[eventbus.UserContext] {
		return func(ctx context.Context, ev *eventbus.UserContext) error {
			ref := ev.Frame.([2]int)
			return st.call(ctx, st.keys[ev.Conn.ID()], ref[0], ref[1], last)
		}
	}
	mustRegister(t, b, eventbus.EventOnSend, user(false), eventbus.WithName("validate"))
	mustRegister(t, b, eventbus.EventOnSend, user(true), eventbus.WithName("deliver"))
	mustRegister(t, b, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		m := ev.Messages[0]
		return st.call(ctx, st.keys[st.chanKey[ev.ChannelID]], int(m.MessageID), int(m.MessageSeq), true)
	}, eventbus.WithName("store"))
	mustStart(t, b)

	start := time.Now()
	// A guard against a hang, not a speed limit: about 2 s on a quiet
	// 2-core machine, it took over 60 s with -race, -count=3 and four busy
	// loops beside it.
	ctx := deadline(t, 5*time.Minute)
	var wg sync.WaitGroup
	addErrs := make(chan error, soakProducers)
	per := soakEvents / soakProducers
	for p := range soakProducers {
		wg.Go(func() {
			var mine []int // keys of this producer: it alone adds their events
			for k := p; k < len(st.keys); k += soakProducers {
				mine = append(mine, k)
			}
			seqs := make([]int, len(st.keys))
			for i := range per {
				idx, k := p*per+i, mine[i%len(mine)]
				seqs[k]++
				var ev eventbus.Event
				if k < soakUserKeys {
					ev = &eventbus.UserContext{EventType: eventbus.EventOnSend,
						Conn: &testConn{uid: "u" + strconv.Itoa(k), id: int64(k)}, Frame: [2]int{idx, seqs[k]}}
				} else {
					id := "ch" + strconv.Itoa(k)
					ev = &eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: id, ChannelType: 2,
						Messages: []*eventbus.Message{{MessageID: int64(idx), MessageSeq: uint64(seqs[k]), ChannelID: id, ChannelType: 2}}}
				}
				if err := b.AddEvent(ctx, ev); err != nil {
					addErrs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(addErrs)
	for err := range addErrs {
		require.NoError(t, err)
	}
	require.NoError(t, b.WaitIdle(ctx), "soak did not drain")
	elapsed := time.Since(start)

	// Every event ended exactly once.
	var handled, stopped, dead int
	for i := range st.outcome {
		switch st.outcome[i].Load() {
		case soakHandled:
			handled++
		case soakStopped:
			stopped++
		case soakDead:
			dead++
		default:
			t.Errorf("event %d has no outcome", i)
		}
	}
	assert.Zero(t, st.doubles.Load(), "events that ended more than once")
	assert.Zero(t, st.badLetter.Load(), "dead letters with a wrong error or attempt count")
	assert.Equal(t, soakEvents, handled+stopped+dead)

	// What was injected, pool by pool, against Stats.
	type sums struct{ calls, errs, panics, goexits, perms, stops, busy, dead, handled int }
	var pools [2]sums
	for i, k := range st.keys {
		p := &pools[min(i/soakUserKeys, 1)]
		p.calls += k.calls
		p.errs += k.errs
		p.panics += k.panics
		p.goexits += k.goexits
		p.perms += k.perms
		p.stops += k.stops
		p.busy += k.busy
		p.dead += k.dead
		p.handled += k.handledN
		assert.Empty(t, k.outOfOrder, "key %d", i)
	}
	stats := b.Stats()
	for i, ps := range []eventbus.PoolStats{stats.User, stats.Channel} {
		name, in := []string{"user", "channel"}[i], pools[i]
		failed := in.errs + in.panics + in.perms
		assert.EqualValues(t, soakEvents/2, ps.Added, "%s Added", name)
		assert.EqualValues(t, in.handled, ps.Handled, "%s Handled", name)
		assert.EqualValues(t, in.stops, ps.Stopped, "%s Stopped", name)
		assert.EqualValues(t, in.dead, ps.DeadLettered, "%s DeadLettered", name)
		assert.EqualValues(t, in.dead, st.dead[i].Load(), "%s letters in the sink", name)
		assert.EqualValues(t, failed, ps.Failed, "%s Failed", name)
		assert.EqualValues(t, in.panics, ps.Panics, "%s Panics", name)
		assert.EqualValues(t, failed-in.dead, ps.Retried, "%s Retried", name)
		assert.Zero(t, ps.Timeouts, "%s Timeouts", name)
		atRest(t, name, ps)
		t.Logf("%s pool: %d events, %d handler calls; injected %d errors, %d panics (%d of them runtime.Goexit), %d permanent, %d stops, %d busy; "+
			"outcome %d handled, %d stopped, %d dead-lettered; %d retries",
			name, ps.Added, in.calls, in.errs, in.panics, in.goexits, in.perms, in.stops, in.busy,
			ps.Handled, ps.Stopped, ps.DeadLettered, ps.Retried)
	}
	t.Logf("soak: %d events over %d keys in %v (%.0f events/s): %d handled, %d stopped, %d dead-lettered",
		soakEvents, len(st.keys), elapsed.Round(time.Millisecond), float64(soakEvents)/elapsed.Seconds(),
		handled, stopped, dead)
	require.NoError(t, b.Close(deadline(t, 10*time.Second)))
}
