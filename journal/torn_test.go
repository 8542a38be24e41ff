package journal_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/imbus/eventbus/journal"
)

// TestTornRecordHoldingFrameBytesIsATornTail writes a record whose payload
// is made of well-formed frames (the journal's own bytes, copied from its
// segment: user data can be anything), then tears that record's write at
// every offset, as a kill -9 can. Every cut must open as a torn tail: the
// record is dropped with a warning, the records before it are kept, and
// the journal takes new appends. The same cut in an older segment is a
// *CorruptError.
func TestTornRecordHoldingFrameBytesIsATornTail(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	j := open(t, src)
	want := appendRecords(t, j, 5)
	require.NoError(t, j.Close())
	seg := segments(t, src)[0]
	before, err := os.ReadFile(seg)
	require.NoError(t, err)

	// The payload: every frame written so far, twice, then the last one
	// alone: exact copies of frames that were valid where they were.
	frames := before[24:]
	lastFrame := lastFrameOf(t, frames)
	payload := slices.Concat(frames, frames, lastFrame)

	j = open(t, src)
	evil := journal.Record{Type: 3, Key: 7, Payload: payload}
	evil.ID, err = j.Append(evil)
	require.NoError(t, err)
	require.NoError(t, j.Close())
	full, err := os.ReadFile(seg)
	require.NoError(t, err)
	require.Equal(t, before, full[:len(before)])
	at := bytes.Index(full[len(before):], payload)
	require.Positive(t, at, "the payload is written as given")
	payloadAt := len(before) + at

	for cut := payloadAt; cut < len(full); cut++ {
		dir := filepath.Join(base, fmt.Sprint(cut))
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(seg)), full[:cut], 0o644))
		var logs bytes.Buffer
		j, err := journal.Open(dir, journal.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		require.NoError(t, err, "cut at %d of the record's payload", cut-payloadAt)
		require.Equal(t, want, pending(t, j), "cut at %d", cut)
		require.Contains(t, logs.String(), "torn tail", "cut at %d", cut)
		id, err := j.Append(rec(99))
		require.NoError(t, err)
		require.Greater(t, id, evil.ID, "ids are never reused")
		require.NoError(t, j.Close())
	}

	// The same cut in a segment that is not the last is corruption: that
	// segment was complete on disk before the next one was created.
	cut := payloadAt + len(payload)/2
	dir := filepath.Join(base, "older")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(seg)), full[:cut], 0o644))
	other := filepath.Join(base, "other")
	j = open(t, other)
	require.NoError(t, j.Close())
	next, err := os.ReadFile(segments(t, other)[0])
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "0000000000000002.seg"), next, 0o644))
	_, err = journal.Open(dir, quiet)
	var ce *journal.CorruptError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, filepath.Join(dir, filepath.Base(seg)), ce.File)
	require.Less(t, ce.Offset, int64(cut))
}

// lastFrameOf returns the last frame of frames (back to back, each a
// length, a checksum and a body of that length).
func lastFrameOf(t *testing.T, frames []byte) []byte {
	t.Helper()
	var last []byte
	for off := 0; off < len(frames); {
		n := int(binary.LittleEndian.Uint32(frames[off:]))
		require.LessOrEqual(t, off+8+n, len(frames))
		last = frames[off : off+8+n]
		off += 8 + n
	}
	return last
}

// v1Segment encodes a version 1 segment (each frame checked on its own,
// not chained) holding append frames of recs, ids from 1.
func v1Segment(recs []journal.Record) []byte {
	c := crc32.MakeTable(crc32.Castagnoli)
	b := make([]byte, 24)
	copy(b, "EBJ1")
	binary.LittleEndian.PutUint32(b[4:], 1)
	binary.LittleEndian.PutUint64(b[8:], 1<<20)
	binary.LittleEndian.PutUint32(b[16:], crc32.Checksum(b[:16], c))
	for i, r := range recs {
		body := []byte{1}
		body = binary.LittleEndian.AppendUint64(body, uint64(i+1))
		body = append(body, r.Type)
		body = binary.LittleEndian.AppendUint64(body, r.Key)
		body = binary.LittleEndian.AppendUint32(body, uint32(r.Attempts))
		body = append(body, r.Payload...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
		b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(body, c))
		b = append(b, body...)
	}
	return b
}

