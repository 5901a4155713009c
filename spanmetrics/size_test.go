package spanmetrics

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestSpanSizeMatchesOTLPProto checks spanSizeWithoutAttributes plus
// attributesSize against proto.Size of the span decoded into the official
// OTLP Go types.
func TestSpanSizeMatchesOTLPProto(t *testing.T) {
	scenarios := map[string]func(s ptrace.Span){
		"minimal": func(s ptrace.Span) {},
		"root server with attributes": func(s ptrace.Span) {
			s.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
			s.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, 8})
			s.SetName("GET /users/{id}")
			s.SetKind(ptrace.SpanKindServer)
			s.SetStartTimestamp(pcommon.NewTimestampFromTime(time.Unix(1700000000, 0)))
			s.SetEndTimestamp(pcommon.NewTimestampFromTime(time.Unix(1700000001, 0)))
			a := s.Attributes()
			a.PutStr("http.method", "GET")
			a.PutInt("http.status_code", 200)
			a.PutInt("negative", -5)
			a.PutBool("ok", false)
			a.PutDouble("ratio", 0.5)
			a.PutEmpty("empty")
			a.PutEmptyBytes("raw").FromRaw([]byte{1, 2, 3})
			sl := a.PutEmptySlice("list")
			sl.AppendEmpty().SetStr("a")
			sl.AppendEmpty().SetInt(300)
			m := a.PutEmptyMap("map")
			m.PutStr("k", "v")
		},
		"child with events, links, status and counts": func(s ptrace.Span) {
			s.SetTraceID(pcommon.TraceID{9})
			s.SetSpanID(pcommon.SpanID{8})
			s.SetParentSpanID(pcommon.SpanID{7})
			s.TraceState().FromRaw("ot=th:8")
			s.SetFlags(0x101)
			s.SetName("call")
			s.SetKind(ptrace.SpanKindClient)
			s.SetDroppedAttributesCount(300)
			s.SetDroppedEventsCount(1)
			s.SetDroppedLinksCount(2)
			e := s.Events().AppendEmpty()
			e.SetName("exception")
			e.SetTimestamp(5)
			e.Attributes().PutStr("exception.message", "boom")
			e.SetDroppedAttributesCount(1)
			l := s.Links().AppendEmpty()
			l.SetTraceID(pcommon.TraceID{3})
			l.SetSpanID(pcommon.SpanID{4})
			l.TraceState().FromRaw("x=y")
			l.SetFlags(1)
			l.Attributes().PutStr("k", "v")
			s.Status().SetCode(ptrace.StatusCodeError)
			s.Status().SetMessage("failed")
		},
	}
	for name, fill := range scenarios {
		t.Run(name, func(t *testing.T) {
			td := ptrace.NewTraces()
			span := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
			fill(span)
			b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
			require.NoError(t, err)
			var req coltracepb.ExportTraceServiceRequest
			require.NoError(t, proto.Unmarshal(b, &req))
			official := req.ResourceSpans[0].ScopeSpans[0].Spans[0]
			require.Equal(t, proto.Size(official), spanSizeWithoutAttributes(span)+attributesSize(span.Attributes()))
		})
	}
}
