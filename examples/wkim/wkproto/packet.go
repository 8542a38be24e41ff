// Package wkproto encodes and decodes WuKongIM's binary protocol, version
// 2, as the official JS SDK (npm wukongimjssdk 1.0.4) speaks it over
// WebSocket, and implements its key exchange and payload encryption.
//
// A packet is a fixed header followed by a body. The header's first byte
// holds the packet type in its high four bits and four flags (dup,
// syncOnce, reddot, noPersist) in the low ones; the body's length follows
// as an MQTT variable-length integer (7 bits a byte, least significant
// group first). PING and PONG are the single byte of the header, with no
// length. Integers are big-endian; a string is a uint16 byte length and
// UTF-8 bytes.
//
// [Decode] reads one packet from the front of a buffer that may hold less
// or more than one; [Append] and [Encode] write one. Neither keeps state,
// so both are safe for concurrent use.
package wkproto

import "fmt"

// Version is the protocol version this package speaks. CONNECT carries it.
const Version = 2

// PacketType is the kind of a packet: the high four bits of its first byte.
type PacketType uint8

// The packet types of protocol version 2.
const (
	TypeConnect    PacketType = 1  // client → server: log in
	TypeConnack    PacketType = 2  // server → client: login result and server key
	TypeSend       PacketType = 3  // client → server: a message
	TypeSendack    PacketType = 4  // server → client: the message's id and sequence
	TypeRecv       PacketType = 5  // server → client: a message for the client
	TypeRecvack    PacketType = 6  // client → server: a RECV was received
	TypePing       PacketType = 7  // client → server: heartbeat (one byte)
	TypePong       PacketType = 8  // server → client: heartbeat answer (one byte)
	TypeDisconnect PacketType = 9  // server → client: kicked, with a reason
	TypeSub        PacketType = 10 // client → server: subscribe (not used here)
	TypeSuback     PacketType = 11 // server → client: subscription result (not used here)
)

var typeNames = [...]string{
	TypeConnect:    "CONNECT",
	TypeConnack:    "CONNACK",
	TypeSend:       "SEND",
	TypeSendack:    "SENDACK",
	TypeRecv:       "RECV",
	TypeRecvack:    "RECVACK",
	TypePing:       "PING",
	TypePong:       "PONG",
	TypeDisconnect: "DISCONNECT",
	TypeSub:        "SUB",
	TypeSuback:     "SUBACK",
}

// String returns the protocol's name of t, e.g. "SEND".
func (t PacketType) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("PacketType(%d)", uint8(t))
}

// Flags are the low four bits of a packet's first byte.
type Flags uint8

// The header flags. The SDK sets RedDot on SEND and copies a RECV's
// NoPersist, RedDot and SyncOnce onto its RECVACK.
const (
	FlagNoPersist Flags = 1 << 0
	FlagRedDot    Flags = 1 << 1
	FlagSyncOnce  Flags = 1 << 2
	FlagDup       Flags = 1 << 3
)

// Setting bits of SEND and RECV.
const (
	SettingReceipt uint8 = 0x80 // the sender wants read receipts
	SettingTopic   uint8 = 0x08 // a topic string follows the msgKey (SEND) or the timestamp (RECV)
	SettingStream  uint8 = 0x04 // stream fields are present
)

// Channel types.
const (
	ChannelPerson uint8 = 1 // person to person: the channel id is the other user's uid
	ChannelGroup  uint8 = 2 // a group
)

// Reason codes of CONNACK, SENDACK and DISCONNECT used by this package's
// server. 1 means success; the client treats any other CONNACK code as a
// failed login and stops reconnecting.
const (
	ReasonUnknown            uint8 = 0  // an unspecified failure (e.g. an unsupported protocol version)
	ReasonSuccess            uint8 = 1  // accepted
	ReasonAuthFail           uint8 = 2  // bad uid or token
	ReasonSubscriberNotExist uint8 = 3  // the sender is not a member of the channel
	ReasonChannelNotExist    uint8 = 5  // no such channel
	ReasonMsgKeyError        uint8 = 8  // the message key did not match the payload
	ReasonPayloadDecodeError uint8 = 9  // the payload could not be decrypted
	ReasonConnectKick        uint8 = 12 // the same user logged in elsewhere
)

// Packet is one protocol packet: one of the *XxxPacket types of this
// package.
type Packet interface {
	// Type returns the packet's type.
	Type() PacketType
}

