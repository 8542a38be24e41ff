//go:build unix

package benchmarks

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time the process has used so far, user and
// system, over all its threads; ok is false where it cannot be read.
func processCPU() (cpu time.Duration, ok bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
