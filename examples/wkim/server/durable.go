package server

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/journal"
)

// Durable mode (Config.Durable) keeps two journals in its directory:
//
//   - bus/: the bus's journal. Messages are EventChannelStore events,
//     durable (eventbus.WithJournal), appended as "forward" adds them (a
//     follow-on add, which does not wait for the disk); "fanout" waits for
//     this journal's fsync beside its own append, before the SENDACK. The
//     record is acked when its chain (store, fanout, sendack) has
//     finished; until then a restart replays it.
//   - server/: the server's own records. One delivery record per
//     message, with its receivers, appended (and fsync'd) by "fanout"
//     before the push events and the SENDACK, and acked when the last of
//     them has acknowledged the RECV, or had the message dropped from its
//     offline queue (MaxOffline, OfflineTTL); Close rewrites those that
//     some receivers are done with. A restart loads them back into the
//     offline queues, each receiver's in its original order. The
//     same journal holds each channel's sequence reservation, and the login
//     tokens and groups set through the API (the latest of each).
//
// The delivery records are written before the bus acks the message's
// record, so at every moment each accepted message is in one journal or
// the other until every receiver has acknowledged it.
const (
	recDelivery uint8 = 1 // an encoded PushContext: one message, one receiver
	recSeq      uint8 = 2 // a channel's sequence reservation
	recToken    uint8 = 3 // a login token's hash, then the uid
	recGroup    uint8 = 4 // a group's members, JSON
)

// seqBlock is how many sequence numbers one reservation covers: after a
// crash a channel's sequence goes on from its last reservation, so it
// never repeats a number, with a gap of up to seqBlock.
const seqBlock = 1024

// durable is the state of durable mode.
type durable struct {
	bus   *journal.Journal // the bus's: EventChannelStore events
	state *journal.Journal // the server's: deliveries, reservations, tokens, groups

	mu    sync.Mutex
	admin map[string]uint64 // "t/uid" or "g/id" → id of its latest record
}

func openDurable(dir string, log *slog.Logger) (*durable, error) {
	bj, err := journal.Open(filepath.Join(dir, "bus"), journal.WithLogger(log))
	if err != nil {
		return nil, fmt.Errorf("server: durable: %w", err)
	}
	sj, err := journal.Open(filepath.Join(dir, "server"), journal.WithLogger(log))
	if err != nil {
		_ = bj.Close()
		return nil, fmt.Errorf("server: durable: %w", err)
	}
	return &durable{bus: bj, state: sj, admin: map[string]uint64{}}, nil
}

func (d *durable) close() error { return errors.Join(d.bus.Close(), d.state.Close()) }

