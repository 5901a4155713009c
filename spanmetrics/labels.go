package spanmetrics

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Limits on label sizes, as in Tempo's registry.
const (
	maxLabelNameLength  = 1024
	maxLabelValueLength = 2048
)

// Intrinsic label names.
const (
	labelService       = "service"
	labelServiceName   = "service_name"
	labelSpanName      = "span_name"
	labelSpanKind      = "span_kind"
	labelStatusCode    = "status_code"
	labelStatusMessage = "status_message"
	labelJob           = "job"
	labelInstance      = "instance"
)

var intrinsicLabels = map[string]bool{
	labelService: true, labelSpanName: true, labelSpanKind: true, labelStatusCode: true, labelStatusMessage: true,
}

// spanKindName renders a span kind as in the OTLP enum.
func spanKindName(k ptrace.SpanKind) string {
	switch k {
	case ptrace.SpanKindUnspecified:
		return "SPAN_KIND_UNSPECIFIED"
	case ptrace.SpanKindInternal:
		return "SPAN_KIND_INTERNAL"
	case ptrace.SpanKindServer:
		return "SPAN_KIND_SERVER"
	case ptrace.SpanKindClient:
		return "SPAN_KIND_CLIENT"
	case ptrace.SpanKindProducer:
		return "SPAN_KIND_PRODUCER"
	case ptrace.SpanKindConsumer:
		return "SPAN_KIND_CONSUMER"
	}
	return strconv.Itoa(int(k))
}

// statusCodeName renders a status code as in the OTLP enum.
func statusCodeName(c ptrace.StatusCode) string {
	switch c {
	case ptrace.StatusCodeUnset:
		return "STATUS_CODE_UNSET"
	case ptrace.StatusCodeOk:
		return "STATUS_CODE_OK"
	case ptrace.StatusCodeError:
		return "STATUS_CODE_ERROR"
	}
	return strconv.Itoa(int(c))
}

// SanitizeLabelName turns an attribute name into a label name: every byte
// outside [a-zA-Z0-9_] becomes '_', a leading digit gets a '_' in front.
func SanitizeLabelName(name string) string {
	var sb strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
			sb.WriteByte(c)
		case c >= '0' && c <= '9':
			if i == 0 {
				sb.WriteByte('_')
			}
			sb.WriteByte(c)
		default:
			sb.WriteByte('_')
		}
	}
	return truncate(sb.String(), maxLabelNameLength)
}

// dimensionLabel names the label of a custom dimension; a name that
// collides with an intrinsic label gets a "__" prefix.
func dimensionLabel(attr string) string {
	n := SanitizeLabelName(attr)
	if intrinsicLabels[n] {
		return "__" + n
	}
	return n
}

// stringify renders an attribute value as Tempo does: strings as they are,
// numbers in shortest decimal form, arrays and maps with their elements
// concatenated.
func stringify(v pcommon.Value) string {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return v.Str()
	case pcommon.ValueTypeBool:
		return strconv.FormatBool(v.Bool())
	case pcommon.ValueTypeInt:
		return strconv.FormatInt(v.Int(), 10)
	case pcommon.ValueTypeDouble:
		return strconv.FormatFloat(v.Double(), 'f', -1, 64)
	case pcommon.ValueTypeSlice:
		var sb strings.Builder
		sb.WriteByte('[')
		s := v.Slice()
		for i := 0; i < s.Len(); i++ {
			sb.WriteString(stringify(s.At(i)))
		}
		sb.WriteByte(']')
		return sb.String()
	case pcommon.ValueTypeMap:
		var sb strings.Builder
		sb.WriteByte('{')
		v.Map().Range(func(k string, e pcommon.Value) bool {
			sb.WriteString(k)
			sb.WriteByte(':')
			sb.WriteString(stringify(e))
			return true
		})
		sb.WriteByte('}')
		return sb.String()
	case pcommon.ValueTypeBytes:
		return v.AsString()
	}
	return ""
}

// truncate shortens s to at most n bytes without splitting a rune.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// lookup finds an attribute in the first map that has it.
func lookup(key string, maps ...pcommon.Map) (string, bool) {
	for _, m := range maps {
		if v, ok := m.Get(key); ok {
			return stringify(v), true
		}
	}
	return "", false
}
