// Package server is a small IM server on an eventbus.Bus that speaks
// WuKongIM's binary protocol (version 2, package wkproto) over WebSocket,
// so that WuKongIM's own JS SDK can log in, send and receive through it.
//
// The flow is the bus's:
//
//   - Connection layer (conn.go): each WebSocket connection reads packets
//     and adds user events. CONNECT becomes EventConnect; its chain
//     ("auth", "handshake") checks the token, does the key exchange,
//     answers CONNACK and emits EventOnConnect, whose "session" handler
//     puts the user online and replays the offline queue. SEND becomes
//     EventOnSend, RECVACK EventRecvAck, and the end of the connection
//     EventConnClose. PING is answered by the connection itself.
//   - User pool, EventOnSend: "verify" checks the message key and decrypts
//     the payload, "permission" checks the channel and membership (both
//     answer a failed SENDACK), "forward" gives the message its id and
//     emits EventChannelDistribute.
//   - Channel pool, EventChannelDistribute (batched with WithBatch):
//     "store" keeps the message in memory with the channel's next
//     sequence, "fanout" emits one EventPushOnline per receiver, and
//     "sendack" answers the sender's SENDACK.
//   - Pusher pool, keyed by receiver (PoolConfig.KeyFunc): "deliver"
//     writes a RECV, encrypted for the receiver, to the receiver's
//     connection, or puts the message in the receiver's offline queue and
//     emits EventPushOffline, where "offline-push" would call APNs/FCM.
//
// A retry resumes at the handler that failed and runs it again, side
// effects included. So every handler here adds its follow-on events last
// (forward, handshake) or, when it could fail after adding some (fanout,
// deliver: one follow-on per receiver), marks that failure
// eventbus.Permanent: a retry would add the ones before again.
//
// Safe defaults (see Config): logins need the token set for that user
// through the admin API, which needs its own bearer token; every queue
// has a bound (offline messages and their age, group size and count, SEND
// rate, outbound bytes, unacknowledged RECVs, id lengths, connections),
// the login has an overall deadline and a duplicate SEND is answered with
// the first SENDACK.
//
// Delivery is at least once: a RECV stays pending until its RECVACK; when
// the connection ends, what is pending goes back to the front of the
// offline queue, replayed in order on the next login. Each receiver sees a
// channel's messages in sequence order.
//
// # Durable mode
//
// With Config.Durable (wkim -durable DIR) a kill -9 loses no message that
// got a successful SENDACK. The channel event is then EventChannelStore,
// durable in the bus's journal (DIR/bus, eventbus.WithJournal): "forward"
// adds it as a follow-on event, which the bus appends to the journal as
// it is added. "fanout" appends a delivery record (the message and its
// receivers) to the server's own journal (DIR/server) and waits for its
// fsync, and, at the same time, for the fsync of the bus's journal; only
// then does it emit the push events, and "sendack" answers after it. The
// bus acks the message's record when that chain has finished; a delivery
// record is acked when the last of its receivers has acknowledged the RECV
// or had the message dropped from its offline queue (MaxOffline,
// OfflineTTL), and Close rewrites those that some receivers are done with,
// naming only the others. So until every receiver has it, each accepted
// message is on disk in one journal or the other, and New puts it back:
// the delivery records into the offline queues, each receiver's in its
// original order, then the bus's Start replays the messages not yet
// fanned out, in each channel's order.
//
// What a client sees after a crash: every acknowledged message comes, under
// the MessageID of its SENDACK. One may come twice: it was delivered but
// its RECVACK not yet handled, or acknowledged while another receiver had
// not (its delivery record names them all until Close), or the bus's ack
// of its record was lost with the process (it is fanned out again, with a
// new sequence number). Always under the same MessageID and ClientMsgNo,
// so a client drops what it has. A SEND whose SENDACK was lost with the
// process and that the client sends again after the restart gets a new
// MessageID (the duplicate window is in memory): receivers drop it by
// (FromUID, ClientMsgNo). Sequence numbers are reserved on disk in blocks
// of 1024, so after a crash a channel's sequence jumps ahead but never
// repeats a number. Login tokens and groups set through the API (and the
// Groups of Config) are in the server's journal too and survive a
// restart; History (the messages kept in memory per channel) does not.
//
// The cost: two fsyncs on every SENDACK's path, shared by everything that
// waits at the same time (group commit), and a delivery record per message
// on disk until its last receiver's RECVACK.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/journal"
)

