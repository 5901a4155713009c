package gateway

import (
	"math"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protowire"
)

// appendSimpleSample appends the text-format line of a counter, gauge or
// untyped metric: the same bytes as expfmt.MetricFamilyToText writes for it,
// without going through a writer. value is the sample value as appendFloat
// formats it. The name and label names must be valid in the legacy scheme
// and the metric must carry no timestamp.
func appendSimpleSample(b []byte, name string, labels []label, value []byte) []byte {
	b = append(b, name...)
	for i, l := range labels {
		if i == 0 {
			b = append(b, '{')
		} else {
			b = append(b, ',')
		}
		b = append(b, l.name...)
		b = append(b, '=', '"')
		b = appendEscapedLabelValue(b, l.value)
		b = append(b, '"')
	}
	if len(labels) > 0 {
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = append(b, value...)
	return append(b, '\n')
}

// simpleSampleSize is the length of the line appendSimpleSample writes for a
// value of valueLen bytes.
func simpleSampleSize(name string, labels []label, valueLen int) int {
	n := len(name) + 1 + valueLen + 1 // the space and the newline
	for _, l := range labels {
		n += 1 + len(l.name) + 2 + len(l.value) + 1
		for i := 0; i < len(l.value); i++ {
			if c := l.value[i]; c == '\\' || c == '\n' || c == '"' {
				n++
			}
		}
	}
	if len(labels) > 0 {
		n++ // the closing brace
	}
	return n
}

// appendEscapedLabelValue escapes backslash, newline and double quote.
func appendEscapedLabelValue(b []byte, v string) []byte {
	if !containsByte(v, '\\', '\n', '"') {
		return append(b, v...)
	}
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
	case v > -1e6 && v < 1e6 && v == math.Trunc(v):
		// Whole numbers of up to six digits, which the shortest 'g'
		// format writes without exponent.
		return strconv.AppendInt(b, int64(v), 10)
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
		if !isLegacyName(lp.GetName(), false) {
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

// Field numbers of io.prometheus.client.Metric and its parts.
const (
	fieldMetricLabel   = 1
	fieldMetricGauge   = 2
	fieldMetricCounter = 3
	fieldMetricUntyped = 5
	fieldLabelName     = 1
	fieldLabelValue    = 2
	fieldValue         = 1
)

// appendSimpleMetricProto appends the protobuf encoding of a counter, gauge
// or untyped metric that has only labels and a value; it decodes to a
// message equal to the one proto.Marshal would encode.
func appendSimpleMetricProto(b []byte, typ dto.MetricType, labels []label, v float64) []byte {
	for _, l := range labels {
		name, value := l.name, l.value
		size := protowire.SizeTag(fieldLabelName) + protowire.SizeBytes(len(name)) +
			protowire.SizeTag(fieldLabelValue) + protowire.SizeBytes(len(value))
		b = protowire.AppendTag(b, fieldMetricLabel, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(size))
		b = protowire.AppendTag(b, fieldLabelName, protowire.BytesType)
		b = protowire.AppendString(b, name)
		b = protowire.AppendTag(b, fieldLabelValue, protowire.BytesType)
		b = protowire.AppendString(b, value)
	}
	field := protowire.Number(fieldMetricUntyped)
	switch typ {
	case dto.MetricType_COUNTER:
		field = fieldMetricCounter
	case dto.MetricType_GAUGE:
		field = fieldMetricGauge
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(protowire.SizeTag(fieldValue)+protowire.SizeFixed64()))
	b = protowire.AppendTag(b, fieldValue, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(v))
}

// simpleMetricProtoSize is the length of what appendSimpleMetricProto
// writes.
func simpleMetricProtoSize(labels []label) int {
	n := 0
	for _, l := range labels {
		size := protowire.SizeTag(fieldLabelName) + protowire.SizeBytes(len(l.name)) +
			protowire.SizeTag(fieldLabelValue) + protowire.SizeBytes(len(l.value))
		n += protowire.SizeTag(fieldMetricLabel) + protowire.SizeBytes(size)
	}
	value := protowire.SizeTag(fieldValue) + protowire.SizeFixed64()
	return n + protowire.SizeTag(fieldMetricGauge) + protowire.SizeBytes(value)
}

// isPlainSimpleMetric reports whether m holds nothing but labels and a
// counter, gauge or untyped value, so appendSimpleMetricProto encodes all of
// it.
func isPlainSimpleMetric(m *dto.Metric) bool {
	if len(m.ProtoReflect().GetUnknown()) > 0 || m.Summary != nil || m.Histogram != nil {
		return false
	}
	for _, lp := range m.Label {
		if lp.Name == nil || lp.Value == nil || len(lp.ProtoReflect().GetUnknown()) > 0 {
			return false
		}
	}
	n := 0
	if m.Counter != nil {
		n++
		if m.Counter.Value == nil || m.Counter.Exemplar != nil || m.Counter.CreatedTimestamp != nil || len(m.Counter.ProtoReflect().GetUnknown()) > 0 {
			return false
		}
	}
	if m.Gauge != nil {
		n++
		if m.Gauge.Value == nil || len(m.Gauge.ProtoReflect().GetUnknown()) > 0 {
			return false
		}
	}
	if m.Untyped != nil {
		n++
		if m.Untyped.Value == nil || len(m.Untyped.ProtoReflect().GetUnknown()) > 0 {
			return false
		}
	}
	return n == 1
}

// appendGroupedText appends the text-format lines of a summary or histogram
// metric: the same bytes as expfmt.MetricFamilyToText writes for it. ok is
// false, and nothing is appended, for what it does not cover: a name outside
// the legacy scheme, a timestamp, or a value that does not match typ.
func appendGroupedText(b []byte, name string, typ dto.MetricType, m *dto.Metric) ([]byte, bool) {
	if m.TimestampMs != nil || !model.LegacyValidation.IsValidMetricName(name) {
		return b, false
	}
	for _, lp := range m.Label {
		if !isLegacyName(lp.GetName(), false) {
			return b, false
		}
	}
	switch {
	case typ == dto.MetricType_SUMMARY && m.Summary != nil:
		s := m.Summary
		for _, q := range s.Quantile {
			b = appendGroupedLine(b, name, "", m.Label, model.QuantileLabel, q.GetQuantile(), q.GetValue())
		}
		b = appendGroupedLine(b, name, "_sum", m.Label, "", 0, s.GetSampleSum())
		return appendGroupedLine(b, name, "_count", m.Label, "", 0, float64(s.GetSampleCount())), true
	case (typ == dto.MetricType_HISTOGRAM || typ == dto.MetricType_GAUGE_HISTOGRAM) && m.Histogram != nil:
		h := m.Histogram
		infSeen := false
		for _, bk := range h.Bucket {
			v := bk.GetCumulativeCountFloat()
			if v == 0 {
				v = float64(bk.GetCumulativeCount())
			}
			b = appendGroupedLine(b, name, "_bucket", m.Label, model.BucketLabel, bk.GetUpperBound(), v)
			infSeen = infSeen || math.IsInf(bk.GetUpperBound(), +1)
		}
		count := h.GetSampleCountFloat()
		if count == 0 {
			count = float64(h.GetSampleCount())
		}
		if !infSeen {
			b = appendGroupedLine(b, name, "_bucket", m.Label, model.BucketLabel, math.Inf(+1), count)
		}
		b = appendGroupedLine(b, name, "_sum", m.Label, "", 0, h.GetSampleSum())
		return appendGroupedLine(b, name, "_count", m.Label, "", 0, count), true
	}
	return b, false
}

// appendGroupedLine appends one line of a summary or histogram: name and
// suffix, the labels and, when extraName is set, the quantile or bucket
// label, then the value.
func appendGroupedLine(b []byte, name, suffix string, labels []*dto.LabelPair, extraName string, extraValue, v float64) []byte {
	b = append(b, name...)
	b = append(b, suffix...)
	sep := byte('{')
	for _, lp := range labels {
		b = append(b, sep)
		b = append(b, lp.GetName()...)
		b = append(b, '=', '"')
		b = appendEscapedLabelValue(b, lp.GetValue())
		b = append(b, '"')
		sep = ','
	}
	if extraName != "" {
		b = append(b, sep)
		b = append(b, extraName...)
		b = append(b, '=', '"')
		b = appendFloat(b, extraValue)
		b = append(b, '"')
		sep = ','
	}
	if sep == ',' {
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = appendFloat(b, v)
	return append(b, '\n')
}

// groupedTextSize estimates what appendGroupedText writes for m, so that it
// usually writes into one allocation.
func groupedTextSize(name string, m *dto.Metric) int {
	line := len(name) + len("_bucket") + len(`,le=""} `) + 2*24 + 1
	for _, lp := range m.Label {
		line += len(lp.GetName()) + len(lp.GetValue()) + 4
	}
	lines := 3
	if m.Summary != nil {
		lines += len(m.Summary.Quantile)
	}
	if m.Histogram != nil {
		lines += len(m.Histogram.Bucket)
	}
	return lines * line
}

// containsByte reports whether s holds a, b or c. Unlike strings.ContainsAny
// it costs a few instructions per byte on the short strings of labels and
// values.
func containsByte[T string | []byte](s T, a, b, c byte) bool {
	for i := 0; i < len(s); i++ {
		if x := s[i]; x == a || x == b || x == c {
			return true
		}
	}
	return false
}
