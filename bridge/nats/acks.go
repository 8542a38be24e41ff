package natsbridge

import (
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Cumulative acks. On a stream with limits retention (a work-queue
// stream requires an ack per message) a partition's consumer made by
// this bridge uses JetStream's AckAll policy: an ack of stream sequence s acks every
// event of the partition up to s. That is one ack per run of finished
// events instead of one per event, and it lets the server move the
// consumer's ack floor without bookkeeping per message. It is safe only
// for s below every unfinished event, so the partition keeps the events
// it handed to the bus in stream order (ackQueue) and acks the last of
// the finished prefix. An event given up at a bus Close deadline is never
// finished: the prefix stops before it, and it is redelivered with
// everything after it (the partition is dirty). A dead letter counts as
// finished. Acks are coalesced for ackDelay, so a busy partition sends a
// few hundred acks a second, not one per event.
//
// An ack names the stream sequence and the consumer's delivery sequence
// of the message it acks, and the server takes an AckAll ack's delivery
// sequence as its new delivery ack floor: every later ack with a
// delivery sequence at or below it is ignored. A rewind (ResetConsumer)
// restarts the delivery sequence at 1, so an ack carrying a delivery
// from before the rewind would raise that floor above the deliveries
// that follow, and the server would ignore their acks until AckWait
// brought the events back, to be handled again after later ones; sent
// before the consumer has redelivered its sequence, the server ignores
// it, and the event, finished, came back to be handled again. So every
// rewind starts an epoch: the acks due are sent first and confirmed by
// the server (syncAcks, so that none is still queued on the server when
// it resets), and from then on only a delivery of the current epoch is
// acked. An event delivered before the rewind that is still in the bus,
// or finished and not yet acked, is delivered again (the rewind
// redelivers everything above the ack floor, in order): that delivery
// is dropped (Stats.Duplicates) and replaces the message the ack will
// carry. A partition that stops before those redeliveries come back has
// unacked events and is handed back dirty.
//
// A consumer made before (AckExplicit) keeps its policy: then every
// event is acked (or nak'd, or terminated) on its own, as before; the
// server finds the delivery sequence of such an ack in its own record.

// ackDelay is how long a partition gathers finished events before it
// acks them together.
const ackDelay = 2 * time.Millisecond

// ackEntry is one event handed to the bus (or dead-lettered) and not yet
// acked cumulatively; epoch: the ackQueue epoch m was delivered in.
type ackEntry struct {
	seq   uint64
	m     jetstream.Msg
	epoch uint64
	done  bool
}

// ackQueue is a partition's events not yet acked, ascending by stream
// sequence. Guarded by partition.mu.
type ackQueue struct {
	q    []ackEntry
	head int
	// epoch counts the rewinds of the consumer: only a message delivered
	// in the current epoch may carry an ack.
	epoch uint64
	// finishedTo is the last stream sequence of the finished prefix
	// (acked, due, or waiting for a delivery of the current epoch);
	// acked is the highest one whose ack is due or was sent.
	finishedTo, acked uint64
	// ackTo is the message of stream sequence acked when its ack is due
	// (a delivery of the current epoch); scheduled: a flush is due
	// within ackDelay.
	ackTo     jetstream.Msg
	scheduled bool
}

// find returns the index of seq in the queue, and whether it is there.
func (a *ackQueue) find(seq uint64) (int, bool) {
	i, ok := slices.BinarySearchFunc(a.q[a.head:], seq, func(e ackEntry, s uint64) int {
		switch {
		case e.seq < s:
			return -1
		case e.seq > s:
			return 1
		}
		return 0
	})
	return a.head + i, ok
}

// add records seq, delivered in the current epoch, as handed to the bus
// (done: dead-lettered instead).
func (a *ackQueue) add(seq uint64, m jetstream.Msg, done bool) {
	e := ackEntry{seq: seq, m: m, epoch: a.epoch, done: done}
	if n := len(a.q); n == a.head || a.q[n-1].seq < seq {
		a.q = append(a.q, e)
		return
	}
	i, ok := a.find(seq)
	if ok { // delivered again after it finished, before its ack
		a.q[i] = e
		return
	}
	a.q = slices.Insert(a.q, i, e)
}

// finished reports whether seq finished and is not acked yet, or is
// covered by the finished prefix: a delivery of it is a redelivery of an
// event this partition has finished.
func (a *ackQueue) finished(seq uint64) bool {
	if seq <= a.finishedTo {
		return true
	}
	if n := len(a.q); n == a.head || a.q[n-1].seq < seq {
		return false // the usual case: a new event
	}
	i, ok := a.find(seq)
	return ok && a.q[i].done
}

// redelivered takes m, a delivery of seq in the current epoch while seq
// is in the bus or finished, as the message its ack will carry. It
// reports whether an ack became due.
func (a *ackQueue) redelivered(seq uint64, m jetstream.Msg) bool {
	if i, ok := a.find(seq); ok {
		a.q[i].m, a.q[i].epoch = m, a.epoch
		return false
	}
	if seq <= a.finishedTo {
		return a.ackUpTo(seq, m)
	}
	return false
}

// ackUpTo makes the ack of seq with m due, unless one at or past seq is
// due or sent already.
func (a *ackQueue) ackUpTo(seq uint64, m jetstream.Msg) bool {
	if seq <= a.acked {
		return false
	}
	a.acked, a.ackTo = seq, m
	return true
}

// finish marks seq finished (m: its message, to add it when missing, as
// for a dead letter of an event that was never handed to the bus; nil:
// ignore a missing seq, as for an event already dead-lettered) and moves
// the finished prefix along. It reports whether an ack became due.
func (a *ackQueue) finish(seq uint64, m jetstream.Msg) bool {
	i, ok := a.find(seq)
	switch {
	case ok:
		a.q[i].done = true
		if m != nil {
			a.q[i].m, a.q[i].epoch = m, a.epoch // a later delivery of it
		}
	case m != nil:
		a.add(seq, m, true)
	default:
		return false
	}
	due := false
	for a.head < len(a.q) && a.q[a.head].done {
		e := a.q[a.head]
		a.finishedTo = max(a.finishedTo, e.seq)
		if e.epoch == a.epoch && a.ackUpTo(e.seq, e.m) {
			due = true
		} // else: acked when its redelivery comes (see redelivered)
		a.q[a.head] = ackEntry{}
		a.head++
	}
	if a.head == len(a.q) {
		a.q, a.head = a.q[:0], 0
	} else if a.head > 1024 && a.head > len(a.q)/2 {
		n := copy(a.q, a.q[a.head:])
		clear(a.q[n:])
		a.q, a.head = a.q[:n], 0
	}
	return due
}

// schedule reports whether the caller must start a flush for an ack that
// became due (due), and records that one is under way.
func (a *ackQueue) schedule(due bool) bool {
	if !due || a.scheduled {
		return false
	}
	a.scheduled = true
	return true
}

// takeDue returns the message of the ack that is due (nil: none) and
// clears it, with the scheduled flush: the caller sends it.
func (a *ackQueue) takeDue() jetstream.Msg {
	m := a.ackTo
	a.ackTo, a.scheduled = nil, false
	return m
}

// settle is finish for partition p: it schedules the coalesced ack.
func (p *partition) settle(seq uint64, m jetstream.Msg) {
	p.mu.Lock()
	start := p.acks.schedule(p.acks.finish(seq, m))
	p.mu.Unlock()
	if start {
		time.AfterFunc(ackDelay, p.flushAcks)
	}
}

// flushAcks sends the cumulative ack that is due, if any. When it
// returns, every ack due before the call has been handed to the
// connection (a concurrent flush holds ackMu while it sends).
func (p *partition) flushAcks() {
	p.ackMu.Lock()
	defer p.ackMu.Unlock()
	p.mu.Lock()
	m := p.acks.takeDue()
	p.mu.Unlock()
	if m == nil {
		return
	}
	if err := m.Ack(); err != nil {
		p.c.br.stats.ackError.Add(1)
		p.c.br.log.Warn("natsbridge: ack failed: the events will be redelivered", "partition", p.id, "err", err)
		return
	}
	p.lastAck, p.unconfirmed = m, true
}

// syncAcks sends the cumulative ack that is due and waits until the
// server has processed it, or, with none due, until it has processed the
// last one sent: acks of a consumer are processed in order, after the
// server has replied to an API request such as a reset, so an ack still
// queued there when a rewind resets the consumer would be applied to the
// reset consumer. rewind: a rewind follows; the messages delivered so
// far may no longer carry an ack (a new epoch begins).
func (p *partition) syncAcks(ctx context.Context, rewind bool) error {
	p.ackMu.Lock()
	defer p.ackMu.Unlock()
	p.mu.Lock()
	m := p.acks.takeDue()
	if rewind {
		p.acks.epoch++
	}
	p.mu.Unlock()
	if m == nil {
		if !p.unconfirmed {
			return nil
		}
		m = p.lastAck // acked again: a no-op the server confirms
	}
	// A request on the ack subject: the server replies once it has
	// processed the ack (the client's DoubleAck refuses a message acked
	// before).
	if _, err := p.c.br.js.Conn().RequestWithContext(ctx, m.Reply(), []byte("+ACK")); err != nil {
		p.c.br.stats.ackError.Add(1)
		return err
	}
	p.lastAck, p.unconfirmed = m, false
	return nil
}

// acksSettled reports whether no cumulative ack is waiting to be sent.
func (p *partition) acksSettled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acks.ackTo == nil
}
