package wkproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Decode errors. Every error of Decode other than ErrShort means the
// stream cannot be read any further: the connection should be closed.
var (
	// ErrShort says the buffer ends inside a packet: read more and call
	// Decode again. It is not a protocol error.
	ErrShort = errors.New("wkproto: incomplete packet")
	// ErrTooLarge says a packet's declared length exceeds the limit.
	ErrTooLarge = errors.New("wkproto: packet too large")
	// ErrMalformed says a packet's bytes do not follow its layout: a
	// length field longer than four bytes, a body shorter than its fields.
	ErrMalformed = errors.New("wkproto: malformed packet")
	// ErrUnknownType says the packet type is not one of protocol version 2.
	ErrUnknownType = errors.New("wkproto: unknown packet type")
)

// MaxRemainingLength is the largest body the header can declare: four
// bytes of varint.
const MaxRemainingLength = 1<<28 - 1

// Decode reads the packet at the front of b. It returns the packet and the
// number of bytes it took. When b holds only part of a packet it returns
// ErrShort and reads nothing; a packet whose declared body exceeds maxSize
// bytes gives ErrTooLarge as soon as the length is read (maxSize <= 0 means
// MaxRemainingLength). Bytes after the last field of a fixed-layout packet
// are ignored, as later protocol versions append fields. The packet's
// strings and payload are copies: b may be reused.
func Decode(b []byte, maxSize int) (Packet, int, error) {
	if len(b) == 0 {
		return nil, 0, ErrShort
	}
	t := PacketType(b[0] >> 4)
	flags := Flags(b[0] & 0x0f)
	switch t {
	case TypePing:
		return &PingPacket{}, 1, nil
	case TypePong:
		return &PongPacket{}, 1, nil
	}
	if t == 0 || int(t) >= len(typeNames) {
		return nil, 0, fmt.Errorf("%w: %d", ErrUnknownType, uint8(t))
	}
	length, nlen, err := readVarint(b[1:])
	if err != nil {
		return nil, 0, err
	}
	if maxSize <= 0 {
		maxSize = MaxRemainingLength
	}
	if length > maxSize {
		return nil, 0, fmt.Errorf("%w: %s declares %d bytes, limit %d", ErrTooLarge, t, length, maxSize)
	}
	start := 1 + nlen
	if len(b)-start < length {
		return nil, 0, ErrShort
	}
	r := reader{b: b[start : start+length]}
	p := decodeBody(t, flags, &r)
	if r.err != nil {
		return nil, 0, fmt.Errorf("%w: %s of %d bytes: %v", ErrMalformed, t, length, r.err)
	}
	return p, start + length, nil
}

