package journal

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// recover rebuilds the index from the segment files, cutting a torn tail
// of the last one, and opens the last one for appending.
func (j *Journal) recover() error {
	des, err := os.ReadDir(j.dir)
	if err != nil {
		return fmt.Errorf("journal: open %s: %w", j.dir, err)
	}
	var seqs []uint64
	for _, de := range des {
		name := de.Name()
		switch {
		case strings.HasSuffix(name, ".seg.tmp"): // a segment creation cut short
			if err := os.Remove(filepath.Join(j.dir, name)); err != nil {
				return fmt.Errorf("journal: open %s: %w", j.dir, err)
			}
		case strings.HasSuffix(name, ".seg") && len(name) == 20:
			seq, err := strconv.ParseUint(name[:16], 16, 64)
			if err == nil {
				seqs = append(seqs, seq)
			}
		}
	}
	slices.Sort(seqs)
	if len(seqs) == 0 {
		seg, f, seed, err := createSegment(j.dir, 1, 1)
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		j.st.segs, j.active, j.f, j.chain, j.zeroed = []*segment{seg}, seg, f, seed, headerSize
		return nil
	}
	if err := j.reserveEntries(seqs); err != nil {
		return err
	}
	j.st.recovering = true
	var buf []byte // reused: scan copies out what it keeps
	var lastInfo segInfo
	var lastChain uint32
	for i, seq := range seqs {
		path := filepath.Join(j.dir, segName(seq))
		data, err := readFile(path, buf)
		if err != nil {
			return fmt.Errorf("journal: open %s: %w", j.dir, err)
		}
		buf = data
		info, err := parseHeader(data)
		if err != nil {
			return &CorruptError{File: path, Offset: 0, Err: err}
		}
		j.st.reserve = max(j.st.reserve, info.reserve)
		rf, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("journal: open %s: %w", j.dir, err)
		}
		seg := &segment{seq: seq, path: path, size: int64(len(data)), rf: rf}
		j.st.segs = append(j.st.segs, seg)
		sc := j.scan(seg, data, info)
		lastInfo, lastChain = info, sc.chain
		j.zeroed = int64(len(data))
		if sc.bad == nil {
			seg.size = sc.end // before a tail of zeros written ahead, if any
			continue
		}
		end := sc.end
		if i < len(seqs)-1 { // fsync'd before the next segment was created
			return &CorruptError{File: path, Offset: end, Err: sc.bad}
		}
		if sc.corrupt {
			if !j.opts.repair {
				return &CorruptError{File: path, Offset: end, Err: sc.bad}
			}
			j.opts.log.Error("journal: repair: cutting the last segment at a bad record; the good records after it are lost",
				"file", path, "offset", end, "dropped_bytes", int64(len(data))-end, "err", sc.bad)
		} else {
			j.opts.log.Warn("journal: cut a torn tail at the last good record",
				"file", path, "offset", end, "dropped_bytes", int64(len(data))-end, "err", sc.bad)
		}
		if err := truncate(path, end); err != nil {
			return err
		}
		seg.size, j.zeroed = end, end
	}
	j.st.finishRecovery()
	last := j.st.segs[len(j.st.segs)-1]
	if lastInfo.version != version {
		// Never mix formats in one file: new frames go to a new segment.
		seg, f, seed, err := createSegment(j.dir, last.seq+1, j.st.reserve)
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		j.st.segs = append(j.st.segs, seg)
		j.active, j.f, j.chain, j.zeroed = seg, f, seed, headerSize
		return nil
	}
	f, err := os.OpenFile(last.path, os.O_WRONLY, 0) // written at its end (WriteAt)
	if err != nil {
		return fmt.Errorf("journal: open %s: %w", last.path, err)
	}
	j.active, j.f, j.chain = last, f, lastChain
	return nil
}

