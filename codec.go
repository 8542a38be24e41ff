package eventbus

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unsafe"
)

// Codec turns the events of one user-pool type into bytes and back, for
// the journal (and any transport that carries events out of the process).
// The bus encodes channel- and pusher-pool contexts itself; a UserContext
// holds the user's own Conn and Frame types, so a durable user-pool type
// needs a Codec, given with WithCodec.
//
// Decode must return a context equal to the one encoded, Conn and Frame
// included (typically a stand-in connection carrying UID and ID); it need
// not restore EventType, which the bus sets. Both methods may be called
// from many goroutines at once. Decode gets a slice it may keep.
type Codec interface {
	Encode(ev *UserContext) ([]byte, error)
	Decode(data []byte) (*UserContext, error)
}

// Codec errors. Compare with errors.Is: the bus wraps them with the type.
var (
	// ErrNoCodec: a user-pool event type without a Codec (WithCodec) was to
	// be encoded or decoded.
	ErrNoCodec = errors.New("eventbus: no codec for event type")
	// ErrBadEncoding: data given to DecodeEvent is truncated, corrupt, or
	// of another event type.
	ErrBadEncoding = errors.New("eventbus: bad event encoding")
)

// Encoding layout (all of it is in EncodeEvent's output):
//
//	version u8 (1) | kind u8 (1 user, 2 channel, 3 push) | EventType u8 | body
//
// A user body is the Codec's output. Integers in bodies are varints
// (signed ones zigzag); strings and byte slices are a length then the
// bytes; a slice, map or pointer that may be nil carries a count of n+1,
// or 0 for nil. Header maps are written in key order, so equal events
// encode to equal bytes.
const (
	encVersion     = 1
	encKindUser    = 1
	encKindChannel = 2
	encKindPush    = 3
)

// EncodeEvent returns the bytes of ev, which DecodeEvent turns back into an
// equal event: every exported field of a ChannelContext or PushContext,
// Messages included (nil and empty slices and maps stay apart); a
// UserContext through the Codec of its type. It fails with ErrNilEvent for
// a nil event, ErrUnknownEventType or ErrWrongPool for a type the bus
// does not know or a context of another pool, and ErrNoCodec for a
// user-pool type without a Codec. Safe for concurrent use.
func (b *Bus) EncodeEvent(ev Event) ([]byte, error) {
	var hint int
	switch e := ev.(type) {
	case *ChannelContext:
		if e != nil {
			hint = 64 + channelSizeHint(e)
		}
	case *PushContext:
		if e != nil {
			hint = 64 + messageSizeHint(e.Message) + 16*len(e.Subscribers)
		}
	}
	return b.appendEvent(make([]byte, 0, hint), ev)
}

// appendEvent appends the encoding of ev (EncodeEvent's) to dst: the
// durable path encodes into a pooled buffer with it.
func (b *Bus) appendEvent(out []byte, ev Event) ([]byte, error) {
	if err := b.checkCodecPool(ev); err != nil {
		return nil, err
	}
	switch e := ev.(type) {
	case *UserContext:
		c := b.cfg.codecs[e.EventType]
		if c == nil {
			return nil, fmt.Errorf("%w %s: give one with WithCodec", ErrNoCodec, b.TypeName(e.EventType))
		}
		body, err := c.Encode(e)
		if err != nil {
			return nil, fmt.Errorf("eventbus: Codec of %s: encode: %w", b.TypeName(e.EventType), err)
		}
		out = append(out, encVersion, encKindUser, byte(e.EventType))
		return append(out, body...), nil
	case *ChannelContext:
		out = append(out, encVersion, encKindChannel, byte(e.EventType))
		out = appendString(out, e.ChannelID)
		out = append(out, e.ChannelType)
		out = appendCount(out, len(e.Messages), e.Messages == nil)
		for _, m := range e.Messages {
			out = appendMessage(out, m)
		}
		return out, nil
	case *PushContext:
		out = append(out, encVersion, encKindPush, byte(e.EventType))
		out = appendMessage(out, e.Message)
		out = appendCount(out, len(e.Subscribers), e.Subscribers == nil)
		for _, s := range e.Subscribers {
			out = appendString(out, s)
		}
		return out, nil
	}
	return nil, ErrNilEvent
}

