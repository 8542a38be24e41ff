package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/dashboard"
	"github.com/imbus/eventbus/journal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type conn struct{ uid string }

func (c *conn) UID() string { return c.uid }
func (c *conn) ID() int64   { return 1 }

// hostile is a payload and an error text that must show as text.
const hostile = `<script>alert("pwned")</script><img src=x onerror=alert(1)>`

// fixture is a started bus with a journal and a handler whose behaviour
// depends on the sender, served by a dashboard under /debug/eventbus.
type fixture struct {
	bus     *eventbus.Bus
	j       *journal.Journal
	srv     *httptest.Server
	h       http.Handler
	base    string
	release func()        // unblocks "slow", heals "flaky" and APNs
	started chan struct{} // a send per "slow" event that started
	handled atomic.Int64  // offline pushes handled
}

func newFixture(t *testing.T, opts ...dashboard.Option) *fixture {
	t.Helper()
	f := &fixture{started: make(chan struct{}, 1)}
	j, err := journal.Open(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = j.Close() })
	f.j = j
	bus, err := eventbus.New(eventbus.WithLogger(slog.New(slog.DiscardHandler)),
		eventbus.WithJournal(j, eventbus.EventPushOffline),
		eventbus.WithUserPool(eventbus.PoolConfig{KeyFunc: fixtureKey}))
	require.NoError(t, err)
	f.bus = bus
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		assert.NoError(t, bus.Close(ctx))
	})
	gate := make(chan struct{})
	var healed atomic.Bool
	var once sync.Once
	f.release = func() { once.Do(func() { healed.Store(true); close(gate) }) }
	t.Cleanup(f.release)

	_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		switch ev.Conn.UID() {
		case "slow":
			select {
			case f.started <- struct{}{}:
			default:
			}
			<-gate
		case "flaky":
			if !healed.Load() {
				return errors.New("session store timeout " + hostile)
			}
		case "bad":
			return eventbus.Permanent(errors.New("bad input " + hostile))
		}
		return nil
	}, eventbus.WithName("auth"), eventbus.WithHandlerRetry(eventbus.RetryPolicy{MaxAttempts: 1000,
		InitialBackoff: 5 * time.Millisecond, MaxBackoff: 5 * time.Millisecond}))
	require.NoError(t, err)
	_, err = eventbus.Subscribe(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error { return nil },
		eventbus.WithName("webhook"))
	require.NoError(t, err)
	_, err = eventbus.Register(bus, eventbus.EventPushOffline, func(ctx context.Context, ev *eventbus.PushContext) error {
		if !healed.Load() {
			return eventbus.Permanent(errors.New("apns down " + hostile))
		}
		f.handled.Add(1)
		return nil
	}, eventbus.WithName("apns"))
	require.NoError(t, err)
	require.NoError(t, bus.Start())

	f.h = dashboard.New(bus, append([]dashboard.Option{dashboard.WithJournal(j)}, opts...)...)
	mux := http.NewServeMux()
	mux.Handle("/debug/eventbus/", http.StripPrefix("/debug/eventbus", f.h))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	f.base = f.srv.URL + "/debug/eventbus/"
	return f
}

func (f *fixture) send(t *testing.T, uid string) {
	t.Helper()
	require.NoError(t, f.bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend,
		Conn: &conn{uid}, Frame: "frame of " + uid}))
}

func (f *fixture) pushOffline(t *testing.T, text string) {
	t.Helper()
	m := &eventbus.Message{FromUID: "mallory", ChannelID: "group:" + hostile, ChannelType: 2, Payload: []byte(text)}
	require.NoError(t, f.bus.AddEvent(context.Background(), &eventbus.PushContext{EventType: eventbus.EventPushOffline,
		Message: m, Subscribers: []string{"dave"}}))
}

// get fetches path and decodes its JSON into v, checking the headers every
// answer must carry; it returns the raw body.
func (f *fixture) get(t *testing.T, path string, v any) string {
	t.Helper()
	res, err := http.Get(f.base + path)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, "%s: %s", path, body)
	require.Equal(t, "application/json; charset=utf-8", res.Header.Get("Content-Type"), path)
	require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"), path)
	require.Contains(t, res.Header.Get("Content-Security-Policy"), "script-src 'self'", path)
	if v != nil {
		require.NoError(t, json.Unmarshal(body, v), path)
	}
	return string(body)
}

