package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// TestPushInstrumentationMatchesPromhttp checks that the push handlers'
// one wrapper counts and observes what promhttp's counter, duration and
// request size wrappers record for the same requests.
func TestPushInstrumentationMatchesPromhttp(t *testing.T) {
	answer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch status := r.URL.Query().Get("status"); status {
		case "":
			// Nothing written: 200.
		case "body":
			_, _ = w.Write([]byte("ok"))
		default:
			code, _ := strconv.Atoi(status)
			if code >= 400 {
				http.Error(w, "failed", code)
			} else {
				w.WriteHeader(code)
			}
		}
	})
	requests := []struct {
		method, target string
		header         http.Header
		body           string
		chunked        bool
	}{
		{method: http.MethodPut, target: "/metrics/job/a", body: "m 1\n"},
		{method: http.MethodPost, target: "/metrics/job/a/instance/b?status=202", body: "m 1\n"},
		{method: http.MethodPut, target: "/metrics/job/a?status=400", header: http.Header{"Content-Type": {"text/plain; version=0.0.4"}}},
		{method: http.MethodPut, target: "/metrics/job/a?status=body", header: http.Header{"User-Agent": {"python-requests/2.31"}, "X-Many": {"a", "bb", "ccc"}}},
		{method: "put", target: "/metrics/job/lower?status=503"},
		{method: "PROPFIND", target: "/metrics/job/odd?status=418"},
		{method: http.MethodPost, target: "/metrics/job/chunked", body: strings.Repeat("m 1\n", 100), chunked: true},
	}

	ours, theirs := prometheus.NewRegistry(), prometheus.NewRegistry()
	m, ref := newHTTPMetrics(ours), newHTTPMetrics(theirs)
	wrapped := m.push("push", answer)
	reference := promhttp.InstrumentHandlerRequestSize(ref.pushSize,
		promhttp.InstrumentHandlerDuration(ref.pushDuration, ref.counted("push", answer)))
	for _, rq := range requests {
		for _, h := range []http.Handler{wrapped, reference} {
			req := httptest.NewRequest(rq.method, rq.target, strings.NewReader(rq.body))
			for name, values := range rq.header {
				req.Header[name] = values
			}
			if rq.chunked {
				req.ContentLength = -1
			}
			h.ServeHTTP(httptest.NewRecorder(), req)
		}
	}
	require.Equal(t, observations(t, theirs), observations(t, ours))
}

// observations lists the gathered samples of reg, one line per metric:
// counter values, and the count and sum of summaries, without the sums of
// durations.
func observations(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var lines []string
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			var labels []string
			for _, lp := range m.Label {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			line := fmt.Sprintf("%s{%s}", mf.GetName(), strings.Join(labels, ","))
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				line += fmt.Sprint(" ", m.GetCounter().GetValue())
			case dto.MetricType_SUMMARY:
				line += fmt.Sprint(" count ", m.GetSummary().GetSampleCount())
				if !strings.Contains(mf.GetName(), "duration") {
					line += fmt.Sprint(" sum ", m.GetSummary().GetSampleSum())
				}
			}
			lines = append(lines, line)
		}
	}
	require.NotEmpty(t, lines)
	return lines
}
