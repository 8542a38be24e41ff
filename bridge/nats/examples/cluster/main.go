// Command cluster runs the IM flow on three nodes sharing one embedded
// NATS JetStream server: users send on every node (OnSend), the message
// crosses to whichever node owns its sender's partition, becomes a
// channel event (ChannelDistribute) that crosses again to the owner of
// the channel's partition, and then a push (PushOnline) that crosses a
// third time. Midway one node dies (its connection drops, as a crash
// looks to the others); its partitions move to the two survivors and its
// unacked events are redelivered. Each user writes in one group, so a
// sender's messages share the group's key all the way from the channel
// stage on. At the end the program checks that every message was pushed
// and that each sender's messages were pushed in the order sent.
//
//	go run ./examples/cluster            (from bridge/nats)
//	go run ./examples/cluster -users 500 -messages 40
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/imbus/eventbus"
	natsbridge "github.com/imbus/eventbus/bridge/nats"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	users := flag.Int("users", 300, "senders")
	messages := flag.Int("messages", 30, "messages per sender")
	channels := flag.Int("channels", 50, "group channels")
	verbose := flag.Bool("v", false, "log the bridges' info and warnings")
	flag.Parse()
	if err := run(os.Stdout, *users, *messages, *channels, *verbose); err != nil {
		log.Fatal(err)
	}
}

// conn is a connection as the bus sees it; a decoded event carries one.
type conn struct {
	uid string
	id  int64
}

func (c *conn) UID() string { return c.uid }
func (c *conn) ID() int64   { return c.id }

// sendCodec carries OnSend events (user pool: the Conn and the Frame are
// the application's types, so the application encodes them).
type sendCodec struct{}

type wireSend struct {
	UID  string
	Conn int64
	Msg  *eventbus.Message
}

func (sendCodec) Encode(ev *eventbus.UserContext) ([]byte, error) {
	return json.Marshal(wireSend{UID: ev.Conn.UID(), Conn: ev.Conn.ID(), Msg: ev.Frame.(*eventbus.Message)})
}

func (sendCodec) Decode(data []byte) (*eventbus.UserContext, error) {
	var w wireSend
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, err
	}
	return &eventbus.UserContext{Conn: &conn{uid: w.UID, id: w.Conn}, Frame: w.Msg}, nil
}

// pushes records every push, on whichever node it ran.
type pushes struct {
	mu     sync.Mutex
	bySeq  map[string][]uint64 // sender → MessageSeq in push order
	byNode map[string]int
	total  int
	want   int
	done   chan struct{}
}

func (p *pushes) record(node string, m *eventbus.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bySeq[m.FromUID] = append(p.bySeq[m.FromUID], m.MessageSeq)
	p.byNode[node]++
	p.total++
	if p.distinctLocked() == p.want && p.done != nil {
		close(p.done)
		p.done = nil
	}
}

func (p *pushes) distinctLocked() int {
	n := 0
	for _, s := range p.bySeq {
		seen := map[uint64]bool{}
		for _, v := range s {
			seen[v] = true
		}
		n += len(seen)
	}
	return n
}

type node struct {
	name string
	bus  *eventbus.Bus
	nc   *nats.Conn
	br   *natsbridge.Bridge
}

var flow = []eventbus.EventType{eventbus.EventOnSend, eventbus.EventChannelDistribute, eventbus.EventPushOnline}

func startNode(name, url string, rec *pushes, logger *slog.Logger) (*node, error) {
	bus, err := eventbus.New(eventbus.WithCodec(eventbus.EventOnSend, sendCodec{}), eventbus.WithLogger(logger))
	if err != nil {
		return nil, err
	}
	// OnSend: validate, hand the message to its channel (a follow-on
	// event: published, stored, then this handler returns).
	eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		m := ev.Frame.(*eventbus.Message)
		return bus.AddEvent(ctx, &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute,
			ChannelID: m.ChannelID, ChannelType: m.ChannelType, Messages: []*eventbus.Message{m}})
	}, eventbus.WithName("forward"))
	// ChannelDistribute: store, then push to the channel's online members.
	eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		for _, m := range ev.Messages {
			err := bus.AddEvent(ctx, &eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: m,
				Subscribers: []string{"member-1", "member-2"}})
			if err != nil {
				return err
			}
		}
		return nil
	}, eventbus.WithName("distribute"))
	// PushOnline: write to the receivers' connections (here: record it).
	eventbus.Register(bus, eventbus.EventPushOnline, func(ctx context.Context, ev *eventbus.PushContext) error {
		rec.record(name, ev.Message)
		return nil
	}, eventbus.WithName("push"))

	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	br, err := natsbridge.New(bus, js, natsbridge.Config{Stream: "IM", Types: flow, Node: name, Logger: logger})
	if err != nil {
		return nil, err
	}
	if err := bus.Start(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := br.Start(ctx); err != nil {
		return nil, err
	}
	return &node{name: name, bus: bus, nc: nc, br: br}, nil
}

