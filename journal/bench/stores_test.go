package bench

import (
	"encoding/binary"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/imbus/eventbus/journal"
)

// store is what the benchmarks ask of a candidate: a durable append that
// returns the record's id once it is fsync'd, a batched ack (durability
// not awaited), a sync, and a replay of what is not acked.
type store interface {
	append(payload []byte) (uint64, error)
	// bulk appends n records in one durable write (to fill a store fast).
	bulk(n int, payload []byte) ([]uint64, error)
	ack(ids []uint64) error
	sync() error
	replay(fn func(id uint64, payload []byte)) error
	close() error
}

type opener struct {
	name string
	open func(dir string) (store, error)
}

var stores = []opener{
	{"log", openLog},
	{"pebble", openPebble},
	{"bbolt", openBolt},
}

// ---- the purpose-built log (package journal) ----

type logStore struct{ j *journal.Journal }

func openLog(dir string) (store, error) {
	j, err := journal.Open(dir, journal.WithLogger(slog.New(slog.DiscardHandler)))
	return &logStore{j}, err
}

func (s *logStore) append(p []byte) (uint64, error) {
	return s.j.Append(journal.Record{Type: 11, Key: 42, Payload: p})
}
func (s *logStore) bulk(n int, p []byte) ([]uint64, error) {
	recs := make([]journal.Record, n)
	for i := range recs {
		recs[i] = journal.Record{Type: 11, Key: 42, Payload: p}
	}
	first, err := s.j.Append(recs...)
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = first + uint64(i)
	}
	return ids, err
}

func (s *logStore) ack(ids []uint64) error { return s.j.Ack(ids...) }
func (s *logStore) sync() error            { return s.j.Sync() }
func (s *logStore) close() error           { return s.j.Close() }
func (s *logStore) replay(fn func(uint64, []byte)) error {
	return s.j.Replay(func(r journal.Record) error { fn(r.ID, r.Payload); return nil })
}

// ---- pebble: one key per record, Set with Sync (pebble's WAL does the
// group commit), acks as deletes in a NoSync batch ----

type pebbleStore struct {
	db  *pebble.DB
	seq atomicCounter
}

func openPebble(dir string) (store, error) {
	db, err := pebble.Open(filepath.Join(dir, "pebble"), &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		return nil, err
	}
	s := &pebbleStore{db: db}
	it, err := db.NewIter(nil)
	if err != nil {
		return nil, err
	}
	if it.Last() {
		s.seq.set(binary.BigEndian.Uint64(it.Key()))
	}
	return s, it.Close()
}

func (s *pebbleStore) append(p []byte) (uint64, error) {
	id := s.seq.next()
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], id)
	return id, s.db.Set(k[:], p, pebble.Sync)
}

func (s *pebbleStore) bulk(n int, p []byte) ([]uint64, error) {
	b := s.db.NewBatch()
	ids := make([]uint64, n)
	var k [8]byte
	for i := range ids {
		ids[i] = s.seq.next()
		binary.BigEndian.PutUint64(k[:], ids[i])
		b.Set(k[:], p, nil)
	}
	return ids, b.Commit(pebble.Sync)
}

func (s *pebbleStore) ack(ids []uint64) error {
	b := s.db.NewBatch()
	var k [8]byte
	for _, id := range ids {
		binary.BigEndian.PutUint64(k[:], id)
		b.Delete(k[:], nil)
	}
	return b.Commit(pebble.NoSync)
}

func (s *pebbleStore) sync() error  { return s.db.LogData(nil, pebble.Sync) }
func (s *pebbleStore) close() error { return s.db.Close() }

func (s *pebbleStore) replay(fn func(uint64, []byte)) error {
	it, err := s.db.NewIter(nil)
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		fn(binary.BigEndian.Uint64(it.Key()), it.Value())
	}
	return it.Close()
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(format)
}

// ---- bbolt: one key per record, DB.Batch (bbolt's group commit) with a
// 1 ms batch delay (the default 10 ms is far slower here), acks as deletes
// in one Update per call ----

type boltStore struct {
	db *bolt.DB
}

var bucket = []byte("events")

func openBolt(dir string) (store, error) {
	db, err := bolt.Open(filepath.Join(dir, "bolt.db"), 0o644, nil)
	if err != nil {
		return nil, err
	}
	db.MaxBatchDelay = time.Millisecond
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	})
	return &boltStore{db}, err
}

func (s *boltStore) append(p []byte) (uint64, error) {
	var id uint64
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		var err error
		id, err = b.NextSequence()
		if err != nil {
			return err
		}
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], id)
		return b.Put(k[:], p)
	})
	return id, err
}

func (s *boltStore) bulk(n int, p []byte) ([]uint64, error) {
	ids := make([]uint64, n)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		var k [8]byte
		for i := range ids {
			id, err := b.NextSequence()
			if err != nil {
				return err
			}
			ids[i] = id
			binary.BigEndian.PutUint64(k[:], id)
			if err := b.Put(k[:], p); err != nil {
				return err
			}
		}
		return nil
	})
	return ids, err
}

func (s *boltStore) ack(ids []uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		var k [8]byte
		for _, id := range ids {
			binary.BigEndian.PutUint64(k[:], id)
			if err := b.Delete(k[:]); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltStore) sync() error  { return nil } // every Update is fsync'd
func (s *boltStore) close() error { return s.db.Close() }

func (s *boltStore) replay(fn func(uint64, []byte)) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			fn(binary.BigEndian.Uint64(k), v)
			return nil
		})
	})
}
