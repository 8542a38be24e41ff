package journal

import (
	"cmp"
	"maps"
	"os"
	"slices"
)

// segment is one file of the log and what is still needed in it.
type segment struct {
	seq  uint64
	path string
	size int64    // bytes written (header included)
	rf   *os.File // read-only handle, for payloads

	// live counts the frames of this segment that recovery still needs:
	// appends of unacked records, the latest attempts frame of an unacked
	// record, dead letters still listed. liveBytes is their size.
	live      int
	liveBytes int64
	// refs counts ack, dead and purge entries in this segment that cancel
	// a frame of an older segment still on disk: deleting this segment
	// first would bring that frame back. ackedIn is the other side: which
	// newer segments hold entries that cancel frames of this one.
	refs    int
	ackedIn map[*segment]int
}

// deletable reports whether the segment holds nothing recovery needs.
func (s *segment) deletable() bool { return s.live == 0 && s.refs == 0 }

// entry is an unacked record (done marks an acked one not yet trimmed).
// Its payload is not kept in memory (Record.Payload is nil): it is read back
// from seg at off when needed.
type entry struct {
	Record
	seg     *segment // holds the append frame
	attSeg  *segment // holds the latest attempts frame, if any
	attSize int32    // of that frame
	size    int32    // of the append frame
	off     uint32   // of the payload in seg's file
	plen    uint32   // of the payload
	done    bool
}

// written reports whether e's payload is in its segment's file yet (the
// committer applies a batch before writing it).
func (e *entry) written() bool { return int64(e.off)+int64(e.plen) <= e.seg.size }

// deadEntry is a listed dead letter and where its frame is.
type deadEntry struct {
	DeadLetter
	seg  *segment
	size int32
}

// state is the index rebuilt by recovery and kept up to date by the
// committer. The committer is its only writer (under Journal.smu); readers
// hold Journal.smu.
type state struct {
	entries []entry // by id, ascending; entries[:head] are gone
	head    int
	ndone   int               // done entries in entries[head:]
	side    map[uint64]*entry // recovery only: copies seen out of id order
	dead    map[uint64]*deadEntry
	segs    []*segment // by seq
	pending int
	maxID   uint64 // largest id seen
	// recovering: Open is scanning, entries has its final capacity.
	recovering bool
	reserve    uint64 // largest reservation seen
}

func newState() state {
	return state{side: map[uint64]*entry{}, dead: map[uint64]*deadEntry{}}
}

// find returns the entry of id, done or not, or nil.
func (s *state) find(id uint64) *entry {
	if i, ok := s.search(id); ok {
		return &s.entries[s.head+i]
	}
	if e := s.side[id]; e != nil {
		return e
	}
	return nil
}

// search returns the position of id in entries[head:], or where it would
// go. Ids are nearly dense, so it first guesses by interpolation (exact
// when no id between the first and the last is missing), then searches
// the slice.
func (s *state) search(id uint64) (int, bool) {
	es := s.entries[s.head:]
	if len(es) == 0 {
		return 0, false
	}
	lo, hi := es[0].ID, es[len(es)-1].ID
	switch {
	case id < lo:
		return 0, false
	case id > hi:
		return len(es), false
	case hi == lo:
		return 0, true
	}
	g := int(float64(id-lo) / float64(hi-lo) * float64(len(es)-1))
	if g >= 0 && g < len(es) && es[g].ID == id {
		return g, true
	}
	return slices.BinarySearchFunc(es, id, func(e entry, id uint64) int { return cmp.Compare(e.ID, id) })
}

// pendingEntry returns the unacked entry of id, or nil.
func (s *state) pendingEntry(id uint64) *entry {
	if e := s.find(id); e != nil && !e.done {
		return e
	}
	return nil
}

func (s *state) addLive(seg *segment, size int32) {
	seg.live++
	seg.liveBytes += int64(size)
}

func (s *state) dropLive(seg *segment, size int32) {
	seg.live--
	seg.liveBytes -= int64(size)
}

// cancels records that an entry of seg (an ack, dead letter or purge)
// cancels a frame of target.
func (s *state) cancels(seg, target *segment) {
	if seg == target {
		return
	}
	if target.ackedIn == nil {
		target.ackedIn = map[*segment]int{}
	}
	target.ackedIn[seg]++
	seg.refs++
}

