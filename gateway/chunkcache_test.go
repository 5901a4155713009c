package gateway

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// TestIndexChunks applies random puts and drops to one index entry and
// checks after each that the chunks hold every series once, in key order,
// none empty or over maxChunk, each slot pointing at its chunk.
func TestIndexChunks(t *testing.T) {
	scenarios := map[string]struct {
		keys  int
		drops float64 // share of operations that drop a series
		// groups is how many groups push the identities: one moving
		// to another group changes its key.
		groups int
	}{
		"growing":           {keys: 3000, drops: 0.1, groups: 1},
		"balanced":          {keys: 1500, drops: 0.5, groups: 1},
		"shrinking":         {keys: 1500, drops: 0.8, groups: 1},
		"few keys, churned": {keys: 40, drops: 0.5, groups: 1},
		"moving groups":     {keys: 1500, drops: 0.3, groups: 3},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, uint64(sc.keys)))
			e := newNameEntry(0)
			want := map[uint64]*series{}
			check := func() {
				t.Helper()
				var keys []string
				n := 0
				for _, c := range e.chunks {
					require.NotEmpty(t, c.slots)
					require.LessOrEqual(t, len(c.slots), maxChunk)
					for _, sl := range c.slots {
						require.Same(t, c, sl.c)
						require.Same(t, want[sl.se.id], sl.se)
						keys = append(keys, sl.se.key)
						n++
					}
				}
				require.Equal(t, len(want), n)
				require.Equal(t, len(want), e.len())
				require.True(t, slices.IsSorted(keys))
				require.Len(t, slices.Compact(keys), n)
			}
			for range 6 * sc.keys {
				id := uint64(rng.IntN(sc.keys))
				gk := fmt.Sprintf("g%d", rng.IntN(sc.groups))
				se := &series{id: id, key: fmt.Sprintf("%s-k%08d", gk, id*7919%100003), groupKey: gk}
				if rng.Float64() < sc.drops {
					if w := want[id]; w != nil {
						se.groupKey = w.groupKey
					}
					e.drop(se)
					delete(want, id)
				} else {
					e.put(se)
					want[id] = se
				}
				if rng.IntN(50) == 0 {
					check()
				}
			}
			check()
			for id, w := range want {
				e.drop(&series{id: id, groupKey: w.groupKey})
			}
			require.Empty(t, e.chunks)
			require.Zero(t, e.len())
		})
	}
}

// cacheGroups is the number of groups the cache tests fill: enough for
// several chunks per name.
const cacheGroups = 3*maxChunk/2 + 7

// cacheBody is a push body whose c_total series sort by their own label
// first, so the series of all groups interleave, and whose g series sort
// by group.
func cacheBody(v int, help string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# HELP c_total %s\n# TYPE c_total counter\n", help)
	for k := range 3 {
		fmt.Fprintf(&sb, "c_total{a=\"%d\"} %d\n", k, v+k)
	}
	fmt.Fprintf(&sb, "# TYPE g gauge\ng %d.5\n", v)
	fmt.Fprintf(&sb, "# TYPE h histogram\nh_bucket{le=\"1\"} %d\nh_bucket{le=\"+Inf\"} %d\nh_sum 2.5\nh_count %d\n", v, v+1, v+1)
	return sb.String()
}

func cacheGrouping(i int) Grouping {
	return Grouping{"job": "j", "instance": fmt.Sprintf("i%04d", i)}
}

// cacheStore is a store with a settable clock for the cache tests.
type cacheStore struct {
	*Store
	mu  sync.Mutex
	now time.Time
}

// filledCacheStore returns a new cacheStore holding groups groups of
// cacheBody.
func filledCacheStore(t *testing.T, groups int) *cacheStore {
	cs := newCacheStore(t)
	for i := range groups {
		cs.push(t, i, cacheBody(i, "A counter."), true, nil)
	}
	return cs
}

func newCacheStore(t *testing.T) *cacheStore {
	cs := &cacheStore{now: time.Unix(1700000000, 0)}
	s, err := NewStore(StoreOptions{Now: func() time.Time {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		return cs.now
	}})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	cs.Store = s
	return cs
}

func (cs *cacheStore) advance(d time.Duration) {
	cs.mu.Lock()
	cs.now = cs.now.Add(d)
	cs.mu.Unlock()
}

func (cs *cacheStore) push(t *testing.T, i int, body string, replace bool, ttl *time.Duration) {
	t.Helper()
	mfs, err := parseBody(strings.NewReader(body), "text/plain; version=0.0.4")
	require.NoError(t, err)
	require.NoError(t, cs.Store.push(cacheGrouping(i), mfs, replace, true, ttl))
}

// clearCaches drops every cached rendering, so the next scrape renders
// from the series.
func (cs *cacheStore) clearCaches() { clearRenderCaches(cs.Store) }

// clearRenderCaches drops every cached rendering of s.
func clearRenderCaches(s *Store) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rc := range renderCaches(s) {
		rc.reset()
	}
}

// renderCaches returns the render caches of every name's header and
// chunks. Must be called holding s.mu.
func renderCaches(s *Store) []*renderCache {
	var all []*renderCache
	for _, e := range s.names {
		all = append(all, &e.headerCache)
		for _, c := range e.chunks {
			all = append(all, &c.cache)
		}
	}
	return all
}

