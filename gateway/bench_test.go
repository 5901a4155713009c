package gateway

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pushrelay/pushrelay/persistence"
)

// benchSamples is the number of samples in benchBody.
const benchSamples = 40

// benchBody returns the push body of cmd/pushrelay-bench: 10 counter
// samples, 17 gauge samples and a histogram with 10 buckets (13 samples).
func benchBody(variant int) []byte {
	v := float64(variant)
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	w("# HELP bench_job_runs_total Job runs by result.\n# TYPE bench_job_runs_total counter\n")
	for i, r := range []string{"success", "failure", "skipped"} {
		w("bench_job_runs_total{result=%q} %g\n", r, 1000+v*7+float64(i))
	}
	w("# HELP bench_records_processed_total Records processed by stage.\n# TYPE bench_records_processed_total counter\n")
	for i, s := range []string{"extract", "transform", "load"} {
		w("bench_records_processed_total{stage=%q} %g\n", s, 1e6+v*1234+float64(i))
	}
	w("# HELP bench_bytes_written_total Bytes written.\n# TYPE bench_bytes_written_total counter\n")
	w("bench_bytes_written_total %g\n", 1.5e9+v*4096)
	w("# HELP bench_retries_total Retries by reason.\n# TYPE bench_retries_total counter\n")
	for i, r := range []string{"timeout", "throttled", "error"} {
		w("bench_retries_total{reason=%q} %g\n", r, v+float64(i))
	}
	w("# HELP bench_last_success_timestamp_seconds Unix time of the last successful run.\n# TYPE bench_last_success_timestamp_seconds gauge\n")
	w("bench_last_success_timestamp_seconds %g\n", 1.7e9+v)
	w("# HELP bench_last_run_duration_seconds Duration of the last run.\n# TYPE bench_last_run_duration_seconds gauge\n")
	w("bench_last_run_duration_seconds %g\n", 12.5+v/10)
	w("# HELP bench_queue_depth Items waiting per queue.\n# TYPE bench_queue_depth gauge\n")
	for i := range 8 {
		w("bench_queue_depth{queue=\"q%d\"} %g\n", i, v+float64(i*3))
	}
	w("# HELP bench_workers Workers by state.\n# TYPE bench_workers gauge\n")
	w("bench_workers{state=\"busy\"} %g\nbench_workers{state=\"idle\"} %g\n", 3+v, 5-v/100)
	w("# HELP bench_memory_bytes Memory use by kind.\n# TYPE bench_memory_bytes gauge\n")
	for i, k := range []string{"heap", "stack", "rss"} {
		w("bench_memory_bytes{kind=%q} %g\n", k, 2.5e8+v*1024+float64(i<<20))
	}
	w("# HELP bench_up Whether the job ran.\n# TYPE bench_up gauge\nbench_up 1\n")
	w("# HELP bench_info Build information.\n# TYPE bench_info gauge\nbench_info{commit=\"4f2a9c1\",version=\"1.2.3\"} 1\n")
	w("# HELP bench_task_duration_seconds Task durations.\n# TYPE bench_task_duration_seconds histogram\n")
	cum := 0.0
	for i, le := range []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5} {
		cum += float64(10*i) + v
		w("bench_task_duration_seconds_bucket{le=\"%g\"} %g\n", le, cum)
	}
	cum += v + 3
	w("bench_task_duration_seconds_bucket{le=\"+Inf\"} %g\n", cum)
	w("bench_task_duration_seconds_sum %g\n", cum*0.37)
	w("bench_task_duration_seconds_count %g\n", cum)
	return []byte(sb.String())
}

func benchGrouping(i int) Grouping {
	return Grouping{"job": "pushrelay_bench", "instance": fmt.Sprintf("g%06d", i)}
}

// benchPush pushes body to group i with PUT, the way the HTTP handler
// does: through the group's template when the body only changed its
// values.
func benchPush(s *Store, body []byte, i int, wait bool) error {
	g := benchGrouping(i)
	tb, mfs, err := s.prepareTextOrParse(g, body)
	if err != nil {
		return err
	}
	if tb == nil {
		return s.push(g, mfs, true, wait, nil)
	}
	return s.submitText(g, tb, true, wait, nil)
}

