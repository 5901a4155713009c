// This file tests the Grafana dashboards in dashboards/ against a real
// pushrelay and a real Prometheus: every panel query must return data.

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/grpc"
)

// dashboardsTimeout bounds the wait for every dashboard query to return
// data once the workload is sent.
const dashboardsTimeout = 45 * time.Second

// dashWorkload is the Windmill-like job the test runs with the Debian Python
// client: two healthy schedules, one that stops pushing (a TTL of 1s), and
// one whose last push is rejected because job_failures_total is a counter in
// the other groups.
const dashWorkload = `import sys
from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway
from prometheus_client.exposition import default_handler

gateway = sys.argv[1]


def registry(records, failures=None):
    r = CollectorRegistry()
    Gauge("job_records_processed", "Records processed by the last run.", registry=r).set(records)
    if failures is not None:
        Counter("job_failures", "Failed records.", registry=r).inc(failures)
    return r


def ttl_handler(url, method, timeout, headers, data):
    return default_handler(url, method, timeout, headers + [("X-Pushrelay-TTL", "1s")], data)


push_to_gateway(gateway, job="wm_nightly_import", grouping_key={"instance": "worker-1"}, registry=registry(1234, 3))
push_to_gateway(gateway, job="wm_sync_customers", grouping_key={"instance": "worker-2"}, registry=registry(56, 0))
push_to_gateway(gateway, job="wm_stopped_report", grouping_key={"instance": "worker-1"}, registry=registry(9), handler=ttl_handler)
push_to_gateway(gateway, job="wm_flaky_export", grouping_key={"instance": "worker-3"}, registry=registry(77))
bad = CollectorRegistry()
Gauge("job_failures_total", "Failed records, pushed with the wrong type.", registry=bad).set(1)
try:
    push_to_gateway(gateway, job="wm_flaky_export", grouping_key={"instance": "worker-3"}, registry=bad)
except Exception as e:
    print("rejected as expected:", e)
else:
    sys.exit("the inconsistent push was accepted")
`

// runDashWorkload runs dashWorkload against gw with the Debian interpreter.
func runDashWorkload(t *testing.T, gw *process) {
	t.Helper()
	require.Contains(t, runPythonScript(t, gw, "workload.py", dashWorkload), "rejected as expected")
}

// metricsSink is an OTLP gRPC MetricsService that accepts everything, the
// collector pushrelay forwards to.
type metricsSink struct {
	collmetrics.UnimplementedMetricsServiceServer
	requests atomic.Int64
}

func (s *metricsSink) Export(context.Context, *collmetrics.ExportMetricsServiceRequest) (*collmetrics.ExportMetricsServiceResponse, error) {
	s.requests.Add(1)
	return &collmetrics.ExportMetricsServiceResponse{}, nil
}

// startMetricsSink serves a metricsSink on a loopback port until the test
// ends and returns its address.
func startMetricsSink(t *testing.T) (string, *metricsSink) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sink := &metricsSink{}
	srv := grpc.NewServer()
	collmetrics.RegisterMetricsServiceServer(srv, sink)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String(), sink
}

// startDashPushrelay starts pushrelay with the OTLP HTTP receiver on a
// loopback port of its own and the given flags; it returns the process and
// the receiver's address.
func startDashPushrelay(t *testing.T, flags ...string) (*process, string) {
	t.Helper()
	return startPushrelayReceiver(t, "--traces.otlp-http.listen-address", flags...)
}

// startPushrelayReceiver starts pushrelay with the receiver named by
// receiverFlag on a loopback port of its own (chosen again when a start is
// retried) and the given flags; it returns the process and the receiver's
// address.
func startPushrelayReceiver(t *testing.T, receiverFlag string, flags ...string) (*process, string) {
	t.Helper()
	spec := pushrelaySpec(flags...)
	base := spec.args
	var receiverAddr string
	spec.args = func(addr string) []string {
		receiverAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		// The harness turns the receiver off; kingpin refuses a repeated
		// flag, so its setting is replaced.
		args := slices.DeleteFunc(base(addr), func(a string) bool { return strings.HasPrefix(a, receiverFlag+"=") })
		return append(args, receiverFlag+"="+receiverAddr)
	}
	return start(t, spec), receiverAddr
}