// load reads the server journal back: offline queues, sequence
// reservations, tokens and groups. It runs in New, before the bus starts
// (and replays the messages not yet fanned out).
func (s *Server) load() error {
	d := s.dur
	reordered := false
	defer func() {
		if !reordered {
			return
		}
		// Records rewritten by Close go back to their first place.
		for _, se := range s.sessions.m {
			slices.SortStableFunc(se.offline, func(a, b *eventbus.Message) int {
				return cmp.Compare(se.inbox[a.MessageID].order, se.inbox[b.MessageID].order)
			})
		}
	}()
	return d.state.Replay(func(r journal.Record) error {
		switch r.Type {
		case recDelivery:
			ev, err := s.bus.DecodeEvent(eventbus.EventPushOffline, r.Payload)
			if err != nil {
				return fmt.Errorf("server: durable: delivery record %d: %w", r.ID, err)
			}
			p := ev.(*eventbus.PushContext)
			if len(p.Subscribers) == 0 || p.Message == nil {
				return fmt.Errorf("server: durable: delivery record %d: want a message and its receivers", r.ID)
			}
			e := &inboxEntry{rec: r.ID, order: r.ID, n: int32(len(p.Subscribers))}
			if o, err := strconv.ParseUint(p.Message.Header[headerOrder], 10, 64); err == nil {
				e.order = o // rewritten by Close
				reordered = true
			}
			e.left.Store(e.n)
			for _, uid := range p.Subscribers {
				se := s.sessions.get(uid)
				if se.inbox == nil {
					se.inbox = map[int64]*inboxEntry{}
				}
				if _, dup := se.inbox[p.Message.MessageID]; dup {
					s.release(e)
					continue
				}
				se.offline = append(se.offline, p.Message)
				se.inbox[p.Message.MessageID] = e
			}
		case recSeq:
			if len(r.Payload) < 9 {
				return fmt.Errorf("server: durable: reservation record %d: %d bytes", r.ID, len(r.Payload))
			}
			reserved := binary.LittleEndian.Uint64(r.Payload)
			ch := s.channels.get(string(r.Payload[9:]), r.Payload[8])
			if ch.resRec != 0 { // a crash between a reservation and the ack of the one before
				_ = d.state.Ack(ch.resRec)
			}
			ch.reserved, ch.resRec = max(ch.reserved, reserved), r.ID
			ch.seq = ch.reserved
		case recToken:
			if len(r.Payload) <= 32 {
				return fmt.Errorf("server: durable: token record %d: %d bytes", r.ID, len(r.Payload))
			}
			uid := string(r.Payload[32:])
			s.tokens.setHash(uid, [32]byte(r.Payload[:32]))
			d.replaced("t/"+uid, r.ID)
		case recGroup:
			var g struct {
				ID      string   `json:"id"`
				Members []string `json:"members"`
			}
			if err := json.Unmarshal(r.Payload, &g); err != nil {
				return fmt.Errorf("server: durable: group record %d: %w", r.ID, err)
			}
			if err := s.groups.set(g.ID, g.Members, s.cfg.MaxGroups); err != nil {
				s.log.Warn("durable: group not restored", "group", g.ID, "err", err)
				_ = d.state.Ack(r.ID)
				return nil
			}
			d.replaced("g/"+g.ID, r.ID)
		default:
			s.log.Warn("durable: unknown record type, left alone", "record", r.ID, "type", r.Type)
		}
		return nil
	})
}

// replaced makes id the latest record of key and acks the one before (at
// load, after a crash between a set and the ack of the value before).
func (d *durable) replaced(key string, id uint64) {
	if old := d.admin[key]; old != 0 {
		_ = d.state.Ack(old)
	}
	d.admin[key] = id
}

