package spanmetrics

import (
	"math/bits"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// spanSizeWithoutAttributes returns the size in bytes of the span encoded
// as an OTLP protobuf Span message, less the size of its own attributes
// (attributesSize), which callers sum while they read them anyway: fields
// with default values are left out as proto3 does, except the status,
// which OTLP exporters always set.
func spanSizeWithoutAttributes(s ptrace.Span) int {
	n := 0
	if !s.TraceID().IsEmpty() {
		n += bytesField(1, 16)
	}
	if !s.SpanID().IsEmpty() {
		n += bytesField(1, 8)
	}
	if ts := s.TraceState().AsRaw(); ts != "" {
		n += bytesField(1, len(ts))
	}
	if !s.ParentSpanID().IsEmpty() {
		n += bytesField(1, 8)
	}
	if s.Flags() != 0 {
		n += 2 + 4
	}
	if name := s.Name(); name != "" {
		n += bytesField(1, len(name))
	}
	if k := s.Kind(); k != 0 {
		n += 1 + sov(uint64(k))
	}
	if s.StartTimestamp() != 0 {
		n += 9
	}
	if s.EndTimestamp() != 0 {
		n += 9
	}
	if c := s.DroppedAttributesCount(); c != 0 {
		n += 1 + sov(uint64(c))
	}
	for i := 0; i < s.Events().Len(); i++ {
		n += bytesField(1, eventSize(s.Events().At(i)))
	}
	if c := s.DroppedEventsCount(); c != 0 {
		n += 1 + sov(uint64(c))
	}
	for i := 0; i < s.Links().Len(); i++ {
		n += bytesField(1, linkSize(s.Links().At(i)))
	}
	if c := s.DroppedLinksCount(); c != 0 {
		n += 1 + sov(uint64(c))
	}
	st := 0
	if msg := s.Status().Message(); msg != "" {
		st += bytesField(1, len(msg))
	}
	if c := s.Status().Code(); c != 0 {
		st += 1 + sov(uint64(c))
	}
	return n + bytesField(1, st)
}

func eventSize(e ptrace.SpanEvent) int {
	n := 0
	if e.Timestamp() != 0 {
		n += 9
	}
	if name := e.Name(); name != "" {
		n += bytesField(1, len(name))
	}
	n += attributesSize(e.Attributes())
	if c := e.DroppedAttributesCount(); c != 0 {
		n += 1 + sov(uint64(c))
	}
	return n
}

func linkSize(l ptrace.SpanLink) int {
	n := 0
	if !l.TraceID().IsEmpty() {
		n += bytesField(1, 16)
	}
	if !l.SpanID().IsEmpty() {
		n += bytesField(1, 8)
	}
	if ts := l.TraceState().AsRaw(); ts != "" {
		n += bytesField(1, len(ts))
	}
	n += attributesSize(l.Attributes())
	if c := l.DroppedAttributesCount(); c != 0 {
		n += 1 + sov(uint64(c))
	}
	if l.Flags() != 0 {
		n += 1 + 4
	}
	return n
}

// attributesSize is the size of repeated KeyValue fields (one-byte tags).
func attributesSize(m pcommon.Map) int {
	n := 0
	for k, v := range m.All() {
		n += keyValueSize(k, v)
	}
	return n
}

// keyValueSize is the size of one KeyValue field with a one-byte tag.
func keyValueSize(k string, v pcommon.Value) int {
	kv := 0
	if k != "" {
		kv += bytesField(1, len(k))
	}
	kv += bytesField(1, anyValueSize(v))
	return bytesField(1, kv)
}

func anyValueSize(v pcommon.Value) int {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return bytesField(1, len(v.Str()))
	case pcommon.ValueTypeBool:
		return 2
	case pcommon.ValueTypeInt:
		return 1 + sov(uint64(v.Int()))
	case pcommon.ValueTypeDouble:
		return 9
	case pcommon.ValueTypeSlice:
		n := 0
		s := v.Slice()
		for i := 0; i < s.Len(); i++ {
			n += bytesField(1, anyValueSize(s.At(i)))
		}
		return bytesField(1, n)
	case pcommon.ValueTypeMap:
		return bytesField(1, attributesSize(v.Map()))
	case pcommon.ValueTypeBytes:
		return bytesField(1, v.Bytes().Len())
	}
	return 0
}

// bytesField is the size of a length-delimited field with a tag of tagLen
// bytes and a payload of n bytes.
func bytesField(tagLen, n int) int { return tagLen + sov(uint64(n)) + n }

// sov is the size of a varint.
func sov(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }
