package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/imbus/eventbus"
)

// historyLen is how many samples the charts keep: five minutes, one a
// second.
const historyLen = 300

// sampleInterval is how often the sampler reads the bus while a page is
// connected. A variable so that tests can speed it up.
var sampleInterval = time.Second

// Sample is one point of the live charts: every pool's gauges and the
// rates since the previous sample. It is the data of each "sample" event
// of GET api/stream, and an element of GET api/history.
type Sample struct {
	Time  int64        `json:"t"` // unix milliseconds
	Pools []SamplePool `json:"pools"`
}

// SamplePool is one pool in a Sample.
type SamplePool struct {
	Name          string  `json:"name"`
	Workers       int     `json:"workers"`
	Busy          int64   `json:"busy"`
	Queued        int64   `json:"queued"`
	InFlight      int64   `json:"inFlight"`
	Retrying      int64   `json:"retrying"`
	HandledPerSec float64 `json:"handledPerSec"`
	FailedPerSec  float64 `json:"failedPerSec"`
	DeadLettered  uint64  `json:"deadLettered"`
	P50           float64 `json:"p50ms"`
	P99           float64 `json:"p99ms"`
	Max           float64 `json:"maxMs"`
}

// sampler reads the bus's counters once per sampleInterval while at least
// one stream client is connected, and fans each sample out to them. With no
// client it has no goroutine and costs nothing.
type sampler struct {
	d *handler

	mu      sync.Mutex
	clients map[chan []byte]struct{}
	stop    chan struct{} // closed to end the running loop; nil when none runs
	done    chan struct{} // closed when that loop has returned
	hist    []Sample      // ring of the last historyLen samples
	next    int
}

func newSampler(d *handler) *sampler {
	return &sampler{d: d, clients: map[chan []byte]struct{}{}}
}

// history returns the kept samples, oldest first.
func (s *sampler) history() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Sample, 0, len(s.hist))
	if len(s.hist) == historyLen {
		out = append(out, s.hist[s.next:]...)
		out = append(out, s.hist[:s.next]...)
	} else {
		out = append(out, s.hist...)
	}
	return out
}

// join registers a client and starts the loop if it is the first. The
// returned channel receives each sample's JSON; a client too slow to take
// it misses that sample.
func (s *sampler) join() chan []byte {
	ch := make(chan []byte, 4)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[ch] = struct{}{}
	if s.stop == nil {
		// A previous loop may still be finishing: the new one starts only
		// once it has, so that there is never more than one.
		prev := s.done
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.loop(s.stop, s.done, prev, sampleInterval)
	}
	return ch
}

// leave unregisters a client; the last one stops the loop and waits for
// it, so that no goroutine of the dashboard outlives its last request.
func (s *sampler) leave(ch chan []byte) {
	s.mu.Lock()
	delete(s.clients, ch)
	var done chan struct{}
	if len(s.clients) == 0 && s.stop != nil {
		close(s.stop)
		s.stop, done = nil, s.done
	}
	s.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (s *sampler) loop(stop, done, prev chan struct{}, every time.Duration) {
	defer close(done)
	if prev != nil {
		<-prev
	}
	last, lastAt := s.d.bus.Stats(), time.Now()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		st, now := s.d.bus.Stats(), time.Now()
		smp := makeSample(now, now.Sub(lastAt), last, st)
		last, lastAt = st, now
		b, err := json.Marshal(smp)
		if err != nil {
			continue
		}
		s.mu.Lock()
		if len(s.hist) < historyLen {
			s.hist = append(s.hist, smp)
		} else {
			s.hist[s.next] = smp
			s.next = (s.next + 1) % historyLen
		}
		for ch := range s.clients {
			select {
			case ch <- b:
			default: // this client is behind: it misses one point
			}
		}
		s.mu.Unlock()
	}
}

func makeSample(now time.Time, dt time.Duration, prev, cur eventbus.Stats) Sample {
	sec := dt.Seconds()
	if sec <= 0 {
		sec = 1
	}
	one := func(name string, p, c eventbus.PoolStats) SamplePool {
		rate := func(a, b uint64) float64 {
			if b < a {
				return 0
			}
			return float64(b-a) / sec
		}
		return SamplePool{Name: name, Workers: c.Workers, Busy: min(c.InFlight, int64(c.Workers)),
			Queued: c.Queued, InFlight: c.InFlight, Retrying: c.Retrying,
			HandledPerSec: rate(p.Handled+p.Stopped, c.Handled+c.Stopped),
			FailedPerSec:  rate(p.Failed, c.Failed), DeadLettered: c.DeadLettered,
			P50: ms(c.Latency.P50), P99: ms(c.Latency.P99), Max: ms(c.Latency.Max)}
	}
	return Sample{Time: now.UnixMilli(), Pools: []SamplePool{
		one(string(eventbus.PoolUser), prev.User, cur.User),
		one(string(eventbus.PoolChannel), prev.Channel, cur.Channel),
		one(string(eventbus.PoolPusher), prev.Pusher, cur.Pusher),
	}}
}

// stream is GET api/stream: Server-Sent Events, a "history" event with
// the kept samples, then a "sample" event per sampleInterval, until the
// client goes away.
func (d *handler) stream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	ch := d.sampler.join()
	defer d.sampler.leave(ch)
	hist, _ := json.Marshal(d.sampler.history())
	if _, err := fmt.Fprintf(w, "retry: 2000\nevent: history\ndata: %s\n\n", hist); err != nil {
		return
	}
	fl.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case b := <-ch:
			if _, err := fmt.Fprintf(w, "event: sample\ndata: %s\n\n", b); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
