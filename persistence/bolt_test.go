package persistence_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/pushrelay/pushrelay/persistence"
)

// MustOpenDB opens a persistence file at path and closes it on cleanup
// (Close of an already closed DB is harmless).
func MustOpenDB(t *testing.T, path string) *persistence.DB {
	t.Helper()
	db, err := persistence.Open(path, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// loadAll returns every stored group in key order.
func loadAll(t *testing.T, db *persistence.DB) []*persistence.Group {
	t.Helper()
	var groups []*persistence.Group
	require.NoError(t, db.Load(func(g *persistence.Group) error {
		groups = append(groups, g)
		return nil
	}))
	return groups
}

// bigGroup returns a group whose record holds an incompressible MiB.
func bigGroup(job string, pushTime int64) *persistence.Group {
	g := group(job, pushTime)
	noise := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{}).Read(noise)
	g.Families[0].Metrics = [][]byte{noise}
	return g
}

func group(job string, pushTime int64) *persistence.Group {
	return &persistence.Group{
		Labels:   []persistence.Label{{Name: "job", Value: job}},
		PushTime: pushTime,
		Families: []persistence.Family{{Name: "m", HasHelp: true, Help: "h", Type: 1, Time: pushTime, Metrics: [][]byte{{1, 2, 3}}}},
	}
}

func TestOpenCreatesFileAndDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "pushrelay.db")
	db := MustOpenDB(t, path)
	require.Equal(t, path, db.Path())
	require.NoError(t, db.Probe())
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.Positive(t, db.Size())
	require.Equal(t, fi.Size(), db.Size(), "the size on disk")
	require.Empty(t, loadAll(t, db))
}

func TestCommitAndLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	db := MustOpenDB(t, path)

	require.NoError(t, db.Commit(nil), "no ops is a no-op")
	require.NoError(t, db.Commit([]persistence.Op{
		{Key: "job\xffb", Group: group("b", 2)},
		{Key: "job\xffa", Group: group("a", 1)},
		{Key: "job\xffc", Group: group("c", 3)},
	}))
	require.Equal(t, []*persistence.Group{group("a", 1), group("b", 2), group("c", 3)}, loadAll(t, db), "groups load in key order")

	require.NoError(t, db.Commit([]persistence.Op{
		{Key: "job\xffb"},                       // delete
		{Key: "job\xffc", Group: group("c", 4)}, // replace
		{Key: "job\xffd", Group: group("d", 5)},
		{Key: "job\xffd", Group: group("d", 6)}, // a later op for the same key wins
		{Key: "job\xffe", Group: group("e", 7)},
		{Key: "job\xffe"},
		{Key: "job\xffnever"}, // deleting a missing key is fine
	}))
	want := []*persistence.Group{group("a", 1), group("c", 4), group("d", 6)}
	require.Equal(t, want, loadAll(t, db))

	require.NoError(t, db.Close())
	db = MustOpenDB(t, path)
	require.Equal(t, want, loadAll(t, db), "committed groups survive a reopen")
}

func TestLoadStopsAtCallbackError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	db := MustOpenDB(t, path)
	require.NoError(t, db.Commit([]persistence.Op{{Key: "a", Group: group("a", 1)}, {Key: "b", Group: group("b", 2)}}))
	stop := errors.New("stop here")
	calls := 0
	err := db.Load(func(*persistence.Group) error {
		calls++
		return stop
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, calls)
	require.Contains(t, err.Error(), path)
	require.Contains(t, err.Error(), `group "a"`)
}

// TestOpenTruncatedFile cuts a file short, as a copy onto a full disk
// does: Open fails with an error naming the file and leaves it as it was,
// where bbolt alone faults (SIGBUS) while it maps the missing pages.
func TestOpenTruncatedFile(t *testing.T) {
	src := filepath.Join(t.TempDir(), "p.db")
	db := MustOpenDB(t, src)
	var ops []persistence.Op
	for i := range 300 {
		g := group(fmt.Sprintf("j%03d", i), int64(i))
		g.Families[0].Metrics = [][]byte{bytes.Repeat([]byte{byte(i)}, 2048)}
		ops = append(ops, persistence.Op{Key: "job\xff" + g.Labels[0].Value, Group: g})
	}
	require.NoError(t, db.Commit(ops))
	require.NoError(t, db.Close())
	whole, err := os.ReadFile(src)
	require.NoError(t, err)
	for name, size := range map[string]int{"three pages": 3 * os.Getpagesize(), "half": len(whole) / 2} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.db")
			require.NoError(t, os.WriteFile(path, whole[:size], 0o600))
			_, err := persistence.Open(path, nil)
			require.Error(t, err)
			require.Contains(t, err.Error(), path)
			require.Contains(t, err.Error(), fmt.Sprintf("file is truncated: %d bytes", size))
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, whole[:size], after, "the file is left as it was")
		})
	}
	db = MustOpenDB(t, src)
	require.Len(t, loadAll(t, db), 300, "the whole file opens")
}

// TestLoadCorruptRecord writes a bad record with bbolt directly: Load fails
// with ErrCorruptRecord, naming the file and the key.
func TestLoadCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	db := MustOpenDB(t, path)
	require.NoError(t, db.Commit([]persistence.Op{{Key: "a", Group: group("a", 1)}}))
	require.NoError(t, db.Close())

	bdb, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, bdb.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("groups")).Put([]byte("job\xffbad"), []byte{1, 9})
	}))
	require.NoError(t, bdb.Close())

	db = MustOpenDB(t, path)
	err = db.Load(func(*persistence.Group) error { return nil })
	require.ErrorIs(t, err, persistence.ErrCorruptRecord)
	require.EqualError(t, err, `persistence file "`+path+`", group "job\xffbad": corrupt group record: length exceeds record`)
}

