package engine

import (
	_ "unsafe" // for go:linkname
)

// nanotime is the runtime's monotonic clock in nanoseconds: the reading
// time.Now takes for its monotonic part, without the wall clock. Workers
// time every run with it, so it must be cheap.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64