// TestVersion1SegmentsAreRead opens a directory written in the previous
// format (frames checked one by one): its records are pending, a torn
// tail of it is cut, new records go to a new segment in the current
// format, and the old segment is deleted once its records are acked.
func TestVersion1SegmentsAreRead(t *testing.T) {
	var want []journal.Record
	for i := range 4 {
		r := rec(i)
		r.ID = uint64(i + 1)
		want = append(want, r)
	}
	data := v1Segment(want)
	for _, cut := range []int{len(data), len(data) - 3} {
		dir := t.TempDir()
		first := filepath.Join(dir, "0000000000000001.seg")
		require.NoError(t, os.WriteFile(first, data[:cut], 0o644))
		j := open(t, dir)
		got := pending(t, j)
		if cut == len(data) {
			require.Equal(t, want, got)
		} else {
			require.Equal(t, want[:3], got, "the torn last record is cut")
		}
		id, err := j.Append(rec(10))
		require.NoError(t, err)
		require.GreaterOrEqual(t, id, uint64(1<<20), "ids continue from the old reservation")
		require.NoError(t, j.Close())
		segs := segments(t, dir)
		require.Len(t, segs, 2, "new frames go to a new segment")
		after, err := os.ReadFile(first)
		require.NoError(t, err)
		require.LessOrEqual(t, len(after), cut, "nothing is written to the old segment")
		require.Equal(t, data[:len(after)], after)

		j = open(t, dir, journal.WithSegmentSize(4<<10))
		require.Equal(t, append(slices.Clone(got), journal.Record{ID: id, Type: rec(10).Type, Key: rec(10).Key, Payload: rec(10).Payload}), pending(t, j))
		require.NoError(t, j.Ack(ids(got)...))
		for i := 0; len(segments(t, dir)) < 3 || slices.Contains(segments(t, dir), first); i++ {
			_, err := j.Append(journal.Record{Payload: make([]byte, 512)}) // fill segments until the old one is reclaimed
			require.NoError(t, err)
			require.Less(t, i, 100, "the version 1 segment is reclaimed")
		}
		require.NoError(t, j.Close())
	}
}

// TestUnknownVersionIsAClearError: a segment of a format this journal
// does not know is refused, saying which version and what to do.
func TestUnknownVersionIsAClearError(t *testing.T) {
	dir := t.TempDir()
	data := v1Segment(nil)
	binary.LittleEndian.PutUint32(data[4:], 9)
	binary.LittleEndian.PutUint32(data[16:], crc32.Checksum(data[:16], crc32.MakeTable(crc32.Castagnoli)))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "0000000000000001.seg"), data, 0o644))
	_, err := journal.Open(dir, quiet)
	require.ErrorIs(t, err, journal.ErrCorrupt)
	require.ErrorContains(t, err, "version 9")
	require.ErrorContains(t, err, "release that wrote it")
}

// TestCorruptRecordBeforeChainedOneIsAnError damages a payload byte of
// the next-to-last record of the last segment: the last record, still
// chained to it, proves the damage is not a torn write, whatever the
// payloads hold.
func TestCorruptRecordBeforeChainedOneIsAnError(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir)
	_, err := j.Append(rec(0))
	require.NoError(t, err)
	seg := segments(t, dir)[0]
	data, err := os.ReadFile(seg)
	require.NoError(t, err)
	frames := data[24:]
	_, err = j.Append(journal.Record{Payload: slices.Concat(frames, frames)}) // frame-like payload
	require.NoError(t, err)
	_, err = j.Append(rec(2))
	require.NoError(t, err)
	require.NoError(t, j.Close())
	data, err = os.ReadFile(seg)
	require.NoError(t, err)
	last := lastFrameOf(t, data[24:])
	at := len(data) - len(last) - 2 // in the payload of the record before
	data[at] ^= 0x40
	require.NoError(t, os.WriteFile(seg, data, 0o644))
	_, err = journal.Open(dir, quiet)
	var ce *journal.CorruptError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, seg, ce.File)
	require.Contains(t, err.Error(), "good records follow")
}