// Config configures a Server. Zero fields take the defaults, which are
// safe for a server on the internet: per-user tokens, an HTTP API that
// refuses writes until an AdminToken is set, and a bound on every queue.
// Each limit says what memory it bounds.
type Config struct {
	// Logger receives connection and protocol events. Default:
	// slog.Default().
	Logger *slog.Logger
	// Authenticate decides whether uid may log in with token. Default
	// (nil): per-user tokens, set with SetUserToken or PUT
	// /users/<uid>/token; a uid without a token cannot log in.
	// AnyToken and SharedToken are development modes.
	Authenticate func(uid, token string) bool
	// AdminToken, if set, is the bearer token of the HTTP API: every
	// request but the WebSocket upgrade needs "Authorization: Bearer
	// <AdminToken>" and gets 401 without it. If empty, the API answers
	// reads and refuses writes (403). At least 16 bytes.
	AdminToken string
	// Groups are the initial group channels: id → member uids.
	Groups map[string][]string
	// Origins are the web origins whose pages may open the WebSocket
	// (host patterns, as websocket.AcceptOptions.OriginPatterns, e.g.
	// "chat.example.com" or "*.example.com"). Default: the server's own
	// host only. Clients that send no Origin (apps, Node) are not
	// concerned.
	Origins []string
	// MaxConnections bounds the open WebSocket connections; one more is
	// refused with 503. Default 10 000. With MaxOutboundBytes it bounds
	// the memory of the outbound queues.
	MaxConnections int
	// MaxPacketSize is the largest packet body accepted; a larger one
	// closes the connection. A SEND whose RECV would be larger is refused.
	// Default 64 KiB.
	MaxPacketSize int
	// MaxIDLength is the longest uid, channel id, group member id and
	// clientMsgNo accepted, in bytes. Default 64.
	MaxIDLength int
	// ConnectTimeout is the time from the WebSocket upgrade to a handled
	// login, in all: it does not restart when a byte arrives. Default 10 s.
	ConnectTimeout time.Duration
	// IdleTimeout closes a connection that sends nothing for that long.
	// Default 3 min (the SDK pings every minute).
	IdleTimeout time.Duration
	// WriteTimeout bounds one WebSocket write. Default 10 s.
	WriteTimeout time.Duration
	// ReadHeaderTimeout bounds the reading of an HTTP request's headers
	// (the WebSocket upgrade included). Default 10 s.
	ReadHeaderTimeout time.Duration
	// HTTPIdleTimeout closes an idle HTTP keep-alive connection. Default
	// 60 s.
	HTTPIdleTimeout time.Duration
	// OutboundQueue is how many packets may wait to be written to one
	// connection before it counts as too slow and is closed. Default 4096.
	OutboundQueue int
	// MaxOutboundBytes is how many bytes of packets may wait to be written
	// to one connection before it counts as too slow and is closed: the
	// memory one slow reader can hold. Default 4 MiB.
	MaxOutboundBytes int
	// MaxUnacked is how many RECVs a connection may leave unacknowledged
	// before it is closed: up to MaxUnacked messages kept per online user.
	// Default 1024.
	MaxUnacked int
	// MaxOffline is how many messages wait for one offline user; when one
	// more comes, the oldest is dropped (counted in Stats.OfflineDropped).
	// Memory: up to MaxOffline × MaxPacketSize per known user. Default
	// 1000.
	MaxOffline int
	// OfflineTTL is how long a message waits for an offline user; older
	// ones are dropped (Stats.OfflineDropped). Default 7 days.
	OfflineTTL time.Duration
	// MaxGroups bounds the number of groups; creating one more is refused
	// (507). Default 1000.
	MaxGroups int
	// MaxGroupMembers bounds a group's members; a larger group is refused
	// (413). It bounds the fan-out of one SEND. Memory of the member
	// lists: up to MaxGroups × MaxGroupMembers × MaxIDLength. Default
	// 1000.
	MaxGroupMembers int
	// SendRate and SendBurst are the token bucket of SENDs per connection:
	// SendRate a second on average, SendBurst at once. A client that sends
	// faster is not read until it may send again (TCP pushes back on it).
	// Defaults 50/s and 100.
	SendRate  float64
	SendBurst int
	// UserSendRate and UserSendBurst are the token bucket of SENDs per
	// uid, over all its connections and logins. Defaults 100/s and 200.
	UserSendRate  float64
	UserSendBurst int
	// DedupWindow is how many recent clientMsgNo values are kept per
	// sender: a SEND repeating one of them is answered with the first
	// SENDACK and delivered no more. Default 256.
	DedupWindow int
	// History is how many messages each channel keeps in memory. Default
	// 200.
	History int
	// Now is the clock, for tests. Default time.Now.
	Now func() time.Time
	// BusOptions are added to the bus's options (pool sizes, observer).
	BusOptions []eventbus.Option
	// Durable, if set, is a directory where every message is stored
	// before its SENDACK (a durable EventChannelStore, see
	// eventbus.WithJournal), with what each receiver has not acknowledged
	// yet, each channel's sequence, and the login tokens and groups set
	// through the API: a restart, even after a kill -9, delivers every
	// message that got a successful SENDACK. Created if missing; one
	// server at a time (it is locked). Empty: everything is in memory.
	Durable string
}

