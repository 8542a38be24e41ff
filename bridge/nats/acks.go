package natsbridge

import (
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
// A consumer made before (AckExplicit) keeps its policy: then every
// event is acked (or nak'd, or terminated) on its own, as before.

// ackDelay is how long a partition gathers finished events before it
// acks them together.
const ackDelay = 2 * time.Millisecond

// ackEntry is one event handed to the bus (or dead-lettered) and not yet
// acked cumulatively.
type ackEntry struct {
	seq  uint64
	m    jetstream.Msg
	done bool
}

// ackQueue is a partition's events not yet acked, ascending by stream
// sequence. Guarded by partition.mu.
type ackQueue struct {
	q    []ackEntry
	head int
	// ackTo is the last finished message of the prefix, not acked yet;
	// scheduled: an ack is due within ackDelay.
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

// add records seq as handed to the bus (done: dead-lettered instead).
func (a *ackQueue) add(seq uint64, m jetstream.Msg, done bool) {
	if n := len(a.q); n == a.head || a.q[n-1].seq < seq {
		a.q = append(a.q, ackEntry{seq: seq, m: m, done: done})
		return
	}
	i, ok := a.find(seq)
	if ok { // delivered again after it finished, before its ack
		a.q[i] = ackEntry{seq: seq, m: m, done: done}
		return
	}
	a.q = slices.Insert(a.q, i, ackEntry{seq: seq, m: m, done: done})
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
			a.q[i].m = m // a later delivery of it
		}
	case m != nil:
		a.add(seq, m, true)
	default:
		return false
	}
	moved := false
	for a.head < len(a.q) && a.q[a.head].done {
		a.ackTo = a.q[a.head].m
		a.q[a.head] = ackEntry{}
		a.head++
		moved = true
	}
	if a.head == len(a.q) {
		a.q, a.head = a.q[:0], 0
	} else if a.head > 1024 && a.head > len(a.q)/2 {
		n := copy(a.q, a.q[a.head:])
		clear(a.q[n:])
		a.q, a.head = a.q[:n], 0
	}
	return moved
}

// settle is finish for partition p: it schedules the coalesced ack.
func (p *partition) settle(seq uint64, m jetstream.Msg) {
	p.mu.Lock()
	due := p.acks.finish(seq, m) && !p.acks.scheduled
	if due {
		p.acks.scheduled = true
	}
	p.mu.Unlock()
	if due {
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
	m := p.acks.ackTo
	p.acks.ackTo, p.acks.scheduled = nil, false
	p.mu.Unlock()
	if m == nil {
		return
	}
	if err := m.Ack(); err != nil {
		p.c.br.stats.ackError.Add(1)
		p.c.br.log.Warn("natsbridge: ack failed: the events will be redelivered", "partition", p.id, "err", err)
	}
}

// acksSettled reports whether no cumulative ack is waiting to be sent.
func (p *partition) acksSettled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acks.ackTo == nil
}
