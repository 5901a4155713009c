package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// scrapeProto returns GET /metrics in the delimited protobuf format.
func scrapeProto(t *testing.T, p *process) map[string]*dto.MetricFamily {
	t.Helper()
	format := expfmt.NewFormat(expfmt.TypeProtoDelim)
	r := do(t, http.MethodGet, p.url+"/metrics", http.Header{"Accept": {string(format)}}, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Contains(t, r.header.Get("Content-Type"), "application/vnd.google.protobuf")
	mfs := map[string]*dto.MetricFamily{}
	dec := expfmt.NewDecoder(bytes.NewReader(r.body), format)
	for {
		mf := &dto.MetricFamily{}
		err := dec.Decode(mf)
		if errors.Is(err, io.EOF) {
			return mfs
		}
		require.NoError(t, err)
		mfs[mf.GetName()] = mf
	}
}

// requireNativeJSON checks the /api/v1/metrics form of a native histogram
// (Pushgateway 1.8+): buckets are an array of Prometheus API buckets
// [boundary_rule, "lower", "upper", "count"] with per-bucket counts adding up
// to count.
func requireNativeJSON(t *testing.T, f apiFamily, count uint64, sum string) {
	t.Helper()
	require.Equal(t, "HISTOGRAM", f.Type)
	require.Len(t, f.Metrics, 1)
	m := f.Metrics[0]
	require.Equal(t, fmt.Sprint(count), m["count"])
	require.Equal(t, sum, m["sum"])
	buckets, ok := m["buckets"].([]any)
	require.True(t, ok, "native histogram buckets must be a JSON array of [boundary_rule, lower, upper, count], got %#v", m["buckets"])
	var total uint64
	for _, b := range buckets {
		bucket, ok := b.([]any)
		require.True(t, ok && len(bucket) == 4, "bucket %#v", b)
		rule, ok := bucket[0].(float64)
		require.True(t, ok && rule >= 0 && rule <= 3, "boundary rule of %#v", b)
		var lower, upper float64
		var n uint64
		for i, dst := range []any{&lower, &upper, &n} {
			s, ok := bucket[i+1].(string)
			require.True(t, ok, "bucket %#v: element %d is not a string", b, i+1)
			_, err := fmt.Sscan(s, dst)
			require.NoError(t, err, "bucket %#v", b)
		}
		require.Less(t, lower, upper, "bucket %#v", b)
		total += n
	}
	require.Equal(t, count, total, "bucket counts must add up to the count")
}

// TestClientGolangPush pushes with client_golang's push package, which sends
// delimited protobuf and base64-encodes a job and grouping values that
// contain '/' (and an empty value as '=').
func TestClientGolangPush(t *testing.T) {
	e2eTest(t)
	gw := startPushrelay(t)

	grouping := map[string]string{"job": "ci/nightly", "instance": "ci-runner-3", "path": "/var/lib/data", "env": ""}
	pusher := func(g prometheus.Gatherer) *push.Pusher {
		return push.New(gw.url, "ci/nightly").
			Grouping("instance", "ci-runner-3").
			Grouping("path", "/var/lib/data").
			Grouping("env", "").
			Client(&http.Client{Timeout: 10 * time.Second}).
			Gatherer(g)
	}

	reg := prometheus.NewRegistry()
	runs := prometheus.NewCounter(prometheus.CounterOpts{Name: "cg_runs_total", Help: "Runs of the batch."})
	lastSuccess := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cg_last_success_seconds", Help: "Last success per step."}, []string{"step"})
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cg_duration_seconds", Help: "Batch duration.", Buckets: []float64{0.5, 2}})
	native := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "cg_native_seconds", Help: "Step durations.",
		NativeHistogramBucketFactor: 1.1, NativeHistogramZeroThreshold: 1e-6,
	})
	reg.MustRegister(runs, lastSuccess, duration, native)
	runs.Add(2)
	lastSuccess.WithLabelValues("extract").Set(1795000000.5)
	lastSuccess.WithLabelValues("load").Set(1795000100.25)
	for _, v := range []float64{0.25, 1, 3} {
		duration.Observe(v)
	}
	for _, v := range []float64{0.001, 0.02, 0.02, 0.3, 4, 0} {
		native.Observe(v)
	}

	// Push: PUT of the whole group.
	from := time.Now()
	require.NoError(t, pusher(reg).Push())
	to := time.Now()

	g := requireGroup(t, getGroups(t, gw), grouping)
	require.True(t, g.LastPushSuccessful)
	requireBetween(t, g.timeValue(t, "push_time_seconds"), from, to)
	labels := func(extra ...string) obj { return seriesLabels(grouping, extra...) }
	require.Equal(t, []obj{{"labels": labels(), "value": "2"}}, g.Families["cg_runs_total"].Metrics)
	require.Equal(t, "COUNTER", g.Families["cg_runs_total"].Type)
	require.Equal(t, "Runs of the batch.", g.Families["cg_runs_total"].Help)
	require.ElementsMatch(t, []obj{
		{"labels": labels("step", "extract"), "value": "1.7950000005e+09"},
		{"labels": labels("step", "load"), "value": "1.79500010025e+09"},
	}, g.Families["cg_last_success_seconds"].Metrics)
	// Protobuf histograms carry no +Inf bucket; the JSON shows the buckets
	// that were pushed, as the Pushgateway does.
	require.Equal(t, []obj{{
		"labels":  labels(),
		"buckets": obj{"0.5": "1", "2": "2"},
		"count":   "3",
		"sum":     "4.25",
	}}, g.Families["cg_duration_seconds"].Metrics)

	t.Run("native histogram in the JSON API", func(t *testing.T) {
		requireNativeJSON(t, g.Families["cg_native_seconds"], 6, "4.341")
	})
	const sel = `env="",instance="ci-runner-3",job="ci/nightly",path="/var/lib/data"`
	text, _ := scrape(t, gw)
	requireLines(t, text,
		"# TYPE cg_runs_total counter",
		`cg_runs_total{`+sel+`} 2`,
		`cg_last_success_seconds{`+sel+`,step="extract"} 1.7950000005e+09`,
		`cg_duration_seconds_bucket{`+sel+`,le="0.5"} 1`,
		`cg_duration_seconds_bucket{`+sel+`,le="+Inf"} 3`,
		`cg_duration_seconds_sum{`+sel+`} 4.25`,
	)

	// The native histogram survives the protobuf round trip unchanged.
	sent, err := reg.Gather()
	require.NoError(t, err)
	var sentNative *dto.Histogram
	for _, mf := range sent {
		if mf.GetName() == "cg_native_seconds" {
			sentNative = mf.Metric[0].Histogram
		}
	}
	require.NotNil(t, sentNative)
	require.NotEmpty(t, sentNative.PositiveSpan, "client_golang sent no native buckets")
	scraped := scrapeProto(t, gw)["cg_native_seconds"]
	require.NotNil(t, scraped, "no cg_native_seconds in the protobuf exposition")
	require.Len(t, scraped.Metric, 1)
	require.True(t, proto.Equal(sentNative, scraped.Metric[0].Histogram),
		"sent %v\nscraped %v", sentNative, scraped.Metric[0].Histogram)

	// Add: POST replaces only the families it sends, each as a whole.
	addReg := prometheus.NewRegistry()
	addGauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cg_last_success_seconds", Help: "Last success per step."}, []string{"step"})
	addReg.MustRegister(addGauge)
	addGauge.WithLabelValues("load").Set(1795000200)
	from = time.Now()
	require.NoError(t, pusher(addReg).Add())
	to = time.Now()

	g2 := requireGroup(t, getGroups(t, gw), grouping)
	requireBetween(t, g2.timeValue(t, "push_time_seconds"), from, to)
	require.Equal(t, []obj{{"labels": labels("step", "load"), "value": "1.7950002e+09"}}, g2.Families["cg_last_success_seconds"].Metrics,
		"a POST replaces the whole family: step=extract must be gone")
	require.Equal(t, g.Families["cg_runs_total"], g2.Families["cg_runs_total"], "a family the POST did not send must stay as it was")
	require.Equal(t, g.Families["cg_duration_seconds"], g2.Families["cg_duration_seconds"])

	// Delete removes the group; a second delete is a no-op.
	require.NoError(t, pusher(reg).Delete())
	require.Nil(t, findGroup(getGroups(t, gw), grouping))
	require.NoError(t, pusher(reg).Delete())
	text, _ = scrape(t, gw)
	require.Empty(t, linesContaining(text, "cg_"))
}
