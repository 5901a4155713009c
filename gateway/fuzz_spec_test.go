package gateway_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/gateway"
)

// maxFuzzInput caps fuzz inputs, as Prometheus' fuzz targets do.
const maxFuzzInput = 64 << 10

// groupingURL renders g as the part of a push URL after /metrics/job with
// every value base64url-encoded, the form that round-trips any value.
func groupingURL(g gateway.Grouping) string {
	enc := func(v string) string {
		if v == "" {
			return "="
		}
		return base64.RawURLEncoding.EncodeToString([]byte(v))
	}
	names := make([]string, 0, len(g))
	for n := range g {
		if n != "job" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var sb strings.Builder
	sb.WriteString("@base64/" + enc(g["job"]))
	for _, n := range names {
		sb.WriteString("/" + n + "@base64/" + enc(g[n]))
	}
	return sb.String()
}

func FuzzParseGrouping(f *testing.F) {
	for _, s := range []string{
		"/foo", "/foo/", "/foo/instance/bar/a/b", "@base64/YmF6", "@base64/YmE=", "@base64/=",
		"/foo/a@base64/Pz8-", "/foo/a@base64/Pz8+", "/foo/a/b/c", "/foo/__x/1", "/foo/a//b",
		"/foo/job/bar", "/foo/a/Π", "@base64/", "/", "", "/foo/a@base64/==", "/foo/U__a_2e_b/x",
		"@base64/L2Zvby9iYXI/x@base64/AA", "/\xff/a/\xff", "/a/b@base64", "/foo/p@base64/_-8", "/a/b/\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, afterJob string) {
		if len(afterJob) > maxFuzzInput {
			return
		}
		g, err := gateway.ParseGrouping(afterJob)
		if err != nil {
			require.Nil(t, g)
			require.NotEmpty(t, err.Error())
			return
		}
		require.NotEmpty(t, g["job"], "an accepted grouping has a job")
		for n, v := range g {
			require.True(t, model.LegacyValidation.IsValidLabelName(n), "label name %q", n)
			require.False(t, strings.HasPrefix(n, "__"), "label name %q", n)
			require.True(t, utf8.ValidString(v), "value %q of %s", v, n)
		}
		again, err := gateway.ParseGrouping(groupingURL(g))
		require.NoError(t, err)
		require.Equal(t, g, again, "the base64 form of a grouping parses to the same grouping")
		require.Equal(t, g.Key(), again.Key())
	})
}

// fuzzBodySeeds are text bodies covering every type and the parser's
// corners.
var fuzzBodySeeds = []string{
	"",
	"m 1\n",
	"# HELP m Help with \\\\ and \\n.\n# TYPE m counter\nm{a=\"x\",b=\"y\\\"\\n\\\\\"} 1.5\nm{a=\"z\"} -Inf\n",
	"# TYPE g gauge\ng NaN\ng{instance=\"i\",job=\"j\"} +Inf\n",
	"# TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"0.9\"} 2\ns_sum 3\ns_count 4\n",
	"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
	"m 1 1700000000000\n",
	"m{a=\"1\"} 1\nm{a=\"1\"} 2\n",
	"x_count 1\n# TYPE x summary\nx{quantile=\"0.5\"} 1\n",
	"push_time_seconds 1\npush_failure_time_seconds 2\n",
	"# TYPE m gauge\n# TYPE m gauge\nm 1\n",
	"m 1\r\n",
	"m 1",
	"  m   {  a = \"b\" }   2  \n",
	"# EOF\n",
	"m{le=\"1\",quantile=\"2\"} 3\n",
	"a:b_c 1e-300\n",
}

func FuzzParseBodyText(f *testing.F) {
	for _, s := range fuzzBodySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > maxFuzzInput {
			return
		}
		checkBody(t, body, "text/plain; version=0.0.4")
	})
}

