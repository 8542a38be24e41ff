//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package journal

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// Without flock the lock only covers this process.
var (
	lockMu sync.Mutex
	locked = map[string]bool{}
)

func lockDir(dir string) (*os.File, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("journal: lock %s: %w", dir, err)
	}
	lockMu.Lock()
	defer lockMu.Unlock()
	if locked[abs] {
		return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
	}
	f, err := os.OpenFile(filepath.Join(abs, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("journal: lock %s: %w", dir, err)
	}
	locked[abs] = true
	return f, nil
}

func unlockDir(f *os.File) {
	lockMu.Lock()
	delete(locked, filepath.Dir(f.Name()))
	lockMu.Unlock()
	f.Close()
}

// Some systems cannot fsync a directory.
func ignoreDirSyncError(error) bool { return true }
