package natsbridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imbus/eventbus"
	"github.com/nats-io/nats.go/jetstream"
)

// partition is one partition this node owns: its fetcher goroutine and
// the events it handed to the bus and has not acked yet.
type partition struct {
	c    *coordinator
	id   int
	key  string // lease key
	name string // durable consumer
	cons jetstream.Consumer
	rev  uint64 // lease revision; run goroutine only

	validUntil atomic.Int64  // unix nanos: the lease is surely ours until then
	renewed    chan struct{} // a renewal happened (buffered 1)
	stop       chan struct{} // closed: finish the current fetch, then exit
	stopOnce   sync.Once
	ctx        context.Context // cancelled: stop now (lease lost, Close aborted)
	cancel     context.CancelFunc
	done       chan struct{} // closed by the fetcher when it exits

	// dirty: this node may leave events of the partition unacked (some
	// were fetched and not delivered, given up at a bus Close, or sent to
	// a pull request this node abandoned).
	dirty atomic.Bool
	// halted: stop handing events to the bus (the bus is closed or the
	// fetcher is stopping hard); fetcher goroutine only.
	halted bool

	mu       sync.Mutex
	inflight map[uint64]struct{} // stream sequences in the bus

	// ackAll: the consumer acks cumulatively (see acks.go); acks is then
	// its queue (guarded by mu), and ackMu is held while an ack is sent.
	// lastAck is the message of the last ack sent, unconfirmed until the
	// server has confirmed that it processed it (guarded by ackMu).
	ackAll      bool
	acks        ackQueue
	ackMu       sync.Mutex
	lastAck     jetstream.Msg
	unconfirmed bool

	// lastDelivery is the consumer sequence of the last delivery this
	// node received, or where the count stood when it began: the
	// consumer's delivered sequence when prepare took the partition, 0
	// after a rewind (a reset restarts the delivery sequence at 1: NATS
	// ADR-60). Fetcher goroutine only (release reads it once the fetcher
	// has exited). Every delivery, redeliveries and those to a pull request
	// the fetcher abandoned included, takes the next consumer sequence, so
	// a gap means a delivery never reached this node (sent to an inbox a
	// cut connection or an ended fetch abandoned) and would come back
	// after later ones.
	lastDelivery uint64

	// Careful redelivery after a takeover (fetcher goroutine only, set by
	// prepare): events up to stream sequence carefulTo (0: none) may have
	// been running when the last owner stopped. They are handed to the
	// bus one at a time, each after writing "<seq> <count>" under runKey
	// in the runs bucket, so that if this node dies too, the next owner
	// knows which event was running and how many deliveries of it never
	// finished (runSeq, runCount: what the last owner wrote). See careful.
	carefulTo        uint64
	runKey           string
	runSeq, runCount uint64
	runWritten       bool
	waitSeq          uint64        // guarded by mu: the careful event being waited for
	waitDone         chan struct{} // guarded by mu: closed when waitSeq finishes
	waitAbandoned    bool          // guarded by mu: waitSeq was given up at a bus Close deadline
	carefulWaited    time.Duration // time spent waiting for careful events in this fetch
}

func newPartition(c *coordinator, id int, key string, rev uint64) *partition {
	p := &partition{c: c, id: id, key: key, rev: rev,
		name:    c.br.cfg.Stream + "_p" + strconv.Itoa(id),
		renewed: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		inflight: map[uint64]struct{}{}}
	p.ctx, p.cancel = context.WithCancel(c.ctx)
	return p
}

func (p *partition) extend(until time.Time) {
	p.validUntil.Store(until.UnixNano())
	select {
	case p.renewed <- struct{}{}:
	default:
	}
}

func (p *partition) validUntilTime() time.Time { return time.Unix(0, p.validUntil.Load()) }

func (p *partition) stopFetching() { p.stopOnce.Do(func() { close(p.stop) }) }

