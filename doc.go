// Package eventbus is an in-process event bus for instant-messaging
// servers, after the event-driven core of WuKongIM. Three pools of
// workers run the three kinds of work of an IM server, isolated from each
// other, so a slow database never stalls connection handling:
//
//   - the user pool runs what clients send (connect, send, ack): events
//     carry a *[UserContext] and are ordered per user;
//   - the channel pool stores messages and fans them out: a
//     *[ChannelContext], ordered per channel;
//   - the pusher pool writes to receivers, online or through offline
//     push: a *[PushContext], ordered per channel (or per receiver, with
//     [KeyByReceiver]).
//
// Handlers pass work along as follow-on events, user → channel → pusher:
//
//	bus, err := eventbus.New()
//	eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
//		m := ev.Frame.(*eventbus.Message) // validated, say
//		return bus.AddEvent(ctx, &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute,
//			ChannelID: m.ChannelID, ChannelType: m.ChannelType, Messages: []*eventbus.Message{m}})
//	})
//	eventbus.Register(bus, eventbus.EventChannelDistribute, store) // func(ctx, *eventbus.ChannelContext) error
//	err = bus.Start()
//	err = bus.AddEvent(ctx, &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: conn, Frame: msg})
//	err = bus.Close(ctx) // runs everything accepted to its end, then stops the workers
//
// AddEvent returns once the event is queued; a worker of its pool runs the
// handlers registered for its type, in order (a chain), and subscribers
// ([Subscribe]) run beside it. Events with the same key run one at a time
// in the order they were added, through the whole chain and across
// retries; different keys run in parallel on any free worker. Each pool has
// its own workers, queues and [PoolConfig] ([WithUserPool],
// [WithChannelPool], [WithPusherPool]).
//
// # Chains and results
//
// [Register] adds a [Handler] to the chain of an event type; the handler's
// context type must be that of the type's pool. Each handler's result
// decides what comes next:
//
//   - nil: the next handler runs; after the last, the event is Handled.
//   - [ErrStopChain], or an error wrapping it (an audit rejection): the
//     chain ends on purpose; the event is Stopped and not retried.
//   - [Permanent](err): no retry; the event goes to the dead-letter sink.
//   - any other error, a panic ([PanicError]) or a timeout
//     ([PoolConfig].HandlerTimeout): the event is retried from the handler
//     that failed.
//
// Handlers are named with [WithName]; by default a handler is named after
// its function ([HandlerName]: "permission" for a method value
// s.permission), with "#2", "#3"… only when the name is taken for that
// type. Names label logs, dead letters, [CallInfo] and metrics.
//
// Chains can change while events flow: [First], [Replace] (an atomic swap
// in place), [Registration.Unregister] and [Bus.UnregisterHandler]. An
// event reads its chain once, when it starts, and keeps it for every
// attempt. [Bus.Use] adds [Middleware] around every attempt of every
// handler. A handler's context carries the values, not the cancellation,
// of the context given to AddEvent, the bus's shutdown signal, the
// attempt's timeout and a [CallInfo] ([CallInfoFrom]).
//
// # Chain or subscribers
//
// [Subscribe] adds a handler outside the chain: it gets every event of its
// type the bus accepts, beside the chain and every other subscriber, on
// [WithConcurrency] goroutines of its own, with its own per-key order,
// retries, dead letters and [Stats].Subscribers entry ("OnSend/webhook").
//
//	                    chain (Register)              subscriber (Subscribe)
//	use it for          dependent steps: permission,  side work: webhooks,
//	                    store, fan out                statistics, indexing
//	sees an event       when the handlers before it   always, even when the
//	                    returned nil                  chain stops or fails
//	a slow or failing   the rest of the chain and     only that key's later
//	one holds back      the key's later events        events in that subscriber
//
// An event is accepted by the chain and every subscriber at once, or by
// none: an outside add waits while one of its subscriber's lanes is full.
// To see only what the chain accepted, subscribe to a type it emits.
//
// # Follow-on events
//
// A handler that calls AddEvent with the context it was given adds a
// follow-on event: the add never waits, ignores the context's cancellation,
// keeps per-key order, and is accepted while the bus drains, so flows that
// loop back (pusher to user) cannot deadlock. A follow-on event is counted
// before its handler returns, so [Bus.WaitIdle] waits for whole flows.
// Handlers that emit should depend on the [Emitter] interface rather than
// on *Bus, so that tests can hand them a recorder.
//
// # Back-pressure
//
// A pool holds at most Workers × QueueSize events, one shard at most
// QueueSize (queued, in flight or waiting to retry). While either limit is
// reached, AddEvent from outside a handler waits for room, bounded by its
// context (the error then wraps [ErrQueueFull] and the context's error),
// and [Bus.TryAddEvent] fails at once with ErrQueueFull. Follow-on events
// above capacity are accepted and show as Overflow in [Bus.Stats]; so is an
// add made on a handler's goroutine with another context (such as
// context.Background()) that would otherwise wait on its own pool. [WithAdmit]
// can refuse events before they are queued (rate limits); refusals count as
// Rejected. Nothing is dropped silently: every accepted event ends Handled,
// Stopped or DeadLettered, and at rest
// Added = Handled + Stopped + DeadLettered + Queued + InFlight + Retrying.
//
// # Retries and dead letters
//
// A failed handler is retried after a backoff under a [RetryPolicy]
// (default: 3 attempts, 10 ms doubling up to 1 s, ±20% jitter; the
// RetryPolicy doc says what each zero field means), set with [WithRetry],
// [PoolConfig].Retry or [WithHandlerRetry]; [NoRetry] turns retries off.
// Waiting for a retry parks the key, not the worker: the shard's other
// keys go on, later events of that key wait. When the last attempt fails,
// the event goes to the [DeadLetterSink] set with [WithDeadLetter] (by
// default a [DeadLetterRing] of the last 1024; [DeadLetterFunc] makes one
// of a function).
//
// # What a slow handler delays
//
// A handler that blocks keeps its worker and its shard while it runs. It
// delays its own key's later events and those of the few keys that share
// its shard ([PoolConfig].Shards, default 1024, makes that rarer). It does
// not delay the pool's other keys while a worker is free, nor other pools,
// nor subscribers; a slow subscriber does not delay the chain while its
// lanes have room. Only when every worker is blocked does the rest of the
// pool wait: give I/O-bound pools Workers of at least the handlers you
// expect blocked at once plus the cores you want busy, and run slow side
// work (a webhook) as a subscriber with enough [WithConcurrency].
//
// # Per-receiver delivery
//
// A PushContext carries one message for many receivers, so retrying it
// after one failed write would send the message again to all the others.
// To deliver and retry per receiver, key the pusher pool with
// [KeyByReceiver] and emit one event per receiver with [AddPerReceiver]
// (or [SplitPush]): a failed write then holds back only its receiver,
// which still sees each channel in order.
//
// # Logs and metrics
//
// Failed attempts, panics and dead letters are logged through
// [WithLogger], at most once per handler per second each
// ([WithLogInterval]), with the number of records left out; nothing is
// logged per successful event. [WithObserver] (or an [ObserverFunc]) is
// told about every run of a chain, for metrics; [Bus.Stats] gives each
// pool's counters and gauges. The module
// github.com/imbus/eventbus/contrib/otel has an OpenTelemetry middleware
// (a span per handler attempt, one trace across follow-on events) and
// Observer.
//
// # Lifecycle
//
// [New] checks every option and starts no goroutine. Define types and
// Register handlers, then [Bus.Start] the workers; handlers may also be
// registered later. [Bus.Close] shuts down like http.Server.Shutdown:
// outside adds fail with [ErrClosed] at once; queued events, follow-on
// events and retries run their course; then the workers exit and Close
// returns nil. If its context ends first, Close returns at once a
// [*CloseError] saying how many events were left, and runs no user code:
// handler contexts are cancelled, and a bus goroutine hands what was not
// handled to the dead-letter sink with ErrClosed. Close and WaitIdle
// called from inside a handler return [ErrInsideHandler] instead of
// deadlocking.
//
// # Testing
//
// Package [github.com/imbus/eventbus/eventbustest] is the test kit, in the
// spirit of net/http/httptest: MockConn records the frames a handler
// writes; Recorder is an Emitter that records follow-on events; Run passes
// one event through a handler or a chain, synchronously, with the chain
// rules above and the names a bus would give (RunNamed for WithName), and
// no bus; NewBus gives a test a started bus that is closed when the test
// ends and fails it on events left behind or unexpected dead letters.
//
// # Event types and keys
//
// An event's number decides its pool: 1–9 user, 10–19 channel, 20–29
// pusher; 0 is reserved. Numbers without a built-in meaning are declared
// with [Bus.Define] before Start, in the pool of their range; 30–255 may
// go to any pool.
//
// Every event has a key: the user's UID for a user event (the connection's
// ID before login), the channel (ChannelID, ChannelType) for channel and
// push events; [PoolConfig].KeyFunc may override it. A key hashes to one
// of many small shards, each a FIFO drained by one worker at a time, with
// no global lock; a free worker takes the next shard with work from a run
// queue, drains a bounded batch and puts the shard back if work remains.
// [WithBatch] lets the channel pool merge adjacent events of one key into
// one.
//
// # Handler contexts
//
// Handler contexts cost no allocation: they are carved from blocks of a
// few hundred, so a context kept after its handler returns (by a goroutine
// the handler started, say) stays valid but keeps its block, 8 KiB, alive.
// Code that lives long should keep only what it needs, e.g. the values, in
// a context of its own.
//
// # Transports and the journal
//
// A transport carrying events between processes, and the journal, build
// on a few extension points: [Bus.Outbound] routes chosen types out of the
// process instead of to their pool; [Bus.Deliver] adds an event locally
// and calls back when the chain and every subscriber have finished with it
// (handled, stopped, dead-lettered, or [OutcomeAbandoned] at a Close
// deadline, counted in [PoolStats].Abandoned), the moment to acknowledge
// it; [Bus.DeadLetter] hands a letter the transport gave up on to the
// bus's sink; [Bus.StableKey] gives a key that is the same in every
// process, for partitioning.
//
// # Examples
//
// Example shows the quick start; ExampleRegister a chain with an audit
// that rejects; ExampleSubscribe a slow webhook beside the chain;
// ExampleEmitter the OnSend → ChannelDistribute → PushOnline
// flow of follow-on events; ExampleReplace hot-plugging; ExampleBus_Use
// middleware and a retry; ExampleWithDeadLetter retries, Permanent and dead
// letters; ExampleObserverFunc and ExampleDeadLetterFunc the func
// adapters; ExampleBus_TryAddEvent back-pressure; ExampleBus_Close the
// drain; ExampleBus_Define an event type of your own. The eventbustest
// examples test a handler with a MockConn and a Recorder. The command
// examples/im runs a whole IM flow.
package eventbus
