package journal

import "os"

// SetOpenSegmentFile replaces how new segment files are opened, until the
// returned function restores it. Not safe while a journal is open.
func SetOpenSegmentFile(f func(name string, flag int, perm os.FileMode) (*os.File, error)) (restore func()) {
	old := openSegmentFile
	openSegmentFile = f
	return func() { openSegmentFile = old }
}
