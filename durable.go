package eventbus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imbus/eventbus/internal/engine"
	"github.com/imbus/eventbus/journal"
)

// Journal stores the events of durable types (WithJournal) so that they
// survive a crash: the bus appends each one before AddEvent returns, acks
// it when the chain and every subscriber have finished with it, records
// its attempts, moves it to a dead-letter list when given up, and replays
// what is not acked at Start. *journal.Journal implements it; another
// store can, with the same guarantees:
//
//   - Append returns once its records are on disk; concurrent Appends may
//     share one sync. AppendAsync queues records and returns at once; they
//     reach the disk before any Ack, SetHandlerAttempts or DeadLetter made
//     after it returns. Ids are increasing, never reused. Neither keeps a
//     record's Payload after it returns (copy it): the bus reuses it.
//   - Ack, SetHandlerAttempts and DeadLetter need not wait for the disk:
//     one lost in a crash only means a record is replayed again (or with a
//     handler's previous attempt count). DeadLetter acks the record in the
//     same write. SetHandlerAttempts keeps the other handlers' counts.
//   - Replay calls fn for every record neither acked nor dead-lettered, in
//     append order, with the counts in Record.HandlerAttempts (a record
//     with none but a Record.Attempts, from an older release, has that
//     count charged to the first handler that fails).
//   - DeadLetters lists the dead letters. If a DeadLetter shows in it only
//     once written, the store also has a Sync() error method that waits
//     for the writes queued before it: Redrive calls it first.
type Journal interface {
	Append(recs ...journal.Record) (first uint64, err error)
	AppendAsync(recs ...journal.Record) (first uint64, err error)
	Ack(ids ...uint64) error
	SetHandlerAttempts(id uint64, handler string, n int) error
	DeadLetter(d journal.DeadLetter) error
	Replay(fn func(journal.Record) error) error
	DeadLetters() ([]journal.DeadLetter, error)
	Purge(ids ...uint64) (int, error)
}

// WithJournal makes the given event types durable: their events are written
// to j before AddEvent returns and survive a crash (see ARCHITECTURE.md,
// Durable types and the journal). Channel- and pusher-pool events are encoded
// by the bus; a user-pool type also needs WithCodec. j must outlive the bus:
// close it after Close.
//
// An outside AddEvent or TryAddEvent of a durable type returns nil only
// once the event is on disk; concurrent adds share one sync. A follow-on
// add (a handler's ctx) never waits for the disk, but its record is on
// disk before its parent's ack. An event is acked once its chain and every
// subscriber have finished with it; a dead-lettered one moves to j's
// dead-letter list (see Bus.Redrive). Start queues every event not acked,
// each key's in its original order, ahead of any later add; its attempts
// count, per handler and per subscriber, from where they were, and CallInfo.EventID is DurableEventID of its
// record id (RecordID maps back), the same in every process life and unique
// among the process's EventIDs (delivery is at-least-once: handlers can
// dedupe on it). A Close that reaches its deadline leaves unfinished
// durable events for the next Start instead of dead-lettering them.
// Register the handlers of durable types before Start: a replayed record
// whose type has no handler (nor subscriber) then goes to the journal's
// dead-letter list with ErrNoHandler (Bus.Redrive brings it back).
func WithJournal(j Journal, types ...EventType) Option {
	return optionFunc(func(cfg *config) {
		if j == nil {
			cfg.errs = append(cfg.errs, errors.New("eventbus: WithJournal: journal is nil"))
			return
		}
		if cfg.journal != nil && cfg.journal != j {
			cfg.errs = append(cfg.errs, errors.New("eventbus: WithJournal: one journal per bus"))
			return
		}
		cfg.journal = j
		for _, t := range types {
			if t == EventUnknown {
				cfg.errs = append(cfg.errs, fmt.Errorf("%w: WithJournal: type 0 is reserved", ErrUnknownEventType))
				continue
			}
			cfg.durable[t] = true
		}
	})
}

// checkDurableLocked checks that every durable type is known (at Start:
// types may be defined after New) and, in the user pool, has a Codec.
// b.mu must be held, or the bus not yet shared.
func (b *Bus) checkDurableLocked() error { return b.checkDurable(true) }

func (b *Bus) checkDurable(final bool) error {
	for t, on := range b.cfg.durable {
		if !on {
			continue
		}
		et := EventType(t)
		switch info := b.types[t]; info.pool {
		case "":
			if final {
				return fmt.Errorf("%w: WithJournal(%d): define the type before Start", ErrUnknownEventType, t)
			}
		case PoolUser:
			if b.cfg.codecs[et] == nil {
				return fmt.Errorf("%w: WithJournal(%v): a durable user-pool type needs WithCodec", ErrNoCodec, b.typeNameLocked(et))
			}
		}
	}
	return nil
}