// dashScript is a Windmill script whose jobs the spans describe.
type dashScript struct {
	workspace, path, language string
	fail                      bool
}

var dashScripts = []dashScript{
	{"demo", "u/admin/nightly_import", "python3", false},
	{"demo", "f/etl/sync_customers", "deno", false},
	{"ops", "f/reports/export", "bun", true},
}

// sendDashSpans sends, with the OpenTelemetry Go SDK's OTLP HTTP exporter,
// one job run per script: a client span of windmill-api calling a server
// span of windmill-worker, which queries PostgreSQL (a database client
// span). The run of a failing script has error statuses.
func sendDashSpans(t *testing.T, endpoint string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	provider := func(service string) *sdktrace.TracerProvider {
		exp, err := otlptracehttp.New(ctx,
			otlptracehttp.WithEndpoint(endpoint),
			otlptracehttp.WithInsecure(),
			otlptracehttp.WithTimeout(10*time.Second),
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}),
		)
		require.NoError(t, err)
		return sdktrace.NewTracerProvider(
			sdktrace.WithSyncer(exp),
			sdktrace.WithSampler(sdktrace.AlwaysSample()),
			sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))),
		)
	}
	api, worker := provider("windmill-api"), provider("windmill-worker")
	now := time.Now()
	for i, s := range dashScripts {
		attrs := []attribute.KeyValue{
			attribute.String("workspace_id", s.workspace),
			attribute.String("script_path", s.path),
			attribute.String("language", s.language),
		}
		begin := now.Add(-time.Duration(300+50*i) * time.Millisecond)
		at := func(ms int) time.Time { return begin.Add(time.Duration(ms) * time.Millisecond) }
		cctx, client := api.Tracer("e2e").Start(ctx, "POST /api/w/{workspace}/jobs/run",
			trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(at(0)), trace.WithAttributes(attrs...))
		sctx, server := worker.Tracer("e2e").Start(cctx, "run_job",
			trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(at(5)), trace.WithAttributes(attrs...))
		_, db := worker.Tracer("e2e").Start(sctx, "SELECT windmill.queue",
			trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(at(10)),
			trace.WithAttributes(append(attrs, attribute.String("db.system", "postgresql"), attribute.String("db.name", "windmill"))...))
		db.End(trace.WithTimestamp(at(10 + 20*(i+1))))
		if s.fail {
			server.SetStatus(codes.Error, "script failed")
			client.SetStatus(codes.Error, "job failed")
		}
		server.End(trace.WithTimestamp(at(100 + 40*i)))
		client.End(trace.WithTimestamp(at(110 + 40*i)))
	}
	require.NoError(t, worker.Shutdown(ctx))
	require.NoError(t, api.Shutdown(ctx))
}

// receivedSpans returns pushrelay_spans_received_total{receiver="otlp_http"}.
func receivedSpans(gw *process) (float64, error) {
	r, err := doErr(http.MethodGet, gw.url+"/metrics", nil, nil)
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`(?m)^pushrelay_spans_received_total\{receiver="otlp_http"\} (\S+)$`).FindSubmatch(r.body)
	if m == nil {
		return 0, fmt.Errorf("no pushrelay_spans_received_total for otlp_http in /metrics")
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// dashboardFile is what the test reads of a Grafana dashboard.
type dashboardFile struct {
	Title      string           `json:"title"`
	Panels     []dashboardPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name     string `json:"name"`
			Type     string `json:"type"`
			AllValue string `json:"allValue"`
		} `json:"list"`
	} `json:"templating"`
}

type dashboardPanel struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

// dashboardQuery is one panel target with its variables substituted.
type dashboardQuery struct {
	where string // dashboard / panel / refId
	typ   string // panel type
	panel string
	refID string
	expr  string
}

