package persistence

import "os"

// CompactThreshold exposes compactThreshold to the external tests.
func (d *DB) CompactThreshold() int64 { return d.compactThreshold() }

// OpenWithOpenFile opens path as Open does, with openFile opening the file
// for bbolt, so that tests can inject faults.
func OpenWithOpenFile(path string, openFile func(string, int, os.FileMode) (*os.File, error)) (*DB, error) {
	return Open(path, &Options{openFile: openFile})
}