// durableEvent is what the bus keeps of a journaled event while it runs:
// its record, the attempts earlier process lives used, and the dead letter
// to persist if it is given up.
type durableEvent struct {
	id   uint64
	dead *journal.DeadLetter
	// prior counts, by handler (or subscriber) name, the attempts earlier
	// lives used: MaxAttempts counts one handler's attempts over all lives.
	// Read only.
	prior map[string]int
	// legacy is the single count of a record written by an older release
	// (no per-handler counts), charged to the first handler that fails.
	legacy atomic.Int64
}

// addDurable adds ev of a durable type: it reserves room in every engine
// the event goes to, appends the record (waiting for the disk unless the
// add is a follow-on), then commits to the engines with a tracker that
// acks the record when every delivery has finished.
func (b *Bus) addDurable(p *pool, ch *chain, it engine.Item[Event], parent engine.Parent, wait context.Context) (engine.PushResult, error) {
	// Encoded into a pooled buffer: the journal copies the payload.
	bp := encodeBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledEncoding {
			encodeBufs.Put(bp)
		}
	}()
	data, err := b.appendEvent((*bp)[:0], it.Event)
	if err != nil {
		return engine.Accepted, err
	}
	*bp = data
	follow := engine.Running(parent)
	var appendErr error
	rec := journal.Record{Type: uint8(it.Event.Type()), Key: it.Key, Payload: data}
	res := b.fanOutWith(p, ch, it, parent, wait, func() (*engine.Tracker, error) {
		var id uint64
		var err error
		if follow {
			id, err = b.journal.AppendAsync(rec)
		} else {
			id, err = b.journal.Append(rec)
		}
		if err != nil {
			appendErr = fmt.Errorf("eventbus: journal append: %w", err)
			return nil, appendErr
		}
		return b.durableTracker(id, nil, 0), nil
	})
	return res, appendErr
}

// encodeBufs holds buffers for addDurable's encodings (*[]byte); one
// larger than maxPooledEncoding is left to the GC.
var encodeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

const maxPooledEncoding = 64 << 10

// durableTracker returns the tracker of journal record id, whose handlers
// used prior attempts in earlier lives (legacy: an older release's single
// count): it acks the record when the event has finished, or moves it to
// the dead-letter list.
func (b *Bus) durableTracker(id uint64, prior map[string]int, legacy int) *engine.Tracker {
	d := &durableEvent{id: id, prior: prior}
	if prior == nil {
		d.legacy.Store(int64(legacy))
	}
	t := engine.NewTracker(1, func(o engine.Outcome) {
		var err error
		switch o {
		case engine.Handled, engine.Stopped:
			err = b.journal.Ack(d.id)
		case engine.Dead:
			dl := d.dead
			if dl == nil {
				dl = &journal.DeadLetter{Err: "dead-lettered"}
			}
			dl.ID = d.id
			err = b.journal.DeadLetter(*dl)
		}
		// Abandoned (a Close deadline): left for the next Start.
		if err != nil {
			b.log.Error("eventbus: journal", "record", d.id, "outcome", o, "err", err)
		}
	})
	t.ID, t.Info = DurableEventID(id), d
	return t
}

// durableIDBit marks the EventIDs of durable events. The other events'
// EventIDs come from a process-wide counter that never reaches it, so the
// two kinds never collide in one process; bit 62 rather than 63 keeps every
// EventID a positive int64 (tracing attributes are int64).
const durableIDBit = 1 << 62

// DurableEventID returns the CallInfo.EventID of the durable event stored
// as journal record recordID: the same in every process life, and never
// equal to the EventID of an event that is not durable. It costs nothing.
func DurableEventID(recordID uint64) uint64 { return recordID | durableIDBit }

// RecordID returns the journal record id of a durable event's
// CallInfo.EventID (to look it up in the journal, or Redrive it), or false
// when eventID is not a durable event's.
func RecordID(eventID uint64) (id uint64, durable bool) {
	if eventID&durableIDBit == 0 {
		return 0, false
	}
	return eventID &^ durableIDBit, true
}

// durableOf returns the journaled event an item stands for, or nil.
func durableOf(it *engine.Item[Event]) *durableEvent {
	if it.Track == nil {
		return nil
	}
	d, _ := it.Track.Info.(*durableEvent)
	return d
}

