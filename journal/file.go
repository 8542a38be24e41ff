package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// createSegment creates segment seq in dir with a header carrying the id
// reservation, atomically (written under a temporary name, fsync'd,
// renamed, directory fsync'd), and returns it open for appending, with
// the seed of its checksum chain. Errors name the segment, not the
// temporary file (which does not outlive the failure).
func createSegment(dir string, seq, reserved uint64) (*segment, *os.File, uint32, error) {
	path := filepath.Join(dir, segName(seq))
	tmp := path + ".tmp"
	f, err := openSegmentFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, nil, 0, segmentError(path, err)
	}
	fail := func(err error) (*segment, *os.File, uint32, error) {
		f.Close()
		os.Remove(tmp)
		return nil, nil, 0, segmentError(path, err)
	}
	hdr, seed := segHeader(reserved)
	if _, err := f.Write(hdr); err != nil {
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
		return nil, nil, 0, err
	}
	rf, err := os.Open(path)
	if err != nil {
		f.Close()
		return nil, nil, 0, segmentError(path, err)
	}
	return &segment{seq: seq, path: path, size: headerSize, rf: rf}, f, seed, nil
}

// openSegmentFile opens a new segment's file (a test makes it fail).
var openSegmentFile = os.OpenFile

// segmentError says that creating segment path failed, and why: an
// *os.PathError about the temporary file is reduced to its operation and
// cause ("write: no space left on device"), still matched by errors.Is.
func segmentError(path string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("create segment %s: %s: %w", path, pe.Op, pe.Err)
	}
	return fmt.Errorf("create segment %s: %w", path, err)
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
