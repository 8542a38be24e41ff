package journal

import (
	"fmt"
	"maps"
	"os"
	"slices"
)

// commit writes ops (all queued since the last commit) with one write and
// one fsync, and applies them to the index. next is the next id to hand
// out: when it nears the reservation on disk, a new reservation goes first.
// It returns the reservation written, or 0. Called by the committer only.
func (j *Journal) commit(ops []frame, next uint64, sync bool) (uint64, error) {
	seg := j.active
	buf := j.buf[:0]
	var reserved uint64
	j.smu.Lock()
	if sync && next+reserveChunk/2 > j.durable { // a reservation counts once fsync'd
		reserved = next + reserveChunk
		buf = encReserve(buf, reserved)
		j.st.apply(seg, &frame{kind: kindReserve, reserve: reserved}, seg.size, int32(len(buf)))
	}
	acks := j.acks[:0]
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
		case kindAck:
			// Acks go last, in one frame: after every append of the batch.
			if f.ids == nil {
				acks = append(acks, f.id)
			} else {
				acks = append(acks, f.ids...)
			}
			continue
		case kindPurge:
			buf = encIDs(buf, kindPurge, f.ids)
		}
		j.st.apply(seg, f, seg.size+int64(start), int32(len(buf)-start))
	}
	j.acks = acks[:0] // reused next time; apply keeps no reference
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

// writeOnly appends buf to the active segment, without an fsync.
func (j *Journal) writeOnly(buf []byte) error {
	n, err := j.f.Write(buf)
	j.smu.Lock()
	j.active.size += int64(n)
	j.smu.Unlock()
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
	if err := fdatasync(j.f); err != nil {
		return fmt.Errorf("fsync %s: %w", j.active.path, err)
	}
	j.unsynced = false
	j.syncs.Add(1)
	return nil
}

// roll fsyncs the current segment, starts a new one and reclaims old ones.
func (j *Journal) roll() error {
	if err := j.syncFile(); err != nil { // a segment is complete on disk before the next one exists
		return err
	}
	seg, f, err := createSegment(j.dir, j.active.seq+1, j.durable)
	if err != nil {
		return err
	}
	old := j.f
	j.f = f
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
