package server

import (
	"log/slog"
	"slices"
	"strconv"
	"sync"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/examples/wkim/wkproto"
)

// channel is one channel's stored messages and sequence. Only the channel
// pool's handlers of this channel write it, one at a time; the lock is for
// readers (History).
type channel struct {
	mu   sync.Mutex
	seq  uint64
	msgs []*eventbus.Message
}

// append gives m the next sequence and keeps it, and at most keep messages.
func (ch *channel) append(m *eventbus.Message, keep int) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.seq++
	m.MessageSeq = ch.seq
	ch.msgs = append(ch.msgs, m)
	if len(ch.msgs) >= 2*keep { // trim now and then, not on every append
		ch.msgs = slices.Clone(ch.msgs[len(ch.msgs)-keep:])
	}
}

type channels struct {
	mu sync.Mutex
	m  map[string]*channel
}

func channelKey(id string, typ uint8) string { return strconv.Itoa(int(typ)) + "/" + id }

func (cs *channels) get(id string, typ uint8) *channel {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	k := channelKey(id, typ)
	ch := cs.m[k]
	if ch == nil {
		ch = &channel{}
		cs.m[k] = ch
	}
	return ch
}

// History returns copies of the last messages stored in a channel, oldest
// first (at most Config.History of them). A person channel's id is
// "uid1@uid2", the two uids in byte order.
func (s *Server) History(channelID string, channelType uint8) []eventbus.Message {
	ch := s.channels.get(channelID, channelType)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	msgs := ch.msgs[max(0, len(ch.msgs)-s.cfg.History):]
	out := make([]eventbus.Message, len(msgs))
	for i, m := range msgs {
		out[i] = *m
	}
	return out
}

// session is what the server knows of one user: the connection it is
// online on, the RECVs written there and not yet acknowledged (pending),
// and the messages waiting for its next login (offline). Pending messages
// are older than offline ones: when the connection ends, pending goes to
// the front of offline, so the next login replays everything in order.
// It also holds the user's SEND rate limiter (over all its logins) and the
// window of its recent clientMsgNo values.
type session struct {
	mu      sync.Mutex
	conn    *conn
	known   bool // logged in at least once
	pending []*eventbus.Message
	offline []*eventbus.Message
	limiter *rate.Limiter
	recent  recentSends
}

// initLimiter creates the user's SEND limiter on its first login.
func (se *session) initLimiter(cfg *Config) {
	se.mu.Lock()
	defer se.mu.Unlock()
	if se.limiter == nil {
		se.limiter = rate.NewLimiter(rate.Limit(cfg.UserSendRate), cfg.UserSendBurst)
	}
}

type sessions struct {
	mu sync.Mutex
	m  map[string]*session
}

func (ss *sessions) get(uid string) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	se := ss.m[uid]
	if se == nil {
		se = &session{}
		ss.m[uid] = se
	}
	return se
}

// known reports whether uid has logged in since the server started.
func (ss *sessions) known(uid string) bool {
	ss.mu.Lock()
	se := ss.m[uid]
	ss.mu.Unlock()
	if se == nil {
		return false
	}
	se.mu.Lock()
	defer se.mu.Unlock()
	return se.known
}

// online makes c the user's connection and replays what waited for it. A
// connection already there is kicked (DISCONNECT, then closed) and what it
// had not acknowledged is replayed first. Messages older than OfflineTTL
// are dropped. It returns how many messages were replayed.
func (ss *sessions) online(s *Server, c *conn) int {
	se := ss.get(c.UID())
	se.mu.Lock()
	defer se.mu.Unlock()
	se.known = true
	if c.closing() { // it went away before its login was handled
		return 0
	}
	replay := se.offline
	if old := se.conn; old != nil && old != c {
		old.sendThenClose(&wkproto.DisconnectPacket{ReasonCode: wkproto.ReasonConnectKick, Reason: "logged in elsewhere"},
			websocket.StatusPolicyViolation, slog.LevelInfo, "kicked: logged in again on conn "+strconv.FormatInt(c.id, 10))
		replay = append(se.pending, replay...)
	}
	se.conn, se.pending, se.offline = c, nil, nil
	replay = s.dropExpired(replay)
	for _, m := range replay {
		s.push(se, c, m)
	}
	return len(replay)
}

// dropExpired returns q without its messages older than OfflineTTL,
// counted as dropped.
func (s *Server) dropExpired(q []*eventbus.Message) []*eventbus.Message {
	oldest := s.cfg.Now().Add(-s.cfg.OfflineTTL).UnixMilli()
	n := len(q)
	q = slices.DeleteFunc(q, func(m *eventbus.Message) bool { return m.Timestamp < oldest })
	s.offlineDropped.Add(int64(n - len(q)))
	return q
}

