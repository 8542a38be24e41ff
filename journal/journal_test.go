package journal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imbus/eventbus/journal"
)

var quiet = journal.WithLogger(slog.New(slog.DiscardHandler))

func open(t *testing.T, dir string, opts ...journal.Option) *journal.Journal {
	t.Helper()
	j, err := journal.Open(dir, append([]journal.Option{quiet}, opts...)...)
	require.NoError(t, err)
	return j
}

func rec(i int) journal.Record {
	return journal.Record{Type: uint8(i % 7), Key: uint64(i * 31), Payload: []byte(fmt.Sprintf("payload-%d", i))}
}

func pending(t *testing.T, j *journal.Journal) []journal.Record {
	t.Helper()
	recs, err := j.Pending()
	require.NoError(t, err)
	return recs
}

func ids(recs []journal.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// segments returns the segment files of dir, oldest first.
func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	require.NoError(t, err)
	slices.Sort(m)
	return m
}

func TestAppendPendingAckReopen(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir)
	var want []journal.Record
	for i := range 10 {
		r := rec(i)
		id, err := j.Append(r)
		require.NoError(t, err)
		r.ID = id
		want = append(want, r)
	}
	first, err := j.Append(rec(10), rec(11), rec(12))
	require.NoError(t, err)
	for i := range 3 {
		r := rec(10 + i)
		r.ID = first + uint64(i)
		want = append(want, r)
	}
	for i := 1; i < len(want); i++ {
		require.Greater(t, want[i].ID, want[i-1].ID, "ids increase in append order")
	}
	require.Equal(t, want, pending(t, j))

	require.NoError(t, j.Ack(want[0].ID, want[5].ID, want[12].ID, 999999))
	require.NoError(t, j.Sync())
	want = slices.Delete(want, 12, 13)
	want = slices.Delete(want, 5, 6)
	want = want[1:]
	require.Equal(t, want, pending(t, j))
	require.NoError(t, j.Close())

	j = open(t, dir)
	defer j.Close()
	require.Equal(t, want, pending(t, j), "what is pending survives a reopen, in order")
	var got []journal.Record
	require.NoError(t, j.Replay(func(r journal.Record) error { got = append(got, r); return nil }))
	require.Equal(t, want, got)
	stop := errors.New("stop")
	n := 0
	require.ErrorIs(t, j.Replay(func(journal.Record) error { n++; return stop }), stop)
	require.Equal(t, 1, n)
}

func TestAppendCopiesPayload(t *testing.T) {
	j := open(t, t.TempDir())
	defer j.Close()
	p := []byte("abc")
	_, err := j.AppendAsync(journal.Record{Payload: p})
	require.NoError(t, err)
	p[0] = 'X'
	require.NoError(t, j.Sync())
	require.Equal(t, "abc", string(pending(t, j)[0].Payload))
}

func TestAppendAsyncThenAck(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir)
	var kept []uint64
	for i := range 100 {
		id, err := j.AppendAsync(rec(i))
		require.NoError(t, err)
		if i%3 == 0 {
			require.NoError(t, j.Ack(id)) // may be in the same batch as its append
		} else {
			kept = append(kept, id)
		}
	}
	require.NoError(t, j.Sync())
	require.Equal(t, kept, ids(pending(t, j)))
	require.NoError(t, j.Close())
	j = open(t, dir)
	defer j.Close()
	require.Equal(t, kept, ids(pending(t, j)))
}

