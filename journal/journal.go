// Package journal is an embedded, durable, append-only log of opaque
// records: the storage behind eventbus's durable event types, usable on
// its own (it does not import the bus).
//
// A Journal owns a directory of segment files. Append writes records with
// a checksum each, chained from record to record (so that a torn write is
// told from corruption by the format, whatever the payloads hold), and
// returns once they are fsync'd; concurrent appends share one write and
// one fsync (group commit). Ack marks records done; acked
// records are reclaimed segment by segment, so disk use follows the
// unacked backlog, not the history. Records that failed for good move to
// a persisted dead-letter list (DeadLetter) in the same write that acks
// them, from which they can be listed, re-driven or purged.
//
// Open recovers the directory after any crash, kill -9 included: a torn
// tail of the last segment is cut at the last good record (with a logged
// warning); corruption anywhere else is a *CorruptError naming the file and
// offset. Pending then lists every unacked record in append order.
//
// Record ids are assigned by the journal, increase in append order, and are
// never reused, not even after every record is reclaimed or a crash.
//
// The format and recovery rules are in README.md beside this file.
package journal

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Errors. Compare with errors.Is: the journal wraps them with detail.
var (
	// ErrClosed: the journal was closed.
	ErrClosed = errors.New("journal: closed")
	// ErrLocked: another Journal (in this or another process) has the
	// directory open.
	ErrLocked = errors.New("journal: directory in use by another journal")
	// ErrCorrupt: a segment holds a bad record that is not a torn tail.
	// Open returns it as a *CorruptError.
	ErrCorrupt = errors.New("journal: corrupt")
	// ErrTooLarge: a payload above MaxPayload.
	ErrTooLarge = errors.New("journal: payload too large")
)

// CorruptError is a bad record or segment header that recovery cannot cut
// off as a torn tail: in a segment other than the last, followed by a good
// record chained to it, or with a good checksum but a body that does not
// decode; or a segment of a format version this journal does not read.
// Nothing was changed on disk.
type CorruptError struct {
	File   string // path of the segment file
	Offset int64  // byte offset of the bad record in File
	Err    error  // what is wrong with it
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("journal: corrupt record in %s at offset %d: %v", e.File, e.Offset, e.Err)
}

// Unwrap returns what is wrong with the record.
func (e *CorruptError) Unwrap() error { return e.Err }

// Is reports ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Record is one entry of the journal: an opaque payload with the routing
// data a bus needs to replay it without decoding it first.
type Record struct {
	// ID is assigned by Append: increasing in append order, never reused.
	ID uint64
	// Type and Key are stored as given, for the caller (eventbus stores
	// the event type and the ordering key).
	Type uint8
	Key  uint64
	// Attempts is how many delivery attempts the record has used, as last
	// set by SetAttempts (Append stores the value given, normally 0).
	Attempts int
	// HandlerAttempts counts the delivery attempts the record has used per
	// handler name, as set by SetHandlerAttempts; nil when none was set
	// (records of older releases have Attempts only). Shared by the
	// records the journal returns: do not modify it.
	HandlerAttempts map[string]int
	// Payload is stored as given (Append copies it). Records returned by
	// the journal carry their own copy, read back from disk.
	Payload []byte
}

// DeadLetter is a record moved to the dead-letter list, and why.
type DeadLetter struct {
	Record            // the record as it was when it was moved (Attempts as given to DeadLetter)
	Handler string    // what gave up on it
	Err     string    // the last error's text
	Time    time.Time // when it was given up
}

// Stats is a snapshot of a journal's size and content.
type Stats struct {
	Segments    int    // segment files on disk
	Bytes       int64  // the data in them (the active one also holds up to 1 MiB of zeros written ahead)
	Pending     int    // unacked records
	DeadLetters int    // records in the dead-letter list
	NextID      uint64 // no record id handed out so far is at or above it
	Syncs       uint64 // fsyncs of the log since Open: one per group commit, plus reclamation's
}

// Option configures Open.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	log     *slog.Logger
	segSize int64
	linger  time.Duration
	repair  bool
}

// Defaults.
const (
	DefaultSegmentSize = 64 << 20
	DefaultLinger      = 1 * time.Millisecond
	reserveChunk       = 1 << 20 // ids reserved ahead of use (see README)
)

// WithLogger sets where recovery warnings (a torn tail cut) go.
// Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.log = l })
}