// put appends the record of a token or group change, waits for the disk,
// then applies it and acks the record it replaces. Of two concurrent puts
// of one key, the later record wins, in memory as on disk.
func (d *durable) put(key string, typ uint8, payload []byte, apply func() error) error {
	id, err := d.state.Append(journal.Record{Type: typ, Payload: payload})
	if err != nil {
		return fmt.Errorf("server: durable: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.admin[key]
	if id < old { // a later put of the same key was applied first
		return d.state.Ack(id)
	}
	if err := apply(); err != nil {
		_ = d.state.Ack(id)
		return err
	}
	d.admin[key] = id
	if old != 0 {
		return d.state.Ack(old)
	}
	return nil
}

func tokenRecord(uid string, h [32]byte) []byte { return append(h[:], uid...) }

func groupRecord(id string, members []string) []byte {
	b, _ := json.Marshal(struct {
		ID      string   `json:"id"`
		Members []string `json:"members"`
	}{id, members})
	return b
}

// reserve makes sure the channel's sequence numbers up to seq are covered
// by a reservation on its way to disk: the delivery records appended next
// (and fsync'd) are behind it in the journal, and the SENDACK waits for
// them. Only the channel's own events call it, one at a time.
func (d *durable) reserve(ch *channel, id string, typ uint8, seq uint64) error {
	if seq <= ch.reserved {
		return nil
	}
	next := seq + seqBlock
	p := binary.LittleEndian.AppendUint64(make([]byte, 0, 9+len(id)), next)
	p = append(append(p, typ), id...)
	rid, err := d.state.AppendAsync(journal.Record{Type: recSeq, Payload: p})
	if err != nil {
		return fmt.Errorf("server: durable: %w", err)
	}
	if ch.resRec != 0 {
		_ = d.state.Ack(ch.resRec)
	}
	ch.reserved, ch.resRec = next, rid
	return nil
}

// delivery is one message for one receiver, as fanout emits it; the
// deliveries of one message are next to each other.
type delivery struct {
	m   *eventbus.Message
	uid string
}

// inboxEntry is a delivery record in the receivers' sessions: acked when
// the last of its receivers is done with the message.
type inboxEntry struct {
	rec   uint64
	order uint64 // the id of its first record: its place in the offline queues
	n     int32  // receivers in the record
	left  atomic.Int32
}

// headerOrder, in a rewritten delivery record, is the entry's order.
const headerOrder = "inboxOrder"

// compact rewrites, at Close, the delivery records that some of their
// receivers are done with, naming only the others, so that a restart does
// not deliver the message again to those who had it. The bus is closed.
func (s *Server) compact() error {
	left := map[*inboxEntry][]string{}
	msgs := map[*inboxEntry]*eventbus.Message{}
	s.sessions.mu.Lock()
	for uid, se := range s.sessions.m {
		se.mu.Lock()
		for _, m := range append(se.pending, se.offline...) {
			if e := se.inbox[m.MessageID]; e != nil && e.left.Load() < e.n {
				left[e] = append(left[e], uid)
				msgs[e] = m
			}
		}
		se.mu.Unlock()
	}
	s.sessions.mu.Unlock()
	var errs []error
	for e, uids := range left {
		m := *msgs[e]
		m.Header = maps.Clone(m.Header)
		m.Header[headerOrder] = strconv.FormatUint(e.order, 10)
		data, err := s.bus.EncodeEvent(&eventbus.PushContext{EventType: eventbus.EventPushOffline,
			Message: &m, Subscribers: uids})
		if err == nil {
			_, err = s.dur.state.AppendAsync(journal.Record{Type: recDelivery, Payload: data})
		}
		if err == nil {
			err = s.dur.state.Ack(e.rec)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// persist appends a delivery record for each message of ds, naming its
// receivers that have no record of it yet (a message replayed after a
// crash may have them already), waits for the disk, and registers the
// records with the receivers' sessions. It returns the deliveries to push.
// On error nothing is registered: a retry appends them again (the orphans
// are replayed as duplicates with the same MessageID at the next start).
func (s *Server) persist(ds []delivery) ([]delivery, error) {
	var recs []journal.Record
	var counts []int // receivers of each record
	kept := ds[:0]
	for i := 0; i < len(ds); {
		m := ds[i].m
		var uids []string
		for ; i < len(ds) && ds[i].m == m; i++ {
			se := s.sessions.get(ds[i].uid)
			se.mu.Lock()
			_, dup := se.inbox[m.MessageID]
			se.mu.Unlock()
			if !dup {
				uids = append(uids, ds[i].uid)
				kept = append(kept, ds[i])
			}
		}
		if len(uids) == 0 {
			continue
		}
		data, err := s.bus.EncodeEvent(&eventbus.PushContext{EventType: eventbus.EventPushOffline,
			Message: m, Subscribers: uids})
		if err != nil {
			return nil, eventbus.Permanent(err)
		}
		recs = append(recs, journal.Record{Type: recDelivery, Payload: data})
		counts = append(counts, len(uids))
	}
	if len(recs) == 0 {
		// Nothing to append: the sequence reservation must still be on
		// disk before the SENDACK shows the number.
		return kept, s.dur.state.Sync()
	}
	first, err := s.dur.state.Append(recs...)
	if err != nil {
		return nil, fmt.Errorf("server: durable: %w", err)
	}
	k := 0
	for i, n := range counts {
		e := &inboxEntry{rec: first + uint64(i), order: first + uint64(i), n: int32(n)}
		e.left.Store(e.n)
		for _, d := range kept[k : k+n] {
			se := s.sessions.get(d.uid)
			se.mu.Lock()
			if se.inbox == nil {
				se.inbox = map[int64]*inboxEntry{}
			}
			se.inbox[d.m.MessageID] = e
			se.mu.Unlock()
		}
		k += n
	}
	return kept, nil
}

// done drops se's user from the delivery record of m, if there is one
// (it acknowledged the message, or it was dropped from its offline
// queue), and acks the record when it was the last. se.mu must be held.
func (s *Server) done(se *session, m *eventbus.Message) {
	if s.dur == nil {
		return
	}
	if e, ok := se.inbox[m.MessageID]; ok {
		delete(se.inbox, m.MessageID)
		s.release(e)
	}
}

// release counts one receiver of e done and acks e's record after the
// last.
func (s *Server) release(e *inboxEntry) {
	if e.left.Add(-1) != 0 {
		return
	}
	if err := s.dur.state.Ack(e.rec); err != nil {
		s.log.Error("durable: ack delivery record", "record", e.rec, "err", err)
	}
}
