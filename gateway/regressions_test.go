package gateway_test

// This file holds regression tests for product bugs found while writing the
// gateway tests. Every test names the request, what the spec
// (/work/shared/spec/pushgateway.md) expects and what pushrelay did before
// the fix.

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/gateway"
)

// TestBugUnknownAPIPathIs404 — spec §2: PUT /api/v1/admin/wipe without
// --web.enable-admin-api is 404, and unknown paths are 404. The Pushgateway
// (checked against 1.5.1) answers 404 for both; pushrelay answers 405,
// because the OPTIONS catch-all route /api/v1/{anything} makes gorilla/mux
// report a method mismatch for every other method under /api/v1/.
func TestBugUnknownAPIPathIs404(t *testing.T) {
	scenarios := map[string]struct {
		method, path string
		admin        bool
	}{
		"wipe with admin API disabled": {method: http.MethodPut, path: "/api/v1/admin/wipe"},
		"GET of an unknown API path":   {method: http.MethodGet, path: "/api/v1/foo"},
		"PUT of an unknown API path":   {method: http.MethodPut, path: "/api/v1/foo", admin: true},
	}
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			g := MustNewGateway(t, withHandler(func(o *gateway.HandlerOptions) { o.EnableAdminAPI = s.admin }))
			rec := g.Do(s.method, s.path, nil)
			require.Equal(t, http.StatusNotFound, rec.Code, "%s %s answered %q", s.method, s.path, rec.Body.String())
			require.Equal(t, "404 page not found\n", rec.Body.String())
		})
	}
}

// TestBugNativeHistogramJSON — spec §8: for a native histogram,
// /api/v1/metrics gives "buckets" as Prometheus-API arrays
// [boundary_rule, "lower", "upper", "count"]. pushrelay gives the classic
// bucket map, which is empty for a native histogram: "buckets":{}.
func TestBugNativeHistogramJSON(t *testing.T) {
	g := MustNewGateway(t)
	g.At(1).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/native", delimited(t, fixtureNative()), "Content-Type", protoContentType)
	m := g.APIMetrics()[0]["native_seconds"].(map[string]any)["metrics"].([]any)[0].(map[string]any)
	// Schema 0, buckets 0 and 1 with counts 1 and 2: (0.5,1] and (1,2],
	// both open on the left (boundary rule 0).
	require.Equal(t, []any{
		[]any{float64(0), "0.5", "1", "1"},
		[]any{float64(0), "1", "2", "2"},
	}, m["buckets"])
	require.Equal(t, "3", m["count"])
	require.Equal(t, "3.5", m["sum"])
}

// TestBugTimestampOnPushedPushTime — spec §6: any sample carrying a
// timestamp rejects the push. A push whose only timestamped sample is a
// pushed push_time_seconds (or push_failure_time_seconds) is accepted with
// 200, because those families are dropped before the timestamp check. The
// Pushgateway 1.5.1 answers 400 "pushed metrics must not have timestamps".
func TestBugTimestampOnPushedPushTime(t *testing.T) {
	for _, name := range []string{"push_time_seconds", "push_failure_time_seconds"} {
		t.Run(name, func(t *testing.T) {
			g := MustNewGateway(t)
			rec := g.At(1).Do(http.MethodPut, "/metrics/job/j", []byte(name+" 1 1700000000000\nm 1\n"))
			require.Equal(t, http.StatusBadRequest, rec.Code)
			require.Equal(t, "pushed metrics are invalid or inconsistent with existing metrics: pushed metrics must not have timestamps\n", rec.Body.String())

			rec = g.At(2).Do(http.MethodPut, "/metrics/job/k", []byte(delimited(t, &dto.MetricFamily{
				Name: ptr(name), Type: dto.MetricType_GAUGE.Enum(),
				Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr(1.0)}, TimestampMs: ptr(int64(5))}},
			})), "Content-Type", protoContentType)
			require.Equal(t, http.StatusBadRequest, rec.Code)
		})
	}
}

// TestBugRestartTimestampFamilyTimes — spec §8: every family's
// "time_stamp" in /api/v1/metrics is the time of the push that last wrote
// it, and design §1 says a restart restores every group with its push
// times. After a restart the time_stamp of push_time_seconds and
// push_failure_time_seconds is rebuilt from the group's push time: a group
// created by a rejected push shows "0001-01-01T00:00:00Z" for both, and
// push_failure_time_seconds of any group shows its last push time instead
// of the time it was written.
func TestBugRestartTimestampFamilyTimes(t *testing.T) {
	g := MustNewGateway(t)
	g.At(1).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/ok", "m 1\n")
	g.At(2).MustDo(http.StatusOK, http.MethodPost, "/metrics/job/ok", "n 1\n")
	g.At(3).MustDo(http.StatusBadRequest, http.MethodPut, "/metrics/job/failed", "m 1 1\n")
	before := normalizeTimes(t, g.APIMetrics())
	require.Equal(t, "2023-11-14T22:13:23Z", before[0]["push_time_seconds"].(map[string]any)["time_stamp"])
	require.Equal(t, "2023-11-14T22:13:21Z", before[1]["push_failure_time_seconds"].(map[string]any)["time_stamp"])
	g.Restart()
	require.Equal(t, before, normalizeTimes(t, g.APIMetrics()))
}

// TestBugConcurrentScrapesRace — two scrapes at the same time race on the
// store's sorted-name cache: Store.render (and Store.Gatherer) call
// sortedNameList while holding only the read lock, and sortedNameList
// rebuilds and assigns s.sortedNames whenever a write has cleared it
// (store.go, "s.sortedNames = names"). Prometheus servers in HA pairs
// scrape at the same time, so after every push of a new metric name two
// readers write the field concurrently. `go test -race` reports a DATA
// RACE between two goroutines in (*Store).sortedNameList. Expected: no
// write under the read lock (build the list under the write lock in
// install, or guard the cache with its own mutex or an atomic.Pointer).
func TestBugConcurrentScrapesRace(t *testing.T) {
	g := MustNewGateway(t)
	for i := 0; i < 50; i++ {
		// A new name clears the cache.
		g.At(1).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/j", fmt.Sprintf("n%d 1\n", i))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for r := 0; r < 4; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if r%2 == 0 {
					g.Do(http.MethodGet, "/metrics", nil)
				} else {
					_, _ = g.store.Gatherer().Gather()
				}
			}()
		}
		close(start)
		wg.Wait()
	}
}