// AnyToken is the development mode of Config.Authenticate: any non-empty
// uid logs in, with any token. Never use it on a network others reach.
func AnyToken(uid, _ string) bool { return uid != "" }

// SharedToken returns an Authenticate function that lets any uid log in
// with the one token t. It is insecure: whoever has t can log in as any
// user and take that user's queued messages. Use per-user tokens.
func SharedToken(t string) func(uid, token string) bool {
	return func(uid, token string) bool {
		return uid != "" && subtle.ConstantTimeCompare([]byte(token), []byte(t)) == 1
	}
}

// Defaults returns the Config that New uses for a zero Config: every
// limit at its default (for flags' defaults).
func Defaults() Config { return Config{}.withDefaults() }

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defRate := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxConnections, 10000)
	def(&c.MaxPacketSize, 64<<10)
	def(&c.MaxIDLength, 64)
	defDur(&c.ConnectTimeout, 10*time.Second)
	defDur(&c.IdleTimeout, 3*time.Minute)
	defDur(&c.WriteTimeout, 10*time.Second)
	defDur(&c.ReadHeaderTimeout, 10*time.Second)
	defDur(&c.HTTPIdleTimeout, 60*time.Second)
	def(&c.OutboundQueue, 4096)
	def(&c.MaxOutboundBytes, 4<<20)
	def(&c.MaxUnacked, 1024)
	def(&c.MaxOffline, 1000)
	defDur(&c.OfflineTTL, 7*24*time.Hour)
	def(&c.MaxGroups, 1000)
	def(&c.MaxGroupMembers, 1000)
	defRate(&c.SendRate, 50)
	def(&c.SendBurst, 100)
	defRate(&c.UserSendRate, 100)
	def(&c.UserSendBurst, 200)
	def(&c.DedupWindow, 256)
	def(&c.History, 200)
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// MinAdminToken is the shortest Config.AdminToken accepted, in bytes.
const MinAdminToken = 16

// Server is the IM server. Create it with New; it is safe for concurrent
// use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	bus     *eventbus.Bus
	http    *http.Server
	mux     *http.ServeMux
	handler http.Handler

	nextConnID atomic.Int64
	nextMsgID  atomic.Int64

	mu     sync.Mutex
	closed bool
	conns  map[int64]*conn
	wg     sync.WaitGroup // one per connection goroutine
	base   context.Context
	cancel context.CancelFunc

	groups   groups
	channels channels
	sessions sessions
	tokens   tokens

	dur     *durable           // durable mode, or nil
	msgType eventbus.EventType // the channel event of a message

	sent, delivered, offline, acked, badFrames           atomic.Int64
	offlineDropped, duplicates, slowClosed, refusedConns atomic.Int64
}

// New builds a server, its bus and its handlers, and starts the bus.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if cfg.AdminToken != "" && len(cfg.AdminToken) < MinAdminToken {
		return nil, fmt.Errorf("server: AdminToken is %d bytes, want at least %d", len(cfg.AdminToken), MinAdminToken)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, conns: map[int64]*conn{}, msgType: eventbus.EventChannelDistribute}
	s.groups.m = map[string][]string{}
	s.channels.m = map[string]*channel{}
	s.sessions.m = map[string]*session{}
	s.tokens.m = map[string][sha256.Size]byte{}
	if s.cfg.Authenticate == nil {
		s.cfg.Authenticate = s.tokens.check // per-user tokens
	}
	// Message and connection ids start at the start time in ms times
	// 1000, so they grow across restarts: a message replayed after one
	// keeps its id, and its SENDACK goes to no connection of the new life.
	s.nextMsgID.Store(cfg.Now().UnixMilli() * 1000)
	s.nextConnID.Store(cfg.Now().UnixMilli() * 1000)

	seed := maphash.MakeSeed()
	opts := []eventbus.Option{
		eventbus.WithLogger(cfg.Logger),
		// Channel events of one channel that queue up are stored as one
		// batch (WithBatch below).
		// Push events are keyed by receiver, not by channel: each receiver
		// sees every channel in order, and receivers run in parallel.
		eventbus.WithPusherPool(eventbus.PoolConfig{KeyFunc: func(ev eventbus.Event) uint64 {
			p := ev.(*eventbus.PushContext)
			if len(p.Subscribers) == 1 {
				return maphash.String(seed, p.Subscribers[0])
			}
			return maphash.String(seed, p.Message.ChannelID)
		}}),
	}
	if cfg.Durable != "" {
		d, err := openDurable(cfg.Durable, cfg.Logger)
		if err != nil {
			return nil, err
		}
		s.dur, s.msgType = d, eventbus.EventChannelStore
		opts = append(opts,
			eventbus.WithJournal(d.bus, eventbus.EventChannelStore),
			eventbus.WithBatch(eventbus.EventChannelStore, 64),
			// Each worker of the channel pool waits for fsyncs in
			// "fanout": many of them, so that one fsync carries the
			// messages of many channels.
			eventbus.WithChannelPool(eventbus.PoolConfig{Workers: 128}))
	} else {
		opts = append(opts, eventbus.WithBatch(eventbus.EventChannelDistribute, 64))
	}
	fail := func(err error) (*Server, error) {
		if s.dur != nil {
			err = errors.Join(err, s.dur.close())
		}
		return nil, err
	}
	bus, err := eventbus.New(append(opts, cfg.BusOptions...)...)
	if err != nil {
		return fail(err)
	}
	s.bus = bus
	if s.dur != nil {
		// Before Start: the messages it replays are fanned out to the
		// groups and against the offline queues loaded here.
		if err := s.load(); err != nil {
			return fail(err)
		}
	}
	for id, members := range cfg.Groups {
		if err := s.SetGroup(id, members); err != nil {
			return fail(err)
		}
	}
	if err := s.register(); err != nil {
		return fail(err)
	}
	if err := bus.Start(); err != nil {
		return fail(errors.Join(err, bus.Close(context.Background())))
	}
	s.base, s.cancel = context.WithCancel(context.Background())

	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /groups/{id}", s.getGroup)
	s.mux.HandleFunc("PUT /groups/{id}", s.putGroup)
	s.mux.HandleFunc("PUT /users/{uid}/token", s.putToken)
	s.mux.HandleFunc("GET /stats", s.getStats)
	s.handler = http.HandlerFunc(s.route)
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.HTTPIdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Handler returns the server's HTTP handler: the WebSocket endpoint at
// "/", and the admin API: groups at "/groups/{id}" (GET; PUT
// {"members":[...]}), login tokens at "/users/{uid}/token" (PUT
// {"token":"..."}) and counters at "/stats". The admin API needs the
// AdminToken as a bearer token; without an AdminToken it refuses writes.
func (s *Server) Handler() http.Handler { return s.handler }

