package gateway_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pushrelay/pushrelay/gateway"
)

// fixtureNative is a native histogram pushed by pushFixture.
func fixtureNative() *dto.MetricFamily {
	return &dto.MetricFamily{
		Name: ptr("native_seconds"), Help: ptr("A native histogram."), Type: dto.MetricType_HISTOGRAM.Enum(),
		Metric: []*dto.Metric{{
			Label: []*dto.LabelPair{label("path", "/x")},
			Histogram: &dto.Histogram{
				SampleCount: ptr(uint64(3)), SampleSum: ptr(3.5), Schema: ptr(int32(0)),
				ZeroThreshold: ptr(0.001), ZeroCount: ptr(uint64(0)),
				PositiveSpan:  []*dto.BucketSpan{{Offset: ptr(int32(0)), Length: ptr(uint32(2))}},
				PositiveDelta: []int64{1, 1},
			},
		}},
	}
}

// pushFixture pushes a fixed set of groups covering every metric type,
// merged families, escapes, empty label values, a failed push and a POST.
func pushFixture(t *testing.T, g *testGateway) {
	t.Helper()
	g.At(1).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/batch", lines(
		`# HELP jobs_total Jobs processed.`,
		`# TYPE jobs_total counter`,
		`jobs_total{queue="b"} 20`,
		`jobs_total{queue="a"} 10`,
		`# HELP rpc_duration_seconds RPC latency.`,
		`# TYPE rpc_duration_seconds summary`,
		`rpc_duration_seconds{quantile="0.5"} 0.25`,
		`rpc_duration_seconds{quantile="0.9"} 1.5`,
		`rpc_duration_seconds_sum 42.5`,
		`rpc_duration_seconds_count 100`,
		`# TYPE req_size_bytes histogram`,
		`req_size_bytes_bucket{le="100"} 3`,
		`req_size_bytes_bucket{le="1000"} 5`,
		`req_size_bytes_bucket{le="+Inf"} 6`,
		`req_size_bytes_sum 4321`,
		`req_size_bytes_count 6`,
	))
	g.At(2).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/batch/instance/w1", lines(
		`# HELP jobs_total Jobs processed.`,
		`# TYPE jobs_total counter`,
		`jobs_total{queue="a"} 1`,
		`# HELP esc Line one\nline two with \\ backslash.`,
		`esc{v="quote \" backslash \\ newline \n end"} 1`,
	))
	g.At(3).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/other/env@base64/=", lines(
		`# TYPE c counter`,
		`c 5`,
		`# TYPE g gauge`,
		`g{k="nan"} NaN`,
		`g{k="inf"} +Inf`,
		`g{k="neg"} -Inf`,
		`g{k="small"} 1.5e-07`,
		`u 3`,
	))
	g.At(4).MustDo(http.StatusOK, http.MethodPut, "/metrics/job@base64/YS9i", "")
	g.At(5).MustDo(http.StatusBadRequest, http.MethodPut, "/metrics/job/failed", "x 1 1\n")
	g.At(6).MustDo(http.StatusOK, http.MethodPost, "/metrics/job/batch", lines(
		`# TYPE last_success gauge`,
		`last_success 1.7e+09`,
	))
	g.At(7).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/native", delimited(t, fixtureNative()), "Content-Type", protoContentType)
}

const textContentType = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"