// WithSegmentSize sets the size at which the journal starts a new segment
// file (default 64 MiB; at least 4 KiB). Acked records are reclaimed a
// segment at a time, so disk use is a few segments above the backlog.
func WithSegmentSize(n int64) Option {
	return optionFunc(func(o *options) { o.segSize = max(n, 4<<10) })
}

// WithLinger caps how long the committer may wait, after a commit that
// had several waiting appenders, for them to come back before it writes
// the next batch (default 1ms; 0 writes at once). Within the cap it waits
// at most half the measured (moving average) fsync time, and stops as
// soon as as many appenders as last time have queued. It trades a little
// latency for fewer, fuller fsyncs when many goroutines append.
func WithLinger(d time.Duration) Option {
	return optionFunc(func(o *options) { o.linger = max(d, 0) })
}

// WithRepair makes Open cut the last segment at its first bad record even
// when good records follow it (instead of returning *CorruptError), losing
// them; the cut is logged at Error level. For operators only: a power cut
// can leave later pages of the last unsynced write on disk without earlier
// ones, which looks like corruption in the middle.
func WithRepair() Option {
	return optionFunc(func(o *options) { o.repair = true })
}

// Journal is an open journal directory. All methods are safe for
// concurrent use. Writes go through one committer goroutine, in the order
// the calls were made: an Ack, SetAttempts or DeadLetter is never on disk
// before an append that was queued before it.
type Journal struct {
	dir  string
	opts options
	lock *os.File

	mu       sync.Mutex
	closed   bool
	failed   error        // sticky: a write or fsync failed
	next     uint64       // next id to hand out
	reserved uint64       // ids below it may be handed out without a commit
	ops      []frame      // queued for the committer
	ackq     []uint64     // ids acked, queued for the committer (written after ops)
	ackSpare []uint64     // the committer's last ackq, for reuse
	spare    []frame      // the committer's last batch, for reuse
	cur      *batch       // what callers queuing now wait on
	inflight *batch       // the batch being written, if any
	dirty    bool         // written data not yet fsync'd (mirrors the committer's unsynced)
	waiting  atomic.Int32 // appenders waiting on cur
	kick     chan struct{}
	exited   chan struct{}

	smu sync.Mutex // guards st
	st  state

	// filesMu is held (read) while payloads are read from segment files,
	// and (write) by reclamation while it closes and deletes them.
	filesMu sync.RWMutex

	admin sync.Mutex // serialises Redrive and Purge

	// Owned by the committer goroutine.
	active   *segment
	f        *os.File
	buf      []byte
	durable  uint64        // the reservation on disk
	unsynced bool          // j.f has writes not yet fsync'd
	fsyncAvg time.Duration // moving average of an fsync's duration
	chain    uint32        // checksum of the active segment's last frame, which the next one chains to
	zeroed   int64         // the active file's size: its data, then zeros written ahead (preallocate)
	zeros    []byte        // a chunk of zeros, for preallocate
	syncs    atomic.Uint64
}