// close shuts a node down the graceful way: bridge, bus, connection.
func (n *node) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.br.Close(ctx); err != nil {
		return err
	}
	if err := n.bus.Close(ctx); err != nil {
		return err
	}
	n.nc.Close()
	return nil
}

// die drops the node's connection first, so that the others see a crash
// (nothing acked, nothing handed back), then stops what is left of it.
func (n *node) die() {
	n.nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.br.Close(ctx)
	_ = n.bus.Close(ctx)
}

func run(out io.Writer, users, perUser, channels int, verbose bool) error {
	level := slog.LevelError + 1 // quiet unless -v
	if verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	dir, err := os.MkdirTemp("", "eventbus-cluster-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		return err
	}
	srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("nats-server did not start")
	}
	url := "nats://" + srv.Addr().(*net.TCPAddr).String()
	fmt.Fprintf(out, "embedded nats-server with JetStream at %s\n", url)

	total := users * perUser
	rec := &pushes{bySeq: map[string][]uint64{}, byNode: map[string]int{}, want: total, done: make(chan struct{})}
	done := rec.done
	var nodes []*node
	for _, name := range []string{"node-a", "node-b", "node-c"} {
		n, err := startNode(name, url, rec, logger)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		nodes = append(nodes, n)
	}
	fmt.Fprintf(out, "3 nodes up; %d users send %d messages each to %d channels, from every node\n", users, perUser, channels)

	// Senders: each user sends from one node, its messages in order.
	start := time.Now()
	ctx := context.Background()
	var wg sync.WaitGroup
	sendErr := make(chan error, users)
	for u := range users {
		from := nodes[1+u%2] // node-a is the one that dies; users connect to b and c
		wg.Go(func() {
			c := &conn{uid: "user-" + strconv.Itoa(u), id: int64(u)}
			for i := 1; i <= perUser; i++ {
				m := &eventbus.Message{MessageSeq: uint64(i), FromUID: c.uid, ClientMsgNo: fmt.Sprintf("%s-%d", c.uid, i),
					ChannelID: "group-" + strconv.Itoa(u%channels), ChannelType: 2, Payload: []byte("hello"),
					Timestamp: time.Now().UnixMilli()}
				if err := from.bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: c, Frame: m}); err != nil {
					sendErr <- err
					return
				}
			}
		})
	}
	// Midway, node-a dies.
	half := time.NewTicker(5 * time.Millisecond)
	for {
		<-half.C
		rec.mu.Lock()
		n := rec.total
		rec.mu.Unlock()
		if n >= total/2 {
			break
		}
	}
	half.Stop()
	a := nodes[0]
	st := a.br.Stats()
	fmt.Fprintf(out, "%v: half the messages pushed; node-a dies (it owned %d of %d partitions, had taken %d events)\n",
		time.Since(start).Round(time.Millisecond), st.Owned, natsbridge.DefaultPartitions, st.Delivered)
	died := time.Now()
	a.die()
	wg.Wait()
	close(sendErr)
	if err := <-sendErr; err != nil {
		return fmt.Errorf("send: %w", err)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		return fmt.Errorf("not every message was pushed within a minute")
	}
	fmt.Fprintf(out, "%v: every message pushed (%v after node-a died)\n", time.Since(start).Round(time.Millisecond),
		time.Since(died).Round(time.Millisecond))

	// Check: nothing lost, each sender's messages in order (a redelivery
	// may repeat earlier messages, never skip ahead).
	rec.mu.Lock()
	lost, disorder, dups := 0, 0, 0
	for _, seqs := range rec.bySeq {
		var high uint64
		seen := map[uint64]bool{}
		for _, s := range seqs {
			if s > high+1 {
				disorder++
			}
			high = max(high, s)
			if seen[s] {
				dups++
			}
			seen[s] = true
		}
		lost += perUser - len(seen)
	}
	names := make([]string, 0, len(rec.byNode))
	for n := range rec.byNode {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(out, "  pushes run on %s: %d\n", n, rec.byNode[n])
	}
	rec.mu.Unlock()
	for _, n := range nodes[1:] {
		s := n.br.Stats()
		fmt.Fprintf(out, "  %s: delivered %d, acked %d, partitions taken %d, rewound after the death %d\n",
			n.name, s.Delivered, s.Acked, s.Acquired, s.Resets)
		if err := n.close(); err != nil {
			return fmt.Errorf("%s: close: %w", n.name, err)
		}
	}
	fmt.Fprintf(out, "messages sent %d, pushed %d distinct, lost %d, pushed again after the death %d (at-least-once)\n",
		total, total-lost, lost, dups)
	if lost > 0 || disorder > 0 {
		return fmt.Errorf("FAILED: %d lost, %d pushed ahead of an earlier message of their sender", lost, disorder)
	}
	fmt.Fprintln(out, "OK: nothing lost, every sender's messages pushed in the order sent")
	return nil
}
