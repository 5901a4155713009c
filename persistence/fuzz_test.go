package persistence_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/persistence"
)

// maxFuzzRecord caps fuzz inputs.
const maxFuzzRecord = 64 << 10

// FuzzDecodeGroup feeds arbitrary bytes to DecodeGroup: it must never panic,
// every error must wrap ErrCorruptRecord, and a decoded group must survive
// EncodeGroup and DecodeGroup unchanged.
func FuzzDecodeGroup(f *testing.F) {
	full := persistence.EncodeGroup(nil, fullGroup())
	f.Add(full)
	f.Add(full[:len(full)/2])
	f.Add(persistence.EncodeGroup(nil, &persistence.Group{}))
	f.Add(persistence.EncodeGroup(nil, group("a", 1)))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{2, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > maxFuzzRecord {
			return
		}
		g, err := persistence.DecodeGroup(b)
		if err != nil {
			require.ErrorIs(t, err, persistence.ErrCorruptRecord)
			require.Nil(t, g)
			return
		}
		again, err := persistence.DecodeGroup(persistence.EncodeGroup(nil, g))
		require.NoError(t, err)
		require.Equal(t, g, again)
	})
}
