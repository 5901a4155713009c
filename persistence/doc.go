// Package persistence stores push groups in a bbolt file so that every
// acknowledged push survives a crash.
//
// # Layout
//
// The file holds three buckets. "meta" keeps the schema version under the
// key "schema". "groups" maps each canonical grouping key to one encoded
// Group record (see Group and EncodeGroup). "log" holds the commits not yet
// folded into "groups": for every commit, under a growing sequence number, a
// bucket whose key "e" holds the commit's compressed entry.
//
// # Durability
//
// Commit appends every operation it is given to the log in one read-write
// transaction and returns only after bbolt has synced the file, so a caller
// may acknowledge the writes as soon as Commit returns nil. One entry holds
// the groups of a whole commit, compressed together, so a commit writes a
// few pages instead of one or more pages per group; callers batch
// concurrent writes into one Commit (group commit) to share the cost of the
// sync. Compaction, in the background every CompactInterval and whenever
// the log outgrows CompactBytes and twice the size of the records in
// "groups", writes the latest state of every logged group into "groups" and
// then removes the entries it folded. Load and Open
// read the log on top of "groups", so a crash at any point loses nothing
// that Commit acknowledged; Open folds a log left by a crash.
//
// # Caveats
//
// A DB is safe for one writer and any number of concurrent readers. Open
// fails, instead of waiting, when another process holds the file. A file that
// cannot be decoded is reported by Open or Load with its path; it is never
// replaced or emptied.
package persistence
