package eventbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// coreOrderFrame is the Frame of the user events of the ordering tests: which
// user sent it and its position in that user's add order.
type coreOrderFrame struct {
	user int
	seq  int64
}

// TestOrderPerKeyThroughChainAndFollowOns proves per-key FIFO (see
// ARCHITECTURE.md, The engine: shards, run queue, workers, and Follow-on
// adds): 64 producers add OnSend events for 256 users, several
// producers per user (a per-user lock defines the add order). Every handler
// of the user chain sees each user's events one at a time in add order; the
// last emits a ChannelDistribute follow-on to the user's channel, whose
// handlers see every sender's messages in order; the last of those numbers
// the channel's messages and emits PushOnline, whose handlers see every
// channel's messages in that order.
func TestOrderPerKeyThroughChainAndFollowOns(t *testing.T) {
	const (
		producers   = 64
		perProducer = 2000
		users       = 256
		channels    = 32
		total       = producers * perProducer
	)
	bus := newBus(t,
		eventbus.WithUserPool(eventbus.PoolConfig{Workers: 8, QueueSize: 256}),
		eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 4, QueueSize: 256}),
		eventbus.WithPusherPool(eventbus.PoolConfig{Workers: 4, QueueSize: 256}))

	conns := make([]eventbus.Conn, users)
	for u := range conns {
		conns[u] = &testConn{uid: fmt.Sprintf("order-user-%d", u), id: int64(u + 1)}
	}
	chanIDs := make([]string, channels)
	for c := range chanIDs {
		chanIDs[c] = fmt.Sprintf("order-channel-%d", c)
	}
	var (
		userChk    = [3]*coreSeqCheck{newCoreSeqCheck("OnSend#0", users), newCoreSeqCheck("OnSend#1", users), newCoreSeqCheck("OnSend#2", users)}
		chanByUser = [2]*coreSeqCheck{newCoreSeqCheck("ChannelDistribute#0 by sender", users), newCoreSeqCheck("ChannelDistribute#1 by sender", users)}
		chanByChan = newCoreSeqCheck("ChannelDistribute#0 by channel", channels) // also checks one at a time per channel
		pushByUser = [2]*coreSeqCheck{newCoreSeqCheck("PushOnline#0 by sender", users), newCoreSeqCheck("PushOnline#1 by sender", users)}
		pushByChan = [2]*coreSeqCheck{newCoreSeqCheck("PushOnline#0 by channel", channels), newCoreSeqCheck("PushOnline#1 by channel", channels)}
		chanSeq    = make([]atomic.Int64, channels) // per-channel arrival count in ChannelDistribute#0
		nextSeq    = make([]atomic.Uint64, channels)
		emitErrs   coreErrs
	)

	for h := range 3 {
		mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
			f := ev.Frame.(coreOrderFrame)
			userChk[h].see(f.user, f.seq)
			if h == 2 {
				c := f.user % channels
				msg := &eventbus.Message{MessageID: int64(f.user)<<32 | f.seq, FromUID: ev.Conn.UID(),
					ChannelID: chanIDs[c], ChannelType: 2}
				emitErrs.add(bus.AddEvent(ctx, &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute,
					ChannelID: chanIDs[c], ChannelType: 2, Messages: []*eventbus.Message{msg}}))
			}
			return nil
		}, eventbus.WithName(fmt.Sprintf("user-%d", h)))
	}
	for h := range 2 {
		mustRegister(t, bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
			msg := ev.Messages[0]
			user, seq := int(msg.MessageID>>32), msg.MessageID&0xffffffff
			chanByUser[h].see(user, seq)
			c := user % channels
			if h == 0 {
				chanByChan.see(c, chanSeq[c].Add(1)-1)
				return nil
			}
			msg.MessageSeq = nextSeq[c].Add(1) // the channel's own numbering, from 1
			emitErrs.add(bus.AddEvent(ctx, &eventbus.PushContext{EventType: eventbus.EventPushOnline,
				Message: msg, Subscribers: []string{msg.FromUID}}))
			return nil
		}, eventbus.WithName(fmt.Sprintf("channel-%d", h)))
	}
	for h := range 2 {
		mustRegister(t, bus, eventbus.EventPushOnline, func(ctx context.Context, ev *eventbus.PushContext) error {
			user, seq := int(ev.Message.MessageID>>32), ev.Message.MessageID&0xffffffff
			pushByUser[h].see(user, seq)
			pushByChan[h].see(user%channels, int64(ev.Message.MessageSeq)-1)
			return nil
		}, eventbus.WithName(fmt.Sprintf("push-%d", h)))
	}
	mustStart(t, bus)

	// Several producers add for the same user; the user's lock makes the
	// order of their AddEvent calls the order of seq.
	var (
		userMu  = make([]sync.Mutex, users)
		userSeq = make([]int64, users)
		addErrs coreErrs
		wg      sync.WaitGroup
	)
	ctx := deadline(t, time.Minute)
	for p := range producers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p), 42))
			for range perProducer {
				u := rng.IntN(users)
				userMu[u].Lock()
				ev := &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conns[u],
					Frame: coreOrderFrame{user: u, seq: userSeq[u]}}
				err := bus.AddEvent(ctx, ev)
				if err == nil {
					userSeq[u]++
				}
				userMu[u].Unlock()
				if err != nil {
					addErrs.add(err)
					return
				}
			}
		})
	}
	coreWaitGroup(t, &wg, time.Minute, "producers")
	addErrs.requireNone(t, "AddEvent from producers")
	idleWithin(t, bus, time.Minute)
	emitErrs.requireNone(t, "follow-on AddEvent")

	lastOfUser := func(u int) int64 { return userSeq[u] - 1 }
	lastOfChan := func(c int) int64 {
		n := int64(0)
		for u := c; u < users; u += channels {
			n += userSeq[u]
		}
		return n - 1
	}
	for _, c := range userChk {
		c.verify(t, lastOfUser)
	}
	for h := range 2 {
		chanByUser[h].verify(t, lastOfUser)
		pushByUser[h].verify(t, lastOfUser)
		pushByChan[h].verify(t, lastOfChan)
	}
	chanByChan.verify(t, lastOfChan)

	st := bus.Stats()
	for _, ps := range []struct {
		name string
		s    eventbus.PoolStats
	}{{"user", st.User}, {"channel", st.Channel}, {"pusher", st.Pusher}} {
		assert.Equal(t, uint64(total), ps.s.Added, "%s pool Added", ps.name)
		assert.Equal(t, uint64(total), ps.s.Handled, "%s pool Handled", ps.name)
		atRest(t, ps.name, ps.s)
	}
}