var cacheModes = []struct {
	name, accept string
	gzip         bool
}{
	{"text", "text/plain;version=0.0.4", false},
	{"openmetrics", "application/openmetrics-text;version=1.0.0", false},
	{"text+gzip", "text/plain;version=0.0.4", true},
	{"openmetrics+gzip", "application/openmetrics-text;version=1.0.0", true},
}

// scrape returns the decoded /metrics body in the mode's format.
func scrape(t *testing.T, h http.Handler, accept string, gz bool) string {
	t.Helper()
	return scrapeTarget(t, h, "/metrics", accept, gz)
}

// scrapeTarget is scrape for a request target with a query.
func scrapeTarget(t *testing.T, h http.Handler, target, accept string, gz bool) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req.Header.Set("Accept", accept)
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code)
	if !gz {
		require.Empty(t, rec.Header().Get("Content-Encoding"))
		return rec.Body.String()
	}
	require.Equal(t, "gzip", rec.Header().Get("Content-Encoding"))
	return gunzipOne(t, rec.Body.Bytes())
}

// gunzipOne decodes a body that must be exactly one gzip member.
func gunzipOne(t *testing.T, b []byte) string {
	t.Helper()
	br := bytes.NewReader(b)
	zr, err := gzip.NewReader(br)
	require.NoError(t, err)
	zr.Multistream(false)
	plain, err := io.ReadAll(zr)
	require.NoError(t, err)
	// A bytes.Reader is read byte by byte, never ahead.
	require.Zero(t, br.Len(), "bytes after the gzip member")
	return string(plain)
}

// TestChunkCacheInvalidation fills a store, scrapes it in every cached
// form, applies one change and checks that each form scraped from the
// caches equals a render from the series.
func TestChunkCacheInvalidation(t *testing.T) {
	hour := time.Hour
	scenarios := map[string]func(t *testing.T, cs *cacheStore){
		"push replaces series of one group": func(t *testing.T, cs *cacheStore) {
			cs.push(t, 5, cacheBody(1000, "A counter."), true, nil)
		},
		"push of new values to every group": func(t *testing.T, cs *cacheStore) {
			for i := range cacheGroups {
				cs.push(t, i, cacheBody(i+2000, "A counter."), true, nil)
			}
		},
		"push adds and removes series": func(t *testing.T, cs *cacheStore) {
			cs.push(t, 7, "# TYPE c_total counter\nc_total{a=\"1\"} 5\nc_total{a=\"9\"} 6\nc_total{b=\"x\"} 7\n", true, nil)
		},
		"new groups between existing ones split chunks": func(t *testing.T, cs *cacheStore) {
			for i := range cacheGroups {
				cs.push(t, cacheGroups+i*7%cacheGroups, cacheBody(i, "A counter."), true, nil)
			}
		},
		"post replacing a family": func(t *testing.T, cs *cacheStore) {
			cs.push(t, 3, "# TYPE g gauge\ng{x=\"y\"} 42\n", false, nil)
		},
		"post changing the help": func(t *testing.T, cs *cacheStore) {
			cs.push(t, 9, cacheBody(9, "Another help."), false, nil)
		},
		"delete one group": func(t *testing.T, cs *cacheStore) {
			require.NoError(t, cs.Delete(cacheGrouping(cacheGroups/2)))
		},
		"delete every other group merges chunks": func(t *testing.T, cs *cacheStore) {
			for i := 0; i < cacheGroups; i += 2 {
				require.NoError(t, cs.Delete(cacheGrouping(i)))
			}
		},
		"delete a run of groups empties chunks": func(t *testing.T, cs *cacheStore) {
			for i := 10; i < 10+maxChunk+20; i++ {
				require.NoError(t, cs.Delete(cacheGrouping(i)))
			}
		},
		"wipe": func(t *testing.T, cs *cacheStore) {
			require.NoError(t, cs.Wipe())
		},
		"wipe and push again": func(t *testing.T, cs *cacheStore) {
			require.NoError(t, cs.Wipe())
			cs.push(t, 1, cacheBody(1, "A counter."), true, nil)
		},
		"expiry zeroes groups": func(t *testing.T, cs *cacheStore) {
			var keys []string
			for i := 0; i < cacheGroups; i += 3 {
				cs.push(t, i, cacheBody(i+1, "A counter."), true, &hour)
				keys = append(keys, cacheGrouping(i).Key())
			}
			cs.advance(2 * hour)
			require.NoError(t, cs.Expire(keys))
		},
		"failed push sets the failure time": func(t *testing.T, cs *cacheStore) {
			mfs, err := parseBody(strings.NewReader("# TYPE g counter\ng 1\n"), "text/plain; version=0.0.4")
			require.NoError(t, err)
			require.Error(t, cs.Store.push(cacheGrouping(4), mfs, true, true, nil))
		},
	}
	for name, change := range scenarios {
		t.Run(name, func(t *testing.T) {
			cs := filledCacheStore(t, cacheGroups)
			h := cs.ExpositionHandler(prometheus.NewRegistry())
			for _, m := range cacheModes {
				scrape(t, h, m.accept, m.gzip)
			}
			cs.advance(time.Second)
			change(t, cs)
			got := map[string]string{}
			for _, m := range cacheModes {
				got[m.name] = scrape(t, h, m.accept, m.gzip)
			}
			cs.clearCaches()
			for _, m := range cacheModes {
				want := scrape(t, h, m.accept, m.gzip)
				require.Equal(t, want, got[m.name], m.name)
				if m.gzip {
					// The compressed form has the same bytes as the plain one.
					plain := strings.TrimSuffix(m.name, "+gzip")
					require.Equal(t, got[plain], got[m.name], plain)
				}
			}
		})
	}
}