// reserveEntries sizes the index once for every record in the segments,
// so recovery never grows it: it counts append frames by following the
// length fields (no checksums: scan checks them).
func (j *Journal) reserveEntries(seqs []uint64) error {
	n := 0
	hdr := make([]byte, frameHdrSize+1)
	for _, seq := range seqs {
		f, err := os.Open(filepath.Join(j.dir, segName(seq)))
		if err != nil {
			return fmt.Errorf("journal: open %s: %w", j.dir, err)
		}
		r := bufio.NewReaderSize(f, 1<<20)
		_, err = r.Discard(headerSize)
		for err == nil {
			if _, err = io.ReadFull(r, hdr); err != nil {
				break
			}
			if hdr[frameHdrSize]&^flagCopy == kindAppend {
				n++
			}
			_, err = r.Discard(int(binary.LittleEndian.Uint32(hdr)) - 1)
		}
		f.Close()
	}
	j.st.entries = make([]entry, 0, n)
	return nil
}

// scanResult is what scan found in a segment.
type scanResult struct {
	end   int64  // offset after the last good frame
	chain uint32 // the last good frame's chained checksum (the seed if none)
	bad   error  // what is wrong with the frame at end, if end is not the end of data
	// corrupt: the bad frame cannot be a torn write. Either its checksum
	// is good (it was written so: undecodable), or it is complete and
	// the frame after it (where its length says) is good and chained to
	// it, so it was damaged after the write of the next one.
	corrupt bool
}

// scan applies the frames of one segment and says where its good frames
// end and why (see scanResult). Only dead letters keep their payload in
// memory: they are copied out of data, which the caller reuses.
//
// A kill -9 leaves a prefix of the last write (cut at any byte), a power
// cut may also leave garbage or zeros in its place: both end the chain at
// a frame that is partial, has a length that cannot be, or fails its
// checksum with nothing chained to it after. Bytes inside a payload are
// never taken for a frame: a frame is only looked for where the previous
// one's length says it starts, and only counts if chained to it.
func (j *Journal) scan(seg *segment, data []byte, info segInfo) scanResult {
	st := &j.st
	off := headerSize
	chain := info.seed
	var bad error
	corrupt := false
	for off < len(data) {
		if len(data)-off < frameHdrSize {
			bad = errors.New("partial record header")
			break
		}
		n := int(binary.LittleEndian.Uint32(data[off:]))
		if n == 0 && allZero(data[off:]) {
			break // zeros written ahead of the data (preallocate): its end
		}
		if n == 0 || n > maxBody {
			bad = fmt.Errorf("bad record length %d", n)
			break
		}
		if off+frameHdrSize+n > len(data) {
			bad = fmt.Errorf("partial record (%d of %d bytes)", len(data)-off-frameHdrSize, n)
			break
		}
		body := data[off+frameHdrSize : off+frameHdrSize+n]
		stored := binary.LittleEndian.Uint32(data[off+4:])
		if !checkFrame(info.version, chain, stored, body) {
			bad = errors.New("checksum mismatch")
			if chainedAt(data, off+frameHdrSize+n, info.version, stored) {
				bad, corrupt = fmt.Errorf("%w (good records follow)", bad), true
			}
			break
		}
		f, err := decodeBody(body, false)
		if err != nil {
			bad, corrupt = err, true
			break
		}
		st.apply(seg, &f, int64(off), int32(frameHdrSize+n))
		chain = stored
		off += frameHdrSize + n
	}
	for _, d := range st.dead {
		if d.seg == seg {
			d.Payload = bytes.Clone(d.Payload)
		}
	}
	st.trim()
	return scanResult{end: int64(off), chain: chain, bad: bad, corrupt: corrupt}
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// chainedAt reports whether a complete frame at off in data is good
// chained to prev, the stored checksum of the frame before it (version 1:
// good on its own).
func chainedAt(data []byte, off int, ver, prev uint32) bool {
	if len(data)-off < frameHdrSize {
		return false
	}
	n := int(binary.LittleEndian.Uint32(data[off:]))
	if n == 0 || n > maxBody || off+frameHdrSize+n > len(data) {
		return false
	}
	return checkFrame(ver, prev, binary.LittleEndian.Uint32(data[off+4:]), data[off+frameHdrSize:off+frameHdrSize+n])
}

// readFile reads the file at path into buf, grown as needed.
func readFile(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := int(fi.Size())
	if cap(buf) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

func truncate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("journal: cut torn tail: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("journal: cut torn tail: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("journal: cut torn tail: %w", err)
	}
	return nil
}
