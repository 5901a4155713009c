package traces

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/pushrelay/pushrelay/spanmetrics"
)

// tee is a Consumer that keeps what it receives and hands it on to next.
type tee struct {
	capture
	next Consumer
}

func (t *tee) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	if err := t.capture.ConsumeTraces(ctx, td); err != nil {
		return err
	}
	return t.next.ConsumeTraces(ctx, td)
}

// protoSeeds are OTLP protobuf bodies for FuzzOTLPProto: a valid request,
// one with invalid UTF-8 in the names spanmetrics turns into label values,
// one with a service graph edge and an empty one.
func protoSeeds(f *testing.F) [][]byte {
	f.Helper()
	marshal := func(td ptrace.Traces) []byte {
		b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
		require.NoError(f, err)
		return b
	}
	now := time.Now()
	edge := ptrace.NewTraces()
	addSpan := func(service, name string, kind ptrace.SpanKind, id, parent byte) {
		rs := edge.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", service)
		s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		s.SetTraceID(pcommon.TraceID{1, 2, 3})
		s.SetSpanID(pcommon.SpanID{id})
		if parent != 0 {
			s.SetParentSpanID(pcommon.SpanID{parent})
		}
		s.SetName(name)
		s.SetKind(kind)
		s.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Millisecond)))
		s.SetEndTimestamp(pcommon.NewTimestampFromTime(now))
		s.Attributes().PutStr("db.system", "postgresql")
	}
	addSpan("client", "call", ptrace.SpanKindClient, 1, 0)
	addSpan("server", "handle", ptrace.SpanKindServer, 2, 1)

	bad := ptrace.NewTraces()
	rs := bad.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "svc\xff")
	s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	s.SetName("bad\xc3\x28name")
	s.SetKind(ptrace.SpanKindServer)
	s.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
	s.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Hour))) // ends before it starts
	s.Status().SetCode(ptrace.StatusCodeError)
	s.Status().SetMessage("\xfe")

	return [][]byte{marshal(sampleTraces()), marshal(bad), marshal(edge), {}, {0x0a, 0x00}}
}

// FuzzOTLPProto feeds arbitrary bytes to the OTLP HTTP receiver as
// application/x-protobuf, on to the real span metrics processor: the answer
// is 200 (and the batch is consumed) or 400 (and nothing is), it never
// panics, and the processor's series can always be gathered.
func FuzzOTLPProto(f *testing.F) {
	for _, b := range protoSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		cfg := spanmetrics.DefaultConfig()
		cfg.IngestionSlack = 0 // count spans whatever their times
		cfg.Dimensions = []string{"db.system", "http.method"}
		proc, err := spanmetrics.New(cfg, spanmetrics.Options{})
		require.NoError(t, err)
		c := &tee{next: proc}
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, OTLPPath, bytes.NewReader(b))
		r.Header.Set("Content-Type", "application/x-protobuf")
		OTLPHandler(c, NewMetrics(nil), Limits{MaxBodyBytes: DefaultMaxBodyBytes, MaxSpans: 100000}).ServeHTTP(rec, r)
		switch rec.Code {
		case http.StatusOK:
			require.Len(t, c.batches, 1)
			back := ptraceotlp.NewExportResponse()
			require.NoError(t, back.UnmarshalProto(rec.Body.Bytes()), "the answer is an ExportTraceServiceResponse")
		default:
			require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
			require.Empty(t, c.batches)
		}
		reg := prometheus.NewPedanticRegistry()
		require.NoError(t, reg.Register(proc))
		_, err = reg.Gather()
		require.NoError(t, err, "span metrics from the request must stay exposable")
	})
}
