package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/journal"
)

//go:embed assets
var assets embed.FS

var page = template.Must(template.ParseFS(assets, "assets/index.html"))

// csrfToken is the per-process token every action must carry in the
// X-CSRF-Token header. A page served by this process embeds it; another
// site's page cannot read it.
var csrfToken = sync.OnceValue(rand.Text)

// contentSecurityPolicy allows only the page's own scripts, styles and
// requests: no inline script, no other origin, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Option configures New.
type Option interface{ apply(*handler) }

type optionFunc func(*handler)

func (f optionFunc) apply(d *handler) { f(d) }

// WithActions shows the Redrive and Purge buttons of the dead letters and
// accepts the matching POST requests (with the page's CSRF token). Without
// it the dashboard is read-only: every POST is refused with 403.
func WithActions() Option { return optionFunc(func(d *handler) { d.actions = true }) }

// WithPayloads shows the events' contents (decoded with the bus's codecs)
// in the dead letters and keys views. Without it only their type, key,
// handler and error show.
func WithPayloads() Option { return optionFunc(func(d *handler) { d.payloads = true }) }

// WithJournal shows the journal's persisted dead letters, Redrive (through
// Bus.Redrive) and Purge acting on them, and, when j has a
// Stats() journal.Stats method (a *journal.Journal does), its segments,
// pending records and bytes. Pass the journal given to eventbus.WithJournal.
func WithJournal(j eventbus.Journal) Option {
	return optionFunc(func(d *handler) { d.journal = j })
}

// WithBridge shows a transport's counters: stats is called about once a
// second while the page is open and its result is shown as JSON, e.g.
// WithBridge(func() any { return br.Stats() }) for bridge/nats. It must be
// safe for concurrent use.
func WithBridge(stats func() any) Option {
	return optionFunc(func(d *handler) { d.bridge = stats })
}

// WithDeadLetterRing shows the letters of r as the recent dead letters, for
// a bus whose sink is not its default ring (a ring inside a fan-out sink,
// say). By default the dashboard shows Bus.DeadLetterRing.
func WithDeadLetterRing(r *eventbus.DeadLetterRing) Option {
	return optionFunc(func(d *handler) { d.ring = r })
}

// handler is the http.Handler New returns.
type handler struct {
	bus      *eventbus.Bus
	actions  bool
	payloads bool
	journal  eventbus.Journal
	bridge   func() any
	ring     *eventbus.DeadLetterRing
	hstats   *HandlerStats
	sampler  *sampler
	mux      *http.ServeMux
	// keysMu serialises Keys views, so that many open pages cost one
	// walk of the shards at a time.
	keysMu sync.Mutex
}

// New returns the dashboard of bus as an http.Handler, to mount under any
// prefix with http.StripPrefix. It starts no goroutine: the sampler of
// the live charts runs only while a page is connected.
func New(bus *eventbus.Bus, opts ...Option) http.Handler {
	d := &handler{bus: bus}
	for _, o := range opts {
		if o != nil {
			o.apply(d)
		}
	}
	if d.ring == nil && bus != nil {
		d.ring = bus.DeadLetterRing()
	}
	d.sampler = newSampler(d)
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", d.index)
	m.HandleFunc("GET /assets/{name}", d.asset)
	m.HandleFunc("GET /api/overview", d.jsonGET(d.overview))
	m.HandleFunc("GET /api/handlers", d.jsonGET(d.handlers))
	m.HandleFunc("GET /api/keys", d.keysAPI)
	m.HandleFunc("GET /api/deadletters", d.jsonGET(d.deadLetters))
	m.HandleFunc("GET /api/journal", d.jsonGET(d.journalStats))
	m.HandleFunc("GET /api/bridge", d.jsonGET(d.bridgeStats))
	m.HandleFunc("GET /api/history", d.jsonGET(func() any { return d.sampler.history() }))
	m.HandleFunc("GET /api/stream", d.stream)
	m.HandleFunc("POST /api/deadletters/redrive", d.action(d.redrive))
	m.HandleFunc("POST /api/deadletters/purge", d.action(d.purge))
	d.mux = m
	return d
}

