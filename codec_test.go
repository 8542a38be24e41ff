package eventbus_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/imbus/eventbus"
)

// codecConn is the connection a test Codec decodes to.
type codecConn struct {
	uid string
	id  int64
}

func (c *codecConn) UID() string { return c.uid }
func (c *codecConn) ID() int64   { return c.id }

// lineCodec encodes a UserContext whose Frame is a string as
// "uid\nid\nframe". failEncode / failDecode make it fail.
type lineCodec struct {
	failEncode, failDecode, nilDecode bool
}

var errCodecTest = errors.New("codec test failure")

func (c lineCodec) Encode(ev *eventbus.UserContext) ([]byte, error) {
	if c.failEncode {
		return nil, errCodecTest
	}
	frame, _ := ev.Frame.(string)
	return fmt.Appendf(nil, "%s\n%d\n%s", ev.Conn.UID(), ev.Conn.ID(), frame), nil
}

func (c lineCodec) Decode(data []byte) (*eventbus.UserContext, error) {
	if c.failDecode {
		return nil, errCodecTest
	}
	if c.nilDecode {
		return nil, nil
	}
	parts := strings.SplitN(string(data), "\n", 3)
	if len(parts) != 3 {
		return nil, errors.New("want 3 lines")
	}
	id, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return nil, err
	}
	return &eventbus.UserContext{Conn: &codecConn{uid: parts[0], id: id}, Frame: parts[2]}, nil
}

const typeCustomPush eventbus.EventType = 40 // defined as a pusher-pool type

func codecBus(t testing.TB, opts ...eventbus.Option) *eventbus.Bus {
	t.Helper()
	b, err := eventbus.New(append([]eventbus.Option{eventbus.WithCodec(eventbus.EventOnSend, lineCodec{}),
		eventbus.WithDefine(typeCustomPush, eventbus.PoolPusher, "custom-push")}, opts...)...)
	require.NoError(t, err)
	return b
}

func fullMessage(i int) *eventbus.Message {
	return &eventbus.Message{
		MessageID:   -int64(i) * 1e12,
		MessageSeq:  math.MaxUint64 - uint64(i),
		ClientMsgNo: fmt.Sprintf("client-%d", i),
		FromUID:     "用户-" + strconv.Itoa(i),
		ChannelID:   "group/42",
		ChannelType: 2,
		Payload:     bytes.Repeat([]byte{byte(i), 0, 0xff}, i+1),
		Timestamp:   1_746_000_000_000 + int64(i),
		Header:      map[string]string{"seq": strconv.Itoa(i), "flags": "\x00\x01", "": "empty key"},
	}
}

func codecEvents() []eventbus.Event {
	return []eventbus.Event{
		&eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: "c1", ChannelType: 1,
			Messages: []*eventbus.Message{fullMessage(1), fullMessage(2)}},
		&eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute},
		&eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, Messages: []*eventbus.Message{}},
		&eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, Messages: []*eventbus.Message{nil, {}, {
			Payload: []byte{}, Header: map[string]string{}}}},
		&eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: fullMessage(3),
			Subscribers: []string{"a", "", "ü"}},
		&eventbus.PushContext{EventType: eventbus.EventPushOffline},
		&eventbus.PushContext{EventType: eventbus.EventPushOffline, Message: &eventbus.Message{}, Subscribers: []string{}},
		&eventbus.PushContext{EventType: typeCustomPush, Message: fullMessage(4), Subscribers: []string{"x"}},
		&eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &codecConn{uid: "u1", id: 7}, Frame: "hello\nworld"},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	b := codecBus(t)
	for i, ev := range codecEvents() {
		data, err := b.EncodeEvent(ev)
		require.NoError(t, err, "event %d", i)
		got, err := b.DecodeEvent(ev.Type(), data)
		require.NoError(t, err, "event %d", i)
		require.Equal(t, ev, got, "event %d", i)
		require.True(t, reflect.DeepEqual(ev, got), "event %d: nil and empty stay apart", i)
		again, err := b.EncodeEvent(got)
		require.NoError(t, err)
		require.Equal(t, data, again, "event %d: encoding is deterministic", i)
	}
}