// drained: the fetcher has exited and every event it delivered has
// finished (acked, or nak'd).
func (p *partition) drained() bool {
	return p.exited() && p.inflightLen() == 0
}

// exited: the fetcher has returned.
func (p *partition) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *partition) inflightLen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inflight)
}

// fetch is the partition's goroutine: it fetches batches in stream order
// and hands each event to the bus, one at a time, in that order.
func (p *partition) fetch() {
	// abandoned: the last fetch ended before the server ended its pull
	// request (an error, a status such as a shutdown notice, or the
	// client's own timer), so the request may still be waiting on the
	// server and take deliveries after this fetcher has gone: the
	// partition is then handed back dirty. A later fetch the server ended
	// shows that the request is gone (requests are served and expire in
	// the order they came, and all have the same expiry).
	abandoned := false
	defer func() {
		if abandoned {
			p.dirty.Store(true)
		}
		close(p.done)
		p.c.poke()
	}()
	br := p.c.br
	wait := min(time.Second, br.cfg.LeaseTTL/4)
	batch := min(256, br.cfg.MaxAckPending)
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-p.stop:
			return
		case <-p.ctx.Done():
			return
		default:
		}
		// Fetch only what can be received while the lease surely holds.
		if time.Until(p.validUntilTime()) < wait+wait/4 {
			select {
			case <-p.renewed:
				continue
			case <-p.stop:
				return
			case <-p.ctx.Done():
				return
			}
		}
		started := time.Now()
		p.carefulWaited = 0
		n := batch
		if p.carefulTo > 0 {
			n = min(n, 16) // handled one at a time: fetch little ahead
		}
		b, err := p.cons.Fetch(n, jetstream.FetchMaxWait(wait))
		if err != nil {
			br.stats.fetchErrors.Add(1)
			br.log.Warn("natsbridge: fetch failed", "partition", p.id, "err", err)
			if !p.pause(&backoff) {
				return
			}
			continue
		}
		gap := false
		for m := range b.Messages() {
			if gap {
				continue // left unacked: the rewind below brings them back in order
			}
			meta, merr := m.Metadata() // parsed once per message
			if merr == nil && p.missedDelivery(meta) {
				gap = true
				br.log.Warn("natsbridge: a delivery never arrived; rewinding before going on", "partition", p.id)
				continue
			}
			p.handle(m, meta, merr)
		}
		err = b.Error()
		// A fetch ends with the server's "request expired" status, after
		// every message of the request. When the client gave up first
		// (slow server, cut connection) or a status ended it (a server
		// shutting down answers "409 Server Shutdown" and keeps the
		// request for a while), messages may have been sent, or may still
		// be sent, to the abandoned inbox: they stay pending until AckWait
		// and would come back after later ones. Rewind before fetching
		// again; a delivery to that inbox after the rewind shows as a gap
		// at the next one this node receives (see missedDelivery).
		abandoned = err != nil || time.Since(started)-p.carefulWaited >= wait+900*time.Millisecond
		if gap && err == nil {
			err = errMissedDelivery
		}
		if err != nil || abandoned {
			if time.Now().After(p.validUntilTime()) {
				p.halted = true // the lease may be another node's by now
				p.dirty.Store(true)
				return
			}
			if rerr := p.rewind(); rerr != nil {
				br.log.Warn("natsbridge: rewind after an unfinished fetch failed", "partition", p.id, "err", rerr)
				p.halted = true
				p.dirty.Store(true)
				return
			}
		}
		if err != nil {
			br.stats.fetchErrors.Add(1)
			br.log.Warn("natsbridge: fetch failed", "partition", p.id, "err", err)
			if !p.pause(&backoff) {
				return
			}
			continue
		}
		if p.ctx.Err() != nil {
			p.dirty.Store(true)
		}
		if p.halted {
			return
		}
		backoff = 50 * time.Millisecond
	}
}

