package forward

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/pushrelay/pushrelay/gateway"
	"github.com/pushrelay/pushrelay/spanmetrics"
)

// receiver is a real OTLP gRPC MetricsService that keeps what it gets.
type receiver struct {
	collmetrics.UnimplementedMetricsServiceServer
	mu      sync.Mutex
	reqs    []*collmetrics.ExportMetricsServiceRequest
	tenants []string
}

func (r *receiver) Export(ctx context.Context, req *collmetrics.ExportMetricsServiceRequest) (*collmetrics.ExportMetricsServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	md, _ := metadata.FromIncomingContext(ctx)
	r.tenants = append(r.tenants, md.Get("x-tenant")...)
	return &collmetrics.ExportMetricsServiceResponse{}, nil
}

// take returns and forgets what was received, keyed by service.name.
func (r *receiver) take() map[string]*metricspb.ResourceMetrics {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]*metricspb.ResourceMetrics{}
	for _, req := range r.reqs {
		for _, rm := range req.ResourceMetrics {
			out[resAttr(rm, "service.name")] = rm
		}
	}
	r.reqs = nil
	return out
}

func resAttr(rm *metricspb.ResourceMetrics, key string) string {
	for _, kv := range rm.Resource.Attributes {
		if kv.Key == key {
			return kv.Value.GetStringValue()
		}
	}
	return ""
}

func startReceiver(t *testing.T) (*receiver, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	r := &receiver{}
	collmetrics.RegisterMetricsServiceServer(srv, r)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return r, lis.Addr().String()
}

func metricByName(rm *metricspb.ResourceMetrics, name string) *metricspb.Metric {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m
			}
		}
	}
	return nil
}

func pointAttrs(kvs []*commonpb.KeyValue) map[string]string {
	out := map[string]string{}
	for _, kv := range kvs {
		out[kv.Key] = kv.Value.GetStringValue()
	}
	return out
}

func push(t *testing.T, st *gateway.Store, g gateway.Grouping, body string) {
	t.Helper()
	mfs, err := gateway.ParseBody(strings.NewReader(body), "")
	require.NoError(t, err)
	require.NoError(t, st.Push(g, mfs, true, true))
}

func TestForwardRound(t *testing.T) {
	rcv, addr := startReceiver(t)
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	st, err := gateway.NewStore(gateway.StoreOptions{Now: clock})
	require.NoError(t, err)
	defer st.Close()
	push(t, st, gateway.Grouping{"job": "wm_import", "instance": "worker-1", "flow": "nightly"}, `# HELP records_total Records.
# TYPE records_total counter
records_total{kind="a"} 10
# TYPE temp gauge
temp 21.5
plain 3
# TYPE h histogram
h_bucket{le="0.5"} 2
h_bucket{le="1"} 5
h_bucket{le="+Inf"} 6
h_sum 4.5
h_count 6
# TYPE s summary
s{quantile="0.9"} 7
s_sum 30
s_count 5
`)

	spanReg := prometheus.NewRegistry()
	p, err := spanmetrics.New(spanmetrics.DefaultConfig(), spanmetrics.Options{Now: clock})
	require.NoError(t, err)
	spanReg.MustRegister(p)
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	span.SetName("GET /")
	span.SetKind(ptrace.SpanKindServer)
	span.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-1500 * time.Millisecond)))
	span.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Second)))
	require.NoError(t, p.ConsumeTraces(context.Background(), td))

	exp, err := NewExporter(ExporterConfig{Endpoint: addr, Insecure: true, Interval: 5 * time.Second, Timeout: 5 * time.Second})
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	fwd := New(Options{Groups: st.Groups, Gatherer: spanReg, Exporter: exp, Interval: 5 * time.Second, Registerer: reg, Now: clock})
	require.NoError(t, fwd.Round(context.Background()))

	got := rcv.take()
	group := got["wm_import"]
	require.NotNil(t, group, "the group is its own resource")
	require.Equal(t, "worker-1", resAttr(group, "service.instance.id"))
	require.Equal(t, "nightly", resAttr(group, "flow"))

	c := metricByName(group, "records_total")
	require.NotNil(t, c, "names keep their Prometheus form")
	require.Equal(t, "Records.", c.Description)
	require.Empty(t, c.Unit)
	sum := c.GetSum()
	require.True(t, sum.IsMonotonic)
	require.Equal(t, metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, sum.AggregationTemporality)
	require.Len(t, sum.DataPoints, 1)
	require.Equal(t, 10.0, sum.DataPoints[0].GetAsDouble())
	require.Equal(t, map[string]string{"kind": "a", "flow": "nightly"}, pointAttrs(sum.DataPoints[0].Attributes), "job and instance move to the resource")
	firstStart := sum.DataPoints[0].StartTimeUnixNano
	require.Equal(t, uint64(now.UnixNano()), firstStart)

	require.Equal(t, 21.5, metricByName(group, "temp").GetGauge().DataPoints[0].GetAsDouble())
	require.Equal(t, 3.0, metricByName(group, "plain").GetGauge().DataPoints[0].GetAsDouble(), "untyped becomes a gauge")
	hist := metricByName(group, "h").GetHistogram()
	require.Equal(t, metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, hist.AggregationTemporality)
	require.Equal(t, []float64{0.5, 1}, hist.DataPoints[0].ExplicitBounds)
	require.Equal(t, []uint64{2, 3, 1}, hist.DataPoints[0].BucketCounts)
	require.Equal(t, uint64(6), hist.DataPoints[0].Count)
	require.Equal(t, 4.5, hist.DataPoints[0].GetSum())
	summary := metricByName(group, "s").GetSummary().DataPoints[0]
	require.Equal(t, uint64(5), summary.Count)
	require.Equal(t, 30.0, summary.Sum)
	require.Equal(t, 0.9, summary.QuantileValues[0].Quantile)
	require.Equal(t, 7.0, summary.QuantileValues[0].Value)
	require.NotNil(t, metricByName(group, "push_time_seconds"))

	spans := got["pushrelay"]
	require.Nil(t, spans, "the test resource has no service name")
	spans = got[""]
	require.NotNil(t, spans)
	calls := metricByName(spans, "traces_spanmetrics_calls_total").GetSum().DataPoints[0]
	require.Equal(t, 1.0, calls.GetAsDouble())
	require.Equal(t, "checkout", pointAttrs(calls.Attributes)["service"])
	lat := metricByName(spans, "traces_spanmetrics_latency")
	require.NotNil(t, lat, "no unit suffix")
	require.Equal(t, spanmetrics.DefaultBuckets(spanmetrics.NamingTempo), lat.GetHistogram().DataPoints[0].ExplicitBounds)

	// A later round keeps the start time of an unchanged or growing counter.
	now = now.Add(15 * time.Second)
	push(t, st, gateway.Grouping{"job": "wm_import", "instance": "worker-1", "flow": "nightly"}, "# TYPE records_total counter\nrecords_total{kind=\"a\"} 12\n")
	require.NoError(t, fwd.Round(context.Background()))
	sum = metricByName(rcv.take()["wm_import"], "records_total").GetSum()
	require.Equal(t, 12.0, sum.DataPoints[0].GetAsDouble())
	require.Equal(t, firstStart, sum.DataPoints[0].StartTimeUnixNano)

	// A counter that goes down was reset: its start time moves.
	now = now.Add(15 * time.Second)
	push(t, st, gateway.Grouping{"job": "wm_import", "instance": "worker-1", "flow": "nightly"}, "# TYPE records_total counter\nrecords_total{kind=\"a\"} 1\n")
	require.NoError(t, fwd.Round(context.Background()))
	sum = metricByName(rcv.take()["wm_import"], "records_total").GetSum()
	require.Equal(t, uint64(now.UnixNano()), sum.DataPoints[0].StartTimeUnixNano)

	// A deleted group is no longer forwarded.
	require.NoError(t, st.Delete(gateway.Grouping{"job": "wm_import", "instance": "worker-1", "flow": "nightly"}))
	require.NoError(t, fwd.Round(context.Background()))
	require.NotContains(t, rcv.take(), "wm_import")
}