// Many goroutines append (waiting and not), ack and set attempts at once;
// afterwards, and after a reopen, exactly the unacked records are pending.
func TestConcurrentAppendAck(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, journal.WithSegmentSize(64<<10))
	const workers, per = 32, 150
	var mu sync.Mutex
	want := map[uint64]string{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				payload := fmt.Sprintf("w%d-%d", w, i)
				r := journal.Record{Type: uint8(w), Key: uint64(w), Payload: []byte(payload)}
				var id uint64
				var err error
				if i%2 == 0 {
					id, err = j.Append(r)
				} else {
					id, err = j.AppendAsync(r)
				}
				if err != nil {
					errs <- err
					return
				}
				switch i % 4 {
				case 0, 1:
					if err := j.Ack(id); err != nil {
						errs <- err
						return
					}
				default:
					if err := j.SetAttempts(id, i%4); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					want[id] = payload
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	check := func(j *journal.Journal) {
		t.Helper()
		got := pending(t, j)
		require.Len(t, got, len(want))
		for i, r := range got {
			require.Equal(t, want[r.ID], string(r.Payload))
			require.Equal(t, r.Key, uint64(r.Type))
			if i > 0 {
				require.Greater(t, r.ID, got[i-1].ID)
			}
		}
	}
	require.NoError(t, j.Sync())
	check(j)
	st := j.Stats()
	require.Equal(t, len(want), st.Pending)
	appends := uint64(workers * per)
	t.Logf("%d appends in %d fsyncs", appends, st.Syncs)
	require.Less(t, st.Syncs, appends/2, "concurrent appends share fsyncs")
	require.NoError(t, j.Close())
	j = open(t, dir, journal.WithSegmentSize(64<<10))
	defer j.Close()
	check(j)
	for _, r := range pending(t, j) {
		require.Contains(t, []int{2, 3}, r.Attempts)
	}
}

// appendRecords appends rec(0) … rec(n-1), one Append each, and returns
// them with their ids.
func appendRecords(t *testing.T, j *journal.Journal, n int) []journal.Record {
	t.Helper()
	var want []journal.Record
	for i := range n {
		r := rec(i)
		id, err := j.Append(r)
		require.NoError(t, err)
		r.ID = id
		want = append(want, r)
	}
	return want
}

func TestTornTailCutAtEveryOffset(t *testing.T) {
	base := t.TempDir()
	// Build the journal once: 5 records, then one more in its own write.
	src := filepath.Join(base, "src")
	j := open(t, src)
	want := appendRecords(t, j, 5)
	require.NoError(t, j.Close())
	seg := segments(t, src)[0]
	before, err := os.ReadFile(seg)
	require.NoError(t, err)
	j = open(t, src)
	last := rec(5)
	last.ID, err = j.Append(last)
	require.NoError(t, err)
	require.NoError(t, j.Close())
	full, err := os.ReadFile(seg)
	require.NoError(t, err)
	require.Greater(t, len(full), len(before))
	require.Equal(t, before, full[:len(before)])

	for cut := len(before); cut <= len(full); cut++ {
		dir := filepath.Join(base, fmt.Sprint(cut))
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(seg)), full[:cut], 0o644))
		var logs bytes.Buffer
		j, err := journal.Open(dir, journal.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		require.NoError(t, err, "cut at %d", cut)
		got := pending(t, j)
		if cut == len(full) {
			require.Equal(t, append(slices.Clone(want), last), got)
			require.Empty(t, logs.String())
		} else {
			require.Equal(t, want, got, "cut at %d", cut)
			if cut > len(before) && cut != len(before)+8+9 { // not right after the reservation frame
				require.Contains(t, logs.String(), "torn tail", "cut at %d", cut)
			}
		}
		// The journal goes on: a new append lands after the cut, with a
		// new id, and survives a reopen.
		id, err := j.Append(rec(99))
		require.NoError(t, err)
		require.Greater(t, id, got[len(got)-1].ID)
		require.NoError(t, j.Close())
		j = open(t, dir)
		got2 := pending(t, j)
		require.Equal(t, append(got, journal.Record{ID: id, Type: rec(99).Type, Key: rec(99).Key, Payload: rec(99).Payload}), got2)
		require.NoError(t, j.Close())
	}
}

func TestBadCRCAtTailIsCut(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir)
	for i := range 3 {
		_, err := j.Append(rec(i))
		require.NoError(t, err)
	}
	require.NoError(t, j.Close())
	seg := segments(t, dir)[0]
	data, err := os.ReadFile(seg)
	require.NoError(t, err)
	data[len(data)-1] ^= 0xff // last payload byte of the last record
	require.NoError(t, os.WriteFile(seg, data, 0o644))
	var logs bytes.Buffer
	j, err = journal.Open(dir, journal.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	require.NoError(t, err)
	defer j.Close()
	require.Len(t, pending(t, j), 2)
	require.Contains(t, logs.String(), "checksum mismatch")
}

// firstRecordOffset is where the first frame of a segment written by one
// Append right after Open starts: the header, then a reservation frame.
const firstRecordOffset = 24 + 8 + 9

