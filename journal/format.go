package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// On-disk format (see README.md for the full description).
//
// A segment file starts with a 24-byte header:
//
//	magic "EBJ1" | version u32 | reserved-id u64 | header crc u32 | salt u32
//
// where the header crc is crc32c of the other 20 bytes, followed by frames:
//
//	length u32 | chain u32 | body (length bytes)
//
// chain = crc32c(previous chain u32 | length u32 | crc32c(body) u32), the
// first frame's previous chain being the header crc. Each frame's
// checksum thus covers every frame before it in the file: bytes that look
// like a frame (a payload is user data) never pass as one where they lie,
// so recovery tells a torn tail from corruption by following the chain,
// never by searching. The body's first byte is its kind. All integers are
// little endian.
//
// Version 1 (still read, never written) had crc32c(body) in place of the
// chain, a header crc of the first 16 bytes only, and zero for the salt.

const (
	headerSize   = 24
	frameHdrSize = 8
	version      = 2 // written
	versionPlain = 1 // read: frames checked one by one, not chained

	// MaxPayload is the largest payload Append accepts (16 MiB).
	MaxPayload = 16 << 20
	// maxBody bounds a frame body when reading: anything larger is garbage.
	maxBody = MaxPayload + 64<<10 + 1<<16
)

var magic = [4]byte{'E', 'B', 'J', '1'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame kinds.
const (
	kindAppend   = 1 // a record; flagCopy when copied forward by reclamation
	kindAck      = 2 // ids acked
	kindAttempts = 3 // id, attempts used
	kindDead     = 4 // a record moved to the dead-letter list (acks it)
	kindPurge    = 5 // ids removed from the dead-letter list
	kindReserve  = 6 // ids below this value may have been handed out
	// kindHandlerAttempts is an attempts frame that also counts attempts
	// per handler: id, attempts u32, count u16, then count times attempts
	// u32, len(name) u16, name. Decoded as kindAttempts with counts set;
	// each attempts frame (either kind) is the record's whole attempts state.
	kindHandlerAttempts = 7
)

const flagCopy = 0x80

// Fixed body sizes.
const (
	appendFixed   = 1 + 8 + 1 + 8 + 4 // kind id type key attempts, then payload
	attemptsBody  = 1 + 8 + 4
	reserveBody   = 1 + 8
	deadFixed     = 1 + 8 + 1 + 8 + 4 + 8 + 4 + 4 // kind id type key attempts time len(handler) len(err)
	maxIDsInFrame = 1 << 13
)

// frame is a decoded frame body.
type frame struct {
	kind   byte
	copied bool
	rec    Record   // kindAppend, kindDead
	ids    []uint64 // kindAck, kindPurge
	n      uint32   // kindAttempts
	id     uint64   // kindAttempts
	// kindAttempts: attempts per handler name (nil: none recorded; then
	// written as a plain attempts frame). A SetHandlerAttempts request
	// sets handler and hn instead, merged into counts when committed.
	counts  map[string]int
	handler string
	hn      uint32
	reserve uint64     // kindReserve
	dead    deadDetail // kindDead
}

// deadDetail is what a dead letter adds to its record.
type deadDetail struct {
	handler string
	err     string
	time    time.Time
}

// putFrameHeader writes body's length and checksum (not yet chained:
// seal chains it) before it.
func putFrameHeader(b []byte, body []byte) {
	binary.LittleEndian.PutUint32(b[0:], uint32(len(body)))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(body, castagnoli))
}

// link is the chained checksum of a frame of n body bytes whose body
// checksum is bodyCRC, following the frame whose chained checksum is prev.
func link(prev uint32, n int, bodyCRC uint32) uint32 {
	// crc32.Checksum of the 12 bytes, table-driven here: through the
	// package's function the array escapes, an allocation per frame.
	crc := ^uint32(0)
	for _, w := range [3]uint32{prev, uint32(n), bodyCRC} {
		for range 4 {
			crc = castagnoli[byte(crc)^byte(w)] ^ (crc >> 8)
			w >>= 8
		}
	}
	return ^crc
}

// seal chains the frames of buf (back to back, as appendFrame makes them,
// each with its body's checksum), the first one to chain, and returns the
// last frame's chained checksum: what the next frame written after buf
// chains to. Cost: one 12-byte checksum per frame.
func seal(buf []byte, chain uint32) uint32 {
	for off := 0; off+frameHdrSize <= len(buf); {
		n := int(binary.LittleEndian.Uint32(buf[off:]))
		chain = link(chain, n, binary.LittleEndian.Uint32(buf[off+4:]))
		binary.LittleEndian.PutUint32(buf[off+4:], chain)
		off += frameHdrSize + n
	}
	return chain
}

