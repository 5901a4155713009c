package persistence_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/pushrelay/pushrelay/persistence"
)

// copyFile copies the file of an open DB, as the file would be found after
// the process was killed: every commit is in it, the log not compacted.
func copyFile(t *testing.T, from string) string {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	to := filepath.Join(t.TempDir(), "copy.db")
	require.NoError(t, os.WriteFile(to, b, 0o600))
	return to
}

func TestLogFoldedByOpenAfterCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	db := MustOpenDB(t, path)
	require.NoError(t, db.Commit([]persistence.Op{{Key: "job\xffa", Group: group("a", 1)}, {Key: "job\xffb", Group: group("b", 2)}}))
	require.NoError(t, db.Compact())
	require.Zero(t, db.LogBytes())
	require.NoError(t, db.Commit([]persistence.Op{{Key: "job\xffa"}, {Key: "job\xffc", Group: group("c", 3)}}))
	require.NoError(t, db.Commit([]persistence.Op{{Key: "job\xffb", Group: group("b", 4)}}))
	require.Positive(t, db.LogBytes(), "the commits are in the log")
	want := []*persistence.Group{group("b", 4), group("c", 3)}
	require.Equal(t, want, loadAll(t, db), "Load sees the log")

	crashed := copyFile(t, path)
	reopened := MustOpenDB(t, crashed)
	require.Zero(t, reopened.LogBytes(), "Open folds the log")
	require.Equal(t, want, loadAll(t, reopened))
	require.NoError(t, reopened.Close())
	reopened = MustOpenDB(t, crashed)
	require.Equal(t, want, loadAll(t, reopened))
}

func TestCompactManyGroups(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	db := MustOpenDB(t, path)
	var want []*persistence.Group
	for i := range 700 {
		require.NoError(t, db.Commit([]persistence.Op{{Key: fmt.Sprintf("job\xff%04d", i), Group: group(fmt.Sprintf("%04d", i), int64(i))}}))
	}
	// Deletes and rewrites after the first versions, in one batch.
	var ops []persistence.Op
	for i := range 700 {
		key := fmt.Sprintf("job\xff%04d", i)
		switch i % 3 {
		case 0:
			ops = append(ops, persistence.Op{Key: key})
		case 1:
			ops = append(ops, persistence.Op{Key: key, Group: group(fmt.Sprintf("%04d", i), int64(i)+1000)})
			want = append(want, group(fmt.Sprintf("%04d", i), int64(i)+1000))
		default:
			want = append(want, group(fmt.Sprintf("%04d", i), int64(i)))
		}
	}
	require.NoError(t, db.Commit(ops))
	require.Equal(t, want, loadAll(t, db))
	require.NoError(t, db.Compact())
	require.Zero(t, db.LogBytes())
	require.Equal(t, want, loadAll(t, db))
	logKeys, groupKeys := countKeys(t, copyFile(t, path))
	require.Zero(t, logKeys, "compaction removes every log entry")
	require.Equal(t, len(want), groupKeys)
	require.NoError(t, db.Compact(), "compacting an empty log is a no-op")
	require.NoError(t, db.Close())
	require.Equal(t, want, loadAll(t, MustOpenDB(t, path)))
}

// TestCompactDuringCommits compacts while commits go on: every commit
// survives, whichever side of a compaction it lands on.
func TestCompactDuringCommits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	db := MustOpenDB(t, path)
	const keys, rounds = 50, 40
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				require.NoError(t, db.Compact())
			}
		}
	})
	for r := range rounds {
		var ops []persistence.Op
		for k := range keys {
			ops = append(ops, persistence.Op{Key: fmt.Sprintf("job\xff%02d", k), Group: group(fmt.Sprintf("%02d", k), int64(r))})
		}
		require.NoError(t, db.Commit(ops))
	}
	close(done)
	wg.Wait()
	var want []*persistence.Group
	for k := range keys {
		want = append(want, group(fmt.Sprintf("%02d", k), rounds-1))
	}
	require.Equal(t, want, loadAll(t, db))
	crashed := copyFile(t, path)
	require.Equal(t, want, loadAll(t, MustOpenDB(t, crashed)), "the file holds the same after a crash")
}

func TestCompactWhenLogOutgrowsLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	db, err := persistence.Open(path, &persistence.Options{CompactBytes: 1, CompactInterval: time.Hour})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	require.NoError(t, db.Commit([]persistence.Op{{Key: "job\xffa", Group: group("a", 1)}}))
	require.Eventually(t, func() bool { return db.LogBytes() == 0 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, []*persistence.Group{group("a", 1)}, loadAll(t, db))
}

