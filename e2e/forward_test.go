// This file tests OTLP forwarding end to end: the real binary forwards to a
// real OTLP gRPC MetricsService in the test process, which is stopped and
// restarted to check that a collector outage never slows pushes.

package e2e

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
)

// otlpCollector is an OTLP gRPC MetricsService that keeps every request it
// receives, in order.
type otlpCollector struct {
	collmetrics.UnimplementedMetricsServiceServer
	mu   sync.Mutex
	reqs []*collmetrics.ExportMetricsServiceRequest
}

func (c *otlpCollector) Export(_ context.Context, req *collmetrics.ExportMetricsServiceRequest) (*collmetrics.ExportMetricsServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, req)
	return &collmetrics.ExportMetricsServiceResponse{}, nil
}

// received returns the resource metrics of the requests from the index from
// on, in order of arrival, and the number of requests so far.
func (c *otlpCollector) received(from int) ([]*metricspb.ResourceMetrics, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*metricspb.ResourceMetrics
	for _, req := range c.reqs[min(from, len(c.reqs)):] {
		out = append(out, req.ResourceMetrics...)
	}
	return out, len(c.reqs)
}

// collectorServer serves an otlpCollector on one address.
type collectorServer struct {
	srv  *grpc.Server
	done chan struct{}
}

// serveCollector serves c on addr ("127.0.0.1:0" for a new port) until stop
// or the end of the test, and returns the address.
func serveCollector(t *testing.T, addr string, c *otlpCollector) (string, *collectorServer) {
	t.Helper()
	var lis net.Listener
	// The port of a stopped server is normally free at once; allow for a
	// moment of delay.
	eventually(t, 5*time.Second, func() error {
		var err error
		lis, err = net.Listen("tcp", addr)
		return err
	})
	s := &collectorServer{srv: grpc.NewServer(), done: make(chan struct{})}
	collmetrics.RegisterMetricsServiceServer(s.srv, c)
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(lis)
	}()
	t.Cleanup(s.stop)
	return lis.Addr().String(), s
}

// stop closes the listener and every connection at once.
func (s *collectorServer) stop() {
	s.srv.Stop()
	<-s.done
}

// resAttrs returns the resource attributes of rm as strings.
func resAttrs(rm *metricspb.ResourceMetrics) map[string]string {
	return kvMap(rm.GetResource().GetAttributes())
}

func kvMap(kvs []*commonpb.KeyValue) map[string]string {
	out := map[string]string{}
	for _, kv := range kvs {
		out[kv.Key] = kv.Value.GetStringValue()
	}
	return out
}

// kvKey is a canonical form of an attribute set.
func kvKey(m map[string]string) string {
	keys := sortedKeys(m)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q,", k, m[k])
	}
	return b.String()
}

// byService returns, for each service.name, the resources received with it,
// in order of arrival.
func byService(rms []*metricspb.ResourceMetrics) map[string][]*metricspb.ResourceMetrics {
	out := map[string][]*metricspb.ResourceMetrics{}
	for _, rm := range rms {
		name := resAttrs(rm)["service.name"]
		out[name] = append(out[name], rm)
	}
	return out
}

// otlpMetrics returns the metrics of rm by name, failing on a repeated name.
func otlpMetrics(rm *metricspb.ResourceMetrics) (map[string]*metricspb.Metric, error) {
	out := map[string]*metricspb.Metric{}
	for _, sm := range rm.ScopeMetrics {
		if sm.GetScope().GetName() != "github.com/pushrelay/pushrelay" {
			return nil, fmt.Errorf("scope %q", sm.GetScope().GetName())
		}
		for _, m := range sm.Metrics {
			if _, dup := out[m.Name]; dup {
				return nil, fmt.Errorf("metric %s sent twice in one resource", m.Name)
			}
			out[m.Name] = m
		}
	}
	return out, nil
}

