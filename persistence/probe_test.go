//go:build linux

package persistence_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/persistence"
)

// TestProbeNeedsRoomForFailedCommit limits the size of files the process
// may write (RLIMIT_FSIZE; the Go runtime ignores the SIGXFSZ that comes
// with it), as a nearly full disk does: a small commit fits, a large one
// does not, and a probe after the large one fails until the file can take
// it. The limit holds for the whole process, so no test of this package
// may run in parallel with it.
func TestProbeNeedsRoomForFailedCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	db := MustOpenDB(t, path)
	require.NoError(t, db.Commit([]persistence.Op{{Key: "job\xffa", Group: group("a", 1)}}))
	require.NoError(t, db.Probe())

	var unlimited syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_FSIZE, &unlimited))
	setLimit := func(l syscall.Rlimit) { require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &l)) }
	t.Cleanup(func() { setLimit(unlimited) })
	fi, err := os.Stat(path)
	require.NoError(t, err)
	setLimit(syscall.Rlimit{Cur: uint64(fi.Size()) + 256<<10, Max: unlimited.Max})

	// A MiB does not fit.
	big := bigGroup("big", 2)
	commitBig := func() error { return db.Commit([]persistence.Op{{Key: "job\xffbig", Group: big}}) }
	require.ErrorContains(t, commitBig(), "file too large")
	require.ErrorContains(t, db.Probe(), "file too large", "no room for the failed commit")

	// A small commit fits, after which a probe is small again.
	require.NoError(t, db.Commit([]persistence.Op{{Key: "job\xffb", Group: group("b", 3)}}))
	require.NoError(t, db.Probe())

	require.ErrorContains(t, commitBig(), "file too large")
	require.Error(t, db.Probe())
	setLimit(unlimited)
	require.NoError(t, db.Probe())
	require.NoError(t, commitBig())
	require.Equal(t, []*persistence.Group{group("a", 1), group("b", 3), big}, loadAll(t, db))
}
