package eventbusotel

import (
	"context"
	"fmt"
	"sync"

	"github.com/imbus/eventbus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Observer is an eventbus.Observer that records, with
// go.opentelemetry.io/otel/metric, for every run of a chain:
//
//   - eventbus.events (counter, {event}): events by pool, type, handler
//     and outcome (handled, stopped, retried, dead-lettered); a batch
//     counts its original events. handler is the one that failed or
//     stopped the chain, "" for a chain that ran to its end.
//   - eventbus.handler.duration (histogram, s): how long the run of the
//     chain took, same attributes.
//   - eventbus.queue.duration (histogram, s): how long the event waited
//     from AddEvent to the run, same attributes.
//
// Pass it to eventbus.WithObserver. Observe is safe for concurrent use;
// its cost per run is one map lookup and three measurements (attribute
// sets are built once per combination and reused).
type Observer struct {
	events   metric.Int64Counter
	handling metric.Float64Histogram
	queued   metric.Float64Histogram
	cfg      config
	sets     sync.Map // obsKey -> metric.MeasurementOption
}

type obsKey struct {
	pool    eventbus.Pool
	typ     eventbus.EventType
	handler string
	outcome eventbus.Outcome
}

var _ eventbus.Observer = (*Observer)(nil)

// NewObserver returns an Observer recording with the meter of the
// configured MeterProvider. It fails only if the provider refuses to
// create an instrument.
func NewObserver(opts ...Option) (*Observer, error) {
	c := newConfig(opts)
	m := c.mp.Meter(ScopeName)
	o := &Observer{cfg: c}
	var err error
	if o.events, err = m.Int64Counter("eventbus.events", metric.WithUnit("{event}"),
		metric.WithDescription("Events run through a handler chain, by outcome.")); err != nil {
		return nil, fmt.Errorf("eventbusotel: %w", err)
	}
	if o.handling, err = m.Float64Histogram("eventbus.handler.duration", metric.WithUnit("s"),
		metric.WithDescription("Time one run of a handler chain took.")); err != nil {
		return nil, fmt.Errorf("eventbusotel: %w", err)
	}
	if o.queued, err = m.Float64Histogram("eventbus.queue.duration", metric.WithUnit("s"),
		metric.WithDescription("Time an event waited between AddEvent and its run.")); err != nil {
		return nil, fmt.Errorf("eventbusotel: %w", err)
	}
	return o, nil
}

// Observe records one Observation.
func (o *Observer) Observe(ob eventbus.Observation) {
	k := obsKey{pool: ob.Pool, typ: ob.Type, handler: ob.Handler, outcome: ob.Outcome}
	set, ok := o.sets.Load(k)
	if !ok {
		set, _ = o.sets.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(
			PoolKey.String(string(ob.Pool)),
			TypeKey.String(o.cfg.nameOf(ob.Type, ob.TypeName)),
			HandlerKey.String(ob.Handler),
			OutcomeKey.String(ob.Outcome.String()),
		)))
	}
	opt := set.(metric.MeasurementOption)
	ctx := context.Background()
	o.events.Add(ctx, int64(max(ob.Events, 1)), opt)
	o.handling.Record(ctx, ob.InHandler.Seconds(), opt)
	o.queued.Record(ctx, ob.Queued.Seconds(), opt)
}
