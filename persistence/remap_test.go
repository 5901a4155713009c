package persistence_test

import (
	"errors"
	"math/rand/v2"
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
// to map it anew, after which bbolt refuses every transaction. The next
// write reopens the file, and a restart restores what was committed, not
// what failed.
func TestReopenAfterLostMapping(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	var (
		mu      sync.Mutex
		files   []*os.File
		openErr error
	)
	setOpenErr := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		openErr = err
	}
	db, err := persistence.OpenWithOpenFile(path, func(name string, flag int, perm os.FileMode) (*os.File, error) {
		mu.Lock()
		defer mu.Unlock()
		if openErr != nil {
			return nil, openErr
		}
		f, err := os.OpenFile(name, flag, perm)
		if err == nil {
			files = append(files, f)
		}
		return f, err
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	commit := func(job string, pushTime int64) error {
		return db.Commit([]persistence.Op{{Key: "job\xff" + job, Group: group(job, pushTime)}})
	}
	require.NoError(t, commit("a", 1))

	// bbolt's descriptor becomes one opened write-only on the same file:
	// writing and syncing work, mapping the file fails with EACCES.
	wo, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	require.NoError(t, syscall.Dup3(int(wo.Fd()), int(files[0].Fd()), 0))
	require.NoError(t, wo.Close())
	// A MiB outgrows the mapping.
	err = db.Commit([]persistence.Op{{Key: "job\xffbig", Group: bigGroup("big", 2)}})
	require.ErrorContains(t, err, "mmap allocate error: permission denied")
	require.NotErrorIs(t, err, persistence.ErrUnsynced)

	// While the file cannot be opened again, writes fail and say so.
	setOpenErr(errors.New("injected open failure"))
	err = commit("b", 3)
	require.ErrorContains(t, err, `cannot commit to persistence file "`+path+`": database isn't correctly mapped; reopening the file failed: injected open failure`)
	require.ErrorContains(t, db.Probe(), "injected open failure")

	// Once it can, the next write reopens it and succeeds.
	setOpenErr(nil)
	require.NoError(t, commit("c", 4))
	require.NoError(t, db.Probe())
	want := []*persistence.Group{group("a", 1), group("c", 4)}
	require.Equal(t, want, loadAll(t, db))
	require.NoError(t, db.Close())
	require.Equal(t, want, loadAll(t, MustOpenDB(t, path)), "a restart restores the commits that succeeded")
}

// bigGroup returns a group whose record holds an incompressible MiB.
func bigGroup(job string, pushTime int64) *persistence.Group {
	g := group(job, pushTime)
	noise := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{}).Read(noise)
	g.Families[0].Metrics = [][]byte{noise}
	return g
}