// eventually polls cond (a state, not a synchronisation) for up to a
// minute.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fixtureKey gives the fixture's users fixed ordering keys, each in a
// shard of its own (a KeyFunc's keys are not seeded per bus): a user that
// shared the blocked key's shard would wait behind it (see
// ARCHITECTURE.md, The engine: shards, run queue, workers) instead of
// being parked or dead-lettered.
func fixtureKey(ev eventbus.Event) uint64 {
	switch ev.(*eventbus.UserContext).Conn.UID() {
	case "slow":
		return 1
	case "flaky":
		return 2
	case "bad":
		return 3
	}
	return 4
}

// TestAPIShowsPoolsKeysAndDeadLetters drives traffic, a blocked key, a
// key waiting for retries and dead letters in memory and in the journal,
// and checks that each view's JSON shows them, payloads hidden.
func TestAPIShowsPoolsKeysAndDeadLetters(t *testing.T) {
	f := newFixture(t)
	for range 20 {
		f.send(t, "alice")
	}
	f.send(t, "slow")
	<-f.started // in a worker's hands: the next ones wait in the FIFO
	for range 3 {
		f.send(t, "slow")
	}
	f.send(t, "flaky")
	f.send(t, "bad")
	f.pushOffline(t, "secret text "+hostile)

	var ov dashboard.Overview
	eventually(t, "alice's events handled", func() bool {
		f.get(t, "api/overview", &ov)
		return ov.Pools[0].Handled >= 20
	})
	require.Equal(t, "user", ov.Pools[0].Name)
	require.Len(t, ov.Pools, 3)
	require.Len(t, ov.Subscribers, 1)
	require.Equal(t, "OnSend/webhook", ov.Subscribers[0].Name)
	require.True(t, ov.Journal)
	require.False(t, ov.Actions)

	var hv dashboard.HandlersView
	f.get(t, "api/handlers", &hv)
	var onSend *dashboard.TypeView
	for i := range hv.Types {
		if hv.Types[i].Name == "OnSend" {
			onSend = &hv.Types[i]
		}
	}
	require.NotNil(t, onSend)
	require.Equal(t, []string{"auth"}, onSend.Handlers)
	require.Len(t, onSend.Subscribers, 1)
	require.Equal(t, "webhook", onSend.Subscribers[0].Name)

	var kv dashboard.KeysView
	eventually(t, "the slow key busy and the flaky key parked", func() bool {
		f.get(t, "api/keys?n=5", &kv)
		return len(kv.Busy) > 0 && kv.Busy[0].Head != nil && len(kv.Parked) > 0
	})
	require.Equal(t, "slow", kv.Busy[0].Head.Key)
	require.Equal(t, 3, kv.Busy[0].HeadQueued)
	require.Equal(t, 4, kv.Busy[0].Held)
	p := kv.Parked[0]
	require.Equal(t, "flaky", p.Event.Key)
	require.Equal(t, "auth", p.Handler)
	require.Contains(t, p.Error, "session store timeout")
	require.GreaterOrEqual(t, p.Attempt, 1)
	require.Empty(t, p.Event.Payload, "payloads are hidden by default")

	var dl dashboard.DeadLettersView
	eventually(t, "both dead letters", func() bool {
		f.get(t, "api/deadletters", &dl)
		return len(dl.Recent) >= 2 && len(dl.Journal) == 1
	})
	var bad *dashboard.LetterView
	for i := range dl.Recent {
		if dl.Recent[i].Event.Key == "bad" {
			bad = &dl.Recent[i]
		}
	}
	require.NotNil(t, bad)
	require.Equal(t, "auth", bad.Handler)
	require.Contains(t, bad.Error, "bad input")
	jl := dl.Journal[0]
	require.NotZero(t, jl.ID)
	require.Equal(t, "apns", jl.Handler)
	require.Contains(t, jl.Error, "apns down")
	require.Equal(t, "PushOffline", jl.Event.Name)
	require.Empty(t, jl.Event.Payload)

	var js dashboard.JournalView
	f.get(t, "api/journal", &js)
	require.True(t, js.Present)
	require.Equal(t, 1, js.DeadLetters)
	require.Positive(t, js.Segments)

	var bv dashboard.BridgeView
	f.get(t, "api/bridge", &bv)
	require.False(t, bv.Present)

	f.release()
	require.NoError(t, f.bus.WaitIdle(t.Context()))
}