func TestExpositionText(t *testing.T) {
	g := MustNewGateway(t)
	pushFixture(t, g)

	rec := g.Do(http.MethodGet, "/metrics", nil)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, textContentType, rec.Header().Get("Content-Type"))
	text := withoutOwn(rec.Body.String())
	requireGolden(t, "exposition.txt", []byte(text))

	t.Run("own registry families are present", func(t *testing.T) {
		require.Contains(t, rec.Body.String(), "# TYPE pushrelay_http_requests_total counter\n")
	})
	t.Run("pushed families only, without the filter", func(t *testing.T) {
		rec := httptest.NewRecorder()
		g.store.ExpositionHandler(prometheus.NewRegistry()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		require.Equal(t, text, rec.Body.String())
	})
	t.Run("same bytes as client_golang's gather and expfmt", func(t *testing.T) {
		mfs, err := prometheus.Gatherers{g.store.Gatherer()}.Gather()
		require.NoError(t, err)
		var buf bytes.Buffer
		for _, mf := range mfs {
			_, err := expfmt.MetricFamilyToText(&buf, mf)
			require.NoError(t, err)
		}
		require.Equal(t, text, buf.String())
	})
	t.Run("re-parses and gathers consistently", func(t *testing.T) {
		mfs, err := parseText(text)
		require.NoError(t, err)
		require.NoError(t, checkGather(mfs))
	})
	t.Run("families are sorted and merged", func(t *testing.T) {
		var names []string
		for _, line := range strings.Split(text, "\n") {
			if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
				names = append(names, strings.Fields(rest)[0])
			}
		}
		require.True(t, sort.StringsAreSorted(names), names)
		require.Equal(t, 1, strings.Count(text, "# TYPE jobs_total "), "same-named families are merged")
	})
}

func TestExpositionOpenMetrics(t *testing.T) {
	g := MustNewGateway(t)
	pushFixture(t, g)
	rec := g.Do(http.MethodGet, "/metrics", nil, "Accept", "application/openmetrics-text;version=1.0.0")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores", rec.Header().Get("Content-Type"))
	body := rec.Body.String()
	require.True(t, strings.HasSuffix(body, "# EOF\n"), "OpenMetrics ends with # EOF")
	text := withoutOwn(body)
	requireGolden(t, "exposition.openmetrics.txt", []byte(text))
	require.Contains(t, text, "# TYPE c unknown\nc{env=\"\",instance=\"\",job=\"other\"} 5.0\n", "a counter without _total keeps its name as unknown")
	require.Contains(t, text, "# HELP jobs Jobs processed.\n# TYPE jobs counter\n", "a counter with _total loses the suffix in its header only")
	require.Contains(t, text, "jobs_total{instance=\"\",job=\"batch\",queue=\"a\"} 10.0\n")

	// The le and quantile values keep the text format's form, so that
	// Prometheus 2 stores the same series as from the text format.
	require.Contains(t, text, `req_size_bytes_bucket{instance="",job="batch",le="100"} 3`+"\n")
	t.Run("same bytes as expfmt but for le and quantile values", func(t *testing.T) {
		mfs, err := prometheus.Gatherers{g.store.Gatherer()}.Gather()
		require.NoError(t, err)
		require.Equal(t, text, gateway.ExpfmtOpenMetrics(t, mfs))
	})
}

// TestExpositionOpenMetricsKeepsPushedLabels checks that in OpenMetrics
// only the bounds expfmt writes from numbers, a histogram's le and a
// summary's quantile, take the text format's form, on series rendered
// through expfmt (with exemplars) and on own families: le and quantile
// labels pushed on a counter and exemplar labels stay as pushed.
func TestExpositionOpenMetricsKeepsPushedLabels(t *testing.T) {
	g := MustNewGateway(t, withOwn(func(r *prometheus.Registry) {
		desc := prometheus.NewDesc("own_latency_seconds", "Own summary.", nil, nil)
		r.MustRegister(constCollector{prometheus.MustNewConstSummary(desc, 3, 1.5, map[float64]float64{0: 0.1, 1: 0.9})})
	}))
	exemplar := func(name, value string, v float64) *dto.Exemplar {
		return &dto.Exemplar{Label: []*dto.LabelPair{label(name, value)}, Value: ptr(v)}
	}
	counter := &dto.MetricFamily{Name: ptr("hits_total"), Type: dto.MetricType_COUNTER.Enum(), Metric: []*dto.Metric{{
		Label:   []*dto.LabelPair{label("le", "1.0"), label("quantile", "0.50")},
		Counter: &dto.Counter{Value: ptr(3.0), Exemplar: exemplar("trace_id", "abc", 1)},
	}}}
	histogram := &dto.MetricFamily{Name: ptr("lat_seconds"), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{{
		Histogram: &dto.Histogram{SampleCount: ptr(uint64(2)), SampleSum: ptr(1.0), Bucket: []*dto.Bucket{
			{UpperBound: ptr(1.0), CumulativeCount: ptr(uint64(2)), Exemplar: exemplar("le", "5.0", 0.5)},
		}},
	}}}
	g.MustDo(http.StatusOK, http.MethodPut, "/metrics/job/j", delimited(t, counter, histogram), "Content-Type", protoContentType)
	for _, scrape := range []string{"rendered", "cached"} {
		rec := g.Do(http.MethodGet, "/metrics", nil, "Accept", "application/openmetrics-text;version=1.0.0")
		require.Equal(t, http.StatusOK, rec.Code)
		body := rec.Body.String()
		for _, line := range []string{
			`hits_total{instance="",job="j",le="1.0",quantile="0.50"} 3.0 # {trace_id="abc"} 1.0`,
			`lat_seconds_bucket{instance="",job="j",le="1"} 2 # {le="5.0"} 0.5`,
			`own_latency_seconds{quantile="0"} 0.1`,
			`own_latency_seconds{quantile="1"} 0.9`,
		} {
			require.Contains(t, body, "\n"+line+"\n", scrape)
		}
	}
}

