package persistence

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout version this package reads and writes.
const SchemaVersion = 1

var (
	bucketMeta   = []byte("meta")
	bucketGroups = []byte("groups")
	keySchema    = []byte("schema")
	keyProbe     = []byte("probe")
)

// ErrLocked is returned by Open when another process holds the file.
var ErrLocked = errors.New("file is locked by another process")

// DB is a bbolt file holding push groups.
type DB struct {
	path string
	db   *bolt.DB
}

// Op is one write of a Commit: it stores Group under Key, or deletes Key when
// Group is nil.
type Op struct {
	Key   string
	Group *Group
}

// Open opens or creates the file at path, creating its directory when needed,
// and checks its schema version. Every error names the file.
func Open(path string) (*DB, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("cannot create directory for persistence file %q: %w", path, err)
		}
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: time.Second,
		// The freelist is rebuilt from the pages at open instead of being
		// written by every commit, which keeps commits small.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			err = ErrLocked
		}
		return nil, fmt.Errorf("cannot open persistence file %q: %w", path, err)
	}
	d := &DB{path: path, db: bdb}
	if err := d.init(); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("cannot use persistence file %q: %w", path, err)
	}
	return d, nil
}

// init creates the buckets of a new file and checks the schema of an old one.
func (d *DB) init() error {
	return d.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if tx.Bucket(bucketGroups) != nil {
				return errors.New("groups bucket without schema version")
			}
			var err error
			if meta, err = tx.CreateBucket(bucketMeta); err != nil {
				return err
			}
			if err := meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
				return err
			}
		}
		v, err := strconv.Atoi(string(meta.Get(keySchema)))
		if err != nil {
			return fmt.Errorf("invalid schema version %q", meta.Get(keySchema))
		}
		if v != SchemaVersion {
			return fmt.Errorf("schema version %d is not supported (want %d)", v, SchemaVersion)
		}
		_, err = tx.CreateBucketIfNotExists(bucketGroups)
		return err
	})
}

// Path returns the file name the DB was opened with.
func (d *DB) Path() string { return d.path }

// Load calls fn for every stored group, in key order. It stops at and returns
// the first error, naming the file and the key of an undecodable record.
func (d *DB) Load(fn func(*Group) error) error {
	return d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketGroups).ForEach(func(k, v []byte) error {
			g, err := DecodeGroup(v)
			if err == nil {
				err = fn(g)
			}
			if err != nil {
				return fmt.Errorf("persistence file %q, group %q: %w", d.path, k, err)
			}
			return nil
		})
	})
}

// Commit applies ops in one transaction and returns after the file is synced.
// Later ops for the same key win.
func (d *DB) Commit(ops []Op) error {
	if len(ops) == 0 {
		return nil
	}
	var buf []byte
	err := d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketGroups)
		for _, op := range ops {
			if op.Group == nil {
				if err := b.Delete([]byte(op.Key)); err != nil {
					return err
				}
				continue
			}
			buf = EncodeGroup(buf[:0], op.Group)
			// Put keeps a reference until the commit, so every value
			// needs its own slice.
			v := make([]byte, len(buf))
			copy(v, buf)
			if err := b.Put([]byte(op.Key), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cannot commit to persistence file %q: %w", d.path, err)
	}
	return nil
}

// Probe writes and syncs a small record to find out whether the file can be
// written again after a failed commit.
func (d *DB) Probe() error {
	err := d.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyProbe, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		return fmt.Errorf("cannot write persistence file %q: %w", d.path, err)
	}
	return nil
}

// Size returns the size of the file in bytes.
func (d *DB) Size() int64 {
	var size int64
	_ = d.db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	})
	return size
}

// Close closes the file.
func (d *DB) Close() error {
	return d.db.Close()
}
