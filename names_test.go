package eventbus_test

import (
	"context"
	"testing"

	"github.com/imbus/eventbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type nameServer struct{}

func (s *nameServer) permission(context.Context, *eventbus.UserContext) error { return nil }
func (s nameServer) audit(context.Context, *eventbus.UserContext) error       { return nil }

func (s *nameServer) literal() eventbus.Handler[eventbus.UserContext] {
	return func(context.Context, *eventbus.UserContext) error { return nil }
}

func store(context.Context, *eventbus.ChannelContext) error { return nil }

func generic[C eventbus.EventContext](context.Context, *C) error { return nil }

var pkgLevel = func(context.Context, *eventbus.UserContext) error { return nil }

// TestHandlerNameOfFuncs names real functions of every shape.
func TestHandlerNameOfFuncs(t *testing.T) {
	s := &nameServer{}
	nested := func() func(context.Context, *eventbus.UserContext) error {
		return func(context.Context, *eventbus.UserContext) error { return nil }
	}()
	tests := []struct {
		what string
		fn   any
		want string
	}{
		{"method value, pointer receiver", s.permission, "permission"},
		{"method value, value receiver", nameServer{}.audit, "audit"},
		{"method expression", (*nameServer).permission, "permission"},
		{"function", store, "store"},
		{"generic function", generic[eventbus.PushContext], "generic"},
		{"literal in a method", s.literal(), "literal"},
		{"literal in a test", func(context.Context, *eventbus.UserContext) error { return nil }, "TestHandlerNameOfFuncs"},
		{"nested literal", nested, "TestHandlerNameOfFuncs"},
		{"package-level literal", pkgLevel, "eventbus_test"},
		{"nil func", (func())(nil), "handler"},
		{"not a func", 42, "handler"},
		{"nil", nil, "handler"},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			assert.Equal(t, tt.want, eventbus.HandlerName(tt.fn))
		})
	}
}

// TestDefaultNamesNumberOnlyCollisions: "#n" appears only when the name is
// taken for that type, and each type has names of its own.
func TestDefaultNamesNumberOnlyCollisions(t *testing.T) {
	b := newBus(t)
	s := &nameServer{}
	names := func(typ eventbus.EventType, h eventbus.Handler[eventbus.UserContext], opts ...eventbus.HandlerOption) string {
		reg, err := eventbus.Register(b, typ, h, opts...)
		require.NoError(t, err)
		return reg.Name()
	}
	assert.Equal(t, "permission", names(eventbus.EventOnSend, s.permission))
	assert.Equal(t, "permission#2", names(eventbus.EventOnSend, s.permission))
	assert.Equal(t, "permission", names(eventbus.EventConnect, s.permission), "another type: the plain name is free")
	// An explicit name takes a number's place: the next default skips it.
	assert.Equal(t, "permission#3", names(eventbus.EventOnSend, s.audit, eventbus.WithName("permission#3")))
	assert.Equal(t, "permission#4", names(eventbus.EventOnSend, s.permission))
	assert.True(t, b.UnregisterHandler(eventbus.EventOnSend, "permission"))
	assert.Equal(t, "permission", names(eventbus.EventOnSend, s.permission), "a freed name is reused")
	// Replace without WithName keeps the replaced handler's name.
	assert.Equal(t, "permission#2", names(eventbus.EventOnSend, s.audit, eventbus.Replace("permission#2")))
	// A name given twice is still an error.
	_, err := eventbus.Register(b, eventbus.EventOnSend, s.audit, eventbus.WithName("permission"))
	assert.ErrorIs(t, err, eventbus.ErrDuplicateName)
}

// TestDefaultNameInCallInfo: the name a handler sees in its CallInfo (and
// the one logs and metrics use) is the short one.
func TestDefaultNameInCallInfo(t *testing.T) {
	b := newBus(t)
	got := make(chan string, 1)
	_, err := eventbus.Register(b, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		got <- info.Handler
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, b.Start())
	require.NoError(t, b.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &testConn{uid: "u"}}))
	assert.Equal(t, "TestDefaultNameInCallInfo", <-got)
}
