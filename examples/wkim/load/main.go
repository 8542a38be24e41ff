// Command load measures the wkim server end to end: it opens N WebSocket
// connections (package wkclient: key exchange, AES and MD5 signatures as
// the SDK does), puts them in groups, has each send M messages into its
// group, and prints the message rates and the SEND→RECV latency seen by
// the receivers.
//
//	go run ./examples/wkim/load -clients 1000 -messages 20
//
// Without -addr it starts the server in the same process, with its
// default limits (so one machine runs both sides, clients and server
// sharing the CPUs); with -addr it loads a running server and sets its
// groups and each user's login token through its admin API, with
// -admin-token. User uN logs in with the token "load-uN".
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imbus/eventbus/examples/wkim/server"
	"github.com/imbus/eventbus/examples/wkim/wkclient"
	"github.com/imbus/eventbus/examples/wkim/wkproto"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

type config struct {
	clients, messages, groupSize, window, dialers int
	rate                                          float64
	addr, adminToken                              string
	timeout                                       time.Duration
}

func run(args []string, out io.Writer) error {
	var cfg config
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.IntVar(&cfg.clients, "clients", 1000, "connections, one user each")
	fs.IntVar(&cfg.messages, "messages", 20, "messages each client sends into its group")
	fs.IntVar(&cfg.groupSize, "group", 10, "members per group")
	fs.IntVar(&cfg.window, "window", 4, "SENDs a client may have waiting for their SENDACK")
	fs.IntVar(&cfg.dialers, "dialers", 32, "connections opened at once")
	fs.Float64Var(&cfg.rate, "rate", 0, "total SENDs per second, spread over the clients (default 0: as fast as the window allows)")
	fs.StringVar(&cfg.addr, "addr", "", "host:port of a running wkim server (default: start one in this process)")
	fs.StringVar(&cfg.adminToken, "admin-token", "", "with -addr: the server's admin token, to set groups and login tokens")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "give up after")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run (clients and in-process server) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.clients < 2 || cfg.messages < 1 || cfg.groupSize < 2 || cfg.window < 1 || cfg.dialers < 1 {
		return errors.New("want -clients >= 2, -messages >= 1, -group >= 2, -window >= 1, -dialers >= 1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()

	uids := make([]string, cfg.clients)
	for i := range uids {
		uids[i] = "u" + strconv.Itoa(i)
	}
	groupOf := func(i int) string { return "g" + strconv.Itoa(i/cfg.groupSize) }
	groups := map[string][]string{}
	for i, u := range uids {
		groups[groupOf(i)] = append(groups[groupOf(i)], u)
	}

	addr := cfg.addr
	if addr == "" {
		srv, ln, err := startServer(groups, uids)
		if err != nil {
			return err
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		defer func() {
			cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer ccancel()
			if err := srv.Close(cctx); err != nil {
				fmt.Fprintln(os.Stderr, "load: server close:", err)
			}
			<-served
		}()
		addr = ln.Addr().String()
	} else if err := setUp(ctx, addr, cfg.adminToken, groups, uids); err != nil {
		return err
	}

	// Every member but the sender receives each message.
	var expected int64
	for i := range uids {
		expected += int64(cfg.messages * (len(groups[groupOf(i)]) - 1))
	}
	m := newMeter(expected)
	clients, err := dialAll(ctx, "ws://"+addr, uids, cfg, m)
	defer func() {
		for _, c := range clients {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	if err != nil {
		return err
	}
	pacing := "as fast as the window allows"
	if cfg.rate > 0 {
		pacing = fmt.Sprintf("%.0f SENDs/s in all", cfg.rate)
	}
	fmt.Fprintf(out, "%d clients connected to ws://%s, %d groups of up to %d; each sends %d messages (window %d, %s)\n",
		len(clients), addr, len(groups), cfg.groupSize, cfg.messages, cfg.window, pacing)

	start := time.Now()
	var senders sync.WaitGroup
	sendErr := make(chan error, len(clients))
	for i, c := range clients {
		senders.Add(1)
		go func() {
			defer senders.Done()
			// With -rate, client i sends at start + offset + k·interval.
			var interval, offset time.Duration
			if cfg.rate > 0 {
				interval = time.Duration(float64(len(clients)) / cfg.rate * float64(time.Second))
				offset = interval * time.Duration(i) / time.Duration(len(clients))
			}
			if err := m.sendAll(ctx, c, groupOf(i), cfg.messages, start.Add(offset), interval); err != nil {
				sendErr <- fmt.Errorf("%s: %w", c.UID, err)
			}
		}()
	}
	senders.Wait()
	sent := time.Since(start)
	select {
	case err := <-sendErr:
		return err
	default:
	}
	select {
	case <-m.done:
	case <-ctx.Done():
		return fmt.Errorf("timed out: %d of %d RECVs arrived", m.received.Load(), expected)
	}
	elapsed := time.Since(start)
	for _, c := range clients {
		_ = c.Close() // waits for its reader: latencies are complete
	}
	clients = nil

	lat := m.latencies()
	total := int64(cfg.clients * cfg.messages)
	fmt.Fprintf(out, "sent %d messages in %v: %.0f msg/s accepted (SENDACK)\n", total, sent.Round(time.Millisecond), float64(total)/sent.Seconds())
	fmt.Fprintf(out, "delivered %d RECVs in %v: %.0f msg/s\n", len(lat), elapsed.Round(time.Millisecond), float64(len(lat))/elapsed.Seconds())
	fmt.Fprintf(out, "SEND→RECV latency: p50 %v, p99 %v, max %v\n",
		pct(lat, 0.50).Round(10*time.Microsecond), pct(lat, 0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
	return nil
}

// token is the login token of uid.
func token(uid string) string { return "load-" + uid }

func startServer(groups map[string][]string, uids []string) (*server.Server, net.Listener, error) {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.New(server.Config{Logger: logger, Groups: groups})
	if err != nil {
		return nil, nil, err
	}
	for _, uid := range uids {
		if err := srv.SetUserToken(uid, token(uid)); err != nil {
			_ = srv.Close(context.Background())
			return nil, nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = srv.Close(context.Background())
		return nil, nil, err
	}
	return srv, ln, nil
}

// setUp sets the groups and the users' login tokens of a running server
// through its admin API.
func setUp(ctx context.Context, addr, adminToken string, groups map[string][]string, uids []string) error {
	put := func(path string, body any) error {
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+addr+path, bytes.NewReader(b))
		if err != nil {
			return err
		}
		if adminToken != "" {
			req.Header.Set("Authorization", "Bearer "+adminToken)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("PUT %s: %s: %s", path, resp.Status, bytes.TrimSpace(msg))
		}
		return nil
	}
	for id, members := range groups {
		if err := put("/groups/"+id, map[string][]string{"members": members}); err != nil {
			return err
		}
	}
	for _, uid := range uids {
		if err := put("/users/"+uid+"/token", map[string]string{"token": token(uid)}); err != nil {
			return err
		}
	}
	return nil
}

// meter counts RECVs and keeps their latencies, one slice per client
// (written only by that client's reader goroutine).
type meter struct {
	expected int64
	received atomic.Int64
	done     chan struct{}

	mu    sync.Mutex
	perRx [][]time.Duration
	acks  map[*wkclient.Client]chan struct{}
}

func newMeter(expected int64) *meter {
	return &meter{expected: expected, done: make(chan struct{}), acks: map[*wkclient.Client]chan struct{}{}}
}

// payload carries the send time: `{"content":"<unix ns> <uid> <n>","type":1}`.
func payload(uid string, n int) []byte {
	return []byte(`{"content":"` + strconv.FormatInt(time.Now().UnixNano(), 10) + " " + uid + " " + strconv.Itoa(n) + `","type":1}`)
}

// onPacket returns the callback of client i: RECVs are timed, SENDACKs
// free a slot of the send window.
func (m *meter) onPacket(i int, window chan struct{}) func(wkproto.Packet) {
	return func(p wkproto.Packet) {
		switch p := p.(type) {
		case *wkproto.RecvPacket:
			var body struct{ Content string }
			if json.Unmarshal(p.Payload, &body) != nil {
				return
			}
			ts, _, _ := strings.Cut(body.Content, " ")
			ns, err := strconv.ParseInt(ts, 10, 64)
			if err != nil {
				return
			}
			m.perRx[i] = append(m.perRx[i], time.Duration(time.Now().UnixNano()-ns))
			if m.received.Add(1) == m.expected {
				close(m.done)
			}
		case *wkproto.SendackPacket:
			if p.ReasonCode == wkproto.ReasonSuccess {
				<-window
			}
		}
	}
}

func dialAll(ctx context.Context, url string, uids []string, cfg config, m *meter) ([]*wkclient.Client, error) {
	clients := make([]*wkclient.Client, len(uids))
	m.perRx = make([][]time.Duration, len(uids))
	windows := make([]chan struct{}, len(uids))
	sem := make(chan struct{}, cfg.dialers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i, uid := range uids {
		windows[i] = make(chan struct{}, cfg.window)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := wkclient.Dial(ctx, url, wkclient.Options{UID: uid, Token: token(uid), OnPacket: m.onPacket(i, windows[i])})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", uid, err))
				return
			}
			clients[i] = c
			m.acks[c] = windows[i]
		}()
	}
	wg.Wait()
	return clients, errors.Join(errs...)
}

// sendAll sends n messages from c into group, keeping at most the window
// waiting for SENDACK; with an interval, message k waits until first +
// (k-1)·interval.
func (m *meter) sendAll(ctx context.Context, c *wkclient.Client, group string, n int, first time.Time, interval time.Duration) error {
	m.mu.Lock()
	window := m.acks[c]
	m.mu.Unlock()
	pace := time.NewTimer(0)
	defer pace.Stop()
	for k := 1; k <= n; k++ {
		if interval > 0 {
			pace.Reset(time.Until(first.Add(time.Duration(k-1) * interval)))
			select {
			case <-pace.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case window <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.Done():
			return fmt.Errorf("connection closed: %v", c.Err())
		}
		if _, err := c.Send(ctx, group, wkproto.ChannelGroup, payload(c.UID, k)); err != nil {
			return err
		}
	}
	return nil
}

func (m *meter) latencies() []time.Duration {
	var all []time.Duration
	for _, l := range m.perRx {
		all = append(all, l...)
	}
	slices.Sort(all)
	return all
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}
