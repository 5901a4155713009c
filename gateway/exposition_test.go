package gateway

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"
)

// TestFastExpositionMatchesExpfmt checks the cached-bytes exposition, in the
// text format and in OpenMetrics, against expfmt encoding the same families
// decoded from the store.
func TestFastExpositionMatchesExpfmt(t *testing.T) {
	st, err := NewStore(StoreOptions{})
	require.NoError(t, err)
	defer st.Close()
	h := NewHandler(st, HandlerOptions{Registry: prometheus.NewRegistry()})
	bodies := map[string]string{
		"/metrics/job/a":            "# HELP c_total A counter.\n# TYPE c_total counter\nc_total{x=\"1\"} 1\nc_total{x=\"2\"} 0\nc_total{x=\"3\"} -1\nc_total{x=\"4\"} 1e+06\nc_total{x=\"5\"} 2.5\n# TYPE plain counter\nplain 7\n",
		"/metrics/job/b/instance/i": "# TYPE g gauge\ng NaN\ng{y=\"q\\\"uote\\\\back\\nline\"} +Inf\ng{y=\"z\"} -Inf\nu 123456789012\nu{y=\"1\"} 1.5e-300\n",
		"/metrics/job/c":            "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"1\"} 1000000\nh_bucket{le=\"+Inf\"} 1000001\nh_sum 3.5\nh_count 1000001\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n",
		"/metrics/job/d":            "# TYPE c_total counter\nc_total{x=\"1\"} 4\n# TYPE g gauge\ng 0\n",
		"/metrics/job/e":            "# TYPE h histogram\nh_bucket{le=\"1e-05\"} 0\nh_bucket{le=\"2.5\"} 9007199254740991\nh_bucket{le=\"+Inf\"} 9007199254740991\nh_sum NaN\nh_count 9007199254740991\n# TYPE s summary\ns{quantile=\"0\"} -Inf\ns{quantile=\"1\"} +Inf\ns_sum -2\ns_count 0\n",
	}
	for path, body := range bodies {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, path, strings.NewReader(body)))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	}
	mfs, err := st.Gatherer().Gather()
	require.NoError(t, err)
	for _, tc := range []struct {
		accept string
		format expfmt.Format
	}{
		{"", expfmt.NewFormat(expfmt.TypeTextPlain)},
		{"application/openmetrics-text;version=1.0.0", expfmt.NewFormat(expfmt.TypeOpenMetrics)},
	} {
		var want bytes.Buffer
		if tc.format.FormatType() == expfmt.TypeOpenMetrics {
			want.WriteString(expfmtOpenMetrics(t, mfs))
		} else {
			for _, mf := range mfs {
				_, err := expfmt.MetricFamilyToText(&want, mf)
				require.NoError(t, err)
			}
		}
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if tc.accept != "" {
			req.Header.Set("Accept", tc.accept)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusOK, rec.Code)
		got := rec.Body.String()
		// The handler adds its own metrics; compare the pushed part.
		require.Equal(t, want.String(), withoutFamilies(withoutFamilies(got, "promhttp_metric_handler_"), "pushrelay_"), "format %s", tc.format)
	}
}

// withoutFamilies drops the lines of families whose name starts with prefix.
func withoutFamilies(exposition, prefix string) string {
	var out []string
	for _, l := range strings.SplitAfter(exposition, "\n") {
		name := strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(l, "# HELP "), "# TYPE "), "# UNIT ")
		if strings.HasPrefix(name, prefix) {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "")
}

// TestSortKeyOrder checks that the byte order of sort keys is the order
// client_golang sorts metrics in: by label count, then value by value.
func TestSortKeyOrder(t *testing.T) {
	alphabet := []string{"", "a", "b", "a\x00", "\x00", "ab", "a\x01", "\xff", "é"}
	rng := rand.New(rand.NewPCG(1, 2))
	type item struct {
		values []string
		key    string
	}
	var items []item
	for i := 0; i < 500; i++ {
		n := rng.IntN(3)
		var labels []label
		var values []string
		for j := 0; j < n; j++ {
			v := alphabet[rng.IntN(len(alphabet))] + alphabet[rng.IntN(len(alphabet))]
			values = append(values, v)
			labels = append(labels, label{"l", v})
		}
		items = append(items, item{values, sortKey(labels, "g", uint64(i))})
	}
	elementwise := func(a, b []string) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		for k := range a {
			if a[k] != b[k] {
				return strings.Compare(a[k], b[k])
			}
		}
		return 0
	}
	sort.Slice(items, func(i, j int) bool { return items[i].key < items[j].key })
	for i := 1; i < len(items); i++ {
		require.LessOrEqual(t, elementwise(items[i-1].values, items[i].values), 0, "%q before %q", items[i-1].values, items[i].values)
	}
}

