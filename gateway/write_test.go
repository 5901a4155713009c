package gateway_test

import (
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// step is one request of a write scenario, served at t0+at seconds.
type step struct {
	at          float64
	method      string
	path        string
	body        string
	contentType string
	code        int
	// resp is the exact response body; empty means an empty body.
	resp string
}

func runSteps(t *testing.T, g *testGateway, steps []step) {
	t.Helper()
	for i, st := range steps {
		g.At(st.at)
		var headers []string
		if st.contentType != "" {
			headers = []string{"Content-Type", st.contentType}
		}
		rec := g.Do(st.method, st.path, []byte(st.body), headers...)
		require.Equal(t, st.code, rec.Code, "step %d: %s %s answered %q", i, st.method, st.path, rec.Body.String())
		require.Equal(t, st.resp, strings.TrimSuffix(rec.Body.String(), "\n"), "step %d: %s %s", i, st.method, st.path)
	}
}

func put(at float64, path, body string) step {
	return step{at: at, method: http.MethodPut, path: path, body: body, code: http.StatusOK}
}

func post(at float64, path, body string) step {
	return step{at: at, method: http.MethodPost, path: path, body: body, code: http.StatusOK}
}

func del(at float64, path string) step {
	return step{at: at, method: http.MethodDelete, path: path, code: http.StatusAccepted}
}

func rejected(st step, reason string) step {
	st.code = http.StatusBadRequest
	st.resp = "pushed metrics are invalid or inconsistent with existing metrics: " + reason
	return st
}

func badRequest(st step, msg string) step {
	st.code = http.StatusBadRequest
	st.resp = msg
	return st
}

const tsReason = "pushed metrics must not have timestamps"

func TestWriteSemantics(t *testing.T) {
	scenarios := map[string]struct {
		steps []step
		want  string
	}{
		"PUT replaces the whole group": {
			steps: []step{
				put(1, "/metrics/job/j", "a 1\nb 2\n"),
				put(2, "/metrics/job/j", "b 3\n"),
			},
			want: lines(
				`b{instance="",job="j"} 3`,
				`push_failure_time_seconds{instance="",job="j"} 0`,
				`push_time_seconds{instance="",job="j"} 1.700000002e+09`,
			),
		},
		"POST replaces same-named families as a whole": {
			steps: []step{
				put(1, "/metrics/job/j", "a{x=\"1\"} 1\na{x=\"2\"} 2\nb 5\n"),
				post(2, "/metrics/job/j", "a{x=\"3\"} 3\n"),
			},
			want: lines(
				`a{instance="",job="j",x="3"} 3`,
				`b{instance="",job="j"} 5`,
				`push_failure_time_seconds{instance="",job="j"} 0`,
				`push_time_seconds{instance="",job="j"} 1.700000002e+09`,
			),
		},
		"POST may change the type of a family of its own group": {
			steps: []step{
				put(1, "/metrics/job/j", "# TYPE a gauge\na 1\nb 5\n"),
				post(2, "/metrics/job/j", "# TYPE a counter\na 2\n"),
			},
			want: lines(
				`a{instance="",job="j"} 2`,
				`b{instance="",job="j"} 5`,
				`push_failure_time_seconds{instance="",job="j"} 0`,
				`push_time_seconds{instance="",job="j"} 1.700000002e+09`,
			),
		},
		"empty PUT empties the group and keeps it": {
			steps: []step{
				put(1, "/metrics/job/j", "a 1\n"),
				put(2, "/metrics/job/j", ""),
			},
			want: lines(
				`push_failure_time_seconds{instance="",job="j"} 0`,
				`push_time_seconds{instance="",job="j"} 1.700000002e+09`,
			),
		},
		"empty POST only updates push_time_seconds": {
			steps: []step{
				put(1, "/metrics/job/j", "a 1\n"),
				post(2, "/metrics/job/j", ""),
			},
			want: lines(
				`a{instance="",job="j"} 1`,
				`push_failure_time_seconds{instance="",job="j"} 0`,
				`push_time_seconds{instance="",job="j"} 1.700000002e+09`,
			),
		},
		"empty PUT creates a group holding only the timestamps": {
			steps: []step{put(1, "/metrics/job/j/instance/i", "")},
			want: lines(
				`push_failure_time_seconds{instance="i",job="j"} 0`,
				`push_time_seconds{instance="i",job="j"} 1.700000001e+09`,
			),
		},
		"POST creates a group": {
			steps: []step{post(1, "/metrics/job/j", "a 1\n")},
			want: lines(
				`a{instance="",job="j"} 1`,
				`push_failure_time_seconds{instance="",job="j"} 0`,
				`push_time_seconds{instance="",job="j"} 1.700000001e+09`,
			),
		},
		"groups with and without instance are unrelated": {
			steps: []step{
				put(1, "/metrics/job/a", "m 1\n"),
				put(2, "/metrics/job/a/instance/x", "n 2\n"),
				put(3, "/metrics/job/a", "o 3\n"),
			},
			want: lines(
				`n{instance="x",job="a"} 2`,
				`o{instance="",job="a"} 3`,
				`push_failure_time_seconds{instance="",job="a"} 0`,
				`push_failure_time_seconds{instance="x",job="a"} 0`,
				`push_time_seconds{instance="",job="a"} 1.700000003e+09`,
				`push_time_seconds{instance="x",job="a"} 1.700000002e+09`,
			),
		},
		"DELETE removes the group with both timestamps": {
			steps: []step{
				put(1, "/metrics/job/j", "a 1\n"),
				del(2, "/metrics/job/j"),
			},
			want: "",
		},
		"DELETE removes only its own group": {
			steps: []step{
				put(1, "/metrics/job/a", "m 1\n"),
				put(2, "/metrics/job/a/instance/x", "m 2\n"),
				del(3, "/metrics/job/a"),
			},
			want: lines(
				`m{instance="x",job="a"} 2`,
				`push_failure_time_seconds{instance="x",job="a"} 0`,
				`push_time_seconds{instance="x",job="a"} 1.700000002e+09`,
			),
		},
		"DELETE of an unknown group is a no-op": {
			steps: []step{
				put(1, "/metrics/job/a", "m 1\n"),
				del(2, "/metrics/job/b"),
			},
			want: lines(
				`m{instance="",job="a"} 1`,
				`push_failure_time_seconds{instance="",job="a"} 0`,
				`push_time_seconds{instance="",job="a"} 1.700000001e+09`,
			),
		},
		"DELETE then PUT shows the new PUT": {
			steps: []step{
				put(1, "/metrics/job/j", "a 1\nb 1\n"),
				del(2, "/metrics/job/j"),
				put(3, "/metrics/job/j", "b 2\n"),
			},
			want: lines(
				`b{instance="",job="j"} 2`,
				`push_failure_time_seconds{instance="",job="j"} 0`,
				`push_time_seconds{instance="",job="j"} 1.700000003e+09`,
			),
		},
		"DELETE forgets the failure time": {
			steps: []step{
				rejected(put(1, "/metrics/job/j", "a 1 1000\n"), tsReason),
				del(2, "/metrics/job/j"),
				put(3, "/metrics/job/j", "a 1\n"),
			},
			want: lines(
				`a{instance="",job="j"} 1`,
				`push_failure_time_seconds{instance="",job="j"} 0`,
				`push_time_seconds{instance="",job="j"} 1.700000003e+09`,
			),
		},
		"rejected PUT keeps the families and sets the failure time": {
			steps: []step{
				put(1, "/metrics/job/j", "a 1\nb 2\n"),
				rejected(put(2, "/metrics/job/j", "a 5 1700000000000\n"), tsReason),
			},
			want: lines(
				`a{instance="",job="j"} 1`,
				`b{instance="",job="j"} 2`,
				`push_failure_time_seconds{instance="",job="j"} 1.700000002e+09`,
				`push_time_seconds{instance="",job="j"} 1.700000001e+09`,
			),
		},
		"rejected POST keeps the families and sets the failure time": {
			steps: []step{
				put(1, "/metrics/job/j", "a 1\n"),
				rejected(post(2, "/metrics/job/j", "a 5 1700000000000\nc 1\n"), tsReason),
			},
			want: lines(
				`a{instance="",job="j"} 1`,
				`push_failure_time_seconds{instance="",job="j"} 1.700000002e+09`,
				`push_time_seconds{instance="",job="j"} 1.700000001e+09`,
			),
		},
		"a later success keeps the failure time and vice versa": {
			steps: []step{
				put(1, "/metrics/job/j", "a 1\n"),
				rejected(put(2, "/metrics/job/j", "a 1 1\n"), tsReason),
				put(3, "/metrics/job/j", "a 3\n"),
				post(4, "/metrics/job/j", "b 4\n"),
			},
			want: lines(
				`a{instance="",job="j"} 3`,
				`b{instance="",job="j"} 4`,
				`push_failure_time_seconds{instance="",job="j"} 1.700000002e+09`,
				`push_time_seconds{instance="",job="j"} 1.700000004e+09`,
			),
		},
		"rejected push creates a new group with push_time_seconds 0": {
			steps: []step{
				rejected(put(1.5, "/metrics/job/j/instance/i", "a 1 1700000000000\n"), tsReason),
			},
			want: lines(
				`push_failure_time_seconds{instance="i",job="j"} 1.7000000015e+09`,
				`push_time_seconds{instance="i",job="j"} 0`,
			),
		},
		"parse errors touch nothing": {
			steps: []step{
				put(1, "/metrics/job/j", "a 1\n"),
				badRequest(put(2, "/metrics/job/j", "a 2"), "text format parsing error in line 1: unexpected end of input stream"),
				badRequest(put(3, "/metrics/job/j", "a 2\r\n"), `text format parsing error in line 1: expected float as value, got "2\r"`),
				badRequest(put(4, "/metrics/job/j", "# TYPE a gauge\n# TYPE a gauge\na 1\n"), `text format parsing error in line 2: second TYPE line for metric name "a", or TYPE reported after samples`),
				badRequest(put(5, "/metrics/job/k", "a 2"), "text format parsing error in line 1: unexpected end of input stream"),
			},
			want: lines(
				`a{instance="",job="j"} 1`,
				`push_failure_time_seconds{instance="",job="j"} 0`,
				`push_time_seconds{instance="",job="j"} 1.700000001e+09`,
			),
		},
		"pushed push_time_seconds is replaced": {
			steps: []step{
				put(1, "/metrics/job/j", "# TYPE push_time_seconds counter\npush_time_seconds 42\npush_failure_time_seconds 43\na 1\n"),
			},
			want: lines(
				`a{instance="",job="j"} 1`,
				`push_failure_time_seconds{instance="",job="j"} 0`,
				`push_time_seconds{instance="",job="j"} 1.700000001e+09`,
			),
		},
		"pushed push_time_seconds is replaced on POST to an existing group": {
			steps: []step{
				put(1, "/metrics/job/j", "a 1\n"),
				post(2, "/metrics/job/j", "push_time_seconds 42\n"),
			},
			want: lines(
				`a{instance="",job="j"} 1`,
				`push_failure_time_seconds{instance="",job="j"} 0`,
				`push_time_seconds{instance="",job="j"} 1.700000002e+09`,
			),
		},
		"nanosecond push time": {
			steps: []step{put(0.123456789, "/metrics/job/j", "")},
			want: lines(
				`push_failure_time_seconds{instance="",job="j"} 0`,
				`push_time_seconds{instance="",job="j"} 1.7000000001234567e+09`,
			),
		},
	}
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			g := MustNewGateway(t)
			runSteps(t, g, s.steps)
			require.Equal(t, s.want, g.Samples())
		})
	}
}

