package gateway

import (
	"math"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
)

// appendSimpleSample appends the text-format line of a counter, gauge or
// untyped metric: the same bytes as expfmt.MetricFamilyToText writes for it,
// without going through a writer. The name and label names must be valid in
// the legacy scheme and the metric must carry no timestamp.
func appendSimpleSample(b []byte, name string, labels []*dto.LabelPair, v float64) []byte {
	b = append(b, name...)
	for i, lp := range labels {
		if i == 0 {
			b = append(b, '{')
		} else {
			b = append(b, ',')
		}
		b = append(b, lp.GetName()...)
		b = append(b, '=', '"')
		b = appendEscapedLabelValue(b, lp.GetValue())
		b = append(b, '"')
	}
	if len(labels) > 0 {
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = appendFloat(b, v)
	return append(b, '\n')
}

// appendEscapedLabelValue escapes backslash, newline and double quote.
func appendEscapedLabelValue(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '\n':
			b = append(b, '\\', 'n')
		case '"':
			b = append(b, '\\', '"')
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendFloat formats v as expfmt's text encoder does.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case v == 1:
		return append(b, '1')
	case v == 0:
		return append(b, '0')
	case v == -1:
		return append(b, '-', '1')
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, +1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	default:
		return strconv.AppendFloat(b, v, 'g', -1, 64)
	}
}

// simpleValue returns the value of a counter, gauge or untyped metric whose
// line appendSimpleSample can write.
func simpleValue(name string, typ dto.MetricType, m *dto.Metric) (float64, bool) {
	if m.TimestampMs != nil || !model.LegacyValidation.IsValidMetricName(name) {
		return 0, false
	}
	for _, lp := range m.Label {
		if !model.LabelName(lp.GetName()).IsValidLegacy() {
			return 0, false
		}
	}
	switch {
	case typ == dto.MetricType_COUNTER && m.Counter != nil:
		return m.Counter.GetValue(), true
	case typ == dto.MetricType_GAUGE && m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case typ == dto.MetricType_UNTYPED && m.Untyped != nil:
		return m.Untyped.GetValue(), true
	}
	return 0, false
}
