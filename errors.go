package eventbus

import (
	"errors"
	"fmt"
)

// Sentinel errors. Compare with errors.Is: the bus may wrap them with detail.
var (
	// ErrClosed: the bus is closing or closed.
	ErrClosed = errors.New("eventbus: bus closed")
	// ErrNotStarted: AddEvent or WaitIdle before Start.
	ErrNotStarted = errors.New("eventbus: bus not started")
	// ErrStarted: Start, or Define, on a bus already started.
	ErrStarted = errors.New("eventbus: bus already started")
	// ErrQueueFull: the event's shard holds QueueSize events and the caller
	// would not, or could no longer, wait.
	ErrQueueFull = errors.New("eventbus: queue full")
	// ErrNoHandler: no handler is registered for the event's type.
	ErrNoHandler = errors.New("eventbus: no handler for event type")
	// ErrUnknownEventType: type 0, or a number not built in and not defined.
	ErrUnknownEventType = errors.New("eventbus: unknown event type")
	// ErrWrongPool: the event's or handler's context type does not belong
	// to the pool of the event type.
	ErrWrongPool = errors.New("eventbus: event type belongs to another pool")
	// ErrNilEvent: a nil event, or an event missing what its key needs
	// (its Conn or the pool's KeyFunc panicked).
	ErrNilEvent = errors.New("eventbus: nil event")
	// ErrNilHandler: Register with a nil handler.
	ErrNilHandler = errors.New("eventbus: nil handler")
	// ErrDuplicateName: a handler of that name is already registered for
	// the type.
	ErrDuplicateName = errors.New("eventbus: duplicate handler name")
	// ErrStopChain, returned by a handler (or wrapped in its error), ends
	// the chain on purpose: the event counts as Stopped and is not retried.
	ErrStopChain = errors.New("eventbus: stop chain")
	// ErrInsideHandler: Close or WaitIdle called from a handler, which
	// would wait for its own event.
	ErrInsideHandler = errors.New("eventbus: called from inside a handler")
	// ErrNotNew: a method called on a Bus that New did not return, such
	// as a zero Bus. Build buses with New.
	ErrNotNew = errors.New("eventbus: Bus not created with eventbus.New")
	// ErrTypeDefined: Define of a type that is built in or already
	// defined.
	ErrTypeDefined = errors.New("eventbus: event type already defined")
)

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: the event goes straight to the
// dead-letter sink. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, came from Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// PanicError is a handler panic (or a runtime.Goexit) recovered by the bus.
// It counts as a failure and is retried like one.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the handler goroutine's stack at the panic
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("eventbus: handler panicked: %v", e.Value)
}

// Unwrap returns Value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// CloseError is returned by Close when its context ended before the bus
// drained.
type CloseError struct {
	// Left is how many accepted events had not finished when Close gave up.
	// Those then go to the dead-letter sink with ErrClosed, except the ones
	// a worker is running, which end with their handler's result.
	Left int
	// Err is the context's error.
	Err error
}

func (e *CloseError) Error() string {
	events := "events"
	if e.Left == 1 {
		events = "event"
	}
	return fmt.Sprintf("eventbus: close: %d %s left: %v", e.Left, events, e.Err)
}

// unknownType is the error for an event type that is neither built in nor
// defined: it says how to declare one.
func unknownType(t EventType) error {
	return fmt.Errorf("%w: %d (declare it before Start with bus.Define(%d, pool, name) or the WithDefine option)",
		ErrUnknownEventType, t, t)
}

// Unwrap returns the context's error.
func (e *CloseError) Unwrap() error { return e.Err }
