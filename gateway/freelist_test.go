package gateway

import (
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/flate"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestFreeList(t *testing.T) {
	built := 0
	l := newFreeList(2, func() *int { built++; v := built; return &v })
	a, b, c := l.get(), l.get(), l.get()
	require.Equal(t, 3, built, "an empty list builds every value")
	l.put(a)
	l.put(b)
	l.put(c) // dropped: the list keeps two
	runtime.GC()
	runtime.GC()
	got := []*int{l.get(), l.get()}
	require.ElementsMatch(t, []*int{a, b}, got, "kept values survive garbage collections")
	require.Equal(t, 3, built)
	require.Equal(t, 4, *l.get(), "the list is empty again")
}

// TestScrapesKeepDeflateWritersAcrossGC re-pushes every group between
// compressed scrapes, with garbage collections in between as a push load
// causes: the scrapes' deflate writers are built once, not per scrape.
func TestScrapesKeepDeflateWritersAcrossGC(t *testing.T) {
	var built atomic.Int32
	saved := flateWriters
	flateWriters = newFreeList(cap(saved.free), func() *flate.Writer {
		built.Add(1)
		return saved.fresh()
	})
	t.Cleanup(func() { flateWriters = saved })

	cs := newCacheStore(t)
	h := cs.ExpositionHandler(prometheus.NewRegistry())
	for round := range 4 {
		for i := range cacheGroups {
			cs.push(t, i, cacheBody(i+round, "A counter."), true, nil)
		}
		runtime.GC()
		runtime.GC()
		out := scrape(t, h, "application/openmetrics-text;version=1.0.0", true)
		requireEachOnce(t, out)
	}
	n := built.Load()
	require.Positive(t, n)
	require.LessOrEqual(t, n, int32(3), "one scrape uses at most three writers: its own, its helper's and its body's")
}
