package persistence_test

import (
	"encoding/hex"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/persistence"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// requireGolden compares got with testdata/name, or rewrites the file when
// the test runs with -update.
func requireGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create the golden file")
	require.Equal(t, string(want), string(got), "golden file %s differs; run go test -update to rewrite it", path)
}

// fullGroup uses every field of a Group.
func fullGroup() *persistence.Group {
	return &persistence.Group{
		Labels:      []persistence.Label{{Name: "instance", Value: ""}, {Name: "job", Value: "batch/Π"}},
		PushTime:    1_700_000_001_123_456_789,
		FailureTime: 1_700_000_000_000_000_000,
		TTL:         persistence.TTL{Nanos: 90e9, Source: "header", Action: "zero", Expired: true},
		Families: []persistence.Family{
			{Name: "jobs_total", Help: "Jobs processed.", HasHelp: true, Type: 0, Time: 1_700_000_001_123_456_789, Metrics: [][]byte{{0x0a, 0x03, 'a', 'b', 'c'}, {}}},
			{Name: "empty_help", Help: "", HasHelp: true, Type: 1, Time: -1},
			{Name: "no_help", Type: 4, Time: 0, Metrics: [][]byte{{0x00, 0xff, 0x80}}},
		},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	scenarios := map[string]*persistence.Group{
		"zero group":  {},
		"labels only": {Labels: []persistence.Label{{Name: "job", Value: "j"}}},
		"full group":  fullGroup(),
		"written times": {
			Labels:   []persistence.Label{{Name: "job", Value: "j"}},
			PushTime: 5, FailureTime: 6, PushWritten: 7, FailureWritten: 8, StaleWritten: 9,
		},
		"extreme numbers": {
			PushTime: math.MaxInt64, FailureTime: math.MinInt64,
			PushWritten: math.MinInt64, FailureWritten: math.MaxInt64, StaleWritten: -1,
			TTL:      persistence.TTL{Nanos: math.MinInt64},
			Families: []persistence.Family{{Name: "x", Type: math.MaxInt32, Time: math.MaxInt64}},
		},
		"TTL disabled for the group": {
			Labels: []persistence.Label{{Name: "job", Value: "j"}},
			TTL:    persistence.TTL{Source: "header", Action: "delete"},
		},
		"bytes that are not UTF-8": {
			Labels:   []persistence.Label{{Name: "job", Value: "\xff\x00\xfe"}},
			Families: []persistence.Family{{Name: "\x00", Help: "\xff", HasHelp: true, Metrics: [][]byte{make([]byte, 300)}}},
		},
		"many families and metrics": func() *persistence.Group {
			g := &persistence.Group{Labels: []persistence.Label{{Name: "job", Value: "j"}}}
			for i := 0; i < 200; i++ {
				f := persistence.Family{Name: strings.Repeat("n", i+1), Type: int32(i % 5), Time: int64(i)}
				for j := 0; j < i%7; j++ {
					f.Metrics = append(f.Metrics, []byte(strings.Repeat("m", j*50)))
				}
				g.Families = append(g.Families, f)
			}
			return g
		}(),
	}
	for name, g := range scenarios {
		t.Run(name, func(t *testing.T) {
			b := persistence.EncodeGroup(nil, g)
			got, err := persistence.DecodeGroup(b)
			require.NoError(t, err)
			require.Equal(t, g, got)

			// Appending keeps what the buffer held.
			prefixed := persistence.EncodeGroup([]byte("prefix"), g)
			require.Equal(t, "prefix", string(prefixed[:6]))
			require.Equal(t, b, prefixed[6:])

			// The decoded group does not share memory with the record.
			for i := range b {
				b[i] = 0xAA
			}
			require.Equal(t, g, got)
		})
	}
}

// TestRecordGolden pins the on-disk encoding of a group: records written by
// this version must stay readable, so a change here needs a new record
// version.
func TestRecordGolden(t *testing.T) {
	b := persistence.EncodeGroup(nil, fullGroup())
	requireGolden(t, "record_v2.hex", []byte(hex.Dump(b)))
}

func TestDecodeCorruptRecord(t *testing.T) {
	valid := persistence.EncodeGroup(nil, fullGroup())
	scenarios := map[string]struct {
		record []byte
		err    string
	}{
		"nil":                 {record: nil, err: "corrupt group record: unexpected end of record"},
		"unknown version":     {record: []byte{3}, err: "corrupt group record: unknown record version 3"},
		"version zero":        {record: append([]byte{0}, valid[1:]...), err: "corrupt group record: unknown record version 0"},
		"trailing bytes":      {record: append(append([]byte{}, valid...), 0, 0), err: "corrupt group record: 2 trailing bytes"},
		"label count too big": {record: []byte{1, 0x7f}, err: "corrupt group record: length exceeds record"},
		"varint overflow":     {record: []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, err: "corrupt group record: invalid varint"},
		"metric type out of range": {
			record: persistence.EncodeGroup(nil, &persistence.Group{Families: []persistence.Family{{Name: "x", Type: -1}}}),
			err:    "corrupt group record: metric type out of range",
		},
	}
	// The TTL.Expired flag of an empty group is its last byte but one,
	// before the family count.
	empty := persistence.EncodeGroup(nil, &persistence.Group{})
	badBool := append([]byte{}, empty...)
	badBool[len(badBool)-2] = 2
	scenarios["boolean not 0 or 1"] = struct {
		record []byte
		err    string
	}{record: badBool, err: "corrupt group record: invalid boolean"}
	scenarios["cut before the expired flag"] = struct {
		record []byte
		err    string
	}{record: empty[:len(empty)-2], err: "corrupt group record: unexpected end of record"}

	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			g, err := persistence.DecodeGroup(s.record)
			require.Nil(t, g)
			require.ErrorIs(t, err, persistence.ErrCorruptRecord)
			require.EqualError(t, err, s.err)
		})
	}
}

// TestDecodeTruncatedRecords cuts a valid record at every length: each
// prefix must fail with ErrCorruptRecord, never panic.
func TestDecodeTruncatedRecords(t *testing.T) {
	for _, g := range []*persistence.Group{fullGroup(), {}, {Labels: []persistence.Label{{Name: "job", Value: "j"}}}} {
		valid := persistence.EncodeGroup(nil, g)
		for n := 0; n < len(valid); n++ {
			got, err := persistence.DecodeGroup(valid[:n:n])
			require.ErrorIs(t, err, persistence.ErrCorruptRecord, "prefix of %d of %d bytes", n, len(valid))
			require.Nil(t, got)
		}
	}
}

// TestDecodeFlippedBytes flips every byte of a valid record: decoding must
// not panic, and any error must wrap ErrCorruptRecord.
func TestDecodeFlippedBytes(t *testing.T) {
	valid := persistence.EncodeGroup(nil, fullGroup())
	for i := range valid {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			b := append([]byte{}, valid...)
			b[i] ^= x
			g, err := persistence.DecodeGroup(b)
			if err != nil {
				require.True(t, errors.Is(err, persistence.ErrCorruptRecord), "byte %d ^ %#x: %v", i, x, err)
				require.Nil(t, g)
			}
		}
	}
}
