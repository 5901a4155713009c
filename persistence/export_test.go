package persistence

// CompactThreshold exposes compactThreshold to the external tests.
func (d *DB) CompactThreshold() int64 { return d.compactThreshold() }
