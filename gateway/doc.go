// Package gateway is the push gateway: push groups, the single write path,
// the consistency index, push times and the exposition, with the HTTP API of
// the Prometheus Pushgateway.
//
// # Model
//
// A Store maps grouping keys (the label sets of push URLs) to groups; a group
// maps metric names to families and always holds push_time_seconds and
// push_failure_time_seconds. Every write (push, delete, wipe, expiry) is
// checked and applied by the goroutine that submits it, one write at a time,
// and queued in a batch; one committer goroutine commits the changed groups
// of each batch in one transaction, in order, while the next batch fills,
// and only then answers the waiting handlers.
//
// # Consistency index
//
// Instead of gathering the whole store for every push, as the Pushgateway
// does, the store keeps one index entry per metric name: its type, the groups
// holding it and the identity of every series. A push is checked against the
// entries of its own names, so its cost does not grow with the number of
// groups. The rules and error messages are those of client_golang's gatherer.
//
// # Encoding pushes
//
// A push is parsed and encoded by its handler before it is applied.
// The store keeps, per group, a template of the last text body it encoded:
// a body that differs from it only in sample values is encoded by copying
// the previous series' labels, sort keys and protobuf prefixes and writing
// the new values. Summaries and classic histograms are written the same way
// while their counts stay whole numbers below 2^53; a family the template
// cannot reproduce is parsed again from its lines. A series pushed again
// takes over its predecessor's index slot without a lookup.
//
// # Exposition
//
// Every series is encoded once, when it is pushed. The index entry of a
// metric name keeps one slot per series identity in exposition order, split
// into chunks of at most 256 series; a push that replaces a series swaps the
// version its slot holds. Each chunk caches its rendering in the text format
// and in OpenMetrics, plain or compressed, built by the first scrape that
// needs it (a plain one is kept once a second scrape renders it, so chunks
// that change between scrapes cost no copy) and dropped when a series of
// the chunk is added, replaced or removed. Consecutive chunks of a name
// that a scrape compresses share one raw deflate segment of up to about
// 40 KB (a span), held by each of them and used while all of them still
// hold it. A scrape copies the renderings of each name in sorted order,
// merged with the own registry's families; a gzip scrape is one gzip
// member whose deflate stream is the concatenation of the segments.
//
// # Caveats
//
// Families and series are immutable once built (a series' slot pointer is
// set when it is applied) and shared between group versions; a write
// replaces groups, it never modifies one. A write is visible to scrapes from
// the moment it is applied, before its commit returns (after the commits of
// the batches queued before it); if a commit fails, its batch and every batch
// queued after it are undone and their requests are answered with a
// *PersistError; a batch whose commit reached the file but could not be
// synced (persistence.ErrUnsynced) is kept, as the file holds it, and its
// requests are answered with a *PersistError too.
package gateway