// route sends "/" to the WebSocket endpoint and everything else, once
// authorized, to the admin API.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/" && r.Method == http.MethodGet {
		s.serveWS(w, r)
		return
	}
	if s.cfg.AdminToken == "" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "the admin API is read-only: the server has no admin token (-admin-token)", http.StatusForbidden)
			return
		}
	} else {
		// Only the admin token: a client's login token is never accepted
		// here (SetUserToken refuses the admin token as a login token).
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.AdminToken)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wkim admin"`)
			http.Error(w, "admin API: want Authorization: Bearer <admin token>", http.StatusUnauthorized)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// Serve accepts connections on ln until Close; it then returns
// http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error { return s.http.Serve(ln) }

// ServeTLS is Serve over TLS (wss://), with the certificate and key in
// PEM files.
func (s *Server) ServeTLS(ln net.Listener, certFile, keyFile string) error {
	return s.http.ServeTLS(ln, certFile, keyFile)
}

// Close shuts the server down: it stops accepting, closes every
// connection (WebSocket status 1001, going away), waits for their
// goroutines, then closes the bus, which runs what was accepted to the
// end. If ctx ends first, connections are dropped without the close
// handshake and the bus's *eventbus.CloseError is returned.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, c := range s.conns {
		c.closeWith(websocket.StatusGoingAway, slog.LevelInfo, "server shutting down", false)
	}
	s.mu.Unlock()
	err := s.http.Shutdown(ctx)

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel() // drop the connections
		<-done
	}
	s.cancel()
	err = errors.Join(err, s.bus.Close(ctx))
	if s.dur != nil {
		// After the bus: what it left unfinished is replayed next time.
		if err == nil {
			err = s.compact() // nothing runs any more
		}
		err = errors.Join(err, s.dur.close())
	}
	return err
}

// WaitIdle waits until every event accepted so far, and every event they
// caused, has been handled: the messages sent before have been stored and
// delivered or queued offline.
func (s *Server) WaitIdle(ctx context.Context) error { return s.bus.WaitIdle(ctx) }

// serveWS upgrades a request to a WebSocket connection and serves it.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	if len(s.conns) >= s.cfg.MaxConnections {
		s.mu.Unlock()
		s.refusedConns.Add(1)
		http.Error(w, "too many connections", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// Pages of other origins are refused (403); clients that send no
		// Origin header (apps, Node) are not concerned.
		OriginPatterns:  s.cfg.Origins,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		s.log.Debug("websocket accept", "remote", r.RemoteAddr, "err", err)
		return
	}
	// A WebSocket message holds at most one packet of the largest size
	// and its header (the SDK sends one packet per message).
	ws.SetReadLimit(int64(s.cfg.MaxPacketSize) + 5)
	c := &conn{
		s:         s,
		id:        s.nextConnID.Add(1),
		ws:        ws,
		remote:    r.RemoteAddr,
		authed:    make(chan bool, 1),
		connacked: make(chan struct{}),
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}
	c.log = s.log.With("conn", c.id, "remote", c.remote)
	s.mu.Lock()
	if s.closed { // Close ran while we upgraded
		s.mu.Unlock()
		_ = ws.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	s.conns[c.id] = c
	s.mu.Unlock()
	c.log.Debug("connection open")
	c.serve(s.base)
}

