package gateway

import (
	"bytes"
	"math"
	"strconv"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// TestAppendSimpleSampleMatchesExpfmt checks the fast line writer against
// expfmt's text encoder byte for byte.
func TestAppendSimpleSampleMatchesExpfmt(t *testing.T) {
	labels := func(kv ...string) []*dto.LabelPair {
		var out []*dto.LabelPair
		for i := 0; i < len(kv); i += 2 {
			out = append(out, &dto.LabelPair{Name: proto.String(kv[i]), Value: proto.String(kv[i+1])})
		}
		return out
	}
	scenarios := map[string]struct {
		typ    dto.MetricType
		labels []*dto.LabelPair
		value  float64
	}{
		"no labels":        {dto.MetricType_UNTYPED, nil, 3},
		"zero":             {dto.MetricType_GAUGE, labels("a", ""), 0},
		"one":              {dto.MetricType_COUNTER, labels("a", "b"), 1},
		"minus one":        {dto.MetricType_GAUGE, labels("a", "b"), -1},
		"NaN":              {dto.MetricType_GAUGE, labels("a", "b"), math.NaN()},
		"+Inf":             {dto.MetricType_GAUGE, labels("a", "b"), math.Inf(1)},
		"-Inf":             {dto.MetricType_GAUGE, labels("a", "b"), math.Inf(-1)},
		"big":              {dto.MetricType_GAUGE, labels("a", "b"), 1.7953117528941243e+09},
		"tiny":             {dto.MetricType_GAUGE, labels("a", "b"), 1e-300},
		"escapes":          {dto.MetricType_COUNTER, labels("a", "x\\y\n\"z\""), 2.5},
		"unicode":          {dto.MetricType_COUNTER, labels("a", "Π→€"), 42},
		"several labels":   {dto.MetricType_GAUGE, labels("instance", "", "job", "j", "z", "q"), 12345.678},
		"negative zero":    {dto.MetricType_GAUGE, nil, math.Copysign(0, -1)},
		"integer-ish big":  {dto.MetricType_COUNTER, nil, 1e21},
		"subnormal number": {dto.MetricType_GAUGE, nil, 5e-324},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			m := emptyMetric(sc.typ)
			m.Label = sc.labels
			switch sc.typ {
			case dto.MetricType_COUNTER:
				m.Counter.Value = proto.Float64(sc.value)
			case dto.MetricType_GAUGE:
				m.Gauge.Value = proto.Float64(sc.value)
			default:
				m.Untyped.Value = proto.Float64(sc.value)
			}
			want, err := encodeSeries("metric_name", sc.typ, m, false)
			require.NoError(t, err)
			v, ok := simpleValue("metric_name", sc.typ, m)
			require.True(t, ok)
			got := appendSimpleSample(nil, "metric_name", fromDto(&dto.MetricFamily{Name: proto.String("metric_name"), Type: sc.typ.Enum(), Metric: []*dto.Metric{m}}).simple[0].labels, appendFloat(nil, v))
			require.True(t, bytes.Equal(want, got), "want %q, got %q", want, got)
			labels := fromDto(&dto.MetricFamily{Name: proto.String("metric_name"), Type: sc.typ.Enum(), Metric: []*dto.Metric{m}}).simple[0].labels
			require.Equal(t, len(got), simpleSampleSize("metric_name", labels, len(appendFloat(nil, v))), "the size is exact")
			require.Equal(t, len(appendSimpleMetricProto(nil, sc.typ, labels, v)), simpleMetricProtoSize(labels))
		})
	}
}

// TestAppendSimpleMetricProto checks that the hand-written encoding decodes
// to the metric it was made from.
func TestAppendSimpleMetricProto(t *testing.T) {
	scenarios := map[string]struct {
		typ dto.MetricType
		m   *dto.Metric
	}{
		"counter no labels": {dto.MetricType_COUNTER, &dto.Metric{Counter: &dto.Counter{Value: proto.Float64(3)}}},
		"gauge with labels": {dto.MetricType_GAUGE, &dto.Metric{
			Label: []*dto.LabelPair{{Name: proto.String("a"), Value: proto.String("")}, {Name: proto.String("job"), Value: proto.String("Π x")}},
			Gauge: &dto.Gauge{Value: proto.Float64(math.Inf(-1))},
		}},
		"untyped NaN": {dto.MetricType_UNTYPED, &dto.Metric{Untyped: &dto.Untyped{Value: proto.Float64(-0.5)}}},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			require.True(t, isPlainSimpleMetric(sc.m))
			v, ok := simpleValue("x", sc.typ, sc.m)
			require.True(t, ok)
			b := appendSimpleMetricProto(nil, sc.typ, fromDto(&dto.MetricFamily{Name: proto.String("x"), Type: sc.typ.Enum(), Metric: []*dto.Metric{sc.m}}).simple[0].labels, v)
			got := &dto.Metric{}
			require.NoError(t, proto.Unmarshal(b, got))
			require.True(t, proto.Equal(sc.m, got), "want %v, got %v", sc.m, got)
		})
	}
	withExemplar := &dto.Metric{Counter: &dto.Counter{Value: proto.Float64(1), Exemplar: &dto.Exemplar{Value: proto.Float64(1)}}}
	require.False(t, isPlainSimpleMetric(withExemplar))
}

