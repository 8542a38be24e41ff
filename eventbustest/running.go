package eventbustest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imbus/eventbus"
)

// running keeps the handler calls in progress on a test's bus, so that a
// test that ends with a handler stuck is told which handler, on which
// event. It is the outermost middleware of every bus NewBus builds; its
// cost, a lock per handler call, is nothing next to a test's.
type running struct {
	mu    sync.Mutex
	next  uint64
	calls map[uint64]runningCall
}

type runningCall struct {
	info  eventbus.CallInfo
	ev    eventbus.Event
	since time.Time
}

func (r *running) middleware(next eventbus.HandlerFunc) eventbus.HandlerFunc {
	return func(ctx context.Context, ev eventbus.Event) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		r.mu.Lock()
		if r.calls == nil {
			r.calls = map[uint64]runningCall{}
		}
		r.next++
		id := r.next
		r.calls[id] = runningCall{info: info, ev: ev, since: time.Now()}
		r.mu.Unlock()
		defer func() { // also on a panic or runtime.Goexit
			r.mu.Lock()
			delete(r.calls, id)
			r.mu.Unlock()
		}()
		return next(ctx, ev)
	}
}

// describe lists the calls still running, oldest first, one per line, or
// returns "" when there are none.
func (r *running) describe() string {
	r.mu.Lock()
	calls := make([]runningCall, 0, len(r.calls))
	for _, c := range r.calls {
		calls = append(calls, c)
	}
	r.mu.Unlock()
	if len(calls) == 0 {
		return ""
	}
	slices.SortFunc(calls, func(a, b runningCall) int { return a.since.Compare(b.since) })
	var sb strings.Builder
	sb.WriteString("\n\tstill running:")
	for _, c := range calls {
		who := "handler"
		fmt.Fprintf(&sb, "\n\t%s %q of %s (attempt %d) on %s, for %v", who, c.info.Handler, c.info.TypeName,
			c.info.Attempt, eventKey(c.ev), time.Since(c.since).Round(time.Millisecond))
	}
	return sb.String()
}

// eventKey says which key an event belongs to, in words.
func eventKey(ev eventbus.Event) (s string) {
	defer func() {
		if recover() != nil { // a Conn whose UID panics
			s = "an event whose key cannot be read"
		}
	}()
	switch e := ev.(type) {
	case *eventbus.UserContext:
		if e.Conn == nil {
			return "a user event without a connection"
		}
		if uid := e.Conn.UID(); uid != "" {
			return fmt.Sprintf("user %q", uid)
		}
		return fmt.Sprintf("connection %d", e.Conn.ID())
	case *eventbus.ChannelContext:
		return fmt.Sprintf("channel %q (type %d)", e.ChannelID, e.ChannelType)
	case *eventbus.PushContext:
		if e.Message == nil {
			return "a push event without a message"
		}
		return fmt.Sprintf("a push of channel %q (type %d)", e.Message.ChannelID, e.Message.ChannelType)
	}
	return "an event"
}
