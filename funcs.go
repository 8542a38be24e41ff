package eventbus

// ObserverFunc lets an ordinary function be an Observer, as
// http.HandlerFunc lets one be an http.Handler: ObserverFunc(f).Observe(o)
// calls f(o). The function receives the whole Observation (pool, type,
// outcome, handler, attempt, timings, error) of every run of a chain.
//
// Like any Observer it is called on worker goroutines, concurrently, once
// per run of a chain (a batch counts once), so f must be safe for
// concurrent use and fast: it runs on the event's worker, inside the
// handled event's time. A panic in f is recovered and logged.
//
//	bus, err := eventbus.New(eventbus.WithObserver(eventbus.ObserverFunc(func(o eventbus.Observation) {
//		runs.WithLabelValues(string(o.Pool), o.Outcome.String()).Inc()
//	})))
type ObserverFunc func(o Observation)

// Observe calls f(o).
func (f ObserverFunc) Observe(o Observation) { f(o) }

// DeadLetterFunc lets an ordinary function be a DeadLetterSink:
// DeadLetterFunc(f).DeadLetter(d) calls f(d). The function receives each
// event the bus gave up on, with the last error, the handler that failed
// and its attempts.
//
// It is called from worker goroutines (and from Close), possibly
// concurrently, so f must be safe for concurrent use; it should return
// quickly (hand the letter to a queue or a store), since the worker waits
// for it. d is f's to keep. A panic in f is recovered and logged.
//
//	bus, err := eventbus.New(eventbus.WithDeadLetter(eventbus.DeadLetterFunc(func(d *eventbus.DeadLetter) {
//		log.Printf("gave up on %v in %s: %v", d.Event.Type(), d.Handler, d.Err)
//	})))
type DeadLetterFunc func(d *DeadLetter)

// DeadLetter calls f(d).
func (f DeadLetterFunc) DeadLetter(d *DeadLetter) { f(d) }

var (
	_ Observer       = ObserverFunc(nil)
	_ DeadLetterSink = DeadLetterFunc(nil)
)