// DecodeEvent turns bytes made by EncodeEvent for an event of type t back
// into the event. Truncated or corrupt data, or data of another type, is
// ErrBadEncoding; a type neither built in nor defined is
// ErrUnknownEventType; a user-pool type without a Codec is ErrNoCodec; a Codec's
// error is returned wrapped. It never panics on bad input. The event does
// not share memory with data, except what a Codec keeps. Safe for
// concurrent use.
func (b *Bus) DecodeEvent(t EventType, data []byte) (Event, error) {
	return b.decodeEvent(t, data, nil)
}

// decodeEvent is DecodeEvent, taking the memory of a channel or push
// event from sl when not nil (a replay decodes many).
func (b *Bus) decodeEvent(t EventType, data []byte, sl *slab) (Event, error) {
	bad := func(what string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadEncoding, b.TypeName(t), fmt.Sprintf(what, args...))
	}
	if len(data) < 3 {
		return nil, bad("%d bytes, too short", len(data))
	}
	if data[0] != encVersion {
		return nil, bad("unknown encoding version %d", data[0])
	}
	if EventType(data[2]) != t {
		return nil, bad("data holds an event of type %s", b.TypeName(EventType(data[2])))
	}
	pool := b.definedPool(t)
	if pool == "" {
		return nil, fmt.Errorf("%w: DecodeEvent(%d)", ErrUnknownEventType, t)
	}
	kind := data[1]
	if kind != kindOfPool(pool) {
		return nil, bad("data holds a context of another pool (kind %d)", kind)
	}
	d := decoder{data: data, off: 3, sl: sl}
	var ev Event
	switch kind {
	case encKindUser:
		c := b.cfg.codecs[t]
		if c == nil {
			return nil, fmt.Errorf("%w %s: give one with WithCodec", ErrNoCodec, b.TypeName(t))
		}
		// The Codec may keep what it is given; data may be a buffer the
		// caller reuses (journal.Replay's is).
		u, err := c.Decode(bytes.Clone(data[3:]))
		if err != nil {
			return nil, fmt.Errorf("eventbus: Codec of %s: decode: %w", b.TypeName(t), err)
		}
		if u == nil {
			return nil, fmt.Errorf("eventbus: Codec of %s: decode returned a nil event", b.TypeName(t))
		}
		u.EventType = t
		return u, nil
	case encKindChannel:
		c := sl.channel()
		c.EventType = t
		c.ChannelID = d.string()
		c.ChannelType = d.byte()
		if n, ok := d.count(); ok {
			c.Messages = sl.messagePtrs(n)
			for i := range c.Messages {
				c.Messages[i] = d.message()
			}
		}
		ev = c
	case encKindPush:
		p := sl.push()
		p.EventType = t
		p.Message = d.message()
		if n, ok := d.count(); ok {
			p.Subscribers = sl.strings(n)
			for i := range p.Subscribers {
				p.Subscribers[i] = d.string()
			}
		}
		ev = p
	default:
		return nil, bad("unknown context kind %d", kind)
	}
	if d.err != nil {
		return nil, bad("%v at byte %d", d.err, d.off)
	}
	if d.off != len(data) {
		return nil, bad("%d bytes left over", len(data)-d.off)
	}
	return ev, nil
}

// definedPool returns the pool of t, built in or defined, or "".
func (b *Bus) definedPool(t EventType) Pool {
	if b.state.Load() == stateNew {
		b.mu.Lock()
		defer b.mu.Unlock()
	}
	return b.types[t].pool
}

