//go:build race

package spanmetrics

// The race detector makes sync.Pool drop items at random, so allocation
// counts are only checked without it.
func init() { raceEnabled = true }