// ConnectPacket logs a client in and carries its half of the key exchange.
type ConnectPacket struct {
	Flags           Flags
	Version         uint8  // protocol version: 2
	DeviceFlag      uint8  // 0 app, 1 web, 2 pc
	DeviceID        string // a new id on every connect
	UID             string
	Token           string
	ClientTimestamp int64  // unix milliseconds
	ClientKey       string // base64 of the client's X25519 public key
}

// ConnackPacket answers CONNECT: the reason code, and on success the
// server's X25519 public key and the salt that gives the AES IV.
type ConnackPacket struct {
	Flags      Flags
	TimeDiff   int64 // server time minus client time, milliseconds
	ReasonCode uint8
	ServerKey  string // base64 of the server's X25519 public key
	Salt       string // at least 16 characters; the first 16 are the AES IV
}

// SendPacket is a message from a client. Payload is the base64 text of the
// encrypted content and MsgKey its signature (see [Cipher.SealSend]).
type SendPacket struct {
	Flags       Flags
	Setting     uint8
	ClientSeq   uint32 // the client's sequence number, echoed in SENDACK
	ClientMsgNo string // the client's unique message number
	StreamNo    string // only with SettingStream
	ChannelID   string
	ChannelType uint8
	MsgKey      string
	Topic       string // only with SettingTopic
	Payload     []byte // the rest of the packet
}

// SendackPacket answers SEND.
type SendackPacket struct {
	Flags      Flags
	MessageID  int64
	ClientSeq  uint32
	MessageSeq uint32
	ReasonCode uint8
}

// RecvPacket delivers a message to a client. Payload is encrypted with the
// receiver's key, and MsgKey signs the packet (see [Cipher.SealRecv]).
type RecvPacket struct {
	Flags       Flags
	Setting     uint8
	MsgKey      string
	FromUID     string
	ChannelID   string // on a person channel: the sender's uid
	ChannelType uint8
	ClientMsgNo string
	StreamNo    string // only with SettingStream
	StreamSeq   uint32 // only with SettingStream
	StreamFlag  uint8  // only with SettingStream
	MessageID   int64
	MessageSeq  uint32
	Timestamp   uint32 // unix seconds
	Topic       string // only with SettingTopic
	Payload     []byte // the rest of the packet
}

// RecvackPacket acknowledges a RECV.
type RecvackPacket struct {
	Flags      Flags
	MessageID  int64
	MessageSeq uint32
}

// PingPacket is the client's heartbeat: the single byte 0x70.
type PingPacket struct{}

// PongPacket answers PING: the single byte 0x80.
type PongPacket struct{}

// DisconnectPacket tells a client that the server closes its connection
// and why; the SDK does not reconnect after it.
type DisconnectPacket struct {
	Flags      Flags
	ReasonCode uint8
	Reason     string
}

// SubPacket subscribes to or unsubscribes from a channel.
type SubPacket struct {
	Flags       Flags
	Setting     uint8
	ClientMsgNo string
	ChannelID   string
	ChannelType uint8
	Action      uint8 // 0 subscribe, 1 unsubscribe
	Param       string
}

// SubackPacket answers SUB.
type SubackPacket struct {
	Flags       Flags
	ClientMsgNo string
	ChannelID   string
	ChannelType uint8
	Action      uint8
	ReasonCode  uint8
}

// Type returns TypeConnect.
func (*ConnectPacket) Type() PacketType { return TypeConnect }

// Type returns TypeConnack.
func (*ConnackPacket) Type() PacketType { return TypeConnack }

// Type returns TypeSend.
func (*SendPacket) Type() PacketType { return TypeSend }

// Type returns TypeSendack.
func (*SendackPacket) Type() PacketType { return TypeSendack }

// Type returns TypeRecv.
func (*RecvPacket) Type() PacketType { return TypeRecv }

// Type returns TypeRecvack.
func (*RecvackPacket) Type() PacketType { return TypeRecvack }

// Type returns TypePing.
func (*PingPacket) Type() PacketType { return TypePing }

// Type returns TypePong.
func (*PongPacket) Type() PacketType { return TypePong }

// Type returns TypeDisconnect.
func (*DisconnectPacket) Type() PacketType { return TypeDisconnect }

// Type returns TypeSub.
func (*SubPacket) Type() PacketType { return TypeSub }

// Type returns TypeSuback.
func (*SubackPacket) Type() PacketType { return TypeSuback }