// checkFrame reports whether the frame of body, with stored checksum
// stored, is good where it lies: chained to prev (version 2), or on its
// own (version 1).
func checkFrame(ver uint32, prev, stored uint32, body []byte) bool {
	c := crc32.Checksum(body, castagnoli)
	if ver == versionPlain {
		return c == stored
	}
	return link(prev, len(body), c) == stored
}

// appendFrame appends a frame made by body(b) to buf: body appends the body
// bytes to the slice it is given and returns it.
func appendFrame(buf []byte, body func([]byte) []byte) []byte {
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0, 0, 0, 0, 0)
	buf = body(buf)
	putFrameHeader(buf[start:], buf[start+frameHdrSize:])
	return buf
}

func encAppend(buf []byte, r *Record, copied bool) []byte {
	return appendFrame(buf, func(b []byte) []byte {
		k := byte(kindAppend)
		if copied {
			k |= flagCopy
		}
		b = append(b, k)
		b = binary.LittleEndian.AppendUint64(b, r.ID)
		b = append(b, r.Type)
		b = binary.LittleEndian.AppendUint64(b, r.Key)
		b = binary.LittleEndian.AppendUint32(b, clampAttempts(r.Attempts))
		return append(b, r.Payload...)
	})
}

func encIDs(buf []byte, kind byte, ids []uint64) []byte {
	return appendFrame(buf, func(b []byte) []byte {
		b = append(b, kind)
		for _, id := range ids {
			b = binary.LittleEndian.AppendUint64(b, id)
		}
		return b
	})
}

// encAttempts encodes an attempts frame: plain (kind 3) when f has no
// per-handler counts, else kind 7 with the counts in name order.
func encAttempts(buf []byte, f *frame) []byte {
	return appendFrame(buf, func(b []byte) []byte {
		if f.counts == nil {
			b = append(b, kindAttempts)
			b = binary.LittleEndian.AppendUint64(b, f.id)
			return binary.LittleEndian.AppendUint32(b, f.n)
		}
		b = append(b, kindHandlerAttempts)
		b = binary.LittleEndian.AppendUint64(b, f.id)
		b = binary.LittleEndian.AppendUint32(b, f.n)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(f.counts)))
		for _, name := range slices.Sorted(maps.Keys(f.counts)) {
			b = binary.LittleEndian.AppendUint32(b, clampAttempts(f.counts[name]))
			b = binary.LittleEndian.AppendUint16(b, uint16(len(name)))
			b = append(b, name...)
		}
		return b
	})
}

// Bounds of kindHandlerAttempts: SetHandlerAttempts refuses more.
const (
	maxHandlerName = 1<<16 - 1
	maxHandlers    = 1<<16 - 1
)

// decodeHandlerAttempts decodes the body of a kindHandlerAttempts frame.
func decodeHandlerAttempts(body []byte, f *frame) error {
	le := binary.LittleEndian
	if len(body) < attemptsBody+2 {
		return errShortBody
	}
	f.kind = kindAttempts
	f.id, f.n = le.Uint64(body[1:]), le.Uint32(body[9:])
	count := int(le.Uint16(body[attemptsBody:]))
	f.counts = make(map[string]int, count)
	p := body[attemptsBody+2:]
	for range count {
		if len(p) < 6 {
			return errShortBody
		}
		n, l := le.Uint32(p), int(le.Uint16(p[4:]))
		if len(p) < 6+l {
			return errShortBody
		}
		f.counts[string(p[6:6+l])] = int(n)
		p = p[6+l:]
	}
	if len(p) != 0 {
		return errors.New("bad handler attempts")
	}
	return nil
}

func encReserve(buf []byte, v uint64) []byte {
	return appendFrame(buf, func(b []byte) []byte {
		b = append(b, kindReserve)
		return binary.LittleEndian.AppendUint64(b, v)
	})
}

func encDead(buf []byte, r *Record, d *deadDetail) []byte {
	return appendFrame(buf, func(b []byte) []byte {
		b = append(b, kindDead)
		b = binary.LittleEndian.AppendUint64(b, r.ID)
		b = append(b, r.Type)
		b = binary.LittleEndian.AppendUint64(b, r.Key)
		b = binary.LittleEndian.AppendUint32(b, clampAttempts(r.Attempts))
		b = binary.LittleEndian.AppendUint64(b, uint64(d.time.UnixNano()))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(d.handler)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(d.err)))
		b = append(b, d.handler...)
		b = append(b, d.err...)
		return append(b, r.Payload...)
	})
}

func clampAttempts(n int) uint32 {
	if n < 0 {
		return 0
	}
	if n > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}