// apply updates the index with a frame of size bytes at offset at of seg.
func (s *state) apply(seg *segment, f *frame, at int64, size int32) {
	off, plen := uint32(at+frameHdrSize+appendFixed), uint32(len(f.rec.Payload))
	switch f.kind {
	case kindAppend:
		s.maxID = max(s.maxID, f.rec.ID)
		if e := s.find(f.rec.ID); e != nil {
			if e.done {
				return // a copy of a record acked since: nothing to keep
			}
			// A copy made by reclamation, the original still on disk.
			s.dropLive(e.seg, e.size)
			e.seg, e.size, e.off, e.plen = seg, size, off, plen
			if e.attSeg != nil {
				s.dropLive(e.attSeg, e.attSize)
				e.attSeg = nil
			}
			e.Attempts = f.rec.Attempts // the per-handler counts follow in an attempts frame
			s.addLive(seg, size)
			return
		}
		s.addLive(seg, size)
		s.pending++
		e := entry{Record: f.rec, seg: seg, size: size, off: off, plen: plen}
		e.Payload = nil
		if n := len(s.entries); n > s.head && s.entries[n-1].ID > f.rec.ID {
			side := new(entry) // not &e: e would move to the heap for every append
			*side = e
			s.side[f.rec.ID] = side // out of order: merged by finishRecovery
			return
		}
		s.entries = append(s.entries, e)
	case kindAck:
		for _, id := range f.ids {
			if e := s.pendingEntry(id); e != nil {
				s.finish(seg, e)
			}
		}
	case kindAttempts:
		if e := s.pendingEntry(f.id); e != nil {
			if e.attSeg != nil {
				s.dropLive(e.attSeg, e.attSize)
			}
			e.Attempts = int(f.n)
			e.HandlerAttempts = f.counts // never changed in place: Replay's copies share it
			e.attSeg, e.attSize = seg, size
			s.addLive(seg, size)
		}
	case kindDead:
		s.maxID = max(s.maxID, f.rec.ID)
		if e := s.pendingEntry(f.rec.ID); e != nil {
			s.finish(seg, e)
		}
		if d := s.dead[f.rec.ID]; d != nil { // a copy made by reclamation
			s.dropLive(d.seg, d.size)
		}
		s.dead[f.rec.ID] = &deadEntry{DeadLetter: DeadLetter{Record: f.rec,
			Handler: f.dead.handler, Err: f.dead.err, Time: f.dead.time}, seg: seg, size: size}
		s.addLive(seg, size)
	case kindPurge:
		for _, id := range f.ids {
			if d := s.dead[id]; d != nil {
				s.dropLive(d.seg, d.size)
				s.cancels(seg, d.seg)
				delete(s.dead, id)
			}
		}
	case kindReserve:
		s.reserve = max(s.reserve, f.reserve)
	}
}

// finish marks e acked by an entry of seg.
func (s *state) finish(seg *segment, e *entry) {
	e.done = true
	s.pending--
	s.dropLive(e.seg, e.size)
	s.cancels(seg, e.seg)
	if e.attSeg != nil {
		s.dropLive(e.attSeg, e.attSize)
		e.attSeg = nil
	}
	if s.side[e.ID] == e {
		delete(s.side, e.ID)
	} else {
		s.ndone++
	}
}

// trim drops acked entries from the front, and compacts the slice when
// most of it is acked (not while recovering: then the slice was sized
// once, see reserveEntries). Amortised O(1) per entry.
func (s *state) trim() {
	for s.head < len(s.entries) && s.entries[s.head].done {
		s.entries[s.head] = entry{}
		s.head++
		s.ndone--
	}
	if s.head == len(s.entries) {
		s.entries, s.head, s.ndone = s.entries[:0], 0, 0
		return
	}
	n := len(s.entries) - s.head
	if s.recovering {
		return
	}
	if (s.head > 1024 && s.head > n) || (s.ndone > 1024 && s.ndone > n/2) {
		out := make([]entry, 0, 2*(n-s.ndone)+64)
		for _, e := range s.entries[s.head:] {
			if !e.done {
				out = append(out, e)
			}
		}
		clear(s.entries)
		s.entries, s.head, s.ndone = out, 0, 0
	}
}

// finishRecovery merges the out-of-order entries into the sorted slice.
func (s *state) finishRecovery() {
	s.recovering = false
	if len(s.side) > 0 {
		for _, e := range s.side {
			if !e.done {
				s.entries = append(s.entries, *e)
			}
		}
		clear(s.side)
		rest := s.entries[s.head:]
		slices.SortFunc(rest, func(a, b entry) int { return cmp.Compare(a.ID, b.ID) })
	}
	s.trim()
}

// pendingFrom appends to out up to n unacked entries with ids from id on,
// in id order, stopping at the first whose payload is not written yet.
func (s *state) pendingFrom(id uint64, n int, out []entry) []entry {
	i, _ := s.search(id)
	for i += s.head; i < len(s.entries) && n > 0; i++ {
		if e := &s.entries[i]; !e.done {
			if !e.written() {
				break
			}
			out = append(out, *e)
			n--
		}
	}
	return out
}

// deadLetters returns the dead-letter list in id order.
func (s *state) deadLetters() []DeadLetter {
	ids := slices.Sorted(maps.Keys(s.dead))
	out := make([]DeadLetter, len(ids))
	for i, id := range ids {
		out[i] = s.dead[id].DeadLetter
	}
	return out
}

// removeSegment forgets seg, which must be deletable, and releases the
// segments whose entries cancelled frames of seg.
func (s *state) removeSegment(seg *segment) {
	for t, n := range seg.ackedIn {
		t.refs -= n
	}
	seg.ackedIn = nil
	s.segs = slices.DeleteFunc(s.segs, func(x *segment) bool { return x == seg })
}

// prepareAttempts completes attempts frame f, about to be committed, into
// the whole attempts state of its record: a SetHandlerAttempts request
// (handler set) gets the record's other counts and its plain count, a
// SetAttempts one the record's per-handler counts. It reports false when
// the record is not pending (the frame is dropped).
func (s *state) prepareAttempts(f *frame) bool {
	e := s.pendingEntry(f.id)
	if e == nil {
		return false
	}
	if f.handler == "" {
		f.counts = e.HandlerAttempts
		return true
	}
	if _, known := e.HandlerAttempts[f.handler]; !known && len(e.HandlerAttempts) >= maxHandlers {
		return false // the frame could not say it (see SetHandlerAttempts)
	}
	counts := make(map[string]int, len(e.HandlerAttempts)+1)
	maps.Copy(counts, e.HandlerAttempts)
	counts[f.handler] = int(f.hn)
	f.counts, f.n, f.handler = counts, clampAttempts(e.Attempts), ""
	return true
}

// attemptsFrame is the attempts frame that restores e's attempts state.
func (e *entry) attemptsFrame() frame {
	return frame{kind: kindAttempts, id: e.ID, n: clampAttempts(e.Attempts), counts: e.HandlerAttempts}
}
