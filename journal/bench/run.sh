#!/bin/sh
# The storage comparison of journal/README.md. Run by hand from this
# directory on a machine nobody else is using; it takes about 10 minutes.
set -e
go test -run '^$' -bench 'Append' -benchtime 20000x -count "${COUNT:-1}" .
go test -run '^$' -bench 'Ack' -benchtime 200000x -count "${COUNT:-1}" .
go test -run '^$' -bench 'Replay' -benchtime 3x -count "${COUNT:-1}" .