func TestCorruptMiddleIsAnError(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir)
	for i := range 3 {
		_, err := j.Append(rec(i))
		require.NoError(t, err)
	}
	require.NoError(t, j.Close())
	seg := segments(t, dir)[0]
	data, err := os.ReadFile(seg)
	require.NoError(t, err)
	n := binary.LittleEndian.Uint32(data[firstRecordOffset:])
	require.EqualValues(t, 1+8+1+8+4+len("payload-0"), n, "the first record is where the test expects it")
	data[firstRecordOffset+8+n-1] ^= 0x01
	require.NoError(t, os.WriteFile(seg, data, 0o644))

	_, err = journal.Open(dir, quiet)
	require.ErrorIs(t, err, journal.ErrCorrupt)
	var ce *journal.CorruptError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, seg, ce.File)
	require.EqualValues(t, firstRecordOffset, ce.Offset)
	require.Contains(t, err.Error(), seg)
	require.Contains(t, err.Error(), fmt.Sprint(firstRecordOffset))
	after, err := os.ReadFile(seg)
	require.NoError(t, err)
	require.Equal(t, data, after, "a failed Open changes nothing")

	// WithRepair cuts there instead.
	j, err = journal.Open(dir, quiet, journal.WithRepair())
	require.NoError(t, err)
	require.Empty(t, pending(t, j))
	require.NoError(t, j.Close())
}

func TestCorruptTailOfOlderSegmentIsAnError(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, journal.WithSegmentSize(4<<10))
	for i := range 60 {
		batch := make([]journal.Record, 10)
		for k := range batch {
			batch[k] = rec(10*i + k)
		}
		_, err := j.Append(batch...) // never acked: every segment stays
		require.NoError(t, err)
	}
	require.NoError(t, j.Close())
	segs := segments(t, dir)
	require.Greater(t, len(segs), 2)
	data, err := os.ReadFile(segs[0])
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(segs[0], data[:len(data)-3], 0o644)) // torn, but not the last segment
	_, err = journal.Open(dir, quiet)
	var ce *journal.CorruptError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, segs[0], ce.File)
	require.Less(t, ce.Offset, int64(len(data)))

	bad := filepath.Join(t.TempDir(), "hdr")
	j = open(t, bad)
	require.NoError(t, j.Close())
	s := segments(t, bad)[0]
	require.NoError(t, os.WriteFile(s, []byte("garbage, not a segment header"), 0o644))
	_, err = journal.Open(bad, quiet)
	require.ErrorAs(t, err, &ce)
	require.Equal(t, s, ce.File)
	require.EqualValues(t, 0, ce.Offset)
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, s := range segments(t, dir) {
		fi, err := os.Stat(s)
		require.NoError(t, err)
		n += fi.Size()
	}
	return n
}

// Writing 200 times the segment size, acking as it goes (one record stays
// pending all along, one is dead-lettered, one carries attempts), keeps the
// directory at a few segments.
func TestReclaimKeepsDiskBounded(t *testing.T) {
	dir := t.TempDir()
	const segSize = 16 << 10
	opts := []journal.Option{journal.WithSegmentSize(segSize)}
	j := open(t, dir, opts...)
	stuck, err := j.Append(journal.Record{Type: 1, Key: 1, Payload: []byte("stuck")})
	require.NoError(t, err)
	tried, err := j.Append(journal.Record{Type: 2, Key: 2, Payload: []byte("tried")})
	require.NoError(t, err)
	require.NoError(t, j.SetAttempts(tried, 4))
	dead, err := j.Append(journal.Record{Type: 3, Key: 3, Payload: []byte("dead")})
	require.NoError(t, err)
	require.NoError(t, j.DeadLetter(journal.DeadLetter{Record: journal.Record{ID: dead, Attempts: 3}, Handler: "h", Err: "boom"}))

	payload := bytes.Repeat([]byte("x"), 200)
	var maxSize int64
	var written int64
	batch := slices.Repeat([]journal.Record{{Payload: payload}}, 10)
	for written < 100*segSize {
		first, err := j.Append(batch...)
		require.NoError(t, err)
		for id := first; id < first+uint64(len(batch)); id++ {
			require.NoError(t, j.Ack(id))
		}
		written += int64(len(batch) * len(payload))
		maxSize = max(maxSize, j.Stats().Bytes)
	}
	require.NoError(t, j.Sync())
	t.Logf("wrote %d KiB; largest journal %d KiB; now %d segments", written>>10, maxSize>>10, j.Stats().Segments)
	require.Less(t, maxSize, int64(8*segSize), "disk use stays bounded")
	require.Less(t, dirSize(t, dir), int64(8*segSize))
	ahead := dirSize(t, dir) - j.Stats().Bytes // zeros written ahead of the active segment's end
	require.GreaterOrEqual(t, ahead, int64(0))
	require.LessOrEqual(t, ahead, int64(segSize/4))
	require.NoError(t, j.Close())

	j = open(t, dir, opts...)
	defer j.Close()
	got := pending(t, j)
	require.Len(t, got, 2)
	require.Equal(t, stuck, got[0].ID)
	require.Equal(t, "stuck", string(got[0].Payload))
	require.Equal(t, tried, got[1].ID)
	require.Equal(t, 4, got[1].Attempts)
	require.Equal(t, "tried", string(got[1].Payload))
	dls, err := j.DeadLetters()
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, dead, dls[0].ID)
	require.Equal(t, "dead", string(dls[0].Payload))
	require.Equal(t, "boom", dls[0].Err)
}

