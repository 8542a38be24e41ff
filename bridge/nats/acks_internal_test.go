package natsbridge

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// seqMsg is a message that knows only its stream sequence.
type seqMsg struct {
	jetstream.Msg
	seq uint64
	mu  *sync.Mutex
	out *[]uint64
}

func (m seqMsg) Ack() error {
	m.mu.Lock()
	*m.out = append(*m.out, m.seq)
	m.mu.Unlock()
	return nil
}

// TestAckQueueNeverAcksPastUnfinished: events handed over in stream
// order (with redeliveries of lower sequences mixed in, as after a
// rewind) and finished in random order: the cumulative ack never passes
// an event that has not finished once (a redelivery of an event that
// finished before is a duplicate, at-least-once), and reaches the last event once all have
// finished.
func TestAckQueueNeverAcksPastUnfinished(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var a ackQueue
		unfinished := map[uint64]bool{}
		finishedOnce := map[uint64]bool{}
		var next uint64 = 1
		var acked uint64
		var mu sync.Mutex
		var out []uint64
		for step := 0; step < 400; step++ {
			switch {
			case r.IntN(3) > 0 || len(unfinished) == 0: // hand one over
				seq := next
				if r.IntN(10) == 0 && next > 5 {
					seq = next - 1 - uint64(r.IntN(5)) // a redelivery of a lower one
				} else {
					next++
				}
				unfinished[seq] = true
				a.add(seq, seqMsg{seq: seq, mu: &mu, out: &out}, false)
			default: // finish a random one
				var pick uint64
				n := r.IntN(len(unfinished))
				for s := range unfinished {
					if n == 0 {
						pick = s
						break
					}
					n--
				}
				delete(unfinished, pick)
				finishedOnce[pick] = true
				a.finish(pick, nil)
			}
			if a.ackTo != nil {
				acked = max(acked, a.ackTo.(seqMsg).seq)
			}
			for s := range unfinished {
				if !finishedOnce[s] && s <= acked {
					t.Fatalf("round %d: ack of %d with %d never finished", round, acked, s)
				}
			}
		}
		for s := range unfinished {
			a.finish(s, nil)
		}
		require.Len(t, a.q, 0, "round %d: everything acked", round)
	}
}

// TestAckQueueDeadLetterNotHandedOver: a dead letter of an event that
// never reached the bus is covered by the cumulative ack once the events
// before it have finished; a finish of an event already dead-lettered is
// ignored.
func TestAckQueueDeadLetterNotHandedOver(t *testing.T) {
	var a ackQueue
	var mu sync.Mutex
	var out []uint64
	msg := func(s uint64) jetstream.Msg { return seqMsg{seq: s, mu: &mu, out: &out} }
	a.add(1, msg(1), false)
	require.False(t, a.finish(2, msg(2)), "2 dead-lettered while 1 runs: no ack")
	require.True(t, a.finish(1, nil))
	require.Equal(t, uint64(2), a.ackTo.(seqMsg).seq)
	require.False(t, a.finish(2, nil), "a finish after its dead letter is ignored")
}

// TestAckQueueAcksOnlyDeliveriesOfTheCurrentEpoch: after a rewind (a new
// epoch) a message delivered before it never carries an ack (the server
// would misread its delivery sequence); the redelivery of an event in the
// bus replaces it, and the redelivery of an event that finished before
// its ack is acked with that redelivery.
func TestAckQueueAcksOnlyDeliveriesOfTheCurrentEpoch(t *testing.T) {
	var a ackQueue
	var mu sync.Mutex
	var out, outFresh []uint64
	msg := func(s uint64) jetstream.Msg { return seqMsg{seq: s, mu: &mu, out: &out} }
	fresh := func(s uint64) jetstream.Msg { return seqMsg{seq: s, mu: &mu, out: &outFresh} }
	a.add(1, msg(1), false)
	a.add(2, msg(2), false)
	a.add(3, msg(3), false)
	require.False(t, a.finish(2, nil), "2 finished behind 1")
	a.epoch++ // rewind
	require.True(t, a.finished(2))
	require.False(t, a.finished(1))
	require.False(t, a.redelivered(1, fresh(1)), "1 still in the bus: its entry takes the new message")
	require.True(t, a.finish(1, nil), "1 and 2 finished")
	require.True(t, a.ackTo == fresh(1), "1 is acked with its redelivery; 2 waits for its own")
	require.Equal(t, uint64(2), a.finishedTo)
	require.True(t, a.redelivered(2, fresh(2)), "the redelivery of 2 makes its ack due")
	require.True(t, a.ackTo == fresh(2))
	require.False(t, a.finish(3, nil), "3 was delivered before the rewind: no ack with its message")
	require.Empty(t, a.q[a.head:])
	require.True(t, a.redelivered(3, fresh(3)))
	require.True(t, a.ackTo == fresh(3))
	require.False(t, a.redelivered(2, fresh(2)), "acked already")
}