// benchFill pushes groups [0, n) once each and waits until all are applied
// (the writer applies writes in order, so the last waited push flushes the
// queue).
func benchFill(tb testing.TB, s *Store, n int) {
	tb.Helper()
	benchRefill(tb, s, n, -1)
}

// benchRefill is benchFill with values that differ between groups and
// rounds, as the values of real pushes do, unless round is negative: then
// every group gets the same body. Varied values compress worse and make
// OpenMetrics convert more bucket counts.
func benchRefill(tb testing.TB, s *Store, n, round int) {
	tb.Helper()
	body := benchBody(0)
	bodyOf := func(i int) []byte {
		if round < 0 {
			return body
		}
		return benchBody(1 + round*n + i)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n-1 {
					return
				}
				if err := benchPush(s, bodyOf(i), i, false); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		tb.Fatal(err)
	}
	if err := benchPush(s, bodyOf(n-1), n-1, true); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkParseBody parses the 40-sample text body.
func BenchmarkParseBody(b *testing.B) {
	body := benchBody(1)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		mfs, err := parseBody(bytes.NewReader(body), "text/plain; version=0.0.4")
		if err != nil || len(mfs) != 12 {
			b.Fatalf("%d families, %v", len(mfs), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchSamples), "ns/sample")
}

// BenchmarkPush pushes the 40-sample body with PUT to random existing
// groups from many goroutines (16 per GOMAXPROCS, about the 32 clients of
// cmd/pushrelay-bench on two cores) and waits for each push to be applied
// and, with bbolt, committed. Parsing is included; HTTP is not.
func BenchmarkPush(b *testing.B) {
	for _, store := range []string{"memory", "bbolt"} {
		for _, groups := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("store=%s/groups=%d", store, groups), func(b *testing.B) {
				opts := StoreOptions{}
				if store == "bbolt" {
					db, err := persistence.Open(filepath.Join(b.TempDir(), "bench.db"), nil)
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { _ = db.Close() })
					opts.Persister = db
				}
				s, err := NewStore(opts)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(s.Close)
				benchFill(b, s, groups)
				bodies := make([][]byte, 16)
				for i := range bodies {
					bodies[i] = benchBody(i)
				}
				var seq atomic.Uint64
				b.SetParallelism(16)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					// A cheap per-goroutine pseudo-random sequence.
					x := seq.Add(0x9e3779b97f4a7c15) | 1
					n := 0
					for pb.Next() {
						x ^= x << 13
						x ^= x >> 7
						x ^= x << 17
						if err := benchPush(s, bodies[n%len(bodies)], int(x%uint64(groups)), true); err != nil {
							b.Error(err)
							return
						}
						n++
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
			})
		}
	}
}

// scrapeStores caches the filled in-memory stores of BenchmarkScrape across
// the benchmark's rounds; they are only read.
var scrapeStores = struct {
	sync.Mutex
	m map[int]*Store
}{m: map[int]*Store{}}

func scrapeStore(b *testing.B, groups int) *Store {
	scrapeStores.Lock()
	defer scrapeStores.Unlock()
	if s := scrapeStores.m[groups]; s != nil {
		return s
	}
	s, err := NewStore(StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	benchFill(b, s, groups)
	scrapeStores.m[groups] = s
	return s
}

// discardResponse is an http.ResponseWriter that counts and drops the body.
type discardResponse struct {
	h http.Header
	n int64
}

func (d *discardResponse) Header() http.Header         { return d.h }
func (d *discardResponse) WriteHeader(int)             {}
func (d *discardResponse) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }

// BenchmarkScrape serves /metrics for 1k and 10k groups of the 40-sample
// body (42 series per group with the push time gauges) through the
// exposition handler, in the formats a scraper asks for, and reports the
// time per exposed sample.
func BenchmarkScrape(b *testing.B) {
	const prometheusAccept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
	modes := []struct {
		name, accept string
		gzip         bool
		// repush re-pushes every group with new values (timer stopped)
		// before each scrape, as happens between two scrapes in
		// production, so that nothing cached per series survives.
		repush bool
		// repushSome re-pushes that many groups spread over the store
		// (timer stopped) before each scrape, as in production where a
		// few groups push between two scrapes.
		repushSome int
		// uncached drops every cached rendering (timer stopped) before
		// each scrape: the cost of rendering and compressing everything
		// without the garbage of a re-push.
		uncached bool
		// collect runs two garbage collections (timer stopped) before
		// each scrape, as a push load does between scrapes, which would
		// empty a sync.Pool of the scrape's writers and buffers.
		collect bool
	}{
		{"text", "text/plain;version=0.0.4", false, false, 0, false, false},
		{"text+gzip", "text/plain;version=0.0.4", true, false, 0, false, false},
		{"prometheus+gzip", prometheusAccept, true, false, 0, false, false},
		{"prometheus+gzip-after-repush", prometheusAccept, true, true, 0, false, false},
		{"prometheus+gzip-after-20-pushes", prometheusAccept, true, false, 20, false, false},
		{"text-uncached", "text/plain;version=0.0.4", false, false, 0, true, false},
		{"prometheus+gzip-uncached", prometheusAccept, true, false, 0, true, false},
		{"prometheus+gzip-uncached-after-gc", prometheusAccept, true, false, 0, true, true},
	}
	for _, groups := range []int{1000, 10000} {
		for _, mode := range modes {
			if mode.repush && groups > 1000 {
				continue
			}
			b.Run(fmt.Sprintf("groups=%d/%s", groups, mode.name), func(b *testing.B) {
				s := scrapeStore(b, groups)
				// Scrapes gather the own metrics a server has, as
				// cmd/pushrelay's do; the count below leaves them out.
				own := prometheus.NewRegistry()
				own.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
				h := s.ExpositionHandler(own)
				req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
				req.Header.Set("Accept", mode.accept)
				if mode.gzip {
					req.Header.Set("Accept-Encoding", "gzip")
				}
				// Count the samples in the text form of the same store.
				rec := httptest.NewRecorder()
				textReq := httptest.NewRequest(http.MethodGet, "/metrics", nil)
				textReq.Header.Set("Accept", "text/plain;version=0.0.4")
				s.ExpositionHandler(prometheus.NewRegistry()).ServeHTTP(rec, textReq)
				samples := 0
				for line := range bytes.Lines(rec.Body.Bytes()) {
					if len(line) > 1 && line[0] != '#' {
						samples++
					}
				}
				if want := groups * (benchSamples + 2); samples != want {
					b.Fatalf("%d samples exposed, want %d", samples, want)
				}
				// Bytes are those of the text form, whatever the mode.
				b.SetBytes(int64(rec.Body.Len()))
				b.ReportAllocs()
				b.ResetTimer()
				var wire int64
				for i := 0; i < b.N; i++ {
					if mode.repush {
						b.StopTimer()
						benchRefill(b, s, groups, i)
						b.StartTimer()
					}
					if mode.repushSome > 0 {
						b.StopTimer()
						for k := range mode.repushSome {
							g := (i*mode.repushSome + k) * 7919 % groups
							if err := benchPush(s, benchBody(i*mode.repushSome+k), g, false); err != nil {
								b.Fatal(err)
							}
						}
						b.StartTimer()
					}
					if mode.uncached {
						b.StopTimer()
						clearRenderCaches(s)
						if mode.collect {
							runtime.GC()
							runtime.GC()
						}
						b.StartTimer()
					}
					w := &discardResponse{h: http.Header{}}
					h.ServeHTTP(w, req)
					wire = w.n
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*samples), "ns/sample")
				b.ReportMetric(float64(wire), "wire-bytes/op")
			})
		}
	}
}

// BenchmarkNewFamilies sanitises, checks and encodes the families of the
// 40-sample body for one group, as every push does before the writer gets
// it.
func BenchmarkNewFamilies(b *testing.B) {
	body := benchBody(1)
	g := benchGrouping(7)
	key := g.Key()
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		mfs, err := parseBody(bytes.NewReader(body), "text/plain; version=0.0.4")
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		gl := groupingLabels(g)
		for _, p := range mfs {
			if _, err := newFamily(p, g, gl, key, now); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchSamples), "ns/sample")
}
