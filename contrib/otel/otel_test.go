package eventbusotel_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	eventbusotel "github.com/imbus/eventbus/contrib/otel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type conn struct{ uid string }

func (c *conn) UID() string { return c.uid }
func (c *conn) ID() int64   { return 1 }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newBus returns a bus closed when the test ends.
func newBus(t *testing.T, opts ...eventbus.Option) *eventbus.Bus {
	t.Helper()
	bus, err := eventbus.New(append([]eventbus.Option{eventbus.WithLogger(quiet),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond})}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, bus.Close(ctx))
	})
	return bus
}

func settle(t *testing.T, bus *eventbus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, bus.WaitIdle(ctx))
}

func attrs(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// TestMiddlewareTracesTheFlow: OnSend -> ChannelDistribute -> PushOnline,
// one span per handler attempt, all in the trace of the context the first
// event was added with, each follow-on's span a child of its parent's.
func TestMiddlewareTracesTheFlow(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	bus := newBus(t)
	bus.Use(eventbusotel.NewMiddleware(eventbusotel.WithTracerProvider(tp)))
	var failOnce atomic.Bool
	failOnce.Store(true)
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		return bus.AddEvent(ctx, &eventbus.ChannelContext{EventType: eventbus.EventChannelDistribute, ChannelID: "g1", ChannelType: 2,
			Messages: []*eventbus.Message{{ChannelID: "g1", ChannelType: 2}}})
	}, eventbus.WithName("deliver"))
	require.NoError(t, err)
	_, err = eventbus.Register(bus, eventbus.EventChannelDistribute, func(ctx context.Context, ev *eventbus.ChannelContext) error {
		return bus.AddEvent(ctx, &eventbus.PushContext{EventType: eventbus.EventPushOnline, Message: ev.Messages[0], Subscribers: []string{"bob"}})
	}, eventbus.WithName("fanout"))
	require.NoError(t, err)
	_, err = eventbus.Register(bus, eventbus.EventPushOnline, func(ctx context.Context, ev *eventbus.PushContext) error {
		if failOnce.CompareAndSwap(true, false) {
			return errors.New("write: connection reset")
		}
		return nil
	}, eventbus.WithName("recv"))
	require.NoError(t, err)
	require.NoError(t, bus.Start())

	// The producer's own span: the flow joins its trace.
	root, rootSpan := tp.Tracer("test").Start(context.Background(), "request")
	require.NoError(t, bus.AddEvent(root, &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &conn{"alice"}}))
	settle(t, bus)
	rootSpan.End()

	spans := exp.GetSpans()
	byName := map[string][]tracetest.SpanStub{}
	for _, s := range spans {
		byName[s.Name] = append(byName[s.Name], s)
	}
	require.Len(t, byName["OnSend deliver"], 1)
	require.Len(t, byName["ChannelDistribute fanout"], 1)
	require.Len(t, byName["PushOnline recv"], 2, "one span per attempt")
	deliver, fanout := byName["OnSend deliver"][0], byName["ChannelDistribute fanout"][0]
	traceID := rootSpan.SpanContext().TraceID()
	for _, s := range spans {
		assert.Equal(t, traceID, s.SpanContext.TraceID(), "%s is in the producer's trace", s.Name)
	}
	assert.Equal(t, rootSpan.SpanContext().SpanID(), deliver.Parent.SpanID())
	assert.Equal(t, deliver.SpanContext.SpanID(), fanout.Parent.SpanID(), "follow-on: child of its parent's handler span")
	for _, recv := range byName["PushOnline recv"] {
		assert.Equal(t, fanout.SpanContext.SpanID(), recv.Parent.SpanID())
		assert.Equal(t, trace.SpanKindConsumer, recv.SpanKind)
	}

	first, retry := byName["PushOnline recv"][0], byName["PushOnline recv"][1]
	a := attrs(first.Attributes)
	assert.Equal(t, "pusher", a[eventbusotel.PoolKey].AsString())
	assert.Equal(t, "PushOnline", a[eventbusotel.TypeKey].AsString())
	assert.Equal(t, "recv", a[eventbusotel.HandlerKey].AsString())
	assert.Equal(t, int64(1), a[eventbusotel.AttemptKey].AsInt64())
	assert.NotZero(t, a[eventbusotel.EventIDKey].AsInt64())
	assert.Equal(t, "eventbus", a["messaging.system"].AsString())
	assert.Equal(t, codes.Error, first.Status.Code)
	assert.Equal(t, "write: connection reset", first.Status.Description)
	b := attrs(retry.Attributes)
	assert.Equal(t, int64(2), b[eventbusotel.AttemptKey].AsInt64())
	assert.Equal(t, a[eventbusotel.EventIDKey], b[eventbusotel.EventIDKey], "one event, one id across attempts")
	assert.Equal(t, codes.Unset, retry.Status.Code)
}