// rewind resets the partition's consumer to its ack floor: every
// unacked event comes again in stream order; those still in the bus are
// recognised and dropped (see handle). The next delivery is the
// consumer's first again (sequence 1): one that is not was taken by a
// pull request this node abandoned, and is rewound in turn.
func (p *partition) rewind() error {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	br := p.c.br
	if p.ackAll {
		// What finished is not delivered again, and no ack carrying a
		// delivery made before the reset reaches the reset consumer
		// (see acks.go).
		if err := p.syncAcks(ctx, true); err != nil {
			return fmt.Errorf("acks before the rewind: %w", err)
		}
	}
	if _, err := br.js.ResetConsumer(ctx, br.cfg.Stream, p.name); err != nil {
		return err
	}
	p.lastDelivery = 0
	br.stats.resets.Add(1)
	br.log.Info("natsbridge: partition rewound to its ack floor after an unfinished fetch", "partition", p.id)
	return nil
}

// pause waits out a growing backoff; false when the fetcher must exit.
func (p *partition) pause(backoff *time.Duration) bool {
	t := time.NewTimer(*backoff)
	defer t.Stop()
	*backoff = min(*backoff*2, 2*time.Second)
	select {
	case <-t.C:
		return true
	case <-p.stop:
		return false
	case <-p.ctx.Done():
		return false
	}
}

// handle hands one fetched message (meta: its metadata, or err) to the
// bus, or dead-letters it.
func (p *partition) handle(m jetstream.Msg, meta *jetstream.MsgMetadata, err error) {
	br := p.c.br
	if p.halted || p.ctx.Err() != nil {
		p.dirty.Store(true) // left unacked: the next owner gets it
		return
	}
	if err != nil {
		br.log.Error("natsbridge: message without JetStream metadata, terminated", "partition", p.id, "err", err)
		_ = m.Term()
		return
	}
	seq := meta.Sequence.Stream
	t, ev, derr := p.decode(m)
	p.mu.Lock()
	_, dup := p.inflight[seq]
	finished, flush := false, false
	if p.ackAll {
		// A redelivery of an event in the bus, or finished and not acked
		// yet (the rewind that follows a consumer reset brings both
		// back): its ack must carry this delivery (see acks.go).
		finished = !dup && p.acks.finished(seq)
		if dup || finished {
			flush = p.acks.schedule(p.acks.redelivered(seq, m))
		}
	}
	p.mu.Unlock()
	if flush {
		time.AfterFunc(ackDelay, p.flushAcks)
	}
	if finished {
		br.stats.duplicates.Add(1) // handled once already: never again on this node
		return
	}
	if dup {
		// AckWait passed while the bus still has it: keep the one in the
		// bus, count the delivery toward MaxDeliver.
		br.stats.duplicates.Add(1)
		if int(meta.NumDelivered) > br.cfg.MaxDeliver {
			p.deadLetter(m, ev, fmt.Errorf("%w: %d deliveries, still unfinished after %v each",
				ErrMaxDeliver, meta.NumDelivered-1, br.cfg.AckWait), int(meta.NumDelivered)-1)
		}
		return
	}
	if int(meta.NumDelivered) > br.cfg.MaxDeliver {
		p.deadLetter(m, ev, fmt.Errorf("%w: %d deliveries (MaxDeliver %d)", ErrMaxDeliver,
			meta.NumDelivered-1, br.cfg.MaxDeliver), int(meta.NumDelivered)-1)
		return
	}
	if derr != nil {
		p.deadLetter(m, nil, derr, 0)
		return
	}
	careful := false
	if p.carefulTo > 0 {
		if seq <= p.carefulTo {
			// One careful event at a time on the whole node: if it
			// dies, only the event that was running carries a count.
			select {
			case p.c.carefulSlot <- struct{}{}:
			case <-p.ctx.Done():
				p.halted = true
				p.dirty.Store(true)
				return
			}
			var stop bool
			if careful, stop = p.careful(m, ev, seq); stop {
				<-p.c.carefulSlot
				return
			}
		} else {
			p.endCareful()
		}
	}
	p.mu.Lock()
	p.inflight[seq] = struct{}{}
	if p.ackAll {
		p.acks.add(seq, m, false)
	}
	var done chan struct{}
	if careful {
		done = make(chan struct{})
		p.waitSeq, p.waitDone = seq, done
	}
	p.mu.Unlock()
	if careful {
		defer func() { p.awaitCareful(seq, done) }() // at once if never delivered
	}
	backoff := 50 * time.Millisecond
	for {
		err := br.bus.Deliver(context.WithValue(p.ctx, seqKey{}, seq), ev, func(o eventbus.Outcome) { p.finish(seq, m, o) })
		if err == nil {
			br.stats.delivered.Add(1)
			return
		}
		p.unwait(seq)
		p.forget(seq)
		switch {
		case errors.Is(err, eventbus.ErrClosed) || p.ctx.Err() != nil:
			p.halted = true
			p.dirty.Store(true)
			return
		case errors.Is(err, eventbus.ErrNoHandler), errors.Is(err, eventbus.ErrUnknownEventType),
			errors.Is(err, eventbus.ErrWrongPool), errors.Is(err, eventbus.ErrNilEvent):
			p.deadLetter(m, ev, fmt.Errorf("natsbridge: %s cannot be handled on node %s: %w",
				br.bus.TypeName(t), br.node, err), 0)
			return
		}
		// Anything else (an Admit hook's refusal, say): try the same event
		// again, keeping the partition's order.
		br.stats.deliverErrors.Add(1)
		br.log.Warn("natsbridge: bus refused event, retrying", "partition", p.id, "seq", seq, "err", err)
		if !p.pause(&backoff) {
			p.halted = true
			p.dirty.Store(true)
			return
		}
		p.mu.Lock()
		p.inflight[seq] = struct{}{}
		if careful {
			done = make(chan struct{})
			p.waitSeq, p.waitDone = seq, done
		}
		p.mu.Unlock()
	}
}

