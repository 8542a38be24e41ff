package dashboard_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/dashboard"
)

// BenchmarkBusWithDashboard measures a bus's add → handled throughput, 8
// producers over 512 keys, with the dashboard mounted. With
// DASHBOARD_BENCH_OPEN=1 a browser is emulated: a client of the live
// stream, plus the overview and keys views read every second as an open
// page does. DASHBOARD_BENCH_EVERY=20ms samples and reads that often
// instead, a stress bound. Run the settings alternately and compare with
// benchstat.
func BenchmarkBusWithDashboard(b *testing.B) {
	open := os.Getenv("DASHBOARD_BENCH_OPEN") == "1"
	every := time.Second
	if d, err := time.ParseDuration(os.Getenv("DASHBOARD_BENCH_EVERY")); err == nil && d > 0 {
		every = d
		defer dashboard.SetSampleInterval(d)()
	}
	bus, err := eventbus.New(eventbus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	_, err = eventbus.Register(bus, eventbus.EventOnSend, func(context.Context, *eventbus.UserContext) error { return nil })
	if err != nil {
		b.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		b.Fatal(err)
	}
	defer bus.Close(context.Background())
	srv := httptest.NewServer(dashboard.New(bus))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var page sync.WaitGroup
	if open {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/stream", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		page.Go(func() {
			defer res.Body.Close()
			sc := bufio.NewScanner(res.Body)
			sc.Buffer(nil, 1<<22)
			for sc.Scan() {
			}
		})
		page.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				for _, p := range []string{"/api/overview", "/api/keys?n=30"} {
					if res, err := http.Get(srv.URL + p); err == nil {
						_, _ = io.Copy(io.Discard, res.Body)
						res.Body.Close()
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	defer page.Wait()
	defer cancel()

	evs := make([]*eventbus.UserContext, 512)
	for i := range evs {
		evs[i] = &eventbus.UserContext{EventType: eventbus.EventOnSend, Conn: &conn{fmt.Sprint("u", i)}}
	}
	const producers = 8
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for p := range producers {
		n := b.N / producers
		if p < b.N%producers {
			n++
		}
		mine := evs[p*64 : (p+1)*64]
		wg.Go(func() {
			for i := range n {
				if err := bus.AddEvent(context.Background(), mine[i%64]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := bus.WaitIdle(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}

// BenchmarkPageRequests measures what an open page costs per second: one
// stream sample's Stats read, and one read of the overview and of the keys
// view (a walk of every shard of a default bus: 3 × 1024), each served
// once a second while the page is open.
func BenchmarkPageRequests(b *testing.B) {
	bus, err := eventbus.New(eventbus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	if err := bus.Start(); err != nil {
		b.Fatal(err)
	}
	defer bus.Close(context.Background())
	h := dashboard.New(bus)
	for _, path := range []string{"/api/overview", "/api/keys?n=30"} {
		b.Run(path[5:], func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Code)
				}
			}
		})
	}
	b.Run("stats", func(b *testing.B) {
		for b.Loop() {
			_ = bus.Stats()
		}
	})
}
