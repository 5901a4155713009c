package persistence_test

// This file holds regression tests for product bugs found while writing
// the persistence tests.

import (
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/persistence"
)

// parseHexDump reads the output of hex.Dump back into bytes.
func parseHexDump(t *testing.T, dump string) []byte {
	t.Helper()
	var out []byte
	for _, line := range strings.Split(strings.TrimSpace(dump), "\n") {
		// Offset, then up to 16 bytes in two groups, then |ascii|.
		fields := line[10:]
		if i := strings.Index(fields, "|"); i >= 0 {
			fields = fields[:i]
		}
		b, err := hex.DecodeString(strings.Join(strings.Fields(fields), ""))
		require.NoError(t, err)
		out = append(out, b...)
	}
	return out
}

// TestBugRecordVersionNotBumped — commit b5a24ac added PushWritten,
// FailureWritten and StaleWritten to the encoded Group between FailureTime
// and TTL, but kept record version 1 (and rewrote the golden file
// record_v1.hex). A record written by an earlier build
// (testdata/record_v1_a627202.hex, encoded by a627202…de255f4) is read with
// the new field layout: the decode fails, so a persistence file written by
// the previous build makes NewStore, and pushrelay's start, fail.
// Expected: a new layout gets a new record version, and version 1 records
// still decode (with zero written times).
func TestBugRecordVersionNotBumped(t *testing.T) {
	dump, err := os.ReadFile("testdata/record_v1_a627202.hex")
	require.NoError(t, err)
	old := parseHexDump(t, string(dump))
	g, err := persistence.DecodeGroup(old)
	require.NoError(t, err, "a record of the previous build must still decode")
	want := fullGroup()
	want.PushWritten, want.FailureWritten, want.StaleWritten = 0, 0, 0
	require.Equal(t, want, g)
}
