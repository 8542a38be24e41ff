// Package bench compares storage engines for the eventbus journal: the
// purpose-built segmented log (package journal), pebble and bbolt, on
// durable appends with 1, 8 and 64 producers, ack cost and replay speed,
// next to the device's fsync floor and the bus's own durable AddEvent on
// the log. It is its own module so pebble and bbolt never enter the root
// go.mod.
//
// Run by hand (not in CI), on an otherwise idle machine; run.sh prints the
// whole table and a summary against the fsync ceiling:
//
//	cd journal/bench && ./run.sh
package bench