// seriesAttrs returns the labels of an exposed series as the attributes of
// the forwarded data point: without job and instance for a push group.
func seriesAttrs(m *dto.Metric, dropGrouping bool) map[string]string {
	out := map[string]string{}
	for _, lp := range m.Label {
		if dropGrouping && (lp.GetName() == "job" || lp.GetName() == "instance") {
			continue
		}
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// matchExposition checks that the forwarded metrics are exactly the exposed
// families: the same names, each with the OTLP type the README promises
// (counters as monotonic cumulative sums, gauges and untyped as gauges,
// histograms with the same bounds and per-bucket counts, summaries with the
// same quantiles) and the same values, series by series.
func matchExposition(got map[string]*metricspb.Metric, want []*dto.MetricFamily, dropGrouping bool) error {
	var wantNames []string
	for _, mf := range want {
		wantNames = append(wantNames, mf.GetName())
	}
	sort.Strings(wantNames)
	if gotNames := sortedKeys(got); !slices.Equal(gotNames, wantNames) {
		return fmt.Errorf("forwarded metrics %v, /metrics has %v", gotNames, wantNames)
	}
	cumulative := metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	for _, mf := range want {
		m := got[mf.GetName()]
		if m.Unit != "" {
			return fmt.Errorf("%s: unit %q", m.Name, m.Unit)
		}
		if m.Description != mf.GetHelp() {
			return fmt.Errorf("%s: description %q, help %q", m.Name, m.Description, mf.GetHelp())
		}
		// Series by attribute set.
		wantSeries := map[string]*dto.Metric{}
		for _, dm := range mf.Metric {
			wantSeries[kvKey(seriesAttrs(dm, dropGrouping))] = dm
		}
		checkAttrs := func(n int, attrs []*commonpb.KeyValue) (*dto.Metric, error) {
			if n != len(wantSeries) {
				return nil, fmt.Errorf("%s: %d data points, /metrics has %d series", m.Name, n, len(wantSeries))
			}
			dm := wantSeries[kvKey(kvMap(attrs))]
			if dm == nil {
				return nil, fmt.Errorf("%s: data point with attributes %v is not on /metrics", m.Name, kvMap(attrs))
			}
			return dm, nil
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			sum := m.GetSum()
			if sum == nil || !sum.IsMonotonic || sum.AggregationTemporality != cumulative {
				return fmt.Errorf("%s: counter forwarded as %v, want a monotonic cumulative sum", m.Name, m.Data)
			}
			for _, dp := range sum.DataPoints {
				dm, err := checkAttrs(len(sum.DataPoints), dp.Attributes)
				if err != nil {
					return err
				}
				if dp.GetAsDouble() != dm.GetCounter().GetValue() {
					return fmt.Errorf("%s%v: %v, /metrics has %v", m.Name, kvMap(dp.Attributes), dp.GetAsDouble(), dm.GetCounter().GetValue())
				}
				if dp.StartTimeUnixNano == 0 || dp.StartTimeUnixNano > dp.TimeUnixNano {
					return fmt.Errorf("%s: start time %d, time %d", m.Name, dp.StartTimeUnixNano, dp.TimeUnixNano)
				}
			}
		case dto.MetricType_GAUGE, dto.MetricType_UNTYPED:
			gauge := m.GetGauge()
			if gauge == nil {
				return fmt.Errorf("%s: %v forwarded as %v, want a gauge", m.Name, mf.GetType(), m.Data)
			}
			for _, dp := range gauge.DataPoints {
				dm, err := checkAttrs(len(gauge.DataPoints), dp.Attributes)
				if err != nil {
					return err
				}
				v := dm.GetGauge().GetValue()
				if dm.Untyped != nil {
					v = dm.GetUntyped().GetValue()
				}
				if dp.GetAsDouble() != v {
					return fmt.Errorf("%s%v: %v, /metrics has %v", m.Name, kvMap(dp.Attributes), dp.GetAsDouble(), v)
				}
			}
		case dto.MetricType_HISTOGRAM:
			hist := m.GetHistogram()
			if hist == nil || hist.AggregationTemporality != cumulative {
				return fmt.Errorf("%s: histogram forwarded as %v, want a cumulative histogram", m.Name, m.Data)
			}
			for _, dp := range hist.DataPoints {
				dm, err := checkAttrs(len(hist.DataPoints), dp.Attributes)
				if err != nil {
					return err
				}
				h := dm.GetHistogram()
				var bounds []float64
				var counts []uint64
				var prev uint64
				for _, b := range h.GetBucket() {
					if math.IsInf(b.GetUpperBound(), 1) {
						continue
					}
					bounds = append(bounds, b.GetUpperBound())
					counts = append(counts, b.GetCumulativeCount()-prev)
					prev = b.GetCumulativeCount()
				}
				counts = append(counts, h.GetSampleCount()-prev)
				if !slices.Equal(dp.ExplicitBounds, bounds) || !slices.Equal(dp.BucketCounts, counts) {
					return fmt.Errorf("%s%v: bounds %v counts %v, /metrics has bounds %v counts %v", m.Name, kvMap(dp.Attributes), dp.ExplicitBounds, dp.BucketCounts, bounds, counts)
				}
				if dp.Count != h.GetSampleCount() || dp.GetSum() != h.GetSampleSum() {
					return fmt.Errorf("%s%v: count %d sum %v, /metrics has %d and %v", m.Name, kvMap(dp.Attributes), dp.Count, dp.GetSum(), h.GetSampleCount(), h.GetSampleSum())
				}
			}
		case dto.MetricType_SUMMARY:
			summary := m.GetSummary()
			if summary == nil {
				return fmt.Errorf("%s: summary forwarded as %v", m.Name, m.Data)
			}
			for _, dp := range summary.DataPoints {
				dm, err := checkAttrs(len(summary.DataPoints), dp.Attributes)
				if err != nil {
					return err
				}
				s := dm.GetSummary()
				var q, gq []string
				for _, x := range s.GetQuantile() {
					q = append(q, fmt.Sprintf("%v:%v", x.GetQuantile(), x.GetValue()))
				}
				for _, x := range dp.QuantileValues {
					gq = append(gq, fmt.Sprintf("%v:%v", x.Quantile, x.Value))
				}
				if !slices.Equal(q, gq) || dp.Count != s.GetSampleCount() || dp.Sum != s.GetSampleSum() {
					return fmt.Errorf("%s%v: quantiles %v count %d sum %v, /metrics has %v, %d, %v", m.Name, kvMap(dp.Attributes), gq, dp.Count, dp.Sum, q, s.GetSampleCount(), s.GetSampleSum())
				}
			}
		default:
			return fmt.Errorf("%s: unexpected type %v on /metrics", mf.GetName(), mf.GetType())
		}
	}
	return nil
}

// exposedFamilies returns the families of mfs restricted to the series that
// keep returns true for, without families left empty.
func exposedFamilies(mfs map[string]*dto.MetricFamily, keep func(name string, m *dto.Metric) bool) []*dto.MetricFamily {
	var out []*dto.MetricFamily
	for _, name := range sortedKeys(mfs) {
		mf := mfs[name]
		var ms []*dto.Metric
		for _, m := range mf.Metric {
			if keep(name, m) {
				ms = append(ms, m)
			}
		}
		if len(ms) > 0 {
			out = append(out, &dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type, Metric: ms})
		}
	}
	return out
}

// labelIs returns a filter for the series with label name=value.
func labelIs(name, value string) func(string, *dto.Metric) bool {
	return func(_ string, m *dto.Metric) bool {
		for _, lp := range m.Label {
			if lp.GetName() == name {
				return lp.GetValue() == value
			}
		}
		return false
	}
}

// forwardExports returns pushrelay_forward_exports_total{result}.
func forwardExports(gw *process, result string) (float64, error) {
	r, err := doErr(http.MethodGet, gw.url+"/metrics", nil, nil)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(r.body), "\n") {
		if v, ok := strings.CutPrefix(line, `pushrelay_forward_exports_total{result="`+result+`"} `); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no pushrelay_forward_exports_total{result=%q} on /metrics", result)
}

// sendForwardSpans sends three server spans of service fwd-api with the
// OpenTelemetry Go SDK's OTLP HTTP exporter, one of them failed.
func sendForwardSpans(t *testing.T, endpoint string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpoint(endpoint),
		otlptracehttp.WithInsecure(),
		otlptracehttp.WithTimeout(10*time.Second),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}),
	)
	require.NoError(t, err)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSyncer(exp),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "fwd-api"))),
	)
	begin := time.Now().Add(-time.Second)
	for i, d := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 300 * time.Millisecond} {
		at := begin.Add(time.Duration(i) * 100 * time.Millisecond)
		_, span := tp.Tracer("e2e").Start(ctx, "GET /items",
			trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(at))
		if i == 2 {
			span.SetStatus(codes.Error, "timeout")
		}
		span.End(trace.WithTimestamp(at.Add(d)))
	}
	require.NoError(t, tp.Shutdown(ctx))
}

