package natsbridge_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/imbus/eventbus"
	natsbridge "github.com/imbus/eventbus/bridge/nats"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkPlainJetStream is the yardstick of BenchmarkBridge: a plain
// JetStream client doing the bridge's end-to-end work on the same
// embedded server, with nothing of the bridge. The same events (encoded
// by a bus, the same bytes), the same subjects <Stream>.<type>.<partition>
// and key hash (StableKey modulo 16), 64 producers each waiting for its
// own store ack, three connections that publish and consume (partition p
// on connection p%3), file storage; each message is decoded and its
// add→handled latency recorded, as the bridge's handler does.
//
//   - policy: the bridge's own setup: work-queue retention, a Fetch(256)
//     loop per partition, an ack per message, MaxAckPending 1024.
//   - best: limits retention (MaxAge, MaxBytes, DiscardNew: an ack does
//     not delete from the file store, and a full stream refuses
//     publishes instead of dropping unconsumed events), pull-ahead
//     Consumer.Messages with 1024 buffered, MaxAckPending 4096, and one
//     cumulative ack (AckAll) per run of handled messages of a partition
//     (safe: a partition is handled in stream order).
func BenchmarkPlainJetStream(b *testing.B) {
	for _, best := range []bool{false, true} {
		name := "policy"
		if best {
			name = "best"
		}
		b.Run(name, func(b *testing.B) { plainRun(b, best) })
	}
}

func plainRun(b *testing.B, best bool) {
	const parts, conns, producers = natsbridge.DefaultPartitions, 3, 64
	ts := startServer(b)
	codec, err := eventbus.New(eventbus.WithLogger(testLogger()))
	if err != nil {
		b.Fatal(err)
	}
	var js [conns]jetstream.JetStream
	for i := range js {
		_, js[i] = ts.connect(b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	scfg := jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"EVENTS.*.*"},
		Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy}
	if best {
		scfg.Retention, scfg.MaxAge, scfg.MaxBytes, scfg.Discard = jetstream.LimitsPolicy, time.Hour, 1<<30, jetstream.DiscardNew
	}
	if _, err := js[0].CreateStream(ctx, scfg); err != nil {
		b.Fatal(err)
	}
	l := &latencies{want: int64(b.N), done: make(chan struct{})}
	record := func(m jetstream.Msg) {
		ev, err := codec.DecodeEvent(eventbus.EventChannelDistribute, m.Data())
		if err != nil {
			b.Error(err)
			return
		}
		l.add(time.Duration(time.Now().UnixNano() - ev.(*eventbus.ChannelContext).Messages[0].Timestamp))
	}
	var consumers sync.WaitGroup
	for p := range parts {
		ccfg := jetstream.ConsumerConfig{Durable: "EVENTS_p" + strconv.Itoa(p),
			FilterSubject: "EVENTS.*." + strconv.Itoa(p), AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: 30 * time.Second, MaxAckPending: 1024, MaxDeliver: -1}
		if best {
			ccfg.AckPolicy, ccfg.MaxAckPending = jetstream.AckAllPolicy, 4096
		}
		cons, err := js[p%conns].CreateConsumer(ctx, "EVENTS", ccfg)
		if err != nil {
			b.Fatal(err)
		}
		if !best {
			consumers.Go(func() {
				for ctx.Err() == nil {
					batch, err := cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
					if err != nil {
						continue
					}
					for m := range batch.Messages() {
						record(m)
						_ = m.Ack()
					}
				}
			})
			continue
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(1024))
		if err != nil {
			b.Fatal(err)
		}
		consumers.Go(func() {
			defer it.Stop()
			var last jetstream.Msg
			run := 0
			for ctx.Err() == nil {
				m, err := it.Next(jetstream.NextMaxWait(2 * time.Millisecond))
				if err != nil {
					if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
						if last != nil { // the run ended: ack it at once
							_ = last.Ack()
							last, run = nil, 0
						}
						continue
					}
					return
				}
				record(m)
				last, run = m, run+1
				if run >= 256 {
					_ = last.Ack()
					last, run = nil, 0
				}
			}
		})
	}

	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N / producers
	for g := range producers {
		wg.Go(func() {
			j := js[g%conns]
			for i := range per + boolInt(g < b.N%producers) {
				ev := stamped("k"+strconv.Itoa((g+i*producers)%1000), uint64(i))
				key, err := codec.StableKey(ev)
				if err != nil {
					b.Error(err)
					return
				}
				data, err := codec.EncodeEvent(ev)
				if err != nil {
					b.Error(err)
					return
				}
				subject := "EVENTS." + strconv.Itoa(int(eventbus.EventChannelDistribute)) + "." + strconv.Itoa(int(key%parts))
				f, err := j.PublishMsgAsync(&nats.Msg{Subject: subject, Data: data}, jetstream.WithExpectStream("EVENTS"))
				if err != nil {
					b.Error(err)
					return
				}
				select {
				case <-f.Ok():
				case err := <-f.Err():
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	waitFor(b, l.done, 5*time.Minute, "every event handled")
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	l.report(b)
	cancel()
	consumers.Wait()
}
