package persistence

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/prometheus/common/promslog"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout version this package reads and writes.
// Version 2 added the log bucket; version 1 files are upgraded on open.
const SchemaVersion = 2

// schemaVersionV1 is the layout without the log bucket.
const schemaVersionV1 = 1

var (
	bucketMeta   = []byte("meta")
	bucketGroups = []byte("groups")
	bucketLog    = []byte("log")
	keySchema    = []byte("schema")
	keyProbe     = []byte("probe")
)

// ErrUnsynced is returned by Commit, wrapped, when the commit reached the
// file but syncing it to disk failed: the file holds the ops from then on
// (later commits build on them), though a crash before the next successful
// sync may lose them.
var ErrUnsynced = errors.New("the write reached the file but syncing it to disk failed")

// ErrLocked is returned by Open when another process holds the file.
var ErrLocked = errors.New("file is locked by another process")

// Defaults of Options.
const (
	DefaultCompactInterval = 10 * time.Second
	DefaultCompactBytes    = 16 << 20
)

// compactChunk bounds the groups one compaction transaction writes, so that
// commits waiting for the file are not held up for long.
const compactChunk = 256

// Options configures a DB; the zero value (or nil) means the defaults.
type Options struct {
	// CompactInterval is how often the log is folded into the groups
	// bucket; DefaultCompactInterval when zero.
	CompactInterval time.Duration
	// CompactBytes is the smallest log size at which it is folded at
	// once; DefaultCompactBytes when zero. The log may grow to twice the
	// size of the groups' records before it is folded, so that folding,
	// which rewrites every group the log holds, costs the same per commit
	// however many groups there are.
	CompactBytes int64
	// Logger receives errors of the background compaction and a warning
	// when the file is reopened.
	Logger *slog.Logger

	// openFile opens the file for bbolt; os.OpenFile when nil. Tests
	// inject faults with it.
	openFile func(string, int, os.FileMode) (*os.File, error)
}

// DB is a bbolt file holding push groups.
type DB struct {
	path   string
	opts   Options
	logger *slog.Logger

	// openMu guards db and closed: transactions hold it for reading,
	// reopen and Close for writing.
	openMu sync.RWMutex
	db     *bolt.DB
	// closed is set by Close; a closed DB is not reopened.
	closed bool
	// file identifies the file opened first; a reopen takes only that.
	file os.FileInfo

	// logBytes is the size of the log entries not yet compacted.
	logBytes atomic.Int64
	// groupsBytes is the size of the records in the groups bucket.
	groupsBytes atomic.Int64
	// failedEntry is the size of the log entry of the last commit if it
	// failed, which Probe writes as much of.
	failedEntry atomic.Int64
	// commitMu serialises commits; it guards the buffers they reuse.
	commitMu        sync.Mutex
	entryBuf, s2Buf []byte
	// compactMu serialises compactions.
	compactMu sync.Mutex
	kick      chan struct{}
	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
}

// Op is one write of a Commit: it stores Group under Key, or deletes Key when
// Group is nil.
type Op struct {
	Key   string
	Group *Group
}

// Open opens or creates the file at path, creating its directory when needed,
// checks its schema version and log, and folds a log left by an earlier
// process into the groups. Every error names the file; a file that cannot be
// used is left as it was.
func Open(path string, opts *Options) (*DB, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("cannot create directory for persistence file %q: %w", path, err)
		}
	}
	d := &DB{path: path, kick: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	if opts != nil {
		d.opts = *opts
	}
	bdb, fi, err := d.openBolt(nil)
	if err != nil {
		return nil, fmt.Errorf("cannot open persistence file %q: %w", path, err)
	}
	d.db, d.file = bdb, fi
	if d.opts.CompactInterval <= 0 {
		d.opts.CompactInterval = DefaultCompactInterval
	}
	if d.opts.CompactBytes <= 0 {
		d.opts.CompactBytes = DefaultCompactBytes
	}
	d.logger = d.opts.Logger
	if d.logger == nil {
		d.logger = promslog.NewNopLogger()
	}
	if err := d.init(); err != nil {
		_ = d.db.Close()
		return nil, fmt.Errorf("cannot use persistence file %q: %w", path, err)
	}
	// The log was checked above, so only a write can fail here; Load reads
	// the log on top of the groups, and the loop tries again.
	if err := d.Compact(); err != nil {
		d.logger.Error("cannot compact the persistence log at start-up; it is kept and compacted later", "err", err)
	}
	go d.compactLoop()
	return d, nil
}