// latencyStats returns the 50th and 99th percentiles and the maximum.
func latencyStats(ds []time.Duration) (p50, p99, maxD time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[int(math.Ceil(q*float64(len(s))))-1] }
	return at(0.50), at(0.99), s[len(s)-1]
}

// timedPushes sends n PUTs of a one-gauge group one after the other, the
// i-th no sooner than i*every after the first, and returns the latency of
// each; every push must be answered 200.
func timedPushes(t *testing.T, gw *process, job string, n int, every time.Duration) []time.Duration {
	t.Helper()
	ds := make([]time.Duration, n)
	begin := time.Now()
	for i := range n {
		time.Sleep(time.Until(begin.Add(time.Duration(i) * every)))
		body := fmt.Appendf(nil, "# TYPE fwd_load_value gauge\nfwd_load_value %d\n", i)
		from := time.Now()
		r, err := doErr(http.MethodPut, gw.url+"/metrics/job/"+job+"/instance/client", nil, body)
		ds[i] = time.Since(from)
		require.NoError(t, err, "push %d", i)
		require.Equal(t, http.StatusOK, r.status, "push %d: %s", i, r.body)
	}
	return ds
}

// TestForwardToCollector runs pushrelay forwarding every second to a real
// OTLP gRPC MetricsService and checks what arrives against what /metrics
// shows: names, types, values, resources, temporality and start times of
// pushed groups and span metrics. It then stops the collector and checks
// that pushes are not slowed, that failures are counted and logged at a
// limited rate, and that forwarding resumes by itself when a collector
// comes back on the same address, without a group deleted meanwhile.
func TestForwardToCollector(t *testing.T) {
	e2eTest(t)
	testStart := time.Now()
	coll := &otlpCollector{}
	collAddr, collSrv := serveCollector(t, "127.0.0.1:0", coll)
	gw, otlpAddr := startPushrelayReceiver(t, "--traces.otlp-http.listen-address",
		"--forward.otlp.endpoint="+collAddr,
		"--forward.otlp.insecure",
		"--forward.otlp.interval=1s",
	)

	send(t, gw, http.MethodPut, "/metrics/job/fwd_batch/instance/worker-1", `# HELP fwd_records_total Records processed.
# TYPE fwd_records_total counter
fwd_records_total{step="load"} 12
fwd_records_total{step="save"} 3
# TYPE fwd_last_size_bytes gauge
fwd_last_size_bytes 123456
fwd_untyped{kind="x"} 7
# HELP fwd_duration_seconds Run time.
# TYPE fwd_duration_seconds histogram
fwd_duration_seconds_bucket{le="0.1"} 1
fwd_duration_seconds_bucket{le="1"} 3
fwd_duration_seconds_bucket{le="10"} 4
fwd_duration_seconds_bucket{le="+Inf"} 5
fwd_duration_seconds_sum 17.5
fwd_duration_seconds_count 5
# TYPE fwd_latency_seconds summary
fwd_latency_seconds{quantile="0.5"} 0.2
fwd_latency_seconds{quantile="0.99"} 1.5
fwd_latency_seconds_sum 9
fwd_latency_seconds_count 20
`, http.StatusOK)
	send(t, gw, http.MethodPut, "/metrics/job/fwd_nightly/env/prod", `# TYPE fwd_records_processed gauge
fwd_records_processed{table="users"} 99
# TYPE fwd_errors counter
fwd_errors 4
`, http.StatusOK)
	send(t, gw, http.MethodPut, "/metrics/job/fwd_doomed/instance/worker-9", "# TYPE fwd_doomed_value gauge\nfwd_doomed_value 1\n", http.StatusOK)
	sendForwardSpans(t, otlpAddr)

	// What arrives matches /metrics, resource by resource, in a collector
	// that received at least two exports of everything.
	var batch, nightly, spans []*metricspb.ResourceMetrics
	eventually(t, 20*time.Second, func() error {
		_, mfs := scrape(t, gw)
		rms, _ := coll.received(0)
		services := byService(rms)
		batch, nightly, spans = services["fwd_batch"], services["fwd_nightly"], services["pushrelay"]
		for name, rs := range map[string][]*metricspb.ResourceMetrics{"fwd_batch": batch, "fwd_nightly": nightly, "fwd_doomed": services["fwd_doomed"], "pushrelay": spans} {
			if len(rs) < 2 {
				return fmt.Errorf("%d exports of %s so far", len(rs), name)
			}
		}
		groups := []struct {
			job   string
			attrs map[string]string
			rm    *metricspb.ResourceMetrics
		}{
			{"fwd_batch", map[string]string{"service.name": "fwd_batch", "service.instance.id": "worker-1"}, batch[len(batch)-1]},
			{"fwd_nightly", map[string]string{"service.name": "fwd_nightly", "env": "prod"}, nightly[len(nightly)-1]},
		}
		for _, g := range groups {
			if got := resAttrs(g.rm); !equalLabels(got, g.attrs) {
				return fmt.Errorf("resource of %s: %v, want %v", g.job, got, g.attrs)
			}
			got, err := otlpMetrics(g.rm)
			if err != nil {
				return err
			}
			if err := matchExposition(got, exposedFamilies(mfs, labelIs("job", g.job)), true); err != nil {
				return fmt.Errorf("group %s: %w", g.job, err)
			}
		}
		last := spans[len(spans)-1]
		got, err := otlpMetrics(last)
		if err != nil {
			return err
		}
		want := exposedFamilies(mfs, func(name string, _ *dto.Metric) bool { return strings.HasPrefix(name, "traces_") })
		if err := matchExposition(got, want, false); err != nil {
			return fmt.Errorf("span metrics: %w", err)
		}
		return nil
	})

	// A few values spelled out, beyond the comparison with /metrics.
	bm, err := otlpMetrics(batch[len(batch)-1])
	require.NoError(t, err)
	require.Equal(t, "Records processed.", bm["fwd_records_total"].Description)
	hist := bm["fwd_duration_seconds"].GetHistogram().DataPoints[0]
	require.Equal(t, []float64{0.1, 1, 10}, hist.ExplicitBounds)
	require.Equal(t, []uint64{1, 2, 1, 1}, hist.BucketCounts)
	require.Equal(t, uint64(5), hist.Count)
	require.Equal(t, 17.5, hist.GetSum())
	require.Empty(t, kvMap(hist.Attributes), "job and instance move to the resource")
	sq := bm["fwd_latency_seconds"].GetSummary().DataPoints[0]
	require.Equal(t, uint64(20), sq.Count)
	require.Equal(t, 9.0, sq.Sum)
	require.Len(t, sq.QuantileValues, 2)
	require.Equal(t, [2]float64{0.5, 0.2}, [2]float64{sq.QuantileValues[0].Quantile, sq.QuantileValues[0].Value})
	require.Equal(t, [2]float64{0.99, 1.5}, [2]float64{sq.QuantileValues[1].Quantile, sq.QuantileValues[1].Value})
	require.Equal(t, 7.0, bm["fwd_untyped"].GetGauge().DataPoints[0].GetAsDouble(), "untyped becomes a gauge")
	require.Contains(t, bm, "push_time_seconds")
	nm, err := otlpMetrics(nightly[len(nightly)-1])
	require.NoError(t, err)
	errs := nm["fwd_errors"].GetSum()
	require.NotNil(t, errs, "a counter without _total keeps its name and is a sum")
	require.True(t, errs.IsMonotonic)
	require.Equal(t, 4.0, errs.DataPoints[0].GetAsDouble())
	// The package documentation: data points keep every label but job and
	// instance, so the grouping label env is on the resource and the point.
	require.Equal(t, map[string]string{"env": "prod", "table": "users"}, kvMap(nm["fwd_records_processed"].GetGauge().DataPoints[0].Attributes))

	sm, err := otlpMetrics(spans[len(spans)-1])
	require.NoError(t, err)
	require.Equal(t, "pushrelay", resAttrs(spans[len(spans)-1])["service.name"])
	require.Contains(t, sm, "traces_spanmetrics_calls_total")
	require.Contains(t, sm, "traces_spanmetrics_latency", "no unit suffix")
	for name := range sm {
		require.NotContains(t, []string{"traces_spanmetrics_latency_seconds", "traces_spanmetrics_latency_milliseconds"}, name)
	}
	calls := map[string]float64{}
	for _, dp := range sm["traces_spanmetrics_calls_total"].GetSum().DataPoints {
		a := kvMap(dp.Attributes)
		require.Equal(t, "fwd-api", a["service"])
		require.Equal(t, "GET /items", a["span_name"])
		require.Equal(t, "SPAN_KIND_SERVER", a["span_kind"])
		calls[a["status_code"]] = dp.GetAsDouble()
	}
	require.Equal(t, map[string]float64{"STATUS_CODE_UNSET": 2, "STATUS_CODE_ERROR": 1}, calls)
	lat := sm["traces_spanmetrics_latency"].GetHistogram()
	require.Equal(t, metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, lat.AggregationTemporality)
	var latCount uint64
	for _, dp := range lat.DataPoints {
		require.Equal(t, 0.002, dp.ExplicitBounds[0])
		require.Equal(t, 16.384, dp.ExplicitBounds[len(dp.ExplicitBounds)-1])
		latCount += dp.Count
	}
	require.Equal(t, uint64(3), latCount)
	for _, rm := range append(append(slices.Clone(batch), nightly...), spans...) {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if s := m.GetSum(); s != nil {
					require.Equal(t, metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, s.AggregationTemporality, m.Name)
				}
				if h := m.GetHistogram(); h != nil {
					require.Equal(t, metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, h.AggregationTemporality, m.Name)
				}
			}
		}
	}

	// Cumulative start times stay put from one export to the next: the
	// family's push time for a pushed counter.
	pushed := familyTime(t, gw, map[string]string{"job": "fwd_batch", "instance": "worker-1"}, "fwd_records_total")
	startOf := func(rm *metricspb.ResourceMetrics, name string, match map[string]string) (start, at uint64) {
		t.Helper()
		ms, err := otlpMetrics(rm)
		require.NoError(t, err)
		for _, dp := range ms[name].GetSum().GetDataPoints() {
			if equalLabels(kvMap(dp.Attributes), match) {
				return dp.StartTimeUnixNano, dp.TimeUnixNano
			}
		}
		require.Failf(t, "no data point", "%s%v", name, match)
		return 0, 0
	}
	s1, t1 := startOf(batch[0], "fwd_records_total", map[string]string{"step": "load"})
	s2, t2 := startOf(batch[len(batch)-1], "fwd_records_total", map[string]string{"step": "load"})
	require.Greater(t, t2, t1, "two different exports")
	require.Equal(t, s1, s2, "start time of a counter across exports")
	require.Equal(t, uint64(pushed.UnixNano()), s1, "start time of a pushed counter is its push time")
	u := map[string]string{"service": "fwd-api", "span_name": "GET /items", "span_kind": "SPAN_KIND_SERVER", "status_code": "STATUS_CODE_UNSET"}
	s1, t1 = startOf(spans[0], "traces_spanmetrics_calls_total", u)
	s2, t2 = startOf(spans[len(spans)-1], "traces_spanmetrics_calls_total", u)
	require.Greater(t, t2, t1)
	require.Equal(t, s1, s2, "start time of a span metric counter across exports")
	t.Logf("%d exports of fwd_batch, %d of the span metrics after %v", len(batch), len(spans), time.Since(testStart).Round(time.Millisecond))

	// Push latency with the collector up, then down: 1000 pushes paced over
	// 3 s each time, so that they overlap several forwarding rounds.
	const (
		pushes    = 1000
		pushEvery = 3 * time.Millisecond
	)
	successBefore, err := forwardExports(gw, "success")
	require.NoError(t, err)
	up := timedPushes(t, gw, "fwd_load", pushes, pushEvery)
	successAfter, err := forwardExports(gw, "success")
	require.NoError(t, err)
	failures, err := forwardExports(gw, "failure")
	require.NoError(t, err)
	require.Zero(t, failures, "no failure while the collector is up")
	require.Zero(t, strings.Count(gw.log(), "cannot forward metrics"))

	collSrv.stop()
	stoppedAt := time.Now()
	// The pushes start once a round has failed: the collector is known to
	// be down.
	eventually(t, 15*time.Second, func() error {
		n, err := forwardExports(gw, "failure")
		if err == nil && n < 1 {
			err = fmt.Errorf("no failed export since the collector stopped")
		}
		return err
	})
	failures, err = forwardExports(gw, "failure")
	require.NoError(t, err)
	downFrom := time.Now()
	down := timedPushes(t, gw, "fwd_load", pushes, pushEvery)
	downFor := time.Since(downFrom)
	failuresAfter, err := forwardExports(gw, "failure")
	require.NoError(t, err)
	upP50, upP99, upMax := latencyStats(up)
	downP50, downP99, downMax := latencyStats(down)
	t.Logf("push latency, collector up:   p50 %v p99 %v max %v (%v successful rounds meanwhile)", upP50, upP99, upMax, successAfter-successBefore)
	t.Logf("push latency, collector down: p50 %v p99 %v max %v (%v failed rounds meanwhile, %d pushes in %v)", downP50, downP99, downMax, failuresAfter-failures, pushes, downFor.Round(time.Millisecond))
	t.Logf("down/up ratio: p50 %.2f p99 %.2f", float64(downP50)/float64(upP50), float64(downP99)/float64(upP99))
	require.Less(t, downP99, time.Second, "pushes must not wait for the collector")
	require.Greater(t, failuresAfter, failures, "rounds failed while the pushes ran")

	// Failed rounds are counted; the warning is logged, rate-limited.
	eventually(t, 15*time.Second, func() error {
		n, err := forwardExports(gw, "failure")
		if err == nil && n < 2 {
			err = fmt.Errorf("%v failed exports since the collector stopped", n)
		}
		return err
	})
	// A group deleted while the collector is down; two more failed rounds
	// make sure that every later round started after the delete.
	r := do(t, http.MethodDelete, gw.url+"/metrics/job/fwd_doomed/instance/worker-9", nil, nil)
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	failed, err := forwardExports(gw, "failure")
	require.NoError(t, err)
	eventually(t, 15*time.Second, func() error {
		n, err := forwardExports(gw, "failure")
		if err == nil && n < failed+2 {
			err = fmt.Errorf("%v failed exports, waiting for %v", n, failed+2)
		}
		return err
	})
	failed, err = forwardExports(gw, "failure")
	require.NoError(t, err)
	var warns []string
	for _, line := range strings.Split(gw.log(), "\n") {
		if strings.Contains(line, "cannot forward metrics") {
			warns = append(warns, line)
		}
	}
	require.NotEmpty(t, warns, "no warning about forwarding in the log")
	require.LessOrEqual(t, len(warns), 2, "the warning must be rate-limited: %d warnings for %v failed rounds:\n%s", len(warns), failed, strings.Join(warns, "\n"))
	require.Contains(t, warns[0], "level=WARN")
	t.Logf("collector down for %v: %v failed rounds, %d warning(s): %s", time.Since(stoppedAt).Round(time.Millisecond), failed, len(warns), warns[0])

	// A collector on the same address: forwarding resumes by itself within
	// a few intervals (reconnects back off at most one interval).
	successBefore, err = forwardExports(gw, "success")
	require.NoError(t, err)
	_, mark := coll.received(0)
	serveCollector(t, collAddr, coll)
	restartedAt := time.Now()
	eventually(t, 8*time.Second, func() error {
		rms, _ := coll.received(mark)
		if len(rms) == 0 {
			return fmt.Errorf("nothing received since the collector came back")
		}
		return nil
	})
	t.Logf("first export %v after the collector came back", time.Since(restartedAt).Round(time.Millisecond))
	eventually(t, 25*time.Second, func() error {
		n, err := forwardExports(gw, "success")
		if err == nil && n < successBefore+2 {
			err = fmt.Errorf("%v successful rounds, waiting for %v", n, successBefore+2)
		}
		return err
	})
	rms, _ := coll.received(mark)
	services := byService(rms)
	require.NotContains(t, services, "fwd_doomed", "a group deleted while the collector was down is still forwarded")
	for _, name := range []string{"fwd_batch", "fwd_nightly", "fwd_load", "pushrelay"} {
		require.NotEmpty(t, services[name], "%s not forwarded after the collector came back", name)
	}
	load, err := otlpMetrics(services["fwd_load"][len(services["fwd_load"])-1])
	require.NoError(t, err)
	require.Equal(t, float64(pushes-1), load["fwd_load_value"].GetGauge().DataPoints[0].GetAsDouble(), "the last value pushed while the collector was down")
	t.Logf("test took %v", time.Since(testStart).Round(time.Millisecond))
}
