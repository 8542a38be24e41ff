// Package goid tells goroutines apart. The bus uses it to recognise its
// own worker goroutines (an add from a handler that must not wait, a
// WaitIdle or Close called from a handler): Get is compared with the
// values workers recorded, never interpreted.
package goid

// Get returns an identity of the calling goroutine: not 0, the same for
// as long as the goroutine runs, and different from that of every other
// goroutine running at the same time (a goroutine that has exited may
// pass its identity on, so whoever records one must drop it before the
// goroutine ends). 0 means it could not be read: callers must treat 0 as
// unknown and never match it.
//
// On linux/amd64 and on arm64 it is the address of the runtime's
// goroutine descriptor, read in two instructions; elsewhere (and with the
// purego build tag) it is the goroutine id parsed from runtime.Stack, a
// thousand times slower.
func Get() int64 { return get() }