// checkCodecPool checks that ev is not nil and that its context type is
// the one of its event type's pool.
func (b *Bus) checkCodecPool(ev Event) error {
	var t EventType
	var want Pool
	switch e := ev.(type) {
	case *UserContext:
		if e == nil {
			return ErrNilEvent
		}
		t, want = e.EventType, PoolUser
	case *ChannelContext:
		if e == nil {
			return ErrNilEvent
		}
		t, want = e.EventType, PoolChannel
	case *PushContext:
		if e == nil {
			return ErrNilEvent
		}
		t, want = e.EventType, PoolPusher
	default:
		return ErrNilEvent
	}
	switch p := b.definedPool(t); p {
	case want:
		return nil
	case "":
		return fmt.Errorf("%w: EncodeEvent(%d)", ErrUnknownEventType, t)
	default:
		return fmt.Errorf("%w: EncodeEvent: %s is a %s-pool type", ErrWrongPool, b.TypeName(t), p)
	}
}

// kindOfPool returns the context kind of a pool's events.
func kindOfPool(p Pool) byte {
	switch p {
	case PoolUser:
		return encKindUser
	case PoolChannel:
		return encKindChannel
	case PoolPusher:
		return encKindPush
	}
	return 0
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendString(b []byte, s string) []byte {
	b = appendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendCount writes n+1, or 0 for nil.
func appendCount(b []byte, n int, isNil bool) []byte {
	if isNil {
		return append(b, 0)
	}
	return appendUvarint(b, uint64(n)+1)
}

func appendMessage(b []byte, m *Message) []byte {
	if m == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, m.MessageID)
	b = appendUvarint(b, m.MessageSeq)
	b = appendString(b, m.ClientMsgNo)
	b = appendString(b, m.FromUID)
	b = appendString(b, m.ChannelID)
	b = append(b, m.ChannelType)
	b = appendCount(b, len(m.Payload), m.Payload == nil)
	b = append(b, m.Payload...)
	b = binary.AppendVarint(b, m.Timestamp)
	b = appendCount(b, len(m.Header), m.Header == nil)
	if len(m.Header) == 1 {
		for k, v := range m.Header {
			b = appendString(b, k)
			b = appendString(b, v)
		}
	} else if len(m.Header) > 0 {
		var stack [16]string // no allocation for the usual few keys
		keys := stack[:0]
		for k := range m.Header {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b = appendString(b, k)
			b = appendString(b, m.Header[k])
		}
	}
	return b
}

func messageSizeHint(m *Message) int {
	if m == nil {
		return 1
	}
	n := 48 + len(m.ClientMsgNo) + len(m.FromUID) + len(m.ChannelID) + len(m.Payload)
	for k, v := range m.Header {
		n += 4 + len(k) + len(v)
	}
	return n
}

func channelSizeHint(c *ChannelContext) int {
	n := len(c.ChannelID)
	for _, m := range c.Messages {
		n += messageSizeHint(m)
	}
	return n
}

// decoder reads an encoding; the first error sticks and later reads
// return zero values, so callers check err once at the end.
type decoder struct {
	data []byte
	off  int
	err  error
	sl   *slab // where decoded values go; nil: allocate each
}

var errTruncated = errors.New("truncated")

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || d.off >= len(d.data) {
		d.fail(errTruncated)
		return 0
	}
	c := d.data[d.off]
	d.off++
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.data[d.off:])
	if n <= 0 {
		d.fail(errTruncated)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.data[d.off:])
	if n <= 0 {
		d.fail(errTruncated)
		return 0
	}
	d.off += n
	return v
}

// length reads a length and checks that that many bytes (at least) remain.
func (d *decoder) length(v uint64) int {
	if d.err != nil {
		return 0
	}
	if v > uint64(len(d.data)-d.off) {
		d.fail(errTruncated)
		return 0
	}
	return int(v)
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	b := d.data[d.off : d.off+n : d.off+n]
	d.off += n
	return b
}

func (d *decoder) string() string {
	return d.sl.string(d.bytes(d.length(d.uvarint())))
}

// count reads n+1 (or 0 for nil) and returns n and whether it is not nil.
// Every element takes at least one byte, so n is checked against what
// remains before anything is allocated.
func (d *decoder) count() (int, bool) {
	v := d.uvarint()
	if v == 0 || d.err != nil {
		return 0, false
	}
	return d.length(v - 1), d.err == nil
}

