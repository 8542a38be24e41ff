// Package eventbusotel instruments an eventbus.Bus with OpenTelemetry:
// a Middleware that traces every handler attempt, and an Observer that
// records counters and latency histograms.
//
//	mw := eventbusotel.NewMiddleware(eventbusotel.WithTypeName(bus.TypeName))
//	obs, err := eventbusotel.NewObserver(eventbusotel.WithTypeName(bus.TypeName))
//	bus, err := eventbus.New(eventbus.WithObserver(obs))
//	bus.Use(mw)
//
// Without WithTracerProvider and WithMeterProvider the global providers
// (otel.GetTracerProvider, otel.GetMeterProvider) are used, as in the
// otelhttp instrumentation. The package lives in its own module, so that
// the eventbus module itself depends on nothing outside the standard
// library.
package eventbusotel

import (
	"github.com/imbus/eventbus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/imbus/eventbus/contrib/otel"

// Attribute keys set on spans and measurements. Besides them, spans carry
// the messaging conventions messaging.system = "eventbus" and
// messaging.operation.type = "process".
const (
	PoolKey    = attribute.Key("eventbus.pool")       // "user", "channel", "pusher"
	TypeKey    = attribute.Key("eventbus.event.type") // e.g. "OnSend"
	HandlerKey = attribute.Key("eventbus.handler")    // the handler's name
	AttemptKey = attribute.Key("eventbus.attempt")    // attempt number, from 1 (spans only)
	EventIDKey = attribute.Key("eventbus.event.id")   // CallInfo.EventID (spans only)
	OutcomeKey = attribute.Key("eventbus.outcome")    // handled, stopped, retried, dead-lettered
)

// Option configures NewMiddleware and NewObserver.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	tp       trace.TracerProvider
	mp       metric.MeterProvider
	typeName func(eventbus.EventType) string
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.typeName == nil {
		c.typeName = eventbus.EventType.String
	}
	return c
}

// WithTracerProvider sets the provider of the middleware's tracer.
// Default: the global provider, otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tp = tp })
}

// WithMeterProvider sets the provider of the observer's meter. Default:
// the global provider, otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.mp = mp })
}

// WithTypeName sets how event types are named in span names and
// attributes. Pass the bus's TypeName method, so that types declared with
// Define show their names; the default, EventType.String, knows only the
// built-in ones ("EventType(42)" otherwise).
func WithTypeName(name func(eventbus.EventType) string) Option {
	return optionFunc(func(c *config) { c.typeName = name })
}