// noteDead records, for a durable item, the dead letter its record moves
// to once every delivery has finished.
func noteDead(it *engine.Item[Event], handler string, attempts int, err error) {
	d := durableOf(it)
	if d == nil {
		return
	}
	text := ""
	if err != nil {
		text = err.Error()
	}
	if d.dead == nil || d.dead.Err == "" { // the first delivery to give up says why
		d.dead = &journal.DeadLetter{Record: journal.Record{Attempts: attempts}, Handler: handler, Err: text, Time: time.Now()}
	}
}

// alwaysRunning is the parent of replayed events: they go in whatever the
// capacity, as follow-on events do (replay ignores QueueSize). Its word's
// returned bit is never set.
var alwaysRunning engine.Parent = new(uint32)

// replay queues every journaled event not yet acked, in append order. A
// record the bus cannot take back (a type no longer durable here, data it
// cannot decode) is moved to the journal's dead-letter list with the
// reason, and logged: nothing is dropped silently.
func (b *Bus) replay() error {
	var sl slab // the replayed events' memory, taken a block at a time
	return b.journal.Replay(func(rec journal.Record) error {
		t := EventType(rec.Type)
		give := func(why error) error {
			b.log.Error("eventbus: journal: cannot replay record", "record", rec.ID, "type", t, "err", why)
			return b.journal.DeadLetter(journal.DeadLetter{Record: journal.Record{ID: rec.ID, Attempts: rec.Attempts},
				Handler: "replay", Err: why.Error(), Time: time.Now()})
		}
		if !b.cfg.durable[t] {
			return give(fmt.Errorf("%w: %v is not durable in this bus", ErrUnknownEventType, b.typeNameLocked(t)))
		}
		ev, err := b.decodeEvent(t, rec.Payload, &sl)
		if err != nil {
			return give(err)
		}
		p, _, err := b.route(ev)
		if err != nil {
			return give(err)
		}
		key, err := p.key(ev)
		if err != nil {
			return give(err)
		}
		ch := b.chains[t].Load()
		if ch == nil || (len(ch.handlers) == 0 && len(ch.subs) == 0) {
			return give(fmt.Errorf("%w: %v", ErrNoHandler, b.typeNameLocked(t)))
		}
		it := engine.Item[Event]{Event: ev, Key: key, Track: b.durableTracker(rec.ID, rec.HandlerAttempts, rec.Attempts), Tag: rec.Type}
		if b.observer != nil {
			it.Added = p.eng.Since()
		}
		if res := b.fanOutWith(p, ch, it, alwaysRunning, nil, nil); res != engine.Accepted {
			return fmt.Errorf("eventbus: journal replay of record %d: %v", rec.ID, res)
		}
		return nil
	})
}

// Redrive adds the journal's dead letters with the given ids (all of them
// when none is given) back into the bus as new durable events, then purges
// them from the list: a crash in between at worst adds one twice. It
// returns how many were added. Events of types that are no longer durable
// or cannot be decoded stay in the list, and the error says why.
func (b *Bus) Redrive(ctx context.Context, ids ...uint64) (int, error) {
	if !b.made() || b.journal == nil {
		return 0, errors.New("eventbus: Redrive: the bus has no journal (WithJournal)")
	}
	// A store that applies DeadLetter once written (*journal.Journal)
	// says so with Sync: without it, the dead letters of events finished
	// just before (a WaitIdle) would be missed.
	if s, ok := b.journal.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return 0, err
		}
	}
	dls, err := b.journal.DeadLetters()
	if err != nil {
		return 0, err
	}
	want := map[uint64]bool{}
	for _, id := range ids {
		want[id] = true
	}
	n := 0
	var errs []error
	for _, dl := range dls {
		if len(ids) > 0 && !want[dl.ID] {
			continue
		}
		t := EventType(dl.Type)
		ev, err := b.DecodeEvent(t, dl.Payload)
		if err == nil && !b.cfg.durable[t] {
			err = fmt.Errorf("%w: %v is not durable in this bus", ErrUnknownEventType, b.TypeName(t))
		}
		if err == nil {
			err = b.AddEvent(ctx, ev)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("dead letter %d: %w", dl.ID, err))
			continue
		}
		if _, err := b.journal.Purge(dl.ID); err != nil {
			errs = append(errs, fmt.Errorf("dead letter %d: purge: %w", dl.ID, err))
		}
		n++
	}
	return n, errors.Join(errs...)
}
