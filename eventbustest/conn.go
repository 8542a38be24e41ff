package eventbustest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/imbus/eventbus"
)

// ErrConnClosed is returned by MockConn.Write after Close, and by
// MockConn.WaitFrames when the connection closes before enough frames came.
var ErrConnClosed = errors.New("eventbustest: connection closed")

// autoIDBase keeps automatic connection ids clear of small ids a test sets
// by hand with SetID.
const autoIDBase = 1 << 32

var lastAutoID atomic.Int64

// MockConn is an eventbus.Conn for tests. It records every frame written to
// it, in order, and can be told to fail writes or be closed, so a test can
// check what a handler sent to a client and how it copes with a broken
// connection.
//
// The zero value is ready to use: a connection before login (empty UID)
// whose ID is drawn from a process-wide counter on first use. All methods
// are safe for concurrent use; a write that returns nil happens before
// Frames and WaitFrames report it.
//
// Handlers reach the write side by asserting UserContext.Conn to an
// interface of their own, for example interface{ Write(frame any) error }.
type MockConn struct {
	id atomic.Int64

	mu      sync.Mutex
	uid     string
	device  string
	frames  []any
	failErr error
	closed  bool
	done    chan struct{}
	changed signal
}

var _ eventbus.Conn = (*MockConn)(nil)

// NewMockConn returns a connection of the logged-in user uid (use "" for a
// connection before login) with an automatic ID.
func NewMockConn(uid string) *MockConn {
	return &MockConn{uid: uid}
}

// UID returns the user id set by NewMockConn or SetUID.
func (c *MockConn) UID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.uid
}

// SetUID changes the user id, as a login does. The bus reads the UID when
// an event is added, so the change decides the ordering key of later events.
func (c *MockConn) SetUID(uid string) {
	c.mu.Lock()
	c.uid = uid
	c.mu.Unlock()
}

// ID returns the connection id. Unless SetID chose one, the first call
// draws a unique id from a process-wide counter (above 1<<32, so it never
// meets a small id set by hand); later calls return the same id.
func (c *MockConn) ID() int64 {
	if id := c.id.Load(); id != 0 {
		return id
	}
	c.id.CompareAndSwap(0, autoIDBase+lastAutoID.Add(1))
	return c.id.Load()
}

// SetID sets the connection id; 0 means "draw one on the next ID call".
func (c *MockConn) SetID(id int64) { c.id.Store(id) }

// DeviceID returns the device set by SetDeviceID, "" by default. The bus
// does not use it; it is there for handlers that tell a user's devices
// apart (multi-device login, kick of an older session).
func (c *MockConn) DeviceID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.device
}

// SetDeviceID sets the device id returned by DeviceID.
func (c *MockConn) SetDeviceID(device string) {
	c.mu.Lock()
	c.device = device
	c.mu.Unlock()
}

// Write records frame and returns nil, unless the connection is closed
// (ErrConnClosed) or FailWrites set an error; a failed write records
// nothing.
func (c *MockConn) Write(frame any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrConnClosed
	case c.failErr != nil:
		return c.failErr
	}
	c.frames = append(c.frames, frame)
	c.changed.broadcast()
	return nil
}

// FailWrites makes later writes return err without recording the frame;
// FailWrites(nil) makes them succeed again. Use it to test how a handler
// treats a broken connection (retry, Permanent, close).
func (c *MockConn) FailWrites(err error) {
	c.mu.Lock()
	c.failErr = err
	c.mu.Unlock()
}

// Frames returns a copy of the frames written so far, oldest first.
func (c *MockConn) Frames() []any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.frames)
}

// WaitFrames waits until at least n frames were written and returns all
// of them. It fails early with ErrConnClosed if the connection is closed
// while fewer than n were written, and with ctx's error when ctx ends
// first; the error says how many frames came, and the frames written so
// far are returned with it. Use a ctx with a deadline.
func (c *MockConn) WaitFrames(ctx context.Context, n int) ([]any, error) {
	var out []any
	err := waitFor(ctx, &c.mu, &c.changed, func() (bool, error) {
		if len(c.frames) >= n {
			out = slices.Clone(c.frames)
			return true, nil
		}
		if c.closed {
			return false, ErrConnClosed
		}
		return false, nil
	})
	if err != nil {
		got := c.Frames()
		return got, shortfall("frames", len(got), n, err)
	}
	return out, nil
}

// Close closes the connection: later writes fail with ErrConnClosed and
// Done's channel is closed. Frames written before stay readable. Close is
// idempotent and returns nil.
func (c *MockConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		if c.done != nil {
			close(c.done)
		}
		c.changed.broadcast()
	}
	return nil
}

// Closed reports whether Close was called.
func (c *MockConn) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Done returns a channel that is closed when the connection is closed, to
// wait (with a deadline) for a handler to close it.
func (c *MockConn) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.closed {
			close(c.done)
		}
	}
	return c.done
}