// batch is one group commit: everyone queued into it waits for done.
type batch struct {
	done chan struct{}
	err  error
	n    int32 // waiting appenders
	// sync: someone waits for this batch, so it is fsync'd. A batch nobody
	// waits on (acks, attempts, dead letters, AppendAsync) is only written:
	// it is in the page cache, safe from a process crash, and on disk with
	// the next fsync'd batch, roll or Close.
	sync bool
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// Open opens the journal in dir, creating dir if it is missing, and
// recovers it (see the package doc). It fails with ErrLocked if another
// Journal has dir open, and with a *CorruptError if a record other than a
// torn tail is bad. Close it when done.
func Open(dir string, opts ...Option) (*Journal, error) {
	o := options{segSize: DefaultSegmentSize, linger: DefaultLinger}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	j := &Journal{dir: dir, opts: o, lock: lock, st: newState(), cur: newBatch(),
		kick: make(chan struct{}, 1), exited: make(chan struct{})}
	if err := j.recover(); err != nil {
		if j.f != nil {
			j.f.Close()
		}
		j.closeReaders()
		unlockDir(lock)
		return nil, err
	}
	j.next = max(j.st.maxID+1, j.st.reserve, 1)
	j.reserved = j.next // nothing more until a reservation is written
	j.durable = j.st.reserve
	go j.run()
	return j, nil
}

// Append writes recs and returns once they are on disk (fsync'd). The
// records get consecutive ids, first .. first+len(recs)-1; their ID fields
// are ignored. Payloads are copied. Concurrent Appends share one write and
// one fsync.
func (j *Journal) Append(recs ...Record) (first uint64, err error) {
	first, b, err := j.append(recs, true)
	if b != nil {
		<-b.done
		err = b.err
	}
	return first, err
}

// AppendAsync queues recs like Append but returns without waiting for the
// write: they are written and fsync'd by the next group commit, before any
// Ack, SetAttempts or DeadLetter made after AppendAsync returns. Call Sync
// to wait for them. A write error shows in the next calls. The ids
// returned are never reused, even when a crash loses the records.
func (j *Journal) AppendAsync(recs ...Record) (first uint64, err error) {
	first, b, err := j.append(recs, false)
	if b != nil { // the id reservation ran out: wait for the next commit
		<-b.done
		err = b.err
	}
	return first, err
}

func (j *Journal) append(recs []Record, wait bool) (uint64, *batch, error) {
	if len(recs) == 0 {
		return 0, nil, j.check()
	}
	total := 0
	for i := range recs {
		if len(recs[i].Payload) > MaxPayload {
			return 0, nil, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, len(recs[i].Payload), MaxPayload)
		}
		total += len(recs[i].Payload)
	}
	// Payloads are copied before the lock is taken: its hold is short.
	arena := make([]byte, 0, total)
	for _, r := range recs {
		arena = append(arena, r.Payload...)
	}
	j.mu.Lock()
	if err := j.usable(); err != nil {
		j.mu.Unlock()
		return 0, nil, err
	}
	first := j.next
	j.next += uint64(len(recs))
	at := 0
	for _, r := range recs {
		n := len(r.Payload)
		j.ops = append(j.ops, frame{kind: kindAppend, rec: Record{ID: first, Type: r.Type, Key: r.Key,
			Attempts: r.Attempts, Payload: arena[at : at+n : at+n]}})
		at += n
		first++
	}
	first -= uint64(len(recs))
	var b *batch
	if wait || j.next > j.reserved {
		b = j.cur
		b.n++
		b.sync = true
		j.waiting.Add(1)
	}
	j.mu.Unlock()
	j.signal() // after the unlock: the committer's kick is buffered, never lost
	return first, b, nil
}

// Ack marks records done: they will not be returned by Pending again and
// their space is reclaimed. It does not wait for the write (an ack lost in
// a crash means the record is replayed once more). Ids not pending (acked,
// dead-lettered, unknown) are ignored.
func (j *Journal) Ack(ids ...uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil || len(ids) == 0 {
		return err
	}
	j.ackq = append(j.ackq, ids...) // a queue of its own: acks are written last in a batch anyway
	j.signal()
	return nil
}

// SetAttempts records that record id has used n delivery attempts, so that
// a retry limit counts across restarts; Pending returns it in
// Record.Attempts. It does not wait for the write: after a crash the count
// may be the previous one. Ignored if id is not pending.
func (j *Journal) SetAttempts(id uint64, n int) error {
	return j.enqueue(frame{kind: kindAttempts, id: id, n: clampAttempts(n)})
}

// SetHandlerAttempts records that handler has used n delivery attempts of
// record id, so that a retry limit counts per handler across restarts;
// Pending returns the counts in Record.HandlerAttempts (the other
// handlers' counts are kept). Like SetAttempts it does not wait for the
// write, and is ignored if id is not pending. handler must be 1 to 65535
// bytes, and a record counts at most 65535 handlers.
func (j *Journal) SetHandlerAttempts(id uint64, handler string, n int) error {
	if handler == "" || len(handler) > maxHandlerName {
		return fmt.Errorf("journal: SetHandlerAttempts: handler name of %d bytes (1 to %d)", len(handler), maxHandlerName)
	}
	return j.enqueue(frame{kind: kindAttempts, id: id, handler: handler, hn: clampAttempts(n)})
}

// DeadLetter moves pending record d.ID to the dead-letter list, with
// d.Attempts, d.Handler, d.Err and d.Time (zero: now), in the same write
// that acks it; the record's type, key and payload are the journal's. It
// does not wait for the write (if lost in a crash the record is pending
// again). Ignored if d.ID is not pending. Handler and Err are cut to 4 KiB
// and 60 KiB.
func (j *Journal) DeadLetter(d DeadLetter) error {
	if d.Time.IsZero() {
		d.Time = time.Now()
	}
	d.Handler, d.Err = clip(d.Handler, maxHandlerText), clip(d.Err, maxErrText)
	return j.enqueue(frame{kind: kindDead, rec: Record{ID: d.ID, Attempts: d.Attempts},
		dead: deadDetail{handler: d.Handler, err: d.Err, time: d.Time}})
}

