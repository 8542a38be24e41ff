// Package dashboard serves a live web dashboard of an eventbus.Bus: its
// pools, handlers and subscribers, the keys that hold work or wait for a
// retry, and the dead letters, with Redrive and Purge buttons when allowed.
//
// Mount it under any prefix:
//
//	mux.Handle("/debug/eventbus/", http.StripPrefix("/debug/eventbus",
//		dashboard.New(bus, dashboard.WithJournal(j))))
//
// Put it behind your application's own authentication, as you would
// net/http/pprof: it shows event keys (user and channel ids) and errors,
// and with WithActions it changes the journal.
//
// # Views
//
//   - Overview: per pool, workers busy and idle, queued, in flight,
//     retrying, handled/s, failed/s, dead-lettered and the p50, p99 and max
//     run time, with live charts of the last five minutes; the subscribers'
//     counters. Busy workers are estimated as min(in flight, workers): a
//     batch in flight counts its events.
//   - Handlers and subscribers: per event type, the chain in order and the
//     subscribers, each subscriber with its counters and its lag (events
//     queued in its lanes). Chains share their pool's counters; with
//     WithHandlerStats (an opt-in middleware, see HandlerStats) each
//     handler has its own attempts, failures, retries and latency.
//   - Keys: the shards holding the most events, with the key at the head of
//     each, and the keys parked for a retry with the handler, the attempt,
//     the last error and the time of the next try (Bus.Keys).
//   - Dead letters: the bus's recent ones (its DeadLetterRing) and, with
//     WithJournal, the journal's persisted list. With WithActions, Redrive
//     (Bus.Redrive) and Purge (Journal.Purge) of one letter or all.
//   - Journal and bridge: the journal's segments, pending records and
//     bytes (WithJournal), a transport's counters (WithBridge).
//
// # JSON API
//
// Every view reads a JSON API that scripts and tests can use too. Paths
// are relative to the mount point; all answer GET only, with
// Content-Type application/json:
//
//	api/overview       Overview: every pool and subscriber (PoolView)
//	api/handlers       HandlersView: types with chains and subscribers
//	api/keys?n=20      KeysView: the n busiest shards and up to n parked keys (n ≤ 200)
//	api/deadletters    DeadLettersView: recent and journal dead letters
//	api/journal        JournalView
//	api/bridge         BridgeView
//	api/history        []Sample: the samples kept for the charts
//	api/stream         text/event-stream: "history" ([]Sample), then a "sample" (Sample) every second
//
// Actions, only with WithActions, are POST requests with a JSON body
// {"ids": [1, 2]} or {"all": true} and the header X-CSRF-Token set to the
// per-process token the page carries (in its eventbus-csrf meta tag):
//
//	api/deadletters/redrive   Bus.Redrive of the journal's dead letters
//	api/deadletters/purge     Journal.Purge of them
//
// Both answer {"done": n}. A POST without the right token, from another
// site (Sec-Fetch-Site), or to a dashboard without WithActions gets 403.
// Only the journal's letters can be acted on: the in-memory ring is a
// read-only record.
//
// The stream is a long response: an http.Server WriteTimeout ends it,
// and the page then reconnects every WriteTimeout. Serve the dashboard
// from a server without one (or a long one) for an unbroken stream.
//
// # Security
//
// The dashboard is read-only unless WithActions is given, and shows no
// event payload unless WithPayloads is given (then channel and push
// messages' payloads and user frames, decoded with the bus's codecs for
// the journal's letters). Every response carries
// X-Content-Type-Options: nosniff and a Content-Security-Policy that allows
// only the page's own scripts and styles (no inline script) and requests
// to its own origin; the page loads nothing from elsewhere (the charts'
// uPlot, MIT licensed, is embedded, see assets/uPlot.LICENSE). The page
// puts every value that comes from an event in the document as text
// (textContent), so a payload or key "<script>" shows as those characters.
//
// # Cost
//
// New starts no goroutine. The live charts' sampler reads Bus.Stats (atomic
// counters, no lock of the hot path) once a second and runs only while at
// least one page (a client of api/stream) is connected; with no browser
// open the dashboard costs nothing. The keys view walks every shard under
// its lock about once a second while it is shown, a short wait for the
// producers of each shard.
package dashboard