func TestTextBounds(t *testing.T) {
	histogram, summary := dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY
	scenarios := map[string]struct {
		typ      dto.MetricType
		in, want string
	}{
		"le integer":                     {histogram, `h_bucket{a="b",le="1.0"} 3` + "\n", `h_bucket{a="b",le="1"} 3` + "\n"},
		"le first label":                 {histogram, `h_bucket{le="10.0"} 3` + "\n", `h_bucket{le="10"} 3` + "\n"},
		"le kept":                        {histogram, `h_bucket{le="0.25"} 3` + "\n", `h_bucket{le="0.25"} 3` + "\n"},
		"le +Inf":                        {histogram, `h_bucket{le="+Inf"} 3` + "\n", `h_bucket{le="+Inf"} 3` + "\n"},
		"large le":                       {histogram, `h_bucket{le="1.0e+06"} 3` + "\n", `h_bucket{le="1e+06"} 3` + "\n"},
		"gauge histogram le":             {dto.MetricType_GAUGE_HISTOGRAM, `h_bucket{le="2.0"} 3` + "\n", `h_bucket{le="2"} 3` + "\n"},
		"quantile":                       {summary, `s{quantile="1.0"} 3.0` + "\n", `s{quantile="1"} 3.0` + "\n"},
		"not a label name":               {histogram, `h_bucket{file="1.0"} 3` + "\n", `h_bucket{file="1.0"} 3` + "\n"},
		"escaped in value":               {histogram, `h_bucket{x="a,le=\"1.0\"",le="1.0"} 3` + "\n", `h_bucket{x="a,le=\"1.0\"",le="1"} 3` + "\n"},
		"exemplar untouched":             {histogram, `h_bucket{le="2.0"} 1 # {traceID="abc"} 2.0 1.7e+09` + "\n", `h_bucket{le="2"} 1 # {traceID="abc"} 2.0 1.7e+09` + "\n"},
		"quantile of histogram":          {histogram, `h_bucket{le="1.0",quantile="1.0"} 3` + "\n", `h_bucket{le="1",quantile="1.0"} 3` + "\n"},
		"le of summary":                  {summary, `s{le="1.0",quantile="0.50"} 3.0` + "\n", `s{le="1.0",quantile="0.5"} 3.0` + "\n"},
		"pushed le of a gauge":           {dto.MetricType_GAUGE, `g{le="Inf"} 1.0` + "\n", `g{le="Inf"} 1.0` + "\n"},
		"pushed quantile label":          {dto.MetricType_UNTYPED, `u{quantile="1.0"} 1.0` + "\n", `u{quantile="1.0"} 1.0` + "\n"},
		"exemplar's le kept":             {histogram, `h_bucket{le="1.0"} 2 # {le="5.0"} 0.5` + "\n", `h_bucket{le="1"} 2 # {le="5.0"} 0.5` + "\n"},
		"exemplar without labels before": {histogram, `h_sum 3.0 # {a="x",le="5.0"} 0.5` + "\n", `h_sum 3.0 # {a="x",le="5.0"} 0.5` + "\n"},
		"quoted comma and brace":         {histogram, `h_bucket{x="a}, le=\"2.0\"",le="3.0"} 1` + "\n", `h_bucket{x="a}, le=\"2.0\"",le="3"} 1` + "\n"},
		"escaped backslash":              {summary, `s{x="\\",quantile="1.0"} 1.0` + "\n", `s{x="\\",quantile="1"} 1.0` + "\n"},
		"comment lines kept":             {histogram, `# HELP h_bucket{le="1.0"}` + "\n", `# HELP h_bucket{le="1.0"}` + "\n"},
		"several lines":                  {histogram, `h_bucket{le="1.0"} 1` + "\n" + `h_bucket{le="2.50"} 2` + "\n" + `h_bucket{le="+Inf"} 2`, `h_bucket{le="1"} 1` + "\n" + `h_bucket{le="2.5"} 2` + "\n" + `h_bucket{le="+Inf"} 2`},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, sc.want, string(textBounds([]byte(sc.in), sc.typ)))
		})
	}
}

