package journal_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/imbus/eventbus/journal"
)

// TestDiskFullErrorNamesTheSegment makes the creation of the second
// segment hit a full disk (its file writes to /dev/full): the error the
// journal stops with names that segment, not the temporary file it is
// created under, and is ENOSPC; no temporary file is left behind.
func TestDiskFullErrorNamesTheSegment(t *testing.T) {
	dir := t.TempDir()
	second := filepath.Join(dir, "0000000000000002.seg")
	restore := journal.SetOpenSegmentFile(func(name string, flag int, perm os.FileMode) (*os.File, error) {
		if !strings.HasPrefix(name, second) {
			return os.OpenFile(name, flag, perm)
		}
		f, err := os.OpenFile(name, flag, perm) // the file exists, as on a full disk
		if err != nil {
			return nil, err
		}
		f.Close()
		fd, err := syscall.Open("/dev/full", syscall.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), name), nil // writes fail with ENOSPC
	})
	defer restore()
	j := open(t, dir, journal.WithSegmentSize(4<<10))
	var err error
	for i := 0; err == nil; i++ {
		require.Less(t, i, 1000, "the segment fills up")
		_, err = j.Append(journal.Record{Payload: make([]byte, 256)})
	}
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Contains(t, err.Error(), second+":")
	require.NotContains(t, err.Error(), ".tmp")
	require.ErrorIs(t, j.Close(), syscall.ENOSPC)
	left, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
	require.Empty(t, left)
}