// failingResponse is an http.ResponseWriter whose body writes fail.
type failingResponse struct {
	h      http.Header
	writes int
}

func (f *failingResponse) Header() http.Header { return f.h }
func (f *failingResponse) WriteHeader(int)     {}
func (f *failingResponse) Write([]byte) (int, error) {
	f.writes++
	return 0, io.ErrClosedPipe
}

// TestScrapeStopsOnWriteError checks that a plain scrape stops rendering
// once the scraper's connection fails: later chunks stay unrendered.
func TestScrapeStopsOnWriteError(t *testing.T) {
	cs := filledCacheStore(t, 4*cacheGroups)
	h := cs.ExpositionHandler(prometheus.NewRegistry())
	for form, m := range cacheModes[:2] {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header.Set("Accept", m.accept)
		w := &failingResponse{h: http.Header{}}
		h.ServeHTTP(w, req)
		require.Equal(t, 1, w.writes, m.name)
		rendered, chunks := 0, 0
		cs.Store.mu.RLock()
		for _, e := range cs.names {
			for _, c := range e.chunks {
				chunks++
				if c.cache[form].Load() != nil {
					rendered++
				}
			}
		}
		cs.Store.mu.RUnlock()
		require.Less(t, rendered, chunks, m.name)
	}
}

// TestConcurrentScrapesAndPushes scrapes in every cached form while
// groups are pushed and deleted, and checks that every body holds each
// family once and each series once, whatever the compressed forms' helper
// found cached or built; run with -race.
func TestConcurrentScrapesAndPushes(t *testing.T) {
	cs := newCacheStore(t)
	h := cs.ExpositionHandler(prometheus.NewRegistry())
	var wg sync.WaitGroup
	done := make(chan struct{})
	for _, m := range cacheModes {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				requireEachOnce(t, scrape(t, h, m.accept, m.gzip))
			}
		})
	}
	for i := range 3 * maxChunk {
		cs.push(t, i%(maxChunk+5), cacheBody(i, "A counter."), true, nil)
		if i%5 == 0 {
			require.NoError(t, cs.Delete(cacheGrouping(i%(maxChunk+5))))
		}
	}
	close(done)
	wg.Wait()
}

// requireEachOnce checks that an exposition has one TYPE line per family
// and no series twice.
func requireEachOnce(t *testing.T, body string) {
	t.Helper()
	seen := map[string]bool{}
	for line := range strings.Lines(body) {
		key := line
		switch {
		case strings.HasPrefix(line, "# TYPE "):
		case strings.HasPrefix(line, "#"):
			continue
		default:
			key = line[:strings.LastIndexByte(line, ' ')]
		}
		require.False(t, seen[key], "twice in one scrape: %s", key)
		seen[key] = true
	}
}

// TestFillAheadSkipsOwnNames runs the helper of a compressed scrape to its
// end and checks that it built the renderings of every pushed name but
// left those of a name the gateway also exposes itself, which scrapes
// render afresh, uncached; a scrape then exposes both.
func TestFillAheadSkipsOwnNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "Exposed by both."}))
	own, err := reg.Gather()
	require.NoError(t, err)
	for _, m := range cacheModes[2:] {
		t.Run(m.name, func(t *testing.T) {
			cs := filledCacheStore(t, cacheGroups)
			form := cacheForm(m.name, m.gzip)
			cs.Store.mu.RLock()
			names := cs.sortedNameList()
			cs.Store.mu.RUnlock()
			a := newFillAhead(cs.Store, form, names)
			a.ownKnown(own)
			a.run()
			cs.Store.mu.RLock()
			for name, e := range cs.names {
				for _, c := range e.chunks {
					require.Equal(t, name != "g", c.cache[form].Load() != nil, name)
				}
			}
			cs.Store.mu.RUnlock()
			out := scrape(t, cs.ExpositionHandler(reg), m.accept, m.gzip)
			require.True(t, strings.Contains(out, "\ng{instance=\"i0001\",job=\"j\"} 1.5\n"), "a pushed series of the shared name is missing")
			requireEachOnce(t, out)
		})
	}
}

