#!/bin/sh
# The storage comparison of journal/README.md, in one run: the fsync floor,
# durable appends (log, pebble, bbolt, and the bus's durable AddEvent on
# the log) at 1, 8 and 64 producers, acks, replay, the floor again; then a
# summary of the 64-producer figures against the fsync ceiling (64 ÷ the
# mean write+fdatasync time, over every floor measured). The 64-producer
# appends run ROUNDS times (default 4), the four stores one after the other
# in each round, in an order rotated from round to round (what runs just
# before a store, and the disk's drift, weigh on all of them alike), with
# the floor measured between rounds; the summary averages the rounds. Run by hand from this directory, ideally on a machine nobody else
# is using; 15-25 minutes. SKIP_SLOW=1 runs only the floor and the
# 64-producer rounds. The floor with a preallocated file:
# go test -run '^$' -bench FsyncPrealloc -benchtime 2000x .
set -e
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -c -o "$out.test" .
trap 'rm -f "$out" "$out.test"' EXIT
b() { "$out.test" -test.run '^$' -test.bench "$@" | grep '^Benchmark' | tee -a "$out"; }
b 'Fsync$' -test.benchtime 1000x
stores="log pebble bbolt bus"
for _ in $(seq "${ROUNDS:-4}"); do
	for s in $stores; do
		b "Append/$s/producers=64\$" -test.benchtime 20000x
	done
	b 'Fsync$' -test.benchtime 1000x
	stores="${stores#* } ${stores%% *}" # rotate: each store takes each place in turn
done
if [ -z "$SKIP_SLOW" ]; then
	b 'Append/.*/producers=(1|8)$' -test.benchtime 20000x
	b 'Ack' -test.benchtime 200000x
	b 'Replay' -test.benchtime 3x
	b 'Fsync$' -test.benchtime 1000x
fi
awk '
function metric(unit,   i) { for (i = 3; i < NF; i++) if ($(i+1) == unit) return $i; return "" }
/^BenchmarkFsync-/ { f += metric("mean-µs"); nf++ }
/^BenchmarkAppend\/.*\/producers=64-/ {
	split($1, p, "/"); s = p[2]; rate[s] += metric("rec/s"); p99[s] += metric("p99-µs"); n[s]++
}
END {
	if (nf == 0) exit
	f /= nf; ceil = 64 / (f / 1e6)
	printf "\nfsync mean %.0f µs (%d floors); ceiling at 64 producers %.0f/s\n", f, nf, ceil
	printf "%-7s %10s %9s %8s %9s %12s\n", "store", "rec/s", "ceiling", "÷ log", "÷ pebble", "p99 ÷ fsync"
	for (s in n) {
		r = rate[s] / n[s]
		printf "%-7s %10.0f %9.2f %8.2f %9.2f %12.1f\n", s, r, r / ceil,
			(n["log"] ? r / (rate["log"] / n["log"]) : 0), (n["pebble"] ? r / (rate["pebble"] / n["pebble"]) : 0),
			p99[s] / n[s] / f
	}
}' "$out"
