package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMergeRounds(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		out := make([]time.Duration, len(vs))
		for i, v := range vs {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	round := func(seconds float64, ok int, lat []time.Duration, cpu time.Duration, errs map[string]int) pushResult {
		r := pushResult{Target: "pushrelay", Groups: 1000, Clients: 32, Seconds: seconds, OK: ok, Errors: &errorTally{},
			latencies: lat, serverCPU: cpu, clientCPU: cpu / 4, otherCPU: cpu / 2, stealCPU: cpu / 8, serverKnown: true, SettleSeconds: seconds / 10,
			store: storeDeltas{batchSum: float64(ok), batches: float64(ok) / 10, commitSum: 0.001 * float64(ok) / 10, commits: float64(ok) / 10}}
		for key, n := range errs {
			for range n {
				r.Errors.add(key, "first "+key)
			}
		}
		r.summarize()
		return r
	}
	rounds := []pushResult{
		round(10, 1000, ms(1, 2, 3, 4), 2*time.Second, map[string]int{"HTTP 503": 2}),
		round(10, 3000, ms(8, 5, 6, 7), 6*time.Second, map[string]int{"HTTP 503": 1, "timeout": 1}),
	}
	rounds[1].Unsettled = true
	got := mergeRounds(rounds)
	require.Equal(t, 20.0, got.Seconds)
	require.Equal(t, 4000, got.OK)
	require.Equal(t, 8, got.Requests)
	require.InDelta(t, 200.0, got.Rate, 1e-9)
	require.Equal(t, []float64{100, 300}, got.RoundRates)
	require.Equal(t, 4.0, got.P50ms, "the median of both rounds' latencies together")
	require.Equal(t, 8.0, got.P99ms)
	require.Equal(t, 8.0, got.MaxMs)
	require.InDelta(t, 2000.0, got.ServerCPUus, 1e-9, "8 s of CPU for 4000 pushes")
	require.InDelta(t, 40.0, got.ServerCPUPct, 1e-9)
	require.InDelta(t, 10.0, got.ClientCPUPct, 1e-9)
	require.InDelta(t, 20.0, got.OtherCPUPct, 1e-9)
	require.InDelta(t, 5.0, got.StealCPUPct, 1e-9, "1 s stolen in 20 s")
	require.InDelta(t, 2.0, got.SettleSeconds, 1e-9)
	require.True(t, got.Unsettled, "a round that started on a busy machine marks the phase")
	require.Equal(t, 400.0, got.Batches)
	require.InDelta(t, 10.0, got.MeanBatch, 1e-9)
	require.InDelta(t, 1.0, got.MeanCommitMs, 1e-9)
	require.Equal(t, map[string]int{"HTTP 503": 3, "timeout": 1}, got.Errors.Count)
	require.Equal(t, "first HTTP 503", got.Errors.First["HTTP 503"])

	unknown := rounds[1]
	unknown.serverKnown = false
	unknown.summarize()
	require.Zero(t, mergeRounds([]pushResult{rounds[0], unknown}).ServerCPUus, "no server CPU unless every round knows it")
}

func TestJoinRates(t *testing.T) {
	for _, tc := range []struct {
		in       []float64
		decimals int
		want     string
	}{
		{nil, 0, ""},
		{[]float64{6454.4, 5536.6}, 0, "6454, 5537"},
		{[]float64{1.694, 1, 0.857}, 2, "1.69, 1.00, 0.86"},
	} {
		require.Equal(t, tc.want, joinRates(tc.in, tc.decimals))
	}
}

func TestWarmUpScrapesEveryCompressedModeOnce(t *testing.T) {
	var mu sync.Mutex
	var accepts []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		accepts = append(accepts, r.Header.Get("Accept")+" "+r.Header.Get("Accept-Encoding"))
		mu.Unlock()
		fmt.Fprintln(w, "m 1")
	}))
	defer srv.Close()
	l := newLoader(1, "j", 10, time.Second)
	tgt := &target{name: "s", url: srv.URL}
	require.NoError(t, l.warmUp(tgt, 10))
	require.NoError(t, l.warmUp(tgt, 20))
	var want []string
	for _, m := range scrapeModes {
		if m.Gzip {
			want = append(want, m.Accept+" gzip")
		}
	}
	require.Len(t, want, 2)
	require.Equal(t, want, accepts, "one scrape per compressed mode, on the first call only")

	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	require.ErrorContains(t, l.warmUp(&target{name: "f", url: failing.URL}, 10), "warm-up scrape prometheus+gzip: HTTP 503")
}

