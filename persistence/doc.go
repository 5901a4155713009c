// Package persistence stores push groups in a bbolt file so that every
// acknowledged push survives a crash.
//
// # Layout
//
// The file holds two buckets. "meta" keeps the schema version under the key
// "schema". "groups" maps each canonical grouping key to one encoded Group
// record (see Group and EncodeGroup). A push rewrites the record of its group;
// a delete removes it.
//
// # Durability
//
// Commit writes every operation it is given in one read-write transaction and
// returns only after bbolt has synced the file, so a caller may acknowledge
// the writes as soon as Commit returns nil. Callers batch concurrent writes
// into one Commit (group commit) to share the cost of the sync.
//
// # Caveats
//
// A DB is safe for one writer and any number of concurrent readers. Open
// fails, instead of waiting, when another process holds the file. A file that
// cannot be decoded is reported by Open or Load with its path; it is never
// replaced or emptied.
package persistence
