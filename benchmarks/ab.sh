#!/usr/bin/env bash
# Compares two builds of this module's benchmarks (an engine change: the
# test binary before and after it) in interleaved runs, and prints
# benchstat's verdict on ns/event and cpu-ns/event three ways: with one
# processor (the CPU an event costs; the host's placement of the vCPUs
# plays no part), and with two, split by the core-to-core round trip each
# run measured (near: below 250 ns; far: 250 ns or more). A change is
# worth keeping when the first is better and neither of the others worse.
#
#   cd benchmarks && go test -c -o /tmp/new.test .
#   (git worktree add /tmp/old HEAD~1 && cd /tmp/old/benchmarks && go test -c -o /tmp/old.test .)
#   ./ab.sh /tmp/old.test /tmp/new.test 8 '(SingleKey|Keys100k|Producers8|FullFlow)/peer=ours$'
#
# Needs benchstat (go install golang.org/x/perf/cmd/benchstat@latest). The
# raw runs stay in the directory it prints.
set -euo pipefail
if [ $# -ne 4 ]; then
	echo "usage: $0 OLD.test NEW.test ROUNDS BENCH-REGEXP" >&2
	exit 2
fi
old=$1 new=$2 rounds=$3 re=$4
benchstat=$(command -v benchstat || echo "$(go env GOPATH)/bin/benchstat")
out=$(mktemp -d)
table=$out/table
(cd "$(dirname "$0")" && go build -o "$table" ./cmd/table)
for _ in $(seq "$rounds"); do
	for side in old new; do
		bin=$old
		[ "$side" = new ] && bin=$new
		"$bin" -test.run '^$' -test.bench "$re" -test.benchmem -test.cpu 1,2 | grep '^Benchmark' >> "$out/$side.txt"
	done
done
for side in old new; do
	# One processor, near, far: cmd/table's split (see its -split flag).
	"$table" -split "$out/$side" "$out/$side.txt"
	if [ -s "$out/$side.unsplit" ]; then
		echo "note: $side has runs with two processors and no c2c-ns, left out: $out/$side.unsplit"
	fi
done
for set in 1cpu near far; do
	for unit in ns/event cpu-ns/event; do
		echo "== $set, $unit"
		if [ -s "$out/old.$set" ] && [ -s "$out/new.$set" ]; then
			"$benchstat" -filter ".unit:$unit" "old=$out/old.$set" "new=$out/new.$set"
		else
			echo "(no runs in this state on one side)"
		fi
	done
done
echo "raw runs: $out"
