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
// Delivery is at least once: a RECV stays pending until its RECVACK; when
// the connection ends, what is pending goes back to the front of the
// offline queue, replayed in order on the next login. Each receiver sees a
// channel's messages in sequence order.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/imbus/eventbus"
)

// Config configures a Server. Zero fields take the defaults.
type Config struct {
	// Logger receives connection and protocol events. Default:
	// slog.Default().
	Logger *slog.Logger
	// Authenticate decides whether uid may log in with token. Default:
	// any non-empty uid.
	Authenticate func(uid, token string) bool
	// Groups are the initial group channels: id → member uids.
	Groups map[string][]string
	// MaxPacketSize is the largest packet body accepted; a larger one
	// closes the connection. Default 64 KiB.
	MaxPacketSize int
	// ConnectTimeout bounds the wait for CONNECT and its handling. Default
	// 10 s.
	ConnectTimeout time.Duration
	// IdleTimeout closes a connection that sends nothing for that long.
	// Default 3 min (the SDK pings every minute).
	IdleTimeout time.Duration
	// WriteTimeout bounds one WebSocket write. Default 10 s.
	WriteTimeout time.Duration
	// OutboundQueue is how many packets may wait to be written to one
	// connection before it counts as too slow and is closed. Default 4096.
	OutboundQueue int
	// MaxUnacked is how many RECVs a connection may leave unacknowledged
	// before it is closed. Default 8192.
	MaxUnacked int
	// History is how many messages each channel keeps in memory. Default
	// 1000.
	History int
	// BusOptions are added to the bus's options (pool sizes, observer).
	BusOptions []eventbus.Option
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Authenticate == nil {
		c.Authenticate = func(uid, _ string) bool { return uid != "" }
	}
	if c.MaxPacketSize <= 0 {
		c.MaxPacketSize = 64 << 10
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 3 * time.Minute
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.OutboundQueue <= 0 {
		c.OutboundQueue = 4096
	}
	if c.MaxUnacked <= 0 {
		c.MaxUnacked = 8192
	}
	if c.History <= 0 {
		c.History = 1000
	}
	return c
}

// Server is the IM server. Create it with New; it is safe for concurrent
// use.
type Server struct {
	cfg  Config
	log  *slog.Logger
	bus  *eventbus.Bus
	http *http.Server
	mux  *http.ServeMux

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

	sent, delivered, offline, acked, badFrames atomic.Int64
}

// New builds a server, its bus and its handlers, and starts the bus.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, conns: map[int64]*conn{}}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.groups.m = map[string][]string{}
	for id, members := range cfg.Groups {
		s.groups.set(id, members)
	}
	s.channels.m = map[string]*channel{}
	s.sessions.m = map[string]*session{}
	// Message ids start at the start time in ms times 1000, so they grow
	// across restarts.
	s.nextMsgID.Store(time.Now().UnixMilli() * 1000)

	seed := maphash.MakeSeed()
	opts := []eventbus.Option{
		eventbus.WithLogger(cfg.Logger),
		// Channel events of one channel that queue up are stored as one batch.
		eventbus.WithBatch(eventbus.EventChannelDistribute, 64),
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
	bus, err := eventbus.New(append(opts, cfg.BusOptions...)...)
	if err != nil {
		return nil, err
	}
	s.bus = bus
	if err := s.register(); err != nil {
		return nil, err
	}
	if err := bus.Start(); err != nil {
		return nil, err
	}

	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /{$}", s.serveWS)
	s.mux.HandleFunc("GET /groups/{id}", s.getGroup)
	s.mux.HandleFunc("PUT /groups/{id}", s.putGroup)
	s.mux.HandleFunc("GET /stats", s.getStats)
	s.http = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Handler returns the server's HTTP handler: the WebSocket endpoint at
// "/", the group API at "/groups/{id}" (GET; PUT {"members":[...]}) and
// counters at "/stats".
func (s *Server) Handler() http.Handler { return s.mux }

// Serve accepts connections on ln until Close; it then returns
// http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error { return s.http.Serve(ln) }

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
	return errors.Join(err, s.bus.Close(ctx))
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
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		OriginPatterns:  []string{"*"}, // an example: any web page may connect
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
		s:      s,
		id:     s.nextConnID.Add(1),
		ws:     ws,
		remote: r.RemoteAddr,
		authed: make(chan bool, 1),
		out:    make(chan outItem, s.cfg.OutboundQueue),
		stop:   make(chan struct{}),
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

// SetGroup makes members the members of group id, creating it.
func (s *Server) SetGroup(id string, members []string) { s.groups.set(id, members) }

// Group returns the members of group id and whether it exists.
func (s *Server) Group(id string) ([]string, bool) { return s.groups.get(id) }

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
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
		http.Error(w, "body: want {\"members\":[\"uid\",...]}: "+err.Error(), http.StatusBadRequest)
		return
	}
	id := r.PathValue("id")
	s.groups.set(id, body.Members)
	members, _ := s.groups.get(id)
	writeJSON(w, groupBody{Members: members})
}

// Stats are the server's counters and its bus's statistics.
type Stats struct {
	Connections int            `json:"connections"`
	Sent        int64          `json:"sent"`      // messages accepted (SENDACK success)
	Delivered   int64          `json:"delivered"` // RECVs queued to a connection
	Offline     int64          `json:"offline"`   // deliveries put in an offline queue
	Acked       int64          `json:"acked"`     // RECVACKs that matched a pending RECV
	BadFrames   int64          `json:"badFrames"` // connections closed for a bad frame
	Bus         eventbus.Stats `json:"bus"`
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	return Stats{Connections: n, Sent: s.sent.Load(), Delivered: s.delivered.Load(), Offline: s.offline.Load(),
		Acked: s.acked.Load(), BadFrames: s.badFrames.Load(), Bus: s.bus.Stats()}
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

func (g *groups) set(id string, members []string) {
	members = slices.Clone(members)
	slices.Sort(members)
	members = slices.Compact(members)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.m[id] = members
}

func (g *groups) get(id string) ([]string, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	m, ok := g.m[id]
	return m, ok
}
