//go:build ((linux && amd64) || arm64) && !purego

package goid

// getg returns the calling goroutine's descriptor address (goid_*.s).
func getg() uintptr

func get() int64 { return int64(getg()) }
