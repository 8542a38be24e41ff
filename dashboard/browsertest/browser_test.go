// Package browsertest drives the eventbus dashboard in a real headless
// Chromium (github.com/chromedp/chromedp). It is a module of its own so
// that chromedp never enters the eventbus module's dependencies. Where no
// Chromium is installed it prints a SKIPPED line and passes.
//
// Run it with `make dashboard-test` at the repository root, or
// `go test ./...` here. SCREENSHOT=path saves the final screenshot there.
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/chromedp"
	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/dashboard"
	"github.com/imbus/eventbus/journal"
	"go.uber.org/goleak"
)

// browser is the Chromium found, "" when there is none.
var browser string

func TestMain(m *testing.M) {
	for _, name := range []string{os.Getenv("CHROME"), "chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		fmt.Println("dashboard browser test: SKIPPED: no Chromium found (apt-get install chromium, or set CHROME)")
		os.Exit(0)
	}
	// chromedp's own goroutines end with their contexts, which the test
	// cancels; goleak checks that nothing of the bus or dashboard is left.
	goleak.VerifyTestMain(m)
}

type conn struct{ uid string }

func (c *conn) UID() string { return c.uid }
func (c *conn) ID() int64   { return 1 }

const hostileError = `apns: 503 <b id="injected">down</b>`
const hostilePayload = `<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">`

