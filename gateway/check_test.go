package gateway_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/gateway"
)

// metricOf builds the sanitised metric that a rejection message quotes:
// labels sorted by name, the value set by kind.
func metricOf(kind string, v float64, labels ...string) *dto.Metric {
	m := &dto.Metric{}
	for i := 0; i+1 < len(labels); i += 2 {
		m.Label = append(m.Label, label(labels[i], labels[i+1]))
	}
	switch kind {
	case "counter":
		m.Counter = &dto.Counter{Value: ptr(v)}
	case "gauge":
		m.Gauge = &dto.Gauge{Value: ptr(v)}
	default:
		m.Untyped = &dto.Untyped{Value: ptr(v)}
	}
	return m
}

// collected is client_golang's gather error for one metric.
func collected(name string, m *dto.Metric, what string) string {
	return fmt.Sprintf("collected metric %q { %s} %s", name, m, what)
}

// timestampClash is the rejection of a push at the test time at that would
// create a group of job whose timestamp series, with instance="", another
// group holds.
func timestampClash(at float64, job string) string {
	clash := func(name string, v float64) string {
		return collected(name, metricOf("gauge", v, "instance", "", "job", job), "was collected before with the same name and label values")
	}
	return "2 error(s) occurred:\n* " + clash("push_time_seconds", 1.7e9+at) + "\n* " + clash("push_failure_time_seconds", 0)
}

// registerOwn registers the own metrics the consistency tests run against:
// a gauge and a summary.
func registerOwn(reg *prometheus.Registry) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "own_gauge", Help: "Own gauge."})
	g.Set(7)
	reg.MustRegister(g, prometheus.NewSummary(prometheus.SummaryOpts{Name: "own_summary", Help: "Own summary."}))
}

func protoPut(at float64, path string, t *testing.T, mfs ...*dto.MetricFamily) step {
	st := put(at, path, delimited(t, mfs...))
	st.contentType = protoContentType
	return st
}

