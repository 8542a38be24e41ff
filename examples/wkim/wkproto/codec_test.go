package wkproto_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/imbus/eventbus/examples/wkim/wkproto"
)

// samples has one packet of every type, with every optional field used
// somewhere, as the round-trip and fuzz seeds.
func samples() []wkproto.Packet {
	return []wkproto.Packet{
		&wkproto.ConnectPacket{Version: 2, DeviceFlag: 1, DeviceID: "0123456789abcdef0123456789abcdefW",
			UID: "alice", Token: "t0k", ClientTimestamp: 1700000000123, ClientKey: "hlF7wMOf6Ha3ZGy1407gPa9xzLrWdFDBapcK2MvAPn4="},
		&wkproto.ConnackPacket{TimeDiff: -42, ReasonCode: wkproto.ReasonSuccess, ServerKey: "2/ygd0TRqiC1sebr6VaMzxUwnqJ9Zmo98HwJpoCThRI=", Salt: "Salt0123456789ab"},
		&wkproto.SendPacket{Flags: wkproto.FlagRedDot, ClientSeq: 7, ClientMsgNo: "cmn0001", ChannelID: "bob",
			ChannelType: wkproto.ChannelPerson, MsgKey: "d10241eec9fc21aab156ee9c788cece9", Payload: []byte("AvZb7qD8")},
		&wkproto.SendPacket{Setting: wkproto.SettingReceipt | wkproto.SettingStream | wkproto.SettingTopic, ClientSeq: 1<<32 - 1,
			ClientMsgNo: "c", StreamNo: "s1", ChannelID: "g1", ChannelType: wkproto.ChannelGroup, MsgKey: "k", Topic: "news"},
		&wkproto.SendackPacket{MessageID: 1234567890123456789, ClientSeq: 7, MessageSeq: 42, ReasonCode: wkproto.ReasonSuccess},
		&wkproto.RecvPacket{Flags: wkproto.FlagRedDot | wkproto.FlagSyncOnce, MsgKey: "fd0d", FromUID: "alice", ChannelID: "alice",
			ChannelType: 1, ClientMsgNo: "cmn0001", MessageID: 1234567890123456789, MessageSeq: 42, Timestamp: 1700000000, Payload: []byte("xyz")},
		&wkproto.RecvPacket{Setting: wkproto.SettingStream | wkproto.SettingTopic, MsgKey: "k", FromUID: "a", ChannelID: "g", ChannelType: 2,
			ClientMsgNo: "n", StreamNo: "s", StreamSeq: 3, StreamFlag: 2, MessageID: -1, MessageSeq: 1, Timestamp: 2, Topic: "t"},
		&wkproto.RecvackPacket{Flags: wkproto.FlagRedDot, MessageID: 99, MessageSeq: 3},
		&wkproto.PingPacket{},
		&wkproto.PongPacket{},
		&wkproto.DisconnectPacket{ReasonCode: wkproto.ReasonConnectKick, Reason: "logged in elsewhere"},
		&wkproto.SubPacket{Setting: 1, ClientMsgNo: "c", ChannelID: "live", ChannelType: 2, Action: 1, Param: "p"},
		&wkproto.SubackPacket{ClientMsgNo: "c", ChannelID: "live", ChannelType: 2, Action: 1, ReasonCode: 1},
	}
}

func mustEncode(t testing.TB, p wkproto.Packet) []byte {
	t.Helper()
	b, err := wkproto.Encode(p)
	if err != nil {
		t.Fatalf("Encode(%T): %v", p, err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, p := range samples() {
		t.Run(p.Type().String(), func(t *testing.T) {
			b := mustEncode(t, p)
			if got := wkproto.PacketType(b[0] >> 4); got != p.Type() {
				t.Fatalf("first byte type %v, want %v", got, p.Type())
			}
			got, n, err := wkproto.Decode(b, 0)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if n != len(b) {
				t.Fatalf("Decode took %d bytes of %d", n, len(b))
			}
			if !reflect.DeepEqual(got, p) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, p)
			}
		})
	}
}

// TestSDKBytes pins byte layouts the SDK writes or reads.
func TestSDKBytes(t *testing.T) {
	if b := mustEncode(t, &wkproto.PingPacket{}); !bytes.Equal(b, []byte{0x70}) {
		t.Errorf("PING = % x, want 70", b)
	}
	if b := mustEncode(t, &wkproto.PongPacket{}); !bytes.Equal(b, []byte{0x80}) {
		t.Errorf("PONG = % x, want 80", b)
	}
	// SENDACK: type 4, length 17, id i64, clientSeq u32, messageSeq u32, reason u8.
	b := mustEncode(t, &wkproto.SendackPacket{MessageID: 0x0102030405060708, ClientSeq: 9, MessageSeq: 10, ReasonCode: 1})
	want := []byte{0x40, 17, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9, 0, 0, 0, 10, 1}
	if !bytes.Equal(b, want) {
		t.Errorf("SENDACK = % x\nwant      % x", b, want)
	}
	// The SDK's SEND: reddot set, so byte0 is 0x32.
	b = mustEncode(t, &wkproto.SendPacket{Flags: wkproto.FlagRedDot, ChannelID: "g", ChannelType: 2})
	if b[0] != 0x32 {
		t.Errorf("SEND byte0 = %#x, want 0x32", b[0])
	}
	// A body of 200 bytes needs two length bytes: 200 = 0x48 | 0x80, 0x01.
	b = mustEncode(t, &wkproto.DisconnectPacket{Reason: strings.Repeat("x", 197)})
	if !bytes.Equal(b[:3], []byte{0x90, 0xc8, 0x01}) || len(b) != 203 {
		t.Errorf("DISCONNECT header % x, len %d; want 90 c8 01, 203", b[:3], len(b))
	}
}