// conn returns the open connection with id, or nil.
func (s *Server) conn(id int64) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[id]
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c.id)
}

// SetGroup makes members the members of group id, creating it. It
// refuses an id or member id that is empty or longer than MaxIDLength,
// more than MaxGroupMembers members (ErrTooLarge) and a new group beyond
// MaxGroups (ErrLimit).
func (s *Server) SetGroup(id string, members []string) error {
	if err := s.checkID("group id", id); err != nil {
		return err
	}
	members = slices.Clone(members)
	slices.Sort(members)
	members = slices.Compact(members)
	if len(members) > s.cfg.MaxGroupMembers {
		return fmt.Errorf("%w: group %q has %d members, at most %d", ErrTooLarge, id, len(members), s.cfg.MaxGroupMembers)
	}
	for _, m := range members {
		if err := s.checkID("member", m); err != nil {
			return err
		}
	}
	if s.dur != nil {
		return s.dur.put("g/"+id, recGroup, groupRecord(id, members), func() error {
			return s.groups.set(id, members, s.cfg.MaxGroups)
		})
	}
	return s.groups.set(id, members, s.cfg.MaxGroups)
}

// Group returns the members of group id and whether it exists.
func (s *Server) Group(id string) ([]string, bool) { return s.groups.get(id) }

// Errors of the admin API and of SetGroup and SetUserToken.
var (
	// ErrBadID is an empty id or one longer than Config.MaxIDLength.
	ErrBadID = errors.New("bad id")
	// ErrTooLarge is a group with more than Config.MaxGroupMembers.
	ErrTooLarge = errors.New("too large")
	// ErrLimit is one group more than Config.MaxGroups.
	ErrLimit = errors.New("limit reached")
)

func (s *Server) checkID(what, id string) error {
	if id == "" || len(id) > s.cfg.MaxIDLength {
		return fmt.Errorf("%w: %s of %d bytes, want 1 to %d", ErrBadID, what, len(id), s.cfg.MaxIDLength)
	}
	return nil
}

// SetUserToken sets the token uid logs in with (per-user tokens, the
// default Authenticate), replacing the one before. Only a hash of it is
// kept. It refuses a bad uid, an empty token or one over 256 bytes, and the
// admin token.
func (s *Server) SetUserToken(uid, token string) error {
	if err := s.checkID("uid", uid); err != nil {
		return err
	}
	if token == "" || len(token) > 256 {
		return fmt.Errorf("%w: token of %d bytes, want 1 to 256", ErrBadID, len(token))
	}
	if s.cfg.AdminToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.cfg.AdminToken)) == 1 {
		return fmt.Errorf("%w: a login token must not be the admin token", ErrBadID)
	}
	h := sha256.Sum256([]byte(token))
	if s.dur != nil {
		return s.dur.put("t/"+uid, recToken, tokenRecord(uid, h), func() error {
			s.tokens.setHash(uid, h)
			return nil
		})
	}
	s.tokens.setHash(uid, h)
	return nil
}

type groupBody struct {
	Members []string `json:"members"`
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) {
	members, ok := s.groups.get(r.PathValue("id"))
	if !ok {
		http.Error(w, "no such group", http.StatusNotFound)
		return
	}
	writeJSON(w, groupBody{Members: members})
}

func (s *Server) putGroup(w http.ResponseWriter, r *http.Request) {
	var body groupBody
	// The largest valid body: every member at the longest id, quoted.
	limit := int64(s.cfg.MaxGroupMembers)*int64(s.cfg.MaxIDLength+8) + 64
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit)).Decode(&body); err != nil {
		code := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			code = http.StatusRequestEntityTooLarge
		}
		http.Error(w, "body: want {\"members\":[\"uid\",...]}: "+err.Error(), code)
		return
	}
	id := r.PathValue("id")
	if err := s.SetGroup(id, body.Members); err != nil {
		http.Error(w, err.Error(), statusOf(err))
		return
	}
	members, _ := s.groups.get(id)
	writeJSON(w, groupBody{Members: members})
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrLimit):
		return http.StatusInsufficientStorage
	}
	return http.StatusBadRequest
}

