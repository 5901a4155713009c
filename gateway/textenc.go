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
// without going through a writer. The name and label names must be valid in
// the legacy scheme and the metric must carry no timestamp.
func appendSimpleSample(b []byte, name string, labels []label, v float64) []byte {
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
	b = appendFloat(b, v)
	return append(b, '\n')
}

// simpleSampleSize is the length of the line appendSimpleSample writes.
func simpleSampleSize(name string, labels []label, v float64) int {
	n := len(name) + 1 + 1 // the space and the newline
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
	var num [32]byte
	return n + len(appendFloat(num[:0], v))
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
