package bench

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/imbus/eventbus"
	"github.com/imbus/eventbus/journal"
)

// ---- the bus's durable add: eventbus with EventChannelStore in a journal
// (package journal), each AddEvent returning once its event is fsync'd; a
// handler that does nothing, so every event is acked once handled. Only
// the Append benchmark runs it (the bus has no bulk append, ack or replay
// call of its own). ----

type busStore struct {
	j    *journal.Journal
	bus  *eventbus.Bus
	evs  []*eventbus.ChannelContext
	next atomic.Uint64
}

func openBus(dir string) (store, error) {
	quiet := slog.New(slog.DiscardHandler)
	j, err := journal.Open(dir, journal.WithLogger(quiet))
	if err != nil {
		return nil, err
	}
	bus, err := eventbus.New(eventbus.WithLogger(quiet), eventbus.WithJournal(j, eventbus.EventChannelStore))
	if err == nil {
		_, err = eventbus.Register(bus, eventbus.EventChannelStore, func(context.Context, *eventbus.ChannelContext) error { return nil })
	}
	if err == nil {
		err = bus.Start()
	}
	if err != nil {
		j.Close()
		return nil, err
	}
	// Events of 4096 channels, each with one message whose payload is the
	// benchmarks' 128 bytes.
	evs := make([]*eventbus.ChannelContext, 4096)
	for i := range evs {
		ch := fmt.Sprint("channel-", i)
		evs[i] = &eventbus.ChannelContext{EventType: eventbus.EventChannelStore, ChannelID: ch, ChannelType: 2,
			Messages: []*eventbus.Message{{MessageSeq: uint64(i), ChannelID: ch, ChannelType: 2, FromUID: "alice",
				Payload: payload}}}
	}
	return &busStore{j: j, bus: bus, evs: evs}, nil
}

func (s *busStore) append([]byte) (uint64, error) {
	n := s.next.Add(1)
	return n, s.bus.AddEvent(context.Background(), s.evs[n%uint64(len(s.evs))])
}

func (s *busStore) bulk(int, []byte) ([]uint64, error) { panic("bus: no bulk append") }
func (s *busStore) ack([]uint64) error                 { panic("bus: no ack") }
func (s *busStore) sync() error                        { return s.j.Sync() }
func (s *busStore) replay(func(uint64, []byte)) error  { panic("bus: no replay") }

func (s *busStore) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := s.bus.Close(ctx)
	if jerr := s.j.Close(); err == nil {
		err = jerr
	}
	return err
}
