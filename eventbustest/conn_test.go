package eventbustest_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/eventbustest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMockConnIdentity(t *testing.T) {
	c := eventbustest.NewMockConn("alice")
	assert.Equal(t, "alice", c.UID())
	c.SetUID("bob")
	assert.Equal(t, "bob", c.UID())

	assert.Empty(t, c.DeviceID())
	c.SetDeviceID("ios-1")
	assert.Equal(t, "ios-1", c.DeviceID())

	id := c.ID()
	assert.NotZero(t, id)
	assert.Equal(t, id, c.ID(), "ID must be stable")
	assert.NotEqual(t, id, eventbustest.NewMockConn("alice").ID(), "automatic IDs must differ")

	c.SetID(7)
	assert.Equal(t, int64(7), c.ID())
	c.SetID(0)
	assert.NotZero(t, c.ID())
	assert.NotEqual(t, int64(7), c.ID())
}

func TestMockConnZeroValue(t *testing.T) {
	var c eventbustest.MockConn
	assert.Empty(t, c.UID())
	assert.NotZero(t, c.ID())
	require.NoError(t, c.Write("x"))
	assert.Equal(t, []any{"x"}, c.Frames())
	assert.False(t, c.Closed())
}

func TestMockConnAutoIDsUniqueUnderConcurrency(t *testing.T) {
	const n = 64
	conns := make([]*eventbustest.MockConn, n)
	for i := range conns {
		conns[i] = &eventbustest.MockConn{}
	}
	ids := make([][]int64, n)
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			// Every goroutine asks every connection: the lazily drawn ID
			// must be the same for all askers.
			for i := range conns {
				ids[g] = append(ids[g], conns[(i+g)%n].ID())
			}
		})
	}
	wg.Wait()
	seen := make(map[int64]int)
	for g := range n {
		for i, id := range ids[g] {
			c := (i + g) % n
			if prev, ok := seen[id]; ok {
				require.Equal(t, prev, c, "id %d given to two connections", id)
			}
			seen[id] = c
			require.Equal(t, conns[c].ID(), id, "connection %d changed its id", c)
		}
	}
	assert.Len(t, seen, n)
}

func TestMockConnWritesInOrder(t *testing.T) {
	c := eventbustest.NewMockConn("u")
	for i := range 5 {
		require.NoError(t, c.Write(i))
	}
	assert.Equal(t, []any{0, 1, 2, 3, 4}, c.Frames())

	// Frames returns a copy.
	fs := c.Frames()
	fs[0] = "changed"
	assert.Equal(t, 0, c.Frames()[0])
}

func TestMockConnFailWrites(t *testing.T) {
	c := eventbustest.NewMockConn("u")
	boom := errors.New("broken pipe")
	require.NoError(t, c.Write("a"))
	c.FailWrites(boom)
	assert.ErrorIs(t, c.Write("b"), boom)
	c.FailWrites(nil)
	require.NoError(t, c.Write("c"))
	assert.Equal(t, []any{"a", "c"}, c.Frames(), "a failed write records nothing")
}

func TestMockConnClose(t *testing.T) {
	c := eventbustest.NewMockConn("u")
	require.NoError(t, c.Write("before"))
	done := c.Done()
	select {
	case <-done:
		t.Fatal("Done closed before Close")
	default:
	}

	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")
	assert.True(t, c.Closed())
	assert.ErrorIs(t, c.Write("after"), eventbustest.ErrConnClosed)
	assert.Equal(t, []any{"before"}, c.Frames())

	for _, ch := range []<-chan struct{}{done, c.Done()} {
		select {
		case <-ch:
		default:
			t.Fatal("Done not closed after Close")
		}
	}
	// Close beats FailWrites.
	c.FailWrites(errors.New("other"))
	assert.ErrorIs(t, c.Write("x"), eventbustest.ErrConnClosed)
}

