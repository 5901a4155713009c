package traces

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
)

// codecBatch returns n spans of about 450 bytes, as Windmill's job spans.
func codecBatch(n int) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "svc")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	for i := range n {
		s := spans.AppendEmpty()
		s.SetTraceID(pcommon.TraceID{byte(i), 1})
		s.SetSpanID(pcommon.SpanID{byte(i), 2})
		s.SetName(fmt.Sprintf("op-%d", i%7))
		s.Attributes().PutStr("workspace_id", "acme")
		s.Attributes().PutEmptyBytes("raw").FromRaw([]byte{byte(i), 9})
		for j := range 8 {
			s.Attributes().PutStr(fmt.Sprintf("attribute_%d", j), fmt.Sprintf("%08d-1234-5678-9abc-%012d", i, j))
		}
	}
	return td
}

// split cuts b into buffers of at most size bytes, as gRPC hands over a
// message received in several frames.
func split(b []byte, size int) mem.BufferSlice {
	var out mem.BufferSlice
	for len(b) > 0 {
		n := min(size, len(b))
		out = append(out, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	return out
}

func TestGRPCCodecUnmarshal(t *testing.T) {
	body, err := ptraceotlp.NewExportRequestFromTraces(codecBatch(100)).MarshalProto()
	require.NoError(t, err)
	scenarios := map[string]struct {
		body  []byte
		split int
	}{
		"empty":         {body: nil, split: 1},
		"one buffer":    {body: body, split: len(body)},
		"16 KiB frames": {body: body, split: 16 << 10},
		"tiny buffers":  {body: body, split: 7},
	}
	codec := newGRPCCodec()
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			// Decode twice, so that the second decode reuses the pooled
			// buffer of the first.
			for range 2 {
				got := ptraceotlp.NewExportRequest()
				require.NoError(t, codec.Unmarshal(split(sc.body, sc.split), got))
				want := ptraceotlp.NewExportRequest()
				require.NoError(t, want.UnmarshalProto(sc.body))
				require.Equal(t, want.Traces(), got.Traces())
			}
		})
	}
	require.Error(t, codec.Unmarshal(split(body[:len(body)-3], 1000), ptraceotlp.NewExportRequest()), "a truncated request")
	require.NoError(t, codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(nil), mem.SliceBuffer(nil)}, ptraceotlp.NewExportRequest()),
		"an empty request in empty buffers")
}

// TestGRPCReceiver sends requests through a gRPC server built with
// GRPCServerOptions, from a regular OTLP client.
func TestGRPCReceiver(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(GRPCServerOptions(DefaultMaxBodyBytes)...)
	c := &capture{}
	RegisterGRPC(srv, c, NewMetrics(nil), Limits{MaxBodyBytes: DefaultMaxBodyBytes})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	client := ptraceotlp.NewGRPCClient(cc)
	var want []ptrace.Traces
	for _, n := range []int{1, 1000} {
		td := codecBatch(n)
		_, err := client.Export(context.Background(), ptraceotlp.NewExportRequestFromTraces(td))
		require.NoError(t, err)
		want = append(want, td)
	}
	require.Equal(t, want, c.batches)
}

// BenchmarkGRPCCodecUnmarshal compares decoding a request received in 16 KiB
// frames with this codec and the way pdata's "proto" codec does it: joined
// in a zeroed buffer of its tier list.
func BenchmarkGRPCCodecUnmarshal(b *testing.B) {
	pdataPool := mem.NewTieredBufferPool(256, 4<<10, 16<<10, 32<<10, 512<<10, 1<<20, 4<<20, 16<<20)
	pdataUnmarshal := func(data mem.BufferSlice, req ptraceotlp.ExportRequest) error {
		buf := data.MaterializeToBuffer(pdataPool)
		defer buf.Free()
		return req.UnmarshalProto(buf.ReadOnlyData())
	}
	for _, n := range []int{100, 1000} {
		body, err := ptraceotlp.NewExportRequestFromTraces(codecBatch(n)).MarshalProto()
		if err != nil {
			b.Fatal(err)
		}
		data := split(body, 16<<10)
		codec := newGRPCCodec()
		for name, unmarshal := range map[string]func(mem.BufferSlice, ptraceotlp.ExportRequest) error{
			"pushrelay": func(data mem.BufferSlice, req ptraceotlp.ExportRequest) error { return codec.Unmarshal(data, req) },
			"pdata":     pdataUnmarshal,
		} {
			b.Run(fmt.Sprintf("spans=%d/codec=%s", n, name), func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if err := unmarshal(data, ptraceotlp.NewExportRequest()); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
