package eventbustest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/eventbustest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type server struct{}

func (s *server) audit(ctx context.Context, ev *eventbus.UserContext) error {
	return fmt.Errorf("audit: %w", eventbus.ErrStopChain)
}

func (s *server) store(ctx context.Context, ev *eventbus.UserContext) error {
	return eventbus.Permanent(errors.New("db down"))
}

func (s *server) pass(ctx context.Context, ev *eventbus.UserContext) error { return nil }

func TestRunNamedReportsGivenNames(t *testing.T) {
	s := &server{}
	var seen []string
	record := func(ctx context.Context, ev *eventbus.UserContext) error {
		info, _ := eventbus.CallInfoFrom(ctx)
		seen = append(seen, info.Handler)
		return nil
	}
	res := eventbustest.RunNamed(context.Background(), onSend("u"),
		eventbustest.Named("first", record),
		eventbustest.Named("", record), // default name
		eventbustest.Named("audit", s.audit))
	assert.True(t, res.Stopped)
	assert.Equal(t, "audit", res.Handler)
	assert.Equal(t, []string{"first", "TestRunNamedReportsGivenNames"}, seen)
}

// TestRunNamedLikeTheBus: the handler Result names is the one a bus
// reports for the same chain, registered without WithName (the second
// of one name gets "#2") or with it.
func TestRunNamedLikeTheBus(t *testing.T) {
	s := &server{}
	res := eventbustest.Run(context.Background(), onSend("u"), s.pass, s.pass, s.store)
	require.True(t, eventbus.IsPermanent(res.Err))
	named := eventbustest.RunNamed(context.Background(), onSend("u"),
		eventbustest.Named("", s.pass), eventbustest.Named("db", s.store))

	b := eventbustest.NewBus(t)
	b.ExpectDeadLetters()
	for _, h := range []eventbus.Handler[eventbus.UserContext]{s.pass, s.pass, s.store} {
		_, err := eventbus.Register(b.Bus, eventbus.EventOnSend, h)
		require.NoError(t, err)
	}
	_, err := eventbus.Register(b.Bus, eventbus.EventRecvAck, s.pass)
	require.NoError(t, err)
	_, err = eventbus.Register(b.Bus, eventbus.EventRecvAck, s.store, eventbus.WithName("db"))
	require.NoError(t, err)
	require.NoError(t, b.AddEvent(context.Background(), onSend("u")))
	require.NoError(t, b.AddEvent(context.Background(),
		&eventbus.UserContext{EventType: eventbus.EventRecvAck, Conn: eventbustest.NewMockConn("u")}))
	letters, err := b.WaitDeadLetters(within(t, 5*time.Second), 2)
	require.NoError(t, err)

	byType := map[eventbus.EventType]string{}
	for _, d := range letters {
		byType[d.Event.Type()] = d.Handler
	}
	assert.Equal(t, "store", res.Handler)
	assert.Equal(t, res.Handler, byType[eventbus.EventOnSend])
	assert.Equal(t, "db", named.Handler)
	assert.Equal(t, named.Handler, byType[eventbus.EventRecvAck])
}
