package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHotPlugUnderLoadLosesNoEvent proves the registry's guarantees (see
// ARCHITECTURE.md, The chain and its results) under -race while producers add
// events and several goroutines change the chains:
//
//   - OnSend has a fixed tail handler and an "ab" handler that one
//     goroutine keeps swapping between versions A and B with Replace, while
//     churners add (First), replace and remove handlers before them: every
//     event reaches the tail exactly once and runs exactly one of A and B.
//   - RecvAck has only churned handlers, so its chain is often empty: an
//     add refused with ErrNoHandler is not an event; every accepted event
//     either ran through a chain or, having found its chain empty when it
//     ran, was dead-lettered with ErrNoHandler — exactly one of the two.
func TestHotPlugUnderLoadLosesNoEvent(t *testing.T) {
	const (
		producers   = 16
		perProducer = 1000
		total       = producers * perProducer
		churners    = 4
	)
	sink := &sinkRecorder{}
	bus := newBus(t, eventbus.WithDeadLetter(sink),
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 4, QueueSize: 128}))

	var (
		tail, ab = make([]atomic.Int32, total), make([]atomic.Int32, total)
		ackCalls = make([]atomic.Int32, total)
		mwCalls  atomic.Int64
		errs     coreErrs
	)
	mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		tail[ev.Frame.(int)].Add(1)
		return nil
	}, eventbus.WithName("tail"))
	abA := func(ctx context.Context, ev *eventbus.UserContext) error {
		ab[ev.Frame.(int)].Add(1)
		return nil
	}
	abB := func(ctx context.Context, ev *eventbus.UserContext) error {
		ab[ev.Frame.(int)].Add(1)
		return nil
	}
	mustRegister(t, bus, eventbus.EventOnSend, abA, eventbus.WithName("ab"), eventbus.First())
	mustStart(t, bus)

	churnOnSend := func(ctx context.Context, ev *eventbus.UserContext) error { return nil }
	churnAck := func(ctx context.Context, ev *eventbus.UserContext) error {
		ackCalls[ev.Frame.(int)].Add(1)
		return nil
	}

	stop := make(chan struct{})
	var churn sync.WaitGroup
	var swaps, cycles atomic.Int64
	churn.Go(func() { // the A/B swapper
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			h := abA
			if i%2 == 0 {
				h = abB
			}
			reg, err := eventbus.Register(bus, eventbus.EventOnSend, h, eventbus.Replace("ab"))
			errs.add(err)
			if err == nil && reg.Name() != "ab" {
				errs.add(fmt.Errorf("Replace without WithName gave name %q", reg.Name()))
			}
			swaps.Add(1)
		}
	})
	for g := range churners {
		churn.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("churn-%d-%d", g, i)
				reg, err := eventbus.Register(bus, eventbus.EventOnSend, churnOnSend, eventbus.WithName(name), eventbus.First())
				errs.add(err)
				if _, err := eventbus.Register(bus, eventbus.EventOnSend, churnOnSend, eventbus.WithName(name)); !errors.Is(err, eventbus.ErrDuplicateName) {
					errs.add(fmt.Errorf("duplicate %q: got %v, want ErrDuplicateName", name, err))
				}
				_, err = eventbus.Register(bus, eventbus.EventOnSend, churnOnSend, eventbus.Replace(name))
				errs.add(err)
				ackReg, err := eventbus.Register(bus, eventbus.EventRecvAck, churnAck, eventbus.WithName(name))
				errs.add(err)

				if i%2 == 0 {
					reg.Unregister() // replaced: does nothing
					if !bus.UnregisterHandler(eventbus.EventOnSend, name) {
						errs.add(fmt.Errorf("UnregisterHandler(%q) found nothing", name))
					}
					ackReg.Unregister()
					ackReg.Unregister() // idempotent
				} else {
					if !bus.UnregisterHandler(eventbus.EventOnSend, name) {
						errs.add(fmt.Errorf("UnregisterHandler(%q) found nothing", name))
					}
					if bus.UnregisterHandler(eventbus.EventOnSend, name) {
						errs.add(fmt.Errorf("UnregisterHandler(%q) removed twice", name))
					}
					if !bus.UnregisterHandler(eventbus.EventRecvAck, name) {
						errs.add(fmt.Errorf("UnregisterHandler(RecvAck, %q) found nothing", name))
					}
				}
				if g == 0 && i%500 == 100 && i < 2000 {
					bus.Use(func(next eventbus.HandlerFunc) eventbus.HandlerFunc {
						return func(ctx context.Context, ev eventbus.Event) error {
							mwCalls.Add(1)
							return next(ctx, ev)
						}
					})
				}
				cycles.Add(1)
			}
		})
	}

	var (
		prod        sync.WaitGroup
		ackAccepted = make([]atomic.Bool, total)
		nAckNoH     atomic.Int64
		ctx         = deadline(t, 30*time.Second)
	)
	for p := range producers {
		prod.Go(func() {
			for i := range perProducer {
				id := p*perProducer + i
				conn := &testConn{uid: fmt.Sprintf("hot-%d", id%53)}
				errs.add(bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn, Frame: id}))
				err := bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventRecvAck, Conn: conn, Frame: id})
				switch {
				case err == nil:
					ackAccepted[id].Store(true)
				case errors.Is(err, eventbus.ErrNoHandler):
					nAckNoH.Add(1)
				default:
					errs.add(err)
				}
			}
		})
	}
	coreWaitGroup(t, &prod, 30*time.Second, "producers")
	close(stop)
	coreWaitGroup(t, &churn, 10*time.Second, "churners")
	idleWithin(t, bus, 30*time.Second)
	errs.requireNone(t, "producers and churners")

	// OnSend: through the whole chain, one of A/B, exactly once.
	for id := range total {
		require.EqualValues(t, 1, tail[id].Load(), "OnSend %d reached the tail %d times", id, tail[id].Load())
		require.EqualValues(t, 1, ab[id].Load(), "OnSend %d ran A or B %d times", id, ab[id].Load())
	}

	// RecvAck: ran, or dead-lettered with ErrNoHandler; never both, never neither.
	dead := make([]int, total)
	for _, l := range sink.all() {
		ev, ok := l.Event.(*eventbus.UserContext)
		require.True(t, ok)
		require.Equal(t, eventbus.EventRecvAck, ev.EventType, "only RecvAck can find an empty chain")
		require.ErrorIs(t, l.Err, eventbus.ErrNoHandler)
		dead[ev.Frame.(int)]++
	}
	var ran, emptyAtRun, accepted int
	for id := range total {
		calls := ackCalls[id].Load()
		if !ackAccepted[id].Load() {
			require.Zero(t, calls, "RecvAck %d was refused but ran", id)
			require.Zero(t, dead[id], "RecvAck %d was refused but dead-lettered", id)
			continue
		}
		accepted++
		switch {
		case calls > 0 && dead[id] == 0:
			ran++
		case calls == 0 && dead[id] == 1:
			emptyAtRun++
		default:
			t.Fatalf("accepted RecvAck %d: %d handler calls and %d dead letters", id, calls, dead[id])
		}
	}
	t.Logf("%d swaps, %d churn cycles; RecvAck: %d ran, %d found an empty chain, %d refused at add; %d middleware calls",
		swaps.Load(), cycles.Load(), ran, emptyAtRun, nAckNoH.Load(), mwCalls.Load())
	assert.Positive(t, swaps.Load())

	st := bus.Stats().User
	assert.Equal(t, uint64(total+accepted), st.Added)
	assert.Equal(t, uint64(total+ran), st.Handled)
	assert.Equal(t, uint64(emptyAtRun), st.DeadLettered)
	atRest(t, "user", st)
}