// TestOrderDifferentKeysRunInParallel proves that different keys run in
// parallel (see ARCHITECTURE.md, The engine: shards, run queue, workers), in
// each pool: the handler of key A waits for the handler of key B to start,
// and B's for A's, so both report before the attempt's deadline only if they
// were inside their handlers at the same time. Two keys may share a shard (1
// chance in 1 024 here, the default Shards); then the attempt times out and a new pair is tried. The
// test fails if no pair overlaps.
func TestOrderDifferentKeysRunInParallel(t *testing.T) {
	type probe struct {
		started, partner, giveUp chan struct{}
		saw                      chan bool // true: the partner started while this handler waited
	}
	var probes sync.Map // key string -> *probe
	enter := func(key string) {
		p, _ := probes.Load(key)
		pr := p.(*probe)
		close(pr.started)
		select {
		case <-pr.partner:
			pr.saw <- true
		case <-pr.giveUp:
			pr.saw <- false
		}
	}
	pools := []struct {
		name     string
		register func(t *testing.T, bus *eventbus.Bus)
		event    func(key string) eventbus.Event
	}{
		{"user", func(t *testing.T, bus *eventbus.Bus) {
			mustRegister(t, bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
				enter(ev.Conn.UID())
				return nil
			})
		}, func(key string) eventbus.Event { return userEvent(eventbus.EventOnSend, key) }},
		{"channel", func(t *testing.T, bus *eventbus.Bus) {
			mustRegister(t, bus, eventbus.EventChannelStore, func(ctx context.Context, ev *eventbus.ChannelContext) error {
				enter(ev.ChannelID)
				return nil
			})
		}, func(key string) eventbus.Event { return coreChan(eventbus.EventChannelStore, key) }},
		{"pusher", func(t *testing.T, bus *eventbus.Bus) {
			mustRegister(t, bus, eventbus.EventPushOnline, func(ctx context.Context, ev *eventbus.PushContext) error {
				enter(ev.Message.ChannelID)
				return nil
			})
		}, func(key string) eventbus.Event { return corePush(eventbus.EventPushOnline, key, 0) }},
	}
	for _, pl := range pools {
		t.Run(pl.name, func(t *testing.T) {
			cfg := eventbus.PoolConfig{Workers: 64}
			bus := newBus(t, eventbus.WithUserPool(cfg), eventbus.WithChannelPool(cfg), eventbus.WithPusherPool(cfg))
			pl.register(t, bus)
			mustStart(t, bus)
			for attempt := range 8 {
				a := &probe{started: make(chan struct{}), giveUp: make(chan struct{}), saw: make(chan bool, 2)}
				b := &probe{started: make(chan struct{}), giveUp: a.giveUp, saw: a.saw}
				a.partner, b.partner = b.started, a.started
				keyA := fmt.Sprintf("par-%s-%d-a", pl.name, attempt)
				keyB := fmt.Sprintf("par-%s-%d-b", pl.name, attempt)
				probes.Store(keyA, a)
				probes.Store(keyB, b)
				require.NoError(t, bus.AddEvent(context.Background(), pl.event(keyA)))
				require.NoError(t, bus.AddEvent(context.Background(), pl.event(keyB)))

				timer := time.NewTimer(2 * time.Second)
				got := 0
			collect:
				for got < 2 {
					select {
					case ok := <-a.saw:
						require.True(t, ok, "a handler gave up before the attempt's deadline")
						got++
					case <-timer.C:
						break collect
					}
				}
				timer.Stop()
				if got == 2 {
					return // both handlers were running at once
				}
				t.Logf("attempt %d: keys %q and %q did not overlap in 2s (same shard?); trying another pair", attempt, keyA, keyB)
				close(a.giveUp)
				for ; got < 2; got++ {
					recvWithin(t, a.saw, 10*time.Second, "handlers of a failed attempt to return")
				}
				idleWithin(t, bus, 10*time.Second)
			}
			t.Fatalf("%s pool: no two keys were ever handled at the same time (8 pairs tried)", pl.name)
		})
	}
}