// TestSanitising checks the labels of stored samples: grouping labels from
// the URL win, instance="" is added, labels are sorted by name.
func TestSanitising(t *testing.T) {
	scenarios := map[string]struct {
		path        string
		body        string
		contentType string
		want        string
	}{
		"grouping labels overwrite body labels": {
			path: "/metrics/job/j/instance/i/x/1",
			body: `m{job="other",instance="o",x="2",y="3"} 1` + "\n",
			want: lines(`m{instance="i",job="j",x="1",y="3"} 1`),
		},
		"instance is added and labels are sorted": {
			path: "/metrics/job/j",
			body: `m{b="1",a="2"} 1` + "\n",
			want: lines(`m{a="2",b="1",instance="",job="j"} 1`),
		},
		"body instance is kept when the URL has none": {
			path: "/metrics/job/j",
			body: `m{instance="o"} 1` + "\n",
			want: lines(`m{instance="o",job="j"} 1`),
		},
		"empty grouping value is printed": {
			path: "/metrics/job/j/e@base64/=",
			body: "m 1\n",
			want: lines(`m{e="",instance="",job="j"} 1`),
		},
		"base64 job overwrites body job": {
			path: "/metrics/job@base64/L3gveQ",
			body: `m{job="x"} 1` + "\n",
			want: lines(`m{instance="",job="/x/y"} 1`),
		},
		"summary series get the labels": {
			path: "/metrics/job/j",
			body: "# TYPE s summary\ns{z=\"1\",quantile=\"0.5\"} 1\ns_sum{z=\"1\"} 2\ns_count{z=\"1\"} 3\n",
			want: lines(
				`s{instance="",job="j",z="1",quantile="0.5"} 1`,
				`s_sum{instance="",job="j",z="1"} 2`,
				`s_count{instance="",job="j",z="1"} 3`,
			),
		},
		"histogram series get the labels": {
			path: "/metrics/job/j/instance/i",
			body: "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
			want: lines(
				`h_bucket{instance="i",job="j",le="1"} 1`,
				`h_bucket{instance="i",job="j",le="+Inf"} 2`,
				`h_sum{instance="i",job="j"} 3`,
				`h_count{instance="i",job="j"} 2`,
			),
		},
		"protobuf labels are sanitised the same way": {
			path:        "/metrics/job/j/x/1",
			contentType: protoContentType,
			body: delimited(t, &dto.MetricFamily{
				Name: ptr("m"), Type: dto.MetricType_GAUGE.Enum(),
				Metric: []*dto.Metric{{
					Label: []*dto.LabelPair{label("z", "9"), label("x", "2"), label("job", "other"), label("a", "0")},
					Gauge: &dto.Gauge{Value: ptr(1.5)},
				}},
			}),
			want: lines(`m{a="0",instance="",job="j",x="1",z="9"} 1.5`),
		},
		"series are sorted by label values": {
			path: "/metrics/job/j",
			body: "m{a=\"2\"} 2\nm{a=\"10\"} 10\nm{a=\"1\"} 1\n",
			want: lines(
				`m{a="1",instance="",job="j"} 1`,
				`m{a="10",instance="",job="j"} 10`,
				`m{a="2",instance="",job="j"} 2`,
			),
		},
	}
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			g := MustNewGateway(t)
			g.MustDo(http.StatusOK, http.MethodPut, s.path, s.body, "Content-Type", s.contentType)
			require.Equal(t, s.want, withoutPushTimes(g.Samples()))
		})
	}
}

// withoutPushTimes drops the push_time_seconds and push_failure_time_seconds
// samples.
func withoutPushTimes(samples string) string {
	var sb strings.Builder
	for _, line := range strings.SplitAfter(samples, "\n") {
		if strings.HasPrefix(line, "push_time_seconds") || strings.HasPrefix(line, "push_failure_time_seconds") {
			continue
		}
		sb.WriteString(line)
	}
	return sb.String()
}

func TestLastPushSuccessful(t *testing.T) {
	g := MustNewGateway(t)
	g.At(1).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/j", "a 1\n")
	require.Equal(t, true, g.APIMetrics()[0]["last_push_successful"])
	g.At(2).MustDo(http.StatusBadRequest, http.MethodPut, "/metrics/job/j", "a 1 1\n")
	require.Equal(t, false, g.APIMetrics()[0]["last_push_successful"])
	g.At(3).MustDo(http.StatusOK, http.MethodPost, "/metrics/job/j", "")
	require.Equal(t, true, g.APIMetrics()[0]["last_push_successful"])
}