func TestConsistency(t *testing.T) {
	summary := "# TYPE x summary\nx{quantile=\"0.5\"} 1\nx_sum 2\nx_count 3\n"
	histogram := "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 2\nh_count 1\n"
	// firstGroupOnly is the exposition after a group of job a, with or
	// without an empty instance, pushed m 1 at second 1 and nothing else
	// was stored.
	firstGroupOnly := lines(
		`m{instance="",job="a"} 1`,
		`push_failure_time_seconds{instance="",job="a"} 0`,
		`push_time_seconds{instance="",job="a"} 1.700000001e+09`,
	)
	scenarios := map[string]struct {
		steps []step
		// want, if set, are the samples (without HELP/TYPE lines) after
		// the steps, without the own metrics unless keepOwn is set.
		want    string
		keepOwn bool
	}{
		"type conflict across groups": {
			steps: []step{
				put(1, "/metrics/job/a", "# TYPE m gauge\nm 1\n"),
				rejected(put(2, "/metrics/job/b", "# TYPE m counter\nm 1\n"),
					collected("m", metricOf("counter", 1, "instance", "", "job", "b"), "is not a GAUGE")),
			},
			want: lines(
				`m{instance="",job="a"} 1`,
				`push_failure_time_seconds{instance="",job="a"} 0`,
				`push_failure_time_seconds{instance="",job="b"} 1.700000002e+09`,
				`push_time_seconds{instance="",job="a"} 1.700000001e+09`,
				`push_time_seconds{instance="",job="b"} 0`,
			),
		},
		"untyped conflicts with a gauge": {
			steps: []step{
				put(1, "/metrics/job/a", "# TYPE m gauge\nm 1\n"),
				rejected(put(2, "/metrics/job/b", "m{x=\"1\"} 1\n"),
					collected("m", metricOf("untyped", 1, "instance", "", "job", "b", "x", "1"), "is not a GAUGE")),
			},
		},
		"every conflicting series is reported": {
			steps: []step{
				put(1, "/metrics/job/a", "# TYPE m gauge\nm 1\n"),
				rejected(put(2, "/metrics/job/b", "# TYPE m counter\nm{x=\"2\"} 2\nm{x=\"1\"} 1\n"),
					"2 error(s) occurred:\n* "+collected("m", metricOf("counter", 1, "instance", "", "job", "b", "x", "1"), "is not a GAUGE")+
						"\n* "+collected("m", metricOf("counter", 2, "instance", "", "job", "b", "x", "2"), "is not a GAUGE")),
			},
		},
		"type conflict with an own gauge, untyped": {
			steps: []step{
				rejected(put(1, "/metrics/job/a", "own_gauge 1\n"), "gathered metric family own_gauge has type UNTYPED but should have GAUGE"),
			},
			want: lines(
				`push_failure_time_seconds{instance="",job="a"} 1.700000001e+09`,
				`push_time_seconds{instance="",job="a"} 0`,
			),
		},
		"type conflict with an own gauge, counter": {
			steps: []step{
				rejected(put(1, "/metrics/job/a", "# TYPE own_gauge counter\nown_gauge 1\n"), "gathered metric family own_gauge has type COUNTER but should have GAUGE"),
			},
		},
		"own metric type is accepted beside the own series": {
			keepOwn: true,
			steps: []step{
				put(1, "/metrics/job/a", "# TYPE own_gauge gauge\nown_gauge{x=\"1\"} 2\n"),
			},
			want: lines(
				`own_gauge 7`,
				`own_gauge{instance="",job="a",x="1"} 2`,
				`own_summary_sum 0`,
				`own_summary_count 0`,
				`push_failure_time_seconds{instance="",job="a"} 0`,
				`push_time_seconds{instance="",job="a"} 1.700000001e+09`,
			),
		},
		"duplicate series across groups": {
			steps: []step{
				put(1, "/metrics/job/a", "m{instance=\"x\"} 1\n"),
				rejected(put(2, "/metrics/job/a/instance/x", "m 2\n"),
					collected("m", metricOf("untyped", 2, "instance", "x", "job", "a"), "was collected before with the same name and label values")),
			},
			want: lines(
				`m{instance="x",job="a"} 1`,
				`push_failure_time_seconds{instance="",job="a"} 0`,
				`push_failure_time_seconds{instance="x",job="a"} 1.700000002e+09`,
				`push_time_seconds{instance="",job="a"} 1.700000001e+09`,
				`push_time_seconds{instance="x",job="a"} 0`,
			),
		},
		"duplicate series across groups, other direction": {
			steps: []step{
				put(1, "/metrics/job/a/instance/x", "m 2\n"),
				rejected(put(2, "/metrics/job/a", "m{instance=\"x\"} 1\n"),
					collected("m", metricOf("untyped", 1, "instance", "x", "job", "a"), "was collected before with the same name and label values")),
			},
		},
		"empty instance names a group whose timestamp series another group holds": {
			steps: []step{
				put(1, "/metrics/job/a", "m 1\n"),
				rejected(put(2, "/metrics/job/a/instance@base64/=", "n 2\n"), timestampClash(2, "a")),
				// Still refused when the push would otherwise be
				// rejected for its own reasons.
				rejected(put(3, "/metrics/job/a/instance@base64/=", "m 3\n"),
					"3 error(s) occurred:\n* "+collected("m", metricOf("untyped", 3, "instance", "", "job", "a"), "was collected before with the same name and label values")+
						"\n* "+strings.TrimPrefix(timestampClash(3, "a"), "2 error(s) occurred:\n* ")),
				rejected(put(4, "/metrics/job/a/instance@base64/=", "n 4 1000\n"), tsReason),
			},
			// The rejected pushes created no group: the first group's
			// timestamps are the only ones.
			want: firstGroupOnly,
		},
		"empty instance, protobuf": {
			steps: []step{
				put(1, "/metrics/job/a", "m 1\n"),
				rejected(protoPut(2, "/metrics/job/a/instance@base64/=", t, &dto.MetricFamily{
					Name: ptr("n"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr(2.0)}}},
				}), timestampClash(2, "a")),
			},
			want: firstGroupOnly,
		},
		"empty instance, other direction": {
			steps: []step{
				put(1, "/metrics/job/a/instance@base64/=", "m 1\n"),
				rejected(post(2, "/metrics/job/a", ""), timestampClash(2, "a")),
			},
			want: firstGroupOnly,
		},
		"empty instance after the other group is deleted": {
			steps: []step{
				put(1, "/metrics/job/a", "m 1\n"),
				del(2, "/metrics/job/a"),
				put(3, "/metrics/job/a/instance@base64/=", "n 3\n"),
				rejected(put(4, "/metrics/job/a", "m 4\n"), timestampClash(4, "a")),
			},
			want: lines(
				`n{instance="",job="a"} 3`,
				`push_failure_time_seconds{instance="",job="a"} 0`,
				`push_time_seconds{instance="",job="a"} 1.700000003e+09`,
			),
		},
		"duplicate series within one push after sanitising": {
			steps: []step{
				rejected(put(1, "/metrics/job/a/instance/x", "m{instance=\"y\"} 1\nm{instance=\"z\"} 1\n"),
					collected("m", metricOf("untyped", 1, "instance", "x", "job", "a"), "was collected before with the same name and label values")),
			},
		},
		"duplicate series within one push": {
			steps: []step{
				rejected(put(1, "/metrics/job/a", "m{b=\"1\"} 1\nm{b=\"1\"} 1\n"),
					collected("m", metricOf("untyped", 1, "b", "1", "instance", "", "job", "a"), "was collected before with the same name and label values")),
			},
		},
		"same series in the own group is replaced, not duplicated": {
			steps: []step{
				put(1, "/metrics/job/a", "m 1\n"),
				post(2, "/metrics/job/a", "m 2\n"),
				put(3, "/metrics/job/a", "m 3\n"),
			},
		},
		"timestamp in text": {
			steps: []step{rejected(put(1, "/metrics/job/a", "m 1 1700000000000\n"), tsReason)},
		},
		"timestamp in protobuf": {
			steps: []step{rejected(protoPut(1, "/metrics/job/a", t, &dto.MetricFamily{
				Name: ptr("m"), Type: dto.MetricType_GAUGE.Enum(),
				Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr(1.0)}, TimestampMs: ptr(int64(1_700_000_000_000))}},
			}), tsReason)},
		},
		"zero timestamp in protobuf": {
			steps: []step{rejected(protoPut(1, "/metrics/job/a", t, &dto.MetricFamily{
				Name: ptr("m"), Type: dto.MetricType_GAUGE.Enum(),
				Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr(1.0)}, TimestampMs: ptr(int64(0))}},
			}), tsReason)},
		},
		"timestamp on one of several families": {
			steps: []step{
				put(1, "/metrics/job/a", "keep 1\n"),
				rejected(put(2, "/metrics/job/a", "a 1\nb 1\nc 1 5\nd 1\n"), tsReason),
			},
			want: lines(
				`keep{instance="",job="a"} 1`,
				`push_failure_time_seconds{instance="",job="a"} 1.700000002e+09`,
				`push_time_seconds{instance="",job="a"} 1.700000001e+09`,
			),
		},
		"summary then x_count": {
			steps: []step{
				put(1, "/metrics/job/a", summary),
				rejected(put(2, "/metrics/job/b", "x_count 1\n"), `collected metric named "x_count" collides with previously collected summary named "x"`),
			},
		},
		"summary then x_sum": {
			steps: []step{
				put(1, "/metrics/job/a", summary),
				rejected(put(2, "/metrics/job/b", "x_sum 1\n"), `collected metric named "x_sum" collides with previously collected summary named "x"`),
			},
		},
		"summary then x_bucket is fine": {
			steps: []step{
				put(1, "/metrics/job/a", summary),
				put(2, "/metrics/job/b", "x_bucket 1\n"),
			},
		},
		"x_count then summary": {
			steps: []step{
				put(1, "/metrics/job/b", "x_count 1\n"),
				rejected(put(2, "/metrics/job/a", summary), `collected histogram or summary named "x" collides with previously collected metric named "x_count"`),
			},
		},
		"histogram then h_bucket": {
			steps: []step{
				put(1, "/metrics/job/a", histogram),
				rejected(put(2, "/metrics/job/b", "h_bucket 1\n"), `collected metric named "h_bucket" collides with previously collected histogram named "h"`),
			},
		},
		"histogram then h_count": {
			steps: []step{
				put(1, "/metrics/job/a", histogram),
				rejected(put(2, "/metrics/job/b", "h_count 1\n"), `collected metric named "h_count" collides with previously collected histogram named "h"`),
			},
		},
		"h_bucket then histogram": {
			steps: []step{
				put(1, "/metrics/job/b", "h_bucket 1\n"),
				rejected(put(2, "/metrics/job/a", histogram), `collected histogram named "h" collides with previously collected metric named "h_bucket"`),
			},
		},
		"h_sum then histogram": {
			steps: []step{
				put(1, "/metrics/job/b", "h_sum 1\n"),
				rejected(put(2, "/metrics/job/a", histogram), `collected histogram or summary named "h" collides with previously collected metric named "h_sum"`),
			},
		},
		"x_bucket then summary is fine": {
			steps: []step{
				put(1, "/metrics/job/b", "x_bucket 1\n"),
				put(2, "/metrics/job/a", summary),
			},
		},
		"summary and x_count in one protobuf push": {
			steps: []step{
				rejected(protoPut(1, "/metrics/job/a", t,
					&dto.MetricFamily{Name: ptr("x"), Type: dto.MetricType_SUMMARY.Enum(), Metric: []*dto.Metric{{Summary: &dto.Summary{SampleCount: ptr(uint64(1)), SampleSum: ptr(2.0)}}}},
					&dto.MetricFamily{Name: ptr("x_count"), Type: dto.MetricType_UNTYPED.Enum(), Metric: []*dto.Metric{{Untyped: &dto.Untyped{Value: ptr(1.0)}}}},
				), `collected metric named "x_count" collides with previously collected summary named "x"`),
			},
		},
		"own summary then _count": {
			steps: []step{
				rejected(put(1, "/metrics/job/a", "own_summary_count 1\n"), `collected metric named "own_summary_count" collides with previously collected summary named "own_summary"`),
			},
		},
		"summary with an explicit quantile label": {
			steps: []step{
				rejected(protoPut(1, "/metrics/job/a", t, &dto.MetricFamily{
					Name: ptr("s"), Type: dto.MetricType_SUMMARY.Enum(),
					Metric: []*dto.Metric{{Label: []*dto.LabelPair{label("quantile", "x")}, Summary: &dto.Summary{SampleCount: ptr(uint64(1)), SampleSum: ptr(2.0)}}},
				}), collected("s", &dto.Metric{
					Label:   []*dto.LabelPair{label("instance", ""), label("job", "a"), label("quantile", "x")},
					Summary: &dto.Summary{SampleCount: ptr(uint64(1)), SampleSum: ptr(2.0)},
				}, `must not have an explicit "quantile" label`)),
			},
		},
		"protobuf metric of the wrong type": {
			steps: []step{
				rejected(protoPut(1, "/metrics/job/a", t, &dto.MetricFamily{
					Name: ptr("m"), Type: dto.MetricType_GAUGE.Enum(),
					Metric: []*dto.Metric{{Counter: &dto.Counter{Value: ptr(1.0)}}},
				}), collected("m", metricOf("counter", 1, "instance", "", "job", "a"), "is not a GAUGE")),
			},
		},
		"protobuf invalid label name": {
			steps: []step{
				rejected(protoPut(1, "/metrics/job/a", t, &dto.MetricFamily{
					Name: ptr("m"), Type: dto.MetricType_GAUGE.Enum(),
					Metric: []*dto.Metric{{Label: []*dto.LabelPair{label("a-b", "1")}, Gauge: &dto.Gauge{Value: ptr(1.0)}}},
				}), collected("m", metricOf("gauge", 1, "a-b", "1", "instance", "", "job", "a"), "has a label with an invalid name: a-b")),
			},
		},
		"protobuf reserved label name": {
			steps: []step{
				rejected(protoPut(1, "/metrics/job/a", t, &dto.MetricFamily{
					Name: ptr("m"), Type: dto.MetricType_GAUGE.Enum(),
					Metric: []*dto.Metric{{Label: []*dto.LabelPair{label("__a", "1")}, Gauge: &dto.Gauge{Value: ptr(1.0)}}},
				}), collected("m", metricOf("gauge", 1, "__a", "1", "instance", "", "job", "a"), "has a label with an invalid name: __a")),
			},
		},
		"text reserved label name": {
			steps: []step{
				rejected(put(1, "/metrics/job/a", "m{__a=\"1\"} 1\n"),
					collected("m", metricOf("untyped", 1, "__a", "1", "instance", "", "job", "a"), "has a label with an invalid name: __a")),
			},
		},
		"protobuf repeated label name": {
			steps: []step{
				rejected(protoPut(1, "/metrics/job/a", t, &dto.MetricFamily{
					Name: ptr("m"), Type: dto.MetricType_GAUGE.Enum(),
					Metric: []*dto.Metric{{Label: []*dto.LabelPair{label("a", "1"), label("a", "2")}, Gauge: &dto.Gauge{Value: ptr(1.0)}}},
				}), collected("m", metricOf("gauge", 1, "a", "1", "a", "2", "instance", "", "job", "a"), "has two or more labels with the same name: a")),
			},
		},
		"protobuf label value not UTF-8": {
			steps: []step{
				rejected(protoPut(1, "/metrics/job/a", t, &dto.MetricFamily{
					Name: ptr("m"), Type: dto.MetricType_GAUGE.Enum(),
					Metric: []*dto.Metric{{Label: []*dto.LabelPair{label("a", "\xff")}, Gauge: &dto.Gauge{Value: ptr(1.0)}}},
				}), collected("m", metricOf("gauge", 1, "a", "\xff", "instance", "", "job", "a"), `has a label named "a" whose value is not utf8: "\xff"`)),
			},
		},
		"protobuf invalid metric name": {
			steps: []step{
				rejected(protoPut(1, "/metrics/job/a", t, &dto.MetricFamily{
					Name: ptr("1abc"), Type: dto.MetricType_GAUGE.Enum(),
					Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr(1.0)}}},
				}), `invalid metric name "1abc"`),
			},
		},
		"protobuf empty metric name": {
			steps: []step{
				rejected(protoPut(1, "/metrics/job/a", t, &dto.MetricFamily{
					Name: ptr(""), Type: dto.MetricType_GAUGE.Enum(),
					Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr(1.0)}}},
				}), `invalid metric name ""`),
			},
			// Rejected by the writer, as any invalid name: the group is
			// created with its failure time.
			want: lines(
				`push_failure_time_seconds{instance="",job="a"} 1.700000001e+09`,
				`push_time_seconds{instance="",job="a"} 0`,
			),
		},
		"PUT replacing a conflicting family in the same group": {
			steps: []step{
				put(1, "/metrics/job/a", "# TYPE m gauge\nm 1\n"),
				put(2, "/metrics/job/a", "# TYPE m counter\nm 2\n"),
			},
			want: lines(
				`m{instance="",job="a"} 2`,
				`push_failure_time_seconds{instance="",job="a"} 0`,
				`push_time_seconds{instance="",job="a"} 1.700000002e+09`,
			),
		},
		"PUT replacing a family another group also holds": {
			steps: []step{
				put(1, "/metrics/job/a", "# TYPE m gauge\nm 1\n"),
				put(2, "/metrics/job/b", "# TYPE m gauge\nm 1\n"),
				rejected(put(3, "/metrics/job/a", "# TYPE m counter\nm 2\n"),
					collected("m", metricOf("counter", 2, "instance", "", "job", "a"), "is not a GAUGE")),
			},
		},
		"PUT dropping a family frees its type": {
			steps: []step{
				put(1, "/metrics/job/a", "# TYPE m gauge\nm 1\n"),
				put(2, "/metrics/job/a", "other 1\n"),
				put(3, "/metrics/job/b", "# TYPE m counter\nm 2\n"),
			},
		},
		"DELETE frees the type": {
			steps: []step{
				put(1, "/metrics/job/a", "# TYPE m gauge\nm 1\n"),
				del(2, "/metrics/job/a"),
				put(3, "/metrics/job/b", "# TYPE m counter\nm 2\n"),
			},
		},
		"PUT dropping a summary frees its suffixes": {
			steps: []step{
				put(1, "/metrics/job/a", summary),
				put(2, "/metrics/job/a", ""),
				put(3, "/metrics/job/b", "x_count 1\n"),
			},
		},
		"DELETE frees a series": {
			steps: []step{
				put(1, "/metrics/job/a", "m{instance=\"x\"} 1\n"),
				del(2, "/metrics/job/a"),
				put(3, "/metrics/job/a/instance/x", "m 2\n"),
			},
		},
		"rejected push leaves the index unchanged": {
			steps: []step{
				put(1, "/metrics/job/a", "# TYPE m gauge\nm 1\n"),
				rejected(put(2, "/metrics/job/b", "# TYPE m counter\nm 1\nn 1\n"),
					collected("m", metricOf("counter", 1, "instance", "", "job", "b"), "is not a GAUGE")),
				put(3, "/metrics/job/c", "# TYPE n gauge\nn 1\n"),
			},
		},
	}
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			g := MustNewGateway(t, withOwn(registerOwn))
			runSteps(t, g, s.steps)
			if s.want != "" {
				got := g.Samples()
				if !s.keepOwn {
					got = withoutLinePrefix(got, "own_")
				}
				require.Equal(t, s.want, got)
			}
			// Whatever was accepted must still gather consistently.
			_, err := g.reg.Gather()
			require.NoError(t, err)
			requireConsistentExposition(t, g)
		})
	}
}