// TestZerosWrittenAheadAreTheEndOfData copies a segment while its journal
// is open, as a kill -9 leaves it: its data, then zeros the journal wrote
// ahead of its end (so that its fsyncs overwrite existing blocks). The
// copy opens with every record and no torn tail; with a record torn in
// the zeros, that record is cut, with a warning. Close leaves no zeros.
func TestZerosWrittenAheadAreTheEndOfData(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir)
	want := appendRecords(t, j, 5)
	seg := segments(t, dir)[0]
	live, err := os.ReadFile(seg)
	require.NoError(t, err)
	end := int(j.Stats().Bytes)
	require.Greater(t, len(live), end, "zeros are written ahead of the data")
	require.True(t, bytes.Equal(live[end:], make([]byte, len(live)-end)))

	last := append([]byte(nil), live[:end]...)
	torn := lastFrameOf(t, last[24:])
	for _, c := range []struct {
		name  string
		data  []byte
		want  []journal.Record
		warns bool
	}{
		{"zeros after the data", live, want, false},
		{"the last record torn, zeros after it", slices.Concat(live[:end-len(torn)/2], make([]byte, len(live)-end+len(torn)/2)), want[:4], true},
	} {
		d := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(d, filepath.Base(seg)), c.data, 0o644))
		var logs bytes.Buffer
		j2, err := journal.Open(d, journal.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		require.NoError(t, err, c.name)
		require.Equal(t, c.want, pending(t, j2), c.name)
		if c.warns {
			require.Contains(t, logs.String(), "torn tail", c.name)
		} else {
			require.Empty(t, logs.String(), c.name)
		}
		id, err := j2.Append(rec(9))
		require.NoError(t, err)
		require.NoError(t, j2.Close())
		j2 = open(t, d)
		got := pending(t, j2)
		require.Equal(t, id, got[len(got)-1].ID, c.name)
		require.Len(t, got, len(c.want)+1, c.name)
		require.NoError(t, j2.Close())
		after, err := os.ReadFile(filepath.Join(d, filepath.Base(seg)))
		require.NoError(t, err)
		require.NotZero(t, after[len(after)-1], "%s: Close cuts the zeros written ahead", c.name)
	}
	require.NoError(t, j.Close())
	closed, err := os.ReadFile(seg)
	require.NoError(t, err)
	require.Equal(t, last, closed)
}

// TestNothingWrittenKeepsTheSegmentHeader: a commit that writes nothing
// (attempts of an unknown record) on a new journal, or one reopened from
// the previous format, leaves the segment's header intact.
func TestNothingWrittenKeepsTheSegmentHeader(t *testing.T) {
	for _, v1 := range []bool{false, true} {
		dir := t.TempDir()
		if v1 {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "0000000000000001.seg"), v1Segment([]journal.Record{rec(0)}), 0o644))
		}
		j := open(t, dir)
		require.NoError(t, j.SetAttempts(12345, 1)) // a commit with nothing to write
		require.NoError(t, j.Close())
		j = open(t, dir)
		_, err := j.Append(rec(1))
		require.NoError(t, err)
		require.NoError(t, j.Close())
		j = open(t, dir)
		require.Len(t, pending(t, j), map[bool]int{false: 1, true: 2}[v1])
		require.NoError(t, j.Close())
	}
}
