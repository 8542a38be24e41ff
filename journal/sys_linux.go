package journal

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data (and its size), not the other metadata.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