func TestIDsNeverReused(t *testing.T) {
	dir := t.TempDir()
	opts := []journal.Option{journal.WithSegmentSize(4 << 10)}
	var seen []uint64
	for round := range 4 {
		j := open(t, dir, opts...)
		for i := range 100 {
			var id uint64
			var err error
			if i%2 == 0 {
				id, err = j.Append(rec(i))
			} else {
				id, err = j.AppendAsync(rec(i))
			}
			require.NoError(t, err)
			if len(seen) > 0 {
				require.Greater(t, id, seen[len(seen)-1], "round %d", round)
			}
			seen = append(seen, id)
			require.NoError(t, j.Ack(id))
		}
		require.NoError(t, j.Close())
		j = open(t, dir, opts...)
		require.Empty(t, pending(t, j), "everything acked: nothing pending")
		require.Greater(t, j.Stats().NextID, seen[len(seen)-1])
		require.NoError(t, j.Close())
	}
	// Ids handed out by AppendAsync are never reused even if the records
	// never reach the disk: simulate by removing everything written after
	// the reservation, as a crash before the fsync would.
	j := open(t, dir, opts...)
	id, err := j.AppendAsync(rec(0))
	require.NoError(t, err)
	require.NoError(t, j.Close())
	for _, s := range segments(t, dir)[:len(segments(t, dir))-1] {
		require.NoError(t, os.Remove(s)) // only the newest segment: a full reclaim
	}
	j = open(t, dir, opts...)
	defer j.Close()
	id2, err := j.Append(rec(1))
	require.NoError(t, err)
	require.Greater(t, id2, id)
}

func TestDeadLettersRedrivePurge(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir)
	var recs []journal.Record
	for i := range 5 {
		r := rec(i)
		id, err := j.Append(r)
		require.NoError(t, err)
		r.ID = id
		recs = append(recs, r)
	}
	when := time.Date(2025, 5, 1, 12, 0, 0, 123, time.UTC)
	for _, i := range []int{1, 3, 4} {
		require.NoError(t, j.DeadLetter(journal.DeadLetter{Record: journal.Record{ID: recs[i].ID, Attempts: i},
			Handler: fmt.Sprintf("h%d", i), Err: fmt.Sprintf("err %d", i), Time: when}))
	}
	require.NoError(t, j.DeadLetter(journal.DeadLetter{Record: journal.Record{ID: 123456}})) // not pending: ignored
	require.NoError(t, j.Sync())
	wantDL := func(i int) journal.DeadLetter {
		r := recs[i]
		r.Attempts = i
		return journal.DeadLetter{Record: r, Handler: fmt.Sprintf("h%d", i), Err: fmt.Sprintf("err %d", i), Time: when}
	}
	checkDL := func(j *journal.Journal, want ...journal.DeadLetter) {
		t.Helper()
		got, err := j.DeadLetters()
		require.NoError(t, err)
		require.Len(t, got, len(want))
		if len(want) == 0 {
			return
		}
		for i := range want {
			require.True(t, want[i].Time.Equal(got[i].Time))
			got[i].Time = want[i].Time
		}
		require.Equal(t, want, got)
	}
	checkDL(j, wantDL(1), wantDL(3), wantDL(4))
	require.Equal(t, []uint64{recs[0].ID, recs[2].ID}, ids(pending(t, j)), "a dead letter is acked")
	require.NoError(t, j.Close())

	j = open(t, dir)
	checkDL(j, wantDL(1), wantDL(3), wantDL(4))
	require.Equal(t, []uint64{recs[0].ID, recs[2].ID}, ids(pending(t, j)))
	out, err := j.Redrive(recs[3].ID, 777)
	require.NoError(t, err)
	require.Len(t, out, 1)
	require.Greater(t, out[0].ID, recs[4].ID, "a re-driven record gets a new id")
	require.Equal(t, recs[3].Payload, out[0].Payload)
	require.Equal(t, recs[3].Type, out[0].Type)
	require.Equal(t, recs[3].Key, out[0].Key)
	require.Zero(t, out[0].Attempts)
	checkDL(j, wantDL(1), wantDL(4))
	require.Equal(t, []uint64{recs[0].ID, recs[2].ID, out[0].ID}, ids(pending(t, j)))
	require.NoError(t, j.Close())

	j = open(t, dir)
	checkDL(j, wantDL(1), wantDL(4))
	require.Equal(t, []uint64{recs[0].ID, recs[2].ID, out[0].ID}, ids(pending(t, j)))
	n, err := j.Purge(recs[4].ID, 9999)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	checkDL(j, wantDL(1))
	require.NoError(t, j.Close())

	j = open(t, dir)
	checkDL(j, wantDL(1))
	all, err := j.RedriveAll()
	require.NoError(t, err)
	require.Len(t, all, 1)
	checkDL(j)
	require.NoError(t, j.DeadLetter(journal.DeadLetter{Record: journal.Record{ID: all[0].ID}}))
	require.NoError(t, j.DeadLetter(journal.DeadLetter{Record: journal.Record{ID: recs[0].ID}}))
	require.NoError(t, j.Sync())
	dls, err := j.DeadLetters()
	require.NoError(t, err)
	require.Len(t, dls, 2)
	require.False(t, dls[0].Time.IsZero(), "zero Time means now")
	n, err = j.PurgeAll()
	require.NoError(t, err)
	require.Equal(t, 2, n)
	n, err = j.PurgeAll()
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, j.Close())

	j = open(t, dir)
	defer j.Close()
	checkDL(j)
	require.Equal(t, []uint64{recs[2].ID, out[0].ID}, ids(pending(t, j)))
}

func TestAttemptsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir)
	a, err := j.Append(rec(0))
	require.NoError(t, err)
	b, err := j.Append(rec(1))
	require.NoError(t, err)
	require.NoError(t, j.SetAttempts(a, 1))
	require.NoError(t, j.SetAttempts(a, 2))
	require.NoError(t, j.SetAttempts(999, 5)) // unknown: ignored
	require.NoError(t, j.Close())
	j = open(t, dir)
	got := pending(t, j)
	require.Equal(t, []uint64{a, b}, ids(got))
	require.Equal(t, 2, got[0].Attempts)
	require.Equal(t, 0, got[1].Attempts)
	require.NoError(t, j.SetAttempts(b, 7))
	require.NoError(t, j.Close())
	j = open(t, dir)
	defer j.Close()
	got = pending(t, j)
	require.Equal(t, 2, got[0].Attempts)
	require.Equal(t, 7, got[1].Attempts)
}

func TestSecondOpenFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b") // created if missing
	j := open(t, dir)
	_, err := journal.Open(dir, quiet)
	require.ErrorIs(t, err, journal.ErrLocked)
	require.Contains(t, err.Error(), dir)
	require.NoError(t, j.Close())
	j = open(t, dir)
	require.NoError(t, j.Close())
}

func TestErrorsAfterClose(t *testing.T) {
	j := open(t, t.TempDir())
	id, err := j.Append(rec(0))
	require.NoError(t, err)
	require.NoError(t, j.Close())
	require.ErrorIs(t, j.Close(), journal.ErrClosed)
	_, err = j.Append(rec(1))
	require.ErrorIs(t, err, journal.ErrClosed)
	_, err = j.AppendAsync(rec(1))
	require.ErrorIs(t, err, journal.ErrClosed)
	require.ErrorIs(t, j.Ack(id), journal.ErrClosed)
	require.ErrorIs(t, j.SetAttempts(id, 1), journal.ErrClosed)
	require.ErrorIs(t, j.DeadLetter(journal.DeadLetter{Record: journal.Record{ID: id}}), journal.ErrClosed)
	require.ErrorIs(t, j.Sync(), journal.ErrClosed)
	_, err = j.Pending()
	require.ErrorIs(t, err, journal.ErrClosed)
	require.ErrorIs(t, j.Replay(func(journal.Record) error { return nil }), journal.ErrClosed)
	_, err = j.DeadLetters()
	require.ErrorIs(t, err, journal.ErrClosed)
	_, err = j.Redrive(id)
	require.ErrorIs(t, err, journal.ErrClosed)
	_, err = j.PurgeAll()
	require.ErrorIs(t, err, journal.ErrClosed)
	require.True(t, strings.HasPrefix(journal.ErrClosed.Error(), "journal: "))
}