// TestPayloadsShownOnlyWithPayloadsAndEscapedInJSON checks that
// WithPayloads shows a decoded journal letter's payload, and that the JSON
// carries hostile text escaped, never as a literal "<script>".
func TestPayloadsShownOnlyWithPayloadsAndEscapedInJSON(t *testing.T) {
	f := newFixture(t, dashboard.WithPayloads())
	f.pushOffline(t, "secret text "+hostile)
	var dl dashboard.DeadLettersView
	var raw string
	eventually(t, "the journal letter", func() bool {
		raw = f.get(t, "api/deadletters", &dl)
		return len(dl.Journal) == 1
	})
	require.Contains(t, dl.Journal[0].Event.Payload, "secret text "+hostile)
	require.Contains(t, dl.Journal[0].Event.Key, "group:"+hostile)
	require.NotContains(t, raw, "<script>")
	require.NotContains(t, raw, "<img")
	require.Contains(t, raw, `\u003cscript\u003e`)
}

// post sends an action with the given token ("" for none).
func (f *fixture) post(t *testing.T, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.base+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("X-CSRF-Token", token)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

var metaToken = regexp.MustCompile(`<meta name="eventbus-csrf" content="([A-Z2-7]*)">`)

func pageToken(t *testing.T, f *fixture) string {
	t.Helper()
	res, err := http.Get(f.base)
	require.NoError(t, err)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	m := metaToken.FindStringSubmatch(string(b))
	require.NotNil(t, m, "page without a token meta tag")
	return m[1]
}

// TestActionsRefusedWithoutCSRFTokenOrWithoutWithActions checks every way
// a POST is refused, then that a right one redrives and purges.
func TestActionsRefusedWithoutCSRFTokenOrWithoutWithActions(t *testing.T) {
	ro := newFixture(t)
	require.Empty(t, pageToken(t, ro), "a read-only page carries no token")
	code, _ := ro.post(t, "api/deadletters/redrive", dashboard.CSRFToken(), `{"all":true}`)
	require.Equal(t, http.StatusForbidden, code, "read-only dashboard")

	f := newFixture(t, dashboard.WithActions())
	tok := pageToken(t, f)
	require.Equal(t, dashboard.CSRFToken(), tok)
	f.pushOffline(t, "one")
	f.pushOffline(t, "two")
	var dl dashboard.DeadLettersView
	eventually(t, "two journal letters", func() bool {
		f.get(t, "api/deadletters", &dl)
		return len(dl.Journal) == 2
	})

	for _, path := range []string{"api/deadletters/redrive", "api/deadletters/purge"} {
		code, body := f.post(t, path, "", `{"all":true}`)
		require.Equal(t, http.StatusForbidden, code, "%s without token: %s", path, body)
		code, _ = f.post(t, path, strings.Repeat("0", len(tok)), `{"all":true}`)
		require.Equal(t, http.StatusForbidden, code, "%s with a wrong token", path)
		res, err := http.Get(f.base + path)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, res.StatusCode, "GET %s", path)
	}
	req, _ := http.NewRequest(http.MethodPost, f.base+"api/deadletters/purge", strings.NewReader(`{"all":true}`))
	req.Header.Set("X-CSRF-Token", tok)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusForbidden, res.StatusCode, "cross-site")
	f.get(t, "api/deadletters", &dl)
	require.Len(t, dl.Journal, 2, "refused actions changed nothing")

	code, body := f.post(t, "api/deadletters/redrive", tok, `{}`)
	require.Equal(t, http.StatusBadRequest, code, body)

	f.release() // APNs is back: a redriven push is handled
	code, body = f.post(t, "api/deadletters/redrive", tok, `{"ids":[`+jsonID(dl.Journal[0].ID)+`]}`)
	require.Equal(t, http.StatusOK, code, body)
	require.JSONEq(t, `{"done":1}`, body)
	eventually(t, "the redriven push handled", func() bool { return f.handled.Load() == 1 })
	code, body = f.post(t, "api/deadletters/purge", tok, `{"all":true}`)
	require.Equal(t, http.StatusOK, code, body)
	require.JSONEq(t, `{"done":1}`, body)
	f.get(t, "api/deadletters", &dl)
	require.Empty(t, dl.Journal)
}

func jsonID(id uint64) string { b, _ := json.Marshal(id); return string(b) }

// sse reads Server-Sent Events from r.
type sse struct{ sc *bufio.Scanner }

