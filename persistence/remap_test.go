//go:build linux

package persistence_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/persistence"
)

// TestReopenAfterLostMapping breaks bbolt's mapping of the file the way a
// file system turned read-only does: the commit that grows the file fails
// to map it anew, after which bbolt refuses every transaction. pushrelay
// reopens the file, but only the one it opened, and a restart restores
// what was committed, not what failed.
func TestReopenAfterLostMapping(t *testing.T) {
	path, o, db := openWithOpener(t)
	commit := func(job string, pushTime int64) error {
		return db.Commit([]persistence.Op{{Key: "job\xff" + job, Group: group(job, pushTime)}})
	}
	require.NoError(t, commit("a", 1))

	breakMapping(t, o.first)
	o.fail(errors.New("injected open failure"))
	// A MiB outgrows the mapping.
	err := db.Commit([]persistence.Op{{Key: "job\xffbig", Group: bigGroup("big", 2)}})
	require.ErrorContains(t, err, `cannot commit to persistence file "`+path+`": mmap allocate error: permission denied`)
	require.NotErrorIs(t, err, persistence.ErrUnsynced)

	// While the file cannot be opened again, writes fail and say so.
	const lost = "bbolt lost its mapping of the file, and reopening it failed: "
	for range 2 {
		require.ErrorContains(t, commit("b", 3), lost+"injected open failure")
	}
	require.ErrorContains(t, db.Probe(), lost+"injected open failure")
	o.fail(nil)

	// A file that is gone is not created, and another one in its place,
	// or the same one emptied, is not taken.
	moved := path + ".moved"
	require.NoError(t, os.Rename(path, moved))
	require.ErrorContains(t, commit("b", 3), lost+"open "+path+": no such file or directory")
	require.NoFileExists(t, path)
	other, err := persistence.Open(path, nil)
	require.NoError(t, err)
	require.NoError(t, other.Close())
	require.ErrorContains(t, commit("b", 3), lost+"another file took its place; restart pushrelay to use that one")
	require.NoError(t, os.Rename(moved, path))

	// Once the file is back, the next write reopens it and succeeds.
	require.NoError(t, commit("c", 4))
	require.NoError(t, db.Probe())
	want := []*persistence.Group{group("a", 1), group("c", 4)}
	require.Equal(t, want, loadAll(t, db))
	require.NoError(t, db.Close())
	require.Equal(t, want, loadAll(t, MustOpenDB(t, path)), "a restart restores the commits that succeeded")
}

// TestReopenRefusesEmptiedFile empties the file while bbolt has lost its
// mapping of it: bbolt would make a new database of it, without
// pushrelay's buckets.
func TestReopenRefusesEmptiedFile(t *testing.T) {
	path, o, db := openWithOpener(t)
	require.NoError(t, db.Commit([]persistence.Op{{Key: "job\xffa", Group: group("a", 1)}}))
	breakMapping(t, o.first)
	o.fail(errors.New("injected open failure"))
	require.Error(t, db.Commit([]persistence.Op{{Key: "job\xffbig", Group: bigGroup("big", 2)}}))

	require.NoError(t, os.Truncate(path, 0))
	o.fail(nil)
	err := db.Commit([]persistence.Op{{Key: "job\xffb", Group: group("b", 3)}})
	require.ErrorContains(t, err, "bbolt lost its mapping of the file, and reopening it failed: the file was emptied")
}

// openWithOpener opens a new file through an opener, and returns its path,
// the opener and the DB, which is closed when t ends.
func openWithOpener(t *testing.T) (string, *opener, *persistence.DB) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "p.db")
	o := new(opener)
	db, err := persistence.OpenWithOpenFile(path, o.open)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return path, o, db
}

// opener opens files for bbolt and keeps the first; while err is set, it
// fails with it instead.
type opener struct {
	mu    sync.Mutex
	first *os.File
	err   error
}

func (o *opener) open(name string, flag int, perm os.FileMode) (*os.File, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return nil, o.err
	}
	f, err := os.OpenFile(name, flag, perm)
	if o.first == nil {
		o.first = f
	}
	return f, err
}

// fail makes later opens fail with err, or succeed again when it is nil.
func (o *opener) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.err = err
}

// breakMapping makes bbolt's descriptor f of the file one opened write-only
// on it: writing and syncing go on, mapping the file anew fails with
// EACCES.
func breakMapping(t *testing.T, f *os.File) {
	t.Helper()
	wo, err := os.OpenFile(f.Name(), os.O_WRONLY, 0)
	require.NoError(t, err)
	require.NoError(t, syscall.Dup3(int(wo.Fd()), int(f.Fd()), 0))
	require.NoError(t, wo.Close())
}
