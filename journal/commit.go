package journal

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"time"
)

// commit writes ops and then acks (all queued since the last commit) with
// one write and one fsync, and applies them to the index. next is the next
// id to hand out: when it nears the reservation on disk, a new reservation
// goes first.
// It returns the reservation written, or 0. Called by the committer only.
func (j *Journal) commit(ops []frame, acks []uint64, next uint64, sync bool) (uint64, error) {
	seg := j.active
	buf := j.buf[:0]
	var reserved uint64
	j.smu.Lock()
	if sync && next+reserveChunk/2 > j.durable { // a reservation counts once fsync'd
		reserved = next + reserveChunk
		buf = encReserve(buf, reserved)
		j.st.apply(seg, &frame{kind: kindReserve, reserve: reserved}, seg.size, int32(len(buf)))
	}
	for i := range ops {
		f := &ops[i]
		start := len(buf)
		switch f.kind {
		case kindAppend:
			buf = encAppend(buf, &f.rec, false)
		case kindAttempts:
			if !j.st.prepareAttempts(f) {
				continue
			}
			buf = encAttempts(buf, f)
		case kindDead:
			e := j.st.pendingEntry(f.rec.ID)
			if e == nil {
				continue
			}
			p, err := j.payload(e, buf)
			if err != nil {
				j.smu.Unlock()
				return 0, err
			}
			f.rec = Record{ID: e.ID, Type: e.Type, Key: e.Key, Attempts: f.rec.Attempts, Payload: p}
			buf = encDead(buf, &f.rec, &f.dead)
		case kindPurge:
			buf = encIDs(buf, kindPurge, f.ids)
		}
		j.st.apply(seg, f, seg.size+int64(start), int32(len(buf)-start))
	}
	// Acks go last, in as few frames as can be: after every append of the
	// batch (apply keeps no reference to acks).
	for len(acks) > 0 {
		chunk := acks[:min(len(acks), maxIDsInFrame)]
		acks = acks[len(chunk):]
		start := len(buf)
		buf = encIDs(buf, kindAck, chunk)
		j.st.apply(seg, &frame{kind: kindAck, ids: chunk}, seg.size+int64(start), int32(len(buf)-start))
	}
	j.st.trim()
	j.smu.Unlock()
	j.buf = buf
	if len(buf) > 0 {
		j.chain = seal(buf, j.chain)
		if err := j.writeOnly(buf); err != nil {
			return 0, err
		}
	}
	if !sync {
		return 0, nil
	}
	if err := j.syncFile(); err != nil {
		return 0, err
	}
	if reserved > 0 {
		j.durable = reserved
	}
	return reserved, nil
}

// lingerFor returns how long the committer may wait for the appenders it
// just woke: a share of the measured fsync time, at most the WithLinger
// cap. Waiting costs latency only when they do not come back; when they
// do, the next fsync carries all of them.
func (j *Journal) lingerFor() time.Duration {
	return min(j.opts.linger, time.Duration(float64(j.fsyncAvg)*lingerShare))
}

// lingerShare is the share of the measured fsync time the committer may
// linger for.
const lingerShare = 0.5

// preallocate writes zeros ahead of the active segment's end once less
// than half a chunk of them is left (up to a chunk ahead), without an
// fsync: the next commit's fdatasync makes them durable with its own data,
// and the ones after it overwrite blocks that already exist, so they
// change no file size or extent and sync only data (3-4 times faster than
// growing the file on this project's VM, BenchmarkFsyncPrealloc). Recovery takes a zero tail as the end of the data; Close
// cuts it off. Called by the committer, after waking a batch.
func (j *Journal) preallocate() error {
	chunk := min(preallocChunk, j.opts.segSize/4)
	j.zeroed = max(j.zeroed, j.active.size) // never before the data's end
	if j.zeroed-j.active.size >= chunk/2 {
		return nil
	}
	if cap(j.zeros) < int(chunk) {
		j.zeros = make([]byte, chunk)
	}
	n := j.active.size + chunk - j.zeroed // up to a chunk ahead of the end
	if _, err := j.f.WriteAt(j.zeros[:n], j.zeroed); err != nil {
		return fmt.Errorf("write %s: %w", j.active.path, err)
	}
	j.zeroed += n
	return nil
}

// preallocChunk is how many bytes of zeros preallocate writes at a time.
const preallocChunk = 1 << 20

// maybeRoll starts a new segment when the active one is full. The
// committer calls it after waking the batch's callers, so they do not wait
// for it.
func (j *Journal) maybeRoll() error {
	if j.active.size < j.opts.segSize {
		return nil
	}
	return j.roll()
}

// payload returns a copy of e's payload: from the file, or from buf, the
// batch being encoded, when e was appended in this very batch.
func (j *Journal) payload(e *entry, buf []byte) ([]byte, error) {
	p := make([]byte, e.plen)
	if e.written() {
		if _, err := e.seg.rf.ReadAt(p, int64(e.off)); err != nil {
			return nil, fmt.Errorf("read %s: %w", e.seg.path, err)
		}
		return p, nil
	}
	at := int64(e.off) - e.seg.size
	copy(p, buf[at:at+int64(e.plen)])
	return p, nil
}