// ---------------------------------------------------------------------------
// Helpers shared by the core tests (order, isolation, reemit, close,
// hotplug, panic, badinput, registry). Those every test file uses
// (registering, starting, waiting, stats at rest) are in helpers_test.go.

// coreSeqCheck checks, per key, that a handler sees seq 0, 1, 2… in order and
// never two events of one key at the same time.
type coreSeqCheck struct {
	name  string
	last  []atomic.Int64
	busy  []atomic.Int32
	bad   atomic.Int64
	mu    sync.Mutex
	first []string
}

func newCoreSeqCheck(name string, keys int) *coreSeqCheck {
	c := &coreSeqCheck{name: name, last: make([]atomic.Int64, keys), busy: make([]atomic.Int32, keys)}
	for i := range c.last {
		c.last[i].Store(-1)
	}
	return c
}

func (c *coreSeqCheck) see(key int, seq int64) {
	if n := c.busy[key].Add(1); n != 1 {
		c.fail("key %d: %d events in the handler at once", key, n)
	}
	if prev := c.last[key].Load(); seq != prev+1 {
		c.fail("key %d: seq %d after %d", key, seq, prev)
	}
	c.last[key].Store(seq)
	c.busy[key].Add(-1)
}

func (c *coreSeqCheck) fail(format string, args ...any) {
	c.bad.Add(1)
	c.mu.Lock()
	if len(c.first) < 5 {
		c.first = append(c.first, fmt.Sprintf(format, args...))
	}
	c.mu.Unlock()
}

// verify fails the test if an event was out of order or if a key's last
// seq is not want(key).
func (c *coreSeqCheck) verify(t testing.TB, want func(key int) int64) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Zero(t, c.bad.Load(), "%s: order violations, first ones: %v", c.name, c.first)
	for k := range c.last {
		require.Equal(t, want(k), c.last[k].Load(), "%s: last seq of key %d", c.name, k)
	}
}

// coreErrs collects unexpected errors from goroutines and handlers, where
// require cannot be used.
type coreErrs struct {
	mu    sync.Mutex
	n     int
	first []error
}

func (c *coreErrs) add(err error) {
	if err == nil {
		return
	}
	c.mu.Lock()
	c.n++
	if len(c.first) < 5 {
		c.first = append(c.first, err)
	}
	c.mu.Unlock()
}

func (c *coreErrs) requireNone(t testing.TB, what string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Zero(t, c.n, "%s: %d unexpected errors, first ones: %v", what, c.n, c.first)
}

// coreWaitGroup waits, at most d, for wg.
func coreWaitGroup(t testing.TB, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	recvWithin(t, done, d, what)
}

func coreChan(typ eventbus.EventType, channel string, msgs ...*eventbus.Message) *eventbus.ChannelContext {
	return &eventbus.ChannelContext{EventType: typ, ChannelID: channel, ChannelType: 2, Messages: msgs}
}

func corePush(typ eventbus.EventType, channel string, id int64) *eventbus.PushContext {
	return &eventbus.PushContext{EventType: typ, Subscribers: []string{"someone"},
		Message: &eventbus.Message{MessageID: id, ChannelID: channel, ChannelType: 2}}
}