// TestSpans lays out the compressed renderings of a row of chunks and
// checks which of them spanAt finds current, and where spanEnd ends the
// span that a chunk missing its rendering starts.
func TestSpans(t *testing.T) {
	const form = formOpenMetricsDeflate
	// Each chunk's lines are guessed at a quarter of spanBytes.
	line := strings.Repeat("x", spanBytes/4/8-1) + "\n"
	newChunk := func() *chunk {
		c := &chunk{}
		for range 8 {
			se := &series{}
			se.setEncoding([]byte(line), len(line))
			c.slots = append(c.slots, &slot{se: se, c: c})
		}
		return c
	}
	// A layout names each chunk's rendering: "." for none, a letter for
	// a rendering spanning as many chunks as its letter's place in the
	// alphabet (a: 1, b: 2, c: 3), "0" for one spanning none.
	cases := []struct {
		layout string
		// current holds, for each chunk, the letter of the current
		// span starting there, or '.'.
		current string
		// ends holds, for each chunk missing a current rendering, the
		// end of its span, or -1.
		ends []int
	}{
		{"ccc", "c..", []int{-1, 2, 3}},
		{"cccbba", "c..b.a", []int{-1, 2, 3, -1, 5, -1}},
		{".cc", "...", []int{1, 2, 3}},
		{"cc.", "...", []int{1, 3, 3}},
		{"c.c", "...", []int{2, 2, 3}},
		{"cc", "..", []int{1, 2}},
		{"cccc", "c...", []int{-1, 2, 3, 4}},
		{"....", "....", []int{4, 4, 4, 4}},
		{".....", ".....", []int{4, 5, 5, 5, 5}},
		{"..a..", "..a..", []int{2, 2, -1, 5, 5}},
		{"b.b", "...", []int{2, 2, 3}},
		{"0.", "..", []int{2, 2}},
	}
	for _, tc := range cases {
		t.Run(tc.layout, func(t *testing.T) {
			chunks := make([]*chunk, len(tc.layout))
			renderings := map[byte]*rendering{}
			for i := range chunks {
				chunks[i] = newChunk()
				l := tc.layout[i]
				if l == '.' {
					continue
				}
				// Consecutive chunks of one letter share a rendering
				// until the letter's span is full.
				r := renderings[l]
				if r == nil || i > 0 && chunks[i-1].cache[form].Load() != r || spanCount(chunks[:i], r) == r.chunks {
					r = &rendering{chunks: int(l-'a') + 1}
					if l == '0' {
						r.chunks = 0
					}
					renderings[l] = r
				}
				chunks[i].cache[form].Store(r)
			}
			for i := range chunks {
				cr := spanAt(chunks, i, form)
				if tc.current[i] == '.' {
					require.Nil(t, cr, "chunk %d", i)
				} else {
					require.NotNil(t, cr, "chunk %d", i)
					require.Equal(t, int(tc.current[i]-'a')+1, cr.chunks, "chunk %d", i)
				}
				if cr == nil && tc.ends[i] >= 0 {
					require.Equal(t, tc.ends[i], spanEnd(chunks, i, form), "end of the span at chunk %d", i)
				}
			}
		})
	}
}

// spanCount is the number of chunks holding r.
func spanCount(chunks []*chunk, r *rendering) int {
	n := 0
	for _, c := range chunks {
		if c.cache[formOpenMetricsDeflate].Load() == r {
			n++
		}
	}
	return n
}

// TestChunkClaimsMeet has the scrape's goroutine and its helper take the
// spans of one name's missing chunks from both ends: each builds what it
// takes and stops, reporting it, at the first span the other took.
func TestChunkClaimsMeet(t *testing.T) {
	cs := filledCacheStore(t, 8*maxChunk)
	form := formTextDeflate
	cases := []struct {
		name string
		// first takes before second starts, up to taken spans from its
		// end (all when negative).
		first, second uint32
		taken         int
	}{
		{"helper alone", byHelper, byScrape, -1},
		{"scrape alone", byScrape, byHelper, -1},
		{"helper first, scrape meets it", byHelper, byScrape, 1},
		{"scrape first, helper meets it", byScrape, byHelper, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clearRenderCaches(cs.Store)
			cs.Store.mu.RLock()
			defer cs.Store.mu.RUnlock()
			e := cs.names["c_total"]
			a := newFillAhead(cs.Store, form, nil)
			c := a.claims("c_total", e)
			require.Equal(t, e.chunks, slices.Concat(c.spans...), "every chunk misses its rendering")
			n := len(c.spans)
			require.Greater(t, n, 3, "spans to share")
			r := getRenderer()
			defer putRenderer(r)
			// Who takes which span.
			want := make([]uint32, n)
			for k := range n {
				i := k
				if tc.first == byHelper {
					i = n - 1 - k
				}
				if tc.taken < 0 || k < tc.taken {
					want[i] = tc.first
				} else {
					want[i] = tc.second
				}
			}
			if tc.taken >= 0 {
				for i, by := range want {
					if by == tc.first {
						require.True(t, c.takenBy[i].CompareAndSwap(0, by))
					}
				}
			} else {
				met, err := c.build(r, "c_total", e, form, tc.first)
				require.NoError(t, err)
				require.False(t, met, "nothing to meet")
			}
			met, err := c.build(r, "c_total", e, form, tc.second)
			require.NoError(t, err)
			require.True(t, met, "the second claimant meets the first")
			i := 0
			for k := range n {
				require.Equal(t, want[k], uint32(c.takenBy[k].Load()), "span %d", k)
				built := tc.taken < 0 || want[k] == tc.second
				span := c.spans[k]
				if built {
					require.Same(t, spanAt(e.chunks, i, form), span[0].cache[form].Load(), "span %d is current", k)
				}
				for _, ch := range span {
					require.Same(t, e.chunks[i], ch)
					require.Equal(t, built, ch.cache[form].Load() != nil, "span %d built", k)
					i++
				}
			}
		})
	}
}

