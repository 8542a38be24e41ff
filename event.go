package eventbus

import "strconv"

// EventType identifies an event. Its number decides its pool: 1–9 user,
// 10–19 channel, 20–29 pusher. Numbers without a built-in meaning must be
// declared with Bus.Define before Start.
type EventType uint8

// The built-in event types of an IM server's message flow.
const (
	EventUnknown           EventType = 0  // reserved: always ErrUnknownEventType
	EventConnect           EventType = 1  // user pool: a connection authenticates
	EventOnConnect         EventType = 2  // user pool: a connection is established
	EventOnSend            EventType = 3  // user pool: a client sends a message
	EventRecvAck           EventType = 4  // user pool: a client acknowledges a message
	EventConnClose         EventType = 5  // user pool: a connection closes
	EventChannelDistribute EventType = 10 // channel pool: store and fan out messages
	EventChannelStore      EventType = 11 // channel pool: persist messages
	EventPushOnline        EventType = 20 // pusher pool: deliver to online receivers
	EventPushOffline       EventType = 21 // pusher pool: hand off to offline push
)

var builtinNames = [...]string{
	EventUnknown:           "Unknown",
	EventConnect:           "Connect",
	EventOnConnect:         "OnConnect",
	EventOnSend:            "OnSend",
	EventRecvAck:           "RecvAck",
	EventConnClose:         "ConnClose",
	EventChannelDistribute: "ChannelDistribute",
	EventChannelStore:      "ChannelStore",
	EventPushOnline:        "PushOnline",
	EventPushOffline:       "PushOffline",
}

// String names the built-in types and prints other numbers as
// "EventType(42)"; Bus.TypeName also knows the names given to Define.
func (t EventType) String() string {
	if int(t) < len(builtinNames) && builtinNames[t] != "" {
		return builtinNames[t]
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

func (t EventType) builtin() bool {
	return t != EventUnknown && int(t) < len(builtinNames) && builtinNames[t] != ""
}

// Pool names one of the bus's three worker pools.
type Pool string

// The three pools.
const (
	PoolUser    Pool = "user"    // connection and protocol work: light, high rate
	PoolChannel Pool = "channel" // storage and fan-out: heavy, batches
	PoolPusher  Pool = "pusher"  // delivery: network-bound
)

// index returns the pool's slot in per-pool arrays, or -1.
func (p Pool) index() int {
	switch p {
	case PoolUser:
		return 0
	case PoolChannel:
		return 1
	case PoolPusher:
		return 2
	}
	return -1
}

var poolsByIndex = [3]Pool{PoolUser, PoolChannel, PoolPusher}

// rangePool returns the pool a number in 1–29 belongs to, or "" above that.
func rangePool(t EventType) Pool {
	switch {
	case t >= 1 && t <= 9:
		return PoolUser
	case t >= 10 && t <= 19:
		return PoolChannel
	case t >= 20 && t <= 29:
		return PoolPusher
	}
	return ""
}

// Event is one of *UserContext, *ChannelContext or *PushContext: the bus
// routes each to its pool by its concrete type. The interface is sealed.
type Event interface {
	// Type returns the event's EventType field.
	Type() EventType
	sealed()
}