func TestOwnSummariesAskForTheirFamiliesOnly(t *testing.T) {
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.Query()["name[]"]
		fmt.Fprint(w, "pushrelay_a_sum 1.5\npushrelay_a_count 3\npushrelay_a_bucket{le=\"+Inf\"} 3\npushrelay_b_sum{x=\"y\"} 9\n")
	}))
	defer srv.Close()
	l := newLoader(1, "j", 10, time.Second)
	got := l.ownSummaries(&target{name: "s", url: srv.URL}, metricBatchSize, "pushrelay_a")
	require.Equal(t, []string{metricBatchSize, "pushrelay_a"}, asked)
	require.Equal(t, map[string]float64{"pushrelay_a_sum": 1.5, "pushrelay_a_count": 3}, got)
}

func TestScrapedAt(t *testing.T) {
	for _, tc := range []struct {
		scrapeMax, level int
		want             bool
	}{
		{0, 50000, true},
		{50000, 50000, true},
		{50000, 10000, true},
		{10000, 50000, false},
	} {
		require.Equal(t, tc.want, scrapedAt(tc.scrapeMax, tc.level), "%+v", tc)
	}
}

func TestKindScrapedAt(t *testing.T) {
	for _, tc := range []struct {
		k     kind
		level int
		want  bool
	}{
		{kind{}, 50000, true},
		{kind{scrapeMax: 10000}, 50000, false},
		{kind{pushOnly: true}, 1000, false},
	} {
		require.Equal(t, tc.want, tc.k.scrapedAt(tc.level), "%+v", tc)
	}
}

func TestProbeSync(t *testing.T) {
	dir := t.TempDir()
	sr, err := probeSync(dir)
	require.NoError(t, err)
	require.Equal(t, 200, sr.Syncs)
	require.Greater(t, sr.P50ms, 0.0)
	require.GreaterOrEqual(t, sr.P90ms, sr.P50ms)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "the probe file is removed")

	_, err = probeSync(filepath.Join(dir, "missing"))
	require.Error(t, err)
}

func TestSettle(t *testing.T) {
	const window = 5 * time.Millisecond
	for _, tc := range []struct {
		name string
		// busy is the CPU time the machine uses over each window, in
		// windows; the last one repeats.
		busy []float64
		// limit is settle's limit, in windows: long for the cases that
		// get quiet, so that slow sleeps on a loaded machine do not
		// reach it.
		limit      int
		wantQuiet  bool
		minWindows int
	}{
		{name: "quiet at once", busy: []float64{0.01}, limit: 1000, wantQuiet: true, minWindows: 1},
		{name: "busy three windows, then quiet", busy: []float64{1.5, 0.9, 0.2, 0.05}, limit: 1000, wantQuiet: true, minWindows: 4},
		{name: "just under the share", busy: []float64{0.09}, limit: 1000, wantQuiet: true, minWindows: 1},
		{name: "at the share", busy: []float64{0.1}, limit: 20, wantQuiet: false, minWindows: 20},
		{name: "never quiet", busy: []float64{0.3}, limit: 20, wantQuiet: false, minWindows: 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var used time.Duration
			calls := 0
			busy := func() time.Duration {
				if calls > 0 {
					used += time.Duration(tc.busy[min(calls-1, len(tc.busy)-1)] * float64(window))
				}
				calls++
				return used
			}
			waited, quiet := settle(busy, window, 0.1, time.Duration(tc.limit)*window)
			require.Equal(t, tc.wantQuiet, quiet)
			require.GreaterOrEqual(t, waited, time.Duration(tc.minWindows)*window)
			if tc.wantQuiet {
				require.Equal(t, tc.minWindows+1, calls, "one sample before the first window and one after each")
			}
		})
	}
}