// constCollector collects one constant metric.
type constCollector struct{ m prometheus.Metric }

func (c constCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.Desc() }
func (c constCollector) Collect(ch chan<- prometheus.Metric) { ch <- c.m }

func TestExpositionProtobufRoundTrip(t *testing.T) {
	g := MustNewGateway(t)
	pushFixture(t, g)
	text := g.Metrics()

	rec := g.Do(http.MethodGet, "/metrics", nil, "Accept", protoContentType)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, protoContentType+"; escaping=underscores", rec.Header().Get("Content-Type"))
	var buf bytes.Buffer
	var native *dto.MetricFamily
	for _, mf := range readDelimited(t, rec.Body) {
		if isOwnFamily(mf.GetName()) {
			continue
		}
		for _, m := range mf.Metric {
			require.Nil(t, m.TimestampMs, "pushed samples never carry timestamps")
		}
		if mf.GetName() == "native_seconds" {
			native = mf
		}
		_, err := expfmt.MetricFamilyToText(&buf, mf)
		require.NoError(t, err)
	}
	require.Equal(t, text, buf.String(), "protobuf and text expositions must agree")

	want := fixtureNative()
	want.Metric[0].Label = []*dto.LabelPair{label("instance", ""), label("job", "native"), label("path", "/x")}
	require.True(t, proto.Equal(want, native), "native histograms survive the protobuf round trip:\nwant %v\ngot  %v", want, native)
}

// familyStart matches the start of every family in the protobuf text
// formats, which put each family's top-level name first on a line (with
// the varying spacing of the protobuf text encoder).
var familyStart = regexp.MustCompile(`(?m)^name:\s*"([^"]*)"`)

// TestExpositionProtobufText checks the protobuf text formats, which
// client_golang's handler offers too: every pushed family as expfmt writes
// it, plain and with gzip.
func TestExpositionProtobufText(t *testing.T) {
	g := MustNewGateway(t)
	pushFixture(t, g)
	rec := g.Do(http.MethodGet, "/metrics", nil, "Accept", protoContentType)
	require.Equal(t, http.StatusOK, rec.Code)
	mfs := readDelimited(t, rec.Body)
	for _, typ := range []expfmt.FormatType{expfmt.TypeProtoText, expfmt.TypeProtoCompact} {
		format := expfmt.NewFormat(typ)
		t.Run(string(format), func(t *testing.T) {
			var want bytes.Buffer
			enc := expfmt.NewEncoder(&want, format)
			for _, mf := range mfs {
				if !isOwnFamily(mf.GetName()) {
					require.NoError(t, enc.Encode(mf))
				}
			}
			require.NotEmpty(t, want.String())
			for _, gz := range []bool{false, true} {
				headers := []string{"Accept", string(format)}
				if gz {
					headers = append(headers, "Accept-Encoding", "gzip")
				}
				rec := g.Do(http.MethodGet, "/metrics", nil, headers...)
				require.Equal(t, http.StatusOK, rec.Code)
				require.Equal(t, string(format)+"; escaping=underscores", rec.Header().Get("Content-Type"))
				body := rec.Body.String()
				if gz {
					zr, err := gzip.NewReader(rec.Body)
					require.NoError(t, err)
					b, err := io.ReadAll(zr)
					require.NoError(t, err)
					body = string(b)
				}
				// The families without the own ones, whose values change
				// from scrape to scrape.
				var got strings.Builder
				starts := familyStart.FindAllStringSubmatchIndex(body, -1)
				require.NotEmpty(t, starts, body)
				require.Zero(t, starts[0][0], "the body starts with a family")
				for i, m := range starts {
					end := len(body)
					if i+1 < len(starts) {
						end = starts[i+1][0]
					}
					if !isOwnFamily(body[m[2]:m[3]]) {
						got.WriteString(body[m[0]:end])
					}
				}
				require.Equal(t, want.String(), got.String(), "gzip %v", gz)
			}
		})
	}
}