func (s *sse) next() (event, data string, err error) {
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case line == "" && event != "":
			return event, data, nil
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		}
	}
	if err := s.sc.Err(); err != nil {
		return "", "", err
	}
	return "", "", io.EOF
}

// TestStreamSamplesOnlyWhileAClientIsConnected checks that the sampler
// does not run before a client connects, sends history then samples whose
// handled rate reflects the traffic while one is, and stops once the last
// client has gone.
func TestStreamSamplesOnlyWhileAClientIsConnected(t *testing.T) {
	defer dashboard.SetSampleInterval(20 * time.Millisecond)()
	f := newFixture(t)
	require.False(t, dashboard.SamplerRunning(f.h), "no client, no sampler")

	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.base+"api/stream", nil)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, "text/event-stream; charset=utf-8", res.Header.Get("Content-Type"))
	require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
	s := &sse{bufio.NewScanner(res.Body)}
	ev, data, err := s.next()
	require.NoError(t, err)
	require.Equal(t, "history", ev)
	require.True(t, json.Valid([]byte(data)))
	require.True(t, dashboard.SamplerRunning(f.h))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = f.bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &conn{"alice"}})
		}
	})
	var moved bool
	for i := 0; i < 500 && !moved; i++ {
		ev, data, err := s.next()
		require.NoError(t, err)
		require.Equal(t, "sample", ev)
		var smp dashboard.Sample
		require.NoError(t, json.Unmarshal([]byte(data), &smp))
		require.Len(t, smp.Pools, 3)
		require.Equal(t, "user", smp.Pools[0].Name)
		moved = smp.Pools[0].HandledPerSec > 0
	}
	close(stop)
	wg.Wait()
	require.True(t, moved, "no sample showed the user pool handling events")

	var hist []dashboard.Sample
	f.get(t, "api/history", &hist)
	require.NotEmpty(t, hist)

	cancel()
	res.Body.Close()
	eventually(t, "the sampler stopped", func() bool { return !dashboard.SamplerRunning(f.h) })
}

// TestPageAndAssetsAreServedSafely checks the page and its assets: content
// types, nosniff, the CSP, no inline script, the CSRF-free read-only page,
// and that the page's script never writes HTML from data.
func TestPageAndAssetsAreServedSafely(t *testing.T) {
	f := newFixture(t)
	res, err := http.Get(f.base)
	require.NoError(t, err)
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, "text/html; charset=utf-8", res.Header.Get("Content-Type"))
	require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
	csp := res.Header.Get("Content-Security-Policy")
	require.Contains(t, csp, "default-src 'none'")
	require.Contains(t, csp, "script-src 'self'")
	require.NotContains(t, csp, "unsafe-inline")
	require.NotRegexp(t, `<script(?:\s[^>]*)?>\s*[^<\s]`, string(page), "no inline script")
	require.NotRegexp(t, `https?://`, string(page), "no external request")

	for name, ct := range map[string]string{
		"assets/app.js": "text/javascript; charset=utf-8", "assets/uPlot.iife.min.js": "text/javascript; charset=utf-8",
		"assets/app.css": "text/css; charset=utf-8", "assets/uPlot.min.css": "text/css; charset=utf-8",
		"assets/uPlot.LICENSE": "text/plain; charset=utf-8",
	} {
		res, err := http.Get(f.base + name)
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode, name)
		require.Equal(t, ct, res.Header.Get("Content-Type"), name)
		require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"), name)
		require.NotEmpty(t, b)
		if name == "assets/app.js" {
			require.NotRegexp(t, `innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(`, string(b))
		}
	}
	res, err = http.Get(f.base + "assets/index.html")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusNotFound, res.StatusCode)

	// Mounted at /debug/eventbus, the bare prefix redirects to the page.
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err = cl.Get(strings.TrimSuffix(f.base, "/"))
	require.NoError(t, err)
	res.Body.Close()
	require.True(t, res.StatusCode/100 == 3, "status %d", res.StatusCode)
	require.Equal(t, "/debug/eventbus/", res.Header.Get("Location"))
	// Mounted at "/x" itself, the dashboard redirects "/x" to "/x/".
	rec := httptest.NewRecorder()
	http.StripPrefix("/x", f.h).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil))
	require.Equal(t, http.StatusMovedPermanently, rec.Code)
	require.Equal(t, "/x/", rec.Header().Get("Location"))
}

