package spanmetrics

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// benchBatch builds a batch of n spans over 10 services and 20 span names,
// half of them client/server pairs, with Windmill-like attributes.
func benchBatch(n int, now time.Time) ptrace.Traces {
	td := ptrace.NewTraces()
	for svc := 0; svc < 10; svc++ {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", fmt.Sprintf("service-%d", svc))
		rs.Resource().Attributes().PutStr("host.name", "host-1")
		spans := rs.ScopeSpans().AppendEmpty().Spans()
		for i := 0; i < n/10; i++ {
			s := spans.AppendEmpty()
			s.SetTraceID(pcommon.TraceID{byte(i), byte(i >> 8), byte(svc), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
			s.SetSpanID(pcommon.SpanID{byte(i), byte(i >> 8), byte(svc), 1, 2, 3, 4, 5})
			s.SetName(fmt.Sprintf("op-%d", i%20))
			s.SetKind(ptrace.SpanKind(1 + i%4))
			s.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Duration(i%100) * time.Millisecond)))
			s.SetEndTimestamp(pcommon.NewTimestampFromTime(now))
			s.Attributes().PutStr("workspace_id", "acme")
			s.Attributes().PutStr("language", "python3")
			s.Attributes().PutStr("job_id", fmt.Sprint(i))
			if i%10 == 0 {
				s.Status().SetCode(ptrace.StatusCodeError)
			}
		}
	}
	return td
}

// BenchmarkConsume measures decoding a pre-encoded OTLP request and
// deriving span metrics and service graphs from it.
func BenchmarkConsume(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("spans=%d", n), func(b *testing.B) {
			now := time.Now()
			cfg := DefaultConfig()
			cfg.Dimensions = []string{"workspace_id", "language"}
			p, err := New(cfg, Options{Now: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			body, err := ptraceotlp.NewExportRequestFromTraces(benchBatch(n, now)).MarshalProto()
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req := ptraceotlp.NewExportRequest()
				if err := req.UnmarshalProto(body); err != nil {
					b.Fatal(err)
				}
				_ = p.ConsumeTraces(context.Background(), req.Traces())
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/span")
		})
	}
}

// BenchmarkConsumeTraces measures deriving span metrics and service graphs
// from a decoded batch whose series exist already.
func BenchmarkConsumeTraces(b *testing.B) {
	for _, graphs := range []bool{true, false} {
		b.Run(fmt.Sprintf("service_graphs=%t", graphs), func(b *testing.B) {
			now := time.Now()
			cfg := DefaultConfig()
			cfg.Dimensions = []string{"workspace_id", "language"}
			cfg.ServiceGraphs.Disabled = !graphs
			p, err := New(cfg, Options{Now: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			td := benchBatch(1000, now)
			_ = p.ConsumeTraces(context.Background(), td)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_ = p.ConsumeTraces(context.Background(), td)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/span")
		})
	}
}
