// Command wkim is a small IM server on an eventbus.Bus that speaks
// WuKongIM's binary protocol (version 2) over WebSocket, so that
// WuKongIM's own JS SDK (npm wukongimjssdk) can log in, send and receive
// through it: person-to-person and group messages, SENDACK, RECV/RECVACK,
// heartbeats, and an offline queue replayed on the next login.
//
// For development, on your own machine:
//
//	go run ./examples/wkim -addr 127.0.0.1:5200 -group g1=alice,bob,carol
//
// Any token logs in (development mode, said at start). Point the SDK at
// the printed address (WKSDK.shared().config.addr).
//
// For real: an admin token for the HTTP API, through which the
// application server sets each user's login token, and TLS:
//
//	go run ./examples/wkim -addr :5200 -admin-token "$WKIM_ADMIN_TOKEN" \
//	    -tls-cert cert.pem -tls-key key.pem -origins chat.example.com
//	curl -H "Authorization: Bearer $WKIM_ADMIN_TOKEN" -X PUT \
//	    -d '{"token":"…"}' https://host:5200/users/alice/token
//	curl -H "Authorization: Bearer $WKIM_ADMIN_TOKEN" -X PUT \
//	    -d '{"members":["alice","bob"]}' https://host:5200/groups/g2
//
// -token T (one token for every user) is an insecure development mode.
// Every queue has a limit, each a flag with a safe default (-h lists
// them). Counters and the bus's statistics are at /stats. SIGINT or
// SIGTERM shuts it down gracefully. The flow of events is described in
// package github.com/imbus/eventbus/examples/wkim/server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/imbus/eventbus/examples/wkim/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); errors.Is(err, flag.ErrHelp) {
		return
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "wkim:", err)
		os.Exit(1)
	}
}

// groupFlag collects -group id=uid,uid,... flags.
type groupFlag map[string][]string

// String prints the groups, for flag's help output.
func (g groupFlag) String() string { return fmt.Sprint(map[string][]string(g)) }

// Set adds the members of one -group id=uid,uid,... flag.
func (g groupFlag) Set(v string) error {
	id, members, ok := strings.Cut(v, "=")
	if !ok || id == "" {
		return errors.New("want id=uid,uid (members separated by commas)")
	}
	for m := range strings.SplitSeq(members, ",") {
		if m = strings.TrimSpace(m); m != "" {
			g[id] = append(g[id], m)
		}
	}
	return nil
}

