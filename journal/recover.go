package journal

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
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
		seg, f, err := createSegment(j.dir, 1, 1)
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		j.st.segs, j.active, j.f = []*segment{seg}, seg, f
		return nil
	}
	if err := j.reserveEntries(seqs); err != nil {
		return err
	}
	j.st.recovering = true
	var buf []byte // reused: scan copies out what it keeps
	for i, seq := range seqs {
		path := filepath.Join(j.dir, segName(seq))
		data, err := readFile(path, buf)
		if err != nil {
			return fmt.Errorf("journal: open %s: %w", j.dir, err)
		}
		buf = data
		res, err := parseHeader(data)
		if err != nil {
			return &CorruptError{File: path, Offset: 0, Err: err}
		}
		j.st.reserve = max(j.st.reserve, res)
		rf, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("journal: open %s: %w", j.dir, err)
		}
		seg := &segment{seq: seq, path: path, size: int64(len(data)), rf: rf}
		j.st.segs = append(j.st.segs, seg)
		end, bad := j.scan(seg, data)
		if bad == nil {
			continue
		}
		if i < len(seqs)-1 {
			return &CorruptError{File: path, Offset: end, Err: bad}
		}
		if validFrameAfter(data, int(end)+1) {
			if !j.opts.repair {
				return &CorruptError{File: path, Offset: end, Err: fmt.Errorf("%w (good records follow)", bad)}
			}
			j.opts.log.Error("journal: repair: cutting the last segment at a bad record; the good records after it are lost",
				"file", path, "offset", end, "dropped_bytes", int64(len(data))-end, "err", bad)
		} else {
			j.opts.log.Warn("journal: cut a torn tail at the last good record",
				"file", path, "offset", end, "dropped_bytes", int64(len(data))-end, "err", bad)
		}
		if err := truncate(path, end); err != nil {
			return err
		}
		seg.size = end
	}
	j.st.finishRecovery()
	last := j.st.segs[len(j.st.segs)-1]
	f, err := os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("journal: open %s: %w", last.path, err)
	}
	j.active, j.f = last, f
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

// scan applies the frames of one segment and returns the offset after the
// last good one, and what is wrong with the next one if that is not the
// end of data. Only dead letters keep their payload in memory: they are
// copied out of data, which the caller reuses.
func (j *Journal) scan(seg *segment, data []byte) (end int64, bad error) {
	st := &j.st
	off := headerSize
	for off < len(data) {
		if len(data)-off < frameHdrSize {
			bad = errors.New("partial record header")
			break
		}
		n := int(binary.LittleEndian.Uint32(data[off:]))
		if n == 0 || n > maxBody {
			bad = fmt.Errorf("bad record length %d", n)
			break
		}
		if off+frameHdrSize+n > len(data) {
			bad = fmt.Errorf("partial record (%d of %d bytes)", len(data)-off-frameHdrSize, n)
			break
		}
		body := data[off+frameHdrSize : off+frameHdrSize+n]
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[off+4:]) {
			bad = errors.New("checksum mismatch")
			break
		}
		f, err := decodeBody(body, false)
		if err != nil {
			bad = err
			break
		}
		st.apply(seg, &f, int64(off), int32(frameHdrSize+n))
		off += frameHdrSize + n
	}
	for _, d := range st.dead {
		if d.seg == seg {
			d.Payload = bytes.Clone(d.Payload)
		}
	}
	st.trim()
	return int64(off), bad
}

// validFrameAfter reports whether a good frame starts anywhere in
// data[from:]: then a bad frame before it is corruption, not a torn tail.
func validFrameAfter(data []byte, from int) bool {
	for off := from; off+frameHdrSize < len(data); off++ {
		n := int(binary.LittleEndian.Uint32(data[off:]))
		if n == 0 || n > maxBody || off+frameHdrSize+n > len(data) {
			continue
		}
		body := data[off+frameHdrSize : off+frameHdrSize+n]
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[off+4:]) {
			continue
		}
		if _, err := decodeBody(body, false); err == nil {
			return true
		}
	}
	return false
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