func decodeBody(t PacketType, flags Flags, r *reader) Packet {
	switch t {
	case TypeConnect:
		return &ConnectPacket{Flags: flags, Version: r.u8(), DeviceFlag: r.u8(), DeviceID: r.str(),
			UID: r.str(), Token: r.str(), ClientTimestamp: r.i64(), ClientKey: r.str()}
	case TypeConnack:
		return &ConnackPacket{Flags: flags, TimeDiff: r.i64(), ReasonCode: r.u8(), ServerKey: r.str(), Salt: r.str()}
	case TypeSend:
		p := &SendPacket{Flags: flags, Setting: r.u8(), ClientSeq: r.u32(), ClientMsgNo: r.str()}
		if p.Setting&SettingStream != 0 {
			p.StreamNo = r.str()
		}
		p.ChannelID, p.ChannelType, p.MsgKey = r.str(), r.u8(), r.str()
		if p.Setting&SettingTopic != 0 {
			p.Topic = r.str()
		}
		p.Payload = r.rest()
		return p
	case TypeSendack:
		return &SendackPacket{Flags: flags, MessageID: r.i64(), ClientSeq: r.u32(), MessageSeq: r.u32(), ReasonCode: r.u8()}
	case TypeRecv:
		p := &RecvPacket{Flags: flags, Setting: r.u8(), MsgKey: r.str(), FromUID: r.str(), ChannelID: r.str(),
			ChannelType: r.u8(), ClientMsgNo: r.str()}
		if p.Setting&SettingStream != 0 {
			p.StreamNo, p.StreamSeq, p.StreamFlag = r.str(), r.u32(), r.u8()
		}
		p.MessageID, p.MessageSeq, p.Timestamp = r.i64(), r.u32(), r.u32()
		if p.Setting&SettingTopic != 0 {
			p.Topic = r.str()
		}
		p.Payload = r.rest()
		return p
	case TypeRecvack:
		return &RecvackPacket{Flags: flags, MessageID: r.i64(), MessageSeq: r.u32()}
	case TypeDisconnect:
		return &DisconnectPacket{Flags: flags, ReasonCode: r.u8(), Reason: r.str()}
	case TypeSub:
		return &SubPacket{Flags: flags, Setting: r.u8(), ClientMsgNo: r.str(), ChannelID: r.str(),
			ChannelType: r.u8(), Action: r.u8(), Param: r.str()}
	case TypeSuback:
		return &SubackPacket{Flags: flags, ClientMsgNo: r.str(), ChannelID: r.str(), ChannelType: r.u8(),
			Action: r.u8(), ReasonCode: r.u8()}
	}
	panic("wkproto: decodeBody: unreachable type " + t.String())
}

// readVarint reads the remaining length: up to four bytes, seven bits each,
// least significant group first.
func readVarint(b []byte) (n, size int, err error) {
	for i := range 4 {
		if i >= len(b) {
			return 0, 0, ErrShort
		}
		n |= int(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return n, i + 1, nil
		}
	}
	return 0, 0, fmt.Errorf("%w: remaining length longer than 4 bytes", ErrMalformed)
}

// reader reads a packet body; the first failure sticks in err and every
// later read returns a zero value.
type reader struct {
	b   []byte
	err error
}

func (r *reader) need(n int, what string) bool {
	if r.err != nil {
		return false
	}
	if len(r.b) < n {
		r.err = fmt.Errorf("truncated %s: need %d bytes, have %d", what, n, len(r.b))
		return false
	}
	return true
}