// decode turns a message back into its event.
func (p *partition) decode(m jetstream.Msg) (eventbus.EventType, eventbus.Event, error) {
	br := p.c.br
	subject := m.Subject()
	parts := strings.Split(subject, ".")
	if len(parts) != 3 {
		return 0, nil, fmt.Errorf("natsbridge: subject %q is not <stream>.<type>.<partition>", subject)
	}
	n, err := strconv.ParseUint(parts[1], 10, 8)
	if err != nil {
		return 0, nil, fmt.Errorf("natsbridge: subject %q: bad event type", subject)
	}
	t := eventbus.EventType(n)
	if !br.bridged[t] {
		return t, nil, fmt.Errorf("natsbridge: subject %q: type %s is not bridged on node %s", subject, br.bus.TypeName(t), br.node)
	}
	ev, err := br.bus.DecodeEvent(t, m.Data())
	if err != nil {
		return t, nil, fmt.Errorf("natsbridge: decode %s (subject %s): %w", br.bus.TypeName(t), subject, err)
	}
	return t, ev, nil
}

// deadLetter gives an event the bridge will not deliver to the local
// dead-letter sink and terminates the message.
func (p *partition) deadLetter(m jetstream.Msg, ev eventbus.Event, err error, attempts int) {
	br := p.c.br
	br.stats.deadLettered.Add(1)
	br.log.Error("natsbridge: event dead-lettered", "partition", p.id, "subject", m.Subject(), "err", err)
	br.bus.DeadLetter(&eventbus.DeadLetter{Event: ev, Err: err, Attempts: attempts, Handler: "natsbridge", Time: time.Now()})
	if p.ackAll {
		// A cumulative ack covers it (a Term would ack everything before
		// it too, finished or not).
		if meta, merr := m.Metadata(); merr == nil {
			p.settle(meta.Sequence.Stream, m)
		}
		return
	}
	if terr := m.Term(); terr != nil {
		br.stats.ackError.Add(1)
		br.log.Warn("natsbridge: term failed", "partition", p.id, "err", terr)
	}
}

