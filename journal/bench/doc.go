// Package bench compares storage engines for the eventbus journal: the
// purpose-built segmented log (package journal), pebble and bbolt, on
// durable appends with 1, 8 and 64 producers, ack cost and replay speed.
// It is its own module so pebble and bbolt never enter the root go.mod.
//
// Run by hand (not in CI), on an otherwise idle machine:
//
//	cd journal/bench && go test -run '^$' -bench . -benchtime 20000x -count 3
package bench
