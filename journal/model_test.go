package journal_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/imbus/eventbus/journal"
)

// TestModel runs random operations against the journal and an in-memory
// model, with tiny segments so that rolls, copies forward and out-of-order
// segment deletion happen all the time, and reopens now and then. What is
// pending and what is dead-lettered must always match the model.
func TestModel(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { runModel(t, seed, 800) })
	}
}

func runModel(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 42))
	dir := t.TempDir()
	opts := []journal.Option{journal.WithSegmentSize(4 << 10)}
	j := open(t, dir, opts...)
	defer func() { j.Close() }()
	pend := map[uint64]journal.Record{}
	dead := map[uint64]journal.DeadLetter{}
	var lastID uint64
	pick := func(m map[uint64]journal.Record) (uint64, bool) {
		if len(m) == 0 {
			return 0, false
		}
		ks := slices.Sorted(maps.Keys(m))
		return ks[rng.IntN(len(ks))], true
	}
	pickDead := func() (uint64, bool) {
		if len(dead) == 0 {
			return 0, false
		}
		ks := slices.Sorted(maps.Keys(dead))
		return ks[rng.IntN(len(ks))], true
	}
	check := func(step int) {
		t.Helper()
		require.NoError(t, j.Sync())
		got := pending(t, j)
		want := make([]journal.Record, 0, len(pend))
		for _, id := range slices.Sorted(maps.Keys(pend)) {
			want = append(want, pend[id])
		}
		require.Equal(t, want, got, "step %d: pending", step)
		dls, err := j.DeadLetters()
		require.NoError(t, err)
		require.Len(t, dls, len(dead), "step %d: dead letters", step)
		for _, d := range dls {
			w := dead[d.ID]
			require.True(t, w.Time.Equal(d.Time))
			d.Time = w.Time
			require.Equal(t, w, d, "step %d: dead letter %d", step, d.ID)
		}
		st := j.Stats()
		require.Equal(t, len(pend), st.Pending)
		require.Equal(t, len(dead), st.DeadLetters)
	}
	for step := range steps {
		switch r := rng.IntN(100); {
		case r < 40: // append 1–3 records, waiting or not
			n := 1 + rng.IntN(3)
			recs := make([]journal.Record, n)
			for i := range recs {
				recs[i] = journal.Record{Type: uint8(rng.IntN(256)), Key: rng.Uint64(),
					Payload: []byte(fmt.Sprintf("s%d-%d-%s", step, i, make([]byte, rng.IntN(300))))}
			}
			var first uint64
			var err error
			if rng.IntN(4) == 0 {
				first, err = j.Append(recs...)
			} else {
				first, err = j.AppendAsync(recs...)
			}
			require.NoError(t, err)
			require.Greater(t, first, lastID, "ids increase, never reused")
			for i, r := range recs {
				r.ID = first + uint64(i)
				pend[r.ID] = r
			}
			lastID = first + uint64(n) - 1
		case r < 65:
			if id, ok := pick(pend); ok {
				require.NoError(t, j.Ack(id))
				delete(pend, id)
			}
		case r < 75:
			if id, ok := pick(pend); ok {
				n := rng.IntN(10)
				require.NoError(t, j.SetAttempts(id, n))
				rec := pend[id]
				rec.Attempts = n
				pend[id] = rec
			}
		case r < 83:
			if id, ok := pick(pend); ok {
				d := journal.DeadLetter{Record: journal.Record{ID: id, Attempts: rng.IntN(5)},
					Handler: fmt.Sprint("h", step), Err: fmt.Sprint("e", step), Time: time.Unix(int64(step), 7)}
				require.NoError(t, j.DeadLetter(d))
				full := pend[id]
				full.Attempts = d.Attempts
				d.Record = full
				dead[id] = d
				delete(pend, id)
			}
		case r < 88:
			if id, ok := pickDead(); ok {
				out, err := j.Redrive(id)
				require.NoError(t, err)
				require.Len(t, out, 1)
				require.Greater(t, out[0].ID, lastID)
				lastID = out[0].ID
				d := dead[id]
				require.Equal(t, d.Payload, out[0].Payload)
				pend[out[0].ID] = journal.Record{ID: out[0].ID, Type: d.Type, Key: d.Key, Payload: d.Payload}
				delete(dead, id)
			}
		case r < 91:
			if id, ok := pickDead(); ok {
				n, err := j.Purge(id)
				require.NoError(t, err)
				require.Equal(t, 1, n)
				delete(dead, id)
			}
		case r < 96:
			check(step)
		default:
			require.NoError(t, j.Close())
			j = open(t, dir, opts...)
			check(step)
			require.Greater(t, j.Stats().NextID, lastID)
		}
	}
	check(steps)
	// Ack everything and purge the list: the journal shrinks to its newest
	// segments.
	require.NoError(t, j.Ack(slices.Collect(maps.Keys(pend))...))
	_, err := j.PurgeAll()
	require.NoError(t, err)
	clear(pend)
	clear(dead)
	for range 20 { // push a few segments through so reclamation runs
		_, err := j.Append(journal.Record{Payload: make([]byte, 1024)})
		require.NoError(t, err)
		first, err := j.Append(journal.Record{Payload: make([]byte, 1024)})
		require.NoError(t, err)
		require.NoError(t, j.Ack(first-1, first))
	}
	check(steps + 1)
	require.LessOrEqual(t, j.Stats().Segments, 3, "everything acked: old segments are gone")
	require.NoError(t, j.Close())
	j = open(t, dir, opts...)
	check(steps + 2)
}