// openBolt opens the file with bbolt once its length is checked. With same
// set, as when reopening, the file must be that one and not empty: a file
// that is gone is not created, and one that replaced it, or an emptied one,
// which bbolt would make a new database of, is refused.
func (d *DB) openBolt(same os.FileInfo) (*bolt.DB, os.FileInfo, error) {
	open := d.opts.openFile
	if open == nil {
		open = os.OpenFile
	}
	var fi os.FileInfo
	bdb, err := bolt.Open(d.path, 0o600, &bolt.Options{
		Timeout: time.Second,
		// The freelist is rebuilt from the pages at open instead of being
		// written by every commit, which keeps commits small.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			if same != nil {
				flag &^= os.O_CREATE
			}
			f, err := open(name, flag, perm)
			if err != nil {
				return nil, err
			}
			if fi, err = f.Stat(); err == nil {
				switch {
				case same != nil && !os.SameFile(fi, same):
					err = errReplaced
				case same != nil && fi.Size() == 0:
					err = errEmptied
				default:
					err = checkLength(f, fi.Size())
				}
			}
			if err != nil {
				_ = f.Close()
				return nil, err
			}
			return f, nil
		},
	})
	if errors.Is(err, berrors.ErrTimeout) {
		err = ErrLocked
	}
	return bdb, fi, err
}

// Errors of a reopen that finds another file at the path.
var (
	errReplaced = errors.New("another file took its place; restart pushrelay to use that one")
	errEmptied  = errors.New("the file was emptied")
)

// view runs fn in a read transaction.
func (d *DB) view(fn func(*bolt.Tx) error) error { return d.transact(false, fn) }

// update runs fn in a write transaction.
func (d *DB) update(fn func(*bolt.Tx) error) error { return d.transact(true, fn) }

// transact runs fn in a transaction. A remap that fails while the file
// grows (an mmap error, as on a file system turned read-only) leaves bbolt
// without a mapping, and every later transaction fails as it begins;
// transact then reopens the file and runs fn once more.
func (d *DB) transact(writable bool, fn func(*bolt.Tx) error) error {
	err := d.begin(writable, fn)
	if !errors.Is(err, berrors.ErrInvalidMapping) && !errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return err
	}
	open, rerr := d.reopen()
	if rerr != nil {
		return fmt.Errorf("bbolt lost its mapping of the file, and reopening it failed: %w", rerr)
	}
	if !open {
		return err
	}
	return d.begin(writable, fn)
}

// begin runs fn in a transaction of the current bbolt handle.
func (d *DB) begin(writable bool, fn func(*bolt.Tx) error) error {
	d.openMu.RLock()
	defer d.openMu.RUnlock()
	if writable {
		return d.db.Update(fn)
	}
	return d.db.View(fn)
}

// reopen closes the file and opens it again unless the handle works, and
// tells whether the handle is open; it is not once Close was called. After
// a failed open the handle stays closed, so the next transaction tries
// again.
func (d *DB) reopen() (bool, error) {
	d.openMu.Lock()
	defer d.openMu.Unlock()
	if d.closed {
		return false, nil
	}
	if d.db.View(func(*bolt.Tx) error { return nil }) == nil {
		return true, nil // reopened by another transaction meanwhile
	}
	_ = d.db.Close() // an unmapped handle has nothing left to write
	bdb, _, err := d.openBolt(d.file)
	if err != nil {
		return false, err
	}
	d.db = bdb
	d.logger.Warn("persistence file reopened after bbolt lost its mapping of it", "file", d.path)
	return true, nil
}

