#!/usr/bin/env bash
# Renders this module's benchmark output (raw `go test -bench` output over
# >= 6 runs, the file benchstat reads) as a markdown table: scenario, peer,
# ns/event, CPU ns/event, allocs/op, events/s, ns/event relative to ours
# with a Mann-Whitney p-value, and the core-to-core round trip; then a
# second table by machine state. Peers that cannot take part in a scenario
# are listed with the reason their benchmark prints.
#
#   cd benchmarks
#   go test -run '^$' -bench . -benchmem -count 6 | tee new.txt
#   ./table.sh new.txt > table.md        # or: ./table.sh < new.txt
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go -C "$here" build -o "$bin/table" ./cmd/table
"$bin/table" "$@"