func (s *Server) putToken(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1024)).Decode(&body); err != nil {
		http.Error(w, "body: want {\"token\":\"...\"}: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := s.SetUserToken(r.PathValue("uid"), body.Token); err != nil {
		http.Error(w, err.Error(), statusOf(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Stats are the server's counters and its bus's statistics.
type Stats struct {
	Connections int   `json:"connections"`
	Sent        int64 `json:"sent"`      // messages accepted (SENDACK success)
	Delivered   int64 `json:"delivered"` // RECVs queued to a connection
	Offline     int64 `json:"offline"`   // deliveries put in an offline queue
	Acked       int64 `json:"acked"`     // RECVACKs that matched a pending RECV
	BadFrames   int64 `json:"badFrames"` // connections closed for a bad frame
	// OfflineDropped counts offline messages dropped: over MaxOffline
	// or older than OfflineTTL.
	OfflineDropped int64          `json:"offlineDropped"`
	Duplicates     int64          `json:"duplicates"`   // SENDs answered from the duplicate window
	SlowClosed     int64          `json:"slowClosed"`   // connections closed for not reading fast enough
	RefusedConns   int64          `json:"refusedConns"` // upgrades refused over MaxConnections
	Bus            eventbus.Stats `json:"bus"`
	// Journals are the journals' counters in durable mode (nil
	// otherwise): "bus" holds the messages not yet fanned out, "server"
	// the deliveries not yet acknowledged.
	Journals map[string]journal.Stats `json:"journals,omitempty"`
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	st := Stats{Connections: n, Sent: s.sent.Load(), Delivered: s.delivered.Load(), Offline: s.offline.Load(),
		Acked: s.acked.Load(), BadFrames: s.badFrames.Load(), OfflineDropped: s.offlineDropped.Load(),
		Duplicates: s.duplicates.Load(), SlowClosed: s.slowClosed.Load(), RefusedConns: s.refusedConns.Load(),
		Bus: s.bus.Stats()}
	if s.dur != nil {
		st.Journals = map[string]journal.Stats{"bus": s.dur.bus.Stats(), "server": s.dur.state.Stats()}
	}
	return st
}

func (s *Server) getStats(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Stats()) }

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		http.Error(w, fmt.Sprint(err), http.StatusInternalServerError)
	}
}

// groups holds the group channels' members.
type groups struct {
	mu sync.RWMutex
	m  map[string][]string
}

// set replaces or creates group id, refusing a new group beyond max.
func (g *groups) set(id string, members []string, max int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.m[id]; !ok && len(g.m) >= max {
		return fmt.Errorf("%w: %d groups already, at most %d", ErrLimit, len(g.m), max)
	}
	g.m[id] = members
	return nil
}

func (g *groups) get(id string) ([]string, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	m, ok := g.m[id]
	return m, ok
}

// tokens are the per-user login tokens, as SHA-256 hashes.
type tokens struct {
	mu sync.RWMutex
	m  map[string][sha256.Size]byte
}

// setHash sets uid's token by its SHA-256 hash.
func (t *tokens) setHash(uid string, h [sha256.Size]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[uid] = h
}

// check reports whether token is uid's token.
func (t *tokens) check(uid, token string) bool {
	h := sha256.Sum256([]byte(token))
	t.mu.RLock()
	want, ok := t.m[uid]
	t.mu.RUnlock()
	return ok && subtle.ConstantTimeCompare(h[:], want[:]) == 1
}

func (t *tokens) has(uid string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, ok := t.m[uid]
	return ok
}