// TestOpenForeignFile opens files that are not pushrelay's: Open fails with
// an error naming the file and leaves the file exactly as it was.
func TestOpenForeignFile(t *testing.T) {
	scenarios := map[string]struct {
		content []byte
		err     string
	}{
		"text file":      {content: []byte("this is not a bbolt file\n"), err: "invalid database"},
		"zeros":          {content: make([]byte, 8192), err: "invalid database"},
		"truncated page": {content: []byte{0xed, 0xda, 0x0c, 0xed}, err: "invalid database"},
	}
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "foreign.db")
			require.NoError(t, os.WriteFile(path, s.content, 0o640))
			before, err := os.Stat(path)
			require.NoError(t, err)

			db, err := persistence.Open(path, nil)
			require.Error(t, err)
			require.Nil(t, db)
			require.Contains(t, err.Error(), `"`+path+`"`)
			require.Contains(t, err.Error(), s.err)

			after, err := os.Stat(path)
			require.NoError(t, err)
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, s.content, got, "the file must be left unchanged")
			require.Equal(t, before.Mode(), after.Mode())
			require.Equal(t, before.ModTime(), after.ModTime())
		})
	}
}

// writeBolt creates a bbolt file and lets fn shape its buckets.
func writeBolt(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, bdb.Update(fn))
	require.NoError(t, bdb.Close())
}

func TestOpenSchema(t *testing.T) {
	scenarios := map[string]struct {
		fn  func(tx *bolt.Tx) error
		err string
	}{
		"newer schema version": {
			fn: func(tx *bolt.Tx) error {
				b, _ := tx.CreateBucket([]byte("meta"))
				return b.Put([]byte("schema"), []byte("3"))
			},
			err: "schema version 3 is not supported (want 2)",
		},
		"invalid schema version": {
			fn: func(tx *bolt.Tx) error {
				b, _ := tx.CreateBucket([]byte("meta"))
				return b.Put([]byte("schema"), []byte("v1"))
			},
			err: `invalid schema version "v1"`,
		},
		"missing schema version": {
			fn: func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("meta"))
				return err
			},
			err: `invalid schema version ""`,
		},
		"groups without meta": {
			fn: func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("groups"))
				return err
			},
			err: "groups bucket without schema version",
		},
	}
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.db")
			writeBolt(t, path, s.fn)
			db, err := persistence.Open(path, nil)
			require.Nil(t, db)
			require.EqualError(t, err, `cannot use persistence file "`+path+`": `+s.err)

			// The file is closed again: bbolt can open it at once.
			bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
			require.NoError(t, err)
			require.NoError(t, bdb.Close())
		})
	}
	t.Run("current schema in a file written by bbolt", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "p.db")
		writeBolt(t, path, func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucket([]byte("meta"))
			return b.Put([]byte("schema"), []byte("2"))
		})
		db := MustOpenDB(t, path)
		require.Empty(t, loadAll(t, db))
	})
	t.Run("version 1 file is upgraded with its groups", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "p.db")
		writeBolt(t, path, func(tx *bolt.Tx) error {
			meta, _ := tx.CreateBucket([]byte("meta"))
			groups, _ := tx.CreateBucket([]byte("groups"))
			if err := groups.Put([]byte("job\xffa"), persistence.EncodeGroup(nil, group("a", 1))); err != nil {
				return err
			}
			return meta.Put([]byte("schema"), []byte("1"))
		})
		db := MustOpenDB(t, path)
		require.Equal(t, []*persistence.Group{group("a", 1)}, loadAll(t, db))
		require.NoError(t, db.Commit([]persistence.Op{{Key: "job\xffb", Group: group("b", 2)}}))
		require.NoError(t, db.Close())
		bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
		require.NoError(t, err)
		defer bdb.Close()
		require.NoError(t, bdb.View(func(tx *bolt.Tx) error {
			require.Equal(t, "2", string(tx.Bucket([]byte("meta")).Get([]byte("schema"))))
			require.NotNil(t, tx.Bucket([]byte("log")))
			return nil
		}))
	})
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	first := MustOpenDB(t, path)
	require.NoError(t, first.Commit([]persistence.Op{{Key: "a", Group: group("a", 1)}}))

	db, err := persistence.Open(path, nil)
	require.Nil(t, db)
	require.ErrorIs(t, err, persistence.ErrLocked)
	require.True(t, strings.Contains(err.Error(), path), err.Error())

	require.NoError(t, first.Close())
	db = MustOpenDB(t, path)
	require.Equal(t, []*persistence.Group{group("a", 1)}, loadAll(t, db), "the locked-out Open changed nothing")
}

func TestOpenUncreatableDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	path := filepath.Join(file, "sub", "p.db")
	db, err := persistence.Open(path, nil)
	require.Nil(t, db)
	require.ErrorContains(t, err, `cannot create directory for persistence file "`+path+`"`)
}

func TestCommitAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	db := MustOpenDB(t, path)
	require.NoError(t, db.Close())
	err := db.Commit([]persistence.Op{{Key: "a", Group: group("a", 1)}})
	require.ErrorIs(t, err, berrors.ErrDatabaseNotOpen)
	require.ErrorContains(t, err, path)
}