// run serves until ctx ends, then shuts down gracefully.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wkim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:5200", "listen address (port 0 picks a free port)")
	adminToken := fs.String("admin-token", "", "bearer token of the HTTP admin API (at least 16 bytes); with it, users log in only with\nthe token set for them through PUT /users/<uid>/token. Without it, the API refuses writes")
	token := fs.String("token", "", "INSECURE, development only: one token for every user; whoever has it can log in as\nanyone and take their queued messages")
	tlsCert := fs.String("tls-cert", "", "certificate `file` (PEM): serve wss:// (with -tls-key)")
	tlsKey := fs.String("tls-key", "", "private key `file` (PEM) of -tls-cert")
	origins := fs.String("origins", "", "comma-separated host patterns of the web pages that may connect (e.g. chat.example.com,*.example.com);\ndefault: the server's own host (clients that send no Origin are not concerned)")
	verbose := fs.Bool("v", false, "log every connection and login")
	groups := groupFlag{}
	fs.Var(groups, "group", "a group channel and its members, id=uid,uid,... (repeatable)")

	var cfg server.Config
	d := server.Defaults()
	fs.IntVar(&cfg.MaxConnections, "max-conns", d.MaxConnections, "open WebSocket connections at most")
	fs.IntVar(&cfg.MaxOffline, "max-offline", d.MaxOffline, "messages kept per offline user (oldest dropped); memory: up to this × -max-packet per user")
	fs.DurationVar(&cfg.OfflineTTL, "offline-ttl", d.OfflineTTL, "how long a message waits for an offline user")
	fs.IntVar(&cfg.MaxGroups, "max-groups", d.MaxGroups, "groups at most")
	fs.IntVar(&cfg.MaxGroupMembers, "max-group-members", d.MaxGroupMembers, "members per group at most (the fan-out of one SEND);\nmemory: -max-groups × this × -max-id-len")
	fs.Float64Var(&cfg.SendRate, "send-rate", d.SendRate, "SENDs per second per connection (token bucket; a faster client is not read)")
	fs.IntVar(&cfg.SendBurst, "send-burst", d.SendBurst, "SENDs at once per connection")
	fs.Float64Var(&cfg.UserSendRate, "user-send-rate", d.UserSendRate, "SENDs per second per user, over all its logins")
	fs.IntVar(&cfg.UserSendBurst, "user-send-burst", d.UserSendBurst, "SENDs at once per user")
	fs.IntVar(&cfg.MaxOutboundBytes, "max-outbound", d.MaxOutboundBytes, "bytes waiting to be written to one connection before it is closed as too slow;\nmemory: up to this × -max-conns")
	fs.IntVar(&cfg.MaxUnacked, "max-unacked", d.MaxUnacked, "RECVs a connection may leave unacknowledged before it is closed")
	fs.IntVar(&cfg.MaxPacketSize, "max-packet", d.MaxPacketSize, "largest packet body in bytes")
	fs.IntVar(&cfg.MaxIDLength, "max-id-len", d.MaxIDLength, "longest uid, channel id and clientMsgNo in bytes")
	fs.IntVar(&cfg.DedupWindow, "dedup-window", d.DedupWindow, "recent clientMsgNo values kept per sender: a duplicate SEND gets the first SENDACK")
	fs.IntVar(&cfg.History, "history", d.History, "messages kept in memory per channel")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", d.ConnectTimeout, "from the upgrade to a handled login, in all (does not restart)")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", d.IdleTimeout, "close a connection that sends nothing for this long")
	fs.DurationVar(&cfg.ReadHeaderTimeout, "read-header-timeout", d.ReadHeaderTimeout, "to read an HTTP request's headers")
	fs.DurationVar(&cfg.HTTPIdleTimeout, "http-idle-timeout", d.HTTPIdleTimeout, "close an idle HTTP keep-alive connection after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *token != "" && *adminToken != "":
		return errors.New("-token and -admin-token exclude each other: with -admin-token, users log in with their own tokens")
	case (*tlsCert == "") != (*tlsKey == ""):
		return errors.New("-tls-cert and -tls-key go together")
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.Logger, cfg.Groups, cfg.AdminToken = logger, groups, *adminToken
	if *origins != "" {
		for o := range strings.SplitSeq(*origins, ",") {
			if o = strings.TrimSpace(o); o != "" {
				cfg.Origins = append(cfg.Origins, o)
			}
		}
	}
	switch {
	case *adminToken != "":
		// The default: per-user tokens, set through the admin API.
	case *token != "":
		cfg.Authenticate = server.SharedToken(*token)
		fmt.Fprintln(stderr, "wkim: INSECURE: -token is one token for every user: whoever has it can log in as anyone. Use -admin-token and per-user tokens.")
	default:
		cfg.Authenticate = server.AnyToken
		fmt.Fprintln(stderr, "wkim: DEVELOPMENT MODE: any token logs in as any user, and the admin API is read-only. Do not expose this server; use -admin-token.")
	}
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		_ = srv.Close(context.Background())
		return err
	}
	scheme := "ws"
	if *tlsCert != "" {
		scheme = "wss"
	}
	fmt.Fprintf(stdout, "wkim listening on %s://%s\n", scheme, ln.Addr())
	for id, members := range groups {
		fmt.Fprintf(stdout, "group %s: %s\n", id, strings.Join(members, ","))
	}

	served := make(chan error, 1)
	go func() {
		if *tlsCert != "" {
			served <- srv.ServeTLS(ln, *tlsCert, *tlsKey)
			return
		}
		served <- srv.Serve(ln)
	}()
	select {
	case err = <-served: // the listener failed
	case <-ctx.Done():
	}

	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cerr := srv.Close(closeCtx)
	if err == nil {
		err = <-served
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	st := srv.Stats()
	fmt.Fprintf(stdout, "wkim stopped: sent=%d delivered=%d offline=%d acked=%d badFrames=%d\n",
		st.Sent, st.Delivered, st.Offline, st.Acked, st.BadFrames)
	return errors.Join(err, cerr)
}