// init creates the buckets of a new file, checks the schema of an old one
// and its log entries, and upgrades a version 1 file. It changes nothing in
// a file it rejects.
func (d *DB) init() error {
	err := d.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if tx.Bucket(bucketGroups) != nil {
				return errors.New("groups bucket without schema version")
			}
			return nil
		}
		v, err := strconv.Atoi(string(meta.Get(keySchema)))
		if err != nil {
			return fmt.Errorf("invalid schema version %q", meta.Get(keySchema))
		}
		if v != SchemaVersion && v != schemaVersionV1 {
			return fmt.Errorf("schema version %d is not supported (want %d)", v, SchemaVersion)
		}
		if groups := tx.Bucket(bucketGroups); groups != nil {
			var size int64
			c := groups.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				size += int64(len(v))
			}
			d.groupsBytes.Store(size)
		}
		if log := tx.Bucket(bucketLog); log != nil {
			size, err := checkLog(log)
			d.logBytes.Store(size)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return d.update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if string(meta.Get(keySchema)) != strconv.Itoa(SchemaVersion) {
			if err := meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
				return err
			}
		}
		if _, err := tx.CreateBucketIfNotExists(bucketGroups); err != nil {
			return err
		}
		_, err = tx.CreateBucketIfNotExists(bucketLog)
		return err
	})
}

// checkLog decodes every log entry and returns their size.
func checkLog(log *bolt.Bucket) (int64, error) {
	var size int64
	var buf []byte
	c := log.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		v, err := logEntry(log, k)
		if err == nil {
			size += int64(len(v))
			buf, err = forEachLogOp(buf, k, v, true, func(string, []byte) {})
		}
		if err != nil {
			return size, err
		}
	}
	return size, nil
}

// keyEntry is the key of the entry in the bucket of one log entry.
var keyEntry = []byte("e")

// logEntry returns the entry under key k of the log. Each entry has a
// bucket of its own, so that appending one writes its own pages and a leaf
// of small bucket headers, instead of rewriting a leaf that holds the last
// few entries.
func logEntry(log *bolt.Bucket, k []byte) ([]byte, error) {
	b := log.Bucket(k)
	if b == nil {
		return nil, fmt.Errorf("log entry %x: %w: not a bucket", k, ErrCorruptRecord)
	}
	v := b.Get(keyEntry)
	if v == nil {
		return nil, fmt.Errorf("log entry %x: %w: no entry", k, ErrCorruptRecord)
	}
	return v, nil
}

// Path returns the file name the DB was opened with.
func (d *DB) Path() string { return d.path }

// Load calls fn for every stored group, in key order. It stops at and returns
// the first error, naming the file and the key of an undecodable record.
func (d *DB) Load(fn func(*Group) error) error {
	return d.view(func(tx *bolt.Tx) error {
		latest, err := foldLog(tx.Bucket(bucketLog), nil)
		if err != nil {
			return fmt.Errorf("persistence file %q: %w", d.path, err)
		}
		emit := func(k string, v []byte) error {
			g, err := DecodeGroup(v)
			if err == nil {
				err = fn(g)
			}
			if err != nil {
				return fmt.Errorf("persistence file %q, group %q: %w", d.path, k, err)
			}
			return nil
		}
		logged := slices.Sorted(maps.Keys(latest))
		// Merge the stored groups with those the log holds a newer
		// state of, in key order.
		c := tx.Bucket(bucketGroups).Cursor()
		k, v := c.First()
		for k != nil || len(logged) > 0 {
			if len(logged) > 0 && (k == nil || logged[0] <= string(k)) {
				key := logged[0]
				logged = logged[1:]
				if k != nil && key == string(k) {
					k, v = c.Next()
				}
				if rec := latest[key]; rec != nil {
					if err := emit(key, rec); err != nil {
						return err
					}
				}
				continue
			}
			if err := emit(string(k), v); err != nil {
				return err
			}
			k, v = c.Next()
		}
		return nil
	})
}