// TestStaleClaimsBuildNothing lists the spans of a name, then deletes
// groups so that its two chunks merge and a series of the merged one goes:
// building the listed spans afterwards builds nothing (one of their chunks
// is gone), and a scrape renders the name from its series.
func TestStaleClaimsBuildNothing(t *testing.T) {
	for k, m := range cacheModes[2:] {
		t.Run(m.name, func(t *testing.T) {
			cs := filledCacheStore(t, maxChunk+1)
			form := cacheForm(m.name, m.gzip)
			a := newFillAhead(cs.Store, form, nil)
			cs.Store.mu.RLock()
			e := cs.names["g"]
			require.Len(t, e.chunks, 2)
			c := a.claims("g", e)
			cs.Store.mu.RUnlock()
			require.Len(t, slices.Concat(c.spans...), 2)
			for i := range 96 {
				require.NoError(t, cs.Delete(cacheGrouping(i)))
			}
			require.NoError(t, cs.Delete(cacheGrouping(200)))
			cs.Store.mu.RLock()
			require.Len(t, e.chunks, 1, "the chunks merged")
			r := getRenderer()
			for _, by := range []uint32{byHelper, byScrape} {
				met, err := c.build(r, "g", e, form, by)
				require.NoError(t, err)
				require.False(t, met)
			}
			putRenderer(r)
			for _, ch := range slices.Concat(c.spans...) {
				require.Nil(t, ch.cache[form].Load(), "nothing is built from out-of-date spans")
			}
			cs.Store.mu.RUnlock()
			h := cs.ExpositionHandler(prometheus.NewRegistry())
			got := scrape(t, h, m.accept, m.gzip)
			require.Equal(t, uncachedScrape(t, cs, h, "/metrics", 2+k), got)
		})
	}
}

// TestFillAheadStopsBeforeScrape runs the helper of a compressed scrape
// whose goroutine got to a name halfway: the helper builds the renderings
// of the names after it and stops there.
func TestFillAheadStopsBeforeScrape(t *testing.T) {
	cs := filledCacheStore(t, cacheGroups)
	form := formOpenMetricsDeflate
	cs.Store.mu.RLock()
	names := cs.sortedNameList()
	cs.Store.mu.RUnlock()
	require.Greater(t, len(names), 2)
	at := len(names) / 2
	a := newFillAhead(cs.Store, form, names)
	a.reached(at)
	a.run()
	cs.Store.mu.RLock()
	defer cs.Store.mu.RUnlock()
	for i, name := range names {
		for _, c := range cs.names[name].chunks {
			require.Equal(t, i >= at, c.cache[form].Load() != nil, "%s (name %d, scrape at %d)", name, i, at)
		}
	}
}

// TestCompressedScrapeRendersWhileGathering has a gatherer of own metrics
// that returns only once every stored chunk has its compressed rendering:
// the scrape's helper builds them while the scrape gathers, and the body
// then holds the stored families and the own one.
func TestCompressedScrapeRendersWhileGathering(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	for _, m := range cacheModes[2:] {
		t.Run(m.name, func(t *testing.T) {
			cs := filledCacheStore(t, cacheGroups)
			form := cacheForm(m.name, m.gzip)
			allRendered := func() bool {
				cs.Store.mu.RLock()
				defer cs.Store.mu.RUnlock()
				for _, e := range cs.names {
					for _, c := range e.chunks {
						if c.cache[form].Load() == nil {
							return false
						}
					}
				}
				return true
			}
			require.False(t, allRendered())
			reg := prometheus.NewRegistry()
			reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "own_gauge", Help: "An own metric."}))
			gatherer := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
				deadline := time.Now().Add(10 * time.Second)
				for !allRendered() {
					if time.Now().After(deadline) {
						return nil, errors.New("the stored chunks were not rendered while the own metrics were gathered")
					}
					time.Sleep(time.Millisecond)
				}
				return reg.Gather()
			})
			out := scrape(t, cs.ExpositionHandler(gatherer), m.accept, m.gzip)
			require.True(t, strings.Contains(out, "\nown_gauge 0"), "the own gauge is missing")
			require.True(t, strings.Contains(out, "\ng{instance=\"i0001\",job=\"j\"} 1.5\n"), "a pushed series is missing")
			requireEachOnce(t, out)
		})
	}
}

// TestPlainRenderingsStoredOnSecondScrape checks that a plain scrape
// stores the rendering of a chunk only the second time it renders it since
// the chunk changed, that the output is the same either way, and that a
// compressed scrape after the first plain one still compresses the lines.
func TestPlainRenderingsStoredOnSecondScrape(t *testing.T) {
	for _, m := range cacheModes[:2] {
		t.Run(m.name, func(t *testing.T) {
			cs := filledCacheStore(t, cacheGroups)
			h := cs.ExpositionHandler(prometheus.NewRegistry())
			form := cacheForm(m.name, false)
			chunkStates := func() (seen, stored int) {
				cs.Store.mu.RLock()
				defer cs.Store.mu.RUnlock()
				for _, e := range cs.names {
					for _, c := range e.chunks {
						switch r := c.cache[form].Load(); {
						case r == seenOnce:
							seen++
						case r != nil:
							stored++
						}
					}
				}
				return seen, stored
			}
			first := scrape(t, h, m.accept, false)
			seen, stored := chunkStates()
			require.Positive(t, seen)
			require.Zero(t, stored, "nothing is stored on the first scrape")

			gzipped := scrape(t, h, m.accept, true)
			require.Equal(t, first, gzipped, "a compressed scrape renders what the plain one did not store")

			require.Equal(t, first, scrape(t, h, m.accept, false))
			seenAgain, stored := chunkStates()
			require.Zero(t, seenAgain)
			require.Equal(t, seen, stored, "the second scrape stores every chunk")
			cs.Store.mu.RLock()
			kept := cs.names["g"].chunks[0].cache[form].Load()
			cs.Store.mu.RUnlock()
			require.Equal(t, first, scrape(t, h, m.accept, false))
			cs.Store.mu.RLock()
			require.Same(t, kept, cs.names["g"].chunks[0].cache[form].Load(), "later scrapes use the stored rendering")
			cs.Store.mu.RUnlock()

			cs.push(t, 0, cacheBody(1000, "A counter."), true, nil)
			changed := scrape(t, h, m.accept, false)
			require.NotEqual(t, first, changed)
			seen, stored = chunkStates()
			require.Positive(t, seen, "the changed chunks are rendered again, not stored")
			require.Positive(t, stored, "the unchanged chunks keep their renderings")
			require.Equal(t, changed, scrape(t, h, m.accept, false))
		})
	}
}

