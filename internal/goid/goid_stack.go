//go:build !((linux && amd64) || arm64) || purego

package goid

import "runtime"

// get parses the goroutine id from the first line of runtime.Stack,
// "goroutine 123 [running]:".
func get() int64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
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
