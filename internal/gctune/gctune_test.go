package gctune

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPercent(t *testing.T) {
	scenarios := map[string]struct {
		live, headroom uint64
		want           int
	}{
		"small heap gets the headroom":  {live: 64 << 20, headroom: 256 << 20, want: 400},
		"large heap keeps the default":  {live: 2 << 30, headroom: 256 << 20, want: 100},
		"heap equal to the headroom":    {live: 256 << 20, headroom: 256 << 20, want: 100},
		"unknown live heap counts 1MiB": {live: 0, headroom: 8 << 20, want: 800},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, sc.want, Percent(sc.live, sc.headroom))
		})
	}
}

func TestTuneFollowsCollections(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)

	tuner := Tune(1 << 40)
	require.NotNil(t, tuner)
	defer tuner.Stop()
	require.Greater(t, tuner.GCPercent(), 1000, "a tiny heap with a huge headroom gets a high percentage")
	require.Equal(t, tuner.GCPercent(), debug.SetGCPercent(tuner.GCPercent()), "the runtime has the tuned value")

	// Grow the live heap: the next collections lower the percentage.
	before := tuner.GCPercent()
	keep := make([][]byte, 0, 64)
	for range 64 {
		keep = append(keep, make([]byte, 1<<20))
	}
	require.Eventually(t, func() bool {
		runtime.GC()
		return tuner.GCPercent() < before
	}, 10*time.Second, 10*time.Millisecond)
	runtime.KeepAlive(keep)

	tuner.Stop()
	require.Equal(t, 100, debug.SetGCPercent(100), "Stop restores the default")
}

func TestTuneDisabled(t *testing.T) {
	require.Nil(t, Tune(0))
	t.Setenv("GOGC", "50")
	require.Nil(t, Tune(1<<30), "GOGC from the environment wins")
}