func (d *decoder) message() *Message {
	switch d.byte() {
	case 0:
		return nil
	case 1:
	default:
		d.fail(errors.New("bad message marker"))
		return nil
	}
	m := d.sl.message()
	m.MessageID = d.varint()
	m.MessageSeq = d.uvarint()
	m.ClientMsgNo = d.string()
	m.FromUID = d.string()
	m.ChannelID = d.string()
	m.ChannelType = d.byte()
	if n, ok := d.count(); ok {
		m.Payload = d.sl.copyBytes(d.bytes(n))
	}
	m.Timestamp = d.varint()
	if n, ok := d.count(); ok {
		m.Header = make(map[string]string, min(n, 64))
		for range n {
			k := d.string()
			m.Header[k] = d.string()
		}
	}
	if d.err != nil {
		return nil
	}
	return m
}

// slab hands out the memory of decoded channel and push events in blocks,
// so that decoding many of them (a replay) allocates per block, not per
// event: contexts, messages, message pointers and strings, payloads and
// strings' bytes (copied into a byte block no one writes again, strings
// made over it without a copy). A nil *slab allocates each value on its
// own. Events from one block keep the whole block alive while any of them
// is referenced. Not safe for concurrent use.
type slab struct {
	chans  []ChannelContext
	pushes []PushContext
	msgs   []Message
	ptrs   []*Message
	strs   []string
	bytes  []byte
}

// Block sizes of a slab, in values (bytes: in bytes); a value larger than
// a quarter of its block gets its own allocation.
const (
	slabValues = 256
	slabBytes  = 64 << 10
)

func (s *slab) channel() *ChannelContext {
	if s == nil {
		return &ChannelContext{}
	}
	if len(s.chans) == 0 {
		s.chans = make([]ChannelContext, slabValues)
	}
	c := &s.chans[0]
	s.chans = s.chans[1:]
	return c
}

func (s *slab) push() *PushContext {
	if s == nil {
		return &PushContext{}
	}
	if len(s.pushes) == 0 {
		s.pushes = make([]PushContext, slabValues)
	}
	p := &s.pushes[0]
	s.pushes = s.pushes[1:]
	return p
}

func (s *slab) message() *Message {
	if s == nil {
		return &Message{}
	}
	if len(s.msgs) == 0 {
		s.msgs = make([]Message, slabValues)
	}
	m := &s.msgs[0]
	s.msgs = s.msgs[1:]
	return m
}

// messagePtrs returns a slice of n nil pointers (capacity n: an append
// to it never reaches another event's).
func (s *slab) messagePtrs(n int) []*Message {
	if s == nil || n > slabValues/4 {
		return make([]*Message, n)
	}
	if len(s.ptrs) < n {
		s.ptrs = make([]*Message, slabValues)
	}
	p := s.ptrs[:n:n]
	s.ptrs = s.ptrs[n:]
	return p
}

func (s *slab) strings(n int) []string {
	if s == nil || n > slabValues/4 {
		return make([]string, n)
	}
	if len(s.strs) < n {
		s.strs = make([]string, slabValues)
	}
	p := s.strs[:n:n]
	s.strs = s.strs[n:]
	return p
}

// copyBytes returns a copy of b, with capacity len(b) (not nil when b is
// empty).
func (s *slab) copyBytes(b []byte) []byte {
	if len(b) == 0 {
		return []byte{}
	}
	if s == nil || len(b) > slabBytes/4 {
		return append(make([]byte, 0, len(b)), b...)
	}
	if cap(s.bytes)-len(s.bytes) < len(b) {
		s.bytes = make([]byte, 0, slabBytes)
	}
	at := len(s.bytes)
	s.bytes = append(s.bytes, b...)
	return s.bytes[at:len(s.bytes):len(s.bytes)]
}

// string returns b as a string. From a slab, its bytes are a copy in the
// byte block that nothing writes again (the block only grows past them),
// so the string stays immutable.
func (s *slab) string(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s == nil || len(b) > slabBytes/4 {
		return string(b)
	}
	c := s.copyBytes(b)
	return unsafe.String(&c[0], len(c))
}