// TestDashboardInBrowserShowsLivePoolsAndRedrivesADeadLetter opens the
// dashboard in Chromium while events flow, waits for the pools' numbers
// to move and the journal's dead letter to show its error (as text),
// clicks Redrive, and sees the letter handled and gone.
func TestDashboardInBrowserShowsLivePoolsAndRedrivesADeadLetter(t *testing.T) {
	j, err := journal.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	bus, err := eventbus.New(eventbus.WithLogger(slog.New(slog.DiscardHandler)),
		eventbus.WithJournal(j, eventbus.EventPushOffline))
	if err != nil {
		t.Fatal(err)
	}
	var apnsUp atomic.Bool
	var pushed atomic.Int64
	must := func(_ *eventbus.Registration, err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(eventbus.Register(bus, eventbus.EventOnSend, func(ctx context.Context, ev *eventbus.UserContext) error {
		time.Sleep(100 * time.Microsecond)
		return nil
	}, eventbus.WithName("store")))
	must(eventbus.Register(bus, eventbus.EventPushOffline, func(ctx context.Context, ev *eventbus.PushContext) error {
		if !apnsUp.Load() {
			return eventbus.Permanent(errors.New(hostileError))
		}
		pushed.Add(1)
		return nil
	}, eventbus.WithName("apns")))
	if err := bus.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := bus.Close(ctx); err != nil {
			t.Error(err)
		}
	}()

	mux := http.NewServeMux()
	mux.Handle("/debug/eventbus/", http.StripPrefix("/debug/eventbus",
		dashboard.New(bus, dashboard.WithJournal(j), dashboard.WithActions(), dashboard.WithPayloads())))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// Traffic for the pools, and one dead letter in the journal.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_ = bus.TryAddEvent(&eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &conn{"alice"}})
		}
	})
	m := &eventbus.Message{FromUID: "mallory", ChannelID: "group:ops", ChannelType: 2, Payload: []byte(hostilePayload)}
	if err := bus.AddEvent(context.Background(), &eventbus.PushContext{EventType: eventbus.EventPushOffline,
		Message: m, Subscribers: []string{"dave"}}); err != nil {
		t.Fatal(err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1400, 1000))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, tcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer tcancel()

	// The browser logs what the Content-Security-Policy blocks, also
	// while it parses the page (before any script of the page runs).
	var cspMu sync.Mutex
	var cspLog []string
	chromedp.ListenTarget(ctx, func(ev any) {
		if e, ok := ev.(*cdplog.EventEntryAdded); ok && strings.Contains(e.Entry.Text, "Content Security Policy") {
			cspMu.Lock()
			cspLog = append(cspLog, e.Entry.Text)
			cspMu.Unlock()
		}
	})
	if err := chromedp.Run(ctx, cdplog.Enable()); err != nil {
		t.Fatal(err)
	}

	handled := `Number(document.querySelector('[data-pool="user"][data-field="handled"]').textContent.replace(/[^0-9]/g, '') || 0)`
	var first, later float64
	step := func(what string, actions ...chromedp.Action) {
		t.Helper()
		if err := chromedp.Run(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	step("open the page", chromedp.Navigate(srv.URL+"/debug/eventbus/"),
		chromedp.WaitVisible(`#pool-user`, chromedp.ByQuery),
		chromedp.Poll(handled+` > 0`, nil),
		chromedp.Evaluate(handled, &first))
	step("pool numbers move", chromedp.Poll(handled+` > `+fmt.Sprint(first), nil),
		chromedp.Poll(`Number(document.body.dataset.samples || 0) >= 3`, nil),
		chromedp.Evaluate(handled, &later))
	t.Logf("user pool handled: %v, then %v", first, later)

	step("open the dead letters", chromedp.Click(`button[data-view="deadletters"]`, chromedp.ByQuery),
		chromedp.Poll(`[...document.querySelectorAll('#dl-journal td.err')].some(td => td.textContent.includes('apns: 503'))`, nil))
	var errText, payload string
	var injected, pwned bool
	step("read the letter", chromedp.Text(`#dl-journal td.err`, &errText, chromedp.ByQuery),
		chromedp.Text(`#dl-journal td.payload`, &payload, chromedp.ByQuery),
		chromedp.Evaluate(`document.getElementById('injected') !== null`, &injected),
		chromedp.Evaluate(`window.__pwned !== undefined`, &pwned))
	if errText != hostileError {
		t.Errorf("error cell shows %q, want the text %q", errText, hostileError)
	}
	if !strings.Contains(payload, hostilePayload) {
		t.Errorf("payload cell shows %q, want it to contain the text %q", payload, hostilePayload)
	}
	if injected || pwned {
		t.Errorf("event data was interpreted as HTML: element injected %v, script ran %v", injected, pwned)
	}

	apnsUp.Store(true)
	var status string
	step("redrive", chromedp.Click(`#dl-journal button.redrive`, chromedp.ByQuery),
		chromedp.Poll(`document.getElementById('action-status').textContent.includes('redrive: 1 done')`, nil),
		chromedp.Poll(`document.querySelectorAll('#dl-journal button.redrive').length === 0`, nil),
		chromedp.Text(`#action-status`, &status, chromedp.ByQuery))
	deadline := time.Now().Add(time.Minute)
	for pushed.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling the handler's count
	}
	if n := pushed.Load(); n != 1 {
		t.Fatalf("the redriven letter was handled %d times, want 1", n)
	}
	if dls, err := j.DeadLetters(); err != nil || len(dls) != 0 {
		t.Fatalf("journal dead letters after redrive: %d, %v", len(dls), err)
	}

	var violations string
	step("no CSP violation", chromedp.Evaluate(`document.documentElement.dataset.cspViolations || ""`, &violations))
	cspMu.Lock()
	if violations != "" || len(cspLog) > 0 {
		t.Errorf("the page broke its own Content-Security-Policy: %s %q", violations, cspLog)
	}
	cspMu.Unlock()

	var png []byte
	step("screenshot", chromedp.Click(`button[data-view="overview"]`, chromedp.ByQuery),
		chromedp.Poll(`Number(document.body.dataset.samples || 0) >= 5`, nil),
		chromedp.CaptureScreenshot(&png))
	out := os.Getenv("SCREENSHOT")
	if out == "" {
		out = filepath.Join(t.TempDir(), "dashboard.png")
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes); status %q", out, len(png), status)
	cancel()
	acancel()
}