// finish is the bus's done callback: ack what finished, nak what a Close
// deadline gave up. It runs on a bus worker and does not block (an ack
// is a buffered publish).
func (p *partition) finish(seq uint64, m jetstream.Msg, o eventbus.Outcome) {
	br := p.c.br
	var err error
	switch {
	case p.ackAll && o == eventbus.OutcomeAbandoned:
		// Never acked: the prefix stops here; the next owner rewinds.
		p.dirty.Store(true)
		br.stats.naked.Add(1)
	case p.ackAll:
		p.settle(seq, nil)
		br.stats.acked.Add(1)
	case o == eventbus.OutcomeAbandoned:
		p.dirty.Store(true)
		err = m.Nak()
		br.stats.naked.Add(1)
	default:
		err = m.Ack()
		br.stats.acked.Add(1)
	}
	if err != nil {
		br.stats.ackError.Add(1)
		br.log.Warn("natsbridge: ack failed: the event will be redelivered", "partition", p.id, "seq", seq, "err", err)
	}
	if p.forget(seq) {
		p.c.poke()
	}
	p.mu.Lock()
	if p.waitSeq == seq && p.waitDone != nil {
		p.waitAbandoned = o == eventbus.OutcomeAbandoned
	}
	p.mu.Unlock()
	p.unwait(seq)
}

// careful prepares the careful delivery of event seq (see the fields):
// it counts this delivery in the runs bucket before the event reaches
// the bus, or dead-letters the event when MaxDeliver deliveries of it
// never finished. A delivery that was under way when the last owner
// stopped, without a count of its own, counts as one: the first death
// cannot tell the running event from those queued behind it, so an event
// is dead-lettered only after at least one counted death. stop: the
// event was dead-lettered, or the count could not be written (the
// fetcher stops, the partition is handed back dirty).
func (p *partition) careful(m jetstream.Msg, ev eventbus.Event, seq uint64) (careful, stop bool) {
	br := p.c.br
	unfinished := uint64(1)
	if p.runSeq == seq {
		unfinished = max(p.runCount, 1)
		if unfinished >= uint64(br.cfg.MaxDeliver) {
			p.deadLetter(m, ev, fmt.Errorf("%w: %d deliveries never finished (the node handling it stopped each time; MaxDeliver %d)",
				ErrMaxDeliver, unfinished, br.cfg.MaxDeliver), int(unfinished))
			return false, true
		}
	}
	ctx, cancel := p.c.opCtx(p.ctx)
	defer cancel()
	if _, err := p.c.runs.Put(ctx, p.runKey, []byte(strconv.FormatUint(seq, 10)+" "+strconv.FormatUint(unfinished+1, 10))); err != nil {
		br.log.Warn("natsbridge: counting a redelivery failed; handing the partition back", "partition", p.id, "seq", seq, "err", err)
		p.halted = true
		p.dirty.Store(true)
		return false, true
	}
	p.runWritten = true
	return true, false
}

// unwait stops waiting for seq (its delivery failed: it never finishes).
func (p *partition) unwait(seq uint64) {
	p.mu.Lock()
	if p.waitSeq == seq && p.waitDone != nil {
		close(p.waitDone)
		p.waitSeq, p.waitDone = 0, nil
	}
	p.mu.Unlock()
}

