package natsbridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/imbus/eventbus"
	"github.com/nats-io/nats.go/jetstream"
)

// Bridge carries the events of chosen types between the buses of several
// processes through a JetStream stream. Make one per bus with New, Start
// it after the bus, Close it before the bus. Its methods are safe for
// concurrent use.
type Bridge struct {
	bus  *eventbus.Bus
	js   jetstream.JetStream
	cfg  Config
	log  *slog.Logger
	node string

	// ackAll: the stream has limits retention, so new partition consumers
	// ack cumulatively (see acks.go). Set by Start before any fetcher.
	ackAll bool

	bridged  [256]bool
	subjects [256][]string // per bridged type, per partition
	window   chan struct{}
	// closingCh is closed when Close begins: outside adds fail from then on.
	closingCh chan struct{}

	mu      sync.Mutex
	state   int // stateNew, stateStarted, stateClosed
	coord   *coordinator
	stopped chan struct{} // closed when the coordinator has exited

	stats counters
}

const (
	stateNew = iota
	stateStarted
	stateClosed
)

// counters are the bridge's Stats, updated atomically.
type counters struct {
	published, publishErrors                   atomic.Uint64
	delivered, acked, naked, deadLettered      atomic.Uint64
	duplicates, resets, acquired, released     atomic.Uint64
	lost, fetchErrors, deliverErrors, ackError atomic.Uint64
}

// Stats is a snapshot of a bridge's counters.
type Stats struct {
	Published     uint64 // events stored in the stream by this node
	PublishErrors uint64 // publishes that failed (the caller got the error)
	Delivered     uint64 // events this node added to its bus from the stream
	Acked         uint64 // acks sent (handled, stopped or dead-lettered)
	Naked         uint64 // naks sent (given up at a bus Close deadline)
	DeadLettered  uint64 // events this node gave to the dead-letter sink (MaxDeliver, undecodable, no handler)
	Duplicates    uint64 // redeliveries of events still in this node's bus (or, acked cumulatively, finished and not acked yet), dropped
	Resets        uint64 // partitions taken over from a node that left events unacked (rewound to the ack floor)
	Acquired      uint64 // partition leases taken
	Released      uint64 // partition leases handed back
	Lost          uint64 // partition leases lost (not renewed in time)
	FetchErrors   uint64
	DeliverErrors uint64
	AckErrors     uint64
	Owned         int // partitions this node consumes now
	InFlight      int // publishes sent and waiting for their store ack (at most Config.Window)
}