// TestMiddlewareStopAndPanic: a stop on purpose is not an error; a panic is.
func TestMiddlewareStopAndPanic(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	bus := newBus(t, eventbus.WithRetry(eventbus.NoRetry))
	bus.Use(eventbusotel.NewMiddleware(eventbusotel.WithTracerProvider(tp)))
	_, err := eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		return eventbus.ErrStopChain
	}, eventbus.WithName("audit"))
	require.NoError(t, err)
	_, err = eventbus.Register(bus, eventbus.EventRecvAck, func(ctx context.Context, ev *eventbus.UserContext) error {
		panic("bad ack")
	}, eventbus.WithName("ack"))
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	require.NoError(t, bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &conn{"a"}}))
	require.NoError(t, bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventRecvAck, Conn: &conn{"a"}}))
	settle(t, bus)

	got := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		got[s.Name] = s
	}
	require.Contains(t, got, "OnSend audit")
	require.Contains(t, got, "RecvAck ack")
	stop := got["OnSend audit"]
	assert.Equal(t, codes.Unset, stop.Status.Code)
	assert.Equal(t, "stopped", attrs(stop.Attributes)[eventbusotel.OutcomeKey].AsString())
	assert.Equal(t, codes.Error, got["RecvAck ack"].Status.Code)
	assert.False(t, got["RecvAck ack"].EndTime.IsZero(), "the span ends even on a panic")
}

// TestObserverRecordsMetrics: counters by outcome and latency histograms,
// per pool, type, handler and outcome, read with a ManualReader.
func TestObserverRecordsMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	obs, err := eventbusotel.NewObserver(eventbusotel.WithMeterProvider(mp))
	require.NoError(t, err)
	bus := newBus(t, eventbus.WithObserver(obs))
	var failOnce atomic.Bool
	failOnce.Store(true)
	_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		switch ev.Frame {
		case "spam":
			return eventbus.ErrStopChain
		case "broken":
			return eventbus.Permanent(errors.New("malformed"))
		case "flaky":
			if failOnce.CompareAndSwap(true, false) {
				return errors.New("busy")
			}
		}
		return nil
	}, eventbus.WithName("store"))
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	for _, f := range []string{"ok", "ok", "ok", "spam", "broken", "flaky"} {
		require.NoError(t, bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &conn{"a"}, Frame: f}))
	}
	settle(t, bus)

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	metrics := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		assert.Equal(t, eventbusotel.ScopeName, sm.Scope.Name)
		for _, m := range sm.Metrics {
			metrics[m.Name] = m
		}
	}
	key := func(set attribute.Set) string {
		h, _ := set.Value(eventbusotel.HandlerKey)
		o, _ := set.Value(eventbusotel.OutcomeKey)
		p, _ := set.Value(eventbusotel.PoolKey)
		ty, _ := set.Value(eventbusotel.TypeKey)
		return p.AsString() + "/" + ty.AsString() + "/" + h.AsString() + "/" + o.AsString()
	}
	require.Contains(t, metrics, "eventbus.events")
	sum, ok := metrics["eventbus.events"].Data.(metricdata.Sum[int64])
	require.True(t, ok)
	assert.True(t, sum.IsMonotonic)
	counts := map[string]int64{}
	for _, dp := range sum.DataPoints {
		counts[key(dp.Attributes)] = dp.Value
	}
	assert.Equal(t, map[string]int64{
		"user/OnSend//handled":            4, // three ok and the flaky one's retry
		"user/OnSend/store/stopped":       1,
		"user/OnSend/store/dead-lettered": 1,
		"user/OnSend/store/retried":       1,
	}, counts)

	for _, name := range []string{"eventbus.handler.duration", "eventbus.queue.duration"} {
		require.Contains(t, metrics, name)
		assert.Equal(t, "s", metrics[name].Unit)
		hist, ok := metrics[name].Data.(metricdata.Histogram[float64])
		require.True(t, ok, name)
		n := map[string]uint64{}
		for _, dp := range hist.DataPoints {
			n[key(dp.Attributes)] = dp.Count
		}
		assert.Equal(t, uint64(4), n["user/OnSend//handled"], name)
		assert.Equal(t, uint64(1), n["user/OnSend/store/retried"], name)
	}
}

