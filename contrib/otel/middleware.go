package eventbusotel

import (
	"context"
	"errors"

	"github.com/imbus/eventbus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// NewMiddleware returns an eventbus.Middleware that starts a span around
// every attempt of every handler, named "<type> <handler>" (e.g. "OnSend
// audit"), of kind consumer, with the pool, event type, handler, attempt
// and event id from eventbus.CallInfoFrom as attributes.
//
// The span's status says how the attempt ended: Error with the error
// recorded for a failure (to be retried or dead-lettered), a panic or a
// runtime.Goexit; Unset for nil and for ErrStopChain (a stop on purpose,
// with the error still recorded as an event and outcome=stopped).
//
// Traces follow the flow: the span is started from the context the event
// was added with (its values reach the handler), and the handler gets a
// context holding the span. A follow-on event that the handler adds with
// that context therefore runs its own handlers' spans as children of this
// one, in the same trace; an event added from outside with a traced
// context (an HTTP request, say) joins that trace.
//
// Install it with bus.Use; the first middleware used runs outermost, so
// use it first for its span to cover the others. The cost is one span per
// handler attempt; it is safe for concurrent use.
func NewMiddleware(opts ...Option) eventbus.Middleware {
	c := newConfig(opts)
	tracer := c.tp.Tracer(ScopeName)
	return func(next eventbus.HandlerFunc) eventbus.HandlerFunc {
		return func(ctx context.Context, ev eventbus.Event) (err error) {
			info, ok := eventbus.CallInfoFrom(ctx)
			if !ok {
				return next(ctx, ev)
			}
			typ := c.nameOf(info.Type, info.TypeName)
			ctx, span := tracer.Start(ctx, typ+" "+info.Handler,
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(
					attribute.String("messaging.system", "eventbus"),
					attribute.String("messaging.operation.type", "process"),
					PoolKey.String(string(info.Pool)),
					TypeKey.String(typ),
					HandlerKey.String(info.Handler),
					AttemptKey.Int(info.Attempt),
					EventIDKey.Int64(int64(info.EventID)),
				))
			returned := false
			defer func() {
				switch {
				case !returned: // a panic or runtime.Goexit: the bus reports it
					span.SetStatus(codes.Error, "handler panicked or called runtime.Goexit")
				case err == nil:
				case errors.Is(err, eventbus.ErrStopChain):
					span.RecordError(err)
					span.SetAttributes(OutcomeKey.String(eventbus.OutcomeStopped.String()))
				default:
					span.RecordError(err)
					span.SetStatus(codes.Error, err.Error())
				}
				span.End()
			}()
			err = next(ctx, ev)
			returned = true
			return err
		}
	}
}