// New makes a bridge for bus over js, to be called before bus.Start. It
// checks cfg (and that every bridged type is known to bus, with a Codec
// for user-pool types) and routes AddEvent of cfg.Types to the stream
// (eventbus.Bus.Outbound). It starts no goroutine and sends nothing to
// the server: Start does.
func New(bus *eventbus.Bus, js jetstream.JetStream, cfg Config) (*Bridge, error) {
	if bus == nil {
		return nil, fmt.Errorf("%w: bus is nil", ErrConfig)
	}
	if js == nil {
		return nil, fmt.Errorf("%w: js is nil", ErrConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	br := &Bridge{bus: bus, js: js, cfg: cfg, log: cfg.Logger, node: cfg.Node,
		window: make(chan struct{}, cfg.Window), closingCh: make(chan struct{})}
	if br.node == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		br.node = hex.EncodeToString(b[:])
	}
	br.log = br.log.With("stream", cfg.Stream, "node", br.node)
	for _, t := range cfg.Types {
		if err := checkType(bus, t); err != nil {
			return nil, err
		}
		br.bridged[t] = true
		subs := make([]string, cfg.Partitions)
		for p := range subs {
			subs[p] = cfg.Stream + "." + strconv.Itoa(int(t)) + "." + strconv.Itoa(p)
		}
		br.subjects[t] = subs
	}
	if err := bus.Outbound(br.send, cfg.Types...); err != nil {
		return nil, fmt.Errorf("natsbridge: %w", err)
	}
	return br, nil
}

// checkType fails for a type bus does not know and for a user-pool type
// without a Codec. It asks DecodeEvent about a header-only encoding: the
// bus answers ErrUnknownEventType, ErrNoCodec, or (for another pool's
// type) ErrBadEncoding before any Codec runs.
func checkType(bus *eventbus.Bus, t eventbus.EventType) (err error) {
	defer func() {
		if recover() != nil { // a user Codec that panics on empty input has a Codec
			err = nil
		}
	}()
	_, err = bus.DecodeEvent(t, []byte{1, 1, byte(t)})
	switch {
	case errors.Is(err, eventbus.ErrUnknownEventType):
		return fmt.Errorf("%w: Types: %v is not a type of this bus (Define it first)", ErrConfig, t)
	case errors.Is(err, eventbus.ErrNoCodec):
		return fmt.Errorf("%w: Types: %s is a user-pool type and has no Codec: give one with eventbus.WithCodec",
			ErrConfig, bus.TypeName(t))
	}
	return nil
}

// Node returns the name this node uses in leases and logs.
func (br *Bridge) Node() string { return br.node }

// Start makes (or checks) the stream and the lease bucket, joins the
// nodes sharing the partitions, takes this node's share and starts
// consuming it. Call it after bus.Start. It returns once this node's
// first share is taken; the share grows or shrinks as nodes join and
// leave. The stream is created if missing and updated only when its
// subjects lack ours: an unchanged stream is left alone. ctx bounds the
// setup, not the bridge's life.
func (br *Bridge) Start(ctx context.Context) error {
	br.mu.Lock()
	defer br.mu.Unlock()
	switch br.state {
	case stateStarted:
		return ErrStarted
	case stateClosed:
		return ErrClosed
	}
	c, err := newCoordinator(ctx, br)
	if err != nil {
		br.log.Error("natsbridge: start failed", "err", err)
		return err
	}
	br.coord = c
	br.stopped = make(chan struct{})
	c.tick(ctx)
	go func() {
		defer close(br.stopped)
		c.run()
	}()
	br.state = stateStarted
	return nil
}

// Close stops consuming and hands this node's partitions back: it stops
// fetching, waits until every event this node took from the stream has
// finished in the bus and been acked, then releases the partition leases
// so other nodes take them at once, and leaves the group. Call it before
// bus.Close. When ctx ends first, Close stops waiting and returns an
// error wrapping ctx's error that says how many events were unfinished:
// they are not acked, and their partitions are taken over after LeaseTTL
// and redelivered from the oldest unacked event (a bus Close that gives
// them up reports them abandoned, and the bridge naks them, or on a Limits
// stream leaves them unacked: never acks them).
//
// From the moment Close begins, adds of bridged types from outside a
// handler fail with an error wrapping eventbus.ErrClosed and ErrClosed
// (also those waiting for room or for their store ack), as the bus's own
// do when it closes; follow-on adds of handlers still in the bus keep
// publishing as long as the connection is open. A second Close returns
// nil.
//
// The bridge also stops by itself, without Close: when its connection is
// closed (fetchers stop at once; the events it was given are left to
// the next owner) and when the bus begins closing (as Close, waiting for
// the bus to finish or give up what it holds). Its goroutines never
// outlive the closing of the connection, or of the bus and Close.
func (br *Bridge) Close(ctx context.Context) error {
	br.mu.Lock()
	if br.state != stateClosed {
		close(br.closingCh)
	}
	if br.state != stateStarted {
		br.state = stateClosed
		br.mu.Unlock()
		return nil
	}
	br.state = stateClosed
	c := br.coord
	br.mu.Unlock()

	c.beginClose()
	select {
	case <-br.stopped:
		return nil
	case <-ctx.Done():
	}
	left := c.abort()
	<-br.stopped
	br.log.Warn("natsbridge: close deadline: events left unacked", "events", left)
	return fmt.Errorf("natsbridge: close: %d events unfinished, left unacked for redelivery: %w", left, ctx.Err())
}

// Stats returns a snapshot of the bridge's counters.
func (br *Bridge) Stats() Stats {
	s := &br.stats
	st := Stats{
		Published: s.published.Load(), PublishErrors: s.publishErrors.Load(),
		Delivered: s.delivered.Load(), Acked: s.acked.Load(), Naked: s.naked.Load(),
		DeadLettered: s.deadLettered.Load(), Duplicates: s.duplicates.Load(), Resets: s.resets.Load(),
		Acquired: s.acquired.Load(), Released: s.released.Load(), Lost: s.lost.Load(),
		FetchErrors: s.fetchErrors.Load(), DeliverErrors: s.deliverErrors.Load(), AckErrors: s.ackError.Load(),
	}
	st.InFlight = len(br.window)
	br.mu.Lock()
	c := br.coord
	br.mu.Unlock()
	if c != nil {
		st.Owned = c.ownedCount()
	}
	return st
}