func FuzzParseBodyProtobuf(f *testing.F) {
	mf := func(name string, typ dto.MetricType, ms ...*dto.Metric) *dto.MetricFamily {
		return &dto.MetricFamily{Name: ptr(name), Help: ptr("help " + name), Type: typ.Enum(), Metric: ms}
	}
	seeds := [][]*dto.MetricFamily{
		nil,
		{mf("c_total", dto.MetricType_COUNTER, &dto.Metric{Label: []*dto.LabelPair{label("a", "1")}, Counter: &dto.Counter{Value: ptr(1.0)}})},
		{mf("g", dto.MetricType_GAUGE, &dto.Metric{Gauge: &dto.Gauge{Value: ptr(-2.5)}}, &dto.Metric{Label: []*dto.LabelPair{label("job", "x")}, Gauge: &dto.Gauge{Value: ptr(3.0)}})},
		{mf("s", dto.MetricType_SUMMARY, &dto.Metric{Summary: &dto.Summary{SampleCount: ptr(uint64(2)), SampleSum: ptr(3.0), Quantile: []*dto.Quantile{{Quantile: ptr(0.5), Value: ptr(1.0)}}}})},
		{mf("h", dto.MetricType_HISTOGRAM, &dto.Metric{Histogram: &dto.Histogram{SampleCount: ptr(uint64(2)), SampleSum: ptr(3.0), Bucket: []*dto.Bucket{{UpperBound: ptr(1.0), CumulativeCount: ptr(uint64(1))}}}})},
		{fixtureNative()},
		{mf("u", dto.MetricType_UNTYPED, &dto.Metric{Untyped: &dto.Untyped{Value: ptr(1.0)}, TimestampMs: ptr(int64(1))})},
		{mf("x", dto.MetricType_SUMMARY, &dto.Metric{Summary: &dto.Summary{}}), mf("x_count", dto.MetricType_UNTYPED, &dto.Metric{Untyped: &dto.Untyped{Value: ptr(1.0)}})},
		{mf("gh", dto.MetricType_GAUGE_HISTOGRAM, &dto.Metric{Histogram: &dto.Histogram{SampleCount: ptr(uint64(1))}})},
		{mf("m", dto.MetricType_GAUGE, &dto.Metric{Label: []*dto.LabelPair{label("a", "\xff"), label("a", "2"), label("__b", "")}, Gauge: &dto.Gauge{Value: ptr(1.0)}})},
		{mf("e_total", dto.MetricType_COUNTER)},
	}
	for _, s := range seeds {
		f.Add([]byte(delimited(f, s...)))
	}
	f.Add([]byte{0x05, 0x0a})
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > maxFuzzInput {
			return
		}
		checkBody(t, body, protoContentType)
	})
}

// checkBody parses body; an accepted body is pushed into a memory store
// under two groups, and after each write the exposition must match
// client_golang's encoding of the store, re-parse and gather consistently.
func checkBody(t *testing.T, body []byte, contentType string) {
	mfs, err := gateway.ParseBody(bytes.NewReader(body), contentType)
	if err != nil {
		return
	}
	store, err := gateway.NewStore(gateway.StoreOptions{})
	require.NoError(t, err)
	defer store.Close()

	first := gateway.Grouping{"job": "fuzz", "instance": "i"}
	err = store.Push(first, mfs, true, true)
	var rejected *gateway.RejectedError
	if err != nil {
		require.True(t, errors.As(err, &rejected), "unexpected error type %T: %v", err, err)
		requireExpositionConsistent(t, store)
		return
	}
	requireExpositionConsistent(t, store)

	// The same body under another job must be accepted too: the series
	// differ by job, the types and names are the same.
	again, err := gateway.ParseBody(bytes.NewReader(body), contentType)
	require.NoError(t, err)
	require.NoError(t, store.Push(gateway.Grouping{"job": "fuzz2"}, again, false, true))
	requireExpositionConsistent(t, store)

	require.NoError(t, store.Delete(first))
	requireExpositionConsistent(t, store)
}

func requireExpositionConsistent(t *testing.T, store *gateway.Store) {
	t.Helper()
	rec := httptest.NewRecorder()
	store.ExpositionHandler(prometheus.NewRegistry()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	text := rec.Body.String()

	gathered, err := prometheus.Gatherers{store.Gatherer()}.Gather()
	require.NoError(t, err, "the stored groups must gather without error")
	var want bytes.Buffer
	for _, mf := range gathered {
		_, err := expfmt.MetricFamilyToText(&want, mf)
		require.NoError(t, err)
	}
	require.Equal(t, want.String(), text, "cached exposition must equal expfmt's")

	parsed, err := parseText(text)
	require.NoError(t, err, "exposition must re-parse:\n%s", text)
	require.NoError(t, checkGather(parsed), "re-parsed exposition must gather:\n%s", text)

	// OpenMetrics, twice: rendered afresh, then from the caches.
	for range 2 {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
		rec = httptest.NewRecorder()
		store.ExpositionHandler(prometheus.NewRegistry()).ServeHTTP(rec, req)
		require.Equal(t, http.StatusOK, rec.Code)
		if !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/openmetrics-text") {
			// A histogram with fractional counts makes the scrape fall
			// back to the text format.
			require.Equal(t, want.String(), rec.Body.String())
			continue
		}
		require.Equal(t, gateway.ExpfmtOpenMetrics(t, gathered), rec.Body.String(), "cached OpenMetrics exposition must equal expfmt's")
	}
}

// sequencePaths and sequenceBodies are what FuzzPushSequence combines: groups
// that share labels in the exposition ({job="a"} and {job="a",instance=""},
// the base64 form of a job), a URL that is not UTF-8, and bodies that
// conflict with each other, carry timestamps or duplicates, collide with a
// histogram's suffixes or name a gateway family.
var (
	sequencePaths = []string{
		"/metrics/job/a",
		"/metrics/job/a/instance@base64/=",
		"/metrics/job/a/instance/x",
		"/metrics/job/b",
		"/metrics/job@base64/YQ",
		"/metrics/job/b/x@base64/=",
		"/metrics/job/c/x/%FF",
		"/metrics/job/a/b/1",
	}
	sequenceBodies = []string{
		"",
		"m 1\n",
		"# TYPE m counter\nm 2\n",
		"# TYPE m gauge\nm{instance=\"x\"} 3\n",
		"n 1 1000\n",
		"m 1\nm 1\n",
		"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
		"h_count 1\n",
		"push_time_seconds 5\npush_failure_time_seconds 6\n",
	}
)