func TestExpositionGzip(t *testing.T) {
	g := MustNewGateway(t)
	pushFixture(t, g)
	plain := g.Metrics()
	for name, accept := range map[string]string{
		"gzip":               "gzip",
		"list with q values": "deflate;q=1.0, GZIP;q=0.5, br",
	} {
		t.Run(name, func(t *testing.T) {
			rec := g.Do(http.MethodGet, "/metrics", nil, "Accept-Encoding", accept)
			require.Equal(t, http.StatusOK, rec.Code)
			require.Equal(t, "gzip", rec.Header().Get("Content-Encoding"))
			require.Equal(t, textContentType, rec.Header().Get("Content-Type"))
			zr, err := gzip.NewReader(rec.Body)
			require.NoError(t, err)
			b, err := io.ReadAll(zr)
			require.NoError(t, err)
			require.Equal(t, plain, withoutOwn(string(b)))
		})
	}
	t.Run("identity", func(t *testing.T) {
		rec := g.Do(http.MethodGet, "/metrics", nil, "Accept-Encoding", "identity")
		require.Empty(t, rec.Header().Get("Content-Encoding"))
		require.Equal(t, plain, withoutOwn(rec.Body.String()))
	})
}

// TestExpositionNegotiation checks which format each Accept header gets.
func TestExpositionNegotiation(t *testing.T) {
	scenarios := map[string]struct {
		accept string
		want   string
	}{
		"no Accept":          {accept: "", want: textContentType},
		"curl":               {accept: "*/*", want: textContentType},
		"text 0.0.4":         {accept: "text/plain;version=0.0.4", want: textContentType},
		"unknown type":       {accept: "application/json", want: textContentType},
		"delimited protobuf": {accept: protoContentType, want: protoContentType + "; escaping=underscores"},
		"protobuf text": {
			accept: "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
			want:   "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=text; escaping=underscores",
		},
		"protobuf compact text": {
			accept: "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=compact-text",
			want:   "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=compact-text; escaping=underscores",
		},
		"protobuf without encoding": {accept: "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily", want: textContentType},
		"protobuf text preferred by q": {
			accept: "text/plain;version=0.0.4;q=0.5,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=compact-text;q=0.9",
			want:   "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=compact-text; escaping=underscores",
		},
		"protobuf preferred by q": {
			accept: "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3",
			want:   protoContentType + "; escaping=underscores",
		},
	}
	g := MustNewGateway(t)
	g.At(1).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/j", "m 1\n")
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			rec := g.Do(http.MethodGet, "/metrics", nil, "Accept", s.accept)
			require.Equal(t, http.StatusOK, rec.Code)
			require.Equal(t, s.want, rec.Header().Get("Content-Type"))
		})
	}
}

// TestExpositionOwnAndPushedMerged checks that a pushed family named like an
// own metric is exposed as one family with the own help, series sorted.
func TestExpositionOwnAndPushedMerged(t *testing.T) {
	g := MustNewGateway(t, withOwn(registerOwn))
	g.At(1).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/b", "# TYPE own_gauge gauge\nown_gauge{x=\"2\"} 2\n")
	g.At(2).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/a", "# TYPE own_gauge gauge\nown_gauge{x=\"1\"} 1\n")
	require.Contains(t, g.Metrics(), lines(
		`# HELP own_gauge Own gauge.`,
		`# TYPE own_gauge gauge`,
		`own_gauge 7`,
		`own_gauge{instance="",job="a",x="1"} 1`,
		`own_gauge{instance="",job="b",x="2"} 2`,
		`# HELP own_summary Own summary.`,
	))
}

