#!/bin/sh
# The storage comparison of journal/README.md. Run by hand from this
# directory, ideally on a machine nobody else is using; about 10 minutes.
# BenchmarkFsync (one 8 KiB write + fdatasync) is the device's floor,
# measured before and after the others.
set -e
go test -run '^$' -bench 'Fsync' -benchtime 2000x .
go test -run '^$' -bench 'Append' -benchtime 20000x -count "${COUNT:-1}" .
go test -run '^$' -bench 'Ack' -benchtime 200000x -count "${COUNT:-1}" .
go test -run '^$' -bench 'Replay' -benchtime 3x -count "${COUNT:-1}" .
go test -run '^$' -bench 'Fsync' -benchtime 2000x .