// eventTypeNames collects the eventbus.event.type of every data point of
// eventbus.events.
func eventTypeNames(t *testing.T, reader *sdkmetric.ManualReader) []string {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	var names []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "eventbus.events" {
				for _, dp := range sum.DataPoints {
					v, _ := dp.Attributes.Value(eventbusotel.TypeKey)
					names = append(names, v.AsString())
				}
			}
		}
	}
	return names
}

// runDefinedType defines type 42 as "Audit" on a bus observed by obs and
// traced by a middleware made with mwOpts, runs one event of it and
// returns the span names.
func runDefinedType(t *testing.T, obs eventbus.Observer, mwOpts ...eventbusotel.Option) []string {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	bus := newBus(t, eventbus.WithObserver(obs))
	require.NoError(t, bus.Define(42, eventbus.PoolUser, "Audit"))
	bus.Use(eventbusotel.NewMiddleware(append([]eventbusotel.Option{eventbusotel.WithTracerProvider(tp)}, mwOpts...)...))
	_, err := eventbus.Register(bus, 42, func(ctx context.Context, ev *eventbus.UserContext) error { return nil },
		eventbus.WithName("check"))
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	require.NoError(t, bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: 42, Conn: &conn{"a"}}))
	settle(t, bus)
	var names []string
	for _, s := range exp.GetSpans() {
		names = append(names, s.Name)
	}
	return names
}

// TestObserverMadeBeforeBusNamesDefinedTypes: the Observer must exist
// before its bus (eventbus.WithObserver), yet a type declared with Define
// is recorded under its name, with no WithTypeName at all.
func TestObserverMadeBeforeBusNamesDefinedTypes(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	obs, err := eventbusotel.NewObserver(eventbusotel.WithMeterProvider(mp))
	require.NoError(t, err)

	spans := runDefinedType(t, obs)
	assert.Equal(t, []string{"Audit check"}, spans)
	assert.Equal(t, []string{"Audit"}, eventTypeNames(t, reader))
}

// errorHandler records what reaches otel.Handle.
type errorHandler struct{ errs chan error }

func (h errorHandler) Handle(err error) { h.errs <- err }

// TestTypeNameOfUnmadeBusLosesNoName: the mistake the package doc once
// showed, WithTypeName(bus.TypeName) evaluated while bus is still nil,
// still names a defined type as the bus does, in metrics and spans.
func TestTypeNameOfUnmadeBusLosesNoName(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	var unmade *eventbus.Bus
	obs, err := eventbusotel.NewObserver(eventbusotel.WithMeterProvider(mp), eventbusotel.WithTypeName(unmade.TypeName))
	require.NoError(t, err)

	spans := runDefinedType(t, obs, eventbusotel.WithTypeName(unmade.TypeName))
	assert.Equal(t, []string{"Audit check"}, spans)
	assert.Equal(t, []string{"Audit"}, eventTypeNames(t, reader))
}

// TestPanickingTypeNameIsReportedNotLost: a WithTypeName function that
// panics loses no metric and no span: the bus's names are used, and the
// panic is reported once (per Observer or middleware) through otel.Handle
// with a message that says what to do.
func TestPanickingTypeNameIsReportedNotLost(t *testing.T) {
	h := errorHandler{errs: make(chan error, 16)}
	prev := otel.GetErrorHandler()
	otel.SetErrorHandler(h)
	t.Cleanup(func() { otel.SetErrorHandler(prev) })

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	broken := eventbusotel.WithTypeName(func(eventbus.EventType) string { panic("no names yet") })
	obs, err := eventbusotel.NewObserver(eventbusotel.WithMeterProvider(mp), broken)
	require.NoError(t, err)

	spans := runDefinedType(t, obs, broken)
	assert.Equal(t, []string{"Audit check"}, spans)
	assert.Equal(t, []string{"Audit"}, eventTypeNames(t, reader))
	require.Len(t, h.errs, 2, "one report from the observer, one from the middleware")
	for range 2 {
		err := <-h.errs
		assert.ErrorContains(t, err, "WithTypeName: the function panicked (no names yet)")
		assert.ErrorContains(t, err, "leave WithTypeName out")
	}
}

// TestTypeNameOverrideNamesTypes: a WithTypeName function that does name
// a type wins over the bus's name.
func TestTypeNameOverrideNamesTypes(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	custom := eventbusotel.WithTypeName(func(t eventbus.EventType) string { return fmt.Sprintf("im.%d", t) })
	obs, err := eventbusotel.NewObserver(eventbusotel.WithMeterProvider(mp), custom)
	require.NoError(t, err)

	spans := runDefinedType(t, obs, custom)
	assert.Equal(t, []string{"im.42 check"}, spans)
	assert.Equal(t, []string{"im.42"}, eventTypeNames(t, reader))
}