func TestForwardCollectorDown(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())

	st, err := gateway.NewStore(gateway.StoreOptions{})
	require.NoError(t, err)
	defer st.Close()
	push(t, st, gateway.Grouping{"job": "a"}, "m 1\n")
	exp, err := NewExporter(ExporterConfig{Endpoint: addr, Insecure: true, Interval: 2 * time.Second, Timeout: time.Second})
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	fwd := New(Options{Groups: st.Groups, Exporter: exp, Interval: 2 * time.Second, Registerer: reg})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	started := time.Now()
	require.Error(t, fwd.Round(ctx))
	require.Less(t, time.Since(started), 3*time.Second, "a round is bounded by its context")
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "pushrelay_forward_exports_total" {
			for _, m := range mf.Metric {
				if m.Label[0].GetValue() == "failure" {
					require.Equal(t, 1.0, m.Counter.GetValue())
				}
			}
		}
	}
}

func TestParseHeaders(t *testing.T) {
	h, err := ParseHeaders("api-key=secret, x-tenant = team-a,")
	require.NoError(t, err)
	require.Equal(t, map[string]string{"api-key": "secret", "x-tenant": "team-a"}, h)
	_, err = ParseHeaders("novalue")
	require.ErrorContains(t, err, `invalid header entry "novalue"`)
}

// TestExporterFromEnvironment checks that the standard variables turn
// forwarding on and point it at the collector when no flag does.
func TestExporterFromEnvironment(t *testing.T) {
	exp, err := NewExporter(ExporterConfig{Interval: time.Second, Timeout: time.Second})
	require.NoError(t, err)
	require.Nil(t, exp, "off without an endpoint flag or variable")

	rcv, addr := startReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://"+addr)
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-tenant=team-a")
	exp, err = NewExporter(ExporterConfig{Interval: time.Second, Timeout: 5 * time.Second})
	require.NoError(t, err)
	require.NotNil(t, exp)
	st, err := gateway.NewStore(gateway.StoreOptions{})
	require.NoError(t, err)
	defer st.Close()
	push(t, st, gateway.Grouping{"job": "env_job"}, "m 1\n")
	fwd := New(Options{Groups: st.Groups, Exporter: exp, Interval: time.Second})
	require.NoError(t, fwd.Round(context.Background()))
	require.Contains(t, rcv.take(), "env_job")
	require.Equal(t, []string{"team-a"}, rcv.tenants, "headers from OTEL_EXPORTER_OTLP_METRICS_HEADERS")
}