// TestAppendGroupedTextMatchesExpfmt checks the summary and histogram line
// writer against expfmt's text encoder byte for byte.
func TestAppendGroupedTextMatchesExpfmt(t *testing.T) {
	labels := []*dto.LabelPair{
		{Name: proto.String("instance"), Value: proto.String("")},
		{Name: proto.String("job"), Value: proto.String("x\\y\n\"z\"")},
	}
	bucket := func(le float64, c uint64) *dto.Bucket {
		return &dto.Bucket{UpperBound: proto.Float64(le), CumulativeCount: proto.Uint64(c)}
	}
	scenarios := map[string]struct {
		name string
		typ  dto.MetricType
		m    *dto.Metric
		ok   bool
	}{
		"histogram with +Inf": {"h", dto.MetricType_HISTOGRAM, &dto.Metric{Label: labels, Histogram: &dto.Histogram{
			SampleCount: proto.Uint64(7), SampleSum: proto.Float64(1.25),
			Bucket: []*dto.Bucket{bucket(0.005, 1), bucket(1, 3), bucket(math.Inf(1), 7)},
		}}, true},
		"histogram without +Inf": {"h", dto.MetricType_HISTOGRAM, &dto.Metric{Histogram: &dto.Histogram{
			SampleCount: proto.Uint64(9), SampleSum: proto.Float64(-3),
			Bucket: []*dto.Bucket{bucket(-1, 0), bucket(2.5, 4)},
		}}, true},
		"histogram with float counts": {"h", dto.MetricType_HISTOGRAM, &dto.Metric{Histogram: &dto.Histogram{
			SampleCountFloat: proto.Float64(2.5), SampleSum: proto.Float64(math.NaN()),
			Bucket: []*dto.Bucket{{UpperBound: proto.Float64(1), CumulativeCountFloat: proto.Float64(0.5)}},
		}}, true},
		"empty histogram":       {"h", dto.MetricType_HISTOGRAM, &dto.Metric{Histogram: &dto.Histogram{}}, true},
		"gauge histogram":       {"gh", dto.MetricType_GAUGE_HISTOGRAM, &dto.Metric{Histogram: &dto.Histogram{Bucket: []*dto.Bucket{bucket(1, 1)}}}, true},
		"summary":               {"s", dto.MetricType_SUMMARY, &dto.Metric{Label: labels, Summary: &dto.Summary{SampleCount: proto.Uint64(1e6), SampleSum: proto.Float64(1e21), Quantile: []*dto.Quantile{{Quantile: proto.Float64(0.5), Value: proto.Float64(1)}, {Quantile: proto.Float64(0.99), Value: proto.Float64(math.Inf(-1))}}}}, true},
		"summary no quantiles":  {"s", dto.MetricType_SUMMARY, &dto.Metric{Summary: &dto.Summary{}}, true},
		"timestamp":             {"s", dto.MetricType_SUMMARY, &dto.Metric{Summary: &dto.Summary{}, TimestampMs: proto.Int64(1)}, false},
		"name outside legacy":   {"a.b", dto.MetricType_SUMMARY, &dto.Metric{Summary: &dto.Summary{}}, false},
		"histogram as summary":  {"s", dto.MetricType_SUMMARY, &dto.Metric{Histogram: &dto.Histogram{}}, false},
		"label outside legacy":  {"s", dto.MetricType_SUMMARY, &dto.Metric{Label: []*dto.LabelPair{{Name: proto.String("a.b"), Value: proto.String("")}}, Summary: &dto.Summary{}}, false},
		"counter is not served": {"c", dto.MetricType_COUNTER, &dto.Metric{Counter: &dto.Counter{Value: proto.Float64(1)}}, false},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			got, ok := appendGroupedText(nil, sc.name, sc.typ, sc.m)
			require.Equal(t, sc.ok, ok)
			if !ok {
				require.Empty(t, got)
				return
			}
			want, err := encodeSeries(sc.name, sc.typ, sc.m, false)
			require.NoError(t, err)
			require.Equal(t, string(want), string(got))
		})
	}
}

// TestAppendFloatWholeNumbers checks appendFloat's shortcut for whole
// numbers against the shortest 'g' format, on every whole number it takes
// and on its neighbours.
func TestAppendFloatWholeNumbers(t *testing.T) {
	check := func(v float64) {
		if got, want := string(appendFloat(nil, v)), strconv.FormatFloat(v, 'g', -1, 64); got != want {
			t.Fatalf("appendFloat(%v) = %q, want %q", v, got, want)
		}
	}
	for n := -999_999; n <= 999_999; n++ {
		check(float64(n))
	}
	for _, v := range []float64{1e6, -1e6, 999_999.5, -999_999.5, 0.5, -0.5, 1e6 + 1, 123_456.000_001} {
		check(v)
	}
}