// requireConsistentExposition checks that GET /metrics re-parses and that
// client_golang's gatherer finds nothing inconsistent in it.
func requireConsistentExposition(t *testing.T, g *testGateway) {
	t.Helper()
	text := g.MustDo(http.StatusOK, http.MethodGet, "/metrics", "")
	mfs, err := parseText(text)
	require.NoError(t, err, text)
	require.NoError(t, checkGather(mfs), text)
}

// TestHelpStrings checks that differing help strings are accepted and that
// a pushed family named like an own metric gets the own help string.
func TestHelpStrings(t *testing.T) {
	g := MustNewGateway(t, withOwn(registerOwn))
	g.At(1).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/a", "# HELP m First.\nm 1\n")
	g.At(2).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/b", "# HELP m Second.\nm 2\n")
	g.At(3).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/c", "# HELP own_gauge Pushed help.\n# TYPE own_gauge gauge\nown_gauge{x=\"1\"} 2\n")
	text := g.Metrics()
	require.Contains(t, text, "# HELP own_gauge Own gauge.\n# TYPE own_gauge gauge\nown_gauge 7\nown_gauge{instance=\"\",job=\"c\",x=\"1\"} 2\n")
	require.NotContains(t, text, "Pushed help.")
	require.Equal(t, 1, strings.Count(text, "# HELP m "), text)
	require.Regexp(t, "# HELP m (First|Second)\\.\n# TYPE m untyped\nm\\{instance=\"\",job=\"a\"\\} 1\nm\\{instance=\"\",job=\"b\"\\} 2\n", text)
}