// Limits on a dead letter's texts, so a frame stays within what recovery
// accepts.
const (
	maxHandlerText = 4 << 10
	maxErrText     = 60 << 10
)

// clip cuts s to at most n bytes, on a UTF-8 boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func (j *Journal) enqueue(f frame) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil {
		return err
	}
	j.ops = append(j.ops, f)
	j.signal()
	return nil
}

// Sync waits until everything queued before it (AppendAsync, Ack,
// SetAttempts, DeadLetter) is on disk (fsync'd).
func (j *Journal) Sync() error {
	j.mu.Lock()
	if err := j.usable(); err != nil {
		j.mu.Unlock()
		return err
	}
	if len(j.ops) == 0 && len(j.ackq) == 0 && j.inflight == nil && !j.dirty {
		j.mu.Unlock()
		return nil
	}
	b := j.cur // after the one in flight, if any: fsyncs all that is written
	b.sync = true
	j.signal()
	j.mu.Unlock()
	<-b.done
	return b.err
}

// Pending returns every unacked record in append (id) order, with the
// attempts last set, each with its own copy of its payload (read back from
// the segment files). Replay avoids the copies.
func (j *Journal) Pending() ([]Record, error) {
	out := []Record{}
	err := j.Replay(func(r Record) error {
		r.Payload = bytes.Clone(r.Payload)
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Replay calls fn with every unacked record in append (id) order, as
// Pending returns them, and stops at fn's first error, which it returns.
// It reads records a chunk at a time (payloads from the segment files,
// usually from the page cache; checksums were checked by Open) and holds no
// lock while fn runs, so fn may call the journal (Append, Ack). The payload
// given to fn is valid only until fn returns (as bufio.Scanner's Bytes):
// copy what you keep. Records acked or appended while Replay runs may or
// may not be included.
func (j *Journal) Replay(fn func(Record) error) error {
	if err := j.check(); err != nil {
		return err
	}
	var next uint64
	var ents []entry
	var recs []Record
	var buf []byte
	for {
		j.filesMu.RLock()
		j.smu.Lock()
		ents = j.st.pendingFrom(next, replayChunk, ents[:0])
		j.smu.Unlock()
		var err error
		recs, buf, err = readRecords(ents, recs[:0], buf)
		j.filesMu.RUnlock()
		if err != nil {
			return fmt.Errorf("journal: replay: %w", err)
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(ents) < replayChunk {
			return nil
		}
		next = ents[len(ents)-1].ID + 1
	}
}

const replayChunk = 4096

// readRecords appends the records of ents, payloads included, to out. A
// run of entries close together in one segment is read with one ReadAt
// into buf (grown as needed and returned; frame headers and acked records
// in between included), and their payloads point into it.
func readRecords(ents []entry, out []Record, buf []byte) ([]Record, []byte, error) {
	type run struct {
		seg      *segment
		from, to int64
		at       int
	}
	var runs [64]run
	rs := runs[:0]
	size := 0
	for i := 0; i < len(ents); {
		seg, from := ents[i].seg, int64(ents[i].off)
		to := from + int64(ents[i].plen)
		for i++; i < len(ents) && ents[i].seg == seg; i++ {
			off, end := int64(ents[i].off), int64(ents[i].off)+int64(ents[i].plen)
			if off < to || end-from > maxRun || off-to > maxGap {
				break
			}
			to = end
		}
		rs = append(rs, run{seg, from, to, size})
		size += int(to - from)
	}
	if cap(buf) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	k := 0
	for _, r := range rs {
		block := buf[r.at : r.at+int(r.to-r.from)]
		if _, err := r.seg.rf.ReadAt(block, r.from); err != nil {
			return out, buf, fmt.Errorf("read %s at %d: %w", r.seg.path, r.from, err)
		}
		for ; k < len(ents) && ents[k].seg == r.seg && int64(ents[k].off) >= r.from &&
			int64(ents[k].off)+int64(ents[k].plen) <= r.to; k++ {
			e := &ents[k]
			at := int64(e.off) - r.from
			rec := e.Record
			rec.Payload = block[at : at+int64(e.plen) : at+int64(e.plen)]
			out = append(out, rec)
		}
	}
	if k != len(ents) {
		return out, buf, fmt.Errorf("replay: %d of %d records placed", k, len(ents))
	}
	return out, buf, nil
}

// How far one read into one block may reach.
const (
	maxRun = 4 << 20
	maxGap = 64 << 10
)

// DeadLetters returns the dead-letter list in id order.
func (j *Journal) DeadLetters() ([]DeadLetter, error) {
	if err := j.check(); err != nil {
		return nil, err
	}
	j.smu.Lock()
	defer j.smu.Unlock()
	return j.st.deadLetters(), nil
}

// Redrive takes the dead letters ids (unknown ids are skipped) out of the
// list and appends their records again, with new ids and 0 attempts, in
// one write; it returns the new records once on disk. The caller delivers
// them (they are pending like any appended record).
func (j *Journal) Redrive(ids ...uint64) ([]Record, error) {
	return j.redrive(ids, false)
}

// RedriveAll is Redrive of the whole dead-letter list.
func (j *Journal) RedriveAll() ([]Record, error) { return j.redrive(nil, true) }

func (j *Journal) redrive(ids []uint64, all bool) ([]Record, error) {
	j.admin.Lock()
	defer j.admin.Unlock()
	dls, err := j.snapshotDead(ids, all)
	if err != nil || len(dls) == 0 {
		return nil, err
	}
	j.mu.Lock()
	if err := j.usable(); err != nil {
		j.mu.Unlock()
		return nil, err
	}
	out := make([]Record, len(dls))
	old := make([]uint64, len(dls))
	for i, d := range dls {
		out[i] = Record{ID: j.next, Type: d.Type, Key: d.Key, Payload: d.Payload}
		j.next++
		old[i] = d.ID
		j.ops = append(j.ops, frame{kind: kindAppend, rec: out[i]})
	}
	j.ops = append(j.ops, frame{kind: kindPurge, ids: old}) // same batch: one write
	b := j.cur
	b.sync = true
	j.signal()
	j.mu.Unlock()
	<-b.done
	if b.err != nil {
		return nil, b.err
	}
	return out, nil
}

// Purge removes the dead letters ids from the list (unknown ids are
// skipped) and returns how many it removed, once that is on disk.
func (j *Journal) Purge(ids ...uint64) (int, error) { return j.purge(ids, false) }

// PurgeAll empties the dead-letter list and returns how many it removed.
func (j *Journal) PurgeAll() (int, error) { return j.purge(nil, true) }

func (j *Journal) purge(ids []uint64, all bool) (int, error) {
	j.admin.Lock()
	defer j.admin.Unlock()
	dls, err := j.snapshotDead(ids, all)
	if err != nil || len(dls) == 0 {
		return 0, err
	}
	old := make([]uint64, len(dls))
	for i, d := range dls {
		old[i] = d.ID
	}
	j.mu.Lock()
	if err := j.usable(); err != nil {
		j.mu.Unlock()
		return 0, err
	}
	j.ops = append(j.ops, frame{kind: kindPurge, ids: old})
	b := j.cur
	b.sync = true
	j.signal()
	j.mu.Unlock()
	<-b.done
	if b.err != nil {
		return 0, b.err
	}
	return len(old), nil
}

// snapshotDead returns the listed dead letters among ids (all of them if
// all), after every queued DeadLetter is applied. Only Redrive and Purge
// remove from the list, and the caller holds j.admin, so it stays valid.
func (j *Journal) snapshotDead(ids []uint64, all bool) ([]DeadLetter, error) {
	if err := j.Sync(); err != nil {
		return nil, err
	}
	j.smu.Lock()
	defer j.smu.Unlock()
	if all {
		return j.st.deadLetters(), nil
	}
	var out []DeadLetter
	seen := map[uint64]bool{}
	for _, id := range ids {
		if d := j.st.dead[id]; d != nil && !seen[id] {
			seen[id] = true
			out = append(out, d.DeadLetter)
		}
	}
	return out, nil
}

// Stats returns a snapshot of the journal's size and content.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	next := j.next
	j.mu.Unlock()
	j.smu.Lock()
	defer j.smu.Unlock()
	s := Stats{Segments: len(j.st.segs), Pending: j.st.pending, DeadLetters: len(j.st.dead), NextID: next,
		Syncs: j.syncs.Load()}
	for _, seg := range j.st.segs {
		s.Bytes += seg.size
	}
	return s
}

// Close writes what is queued, waits for it to be on disk, and releases
// the directory. Calls after Close, and a second Close, return ErrClosed.
// It returns the write error that stopped the journal, if one did.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return ErrClosed
	}
	j.closed = true
	j.signal()
	j.mu.Unlock()
	<-j.exited
	err := j.failed
	if j.f != nil && err == nil && j.zeroed > j.active.size { // the zeros written ahead
		if terr := j.f.Truncate(j.active.size); terr != nil {
			err = fmt.Errorf("journal: close: %w", terr)
		} else if serr := fdatasync(j.f); serr != nil {
			err = fmt.Errorf("journal: close: %w", serr)
		}
	}
	if j.f != nil {
		if cerr := j.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("journal: close: %w", cerr)
		}
	}
	j.closeReaders()
	unlockDir(j.lock)
	return err
}