func TestDecodeStream(t *testing.T) {
	// Packets joined in one buffer come out one by one; any strict prefix
	// of a packet is ErrShort and reads nothing.
	var stream []byte
	for _, p := range samples() {
		stream = append(stream, mustEncode(t, p)...)
	}
	var got []wkproto.Packet
	for rest := stream; len(rest) > 0; {
		p, n, err := wkproto.Decode(rest, 0)
		if err != nil {
			t.Fatalf("Decode after %d packets: %v", len(got), err)
		}
		got = append(got, p)
		rest = rest[n:]
	}
	if !reflect.DeepEqual(got, samples()) {
		t.Fatalf("stream decoded to %d packets, want %d equal ones", len(got), len(samples()))
	}
	for _, p := range samples() {
		b := mustEncode(t, p)
		for i := range len(b) {
			if _, n, err := wkproto.Decode(b[:i], 0); !errors.Is(err, wkproto.ErrShort) || n != 0 {
				t.Fatalf("%v prefix %d/%d: n=%d err=%v, want ErrShort", p.Type(), i, len(b), n, err)
			}
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"type 0", []byte{0x00, 0x00}, 0, wkproto.ErrUnknownType},
		{"type 12", []byte{0xc0, 0x00}, 0, wkproto.ErrUnknownType},
		{"type 15", []byte{0xf0}, 0, wkproto.ErrUnknownType},
		{"length of 5 bytes", []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, 0, wkproto.ErrMalformed},
		{"oversized", []byte{0x30, 0x81, 0x08}, 1024, wkproto.ErrTooLarge}, // declares 1025
		{"oversized before the body arrives", []byte{0x30, 0xff, 0xff, 0xff, 0x7f}, 1 << 20, wkproto.ErrTooLarge},
		{"SENDACK body too short", []byte{0x40, 3, 0, 0, 0}, 0, wkproto.ErrMalformed},
		{"string longer than body", []byte{0x90, 3, 1, 0, 9}, 0, wkproto.ErrMalformed},
		{"CONNECT cut after uid", append([]byte{0x10, 7, 2, 1, 0, 1, 'd', 0, 1}, 'a'), 0, wkproto.ErrMalformed},
		{"RECVACK of 11 bytes", []byte{0x60, 11, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, 0, wkproto.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, n, err := wkproto.Decode(tt.in, tt.max)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode(% x) = %v, %d, %v; want %v", tt.in, p, n, err, tt.want)
			}
			if p != nil || n != 0 {
				t.Fatalf("failed Decode returned packet %v and n=%d", p, n)
			}
		})
	}
	// Exactly at the limit is fine.
	b := mustEncode(t, &wkproto.DisconnectPacket{Reason: "abc"}) // body 6
	if _, _, err := wkproto.Decode(b, 6); err != nil {
		t.Fatalf("body at the limit: %v", err)
	}
	if _, _, err := wkproto.Decode(b, 5); !errors.Is(err, wkproto.ErrTooLarge) {
		t.Fatalf("body over the limit: %v, want ErrTooLarge", err)
	}
}

func TestEncodeErrors(t *testing.T) {
	long := strings.Repeat("x", 1<<16)
	dst := []byte("keep")
	out, err := wkproto.Append(dst, &wkproto.ConnectPacket{UID: long})
	if !errors.Is(err, wkproto.ErrEncode) {
		t.Fatalf("65536-byte string: err %v, want ErrEncode", err)
	}
	if string(out) != "keep" {
		t.Fatalf("failed Append changed dst to %q", out)
	}
	if _, err := wkproto.Encode(nil); !errors.Is(err, wkproto.ErrEncode) {
		t.Fatalf("nil packet: err %v, want ErrEncode", err)
	}
}

func TestPacketTypeString(t *testing.T) {
	if s := wkproto.TypeRecvack.String(); s != "RECVACK" {
		t.Errorf("TypeRecvack = %q", s)
	}
	if s := wkproto.PacketType(13).String(); s != "PacketType(13)" {
		t.Errorf("PacketType(13) = %q", s)
	}
}

// FuzzDecode feeds Decode arbitrary bytes: it must never panic, must take
// no more than it was given, and what it decodes must encode back to
// bytes that decode to the same packet.
func FuzzDecode(f *testing.F) {
	for _, p := range samples() {
		b, err := wkproto.Encode(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{0x10, 0x00})
	f.Add([]byte{0x50, 0x02, 0x04, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		p, n, err := wkproto.Decode(in, 1<<16)
		if err != nil {
			if p != nil || n != 0 {
				t.Fatalf("error %v with packet %v, n=%d", err, p, n)
			}
			return
		}
		if n <= 0 || n > len(in) {
			t.Fatalf("took %d bytes of %d", n, len(in))
		}
		b, err := wkproto.Encode(p)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", p, err)
		}
		q, m, err := wkproto.Decode(b, 0)
		if err != nil || m != len(b) {
			t.Fatalf("decode of re-encoded %#v: n=%d/%d err=%v", p, m, len(b), err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("re-decoded packet differs:\n%#v\n%#v", p, q)
		}
	})
}
