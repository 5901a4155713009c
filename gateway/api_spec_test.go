package gateway_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/gateway"
)

var corsHeaders = map[string]string{
	"Access-Control-Allow-Headers":  "Accept, Authorization, Content-Type, Origin",
	"Access-Control-Allow-Methods":  "GET, POST, DELETE, OPTIONS",
	"Access-Control-Allow-Origin":   "*",
	"Access-Control-Expose-Headers": "Date",
	"Cache-Control":                 "no-cache, no-store, must-revalidate",
}

func requireCORS(t *testing.T, h http.Header) {
	t.Helper()
	for name, v := range corsHeaders {
		require.Equal(t, v, h.Get(name), name)
	}
}

// indentJSON re-indents a JSON body for a readable golden file.
func indentJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	require.NoError(t, json.Indent(&out, b, "", "  "))
	out.WriteByte('\n')
	return out.Bytes()
}

func TestAPIMetrics(t *testing.T) {
	g := MustNewGateway(t)
	pushFixture(t, g)
	rec := g.Do(http.MethodGet, "/api/v1/metrics", nil)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	requireCORS(t, rec.Header())
	requireGolden(t, "api_metrics.json", indentJSON(t, rec.Body.Bytes()))

	t.Run("shape", func(t *testing.T) {
		groups := g.APIMetrics()
		byJob := map[string]map[string]any{}
		for _, grp := range groups {
			labels := grp["labels"].(map[string]any)
			if labels["instance"] == nil {
				byJob[labels["job"].(string)] = grp
			}
		}
		batch := byJob["batch"]
		require.NotNil(t, batch)
		require.Equal(t, map[string]any{"job": "batch"}, batch["labels"], "labels are the grouping labels only")
		require.Equal(t, true, batch["last_push_successful"])
		require.Equal(t, false, byJob["failed"]["last_push_successful"])
		jobs := batch["jobs_total"].(map[string]any)
		require.Equal(t, "COUNTER", jobs["type"])
		require.Equal(t, "Jobs processed.", jobs["help"])
		require.Equal(t, "2023-11-14T22:13:21Z", jobs["time_stamp"], "the time of the push that wrote the family")
		last := batch["last_success"].(map[string]any)
		require.Equal(t, "2023-11-14T22:13:26Z", last["time_stamp"], "a POST stamps only its own families")
		require.NotContains(t, last, "help", "empty help is omitted")
		push := batch["push_time_seconds"].(map[string]any)
		require.Equal(t, "1.700000006e+09", push["metrics"].([]any)[0].(map[string]any)["value"])
		summary := batch["rpc_duration_seconds"].(map[string]any)["metrics"].([]any)[0].(map[string]any)
		require.Equal(t, map[string]any{"0.5": "0.25", "0.9": "1.5"}, summary["quantiles"])
		require.Equal(t, "100", summary["count"])
		require.Equal(t, "42.5", summary["sum"])
		hist := batch["req_size_bytes"].(map[string]any)["metrics"].([]any)[0].(map[string]any)
		require.Equal(t, map[string]any{"100": "3", "1000": "5", "+Inf": "6"}, hist["buckets"])
		require.Equal(t, "6", hist["count"])
		require.Equal(t, "4321", hist["sum"])
	})
}

func TestAPIMetricsEmpty(t *testing.T) {
	g := MustNewGateway(t)
	require.Equal(t, `{"status":"success","data":[]}`, g.MustDo(http.StatusOK, http.MethodGet, "/api/v1/metrics", ""))
}

func TestAPIStatus(t *testing.T) {
	g := MustNewGateway(t, withHandler(func(o *gateway.HandlerOptions) {
		o.Flags = map[string]string{
			"web.listen-address":   ":9091",
			"persistence.interval": "5m0s",
			"web.enable-admin-api": "false",
		}
		o.BuildInfo = map[string]string{
			"version": "1.2.3", "revision": "abc", "branch": "main",
			"buildUser": "ci", "buildDate": "20240101-00:00:00", "goVersion": "go1.26",
		}
		o.StartTime = time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	}))
	rec := g.Do(http.MethodGet, "/api/v1/status", nil)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	requireCORS(t, rec.Header())
	requireGolden(t, "api_status.json", indentJSON(t, rec.Body.Bytes()))
}

func TestAPIOptions(t *testing.T) {
	g := MustNewGateway(t)
	for _, path := range []string{"/api/v1/metrics", "/api/v1/status", "/api/v1/anything/at/all", "/api/v1/admin/wipe"} {
		t.Run(path, func(t *testing.T) {
			rec := g.Do(http.MethodOptions, path, nil)
			require.Equal(t, http.StatusOK, rec.Code)
			require.Empty(t, rec.Body.String())
			requireCORS(t, rec.Header())
		})
	}
}
