// Package goid reads the current goroutine's id. It is used only off the hot
// path (worker start, Close) to tell whether a call comes from a bus worker.
package goid

import (
	"runtime"
	"strconv"
)

// Get returns the id of the calling goroutine, or 0 if it cannot be read.
func Get() int64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	// The stack starts with "goroutine 123 [running]:".
	b := buf[:n]
	const prefix = "goroutine "
	if len(b) < len(prefix) {
		return 0
	}
	b = b[len(prefix):]
	end := 0
	for end < len(b) && b[end] >= '0' && b[end] <= '9' {
		end++
	}
	id, err := strconv.ParseInt(string(b[:end]), 10, 64)
	if err != nil {
		return 0
	}
	return id
}