// Commit writes ops atomically and returns after the file is synced. Later
// ops for the same key win. The ops are appended to the log as one
// compressed entry, so that a commit writes a few pages whatever the number
// of groups it changes; compaction later folds the log into the groups.
func (d *DB) Commit(ops []Op) error {
	if len(ops) == 0 {
		return nil
	}
	d.commitMu.Lock()
	defer d.commitMu.Unlock()
	// bbolt copies the value into its pages by the end of the
	// transaction, so both buffers are reused by the next commit.
	d.entryBuf = appendLogEntry(d.entryBuf[:0], ops)
	d.s2Buf = s2.Encode(d.s2Buf[:cap(d.s2Buf)], d.entryBuf)
	entry := d.s2Buf
	txid := 0
	err := d.update(func(tx *bolt.Tx) error {
		txid = tx.ID()
		log := tx.Bucket(bucketLog)
		seq, err := log.NextSequence()
		if err != nil {
			return err
		}
		b, err := log.CreateBucket(binary.BigEndian.AppendUint64(nil, seq))
		if err != nil {
			return err
		}
		return b.Put(keyEntry, entry)
	})
	if err != nil {
		d.failedEntry.Store(int64(len(entry)))
	} else {
		d.failedEntry.Store(0)
	}
	// When bbolt wrote the meta page before its sync failed, the file, as
	// bbolt reads it, holds this transaction and its log entry.
	if err != nil && (txid == 0 || d.currentTxID() != txid) {
		return fmt.Errorf("cannot commit to persistence file %q: %w", d.path, err)
	}
	if d.logBytes.Add(int64(len(entry))) >= d.compactThreshold() {
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
	if err != nil {
		return fmt.Errorf("cannot commit to persistence file %q: %w: %w", d.path, ErrUnsynced, err)
	}
	return nil
}

// currentTxID returns the id of the file's newest transaction.
func (d *DB) currentTxID() int {
	id := 0
	_ = d.view(func(tx *bolt.Tx) error {
		id = tx.ID()
		return nil
	})
	return id
}

// Compact folds every log entry into the groups bucket and removes the
// entries. It writes at most compactChunk groups per transaction; until the
// last one, which also removes the entries, a crash leaves the log in place,
// and the next Open folds it again.
func (d *DB) Compact() error {
	d.compactMu.Lock()
	defer d.compactMu.Unlock()
	var latest map[string][]byte
	var last []byte
	var size int64
	err := d.view(func(tx *bolt.Tx) error {
		var err error
		latest, err = foldLog(tx.Bucket(bucketLog), func(k, v []byte) {
			if last == nil {
				last = bytes.Clone(k) // the newest entry comes first
			}
			size += int64(len(v))
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("cannot compact persistence file %q: %w", d.path, err)
	}
	if last == nil {
		return nil
	}
	keys := slices.Sorted(maps.Keys(latest))
	for {
		chunk := keys[:min(len(keys), compactChunk)]
		keys = keys[len(chunk):]
		// grown is how much the chunk changes the size of the records.
		var grown int64
		err := d.update(func(tx *bolt.Tx) error {
			groups := tx.Bucket(bucketGroups)
			for _, k := range chunk {
				grown -= int64(len(groups.Get([]byte(k))))
				var err error
				if rec := latest[k]; rec == nil {
					err = groups.Delete([]byte(k))
				} else {
					grown += int64(len(rec))
					err = groups.Put([]byte(k), rec)
				}
				if err != nil {
					return err
				}
			}
			if len(keys) > 0 {
				return nil
			}
			log := tx.Bucket(bucketLog)
			var folded [][]byte
			c := log.Cursor()
			for k, _ := c.First(); k != nil && bytes.Compare(k, last) <= 0; k, _ = c.Next() {
				folded = append(folded, bytes.Clone(k))
			}
			for _, k := range folded {
				if err := log.DeleteBucket(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("cannot compact persistence file %q: %w", d.path, err)
		}
		d.groupsBytes.Add(grown)
		if len(keys) == 0 {
			d.logBytes.Add(-size)
			return nil
		}
	}
}

// compactThreshold is the log size at which it is folded at once: twice
// the size of the groups' records, and at least CompactBytes.
func (d *DB) compactThreshold() int64 {
	return max(d.opts.CompactBytes, 2*d.groupsBytes.Load())
}

// compactLoop compacts at every interval and whenever the log outgrows
// compactThreshold, until Close.
func (d *DB) compactLoop() {
	defer close(d.stopped)
	ticker := time.NewTicker(d.opts.CompactInterval)
	defer ticker.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-ticker.C:
		case <-d.kick:
		}
		if err := d.Compact(); err != nil {
			d.logger.Error("cannot compact the persistence log; it is kept and compacted later", "err", err)
		}
	}
}

// Probe writes and syncs a record as large as the log entry of the last
// commit if it failed, and a small one otherwise, to find out whether the
// file can take that commit now: on a disk with room for a small record
// but not for the commit, it fails. The large record is shrunk again at
// once, so that its pages are free for the next commit.
func (d *DB) Probe() error {
	now := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	put := func(v []byte) error {
		return d.update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyProbe, v)
		})
	}
	size := int(d.failedEntry.Load())
	record := make([]byte, max(size, len(now)))
	copy(record, now)
	err := put(record)
	if err == nil && size > len(now) {
		// Should this fail and a commit succeed before the next probe,
		// the large record stays until a later probe: the file keeps at
		// most one commit's worth of it.
		err = put(now)
	}
	if err != nil {
		return fmt.Errorf("cannot write persistence file %q: %w", d.path, err)
	}
	return nil
}

// Size returns the size of the file on disk in bytes (bbolt grows it
// ahead of the pages in use), or 0 when it cannot be read.
func (d *DB) Size() int64 {
	fi, err := os.Stat(d.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// LogBytes returns the size of the log entries not yet compacted.
func (d *DB) LogBytes() int64 { return d.logBytes.Load() }

// Close compacts the log and closes the file. Calling it again is harmless.
func (d *DB) Close() error {
	var err error
	d.closeOnce.Do(func() {
		close(d.stop)
		<-d.stopped
		err = d.Compact()
		d.openMu.Lock()
		defer d.openMu.Unlock()
		d.closed = true
		err = errors.Join(err, d.db.Close())
	})
	return err
}

// Log entry layout: an s2 block of uvarint(number of ops), then for each op
// uvarint(len(key)), key, one byte 1 for a put or 0 for a delete, and for a
// put uvarint(len(record)), record (EncodeGroup).
const (
	logDelete = 0
	logPut    = 1
)

// appendLogEntry appends ops, encoded as one log entry before compression,
// to buf.
func appendLogEntry(buf []byte, ops []Op) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(ops)))
	for _, op := range ops {
		buf = appendString(buf, op.Key)
		if op.Group == nil {
			buf = append(buf, logDelete)
			continue
		}
		buf = append(buf, logPut)
		start := len(buf)
		buf = EncodeGroup(append(buf, make([]byte, binary.MaxVarintLen64)...), op.Group)
		// Move the record back over the unused part of the length.
		recLen := len(buf) - start - binary.MaxVarintLen64
		n := binary.PutUvarint(buf[start:], uint64(recLen))
		copy(buf[start+n:], buf[start+binary.MaxVarintLen64:])
		buf = buf[:start+n+recLen]
	}
	return buf
}

// forEachLogOp decodes the log entry v under key k into buf, which it
// returns for reuse, and calls fn for every op in order, with a nil record
// for a delete. Records are only valid until buf is reused. With validate,
// every record is decoded as a check.
func forEachLogOp(buf, k, v []byte, validate bool, fn func(key string, rec []byte)) ([]byte, error) {
	n, err := s2.DecodedLen(v)
	if err == nil {
		buf = slices.Grow(buf[:0], n)[:n]
		_, err = s2.Decode(buf, v)
	}
	if err != nil {
		return buf, fmt.Errorf("log entry %x: %w: %v", k, ErrCorruptRecord, err)
	}
	d := decoder{b: buf}
	ops := d.count()
	for i := 0; i < ops && d.err == nil; i++ {
		key := d.string()
		var rec []byte
		switch d.byte() {
		case logPut:
			rec = d.bytes()
			if validate && d.err == nil {
				_, d.err = DecodeGroup(rec)
			}
		case logDelete:
		default:
			d.fail("invalid log operation")
		}
		if d.err == nil {
			fn(key, rec)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return buf, fmt.Errorf("log entry %x: %w", k, d.err)
	}
	return buf, nil
}

// foldLog returns the latest record of every key the log holds, nil for a
// deleted one, calling seen for every entry. It reads the newest entries
// first, so that only the records it returns are copied.
func foldLog(log *bolt.Bucket, seen func(k, v []byte)) (map[string][]byte, error) {
	latest := map[string][]byte{}
	// fromEntry is the entry, counted from the newest, each key was found
	// in: a later op of the same entry replaces the record, an older entry
	// does not.
	fromEntry := map[string]int{}
	var buf []byte
	c := log.Cursor()
	entry := 0
	for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
		v, err := logEntry(log, k)
		if err != nil {
			return nil, err
		}
		if seen != nil {
			seen(k, v)
		}
		buf, err = forEachLogOp(buf, k, v, false, func(key string, rec []byte) {
			if e, ok := fromEntry[key]; ok && e != entry {
				return
			}
			if rec != nil {
				rec = bytes.Clone(rec)
			}
			latest[key] = rec
			fromEntry[key] = entry
		})
		if err != nil {
			return nil, err
		}
		entry++
	}
	return latest, nil
}
