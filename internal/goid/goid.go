// Package goid reads the current goroutine's id. It is used only off the hot
// path (worker start, Close) to tell whether a call comes from a bus worker.
package goid

import "runtime"

// Get returns the id of the calling goroutine, or 0 if it cannot be read.
// No goroutine has id 0: callers must treat 0 as unknown, never match it
// (a worker that is not running also records 0).
func Get() int64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	// The stack starts with "goroutine 123 [running]:".
	b := buf[:n]
	const prefix = "goroutine "
	if len(b) < len(prefix) {
		return 0
	}
	var id int64
	for _, c := range b[len(prefix):] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + int64(c-'0')
	}
	return id
}