// uncachedScrape scrapes target in mode m with every render cache empty and
// then puts the caches back as they were, so that the caches under test
// are not changed by the reference scrape.
func uncachedScrape(t *testing.T, cs *cacheStore, h http.Handler, target string, m int) string {
	t.Helper()
	cs.Store.mu.Lock()
	caches := renderCaches(cs.Store)
	kept := make([][numForms]*rendering, len(caches))
	for k, rc := range caches {
		for i := range rc {
			kept[k][i] = rc[i].Load()
		}
		rc.reset()
	}
	cs.Store.mu.Unlock()
	out := scrapeTarget(t, h, target, cacheModes[m].accept, cacheModes[m].gzip)
	cs.Store.mu.Lock()
	for k, rc := range caches {
		for i := range rc {
			rc[i].Store(kept[k][i])
		}
	}
	cs.Store.mu.Unlock()
	return out
}

// TestCachedScrapesMatchUncachedRenders changes a few groups at a time and
// scrapes in every mode, one after the other and four at once, with and
// without name[] filters and with a name both pushed and own: every body
// must be the one a scrape with every cache empty gives, whatever the
// caches hold (stored, seen once, missing).
func TestCachedScrapesMatchUncachedRenders(t *testing.T) {
	cs := newCacheStore(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "Exposed by both."}))
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "a_own", Help: "Own only."}))
	h := cs.ExpositionHandler(reg)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range cacheGroups {
		cs.push(t, i, cacheBody(i, "A counter."), true, nil)
	}
	targets := []string{"/metrics", "/metrics?name[]=c_total", "/metrics?name[]=g&name[]=h", "/metrics?name[]=a_own&name[]=c_total"}
	for round := range 40 {
		for range rng.IntN(4) {
			i := rng.IntN(cacheGroups)
			switch rng.IntN(4) {
			case 0:
				require.NoError(t, cs.Delete(cacheGrouping(i)))
			case 1:
				cs.push(t, i, cacheBody(rng.IntN(1000), "Other help."), true, nil)
			default:
				cs.push(t, i, cacheBody(rng.IntN(1000), "A counter."), true, nil)
			}
		}
		target := targets[rng.IntN(len(targets))]
		var want [4]string
		for m := range cacheModes {
			want[m] = uncachedScrape(t, cs, h, target, m)
		}
		for range 1 + rng.IntN(6) {
			m := rng.IntN(len(cacheModes))
			require.Equal(t, want[m], scrapeTarget(t, h, target, cacheModes[m].accept, cacheModes[m].gzip), "round %d, %s, %s", round, target, cacheModes[m].name)
		}
		var wg sync.WaitGroup
		for k := range 4 {
			m := (k + rng.IntN(len(cacheModes))) % len(cacheModes)
			wg.Go(func() {
				for range 3 {
					if got := scrapeTarget(t, h, target, cacheModes[m].accept, cacheModes[m].gzip); got != want[m] {
						t.Errorf("round %d, %s, %s, concurrent: %d bytes, want %d", round, target, cacheModes[m].name, len(got), len(want[m]))
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
}

// cacheForm is the rendering form a scrape in the cache mode named name
// uses.
func cacheForm(name string, gz bool) int {
	form := formText
	if strings.HasPrefix(name, "openmetrics") {
		form = formOpenMetrics
	}
	if gz {
		form += formTextDeflate
	}
	return form
}

// TestScrapeOfNamedFamiliesCachesThemOnly scrapes one name with name[]:
// several of its chunks miss their rendering, and no goroutine renders or caches (or, in a plain form,
// marks as seen) the chunks of the other names.
func TestScrapeOfNamedFamiliesCachesThemOnly(t *testing.T) {
	for _, m := range cacheModes {
		t.Run(m.name, func(t *testing.T) {
			cs := filledCacheStore(t, 4*maxChunk)
			h := cs.ExpositionHandler(prometheus.NewRegistry())
			full := scrape(t, h, m.accept, m.gzip)
			clearRenderCaches(cs.Store)
			out := scrapeTarget(t, h, "/metrics?name[]=c_total", m.accept, m.gzip)
			start := strings.Index(full, "# HELP c")
			end := strings.Index(full, "# TYPE g ")
			require.True(t, start >= 0 && end > start, "c_total comes before g")
			want := full[start:end]
			if strings.HasPrefix(m.name, "openmetrics") {
				want += "# EOF\n"
			}
			require.Equal(t, want, out)
			form := cacheForm(m.name, m.gzip)
			cs.Store.mu.RLock()
			defer cs.Store.mu.RUnlock()
			if m.gzip {
				spans := 0
				for i := range cs.names["c_total"].chunks {
					if spanAt(cs.names["c_total"].chunks, i, form) != nil {
						spans++
					}
				}
				require.Greater(t, spans, 1, "c_total is compressed in more than one span")
			}
			for name, e := range cs.names {
				for i, c := range e.chunks {
					require.Equal(t, name == "c_total", c.cache[form].Load() != nil, "%s chunk %d", name, i)
				}
			}
		})
	}
}

// gzipBody assembles data through a gzip bodyWriter: cut decides where
// pieces end and whether each is a cached rendering or live bytes.
func gzipBody(data, cuts []byte) []byte {
	var out bytes.Buffer
	bw := getBodyWriter(&out, true)
	defer putBodyWriter(bw)
	fw := flateWriters.get()
	defer flateWriters.put(fw)
	rest := data
	for i := 0; len(rest) > 0; i++ {
		n := len(rest)
		cached := false
		if len(cuts) > 0 {
			c := cuts[i%len(cuts)]
			n = min(n, 1+int(c>>1)*int(c>>1)*8)
			cached = c&1 != 0
		}
		piece := rest[:n]
		rest = rest[n:]
		if !cached {
			_, _ = bw.Write(piece)
			continue
		}
		var seg bytes.Buffer
		appendSegment(&seg, fw, piece)
		bw.writeRendering(&rendering{b: seg.Bytes(), crc: crc32.ChecksumIEEE(piece), shift: crc32Shift(len(piece)), size: len(piece)})
	}
	if err := bw.Close(); err != nil {
		panic(err)
	}
	return out.Bytes()
}

// FuzzGzipSegments checks that bodies made of independently compressed
// segments and live bytes decode, as one gzip member, to the plain bytes.
func FuzzGzipSegments(f *testing.F) {
	f.Add([]byte(""), []byte{})
	f.Add([]byte("a"), []byte{1})
	f.Add([]byte("hello, hello, hello world\n"), []byte{3, 4, 5, 0})
	var big bytes.Buffer
	for i := 0; big.Len() <= flushAt; i++ {
		fmt.Fprintf(&big, "m_total{instance=\"g%06d\",job=\"x\"} %d\n", i, i*i)
	}
	// Live bytes of more than flushAt, and cached segments between them.
	f.Add(big.Bytes(), []byte{})
	f.Add(big.Bytes(), []byte{255, 254, 17, 0, 9, 200})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		if len(data) > 2*flushAt {
			return
		}
		require.Equal(t, string(data), gunzipOne(t, gzipBody(data, cuts)))
	})
}

// TestCRC32Shift checks the CRC combination against CRC-32 of the
// concatenation.
func TestCRC32Shift(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 2, 3, 7, 100, 4096, 65537, 1 << 20} {
		a := make([]byte, rng.IntN(300))
		b := make([]byte, n)
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		got := multModP(crc32Shift(len(b)), crc32.ChecksumIEEE(a)) ^ crc32.ChecksumIEEE(b)
		require.Equal(t, crc32.ChecksumIEEE(append(a, b...)), got, "len %d", n)
	}
}

// TestIndexMatchesGroups pushes random subsets of series to a few groups,
// with PUT, POST and DELETE, and checks after every write that the index
// holds exactly the series of the stored groups, each in its own slot.
func TestIndexMatchesGroups(t *testing.T) {
	cs := newCacheStore(t)
	rng := rand.New(rand.NewPCG(3, 4))
	body := func() string {
		var sb strings.Builder
		sb.WriteString("# TYPE c_total counter\n")
		for k := range 6 {
			if rng.IntN(2) == 0 {
				fmt.Fprintf(&sb, "c_total{a=\"%d\"} %d\n", k, rng.IntN(100))
			}
		}
		if rng.IntN(2) == 0 {
			fmt.Fprintf(&sb, "g %d\n", rng.IntN(100))
		}
		return sb.String()
	}
	check := func() {
		t.Helper()
		s := cs.Store
		s.mu.RLock()
		defer s.mu.RUnlock()
		held := 0
		for _, g := range s.groups {
			for name, f := range g.families {
				for _, se := range f.series {
					require.True(t, se.indexed(), "series %q of %s is not the current one of its slot", se.key, name)
					require.Same(t, s.names[name].slots[se.id], se.slot)
					held++
				}
			}
		}
		indexed := 0
		for name, e := range s.names {
			for id, sl := range e.slots {
				require.Same(t, sl, sl.se.slot, "%s: the series of a slot points at another slot", name)
				require.Equal(t, id, sl.se.id)
				g := s.groups[sl.se.groupKey]
				require.NotNil(t, g, "%s: a slot holds a series of a deleted group", name)
				require.Contains(t, g.families[name].series, sl.se)
				indexed++
			}
		}
		require.Equal(t, held, indexed)
	}
	for range 400 {
		i := rng.IntN(5)
		switch op := rng.IntN(10); {
		case op < 6:
			cs.push(t, i, body(), true, nil)
		case op < 9:
			cs.push(t, i, body(), false, nil)
		default:
			require.NoError(t, cs.Delete(cacheGrouping(i)))
		}
		check()
	}
}

// BenchmarkIndexPut measures what a push costs the index of one name of
// 50k series: replacing a series of the same identity (a repeated push)
// and adding then dropping a new identity (a new group).
func BenchmarkIndexPut(b *testing.B) {
	const size = 50000
	newSeries := func(id int) *series {
		return &series{id: uint64(id), key: fmt.Sprintf("k%08d", id*7919%size), groupKey: fmt.Sprintf("g%d", id)}
	}
	e := newNameEntry(0)
	for id := range size {
		e.put(newSeries(id))
	}
	b.Run("replace", func(b *testing.B) {
		ses := make([]*series, 1024)
		for i := range ses {
			ses[i] = newSeries(i * 37 % size)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			e.put(ses[i%len(ses)])
		}
	})
	b.Run("add and drop", func(b *testing.B) {
		ses := make([]*series, 1024)
		for i := range ses {
			ses[i] = &series{id: uint64(size + i), key: fmt.Sprintf("k%08d5", i*7919%size), groupKey: "new"}
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			se := ses[i%len(ses)]
			e.put(se)
			e.drop(se)
		}
	})
}

// BenchmarkGzipBody measures joining cached segments into a gzip body, per
// plain byte: 256 segments of about 25 kB.
func BenchmarkGzipBody(b *testing.B) {
	var plain bytes.Buffer
	for i := range 256 * 256 {
		fmt.Fprintf(&plain, "m_total{instance=\"g%06d\",job=\"x\"} %d\n", i, i*i)
	}
	fw := flateWriters.get()
	defer flateWriters.put(fw)
	var rs []*rendering
	for part := range bytes.Lines(plain.Bytes()) {
		if len(rs) == 0 || rs[len(rs)-1].size >= plain.Len()/256 {
			rs = append(rs, &rendering{})
		}
		r := rs[len(rs)-1]
		r.b = append(r.b, part...) // plain for now
		r.size = len(r.b)
	}
	for _, r := range rs {
		var seg bytes.Buffer
		appendSegment(&seg, fw, r.b)
		r.crc, r.shift = crc32.ChecksumIEEE(r.b), crc32Shift(r.size)
		r.b = bytes.Clone(seg.Bytes())
	}
	b.SetBytes(int64(plain.Len()))
	b.ReportAllocs()
	for b.Loop() {
		bw := getBodyWriter(io.Discard, true)
		for _, r := range rs {
			bw.writeRendering(r)
		}
		if err := bw.Close(); err != nil {
			b.Fatal(err)
		}
		putBodyWriter(bw)
	}
}

// TestScrapeWhileSharedNameGoes scrapes while the only group holding a
// family that pushrelay also exposes itself is pushed and deleted: the
// name may go between the scrape reading the name list and merging the
// family, and the scrape must then expose the own family alone.
func TestScrapeWhileSharedNameGoes(t *testing.T) {
	s, err := NewStore(StoreOptions{})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	reg := prometheus.NewRegistry()
	own := prometheus.NewGauge(prometheus.GaugeOpts{Name: "shared_gauge", Help: "Exposed by both."})
	own.Set(7)
	reg.MustRegister(own)
	h := s.ExpositionHandler(reg)
	body := []byte("# HELP shared_gauge Exposed by both.\n# TYPE shared_gauge gauge\nshared_gauge 1\n")
	g := Grouping{"job": "j"}
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	wg.Go(func() {
		for time.Now().Before(deadline) {
			tb, ok := s.prepareText(g.Key(), body)
			if !ok {
				t.Error("the fast parser refused the body")
				return
			}
			if err := s.submitText(g, tb, true, true, nil); err != nil {
				t.Error(err)
				return
			}
			if err := s.Delete(g); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for time.Now().Before(deadline) {
		out := scrape(t, h, "text/plain;version=0.0.4", false)
		require.Contains(t, out, "shared_gauge 7\n")
	}
	wg.Wait()
}

// A scrape that panics while rendering (here: a series whose text length
// lies, as memory corruption would) is recovered by the HTTP server; the
// store's read lock must not stay held, or every later write would wait
// forever.
func TestPanickingScrapeReleasesTheLock(t *testing.T) {
	for _, tc := range []struct {
		name, accept string
	}{
		{"cached text", "text/plain;version=0.0.4"},
		{"decoded protobuf", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewStore(StoreOptions{})
			require.NoError(t, err)
			// Closed only once the lock is known to be free: Close would
			// wait for it too.
			g := Grouping{"job": "j"}
			tb, ok := s.prepareText(g.Key(), []byte("# TYPE a gauge\na 1\n"))
			require.True(t, ok)
			require.NoError(t, s.submitText(g, tb, true, true, nil))
			s.mu.Lock()
			se := s.groups[g.Key()].families["a"].series[0]
			se.textLen = int32(len(se.enc) + 1)
			se.enc = se.enc[:len(se.enc):len(se.enc)] // so that text() cannot reslice within spare capacity
			if tc.accept != "text/plain;version=0.0.4" {
				se.enc = []byte{0xff} // not a protobuf Metric either
				se.textLen = 2
			}
			s.mu.Unlock()

			srv := httptest.NewUnstartedServer(s.ExpositionHandler(prometheus.NewRegistry()))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.Start()
			defer srv.Close()
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
			require.NoError(t, err)
			req.Header.Set("Accept", tc.accept)
			// Uncompressed: a compressed scrape's helper goroutine would meet
			// the series too, and a panic there ends the process.
			req.Header.Set("Accept-Encoding", "identity")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				require.Error(t, err, "the panicking scrape's body is cut off")
			}

			done := make(chan error, 1)
			go func() {
				other := Grouping{"job": "other"}
				tb, _ := s.prepareText(other.Key(), []byte("# TYPE b gauge\nb 2\n"))
				done <- s.submitText(other, tb, true, true, nil)
			}()
			select {
			case err := <-done:
				require.NoError(t, err)
				s.Close()
			case <-time.After(10 * time.Second):
				t.Fatal("a write after the panicking scrape is still waiting for the lock")
			}
		})
	}
}
