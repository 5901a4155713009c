//go:build race

package e2e

// With -race the tests build pushrelay with the race detector too, and fail
// when a process reports a data race.
func init() { raceBuild = true }