// ServeHTTP serves the page, its assets and the JSON API.
func (d *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if r.URL.Path == "" {
		// Mounted at "/x" and asked for "/x": the page's relative links
		// need the trailing slash.
		http.Redirect(w, r, strings.SplitN(r.RequestURI, "?", 2)[0]+"/", http.StatusMovedPermanently)
		return
	}
	if d.bus == nil {
		http.Error(w, "dashboard: no bus", http.StatusInternalServerError)
		return
	}
	d.mux.ServeHTTP(w, r)
}

func (d *handler) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	data := struct {
		Actions, Payloads bool
		Token             string
	}{d.actions, d.payloads, ""}
	if d.actions {
		data.Token = csrfToken()
	}
	_ = page.Execute(w, data)
}

var assetTypes = map[string]string{
	".js":      "text/javascript; charset=utf-8",
	".css":     "text/css; charset=utf-8",
	".LICENSE": "text/plain; charset=utf-8",
}

func (d *handler) asset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ct, ok := assetTypes[path.Ext(name)]
	if !ok {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(assets, "assets/"+name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

// jsonGET serves f's result as JSON.
func (d *handler) jsonGET(f func() any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, f()) }
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	// Escape <, > and & even in JSON: a value read as HTML by mistake is
	// then still inert.
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}

type apiError struct {
	Error string `json:"error"`
}

// action guards a POST: actions enabled, the CSRF token right, the request
// not a cross-site one.
func (d *handler) action(f func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !d.actions {
			writeJSON(w, http.StatusForbidden, apiError{"actions are disabled (dashboard.WithActions)"})
			return
		}
		tok := r.Header.Get("X-CSRF-Token")
		if subtle.ConstantTimeCompare([]byte(tok), []byte(csrfToken())) != 1 {
			writeJSON(w, http.StatusForbidden, apiError{"missing or wrong CSRF token"})
			return
		}
		if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
			writeJSON(w, http.StatusForbidden, apiError{"cross-site request refused"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		res, err := f(r)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, struct {
				apiError
				Result any `json:"result,omitempty"`
			}{apiError{err.Error()}, res})
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}

// actionRequest is the body of a redrive or purge: the journal's dead
// letter ids, or all of them.
type actionRequest struct {
	IDs []uint64 `json:"ids"`
	All bool     `json:"all"`
}

type actionResult struct {
	Done int `json:"done"`
}

func readAction(r *http.Request) (actionRequest, error) {
	var req actionRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return req, errBadRequest("body: want {\"ids\": [...]} or {\"all\": true}: " + err.Error())
	}
	if !req.All && len(req.IDs) == 0 {
		return req, errBadRequest("no ids given (and all is not set)")
	}
	return req, nil
}

type errBadRequest string

func (e errBadRequest) Error() string { return string(e) }

// journalAction reads the request of an action on the journal's dead
// letters (verb: what it does to them), refused when there is no journal.
func (d *handler) journalAction(r *http.Request, verb string) (actionRequest, error) {
	if d.journal == nil {
		return actionRequest{}, errBadRequest("no journal (dashboard.WithJournal): only a journal's dead letters can be " + verb)
	}
	return readAction(r)
}

func (d *handler) redrive(r *http.Request) (any, error) {
	req, err := d.journalAction(r, "redriven")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	var n int
	if req.All {
		n, err = d.bus.Redrive(ctx)
	} else {
		n, err = d.bus.Redrive(ctx, req.IDs...)
	}
	return actionResult{n}, err
}

func (d *handler) purge(r *http.Request) (any, error) {
	req, err := d.journalAction(r, "purged")
	if err != nil {
		return nil, err
	}
	ids := req.IDs
	if req.All {
		if pa, ok := d.journal.(interface{ PurgeAll() (int, error) }); ok {
			n, err := pa.PurgeAll()
			return actionResult{n}, err
		}
		list, err := d.journal.DeadLetters()
		if err != nil {
			return nil, err
		}
		ids = ids[:0]
		for _, l := range list {
			ids = append(ids, l.ID)
		}
		if len(ids) == 0 {
			return actionResult{0}, nil
		}
	}
	n, err := d.journal.Purge(ids...)
	return actionResult{n}, err
}

// journalStatser is what a *journal.Journal has beyond eventbus.Journal.
type journalStatser interface{ Stats() journal.Stats }
