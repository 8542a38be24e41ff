package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// lineWriter hands each line written to it to a channel.
type lineWriter struct {
	mu    sync.Mutex
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		w.lines <- l
	}
	return len(p), nil
}

// TestDemoServesItsDashboard runs the demo for a few seconds and reads its
// dashboard's API: the pools handle events, the journal has dead letters.
func TestDemoServesItsDashboard(t *testing.T) {
	out := &lineWriter{lines: make(chan string, 16)}
	done := make(chan error, 1)
	go func() { done <- run(out, "127.0.0.1:0", 8*time.Second, t.TempDir()) }()
	first := <-out.lines
	url, ok := strings.CutPrefix(first, "dashboard: ")
	if !ok {
		t.Fatalf("first line %q, want the URL", first)
	}
	get := func(path string, v any) {
		t.Helper()
		res, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v: %s", path, err, b)
		}
	}
	var ov struct {
		Pools []struct {
			Handled uint64 `json:"handled"`
		} `json:"pools"`
	}
	var dl struct {
		Journal []struct {
			Error string `json:"error"`
		} `json:"journal"`
	}
	deadline := time.Now().Add(time.Minute)
	for {
		get("api/overview", &ov)
		get("api/deadletters", &dl)
		if ov.Pools[0].Handled > 0 && ov.Pools[1].Handled > 0 && len(dl.Journal) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the demo's state
	}
	if ov.Pools[0].Handled == 0 || ov.Pools[1].Handled == 0 {
		t.Errorf("pools handled nothing: %+v", ov)
	}
	if len(dl.Journal) == 0 || !strings.Contains(dl.Journal[0].Error, "apns: 503") {
		t.Errorf("journal dead letters %+v, want APNs failures", dl)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if last := <-out.lines; last != "dashboard: stopped" {
		t.Errorf("last line %q", last)
	}
}
