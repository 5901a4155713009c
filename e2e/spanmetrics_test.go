// This file tests span metrics and service graphs end to end: the real
// binary with its three trace receivers, fed by the OpenTelemetry Go SDK's
// OTLP gRPC and HTTP exporters and by raw Zipkin v2 JSON, scraped as text and
// OpenMetrics, with exact expected values derived here from the spans sent.

package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pushrelay/pushrelay/traces"
)

// spanTimeout bounds every wait of the span tests.
const spanTimeout = 15 * time.Second

// Receiver flags of pushrelay; the harness turns all three off.
const (
	flagOTLPGRPC = "--traces.otlp-grpc.listen-address"
	flagOTLPHTTP = "--traces.otlp-http.listen-address"
	flagZipkin   = "--traces.zipkin.listen-address"
)

// tempoBounds are Tempo's default latency bounds in seconds, written out
// rather than computed so that a wrong generator in the product shows.
var tempoBounds = []float64{0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384}

// otelBounds are the OpenTelemetry connector's default bounds in ms.
var otelBounds = []float64{2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000}

// graphBounds are Tempo's default service graph bounds in seconds.
var graphBounds = []float64{0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8}

// spanReceivers are the loopback addresses of the trace receivers.
type spanReceivers struct {
	grpc, http, zipkin string
}

// startSpanPushrelay starts pushrelay with all three trace receivers on
// loopback ports of their own (chosen again when a start is retried) and
// the given flags.
func startSpanPushrelay(t *testing.T, flags ...string) (*process, *spanReceivers) {
	t.Helper()
	spec := pushrelaySpec(flags...)
	base := spec.args
	rcv := &spanReceivers{}
	spec.args = func(addr string) []string {
		loop := func() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))) }
		rcv.grpc, rcv.http, rcv.zipkin = loop(), loop(), loop()
		// kingpin refuses a repeated flag: the harness's empty settings
		// are replaced.
		args := slices.DeleteFunc(base(addr), func(a string) bool {
			return strings.HasPrefix(a, flagOTLPGRPC+"=") || strings.HasPrefix(a, flagOTLPHTTP+"=") || strings.HasPrefix(a, flagZipkin+"=")
		})
		return append(args, flagOTLPGRPC+"="+rcv.grpc, flagOTLPHTTP+"="+rcv.http, flagZipkin+"="+rcv.zipkin)
	}
	p := start(t, spec)
	// /-/ready does not cover the receivers: wait until each accepts
	// connections.
	for _, a := range []string{rcv.grpc, rcv.http, rcv.zipkin} {
		eventually(t, spanTimeout, func() error {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				_ = c.Close()
			}
			return err
		})
	}
	return p, rcv
}

// recordingClient is an OTLP exporter client that keeps a copy of what it
// sends, so that the expected span sizes are computed from the exact
// protobuf Span messages on the wire.
type recordingClient struct {
	otlptrace.Client
	mu    sync.Mutex
	spans []recordedSpan
}

type recordedSpan struct {
	service string
	span    *tracepb.Span
}

func (c *recordingClient) UploadTraces(ctx context.Context, rss []*tracepb.ResourceSpans) error {
	c.mu.Lock()
	for _, rs := range rss {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, recordedSpan{service, proto.Clone(s).(*tracepb.Span)})
			}
		}
	}
	c.mu.Unlock()
	return c.Client.UploadTraces(ctx, rss)
}

// size sums the protobuf sizes of the recorded spans of service named name
// with status code code.
func (c *recordingClient) size(service, name string, code tracepb.Status_StatusCode) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.spans {
		if r.service == service && r.span.GetName() == name && r.span.GetStatus().GetCode() == code {
			n += proto.Size(r.span)
		}
	}
	return n
}

// sdkProvider returns a tracer provider of the OpenTelemetry Go SDK that
// exports every span synchronously when it ends through client, with the
// resource attributes res.
func sdkProvider(t *testing.T, client otlptrace.Client, res ...attribute.KeyValue) *sdktrace.TracerProvider {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), spanTimeout)
	defer cancel()
	exp, err := otlptrace.New(ctx, client)
	require.NoError(t, err)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(exp)),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithResource(resource.NewSchemaless(res...)),
	)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), spanTimeout)
		defer cancel()
		_ = tp.Shutdown(ctx)
	})
	return tp
}

func grpcExporterClient(addr string) *recordingClient {
	return &recordingClient{Client: otlptracegrpc.NewClient(
		otlptracegrpc.WithEndpoint(addr),
		otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithTimeout(10*time.Second),
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}),
	)}
}