// awaitCareful waits until careful event seq has finished (or the
// partition stops), so that the next one starts only then.
//
// Once the event has finished, its count is removed: its ack is
// fire-and-forget and may be lost if this node dies now, and a count
// left behind would charge an event that finished with a death it did
// not cause (the next owner would see it unacked and counted). Without
// the count it is redelivered as any event that was under way. An event
// given up at a Close deadline keeps its count: it never finished.
func (p *partition) awaitCareful(seq uint64, done chan struct{}) {
	start := time.Now()
	defer func() { p.carefulWaited += time.Since(start) }()
	finished := false
	select {
	case <-done:
		finished = true
	case <-p.ctx.Done():
	}
	p.mu.Lock()
	if p.waitSeq == seq {
		p.waitSeq, p.waitDone = 0, nil
	}
	abandoned := p.waitAbandoned
	p.waitAbandoned = false
	p.mu.Unlock()
	defer func() { <-p.c.carefulSlot }()
	if finished && !abandoned && p.runWritten {
		ctx, cancel := p.c.opCtx(p.ctx)
		defer cancel()
		if err := p.c.runs.Delete(ctx, p.runKey); err != nil {
			p.c.br.log.Warn("natsbridge: removing a redelivery count failed", "partition", p.id, "err", err)
			return
		}
		p.runWritten = false
	}
}

// endCareful leaves careful redelivery: the events that follow were not
// under way at the last owner; the count written last is removed.
func (p *partition) endCareful() {
	p.carefulTo = 0
	if !p.runWritten {
		return
	}
	p.runWritten = false
	ctx, cancel := p.c.opCtx(p.ctx)
	defer cancel()
	if err := p.c.runs.Delete(ctx, p.runKey); err != nil {
		p.c.br.log.Warn("natsbridge: removing a redelivery count failed", "partition", p.id, "err", err)
	}
}

// parseRun reads "<seq> <count>".
func parseRun(v []byte) (seq, n uint64, ok bool) {
	a, b, found := strings.Cut(string(v), " ")
	if !found {
		return 0, 0, false
	}
	seq, err1 := strconv.ParseUint(a, 10, 64)
	n, err2 := strconv.ParseUint(b, 10, 64)
	return seq, n, err1 == nil && err2 == nil
}

// forget removes seq from the in-flight set; true when the set became
// empty while the partition is being handed back.
func (p *partition) forget(seq uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inflight, seq)
	if len(p.inflight) > 0 {
		return false
	}
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// seqKey carries a bridged event's stream sequence to its handlers.
type seqKey struct{}

// Sequence returns the JetStream stream sequence of the message a bridged
// event was delivered from, when ctx is (or derives from) the ctx of a
// handler running it. It is the same on every node and every redelivery
// and never reused in the stream, so handlers can use it to skip an event
// they already handled (delivery is at-least-once).
func Sequence(ctx context.Context) (uint64, bool) {
	seq, ok := ctx.Value(seqKey{}).(uint64)
	return seq, ok
}

// errMissedDelivery ends a fetch whose deliveries have a gap.
var errMissedDelivery = errors.New("natsbridge: a delivery of the fetch never arrived")

// missedDelivery reports whether the message of meta is not the delivery
// that follows the last one this node knows of (its consumer sequence
// skips one or more, or goes back: the consumer was reset by someone
// else, or a restarted server lost some of its state), and records it
// otherwise. The first delivery after a rewind is checked too: a pull
// request this node abandoned may still take deliveries after the
// rewind, and those are exactly the ones to notice.
func (p *partition) missedDelivery(meta *jetstream.MsgMetadata) bool {
	c := meta.Sequence.Consumer
	if c != p.lastDelivery+1 {
		return true
	}
	p.lastDelivery = c
	return false
}

// receivedAll reports whether every delivery of the partition's consumer
// reached this node: the consumer has delivered no further than the last
// delivery the fetcher received; on a consumer that acks cumulatively,
// also that nothing delivered is left unacked (an event delivered before
// a rewind whose redelivery never came, see acks.go). For release, once
// the fetcher has exited and the acks have been confirmed.
func (p *partition) receivedAll(ctx context.Context) (bool, error) {
	info, err := p.cons.Info(ctx)
	if err != nil {
		return false, err
	}
	if p.ackAll && info.NumAckPending > 0 {
		return false, nil
	}
	return info.Delivered.Consumer == p.lastDelivery, nil
}