func TestScrapeLevelPushesEveryGroupBeforeEachFirst(t *testing.T) {
	const groups = 4
	// variant names a push body by the pushBody variant it was built from.
	variant := map[string]int{}
	for v := range 4 * bodyVariants {
		variant[string(pushBody(v))] = v
	}
	for _, tc := range []struct {
		name        string
		isPushrelay bool
		unchanged   int
		wantFirsts  int
	}{
		{"pushrelay scraped after every repush", true, 0, 3},
		{"pushrelay pushes the groups a fill left unchanged first", true, 2, 3},
		{"other servers scraped once after the fill", false, 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLoader(2, "j", 0, 5*time.Second)
			l.settle = func() (time.Duration, bool) { return 0, true }
			var mu sync.Mutex
			var events []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(r.Body)
				assert.NoError(t, err)
				mu.Lock()
				defer mu.Unlock()
				if r.Method == http.MethodGet {
					events = append(events, "scrape "+r.Header.Get("Accept-Encoding"))
					fmt.Fprintln(w, "m 1")
					return
				}
				v, ok := variant[string(body)]
				assert.True(t, ok, "a push body of the load tool")
				events = append(events, fmt.Sprintf("%s %s body %d", r.Method, path.Base(r.URL.Path), v))
			}))
			defer srv.Close()
			c := &config{scrapeCount: 2, scrapeFirsts: 3, bigScrapeCount: 1, bigScrapeGroups: 50000, fillTimeout: time.Minute}
			res := &results{}
			require.NoError(t, scrapeLevel(c, l, res, &target{name: "s", url: srv.URL, isPushrelay: tc.isPushrelay}, groups, tc.unchanged))

			var want []string
			repushes := 0
			// repush expects groups [0, n) pushed with bodies no push had
			// before; the clients push concurrently, so in any order.
			repush := func(n int) {
				repushes++
				for g := range n {
					want = append(want, fmt.Sprintf("PUT g%06d body %d", g, repushes*bodyVariants+g%bodyVariants))
				}
				if len(events) >= len(want) {
					slices.Sort(events[len(want)-n : len(want)])
				}
			}
			enc := func(m scrapeMode) string { return map[bool]string{true: "gzip", false: "identity"}[m.Gzip] }
			if tc.isPushrelay && tc.unchanged > 0 {
				repush(tc.unchanged)
			}
			for _, m := range scrapeModes {
				want = append(want, "scrape "+enc(m), "scrape "+enc(m))
			}
			for range tc.wantFirsts - 1 {
				repush(groups)
				for _, m := range scrapeModes {
					want = append(want, "scrape "+enc(m))
				}
			}
			require.Equal(t, want, events)
			require.Len(t, res.Scrapes, len(scrapeModes))
			for _, s := range res.Scrapes {
				require.Empty(t, s.Err)
				require.Equal(t, 2, s.Scrapes, s.Mode)
				require.Len(t, s.FirstsSeconds, tc.wantFirsts, s.Mode)
			}
		})
	}
}

func TestAddFirstKeepsTheMedian(t *testing.T) {
	for _, tc := range []struct {
		firsts     []float64
		wantFirst  float64
		wantPerSec float64
	}{
		{[]float64{0.010}, 0.010, 5},
		{[]float64{0.010, 0.030}, 0.030, 15},
		{[]float64{0.030, 0.010, 0.020}, 0.020, 10},
		{[]float64{0.009, 0.050, 0.011, 0.010, 0.012}, 0.011, 5.5},
	} {
		s := scrapeResult{Samples: 2000, MedianSeconds: 0.002}
		s.FirstSeconds, s.FirstsSeconds = tc.firsts[0], slices.Clone(tc.firsts[:1])
		s.perSample()
		for _, f := range tc.firsts[1:] {
			s.addFirst(f)
		}
		require.Equal(t, tc.firsts, s.FirstsSeconds)
		require.InDelta(t, tc.wantFirst, s.FirstSeconds, 1e-12)
		require.InDelta(t, tc.wantPerSec, s.FirstUSPerSample, 1e-9)
		require.InDelta(t, 1.0, s.USPerSample, 1e-9)
	}
}

func TestScrapeLevelStopsWhenARepushFails(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			http.Error(w, "disk full", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "m 1")
	}))
	defer srv.Close()
	l := newLoader(2, "j", 0, 5*time.Second)
	l.settle = func() (time.Duration, bool) { return 0, true }
	c := &config{scrapeCount: 1, scrapeFirsts: 2, fillTimeout: time.Minute}
	tgt := &target{name: "s", url: srv.URL, isPushrelay: true}

	res := &results{}
	err := scrapeLevel(c, l, res, tgt, 3, 0)
	require.EqualError(t, err, "scrape at 3 groups: push of every group again: 0 of 3 ok, errors HTTP 500×3")
	require.Len(t, res.Scrapes, len(scrapeModes), "the scrapes made before the failure are kept")
	for _, s := range res.Scrapes {
		require.Empty(t, s.Err, "the scrapes themselves succeeded")
		require.Len(t, s.FirstsSeconds, 1, s.Mode)
	}

	res = &results{}
	err = scrapeLevel(c, l, res, tgt, 3, 2)
	require.EqualError(t, err, "scrape at 3 groups: push of every group again: 0 of 2 ok, errors HTTP 500×2")
	require.Empty(t, res.Scrapes, "no scrape follows a failed push of the groups a fill left unchanged")
}

func TestRepushed(t *testing.T) {
	tally := func(key string, n int) *errorTally {
		e := &errorTally{}
		for range n {
			e.add(key, key)
		}
		return e
	}
	for _, tc := range []struct {
		name string
		fr   fillResult
		want string
	}{
		{"every group pushed", fillResult{From: 0, To: 5, Done: 5, Errors: tally("", 0)}, ""},
		{"some refused", fillResult{From: 0, To: 5, Done: 3, Errors: tally("HTTP 503", 2)}, "push of every group again: 3 of 5 ok, errors HTTP 503×2"},
		{"timed out", fillResult{From: 0, To: 5, Done: 4, TimedOut: true, Errors: tally("", 0)}, "push of every group again timed out after 1m0s: 4 of 5 ok, errors 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := repushed(tc.fr, time.Minute)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tc.want)
		})
	}
}