// TestConcurrentPagesAndStreamsAreRaceFree hammers every view and the
// stream from many goroutines while events flow and fail.
func TestConcurrentPagesAndStreamsAreRaceFree(t *testing.T) {
	defer dashboard.SetSampleInterval(5 * time.Millisecond)()
	f := newFixture(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, uid := range []string{"alice", "bob", "flaky", "bad"} {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_ = f.bus.TryAddEvent(&eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &conn{uid}})
				if i%50 == 0 {
					f.pushOffline(t, "x")
				}
			}
		})
	}
	paths := []string{"", "api/overview", "api/handlers", "api/keys?n=50", "api/deadletters", "api/journal", "api/bridge", "api/history"}
	var readers sync.WaitGroup
	for g := range 6 {
		readers.Go(func() {
			for i := range 30 {
				if (g+i)%5 == 0 {
					ctx, cancel := context.WithCancel(t.Context())
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.base+"api/stream", nil)
					res, err := http.DefaultClient.Do(req)
					if err == nil {
						s := &sse{bufio.NewScanner(res.Body)}
						_, _, _ = s.next()
						_, _, _ = s.next()
						res.Body.Close()
					}
					cancel()
					continue
				}
				res, err := http.Get(f.base + paths[(g+i)%len(paths)])
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					t.Errorf("%s: %d", paths[(g+i)%len(paths)], res.StatusCode)
				}
			}
		})
	}
	readers.Wait()
	close(stop)
	wg.Wait()
	eventually(t, "the sampler stopped", func() bool { return !dashboard.SamplerRunning(f.h) })
}

// TestNewWithNilBusAnswersAnError checks that a nil bus gives an error
// page, not a panic.
func TestNewWithNilBusAnswersAnError(t *testing.T) {
	rec := httptest.NewRecorder()
	dashboard.New(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/overview", nil))
	require.Equal(t, http.StatusInternalServerError, rec.Code)
}

// TestHandlerStatsCountEachHandlersAttempts installs the opt-in
// middleware and checks the per-handler counters the handlers view shows:
// attempts, failures and retries of each chain handler and subscriber.
func TestHandlerStatsCountEachHandlersAttempts(t *testing.T) {
	hs := dashboard.NewHandlerStats()
	bus, err := eventbus.New(eventbus.WithLogger(slog.New(slog.DiscardHandler)),
		eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, Jitter: -1}))
	require.NoError(t, err)
	bus.Use(hs.Middleware())
	var failedOnce sync.Map
	_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error { return nil },
		eventbus.WithName("auth"))
	require.NoError(t, err)
	_, err = eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		if _, loaded := failedOnce.LoadOrStore(ev.Conn.UID(), true); !loaded {
			return errors.New("first attempt fails")
		}
		return nil
	}, eventbus.WithName("store"))
	require.NoError(t, err)
	_, err = eventbus.Subscribe(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error { return nil },
		eventbus.WithName("webhook"))
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	defer func() { assert.NoError(t, bus.Close(context.Background())) }()
	const n = 5
	for i := range n {
		require.NoError(t, bus.AddEvent(context.Background(), &eventbus.UserContext{EventType: eventbus.EventOnSend,
			Conn: &conn{string(rune('a' + i))}}))
	}
	require.NoError(t, bus.WaitIdle(t.Context()))

	srv := httptest.NewServer(dashboard.New(bus, dashboard.WithHandlerStats(hs)))
	defer srv.Close()
	res, err := http.Get(srv.URL + "/api/handlers")
	require.NoError(t, err)
	defer res.Body.Close()
	var hv dashboard.HandlersView
	require.NoError(t, json.NewDecoder(res.Body).Decode(&hv))
	var stats []dashboard.HandlerView
	for _, tv := range hv.Types {
		if tv.Name == "OnSend" {
			stats = tv.HandlerStats
		}
	}
	require.Len(t, stats, 3)
	byName := map[string]dashboard.HandlerView{}
	for _, h := range stats {
		byName[h.Name] = h
	}
	require.Equal(t, uint64(n), byName["auth"].Calls)
	require.Zero(t, byName["auth"].Failed)
	require.Equal(t, uint64(2*n), byName["store"].Calls, "each event: a failed attempt and its retry")
	require.Equal(t, uint64(n), byName["store"].Failed)
	require.Equal(t, uint64(n), byName["store"].Retries)
	require.Equal(t, uint64(n), byName["webhook"].Calls)
	require.GreaterOrEqual(t, byName["store"].MaxMs, byName["store"].MeanMs)
}
