package journal_test

import (
	"fmt"
	"log"
	"os"

	"github.com/imbus/eventbus/journal"
)

// A process appends records, acks one and gives up on another; the next
// process replays what is left and finds the dead letter.
func Example() {
	dir, err := os.MkdirTemp("", "journal-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	j, err := journal.Open(dir)
	if err != nil {
		log.Fatal(err)
	}
	first, err := j.Append( // returns once on disk
		journal.Record{Type: 11, Key: 1, Payload: []byte("store m1")},
		journal.Record{Type: 11, Key: 1, Payload: []byte("store m2")},
		journal.Record{Type: 21, Key: 2, Payload: []byte("push m1")},
	)
	if err != nil {
		log.Fatal(err)
	}
	j.Ack(first) // handled
	j.DeadLetter(journal.DeadLetter{Record: journal.Record{ID: first + 2, Attempts: 3},
		Handler: "offline-push", Err: "gateway down"})
	j.Close()

	j, err = journal.Open(dir) // after a restart (or a crash)
	if err != nil {
		log.Fatal(err)
	}
	defer j.Close()
	j.Replay(func(r journal.Record) error {
		fmt.Printf("replay %d: %s\n", r.ID-first, r.Payload)
		return nil
	})
	dls, _ := j.DeadLetters()
	for _, d := range dls {
		fmt.Printf("dead %d: %s (%s after %d attempts: %s)\n", d.ID-first, d.Payload, d.Handler, d.Attempts, d.Err)
	}
	// Output:
	// replay 1: store m2
	// dead 2: push m1 (offline-push after 3 attempts: gateway down)
}
