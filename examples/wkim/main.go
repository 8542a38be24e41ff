// Command wkim is a small IM server on an eventbus.Bus that speaks
// WuKongIM's binary protocol (version 2) over WebSocket, so that
// WuKongIM's own JS SDK (npm wukongimjssdk) can log in, send and receive
// through it: person-to-person and group messages, SENDACK, RECV/RECVACK,
// heartbeats, and an offline queue replayed on the next login.
//
// Run it with:
//
//	go run ./examples/wkim -addr 127.0.0.1:5200 -group g1=alice,bob,carol
//
// and point the SDK at the printed address (WKSDK.shared().config.addr).
// Groups can also be set while it runs:
//
//	curl -X PUT -d '{"members":["alice","bob"]}' http://127.0.0.1:5200/groups/g2
//
// Counters and the bus's statistics are at /stats. SIGINT or SIGTERM shuts
// it down gracefully. The flow of events is described in package
// github.com/imbus/eventbus/examples/wkim/server.
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
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
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
	token := fs.String("token", "", "if set, the token every client must give (default: any token)")
	verbose := fs.Bool("v", false, "log every connection and login")
	groups := groupFlag{}
	fs.Var(groups, "group", "a group channel and its members, id=uid,uid,... (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg := server.Config{Logger: logger, Groups: groups}
	if *token != "" {
		cfg.Authenticate = func(uid, tok string) bool { return uid != "" && tok == *token }
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
	fmt.Fprintf(stdout, "wkim listening on ws://%s\n", ln.Addr())
	for id, members := range groups {
		fmt.Fprintf(stdout, "group %s: %s\n", id, strings.Join(members, ","))
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
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
