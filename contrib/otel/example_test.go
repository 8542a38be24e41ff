package eventbusotel_test

import (
	"context"
	"fmt"
	"log"
	"slices"
	"time"

	"github.com/imbus/eventbus"
	eventbusotel "github.com/imbus/eventbus/contrib/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Wiring both adapters: a span per handler attempt, metrics per run. Here
// the spans go to an in-memory exporter; a real program would use an
// OTLP exporter for traces and the Prometheus exporter for metrics.
func Example() {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer tp.Shutdown(context.Background())
	defer mp.Shutdown(context.Background())

	obs, err := eventbusotel.NewObserver(eventbusotel.WithMeterProvider(mp))
	if err != nil {
		log.Fatal(err)
	}
	bus, err := eventbus.New(eventbus.WithObserver(obs))
	if err != nil {
		log.Fatal(err)
	}
	bus.Use(eventbusotel.NewMiddleware(eventbusotel.WithTracerProvider(tp)))

	_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		// A follow-on event added with ctx continues the trace.
		return bus.AddEvent(ctx, &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "g1", ChannelType: 2})
	}, eventbus.WithName("deliver"))
	if err != nil {
		log.Fatal(err)
	}
	_, err = eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		return nil
	}, eventbus.WithName("store"))
	if err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		log.Fatal(err)
	}
	if err := bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &conn{"alice"}}); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.Close(ctx); err != nil {
		log.Fatal(err)
	}
	got := spans.GetSpans() // in the order they ended: sort by start
	slices.SortFunc(got, func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) })
	for _, s := range got {
		fmt.Println(s.Name)
	}
	fmt.Println("one trace:", got[0].SpanContext.TraceID() == got[1].SpanContext.TraceID())
	// Output:
	// OnSend deliver
	// ChannelDistribute store
	// one trace: true
}
