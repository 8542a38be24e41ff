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