// TestOpenMetricsFallsBackForFloatHistograms checks that a scrape asking
// for OpenMetrics gets the text format while a histogram with fractional
// counts is stored, and OpenMetrics again once it is gone.
func TestOpenMetricsFallsBackForFloatHistograms(t *testing.T) {
	st, err := NewStore(StoreOptions{})
	require.NoError(t, err)
	defer st.Close()
	h := NewHandler(st, HandlerOptions{})
	serve := func(method, path, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	require.Equal(t, http.StatusOK, serve(http.MethodPut, "/metrics/job/f", "# TYPE h histogram\nh_bucket{le=\"1\"} 1.5\nh_bucket{le=\"+Inf\"} 2.5\nh_sum 1\nh_count 2.5\n").Code)
	rec := serve(http.MethodGet, "/metrics", "")
	require.Equal(t, http.StatusOK, rec.Code)
	require.True(t, strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain; version=0.0.4"), rec.Header().Get("Content-Type"))
	require.Contains(t, rec.Body.String(), `h_bucket{instance="",job="f",le="1"} 1.5`)

	require.Equal(t, http.StatusAccepted, serve(http.MethodDelete, "/metrics/job/f", "").Code)
	rec = serve(http.MethodGet, "/metrics", "")
	require.True(t, strings.HasPrefix(rec.Header().Get("Content-Type"), "application/openmetrics-text"), rec.Header().Get("Content-Type"))
}

// expfmtOpenMetrics returns mfs in OpenMetrics as expfmt writes them, with
// the bucket bounds and quantiles in the text format's form (textBounds), as
// pushrelay exposes them.
func expfmtOpenMetrics(t testing.TB, mfs []*dto.MetricFamily) string {
	t.Helper()
	var out, buf bytes.Buffer
	for _, mf := range mfs {
		buf.Reset()
		_, err := expfmt.MetricFamilyToOpenMetrics(&buf, mf)
		require.NoError(t, err)
		out.Write(textBounds(buf.Bytes(), mf.GetType()))
	}
	_, err := expfmt.FinalizeOpenMetrics(&out)
	require.NoError(t, err)
	return out.String()
}

// FuzzTextBounds checks that textBounds, which reads label values pushed
// from outside, never panics, keeps every line, is idempotent and only
// replaces a number by another form of the same number.
func FuzzTextBounds(f *testing.F) {
	for _, seed := range []string{
		`h_bucket{a="b",le="1.0"} 3` + "\n" + `h_bucket{le="+Inf"} 3`,
		`h_bucket{x="a}, le=\"2.0\"",le="3.0"} 1 # {le="5.0"} 0.5` + "\n",
		`s{x="\\",quantile="1.0"} 1.0` + "\n# HELP s{quantile=\"1.0\"}\n",
		`h_sum 3.0 # {a="x",le="5.0"} 0.5`,
		`h{le="`, `h{a="\`, "{,le=\"1e3\"}",
	} {
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, in string, histogram bool) {
		typ := dto.MetricType_SUMMARY
		if histogram {
			typ = dto.MetricType_HISTOGRAM
		}
		out := string(textBounds([]byte(in), typ))
		require.Equal(t, out, string(textBounds([]byte(out), typ)), "idempotent")
		inLines, outLines := strings.Split(in, "\n"), strings.Split(out, "\n")
		require.Len(t, outLines, len(inLines))
		for i, a := range inLines {
			b := outLines[i]
			if a == b {
				continue
			}
			// One quoted value differs: the same number in another form.
			pa, pb := strings.Split(a, `"`), strings.Split(b, `"`)
			require.Len(t, pb, len(pa), "line %q → %q", a, b)
			changed := 0
			for j := range pa {
				if pa[j] == pb[j] {
					continue
				}
				changed++
				va, errA := strconv.ParseFloat(pa[j], 64)
				vb, errB := strconv.ParseFloat(pb[j], 64)
				require.NoError(t, errA, "line %q → %q", a, b)
				require.NoError(t, errB, "line %q → %q", a, b)
				require.True(t, va == vb || va != va && vb != vb, "line %q → %q", a, b)
			}
			require.Equal(t, 1, changed, "line %q → %q", a, b)
		}
	})
}
