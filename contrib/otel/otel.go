// Package eventbusotel instruments an eventbus.Bus with OpenTelemetry:
// a Middleware that traces every handler attempt, and an Observer that
// records counters and latency histograms.
//
//	obs, err := eventbusotel.NewObserver()
//	bus, err := eventbus.New(eventbus.WithObserver(obs))
//	bus.Use(eventbusotel.NewMiddleware())
//
// Event types are named as the bus names them (eventbus.Observation.TypeName
// and eventbus.CallInfo.TypeName), so types declared with Define show their
// names without further setup, and the Observer can be made before its bus.
//
// Without WithTracerProvider and WithMeterProvider the global providers
// (otel.GetTracerProvider, otel.GetMeterProvider) are used, as in the
// otelhttp instrumentation. The package lives in its own module, so that
// the eventbus module itself depends on nothing outside the standard
// library.
package eventbusotel

import (
	"fmt"
	"sync/atomic"

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
	broken   *atomic.Bool // typeName panicked once: not used any more
}

func newConfig(opts []Option) config {
	c := config{broken: new(atomic.Bool)}
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
	return c
}

// nameOf names type t: with the WithTypeName function when one was given
// and it names t (returns something other than t.String()), else busName
// (the name the bus gave), else t.String(). A WithTypeName function that
// panics is a setup mistake: it is reported once to the OpenTelemetry
// error handler (otel.Handle) and the bus's names are used from then on.
func (c *config) nameOf(t eventbus.EventType, busName string) string {
	if f := c.typeName; f != nil && !c.broken.Load() {
		if name, ok := c.safeName(f, t); ok && (name != t.String() || busName == "") {
			return name
		}
	}
	if busName != "" {
		return busName
	}
	return t.String()
}

func (c *config) safeName(f func(eventbus.EventType) string, t eventbus.EventType) (name string, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			if c.broken.CompareAndSwap(false, true) {
				otel.Handle(fmt.Errorf("eventbusotel: WithTypeName: the function panicked (%v): "+
					"it is no longer used and types are named by the bus; leave WithTypeName out, "+
					"the bus names its types itself", r))
			}
			name, ok = "", false
		}
	}()
	return f(t), true
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

// WithTypeName overrides how event types are named in span names and
// attributes. Without it they are named as the bus names them
// (Bus.TypeName: built-in names and the names given to Define), which is
// what most programs want; use it only for names of your own. Where name
// returns t.String() (it does not name t), the bus's name is kept, so
// bus.TypeName taken while bus was still nil loses no name. If name
// panics, the bus's names are used from then on and the panic is reported
// once through otel.Handle.
func WithTypeName(name func(eventbus.EventType) string) Option {
	return optionFunc(func(c *config) { c.typeName = name })
}