func (r *reader) u8() uint8 {
	if !r.need(1, "uint8") {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	if !r.need(2, "uint16") {
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	if !r.need(4, "uint32") {
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) i64() int64 {
	if !r.need(8, "int64") {
		return 0
	}
	v := int64(binary.BigEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

func (r *reader) str() string {
	n := int(r.u16())
	if !r.need(n, "string") {
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) rest() []byte {
	if r.err != nil {
		return nil
	}
	v := append([]byte(nil), r.b...)
	r.b = nil
	return v
}

// ErrEncode says a packet cannot be encoded: a string longer than 65535
// bytes or a body longer than MaxRemainingLength.
var ErrEncode = errors.New("wkproto: cannot encode packet")

// Encode returns the bytes of p: its fixed header and body.
func Encode(p Packet) ([]byte, error) {
	return Append(nil, p)
}

// Append appends the bytes of p to dst and returns the extended slice. On
// error dst is returned unchanged.
func Append(dst []byte, p Packet) ([]byte, error) {
	var w writer
	var flags Flags
	switch p := p.(type) {
	case *PingPacket:
		return append(dst, byte(TypePing)<<4), nil
	case *PongPacket:
		return append(dst, byte(TypePong)<<4), nil
	case *ConnectPacket:
		flags = p.Flags
		w.u8(p.Version)
		w.u8(p.DeviceFlag)
		w.str(p.DeviceID)
		w.str(p.UID)
		w.str(p.Token)
		w.i64(p.ClientTimestamp)
		w.str(p.ClientKey)
	case *ConnackPacket:
		flags = p.Flags
		w.i64(p.TimeDiff)
		w.u8(p.ReasonCode)
		w.str(p.ServerKey)
		w.str(p.Salt)
	case *SendPacket:
		flags = p.Flags
		w.u8(p.Setting)
		w.u32(p.ClientSeq)
		w.str(p.ClientMsgNo)
		if p.Setting&SettingStream != 0 {
			w.str(p.StreamNo)
		}
		w.str(p.ChannelID)
		w.u8(p.ChannelType)
		w.str(p.MsgKey)
		if p.Setting&SettingTopic != 0 {
			w.str(p.Topic)
		}
		w.b = append(w.b, p.Payload...)
	case *SendackPacket:
		flags = p.Flags
		w.i64(p.MessageID)
		w.u32(p.ClientSeq)
		w.u32(p.MessageSeq)
		w.u8(p.ReasonCode)
	case *RecvPacket:
		flags = p.Flags
		w.u8(p.Setting)
		w.str(p.MsgKey)
		w.str(p.FromUID)
		w.str(p.ChannelID)
		w.u8(p.ChannelType)
		w.str(p.ClientMsgNo)
		if p.Setting&SettingStream != 0 {
			w.str(p.StreamNo)
			w.u32(p.StreamSeq)
			w.u8(p.StreamFlag)
		}
		w.i64(p.MessageID)
		w.u32(p.MessageSeq)
		w.u32(p.Timestamp)
		if p.Setting&SettingTopic != 0 {
			w.str(p.Topic)
		}
		w.b = append(w.b, p.Payload...)
	case *RecvackPacket:
		flags = p.Flags
		w.i64(p.MessageID)
		w.u32(p.MessageSeq)
	case *DisconnectPacket:
		flags = p.Flags
		w.u8(p.ReasonCode)
		w.str(p.Reason)
	case *SubPacket:
		flags = p.Flags
		w.u8(p.Setting)
		w.str(p.ClientMsgNo)
		w.str(p.ChannelID)
		w.u8(p.ChannelType)
		w.u8(p.Action)
		w.str(p.Param)
	case *SubackPacket:
		flags = p.Flags
		w.str(p.ClientMsgNo)
		w.str(p.ChannelID)
		w.u8(p.ChannelType)
		w.u8(p.Action)
		w.u8(p.ReasonCode)
	default:
		return dst, fmt.Errorf("%w: unsupported packet %T", ErrEncode, p)
	}
	if w.err != nil {
		return dst, fmt.Errorf("%w: %s: %v", ErrEncode, p.Type(), w.err)
	}
	if len(w.b) > MaxRemainingLength {
		return dst, fmt.Errorf("%w: %s body of %d bytes", ErrEncode, p.Type(), len(w.b))
	}
	dst = append(dst, byte(p.Type())<<4|byte(flags&0x0f))
	dst = appendVarint(dst, len(w.b))
	return append(dst, w.b...), nil
}

// appendVarint writes n as the remaining length. Unlike the SDK, which
// writes no byte at all for 0, it writes 0 as one zero byte, as MQTT does;
// no packet of this protocol has an empty body.
func appendVarint(dst []byte, n int) []byte {
	for {
		digit := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			digit |= 0x80
		}
		dst = append(dst, digit)
		if n == 0 {
			return dst
		}
	}
}

type writer struct {
	b   []byte
	err error
}

func (w *writer) u8(v uint8)   { w.b = append(w.b, v) }
func (w *writer) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *writer) i64(v int64)  { w.b = binary.BigEndian.AppendUint64(w.b, uint64(v)) }

func (w *writer) str(s string) {
	if len(s) > math.MaxUint16 {
		if w.err == nil {
			w.err = fmt.Errorf("string of %d bytes (limit 65535)", len(s))
		}
		return
	}
	w.b = binary.BigEndian.AppendUint16(w.b, uint16(len(s)))
	w.b = append(w.b, s...)
}
