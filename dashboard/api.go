package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imbus/eventbus"
)

// PoolView is one pool's (or one subscriber's) counters as the API shows
// them. Durations are in milliseconds.
type PoolView struct {
	Name         string  `json:"name"`
	Workers      int     `json:"workers"`
	Busy         int64   `json:"busy"` // workers with an event: min(in flight, workers)
	Idle         int64   `json:"idle"`
	Queued       int64   `json:"queued"`
	InFlight     int64   `json:"inFlight"`
	Retrying     int64   `json:"retrying"`
	Overflow     int64   `json:"overflow"`
	Added        uint64  `json:"added"`
	Handled      uint64  `json:"handled"`
	Stopped      uint64  `json:"stopped"`
	Failed       uint64  `json:"failed"`
	Retried      uint64  `json:"retried"`
	DeadLettered uint64  `json:"deadLettered"`
	Panics       uint64  `json:"panics"`
	Timeouts     uint64  `json:"timeouts"`
	Rejected     uint64  `json:"rejected"`
	P50          float64 `json:"p50ms"`
	P99          float64 `json:"p99ms"`
	Max          float64 `json:"maxMs"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func poolView(name string, s eventbus.PoolStats) PoolView {
	busy := min(s.InFlight, int64(s.Workers))
	return PoolView{Name: name, Workers: s.Workers, Busy: busy, Idle: int64(s.Workers) - busy,
		Queued: s.Queued, InFlight: s.InFlight, Retrying: s.Retrying, Overflow: s.Overflow,
		Added: s.Added, Handled: s.Handled, Stopped: s.Stopped, Failed: s.Failed,
		Retried: s.Retried, DeadLettered: s.DeadLettered, Panics: s.Panics,
		Timeouts: s.Timeouts, Rejected: s.Rejected,
		P50: ms(s.Latency.P50), P99: ms(s.Latency.P99), Max: ms(s.Latency.Max)}
}

// Overview is GET api/overview.
type Overview struct {
	Pools       []PoolView `json:"pools"`
	Subscribers []PoolView `json:"subscribers"`
	Actions     bool       `json:"actions"`
	Payloads    bool       `json:"payloads"`
	Journal     bool       `json:"journal"`
	Bridge      bool       `json:"bridge"`
}

func pools(st eventbus.Stats) (ps, subs []PoolView) {
	ps = []PoolView{poolView(string(eventbus.PoolUser), st.User),
		poolView(string(eventbus.PoolChannel), st.Channel), poolView(string(eventbus.PoolPusher), st.Pusher)}
	subs = []PoolView{}
	for name, s := range st.Subscribers {
		subs = append(subs, poolView(name, s))
	}
	sort.Slice(subs, func(i, j int) bool { return subs[i].Name < subs[j].Name })
	return ps, subs
}

func (d *handler) overview() any {
	ps, subs := pools(d.bus.Stats())
	return Overview{Pools: ps, Subscribers: subs, Actions: d.actions, Payloads: d.payloads,
		Journal: d.journal != nil, Bridge: d.bridge != nil}
}

// TypeView is one event type in GET api/handlers.
type TypeView struct {
	Type        int        `json:"type"`
	Name        string     `json:"name"`
	Pool        string     `json:"pool"`
	Durable     bool       `json:"durable"`
	Routed      bool       `json:"routed"`
	Handlers    []string   `json:"handlers"`
	Subscribers []PoolView `json:"subscribers"` // Name is the subscriber's; Queued is its lag
	// HandlerStats has the counters of each handler of the chain, then of
	// each subscriber, with WithHandlerStats only.
	HandlerStats []HandlerView `json:"handlerStats,omitempty"`
}

// HandlersView is GET api/handlers: per type, the chain in order and the
// subscribers with their counters; per pool the counters its chains share.
type HandlersView struct {
	Pools []PoolView `json:"pools"`
	Types []TypeView `json:"types"`
}

func (d *handler) handlers() any {
	st := d.bus.Stats()
	ps, _ := pools(st)
	out := HandlersView{Pools: ps, Types: []TypeView{}}
	for _, t := range d.bus.Types() {
		if len(t.Handlers) == 0 && len(t.Subscribers) == 0 && !t.Routed {
			continue
		}
		tv := TypeView{Type: int(t.Type), Name: t.Name, Pool: string(t.Pool), Durable: t.Durable,
			Routed: t.Routed, Handlers: t.Handlers, Subscribers: []PoolView{}}
		if tv.Handlers == nil {
			tv.Handlers = []string{}
		}
		for _, s := range t.Subscribers {
			tv.Subscribers = append(tv.Subscribers, poolView(s, st.Subscribers[t.Name+"/"+s]))
		}
		if d.hstats != nil {
			for _, h := range append(t.Handlers[:len(t.Handlers):len(t.Handlers)], t.Subscribers...) {
				tv.HandlerStats = append(tv.HandlerStats, d.hstats.of(t.Type, h))
			}
		}
		out.Types = append(out.Types, tv)
	}
	return out
}

// EventView describes an event: its type and key always, its content only
// with WithPayloads.
type EventView struct {
	Type    int    `json:"type"`
	Name    string `json:"typeName"`
	Key     string `json:"key"`
	Payload string `json:"payload,omitempty"`
}

// maxText bounds what one event's description may take.
const maxText = 4 << 10

func clip(s string) string {
	if len(s) <= maxText {
		return s
	}
	s = s[:maxText]
	for !utf8.ValidString(s) && len(s) > 0 {
		s = s[:len(s)-1]
	}
	return s + "…"
}

func text(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return fmt.Sprintf("%q", b)
}

func (d *handler) describe(ev eventbus.Event) EventView {
	if ev == nil {
		return EventView{}
	}
	v := EventView{Type: int(ev.Type()), Name: d.bus.TypeName(ev.Type())}
	var payload string
	switch e := ev.(type) {
	case *eventbus.UserContext:
		if e.Conn != nil {
			if v.Key = e.Conn.UID(); v.Key == "" {
				v.Key = "conn " + strconv.FormatInt(e.Conn.ID(), 10)
			}
		}
		if d.payloads && e.Frame != nil {
			payload = fmt.Sprintf("%+v", e.Frame)
		}
	case *eventbus.ChannelContext:
		v.Key = e.ChannelID + " (type " + strconv.Itoa(int(e.ChannelType)) + ")"
		if d.payloads {
			var parts []string
			for _, m := range e.Messages {
				if m != nil {
					parts = append(parts, m.FromUID+": "+text(m.Payload))
				}
			}
			payload = strings.Join(parts, "\n")
		}
	case *eventbus.PushContext:
		if e.Message != nil {
			v.Key = e.Message.ChannelID + " (type " + strconv.Itoa(int(e.Message.ChannelType)) + ")"
			if d.payloads {
				payload = e.Message.FromUID + " → " + strings.Join(e.Subscribers, ",") + ": " + text(e.Message.Payload)
			}
		}
	}
	v.Key, v.Payload = clip(v.Key), clip(payload)
	return v
}

// ShardView is a busy shard in GET api/keys.
type ShardView struct {
	Pool       string     `json:"pool"`
	Subscriber string     `json:"subscriber,omitempty"`
	Shard      int        `json:"shard"`
	Held       int        `json:"held"`
	Queued     int        `json:"queued"`
	Running    bool       `json:"running"`
	Head       *EventView `json:"head,omitempty"`
	HeadQueued int        `json:"headQueued"`
	HeadParked bool       `json:"headParked"` // Head is a parked key's failed event, not the FIFO's first
}

// ParkedView is a key parked for a retry in GET api/keys.
type ParkedView struct {
	Pool       string    `json:"pool"`
	Subscriber string    `json:"subscriber,omitempty"`
	Shard      int       `json:"shard"`
	Event      EventView `json:"event"`
	Handler    string    `json:"handler"`
	Attempt    int       `json:"attempt"`
	Error      string    `json:"error"`
	Events     int       `json:"events"`
	NextTry    time.Time `json:"nextTry"`
}

// KeysView is GET api/keys?n=N (N from 1 to 200, default 20).
type KeysView struct {
	Busy    []ShardView  `json:"busy"`
	Parked  []ParkedView `json:"parked"`
	Skipped int          `json:"skipped"` // shards a worker held, whose parked keys (if any) could not be read
}

func (d *handler) keysAPI(w http.ResponseWriter, r *http.Request) {
	n := 20
	if s := r.URL.Query().Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 200 {
			writeJSON(w, http.StatusBadRequest, apiError{"n: want a number from 1 to 200"})
			return
		}
		n = v
	}
	writeJSON(w, http.StatusOK, d.keys(n))
}

func (d *handler) keys(n int) KeysView {
	d.keysMu.Lock()
	busy, parked, skipped := d.bus.Keys(make([]eventbus.ShardLoad, 0, n), make([]eventbus.ParkedKey, 0, n))
	d.keysMu.Unlock()
	out := KeysView{Busy: []ShardView{}, Parked: []ParkedView{}, Skipped: skipped}
	for _, b := range busy {
		sv := ShardView{Pool: string(b.Pool), Subscriber: b.Subscriber, Shard: b.Shard, Held: b.Held,
			Queued: b.Queued, Running: b.Running, HeadQueued: b.HeadQueued, HeadParked: b.HeadParked}
		if b.Head != nil {
			ev := d.describe(b.Head)
			sv.Head = &ev
		}
		out.Busy = append(out.Busy, sv)
	}
	for _, p := range parked {
		pv := ParkedView{Pool: string(p.Pool), Subscriber: p.Subscriber, Shard: p.Shard,
			Event: d.describe(p.Event), Handler: p.Handler, Attempt: p.Attempt, Events: p.Events, NextTry: p.NextTry}
		if p.Err != nil {
			pv.Error = clip(p.Err.Error())
		}
		out.Parked = append(out.Parked, pv)
	}
	return out
}

// LetterView is a dead letter in GET api/deadletters. ID is the journal's
// record id (0 for a letter of the in-memory ring).
type LetterView struct {
	ID       uint64    `json:"id,omitempty"`
	Event    EventView `json:"event"`
	Handler  string    `json:"handler"`
	Attempts int       `json:"attempts"`
	Error    string    `json:"error"`
	Time     time.Time `json:"time"`
}

// DeadLettersView is GET api/deadletters: the ring's recent letters
// (newest first) and the journal's persisted list (id order).
type DeadLettersView struct {
	Recent      []LetterView `json:"recent"`
	RecentTotal uint64       `json:"recentTotal"` // letters the ring received, kept or not
	Journal     []LetterView `json:"journal"`
	JournalErr  string       `json:"journalError,omitempty"`
	HasJournal  bool         `json:"hasJournal"`
	Actions     bool         `json:"actions"`
}

// maxLetters bounds each list the API returns.
const maxLetters = 500

func (d *handler) deadLetters() any {
	out := DeadLettersView{Recent: []LetterView{}, Journal: []LetterView{}, HasJournal: d.journal != nil, Actions: d.actions}
	if d.ring != nil {
		ls := d.ring.Letters()
		out.RecentTotal = d.ring.Total()
		for i := len(ls) - 1; i >= 0 && len(out.Recent) < maxLetters; i-- {
			l := ls[i]
			lv := LetterView{Event: d.describe(l.Event), Handler: l.Handler, Attempts: l.Attempts, Time: l.Time}
			if l.Err != nil {
				lv.Error = clip(l.Err.Error())
			}
			out.Recent = append(out.Recent, lv)
		}
	}
	if d.journal != nil {
		list, err := d.journal.DeadLetters()
		if err != nil {
			out.JournalErr = err.Error()
		}
		if len(list) > maxLetters {
			list = list[len(list)-maxLetters:]
		}
		for _, l := range list {
			lv := LetterView{ID: l.ID, Handler: l.Handler, Attempts: l.Attempts, Error: clip(l.Err), Time: l.Time,
				Event: EventView{Type: int(l.Type), Name: d.bus.TypeName(eventbus.EventType(l.Type))}}
			if ev, err := d.bus.DecodeEvent(eventbus.EventType(l.Type), l.Payload); err == nil {
				lv.Event = d.describe(ev)
			} else if d.payloads {
				lv.Event.Payload = "(cannot decode: " + err.Error() + ")"
			}
			out.Journal = append(out.Journal, lv)
		}
	}
	return out
}

// JournalView is GET api/journal.
type JournalView struct {
	Present     bool   `json:"present"`
	Segments    int    `json:"segments"`
	Bytes       int64  `json:"bytes"`
	Pending     int    `json:"pending"`
	DeadLetters int    `json:"deadLetters"`
	NextID      uint64 `json:"nextId"`
	Syncs       uint64 `json:"syncs"`
}

func (d *handler) journalStats() any {
	js, ok := d.journal.(journalStatser)
	if !ok {
		return JournalView{Present: d.journal != nil}
	}
	s := js.Stats()
	return JournalView{Present: true, Segments: s.Segments, Bytes: s.Bytes, Pending: s.Pending,
		DeadLetters: s.DeadLetters, NextID: s.NextID, Syncs: s.Syncs}
}

// BridgeView is GET api/bridge: what WithBridge's function returned.
type BridgeView struct {
	Present bool            `json:"present"`
	Stats   json.RawMessage `json:"stats,omitempty"`
	Error   string          `json:"error,omitempty"`
}

func (d *handler) bridgeStats() any {
	if d.bridge == nil {
		return BridgeView{}
	}
	b, err := json.Marshal(d.bridge())
	if err != nil {
		return BridgeView{Present: true, Error: err.Error()}
	}
	return BridgeView{Present: true, Stats: b}
}
