package journal

import (
	"fmt"
	"os"
	"path/filepath"
)

// createSegment creates segment seq in dir with a header carrying the id
// reservation, atomically (written under a temporary name, fsync'd,
// renamed, directory fsync'd), and returns it open for appending.
func createSegment(dir string, seq, reserved uint64) (*segment, *os.File, error) {
	path := filepath.Join(dir, segName(seq))
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("create segment: %w", err)
	}
	fail := func(err error) (*segment, *os.File, error) {
		f.Close()
		os.Remove(tmp)
		return nil, nil, fmt.Errorf("create segment %s: %w", path, err)
	}
	if _, err := f.Write(segHeader(reserved)); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, nil, err
	}
	rf, err := os.Open(path)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("create segment %s: %w", path, err)
	}
	return &segment{seq: seq, path: path, size: headerSize, rf: rf}, f, nil
}

// syncDir makes the directory's entries (created, renamed, removed files)
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !ignoreDirSyncError(err) {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