// TestExpositionEmptyFamily checks that a protobuf family without metrics
// is stored but not exposed.
func TestExpositionEmptyFamily(t *testing.T) {
	g := MustNewGateway(t)
	g.At(1).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/j",
		delimited(t, &dto.MetricFamily{Name: ptr("empty_total"), Type: dto.MetricType_COUNTER.Enum()}), "Content-Type", protoContentType)
	require.NotContains(t, g.Metrics(), "empty_total")
	fam, ok := g.APIMetrics()[0]["empty_total"].(map[string]any)
	require.True(t, ok)
	require.Equal(t, []any{}, fam["metrics"])
}

func TestExpositionNameFilter(t *testing.T) {
	g := MustNewGateway(t)
	pushFixture(t, g)
	// Two pushed families (one merged from two groups), one own family and
	// one name nobody exposes.
	only := map[string]bool{"jobs_total": true, "req_size_bytes": true, "pushrelay_http_requests_total": true, "missing": true}
	query := "/metrics?name[]=jobs_total&name[]=req_size_bytes&name[]=pushrelay_http_requests_total&name[]=missing"
	mfs, err := prometheus.Gatherers{g.store.Gatherer()}.Gather()
	require.NoError(t, err)
	var pushed []*dto.MetricFamily
	for _, mf := range mfs {
		if only[mf.GetName()] {
			pushed = append(pushed, mf)
		}
	}
	require.Len(t, pushed, 2)
	var text bytes.Buffer
	for _, mf := range pushed {
		_, err := expfmt.MetricFamilyToText(&text, mf)
		require.NoError(t, err)
	}
	om := gateway.ExpfmtOpenMetrics(t, pushed)

	for _, tc := range []struct {
		name, accept string
		gzip         bool
		want         string
	}{
		{"text", "text/plain;version=0.0.4", false, text.String()},
		{"text+gzip", "text/plain;version=0.0.4", true, text.String()},
		{"openmetrics", "application/openmetrics-text;version=1.0.0", false, om},
		{"openmetrics+gzip", "application/openmetrics-text;version=1.0.0", true, om},
	} {
		t.Run(tc.name, func(t *testing.T) {
			headers := []string{"Accept", tc.accept}
			if tc.gzip {
				headers = append(headers, "Accept-Encoding", "gzip")
			}
			// Twice: the first scrape fills the caches the second uses.
			for range 2 {
				rec := g.Do(http.MethodGet, query, nil, headers...)
				require.Equal(t, http.StatusOK, rec.Code)
				body := rec.Body.String()
				if tc.gzip {
					zr, err := gzip.NewReader(rec.Body)
					require.NoError(t, err)
					b, err := io.ReadAll(zr)
					require.NoError(t, err)
					body = string(b)
				}
				require.Equal(t, tc.want, withoutOwn(body), "the pushed families asked for, as without the filter")
				require.Equal(t, 3, strings.Count(body, "# TYPE "), "the own family asked for and no other:\n%s", body)
				require.Contains(t, body, "\npushrelay_http_requests_total{code=\"200\",handler=\"push\",method=\"put\"} ")
			}
		})
	}
	t.Run("protobuf", func(t *testing.T) {
		rec := g.Do(http.MethodGet, query, nil, "Accept", protoContentType)
		require.Equal(t, http.StatusOK, rec.Code)
		var names []string
		for _, mf := range readDelimited(t, rec.Body) {
			names = append(names, mf.GetName())
		}
		require.Equal(t, []string{"jobs_total", "pushrelay_http_requests_total", "req_size_bytes"}, names)
	})
	t.Run("a name nobody exposes", func(t *testing.T) {
		rec := g.Do(http.MethodGet, "/metrics?name[]=missing", nil, "Accept", "application/openmetrics-text;version=1.0.0")
		require.Equal(t, http.StatusOK, rec.Code)
		require.Equal(t, "# EOF\n", rec.Body.String())
	})
}