// closeReaders closes the segments' read handles (Close, failed Open).
func (j *Journal) closeReaders() {
	j.filesMu.Lock()
	defer j.filesMu.Unlock()
	for _, seg := range j.st.segs {
		if seg.rf != nil {
			seg.rf.Close()
			seg.rf = nil
		}
	}
}

func (j *Journal) check() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.usable()
}

// usable returns why the journal takes no more calls. j.mu is held.
func (j *Journal) usable() error {
	if j.closed {
		return ErrClosed
	}
	return j.failed
}

// signal wakes the committer. j.mu is held.
func (j *Journal) signal() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// run is the committer: it takes everything queued, writes it with one
// write and one fsync, and wakes the callers waiting on it. After a commit
// that woke several appenders it lingers a little (spinning, as timers are
// far coarser than the linger) for them to queue their next records, so
// the next fsync carries them all.
func (j *Journal) run() {
	defer close(j.exited)
	var last int32
	for {
		j.mu.Lock()
		for len(j.ops) == 0 && len(j.ackq) == 0 && !j.cur.sync && !j.closed {
			j.mu.Unlock()
			<-j.kick
			j.mu.Lock()
		}
		if len(j.ops) == 0 && len(j.ackq) == 0 && !j.cur.sync { // closed: make what is written durable
			dirty, failed := j.dirty, j.failed
			j.mu.Unlock()
			if dirty && failed == nil {
				if err := j.syncFile(); err != nil {
					j.mu.Lock()
					j.failed = fmt.Errorf("journal: write failed, journal stopped: %w", err)
					j.mu.Unlock()
				}
			}
			return
		}
		if linger := j.lingerFor(); linger > 0 && last > 1 && j.waiting.Load() < last && !j.closed {
			j.mu.Unlock()
			deadline := time.Now().Add(linger)
			for i := 0; j.waiting.Load() < last; i++ {
				if i%8 == 7 && !time.Now().Before(deadline) { // the clock is read sparingly: it is not free
					break
				}
				runtime.Gosched()
			}
			j.mu.Lock()
		}
		ops, acks, b := j.ops, j.ackq, j.cur
		j.ops, j.ackq, j.cur, j.inflight = j.spare[:0], j.ackSpare[:0], newBatch(), b
		j.waiting.Store(0)
		next, failed := j.next, j.failed
		j.mu.Unlock()

		err := failed
		var reserved uint64
		if err == nil {
			reserved, err = j.commit(ops, acks, next, b.sync)
		}
		clear(ops)
		j.mu.Lock()
		j.dirty = j.unsynced
		if err != nil && j.failed == nil {
			j.failed = fmt.Errorf("journal: write failed, journal stopped: %w", err)
		}
		if reserved > j.reserved {
			j.reserved = reserved
		}
		j.inflight, j.spare, j.ackSpare = nil, ops, acks[:0]
		b.err = j.failed
		j.mu.Unlock()
		close(b.done)
		if b.sync { // a batch nobody waited on (acks) says nothing of the appenders
			last = b.n
		}
		if err == nil {
			err := j.maybeRoll()
			if err == nil {
				err = j.preallocate()
			}
			if err != nil {
				j.mu.Lock()
				if j.failed == nil {
					j.failed = fmt.Errorf("journal: write failed, journal stopped: %w", err)
				}
				j.mu.Unlock()
			}
		}
	}
}