func TestDecodedEventOwnsItsMemory(t *testing.T) {
	b := codecBus(t)
	ev := codecEvents()[0]
	data, err := b.EncodeEvent(ev)
	require.NoError(t, err)
	got, err := b.DecodeEvent(ev.Type(), data)
	require.NoError(t, err)
	clear(data)
	require.Equal(t, ev, got)
}

// fill sets every field of the struct v points to to a non-zero value, by
// kind; a field of a kind it does not know fails the test, so a field added
// to Message cannot be forgotten by the codec and this test.
func fill(t *testing.T, v reflect.Value, seed int) {
	t.Helper()
	v = v.Elem()
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if !sf.IsExported() {
			continue
		}
		n := seed*100 + i + 1
		switch f.Kind() {
		case reflect.String:
			f.SetString(fmt.Sprintf("%s-%d", sf.Name, n))
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			f.SetInt(-int64(n))
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			f.SetUint(uint64(n))
		case reflect.Slice:
			if f.Type().Elem().Kind() != reflect.Uint8 {
				t.Fatalf("Message.%s: slice of %v: teach the codec and this test", sf.Name, f.Type().Elem())
			}
			f.SetBytes([]byte(sf.Name))
		case reflect.Map:
			if f.Type() != reflect.TypeFor[map[string]string]() {
				t.Fatalf("Message.%s: %v: teach the codec and this test", sf.Name, f.Type())
			}
			f.Set(reflect.ValueOf(map[string]string{sf.Name: strconv.Itoa(n)}))
		default:
			t.Fatalf("Message.%s: kind %v: teach the codec and this test", sf.Name, f.Kind())
		}
	}
}

func TestCodecCoversEveryField(t *testing.T) {
	b := codecBus(t)
	m := &eventbus.Message{}
	fill(t, reflect.ValueOf(m), 1)
	for i := range reflect.ValueOf(m).Elem().NumField() {
		require.False(t, reflect.ValueOf(m).Elem().Field(i).IsZero(), "field %d filled", i)
	}
	for _, ev := range []eventbus.Event{
		&eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: "c", ChannelType: 3, Messages: []*eventbus.Message{m}},
		&eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: m, Subscribers: []string{"s"}},
	} {
		data, err := b.EncodeEvent(ev)
		require.NoError(t, err)
		got, err := b.DecodeEvent(ev.Type(), data)
		require.NoError(t, err)
		require.Equal(t, ev, got)
	}
	// The contexts' own fields: a new one must be added to the codec.
	names := func(v any) []string {
		var out []string
		for f := range reflect.TypeOf(v).Fields() {
			out = append(out, f.Name)
		}
		return out
	}
	require.Equal(t, []string{"EventType", "ChannelID", "ChannelType", "Messages"}, names(eventbus.ChannelContext{}),
		"a field added to ChannelContext must be added to the codec")
	require.Equal(t, []string{"EventType", "Message", "Subscribers"}, names(eventbus.PushContext{}),
		"a field added to PushContext must be added to the codec")
}