var errShortBody = errors.New("body too short for its kind")

// decodeBody decodes a frame body whose CRC has been checked. Payloads are
// copied when copyPayload is set, else they alias body.
func decodeBody(body []byte, copyPayload bool) (frame, error) {
	var f frame
	if len(body) == 0 {
		return f, errShortBody
	}
	f.kind = body[0] &^ flagCopy
	f.copied = body[0]&flagCopy != 0
	le := binary.LittleEndian
	payload := func(p []byte) []byte {
		if copyPayload {
			return append([]byte(nil), p...)
		}
		return p
	}
	switch f.kind {
	case kindAppend:
		if len(body) < appendFixed {
			return f, errShortBody
		}
		f.rec = Record{ID: le.Uint64(body[1:]), Type: body[9], Key: le.Uint64(body[10:]),
			Attempts: int(le.Uint32(body[18:])), Payload: payload(body[appendFixed:])}
	case kindAck, kindPurge:
		if f.copied || (len(body)-1)%8 != 0 {
			return f, errors.New("bad id list")
		}
		f.ids = make([]uint64, (len(body)-1)/8)
		for i := range f.ids {
			f.ids[i] = le.Uint64(body[1+8*i:])
		}
	case kindAttempts:
		if f.copied || len(body) != attemptsBody {
			return f, errShortBody
		}
		f.id, f.n = le.Uint64(body[1:]), le.Uint32(body[9:])
	case kindHandlerAttempts:
		if f.copied {
			return f, errShortBody
		}
		if err := decodeHandlerAttempts(body, &f); err != nil {
			return f, err
		}
	case kindReserve:
		if f.copied || len(body) != reserveBody {
			return f, errShortBody
		}
		f.reserve = le.Uint64(body[1:])
	case kindDead:
		if f.copied || len(body) < deadFixed {
			return f, errShortBody
		}
		hl, el := uint64(le.Uint32(body[30:])), uint64(le.Uint32(body[34:]))
		if hl+el > uint64(len(body)-deadFixed) {
			return f, errShortBody
		}
		f.rec = Record{ID: le.Uint64(body[1:]), Type: body[9], Key: le.Uint64(body[10:]),
			Attempts: int(le.Uint32(body[18:]))}
		f.dead.time = time.Unix(0, int64(le.Uint64(body[22:])))
		p := body[deadFixed:]
		f.dead.handler, p = string(p[:hl]), p[hl:]
		f.dead.err, p = string(p[:el]), p[el:]
		f.rec.Payload = payload(p)
	default:
		return f, errors.New("unknown record kind")
	}
	return f, nil
}

// segHeader builds a segment header carrying the id reservation, with a
// random salt (so that no two segments start their chains alike), and
// returns it with the chain's seed: the header crc.
func segHeader(reserved uint64) ([]byte, uint32) {
	b := make([]byte, headerSize)
	copy(b, magic[:])
	binary.LittleEndian.PutUint32(b[4:], version)
	binary.LittleEndian.PutUint64(b[8:], reserved)
	binary.LittleEndian.PutUint32(b[20:], rand.Uint32())
	seed := headerCRC(b)
	binary.LittleEndian.PutUint32(b[16:], seed)
	return b, seed
}

// headerCRC is the checksum of a version 2 header: every byte but its own.
func headerCRC(b []byte) uint32 {
	return crc32.Update(crc32.Checksum(b[:16], castagnoli), castagnoli, b[20:24])
}

// segInfo is what a segment header says.
type segInfo struct {
	reserve uint64 // id reservation
	version uint32
	seed    uint32 // what the first frame chains to (version 2)
}

// parseHeader checks a segment header and returns what it says.
func parseHeader(b []byte) (segInfo, error) {
	if len(b) < headerSize {
		return segInfo{}, errors.New("short segment header")
	}
	if [4]byte(b[:4]) != magic {
		return segInfo{}, errors.New("bad magic")
	}
	info := segInfo{reserve: binary.LittleEndian.Uint64(b[8:]), version: binary.LittleEndian.Uint32(b[4:])}
	stored := binary.LittleEndian.Uint32(b[16:])
	switch info.version {
	case versionPlain:
		if stored != crc32.Checksum(b[:16], castagnoli) {
			return segInfo{}, errors.New("header checksum mismatch")
		}
	case version:
		if stored != headerCRC(b) {
			return segInfo{}, errors.New("header checksum mismatch")
		}
		info.seed = stored
	default:
		return segInfo{}, fmt.Errorf("segment format version %d is not one this journal reads (%d, %d): "+
			"open the directory with the release that wrote it, and drain it (replay and ack every record) before upgrading",
			info.version, versionPlain, version)
	}
	return info, nil
}