// sequenceProtoBodies are the protobuf bodies of FuzzPushSequence: families
// named like those of sequenceBodies with other types, and a native
// histogram.
func sequenceProtoBodies(t testing.TB) []string {
	gauge := func(name string, v float64) *dto.MetricFamily {
		return &dto.MetricFamily{Name: ptr(name), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr(v)}}}}
	}
	return []string{
		delimited(t, gauge("m", 4)),
		delimited(t, gauge("h_count", 1), gauge("n", 2)),
		delimited(t, fixtureNative()),
		delimited(t, &dto.MetricFamily{Name: ptr("m"), Type: dto.MetricType_COUNTER.Enum(), Metric: []*dto.Metric{
			{Counter: &dto.Counter{Value: ptr(1.0)}}, {Label: []*dto.LabelPair{label("instance", "x")}, Counter: &dto.Counter{Value: ptr(2.0)}},
		}}),
	}
}

// FuzzPushSequence runs sequences of pushes, deletes and restarts, three
// bytes an operation (what, where, which body; a text body index past the
// list takes the rest of the input as the body), and checks what no
// sequence may break: no request fails with a server error, the exposition
// parses and gathers consistently, every group shows its own
// push_time_seconds, and a restart restores exactly what was exposed.
func FuzzPushSequence(f *testing.F) {
	protoBodies := sequenceProtoBodies(f)
	for _, s := range [][]byte{
		{0, 0, 1, 0, 1, 1},          // {job="a"}, then {job="a",instance=""}
		{0, 1, 1, 0, 0, 0, 3, 0, 0}, // the other order, then a restart
		{0, 0, 2, 0, 3, 3, 0, 0, 6, 0, 3, 7, 3, 0, 0},
		{0, 6, 0, 0, 6, 0, 0, 6, 1, 2, 6, 0},
		{0, 0, 1, 0, 0, 1, 1, 0, 2, 2, 0, 0, 0, 1, 1},
		{0, 0, 4, 0, 2, 5, 1, 4, 8, 3, 0, 0, 0, 4, 1},
		{0, 0, 9, 'm', ' ', '7'},
		{4, 0, 1, 5, 1, 0, 3, 0, 0, 5, 0, 2, 4, 3, 6, 0, 3, 1},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 3*16+256 {
			return
		}
		g := MustNewGateway(t)
		checkExposition := func() {
			t.Helper()
			requireConsistentExposition(t, g)
			mfs, err := parseText(g.MustDo(http.StatusOK, http.MethodGet, "/metrics", ""))
			require.NoError(t, err)
			// Every group's push_time_seconds as the JSON API and the
			// exposition show it, by the labels of its series.
			var api, exposed []string
			for _, group := range g.APIMetrics() {
				labels := map[string]string{"instance": ""}
				for n, v := range group["labels"].(map[string]any) {
					labels[n] = v.(string)
				}
				pt := group["push_time_seconds"].(map[string]any)["metrics"].([]any)
				require.Len(t, pt, 1, "group %v", labels)
				api = append(api, fmt.Sprint(labels, pt[0].(map[string]any)["value"]))
			}
			for _, m := range mfs["push_time_seconds"].GetMetric() {
				labels := map[string]string{}
				for _, lp := range m.GetLabel() {
					labels[lp.GetName()] = lp.GetValue()
				}
				exposed = append(exposed, fmt.Sprint(labels, strconv.FormatFloat(m.GetGauge().GetValue(), 'g', -1, 64)))
			}
			require.ElementsMatch(t, api, exposed, "every group shows its own push_time_seconds")
		}
		for i := 0; i+2 < len(ops); i += 3 {
			g.At(float64(i + 1))
			path := sequencePaths[int(ops[i+1])%len(sequencePaths)]
			body := ops[i+3:]
			if b := int(ops[i+2]); b < len(sequenceBodies) {
				body = []byte(sequenceBodies[b])
			}
			var rec *httptest.ResponseRecorder
			switch ops[i] % 6 {
			case 0:
				rec = g.Do(http.MethodPut, path, body)
			case 1:
				rec = g.Do(http.MethodPost, path, body)
			case 2:
				rec = g.Do(http.MethodDelete, path, nil)
			case 3:
				before := g.Samples()
				g.Restart()
				require.Equal(t, before, g.Samples(), "a restart restores what was exposed")
				continue
			case 4:
				rec = g.Do(http.MethodPut, path, body, gateway.TTLHeader, "1m")
			default:
				rec = g.Do(http.MethodPost, path, []byte(protoBodies[int(ops[i+2])%len(protoBodies)]), "Content-Type", protoContentType)
			}
			require.Contains(t, []int{http.StatusOK, http.StatusAccepted, http.StatusBadRequest}, rec.Code, "%s: %s", path, rec.Body.String())
			checkExposition()
			if ops[i]%6 != 5 && int(ops[i+2]) >= len(sequenceBodies) {
				break
			}
		}
	})
}