func TestDecodeRejectsBadData(t *testing.T) {
	b := codecBus(t)
	for i, ev := range codecEvents() {
		data, err := b.EncodeEvent(ev)
		require.NoError(t, err)
		for n := range len(data) {
			if ev.Type() == eventbus.EventOnSend && n >= 3 {
				break // past the header, a user body is the Codec's to check
			}
			_, err := b.DecodeEvent(ev.Type(), data[:n])
			require.ErrorIs(t, err, eventbus.ErrBadEncoding, "event %d cut to %d of %d bytes", i, n, len(data))
		}
		if ev.Type() != eventbus.EventOnSend {
			_, err = b.DecodeEvent(ev.Type(), append(data, 0))
			require.ErrorIs(t, err, eventbus.ErrBadEncoding, "trailing byte")
			require.ErrorContains(t, err, "left over")
		}
		bad := bytes.Clone(data)
		bad[0] = 9
		_, err = b.DecodeEvent(ev.Type(), bad)
		require.ErrorIs(t, err, eventbus.ErrBadEncoding)
		require.ErrorContains(t, err, "version")
	}
	data, err := b.EncodeEvent(codecEvents()[0])
	require.NoError(t, err)
	_, err = b.DecodeEvent(eventbus.EventChannelDistribute, data)
	require.ErrorIs(t, err, eventbus.ErrBadEncoding)
	require.ErrorContains(t, err, "ChannelStore", "names the type the data holds")
	// Same type number, other pool's layout.
	forged := bytes.Clone(data)
	forged[1], forged[2] = 3, byte(eventbus.EventChannelStore)
	_, err = b.DecodeEvent(eventbus.EventChannelStore, forged)
	require.ErrorIs(t, err, eventbus.ErrBadEncoding)
	_, err = b.DecodeEvent(77, []byte{1, 2, 77})
	require.ErrorIs(t, err, eventbus.ErrUnknownEventType)
	// A count far beyond the data is an error, not a huge allocation.
	_, err = b.DecodeEvent(eventbus.EventPushOnline, []byte{1, 3, 20, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	require.ErrorIs(t, err, eventbus.ErrBadEncoding)
}

func TestEncodeErrors(t *testing.T) {
	b := codecBus(t)
	var nilUser *eventbus.UserContext
	var nilChan *eventbus.ChannelContext
	var nilPush *eventbus.PushContext
	for _, ev := range []eventbus.Event{nil, nilUser, nilChan, nilPush} {
		_, err := b.EncodeEvent(ev)
		require.ErrorIs(t, err, eventbus.ErrNilEvent)
	}
	_, err := b.EncodeEvent(&eventbus.UserContext{EventType: eventbus.EventRecvAck, Conn: &codecConn{}})
	require.ErrorIs(t, err, eventbus.ErrNoCodec)
	require.ErrorContains(t, err, "RecvAck")
	_, err = b.DecodeEvent(eventbus.EventRecvAck, []byte{1, 1, byte(eventbus.EventRecvAck)})
	require.ErrorIs(t, err, eventbus.ErrNoCodec)
	require.ErrorContains(t, err, "RecvAck")
	_, err = b.EncodeEvent(&eventbus.PushContext{EventType: eventbus.EventChannelStore})
	require.ErrorIs(t, err, eventbus.ErrWrongPool)
	_, err = b.EncodeEvent(&eventbus.PushContext{EventType: 99})
	require.ErrorIs(t, err, eventbus.ErrUnknownEventType)

	user := &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &codecConn{uid: "u"}, Frame: "f"}
	data, err := b.EncodeEvent(user)
	require.NoError(t, err)
	for _, c := range []struct {
		codec lineCodec
		want  string
	}{
		{lineCodec{failEncode: true}, "encode"},
		{lineCodec{failDecode: true}, "decode"},
		{lineCodec{nilDecode: true}, "nil event"},
	} {
		fb := codecBus(t, eventbus.WithCodec(eventbus.EventOnSend, c.codec)) // the later WithCodec wins
		if c.want == "encode" {
			_, err = fb.EncodeEvent(user)
		} else {
			_, err = fb.DecodeEvent(eventbus.EventOnSend, data)
		}
		require.ErrorContains(t, err, c.want)
		require.ErrorContains(t, err, "OnSend", "names the type")
		if c.want != "nil event" {
			require.ErrorIs(t, err, errCodecTest)
		}
	}
}

func TestWithCodecValidates(t *testing.T) {
	_, err := eventbus.New(eventbus.WithCodec(eventbus.EventOnSend, nil))
	require.ErrorContains(t, err, "nil Codec")
	_, err = eventbus.New(eventbus.WithCodec(eventbus.EventChannelStore, lineCodec{}))
	require.ErrorIs(t, err, eventbus.ErrWrongPool)
	_, err = eventbus.New(eventbus.WithCodec(eventbus.EventUnknown, lineCodec{}))
	require.ErrorIs(t, err, eventbus.ErrUnknownEventType)
	_, err = eventbus.New(eventbus.WithCodec(50, lineCodec{})) // 30–255: checked against Define later
	require.NoError(t, err)
}

// FuzzDecodeEvent: DecodeEvent never panics, and what it accepts encodes
// back to an event that decodes equal. The seeds run in every go test.
func FuzzDecodeEvent(f *testing.F) {
	b := codecBus(f)
	for _, ev := range codecEvents() {
		data, err := b.EncodeEvent(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(ev.Type()), data)
	}
	f.Add(byte(eventbus.EventPushOnline), []byte{1, 3, 20, 1, 0x80})
	f.Add(byte(0), []byte{})
	f.Fuzz(func(t *testing.T, typ byte, data []byte) {
		ev, err := b.DecodeEvent(eventbus.EventType(typ), data)
		if err != nil {
			return
		}
		enc, err := b.EncodeEvent(ev)
		require.NoError(t, err)
		again, err := b.DecodeEvent(eventbus.EventType(typ), enc)
		require.NoError(t, err)
		require.Equal(t, ev, again)
	})
}

// BenchmarkEncodeDecode: the cost a durable channel event pays for its
// encoding, and replay for decoding it.
func BenchmarkEncodeDecode(b *testing.B) {
	bus := codecBus(b)
	ev := &eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: "group/42", ChannelType: 2,
		Messages: []*eventbus.Message{fullMessage(7)}}
	data, err := bus.EncodeEvent(ev)
	require.NoError(b, err)
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := bus.EncodeEvent(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := bus.DecodeEvent(eventbus.EventChannelStore, data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// keepCodec keeps the slice Decode gets, as Codec's doc allows.
type keepCodec struct{ lineCodec }

func (keepCodec) Decode(data []byte) (*eventbus.UserContext, error) {
	return &eventbus.UserContext{Frame: data}, nil
}

func TestDecodeGivesCodecItsOwnCopy(t *testing.T) {
	b := codecBus(t, eventbus.WithCodec(eventbus.EventOnSend, keepCodec{}))
	data := []byte{1, 1, byte(eventbus.EventOnSend), 'h', 'i'}
	ev, err := b.DecodeEvent(eventbus.EventOnSend, data)
	require.NoError(t, err)
	clear(data) // a reused buffer, as journal.Replay's is
	require.Equal(t, []byte("hi"), ev.(*eventbus.UserContext).Frame)
}

// TestReplayDecodingMatchesDecodeEvent decodes the codec's events the way a
// replay does (many events' memory from shared blocks): each equals the
// one encoded, nil and empty apart, and owns its memory: changing one
// event's payload, or the data decoded, changes no other event.
func TestReplayDecodingMatchesDecodeEvent(t *testing.T) {
	b := codecBus(t)
	var evs []eventbus.Event
	for _, ev := range codecEvents() {
		if _, user := ev.(*eventbus.UserContext); !user {
			evs = append(evs, ev, ev) // twice: neighbours in the blocks
		}
	}
	types := make([]eventbus.EventType, len(evs))
	data := make([][]byte, len(evs))
	for i, ev := range evs {
		var err error
		types[i] = ev.Type()
		data[i], err = b.EncodeEvent(ev)
		require.NoError(t, err)
	}
	got, err := eventbus.DecodeEventsInSlab(b, types, data)
	require.NoError(t, err)
	for i := range evs {
		require.True(t, reflect.DeepEqual(evs[i], got[i]), "event %d: %#v", i, got[i])
	}
	for _, d := range data {
		clear(d)
	}
	first := got[0].(*eventbus.ChannelContext).Messages[0]
	first.Payload = append(first.Payload, 1, 2, 3) // grows into a new array, never into a neighbour
	first.Payload[0] ^= 0xff
	for i := range evs {
		if i == 0 {
			continue
		}
		require.True(t, reflect.DeepEqual(evs[i], got[i]), "event %d changed", i)
	}
}

// TestReplayDecodingAllocatesPerBlock: decoding many channel events the way
// a replay does allocates per block of events, not per event (a message
// Header map is the exception: one map each).
func TestReplayDecodingAllocatesPerBlock(t *testing.T) {
	b := codecBus(t)
	const n = 4096
	types := make([]eventbus.EventType, n)
	data := make([][]byte, n)
	for i := range data {
		ev := &eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: fmt.Sprint("channel-", i),
			ChannelType: 2, Messages: []*eventbus.Message{{MessageSeq: uint64(i), FromUID: "alice",
				ChannelID: fmt.Sprint("channel-", i), Payload: bytes.Repeat([]byte{'x'}, 128)}}}
		types[i] = ev.Type()
		var err error
		data[i], err = b.EncodeEvent(ev)
		require.NoError(t, err)
	}
	allocs := testing.AllocsPerRun(3, func() {
		_, err := eventbus.DecodeEventsInSlab(b, types, data)
		require.NoError(t, err)
	})
	perEvent := (allocs - 1) / n // 1: the result slice
	t.Logf("%.0f allocations for %d events: %.3f per event", allocs, n, perEvent)
	require.Less(t, perEvent, 0.1)
}
