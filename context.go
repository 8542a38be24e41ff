package eventbus

// Conn is what the bus needs of a client connection. Handlers type-assert
// it to their own connection type to write frames.
type Conn interface {
	// UID is the logged-in user's id, or "" before login.
	UID() string
	// ID is the connection's id, unique in the process.
	ID() int64
}

// Message is a chat message as it moves from sender to channel to receivers.
// Fields may be added, none removed.
type Message struct {
	MessageID   int64
	MessageSeq  uint64
	ClientMsgNo string
	FromUID     string
	ChannelID   string
	ChannelType uint8
	Payload     []byte
	Timestamp   int64 // unix milliseconds
	// Header carries protocol metadata (client sequence, setting flags,
	// stream id) that every stage keeps: the bus never reads or changes it.
	Header map[string]string
}

// UserContext is an event of the user pool: something a connection did.
// Its ordering key is Conn.UID(), or Conn.ID() while the UID is empty.
type UserContext struct {
	EventType EventType
	Conn      Conn
	Frame     any // the protocol frame, e.g. a SEND packet
}

// ChannelContext is an event of the channel pool: messages of one channel.
// Its ordering key is (ChannelID, ChannelType).
type ChannelContext struct {
	EventType   EventType
	ChannelID   string
	ChannelType uint8
	Messages    []*Message
}

// PushContext is an event of the pusher pool: one message for a set of
// receivers. Its ordering key is the message's (ChannelID, ChannelType), so
// every receiver sees a channel's messages in order. To deliver and retry
// per receiver, split it (SplitPush, AddPerReceiver) and key the pool with
// KeyByReceiver.
type PushContext struct {
	EventType   EventType
	Message     *Message
	Subscribers []string
}

// Type returns c.EventType.
func (c *UserContext) Type() EventType { return c.EventType }

// Type returns c.EventType.
func (c *ChannelContext) Type() EventType { return c.EventType }

// Type returns c.EventType.
func (c *PushContext) Type() EventType { return c.EventType }

func (*UserContext) sealed()    {}
func (*ChannelContext) sealed() {}
func (*PushContext) sealed()    {}