// TestOpenCorruptLog: a log entry that cannot be decoded stops Open with an
// error naming the file, and the file is left as it was.
func TestOpenCorruptLog(t *testing.T) {
	scenarios := map[string][]byte{
		"value, not a bucket": nil,
		"not s2":              {0xff, 0xff, 0xff},
		"truncated operation": {0x02, 0x04, 0x01, 0x01}, // s2 literal of 2 bytes: count 1, key length 1 and no key
	}
	for name, entry := range scenarios {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.db")
			db := MustOpenDB(t, path)
			require.NoError(t, db.Commit([]persistence.Op{{Key: "job\xffa", Group: group("a", 1)}}))
			require.NoError(t, db.Close())
			writeBoltExisting(t, path, func(tx *bolt.Tx) error {
				log := tx.Bucket([]byte("log"))
				if entry == nil {
					return log.Put([]byte{0, 0, 0, 0, 0, 0, 0, 9}, []byte("x"))
				}
				b, err := log.CreateBucket([]byte{0, 0, 0, 0, 0, 0, 0, 9})
				if err != nil {
					return err
				}
				return b.Put([]byte("e"), entry)
			})
			before, err := os.ReadFile(path)
			require.NoError(t, err)

			db, err = persistence.Open(path, nil)
			require.Nil(t, db)
			require.ErrorIs(t, err, persistence.ErrCorruptRecord)
			require.ErrorContains(t, err, `persistence file "`+path+`"`)
			require.ErrorContains(t, err, "log entry 0000000000000009")
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, before, after, "the file must be left unchanged")
		})
	}
}

// writeBoltExisting changes an existing bbolt file with fn.
func writeBoltExisting(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	require.NoError(t, err)
	require.NoError(t, bdb.Update(fn))
	require.NoError(t, bdb.Close())
}

// countKeys returns the number of log entries and groups in a closed file.
func countKeys(t *testing.T, path string) (logKeys, groupKeys int) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	require.NoError(t, err)
	defer bdb.Close()
	require.NoError(t, bdb.View(func(tx *bolt.Tx) error {
		logKeys = tx.Bucket([]byte("log")).Stats().KeyN
		groupKeys = tx.Bucket([]byte("groups")).Stats().KeyN
		return nil
	}))
	return logKeys, groupKeys
}

// TestCompactThresholdFollowsGroups checks that the log may grow to twice
// the size of the stored records before it is folded at once, with the size
// followed through puts, replacements and deletes, and counted again when
// the file is opened.
func TestCompactThresholdFollowsGroups(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	opts := &persistence.Options{CompactBytes: 100, CompactInterval: time.Hour}
	size := func(gs ...*persistence.Group) int64 {
		var n int64
		for _, g := range gs {
			n += int64(len(persistence.EncodeGroup(nil, g)))
		}
		return n
	}
	big := func(job string, series int) *persistence.Group {
		g := group(job, 1)
		for i := range series {
			g.Families[0].Metrics = append(g.Families[0].Metrics, []byte(fmt.Sprintf("series %04d of %s", i, job)))
		}
		return g
	}
	db, err := persistence.Open(path, opts)
	require.NoError(t, err)
	require.Equal(t, int64(100), db.CompactThreshold(), "an empty file: CompactBytes")

	a, b := big("a", 100), big("b", 300)
	require.NoError(t, db.Commit([]persistence.Op{{Key: "job\xffa", Group: a}, {Key: "job\xffb", Group: b}}))
	require.NoError(t, db.Compact())
	require.Equal(t, 2*size(a, b), db.CompactThreshold())

	smallerB := big("b", 10)
	require.NoError(t, db.Commit([]persistence.Op{{Key: "job\xffa"}, {Key: "job\xffb", Group: smallerB}}))
	require.NoError(t, db.Compact())
	require.Equal(t, 2*size(smallerB), db.CompactThreshold(), "a replaced and a deleted record")
	require.NoError(t, db.Close())

	db, err = persistence.Open(path, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	require.Equal(t, 2*size(smallerB), db.CompactThreshold(), "counted at open")
	require.NoError(t, db.Commit([]persistence.Op{{Key: "job\xffb"}}))
	require.NoError(t, db.Compact())
	require.Equal(t, int64(100), db.CompactThreshold(), "no records left")
}