func TestTooLarge(t *testing.T) {
	j := open(t, t.TempDir())
	defer j.Close()
	_, err := j.Append(journal.Record{Payload: make([]byte, journal.MaxPayload+1)})
	require.ErrorIs(t, err, journal.ErrTooLarge)
	assert.Empty(t, pending(t, j))
}

func TestDeadLetterLongTextsAreClipped(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir)
	id, err := j.Append(rec(0))
	require.NoError(t, err)
	long := strings.Repeat("é", 100<<10) // 200 KiB of two-byte runes
	require.NoError(t, j.DeadLetter(journal.DeadLetter{Record: journal.Record{ID: id}, Handler: long, Err: long}))
	require.NoError(t, j.Close())
	j = open(t, dir)
	defer j.Close()
	dls, err := j.DeadLetters()
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.LessOrEqual(t, len(dls[0].Handler), 4<<10)
	require.LessOrEqual(t, len(dls[0].Err), 60<<10)
	require.True(t, strings.HasSuffix(dls[0].Err, "é…"), "cut on a rune boundary, marked")
}

// Replay runs while other goroutines append, ack and so make the journal
// roll, copy forward and delete segments under it: every record it sees
// carries its own payload, and nothing fails.
func TestReplayWhileWriting(t *testing.T) {
	j := open(t, t.TempDir(), journal.WithSegmentSize(4<<10))
	defer j.Close()
	payload := func(id uint64) []byte { return fmt.Appendf(nil, "record-%d-%s", id, strings.Repeat("x", int(id%50))) }
	var kept []uint64 // never acked: copied forward again and again
	for range 20 {
		id, err := j.AppendAsync(journal.Record{})
		require.NoError(t, err)
		require.NoError(t, j.SetAttempts(id, 1))
		kept = append(kept, id)
	}
	// Payloads depend on the id, so write them after the ids are known:
	// ack the placeholders and append real ones.
	require.NoError(t, j.Ack(kept...))
	kept = kept[:0]
	for range 20 {
		next := j.Stats().NextID
		id, err := j.Append(journal.Record{Payload: payload(next)})
		require.NoError(t, err)
		require.Equal(t, next, id, "one writer: NextID is the next id")
		kept = append(kept, id)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				recs := make([]journal.Record, 4)
				first, err := j.Append(recs...) // placeholders: payload checked by id below
				if err != nil {
					errs <- err
					return
				}
				ids := []uint64{first, first + 1, first + 2, first + 3}
				if err := j.Ack(ids...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	start := j.Stats().NextID
	for replays := 0; replays < 30 || j.Stats().NextID-start < 3000; replays++ { // ~30 segments roll meanwhile
		seen := 0
		err := j.Replay(func(r journal.Record) error {
			if len(r.Payload) > 0 {
				if !bytes.Equal(r.Payload, payload(r.ID)) {
					return fmt.Errorf("record %d: payload %q", r.ID, r.Payload)
				}
				seen++
			}
			return nil
		})
		require.NoError(t, err)
		require.Equal(t, len(kept), seen, "the kept records are always there")
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, j.Sync())
	got := pending(t, j)
	require.Len(t, got, len(kept))
	for i, r := range got {
		require.Equal(t, kept[i], r.ID)
		require.Equal(t, payload(r.ID), r.Payload)
	}
	require.Greater(t, j.Stats().Syncs, uint64(10))
}

// One producer appends and acks each record before the next: the acks ride
// along with the next append's fsync (no fsync of their own), Sync and
// Close make them durable.
func TestAcksHaveNoFsyncOfTheirOwn(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir)
	const n = 50
	before := j.Stats().Syncs
	var last uint64
	for i := range n {
		id, err := j.Append(rec(i))
		require.NoError(t, err)
		require.NoError(t, j.Ack(id))
		for j.Stats().Pending != 0 { // the committer has taken the ack on its own, as after a bus handler
			runtime.Gosched()
		}
		last = id
	}
	syncs := j.Stats().Syncs - before
	require.LessOrEqual(t, syncs, uint64(n+n/5), "fsyncs for %d appends, each acked before the next", n)
	require.NoError(t, j.Sync())
	require.Empty(t, pending(t, j))

	id, err := j.Append(rec(n))
	require.NoError(t, err)
	require.NoError(t, j.Ack(id)) // written by Close, fsync'd before Close returns
	require.NoError(t, j.Close())
	j = open(t, dir)
	defer j.Close()
	require.Empty(t, pending(t, j), "Close wrote and synced the last ack")
	require.Greater(t, j.Stats().NextID, last)
}