func httpExporterClient(addr string) *recordingClient {
	return &recordingClient{Client: otlptracehttp.NewClient(
		otlptracehttp.WithEndpoint(addr),
		otlptracehttp.WithInsecure(),
		otlptracehttp.WithTimeout(10*time.Second),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}),
	)}
}

// endSpan ends s at end, which exports it at once. The SDK only logs an
// export error; the receivers' counters show whether it arrived.
func endSpan(s trace.Span, end time.Time) { s.End(trace.WithTimestamp(end)) }

// labels is a label set written as name=value pairs.
type labels map[string]string

func (l labels) String() string {
	keys := sortedKeys(l)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, l[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func labelsOf(m *dto.Metric) labels {
	l := labels{}
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

// seriesValues returns the counter or gauge value of every series of a
// family, keyed by its label set.
func seriesValues(mfs map[string]*dto.MetricFamily, name string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range mfs[name].GetMetric() {
		v := m.GetCounter().GetValue()
		if m.Gauge != nil {
			v = m.GetGauge().GetValue()
		}
		if m.Untyped != nil {
			v = m.GetUntyped().GetValue()
		}
		out[labelsOf(m).String()] = v
	}
	return out
}

// series returns the series of family name with exactly the labels l.
func series(t *testing.T, mfs map[string]*dto.MetricFamily, name string, l labels) *dto.Metric {
	t.Helper()
	mf := mfs[name]
	require.NotNil(t, mf, "no family %s", name)
	var have []string
	for _, m := range mf.GetMetric() {
		got := labelsOf(m)
		if got.String() == l.String() {
			return m
		}
		have = append(have, got.String())
	}
	require.Failf(t, "series missing", "%s%s not among:\n%s", name, l, strings.Join(have, "\n"))
	return nil
}

// with returns a copy of l with more labels.
func (l labels) with(kv ...string) labels {
	out := labels{}
	for k, v := range l {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// requireHistogram checks a classic histogram against observations: the
// cumulative count of every bound (an observation v counts for every bound
// >= v, le being inclusive), +Inf, _count and _sum.
func requireHistogram(t *testing.T, m *dto.Metric, bounds []float64, obs []float64) {
	t.Helper()
	h := m.GetHistogram()
	require.NotNil(t, h, "not a histogram: %v", m)
	want := map[float64]uint64{math.Inf(1): uint64(len(obs))}
	sum := 0.0
	for _, b := range bounds {
		n := uint64(0)
		for _, v := range obs {
			if v <= b {
				n++
			}
		}
		want[b] = n
	}
	for _, v := range obs {
		sum += v
	}
	have := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		have[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	// The text format always ends with +Inf; the parser keeps it or
	// takes it as the count.
	if _, ok := have[math.Inf(1)]; !ok {
		have[math.Inf(1)] = h.GetSampleCount()
	}
	require.Equal(t, want, have, "buckets of %s", labelsOf(m))
	require.Equal(t, uint64(len(obs)), h.GetSampleCount(), "_count of %s", labelsOf(m))
	require.InDelta(t, sum, h.GetSampleSum(), 1e-9, "_sum of %s", labelsOf(m))
}

// counterValue returns the value of the series of name with labels l.
func counterValue(t *testing.T, mfs map[string]*dto.MetricFamily, name string, l labels) float64 {
	t.Helper()
	return series(t, mfs, name, l).GetCounter().GetValue()
}

// receivedSpansBy returns pushrelay_spans_received_total per receiver.
func receivedSpansBy(mfs map[string]*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, m := range mfs["pushrelay_spans_received_total"].GetMetric() {
		out[labelsOf(m)["receiver"]] = m.GetCounter().GetValue()
	}
	return out
}

// scrapeWhen scrapes p until cond holds for the parsed families.
func scrapeWhen(t *testing.T, p *process, cond func(map[string]*dto.MetricFamily) error) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	var text string
	var mfs map[string]*dto.MetricFamily
	eventually(t, spanTimeout, func() error {
		r, err := doErr(http.MethodGet, p.url+"/metrics", nil, nil)
		if err != nil {
			return err
		}
		if r.status != http.StatusOK {
			return fmt.Errorf("GET /metrics: %d %s", r.status, r.body)
		}
		text = string(r.body)
		mfs = parseText(t, r.body)
		return cond(mfs)
	})
	return text, mfs
}

// zipkinSpan is the part of a Zipkin v2 span the test sends.
type zipkinSpan struct {
	TraceID       string            `json:"traceId"`
	ID            string            `json:"id"`
	ParentID      string            `json:"parentId,omitempty"`
	Kind          string            `json:"kind,omitempty"`
	Name          string            `json:"name"`
	Timestamp     int64             `json:"timestamp"`
	Duration      int64             `json:"duration"`
	LocalEndpoint map[string]string `json:"localEndpoint"`
	Tags          map[string]string `json:"tags,omitempty"`
}

// otlpSpan builds by hand the OTLP Span message the OpenTelemetry Zipkin
// translator makes of z: ids, name, kind, times in ns, the tags as string
// attributes (an error tag of "true" is removed and sets the error status),
// and the status, which OTLP always carries.
func (z zipkinSpan) otlpSpan(t *testing.T) *tracepb.Span {
	t.Helper()
	dec := func(s string) []byte {
		b, err := hex.DecodeString(s)
		require.NoError(t, err)
		return b
	}
	s := &tracepb.Span{
		TraceId:           dec(z.TraceID),
		SpanId:            dec(z.ID),
		Name:              z.Name,
		StartTimeUnixNano: uint64(z.Timestamp) * 1000,
		EndTimeUnixNano:   uint64(z.Timestamp+z.Duration) * 1000,
		Status:            &tracepb.Status{},
	}
	if z.ParentID != "" {
		s.ParentSpanId = dec(z.ParentID)
	}
	switch z.Kind {
	case "SERVER":
		s.Kind = tracepb.Span_SPAN_KIND_SERVER
	case "CLIENT":
		s.Kind = tracepb.Span_SPAN_KIND_CLIENT
	case "":
	default:
		require.Failf(t, "kind", "unhandled kind %s", z.Kind)
	}
	for _, k := range sortedKeys(z.Tags) {
		if k == "error" {
			s.Status.Code = tracepb.Status_STATUS_CODE_ERROR
			if z.Tags[k] == "true" {
				continue
			}
		}
		s.Attributes = append(s.Attributes, &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: z.Tags[k]}}})
	}
	return s
}

// TestSpanMetricsAllReceivers sends spans through the OTLP gRPC and HTTP
// exporters of the OpenTelemetry Go SDK and as Zipkin v2 JSON to one
// pushrelay, then checks every derived series exactly.
func TestSpanMetricsAllReceivers(t *testing.T) {
	e2eTest(t)
	gw, rcv := startSpanPushrelay(t, "--spanmetrics.dimensions=workspace_id,script_path,language")

	apiClient, workerClient := grpcExporterClient(rcv.grpc), httpExporterClient(rcv.http)
	// The api's resource carries workspace_id: Tempo looks dimensions up
	// on the resource first, so its spans' own workspace_id is ignored.
	api := sdkProvider(t, apiClient, attribute.String("service.name", "windmill-api"), attribute.String("workspace_id", "demo"))
	worker := sdkProvider(t, workerClient, attribute.String("service.name", "windmill-worker"))
	ctx := context.Background()

	now := time.Now()
	base := now.Add(-3 * time.Second)
	at := func(d time.Duration) time.Time { return base.Add(d) }
	jobAttrs := []attribute.KeyValue{
		attribute.String("workspace_id", "span-ws"),
		attribute.String("script_path", "f/etl/sync"),
		attribute.String("language", "python3"),
		attribute.String("job_id", "never-a-label"),
	}

	// Two requests windmill-api (OTLP gRPC) → windmill-worker (OTLP HTTP):
	// client 250 ms, server 150 ms; the second server span fails.
	const runPath = "POST /api/w/{workspace}/jobs/run"
	for i := range 2 {
		t0 := at(time.Duration(i) * 400 * time.Millisecond)
		cctx, client := api.Tracer("e2e").Start(ctx, runPath,
			trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(t0), trace.WithAttributes(jobAttrs...))
		_, server := worker.Tracer("e2e").Start(cctx, "run_job",
			trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(t0.Add(50*time.Millisecond)),
			trace.WithAttributes(append(jobAttrs[1:], attribute.String("workspace_id", "demo"))...))
		if i == 1 {
			server.SetStatus(codes.Error, "script failed")
		}
		endSpan(server, t0.Add(200*time.Millisecond))
		endSpan(client, t0.Add(250*time.Millisecond))
	}

	// Three internal job spans of 2 ms, exactly 4 ms and 4 ms + 1 µs, each
	// its own trace: le is inclusive, so they land in 0.002, 0.004, 0.008.
	jobDurations := []time.Duration{2 * time.Millisecond, 4 * time.Millisecond, 4*time.Millisecond + time.Microsecond}
	jobTraces := make([]string, len(jobDurations))
	for i, d := range jobDurations {
		t0 := at(time.Second + time.Duration(i)*10*time.Millisecond)
		_, s := api.Tracer("e2e").Start(ctx, "job", trace.WithSpanKind(trace.SpanKindInternal), trace.WithTimestamp(t0),
			trace.WithAttributes(attribute.String("script_path", "u/admin/nightly"), attribute.String("language", "deno")))
		jobTraces[i] = s.SpanContext().TraceID().String()
		endSpan(s, t0.Add(d))
	}

	// A span ending a minute in the future is outside the ±30 s window.
	_, late := worker.Tracer("e2e").Start(ctx, "late batch", trace.WithTimestamp(now.Add(55*time.Second)))
	endSpan(late, now.Add(60*time.Second))

	// Zipkin: two identical spans without kind, one server span with an
	// error tag, one ten minutes old.
	zts := now.Add(-2*time.Second).UnixNano() / 1000
	zep := map[string]string{"serviceName": "zipkin-svc"}
	cronTags := map[string]string{"workspace_id": "ops", "script_path": "u/bob/cron", "language": "bun"}
	zspans := []zipkinSpan{
		{TraceID: "5af7183fb1d4cf5f5af7183fb1d4cf5f", ID: "6b221d5bc9e6496c", Name: "Cron Tick", Timestamp: zts, Duration: 3000, LocalEndpoint: zep, Tags: cronTags},
		{TraceID: "5af7183fb1d4cf5f5af7183fb1d4cf60", ID: "6b221d5bc9e6496d", Name: "Cron Tick", Timestamp: zts + 10, Duration: 3000, LocalEndpoint: zep, Tags: cronTags},
		{TraceID: "352bff9a74ca9ad2352bff9a74ca9ad2", ID: "5d0d6f8a8b1c2e3f", ParentID: "1d0d6f8a8b1c2e3f", Kind: "SERVER", Name: "handle webhook",
			Timestamp: zts, Duration: 12000, LocalEndpoint: zep, Tags: map[string]string{"error": "true", "http.method": "POST", "workspace_id": "ops"}},
		{TraceID: "452bff9a74ca9ad2452bff9a74ca9ad2", ID: "4d0d6f8a8b1c2e3f", Name: "Cron Tick",
			Timestamp: now.Add(-10*time.Minute).UnixNano() / 1000, Duration: 3000, LocalEndpoint: zep, Tags: cronTags},
	}
	zbody, err := json.Marshal(zspans)
	require.NoError(t, err)
	r := do(t, http.MethodPost, "http://"+rcv.zipkin+traces.ZipkinPath, http.Header{"Content-Type": {"application/json"}}, zbody)
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)

	// Every export is synchronous, so the counters are final once they
	// reach these values.
	wantReceived := map[string]float64{"otlp_grpc": 5, "otlp_http": 3, "zipkin": 4}
	text, mfs := scrapeWhen(t, gw, func(mfs map[string]*dto.MetricFamily) error {
		if got := receivedSpansBy(mfs); fmt.Sprint(got) != fmt.Sprint(wantReceived) {
			return fmt.Errorf("pushrelay_spans_received_total = %v, want %v", got, wantReceived)
		}
		return nil
	})

	// Series of the calls counter, exactly: no job_id label, no job or
	// instance, nothing for the dropped spans.
	apiRun := labels{"service": "windmill-api", "span_name": runPath, "span_kind": "SPAN_KIND_CLIENT", "status_code": "STATUS_CODE_UNSET",
		"workspace_id": "demo", "script_path": "f/etl/sync", "language": "python3"}
	apiJob := labels{"service": "windmill-api", "span_name": "job", "span_kind": "SPAN_KIND_INTERNAL", "status_code": "STATUS_CODE_UNSET",
		"workspace_id": "demo", "script_path": "u/admin/nightly", "language": "deno"}
	workerOK := labels{"service": "windmill-worker", "span_name": "run_job", "span_kind": "SPAN_KIND_SERVER", "status_code": "STATUS_CODE_UNSET",
		"workspace_id": "demo", "script_path": "f/etl/sync", "language": "python3"}
	workerErr := workerOK.with("status_code", "STATUS_CODE_ERROR")
	cron := labels{"service": "zipkin-svc", "span_name": "Cron Tick", "span_kind": "SPAN_KIND_UNSPECIFIED", "status_code": "STATUS_CODE_UNSET",
		"workspace_id": "ops", "script_path": "u/bob/cron", "language": "bun"}
	webhook := labels{"service": "zipkin-svc", "span_name": "handle webhook", "span_kind": "SPAN_KIND_SERVER", "status_code": "STATUS_CODE_ERROR",
		"workspace_id": "ops"}
	require.Equal(t, map[string]float64{
		apiRun.String(): 2, apiJob.String(): 3, workerOK.String(): 1, workerErr.String(): 1, cron.String(): 2, webhook.String(): 1,
	}, seriesValues(mfs, "traces_spanmetrics_calls_total"))
	require.Equal(t, dto.MetricType_COUNTER, mfs["traces_spanmetrics_calls_total"].GetType())
	require.Equal(t, dto.MetricType_HISTOGRAM, mfs["traces_spanmetrics_latency"].GetType())
	require.Equal(t, dto.MetricType_COUNTER, mfs["traces_spanmetrics_size_total"].GetType())

	// Latency histograms, with _count equal to the calls.
	const lat = "traces_spanmetrics_latency"
	requireHistogram(t, series(t, mfs, lat, apiRun), tempoBounds, []float64{0.25, 0.25})
	requireHistogram(t, series(t, mfs, lat, apiJob), tempoBounds, []float64{0.002, 0.004, 0.004001})
	requireHistogram(t, series(t, mfs, lat, workerOK), tempoBounds, []float64{0.15})
	requireHistogram(t, series(t, mfs, lat, workerErr), tempoBounds, []float64{0.15})
	requireHistogram(t, series(t, mfs, lat, cron), tempoBounds, []float64{0.003, 0.003})
	requireHistogram(t, series(t, mfs, lat, webhook), tempoBounds, []float64{0.012})
	require.Len(t, mfs[lat].GetMetric(), 6)
	// le is written as Tempo writes it; the 4 ms span is in le="0.004".
	jobLine := `traces_spanmetrics_latency_bucket{language="deno",script_path="u/admin/nightly",service="windmill-api",span_kind="SPAN_KIND_INTERNAL",span_name="job",status_code="STATUS_CODE_UNSET",workspace_id="demo",le="%s"} %d`
	requireLines(t, text,
		fmt.Sprintf(jobLine, "0.002", 1), fmt.Sprintf(jobLine, "0.004", 2), fmt.Sprintf(jobLine, "0.008", 3),
		fmt.Sprintf(jobLine, "16.384", 3), fmt.Sprintf(jobLine, "+Inf", 3),
		`traces_spanmetrics_latency_count{language="deno",script_path="u/admin/nightly",service="windmill-api",span_kind="SPAN_KIND_INTERNAL",span_name="job",status_code="STATUS_CODE_UNSET",workspace_id="demo"} 3`,
	)

	// Sizes: the protobuf size of the OTLP Span messages. For the SDK's
	// spans they are those the exporters sent; for Zipkin the Span built by
	// hand from the JSON, cross-checked with the traces package's
	// conversion marshalled and decoded with the official OTLP types.
	const size = "traces_spanmetrics_size_total"
	unset, failed := tracepb.Status_STATUS_CODE_UNSET, tracepb.Status_STATUS_CODE_ERROR
	for _, c := range []struct {
		l    labels
		want int
	}{
		{apiRun, apiClient.size("windmill-api", runPath, unset)},
		{apiJob, apiClient.size("windmill-api", "job", unset)},
		{workerOK, workerClient.size("windmill-worker", "run_job", unset)},
		{workerErr, workerClient.size("windmill-worker", "run_job", failed)},
	} {
		require.Positive(t, c.want)
		require.Equal(t, float64(c.want), counterValue(t, mfs, size, c.l), "%s%s", size, c.l)
	}
	zsize := func(z zipkinSpan) int {
		s := proto.Size(z.otlpSpan(t))
		require.Equal(t, s, convertedZipkinSize(t, z), "hand-built and converted Zipkin span sizes differ for %s", z.Name)
		return s
	}
	require.Equal(t, zsize(zspans[0]), zsize(zspans[1]), "identical Zipkin spans have one size")
	require.Equal(t, float64(zsize(zspans[0])+zsize(zspans[1])), counterValue(t, mfs, size, cron))
	require.Equal(t, float64(zsize(zspans[2])), counterValue(t, mfs, size, webhook))
	require.Len(t, mfs[size].GetMetric(), 6)

	// The service graph edge windmill-api → windmill-worker, across two
	// receivers: two requests, one failed; server 150 ms, client 250 ms.
	edge := labels{"client": "windmill-api", "server": "windmill-worker"}
	require.Equal(t, map[string]float64{edge.String(): 2}, seriesValues(mfs, "traces_service_graph_request_total"))
	require.Equal(t, map[string]float64{edge.String(): 1}, seriesValues(mfs, "traces_service_graph_request_failed_total"))
	requireHistogram(t, series(t, mfs, "traces_service_graph_request_server_seconds", edge), graphBounds, []float64{0.15, 0.15})
	requireHistogram(t, series(t, mfs, "traces_service_graph_request_client_seconds", edge), graphBounds, []float64{0.25, 0.25})
	requireLines(t, text,
		`traces_service_graph_request_server_seconds_bucket{client="windmill-api",server="windmill-worker",le="0.1"} 0`,
		`traces_service_graph_request_server_seconds_bucket{client="windmill-api",server="windmill-worker",le="0.2"} 2`,
		`traces_service_graph_request_client_seconds_bucket{client="windmill-api",server="windmill-worker",le="12.8"} 2`,
	)

	// Self-metrics: the two spans outside the window, the series count
	// (six span-metric label sets and one edge).
	dropped := seriesValues(mfs, "pushrelay_spans_dropped_total")
	require.Equal(t, 2.0, dropped[labels{"reason": "outside_metrics_ingestion_slack"}.String()], "%v", dropped)
	for k, v := range dropped {
		if k != (labels{"reason": "outside_metrics_ingestion_slack"}).String() {
			require.Zero(t, v, "pushrelay_spans_dropped_total%s", k)
		}
	}
	require.Equal(t, 7.0, mfs["pushrelay_spanmetrics_series"].GetMetric()[0].GetGauge().GetValue())

	// OpenMetrics shows the trace id of the latest observation of each
	// bucket as an exemplar on the latency histogram.
	r = do(t, http.MethodGet, gw.url+"/metrics", http.Header{"Accept": {"application/openmetrics-text; version=1.0.0"}}, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.header.Get("Content-Type"), "application/openmetrics-text")
	omJob := `(?m)^traces_spanmetrics_latency_bucket\{language="deno",script_path="u/admin/nightly",service="windmill-api",span_kind="SPAN_KIND_INTERNAL",span_name="job",status_code="STATUS_CODE_UNSET",workspace_id="demo",le="%s"\} %d # \{traceID="%s"\} %s \S+$`
	for _, c := range []struct {
		le    string
		count int
		trace string
		value string
	}{{"0.002", 1, jobTraces[0], "0.002"}, {"0.004", 2, jobTraces[1], "0.004"}, {"0.008", 3, jobTraces[2], "0.004001"}} {
		re := regexp.MustCompile(fmt.Sprintf(omJob, regexp.QuoteMeta(c.le), c.count, c.trace, regexp.QuoteMeta(c.value)))
		require.Regexp(t, re, string(r.body), "exemplar of le=%s", c.le)
	}
	require.Contains(t, string(r.body), "# TYPE traces_spanmetrics_latency histogram")
	for _, l := range strings.Split(string(r.body), "\n") {
		if strings.HasPrefix(l, "traces_spanmetrics_calls_total") || strings.HasPrefix(l, "traces_spanmetrics_size_total") {
			require.NotContains(t, l, " # {", "counters carry no exemplars")
		}
	}
	require.True(t, strings.HasSuffix(string(r.body), "# EOF\n"))

	// A push may not redefine a span metric family.
	r = do(t, http.MethodPut, gw.url+"/metrics/job/x", nil, []byte("# TYPE traces_spanmetrics_calls_total gauge\ntraces_spanmetrics_calls_total 1\n"))
	require.Equal(t, http.StatusBadRequest, r.status, "%s", r.body)
	require.Contains(t, string(r.body), "pushed metrics are invalid or inconsistent with existing metrics")
	_, after := scrape(t, gw)
	require.Equal(t, map[string]float64{
		apiRun.String(): 2, apiJob.String(): 3, workerOK.String(): 1, workerErr.String(): 1, cron.String(): 2, webhook.String(): 1,
	}, seriesValues(after, "traces_spanmetrics_calls_total"), "the rejected push changed the span metrics")
	// As with the Pushgateway, the failed push leaves only its failure
	// time in a group of its own.
	pushed := seriesValues(after, "push_time_seconds")
	require.Equal(t, 0.0, pushed[labels{"job": "x", "instance": ""}.String()], "%v", pushed)
	failures := seriesValues(after, "push_failure_time_seconds")
	require.Positive(t, failures[labels{"job": "x", "instance": ""}.String()], "%v", failures)
}

// convertedZipkinSize converts z with the traces package, marshals the
// result with pdata and decodes it into the official OTLP types, and
// returns proto.Size of the single span.
func convertedZipkinSize(t *testing.T, z zipkinSpan) int {
	t.Helper()
	body, err := json.Marshal([]zipkinSpan{z})
	require.NoError(t, err)
	td, err := traces.ParseZipkin(body)
	require.NoError(t, err)
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	require.NoError(t, err)
	var req coltracepb.ExportTraceServiceRequest
	require.NoError(t, proto.Unmarshal(b, &req))
	require.Len(t, req.GetResourceSpans(), 1)
	require.Len(t, req.GetResourceSpans()[0].GetScopeSpans(), 1)
	spans := req.GetResourceSpans()[0].GetScopeSpans()[0].GetSpans()
	require.Len(t, spans, 1)
	return proto.Size(spans[0])
}

// TestSpanMetricsOTelNaming checks the OpenTelemetry connector profile:
// traces_span_metrics_* in milliseconds with service_name, and dimensions
// looked up on the span first.
func TestSpanMetricsOTelNaming(t *testing.T) {
	e2eTest(t)
	gw, rcv := startSpanPushrelay(t, "--spanmetrics.naming=otel", "--spanmetrics.dimensions=workspace_id")
	api := sdkProvider(t, grpcExporterClient(rcv.grpc), attribute.String("service.name", "windmill-api"), attribute.String("workspace_id", "demo"))
	base := time.Now().Add(-2 * time.Second)
	durations := []time.Duration{4 * time.Millisecond, 5 * time.Millisecond, 60 * time.Millisecond}
	for i, d := range durations {
		t0 := base.Add(time.Duration(i) * 100 * time.Millisecond)
		_, s := api.Tracer("e2e").Start(context.Background(), "job", trace.WithSpanKind(trace.SpanKindInternal), trace.WithTimestamp(t0),
			trace.WithAttributes(attribute.String("workspace_id", "span-ws")))
		endSpan(s, t0.Add(d))
	}
	text, mfs := scrapeWhen(t, gw, func(mfs map[string]*dto.MetricFamily) error {
		if n := receivedSpansBy(mfs)["otlp_grpc"]; n != 3 {
			return fmt.Errorf("received %v spans over OTLP gRPC, want 3", n)
		}
		return nil
	})
	l := labels{"service_name": "windmill-api", "span_name": "job", "span_kind": "SPAN_KIND_INTERNAL", "status_code": "STATUS_CODE_UNSET", "workspace_id": "span-ws"}
	require.Equal(t, map[string]float64{l.String(): 3}, seriesValues(mfs, "traces_span_metrics_calls_total"))
	requireHistogram(t, series(t, mfs, "traces_span_metrics_duration_milliseconds", l), otelBounds, []float64{4, 5, 60})
	line := `traces_span_metrics_duration_milliseconds_bucket{service_name="windmill-api",span_kind="SPAN_KIND_INTERNAL",span_name="job",status_code="STATUS_CODE_UNSET",workspace_id="span-ws",le="%s"} %d`
	requireLines(t, text, fmt.Sprintf(line, "2", 0), fmt.Sprintf(line, "4", 1), fmt.Sprintf(line, "6", 2), fmt.Sprintf(line, "50", 2),
		fmt.Sprintf(line, "100", 3), fmt.Sprintf(line, "15000", 3), fmt.Sprintf(line, "+Inf", 3))
	for name := range mfs {
		require.False(t, strings.HasPrefix(name, "traces_spanmetrics_"), "Tempo family %s in the otel profile", name)
	}
}

// TestSpanReceiverLimits checks the answers to malformed and oversized
// trace requests, and that none of them is counted.
func TestSpanReceiverLimits(t *testing.T) {
	e2eTest(t)
	gw, rcv := startSpanPushrelay(t, "--traces.max-body-bytes=1KiB")
	otlpURL, zipkinURL := "http://"+rcv.http+traces.OTLPPath, "http://"+rcv.zipkin+traces.ZipkinPath
	protoHdr := http.Header{"Content-Type": {"application/x-protobuf"}}
	jsonHdr := http.Header{"Content-Type": {"application/json"}}

	bigSpans := func(attrLen int) ptrace.Traces {
		td := ptrace.NewTraces()
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", "limits")
		s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		s.SetTraceID([16]byte{1, 2, 3})
		s.SetSpanID([8]byte{4, 5, 6})
		s.SetName("big")
		now := time.Now()
		s.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Second)))
		s.SetEndTimestamp(pcommon.NewTimestampFromTime(now))
		s.Attributes().PutStr("padding", strings.Repeat("x", attrLen))
		return td
	}
	bigProto, err := ptraceotlp.NewExportRequestFromTraces(bigSpans(2000)).MarshalProto()
	require.NoError(t, err)
	require.Greater(t, len(bigProto), 1024)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, err = zw.Write(bigProto)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	require.Less(t, gz.Len(), 1024, "the compressed body must fit the limit on the wire")

	for _, c := range []struct {
		name   string
		url    string
		header http.Header
		body   []byte
		want   int
		msg    string
	}{
		{"otlp protobuf garbage", otlpURL, protoHdr, []byte{0xff, 0xff, 0xff, 0xff, 0x0f}, http.StatusBadRequest, "cannot decode spans"},
		{"otlp truncated json", otlpURL, jsonHdr, []byte(`{"resourceSpans": [`), http.StatusBadRequest, "cannot decode spans"},
		{"otlp oversized", otlpURL, protoHdr, bigProto, http.StatusRequestEntityTooLarge, "too large"},
		{"otlp oversized once decompressed", otlpURL, http.Header{"Content-Type": {"application/x-protobuf"}, "Content-Encoding": {"gzip"}}, gz.Bytes(), http.StatusRequestEntityTooLarge, "too large"},
		{"zipkin not json", zipkinURL, jsonHdr, []byte(`[{"traceId": `), http.StatusBadRequest, "cannot decode Zipkin spans"},
		{"zipkin oversized", zipkinURL, jsonHdr, []byte(`[{"traceId":"` + strings.Repeat("a", 2000) + `"}]`), http.StatusRequestEntityTooLarge, "too large"},
	} {
		r := do(t, http.MethodPost, c.url, c.header, c.body)
		require.Equal(t, c.want, r.status, "%s: %s", c.name, r.body)
		require.Contains(t, string(r.body), c.msg, c.name)
	}

	// OTLP gRPC: a message over the limit is refused by the transport.
	cc, err := grpc.NewClient(rcv.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), spanTimeout)
	defer cancel()
	_, err = ptraceotlp.NewGRPCClient(cc).Export(ctx, ptraceotlp.NewExportRequestFromTraces(bigSpans(2000)))
	require.Equal(t, grpccodes.ResourceExhausted, status.Code(err), "%v", err)
	// A small request on each receiver still goes through.
	_, err = ptraceotlp.NewGRPCClient(cc).Export(ctx, ptraceotlp.NewExportRequestFromTraces(bigSpans(10)))
	require.NoError(t, err)
	small, err := ptraceotlp.NewExportRequestFromTraces(bigSpans(10)).MarshalProto()
	require.NoError(t, err)
	r := do(t, http.MethodPost, otlpURL, protoHdr, small)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)

	_, mfs := scrapeWhen(t, gw, func(mfs map[string]*dto.MetricFamily) error {
		want := map[string]float64{"otlp_grpc": 1, "otlp_http": 1, "zipkin": 0}
		if got := receivedSpansBy(mfs); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("pushrelay_spans_received_total = %v, want %v", got, want)
		}
		return nil
	})
	requests := seriesValues(mfs, "pushrelay_trace_requests_total")
	for _, c := range []struct {
		receiver, result string
		want             float64
	}{
		{"otlp_http", "bad_request", 2}, {"otlp_http", "too_large", 2}, {"otlp_http", "ok", 1},
		{"zipkin", "bad_request", 1}, {"zipkin", "too_large", 1}, {"otlp_grpc", "ok", 1},
	} {
		require.Equal(t, c.want, requests[labels{"receiver": c.receiver, "result": c.result}.String()], "pushrelay_trace_requests_total{receiver=%q,result=%q} in %v", c.receiver, c.result, requests)
	}
	l := labels{"service": "limits", "span_name": "big", "span_kind": "SPAN_KIND_UNSPECIFIED", "status_code": "STATUS_CODE_UNSET"}
	require.Equal(t, map[string]float64{l.String(): 2}, seriesValues(mfs, "traces_spanmetrics_calls_total"))
}
