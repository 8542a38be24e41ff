package eventbustest

import (
	"context"

	"github.com/imbus/eventbus"
)

// NamedHandler is a handler with the name it is registered under
// (eventbus.WithName), for RunNamed.
type NamedHandler[C eventbus.EventContext] struct {
	Name    string // "" takes the default name, as Run gives it
	Handler eventbus.Handler[C]
}

// Named pairs h with name, so that RunNamed reports it, in its CallInfo
// and in Result.Handler, under the name the bus knows it by.
func Named[C eventbus.EventContext](name string, h eventbus.Handler[C]) NamedHandler[C] {
	return NamedHandler[C]{Name: name, Handler: h}
}

// RunNamed is Run for handlers registered with WithName: each handler's
// CallInfo, and Result.Handler when it ends the chain, carry the name
// given, so a test checks the same names the bus's logs, dead letters and
// metrics would show:
//
//	res := eventbustest.RunNamed(ctx, ev,
//		eventbustest.Named("audit", srv.audit),
//		eventbustest.Named("deliver", srv.deliver))
//	// res.Handler == "audit" when the audit rejects
func RunNamed[C eventbus.EventContext](ctx context.Context, ev *C, handlers ...NamedHandler[C]) Result {
	names := make([]string, len(handlers))
	hs := make([]eventbus.Handler[C], len(handlers))
	for i, h := range handlers {
		names[i], hs[i] = h.Name, h.Handler
	}
	return run(ctx, ev, names, hs)
}