// write appends buf to the active segment and fsyncs it.
func (j *Journal) write(buf []byte) error {
	if err := j.writeOnly(buf); err != nil {
		return err
	}
	return j.syncFile()
}

// writeOnly appends buf to the active segment, without an fsync: at the
// segment's end, over the zeros written ahead of it (preallocate).
func (j *Journal) writeOnly(buf []byte) error {
	n, err := j.f.WriteAt(buf, j.active.size)
	j.smu.Lock()
	j.active.size += int64(n)
	j.smu.Unlock()
	j.zeroed = max(j.zeroed, j.active.size)
	j.unsynced = true
	if err != nil {
		return fmt.Errorf("write %s: %w", j.active.path, err)
	}
	return nil
}

// syncFile fsyncs the active segment if it has unsynced writes.
func (j *Journal) syncFile() error {
	if !j.unsynced {
		return nil
	}
	t0 := time.Now()
	if err := fdatasync(j.f); err != nil {
		return fmt.Errorf("fsync %s: %w", j.active.path, err)
	}
	j.fsyncAvg += (time.Since(t0) - j.fsyncAvg) / 8
	j.unsynced = false
	j.syncs.Add(1)
	return nil
}

// roll fsyncs the current segment, starts a new one and reclaims old ones.
func (j *Journal) roll() error {
	if err := j.syncFile(); err != nil { // a segment is complete on disk before the next one exists
		return err
	}
	seg, f, seed, err := createSegment(j.dir, j.active.seq+1, j.durable)
	if err != nil {
		return err
	}
	old := j.f
	if err := old.Truncate(j.active.size); err != nil { // the zeros ahead of the end
		return fmt.Errorf("cut %s: %w", j.active.path, err)
	}
	j.f, j.chain, j.zeroed = f, seed, headerSize
	j.smu.Lock()
	j.st.segs = append(j.st.segs, seg)
	j.active = seg
	j.smu.Unlock()
	if err := old.Close(); err != nil {
		return fmt.Errorf("close segment: %w", err)
	}
	return j.reclaim()
}

// reclaim deletes the segments recovery no longer needs. The oldest
// segment is first compacted away when what it still holds is at most half
// a segment: its live frames are copied to the active segment (same ids),
// so one long-pending record cannot pin the whole log.
func (j *Journal) reclaim() error {
	if o := j.st.segs[0]; o != j.active && o.live > 0 && o.liveBytes <= j.opts.segSize/2 {
		if err := j.copyForward(o); err != nil {
			return err
		}
	}
	var gone []*segment
	j.filesMu.Lock() // no Replay is reading a file
	defer j.filesMu.Unlock()
	j.smu.Lock()
	for _, s := range slices.Clone(j.st.segs) { // oldest first: a deletion may free newer ones
		if s != j.active && s.deletable() {
			j.st.removeSegment(s)
			gone = append(gone, s)
		}
	}
	j.smu.Unlock()
	for _, s := range gone {
		s.rf.Close()
		if err := os.Remove(s.path); err != nil {
			return fmt.Errorf("reclaim: %w", err)
		}
	}
	if len(gone) > 0 {
		return syncDir(j.dir)
	}
	return nil
}

// copyForward rewrites the live frames of segment o into the active
// segment and fsyncs them, leaving o with nothing live.
func (j *Journal) copyForward(o *segment) error {
	data, err := readFile(o.path, nil)
	if err != nil {
		return fmt.Errorf("reclaim: %w", err)
	}
	var frames []frame
	for i := j.st.head; i < len(j.st.entries); i++ {
		e := &j.st.entries[i]
		switch {
		case e.done:
		case e.seg == o:
			r := e.Record
			r.Payload = data[e.off : e.off+e.plen]
			frames = append(frames, frame{kind: kindAppend, copied: true, rec: r})
			if e.HandlerAttempts != nil { // the copy carries the plain count only
				frames = append(frames, e.attemptsFrame())
			}
		case e.attSeg == o:
			frames = append(frames, e.attemptsFrame())
		}
	}
	for _, id := range slices.Sorted(maps.Keys(j.st.dead)) {
		if d := j.st.dead[id]; d.seg == o {
			frames = append(frames, frame{kind: kindDead, rec: d.Record,
				dead: deadDetail{handler: d.Handler, err: d.Err, time: d.Time}})
		}
	}
	buf := j.buf[:0]
	sizes := make([]int32, len(frames))
	for i := range frames {
		start := len(buf)
		switch f := &frames[i]; f.kind {
		case kindAppend:
			buf = encAppend(buf, &f.rec, true)
		case kindAttempts:
			buf = encAttempts(buf, f)
		case kindDead:
			buf = encDead(buf, &f.rec, &f.dead)
		}
		sizes[i] = int32(len(buf) - start)
	}
	j.buf = buf
	at := j.active.size
	j.chain = seal(buf, j.chain)
	if err := j.write(buf); err != nil {
		return err
	}
	j.smu.Lock()
	defer j.smu.Unlock()
	for i := range frames {
		j.st.apply(j.active, &frames[i], at, sizes[i])
		at += int64(sizes[i])
	}
	if o.live != 0 {
		return fmt.Errorf("reclaim: %d frames of %s left after copy", o.live, o.path)
	}
	return nil
}

func segName(seq uint64) string { return fmt.Sprintf("%016x.seg", seq) }