// grafanaBuiltins are the values the test gives Grafana's global variables.
var grafanaBuiltins = map[string]string{
	"__rate_interval": "1m",
	"__interval":      "15s",
	"__interval_ms":   "15000",
	"__range":         "5m",
	"__range_s":       "300",
	"__range_ms":      "300000",
}

// grafanaVariable matches $name, ${name}, ${name:format} and [[name]]; $1 in
// a label_replace replacement is not a variable.
var grafanaVariable = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$([A-Za-z_]\w*)|\[\[(\w+)\]\]`)

// loadDashboardQueries reads every dashboard and returns each target of
// each panel with the variables replaced as Grafana would with "All"
// selected.
func loadDashboardQueries(t *testing.T) []dashboardQuery {
	t.Helper()
	root, err := moduleRoot()
	require.NoError(t, err)
	files, err := filepath.Glob(filepath.Join(root, "dashboards", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no dashboards in %s/dashboards", root)
	var queries []dashboardQuery
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var d dashboardFile
		require.NoError(t, json.Unmarshal(b, &d), f)
		values := map[string]string{}
		for k, v := range grafanaBuiltins {
			values[k] = v
		}
		for _, v := range d.Templating.List {
			switch {
			case v.Type == "datasource":
				values[v.Name] = "prometheus"
			case v.AllValue != "":
				values[v.Name] = v.AllValue
			default:
				values[v.Name] = ".*"
			}
		}
		var walk func(ps []dashboardPanel)
		walk = func(ps []dashboardPanel) {
			for _, p := range ps {
				walk(p.Panels)
				for _, tg := range p.Targets {
					if strings.TrimSpace(tg.Expr) == "" {
						continue
					}
					expr := grafanaVariable.ReplaceAllStringFunc(tg.Expr, func(ref string) string {
						m := grafanaVariable.FindStringSubmatch(ref)
						v, ok := values[m[1]+m[2]+m[3]]
						if !ok {
							t.Errorf("%s / %s: unknown variable %s", filepath.Base(f), p.Title, ref)
						}
						return v
					})
					queries = append(queries, dashboardQuery{
						where: fmt.Sprintf("%s / %s / %s", filepath.Base(f), p.Title, tg.RefID),
						typ:   p.Type,
						panel: p.Title,
						refID: tg.RefID,
						expr:  expr,
					})
				}
			}
		}
		walk(d.Panels)
	}
	return queries
}

// findQuery returns the query refID of the only panel of type typ titled
// panel.
func findQuery(t *testing.T, queries []dashboardQuery, typ, panel, refID string) string {
	t.Helper()
	var found []string
	for _, q := range queries {
		if q.typ == typ && q.panel == panel && q.refID == refID {
			found = append(found, q.expr)
		}
	}
	require.Len(t, found, 1, "%s panels %q with a target %s", typ, panel, refID)
	return found[0]
}

// labelValues returns the sorted values of label in res.
func labelValues(res []promSample, label string) []string {
	var out []string
	for _, s := range res {
		out = append(out, s.Metric[label])
	}
	sort.Strings(out)
	return out
}

// TestDashboardQueries feeds pushrelay a scripted workload — pushes of the
// real Python client, among them a rejected one and one of a group that goes
// stale, and spans from the OpenTelemetry Go SDK — lets a real Prometheus
// scrape it, and then requires every query of every panel of every
// dashboard in dashboards/ to return at least one series.
func TestDashboardQueries(t *testing.T) {
	e2eTest(t)
	requirePrometheus(t)
	requirePythonClient(t)
	queries := loadDashboardQueries(t)

	sinkAddr, sink := startMetricsSink(t)
	gw, otlpAddr := startDashPushrelay(t,
		"--persistence.file="+filepath.Join(t.TempDir(), "pushrelay.db"),
		"--staleness.ttl=1h",
		"--spanmetrics.dimensions=workspace_id,script_path,language",
		"--forward.otlp.endpoint="+sinkAddr,
		"--forward.otlp.insecure",
		"--forward.otlp.interval=1s",
	)

	runDashWorkload(t, gw)
	sendDashSpans(t, otlpAddr)
	spansPerRound := float64(3 * len(dashScripts))
	eventually(t, 10*time.Second, func() error {
		n, err := receivedSpans(gw)
		if err == nil && n != spansPerRound {
			err = fmt.Errorf("pushrelay received %v spans over OTLP HTTP, want %v", n, spansPerRound)
		}
		return err
	})

	prom := startPrometheus(t, gw.addr)
	// A second round of spans after Prometheus has scraped the first gives
	// the counters a rate.
	eventually(t, 20*time.Second, func() error {
		res, err := query(prom, `traces_spanmetrics_calls_total`)
		if err == nil && len(res) == 0 {
			err = fmt.Errorf("prometheus has not scraped span metrics yet")
		}
		return err
	})
	sendDashSpans(t, otlpAddr)

	done := make([]bool, len(queries))
	eventually(t, dashboardsTimeout, func() error {
		var failing []string
		for i, q := range queries {
			if done[i] {
				continue
			}
			res, err := query(prom, q.expr)
			switch {
			case err != nil:
				failing = append(failing, fmt.Sprintf("%s: %v", q.where, err))
			case len(res) == 0:
				failing = append(failing, fmt.Sprintf("%s: no series from %s", q.where, q.expr))
			default:
				done[i] = true
			}
		}
		if len(failing) > 0 {
			time.Sleep(250 * time.Millisecond)
			return fmt.Errorf("%d of %d dashboard queries return no data:\n%s", len(failing), len(queries), strings.Join(failing, "\n"))
		}
		return nil
	})
	t.Logf("%d dashboard queries return data", len(queries))
	require.Positive(t, sink.requests.Load(), "pushrelay forwarded nothing to the OTLP sink")

	// The panels show what happened, not just anything.
	res, err := query(prom, findQuery(t, queries, "table", "Last push failed", "A"))
	require.NoError(t, err)
	require.Equal(t, []string{"wm_flaky_export"}, labelValues(res, "job"), "groups whose last push failed")
	res, err = query(prom, findQuery(t, queries, "table", "Stale groups", "A"))
	require.NoError(t, err)
	require.Equal(t, []string{"wm_stopped_report"}, labelValues(res, "job"), "stale groups")
	res, err = query(prom, findQuery(t, queries, "bargauge", "job_records_processed (instant)", "A"))
	require.NoError(t, err)
	require.Equal(t, []string{"wm_flaky_export", "wm_nightly_import", "wm_stopped_report", "wm_sync_customers"}, labelValues(res, "job"))

	res, err = query(prom, findQuery(t, queries, "nodeGraph", "Service graph", "nodes"))
	require.NoError(t, err)
	require.Equal(t, []string{"windmill", "windmill-api", "windmill-worker"}, labelValues(res, "id"), "node graph nodes")
	for _, s := range res {
		require.Equal(t, s.Metric["id"], s.Metric["title"])
	}
	res, err = query(prom, findQuery(t, queries, "nodeGraph", "Service graph", "edges"))
	require.NoError(t, err)
	require.Equal(t, []string{"windmill-api->windmill-worker", "windmill-worker->windmill"}, labelValues(res, "id"), "node graph edges")
	for _, s := range res {
		require.Equal(t, s.Metric["source"]+"->"+s.Metric["target"], s.Metric["id"])
	}

	// The failing script has errors, the others none.
	eventually(t, 20*time.Second, func() error {
		res, err := query(prom, findQuery(t, queries, "timeseries", "Error ratio per script", "A"))
		if err != nil {
			return err
		}
		got := map[string]float64{}
		for _, s := range res {
			v, err := s.value()
			if err != nil {
				return err
			}
			got[s.Metric["script_path"]] = v
		}
		for _, s := range dashScripts {
			v, ok := got[s.path]
			switch {
			case !ok:
				return fmt.Errorf("no error ratio for %s: %v", s.path, got)
			case s.fail && !(v > 0):
				return fmt.Errorf("error ratio of failing %s is %v", s.path, v)
			case !s.fail && v != 0:
				return fmt.Errorf("error ratio of %s is %v, want 0", s.path, v)
			}
		}
		return nil
	})
}
