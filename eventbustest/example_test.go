package eventbustest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/eventbustest"
)

// frameWriter is what the handler below needs of a connection. MockConn
// has it; so would the server's own connection type.
type frameWriter interface{ Write(frame any) error }

// ackAndForward is the handler under test: it acknowledges a sent message
// to its sender and hands the message to the channel pool. It depends on an
// eventbus.Emitter, not on *eventbus.Bus, so a test can pass a Recorder.
func ackAndForward(bus eventbus.Emitter) eventbus.Handler[eventbus.UserContext] {
	return func(ctx context.Context, ev *eventbus.UserContext) error {
		msg := ev.Frame.(*eventbus.Message)
		if err := ev.Conn.(frameWriter).Write("sendack " + msg.ClientMsgNo); err != nil {
			return err
		}
		return bus.AddEvent(ctx, &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute,
			ChannelID: msg.ChannelID, ChannelType: msg.ChannelType, Messages: []*eventbus.Message{msg}})
	}
}

// Test a handler alone: a MockConn stands for the client, a Recorder for
// the bus it emits into, and Run calls the handler as a bus would.
func Example() {
	conn := eventbustest.NewMockConn("alice")
	var rec eventbustest.Recorder
	msg := &eventbus.Message{ClientMsgNo: "c1", ChannelID: "g1", ChannelType: 2}

	res := eventbustest.Run(context.Background(),
		&eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn, Frame: msg}, ackAndForward(&rec))

	fmt.Println("handled:", res.Handled(), "frames:", conn.Frames())
	for _, r := range rec.Records() {
		fmt.Println("emitted", r.Event.Type(), "to", r.Event.(*eventbus.ChannelContext).ChannelID, "by handler", r.Call.Index)
	}
	// Output:
	// handled: true frames: [sendack c1]
	// emitted ChannelDistribute to g1 by handler 0
}

// Run a chain whose first handler, an audit, rejects a message: the chain
// stops there, as it would on a bus, and the store never sees it.
func ExampleRun() {
	audit := func(ctx context.Context, ev *eventbus.UserContext) error {
		if strings.Contains(string(ev.Frame.(*eventbus.Message).Payload), "spam") {
			return fmt.Errorf("audit: rejected: %w", eventbus.ErrStopChain)
		}
		return nil
	}
	var stored []string
	store := func(ctx context.Context, ev *eventbus.UserContext) error {
		stored = append(stored, string(ev.Frame.(*eventbus.Message).Payload))
		return nil
	}

	for _, text := range []string{"hello", "buy spam now"} {
		ev := &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: eventbustest.NewMockConn("bob"),
			Frame: &eventbus.Message{Payload: []byte(text)}}
		res := eventbustest.Run(context.Background(), ev, audit, store)
		fmt.Printf("%q: ran %d, stopped %v, err: %v\n", text, res.Ran, res.Stopped, res.Err)
	}
	fmt.Println("stored:", stored)
	// Output:
	// "hello": ran 2, stopped false, err: <nil>
	// "buy spam now": ran 1, stopped true, err: audit: rejected: eventbus: stop chain
	// stored: [hello]
}

// A connection that fails writes shows how a handler copes with a broken
// client: here the error ends the chain (a bus would retry it) and nothing
// is forwarded.
func ExampleMockConn_FailWrites() {
	conn := eventbustest.NewMockConn("alice")
	conn.FailWrites(errors.New("broken pipe"))
	var rec eventbustest.Recorder

	res := eventbustest.Run(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend,
		Conn: conn, Frame: &eventbus.Message{ClientMsgNo: "c2"}}, ackAndForward(&rec))

	fmt.Println("err:", res.Err, "| forwarded:", rec.Len())
	// Output: err: broken pipe | forwarded: 0
}

// A Recorder stands in for the bus in a handler that emits; FailWith makes
// it refuse events, as a closing bus does.
func ExampleRecorder_FailWith() {
	var rec eventbustest.Recorder
	rec.FailWith(eventbus.ErrClosed)

	res := eventbustest.Run(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend,
		Conn: eventbustest.NewMockConn("alice"), Frame: &eventbus.Message{ClientMsgNo: "c3"}}, ackAndForward(&rec))

	fmt.Println(errors.Is(res.Err, eventbus.ErrClosed), rec.Len())
	// Output: true 0
}

// NewBus gives a test a started bus that is closed when the test ends; the
// test fails if events were left behind or dead-lettered unexpectedly.
// (This example is compiled, not run: it needs a *testing.T.)
func ExampleNewBus() {
	testAckAndForward := func(t *testing.T) {
		b := eventbustest.NewBus(t)
		var rec eventbustest.Recorder
		if _, err := eventbus.Register(b.Bus, eventbus.EventOnSend, ackAndForward(&rec)); err != nil {
			t.Fatal(err)
		}
		conn := eventbustest.NewMockConn("alice")
		err := b.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend,
			Conn: conn, Frame: &eventbus.Message{ClientMsgNo: "c1", ChannelID: "g1"}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.WaitFrames(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := rec.Wait(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	_ = testAckAndForward
}