// withoutLinePrefix drops the lines starting with prefix.
func withoutLinePrefix(text, prefix string) string {
	var sb strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		if !strings.HasPrefix(line, prefix) {
			sb.WriteString(line)
		}
	}
	return sb.String()
}

// TestDisableConsistencyCheck checks the documented difference from the
// Pushgateway (README "Differences"): with the check disabled, pushes are
// answered 202 once queued, and an inconsistent or timestamped push is
// dropped with its group's failure time set instead of being stored.
func TestDisableConsistencyCheck(t *testing.T) {
	g := MustNewGateway(t, withHandler(func(o *gateway.HandlerOptions) { o.DisableConsistencyCheck = true }))
	// A DELETE waits for its commit, and writes are applied in order, so
	// it makes the queued pushes before it visible.
	barrier := func() { g.MustDo(http.StatusAccepted, http.MethodDelete, "/metrics/job/barrier", "") }
	g.At(1).MustDo(http.StatusAccepted, http.MethodPut, "/metrics/job/a", "# TYPE m gauge\nm 1\n")
	g.At(2).MustDo(http.StatusAccepted, http.MethodPut, "/metrics/job/b", "# TYPE m counter\nm 1\n")
	g.At(3).MustDo(http.StatusAccepted, http.MethodPut, "/metrics/job/c", "n 1 1\n")
	// A push that cannot create its group is dropped without a trace.
	g.At(3).MustDo(http.StatusAccepted, http.MethodPut, "/metrics/job/a/instance@base64/=", "o 1\n")
	require.Equal(t, "text format parsing error in line 1: unexpected end of input stream\n",
		g.At(4).MustDo(http.StatusBadRequest, http.MethodPut, "/metrics/job/d", "n 1"))
	require.Equal(t, "improper label name \"__x\"\n",
		g.At(4).MustDo(http.StatusBadRequest, http.MethodPut, "/metrics/job/d/__x/1", ""))
	barrier()
	require.Equal(t, lines(
		`m{instance="",job="a"} 1`,
		`push_failure_time_seconds{instance="",job="a"} 0`,
		`push_failure_time_seconds{instance="",job="b"} 1.700000002e+09`,
		`push_failure_time_seconds{instance="",job="c"} 1.700000003e+09`,
		`push_time_seconds{instance="",job="a"} 1.700000001e+09`,
		`push_time_seconds{instance="",job="b"} 0`,
		`push_time_seconds{instance="",job="c"} 0`,
	), g.Samples())
}