func TestMockConnDoneAfterClose(t *testing.T) {
	c := eventbustest.NewMockConn("u")
	require.NoError(t, c.Close())
	select {
	case <-c.Done():
	default:
		t.Fatal("Done asked for after Close must be closed")
	}
}

func TestMockConnWaitFrames(t *testing.T) {
	c := eventbustest.NewMockConn("u")
	go func() {
		for i := range 3 {
			_ = c.Write(i)
		}
	}()
	frames, err := c.WaitFrames(within(t, 5*time.Second), 3)
	require.NoError(t, err)
	assert.Equal(t, []any{0, 1, 2}, frames)

	// Already there: no wait at all.
	frames, err = c.WaitFrames(within(t, 5*time.Second), 2)
	require.NoError(t, err)
	assert.Len(t, frames, 3, "WaitFrames returns every frame, not only n")
}

func TestMockConnWaitFramesDeadline(t *testing.T) {
	c := eventbustest.NewMockConn("u")
	require.NoError(t, c.Write("only"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	frames, err := c.WaitFrames(ctx, 2)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "got 1 of 2 frames")
	assert.Equal(t, []any{"only"}, frames)
}

func TestMockConnWaitFramesEndsOnClose(t *testing.T) {
	c := eventbustest.NewMockConn("u")
	go func() {
		_ = c.Write("last words")
		_ = c.Close()
	}()
	frames, err := c.WaitFrames(within(t, 5*time.Second), 2)
	require.ErrorIs(t, err, eventbustest.ErrConnClosed)
	assert.Equal(t, []any{"last words"}, frames)
}

// TestMockConnHammer writes from many goroutines while others read and
// wait; run with -race. Every frame must be recorded once, and each
// writer's frames must keep their order.
func TestMockConnHammer(t *testing.T) {
	const writers, perWriter = 16, 500
	c := eventbustest.NewMockConn("")
	type frame struct{ w, i int }

	ctx := within(t, 2*time.Minute) // a hang guard, not a speed limit (see TestRecorderHammer)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			<-start
			for i := range perWriter {
				if err := c.Write(frame{w, i}); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
			}
		})
	}
	// Readers and waiters race with the writers.
	for r := range 4 {
		wg.Go(func() {
			<-start
			for range 50 {
				_ = c.Frames()
				_ = c.UID()
				_ = c.ID()
				_ = c.Closed()
				if r == 0 {
					c.SetDeviceID("d")
				}
			}
			if _, err := c.WaitFrames(ctx, writers*perWriter/2); err != nil {
				t.Errorf("WaitFrames: %v", err)
			}
		})
	}
	close(start)
	frames, err := c.WaitFrames(ctx, writers*perWriter)
	require.NoError(t, err)
	wg.Wait()

	require.Len(t, frames, writers*perWriter)
	next := make([]int, writers)
	for _, f := range frames {
		fr := f.(frame)
		require.Equal(t, next[fr.w], fr.i, "writer %d out of order", fr.w)
		next[fr.w]++
	}
}

// TestMockConnOnBus checks that a bus keys a MockConn as documented: by
// UID, or by ID before login, and that handlers can write to it.
func TestMockConnOnBus(t *testing.T) {
	b := eventbustest.NewBus(t)
	_, err := eventbus.Register(b.Bus, eventbus.EventOnSend,
		func(ctx context.Context, ev *eventbus.UserContext) error {
			return ev.Conn.(interface{ Write(any) error }).Write(ev.Frame)
		})
	require.NoError(t, err)

	c := eventbustest.NewMockConn("") // before login: keyed by ID
	const n = 100
	for i := range n {
		require.NoError(t, b.AddEvent(context.Background(),
			&eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: c, Frame: i}))
	}
	frames, err := c.WaitFrames(within(t, 5*time.Second), n)
	require.NoError(t, err)
	for i, f := range frames {
		require.Equal(t, i, f, "per-key order")
	}
}