// trimOffline keeps the newest MaxOffline messages of se's offline queue,
// without those older than OfflineTTL. se.mu must be held.
func (s *Server) trimOffline(se *session) {
	q := se.offline
	if over := len(q) - s.cfg.MaxOffline; over > 0 {
		clear(q[:over])
		q = q[over:]
		s.offlineDropped.Add(int64(over))
	}
	// Expired messages are at the front but for requeued RECVs; drop
	// them all the same.
	q = s.dropExpired(q)
	if cap(q) > 2*s.cfg.MaxOffline { // the array slid along: copy it once
		q = slices.Clone(q)
	}
	se.offline = q
}

// push writes m to c and keeps it pending. se.mu must be held.
func (s *Server) push(se *session, c *conn, m *eventbus.Message) {
	se.pending = append(se.pending, m)
	if len(se.pending) > s.cfg.MaxUnacked {
		c.closeWith(websocket.StatusTryAgainLater, slog.LevelWarn, "slow client: too many unacknowledged RECVs", false)
		return
	}
	if c.send(recvPacket(m, c.cipher.Load())) {
		s.delivered.Add(1)
	}
}

// deliver writes m to uid's connection and reports true, or queues it
// offline and reports false. The offline queue keeps the newest
// MaxOffline messages.
func (ss *sessions) deliver(s *Server, uid string, m *eventbus.Message) bool {
	se := ss.get(uid)
	se.mu.Lock()
	defer se.mu.Unlock()
	if c := se.conn; c != nil && !c.closing() {
		s.push(se, c, m)
		return true
	}
	se.offline = append(se.offline, m)
	s.offline.Add(1)
	if len(se.offline) > s.cfg.MaxOffline {
		s.trimOffline(se)
	}
	return false
}

// ack drops the pending RECV with id, if c is the user's connection.
func (ss *sessions) ack(c *conn, id int64) bool {
	se := ss.get(c.UID())
	se.mu.Lock()
	defer se.mu.Unlock()
	if se.conn != c {
		return false
	}
	// Acknowledgements come in order, so this is nearly always index 0.
	i := slices.IndexFunc(se.pending, func(m *eventbus.Message) bool { return m.MessageID == id })
	if i < 0 {
		return false
	}
	if i == 0 {
		se.pending[0] = nil
		se.pending = se.pending[1:]
	} else {
		se.pending = slices.Delete(se.pending, i, i+1)
	}
	return true
}

// offline takes the user offline if c is its connection: unacknowledged
// RECVs go back to the front of the offline queue. It returns how many.
func (ss *sessions) offline(s *Server, c *conn) int {
	se := ss.get(c.UID())
	se.mu.Lock()
	defer se.mu.Unlock()
	if se.conn != c {
		return 0
	}
	n := len(se.pending)
	se.offline = append(se.pending, se.offline...)
	se.conn, se.pending = nil, nil
	s.trimOffline(se)
	return n
}

// recentSends is a sender's window of recent clientMsgNo values and their
// SENDACKs, for duplicate SENDs (a replay, or the SDK sending again after
// a reconnect). The owning session's mu guards it.
type recentSends struct {
	m     map[string]*sentMsg
	order []string // ring of the keys of m, oldest at next
	next  int
}

// sentMsg is one SEND of the window: its SENDACK once known, and the
// duplicates waiting for it meanwhile.
type sentMsg struct {
	ack     *wkproto.SendackPacket // nil while the first is in flight
	waiters []waiter
}

// waiter is a duplicate SEND waiting for the first one's SENDACK.
type waiter struct {
	connID    int64
	clientSeq uint32
}

// maxWaiters bounds the duplicates of one message that wait for its
// SENDACK; more are answered by nothing (the client sends again).
const maxWaiters = 4

// first records a SEND of clientMsgNo and reports true if it is the first
// in the window. For a duplicate it returns the first's SENDACK, or nil
// while that is in flight (the duplicate then waits for it).
func (se *session) first(clientMsgNo string, w waiter, size int) (bool, *wkproto.SendackPacket) {
	se.mu.Lock()
	defer se.mu.Unlock()
	r := &se.recent
	if e, ok := r.m[clientMsgNo]; ok {
		if e.ack == nil && len(e.waiters) < maxWaiters {
			e.waiters = append(e.waiters, w)
		}
		return false, e.ack
	}
	if r.m == nil {
		r.m = make(map[string]*sentMsg, size)
	}
	if len(r.order) < size {
		r.order = append(r.order, clientMsgNo)
	} else {
		delete(r.m, r.order[r.next])
		r.order[r.next] = clientMsgNo
		r.next = (r.next + 1) % size
	}
	r.m[clientMsgNo] = &sentMsg{}
	return true, nil
}

// acked records the SENDACK of clientMsgNo and returns the duplicates that
// waited for it.
func (se *session) acked(clientMsgNo string, ack *wkproto.SendackPacket) []waiter {
	se.mu.Lock()
	defer se.mu.Unlock()
	e, ok := se.recent.m[clientMsgNo]
	if !ok {
		return nil
	}
	e.ack = ack
	w := e.waiters
	e.waiters = nil
	return w
}
