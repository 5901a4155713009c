package traces

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// capture is a Consumer that keeps what it receives.
type capture struct{ batches []ptrace.Traces }

func (c *capture) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	cp := ptrace.NewTraces()
	td.CopyTo(cp)
	c.batches = append(c.batches, cp)
	return nil
}

func (c *capture) spans() []ptrace.Span {
	var out []ptrace.Span
	for _, td := range c.batches {
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			ss := td.ResourceSpans().At(i).ScopeSpans()
			for j := 0; j < ss.Len(); j++ {
				for k := 0; k < ss.At(j).Spans().Len(); k++ {
					out = append(out, ss.At(j).Spans().At(k))
				}
			}
		}
	}
	return out
}

func attrs(m pcommon.Map) map[string]any { return m.AsRaw() }

func TestZipkinMapping(t *testing.T) {
	td, err := ParseZipkin([]byte(`[
	 {"traceId":"5af7183fb1d4cf5f","id":"6b221d5bc9e6496c","parentId":"6b221d5bc9e6496c","name":"GET /Users","kind":"SERVER",
	  "timestamp":1700000000000000,"duration":3500,
	  "localEndpoint":{"serviceName":"frontend","ipv4":"10.0.0.1","port":8080},
	  "remoteEndpoint":{"serviceName":"browser","ipv6":"::1","port":5000},
	  "annotations":[{"timestamp":1700000000001000,"value":"wr"}],
	  "tags":{"http.method":"GET","error":"","host.name":"web-1","service.version":"1.2"}},
	 {"traceId":"463ac35c9f6413ad48485a3953bb6124","id":"0000000000000002","name":"internal work",
	  "duration":10,"localEndpoint":{"serviceName":"backend"},"tags":{"span.kind":"internal","error":"true"}},
	 {"traceId":"463ac35c9f6413ad48485a3953bb6124","id":"0000000000000003","parentId":"0000000000000002","name":"call","kind":"CLIENT",
	  "timestamp":1700000000000000,"duration":1,"tags":{"otel.status_code":"ERROR","otel.status_description":"boom","error":"x","otel.scope.name":"lib"}}
	]`))
	require.NoError(t, err)
	c := &capture{batches: []ptrace.Traces{td}}
	spans := c.spans()
	require.Len(t, spans, 3)
	byName := map[string]ptrace.Span{}
	for _, s := range spans {
		byName[s.Name()] = s
	}

	s := byName["GET /Users"]
	require.Equal(t, "00000000000000005af7183fb1d4cf5f", s.TraceID().String(), "64-bit ids are left-padded")
	require.Equal(t, "6b221d5bc9e6496c", s.SpanID().String())
	require.True(t, s.ParentSpanID().IsEmpty(), "parentId == id means no parent")
	require.Equal(t, ptrace.SpanKindServer, s.Kind())
	require.Equal(t, pcommon.Timestamp(1700000000000000000), s.StartTimestamp())
	require.Equal(t, pcommon.Timestamp(1700000000003500000), s.EndTimestamp(), "microseconds become nanoseconds")
	require.Equal(t, ptrace.StatusCodeError, s.Status().Code(), "an error tag with any value is an error")
	require.Empty(t, s.Status().Message())
	require.Equal(t, map[string]any{
		"http.method": "GET", "error": "", "network.local.address": "10.0.0.1", "net.host.port": int64(8080),
		"service.peer.name": "browser", "network.peer.address": "::1", "net.peer.port": int64(5000),
	}, attrs(s.Attributes()))
	require.Equal(t, 1, s.Events().Len())
	require.Equal(t, "wr", s.Events().At(0).Name())

	s = byName["internal work"]
	require.Equal(t, ptrace.SpanKindInternal, s.Kind(), "span.kind=internal")
	require.Equal(t, ptrace.StatusCodeError, s.Status().Code())
	require.Equal(t, pcommon.Timestamp(0), s.StartTimestamp())
	require.Equal(t, pcommon.Timestamp(10000), s.EndTimestamp())
	require.Equal(t, map[string]any{"otel.zipkin.absentField.startTime": true}, attrs(s.Attributes()), "error=true and span.kind are removed")

	s = byName["call"]
	require.Equal(t, ptrace.SpanKindClient, s.Kind())
	require.Equal(t, ptrace.StatusCodeError, s.Status().Code())
	require.Equal(t, "boom", s.Status().Message())
	require.Equal(t, map[string]any{"error": "x"}, attrs(s.Attributes()), "otel.status_code wins over error, which is kept")

	// Resources: one per service, resource tags moved there.
	resources := map[string]map[string]any{}
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		name, _ := rs.Resource().Attributes().Get("service.name")
		resources[name.Str()] = attrs(rs.Resource().Attributes())
		if name.Str() == "backend" {
			require.Equal(t, "", rs.ScopeSpans().At(0).Scope().Name())
		}
	}
	require.Equal(t, map[string]any{"service.name": "frontend", "host.name": "web-1", "service.version": "1.2"}, resources["frontend"])
	require.Equal(t, map[string]any{"service.name": "backend"}, resources["backend"])
	require.Equal(t, map[string]any{}, resources[""], "a span without local endpoint has no service name")
}

func TestZipkinHandler(t *testing.T) {
	valid := `[{"traceId":"5af7183fb1d4cf5f","id":"6b221d5bc9e6496c","name":"x","timestamp":1700000000000000,"duration":1}]`
	gz := func(s string) []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		_, _ = w.Write([]byte(s))
		_ = w.Close()
		return b.Bytes()
	}
	scenarios := map[string]struct {
		method, contentType, encoding string
		body                          []byte
		wantCode                      int
		wantBody                      string
		wantSpans                     int
	}{
		"json":             {http.MethodPost, "application/json", "", []byte(valid), http.StatusAccepted, "", 1},
		"no content type":  {http.MethodPost, "", "", []byte(valid), http.StatusAccepted, "", 1},
		"gzip":             {http.MethodPost, "application/json", "gzip", gz(valid), http.StatusAccepted, "", 1},
		"empty array":      {http.MethodPost, "application/json", "", []byte(`[]`), http.StatusAccepted, "", 0},
		"bad json":         {http.MethodPost, "application/json", "", []byte(`[{`), http.StatusBadRequest, "cannot decode Zipkin spans", 0},
		"missing id":       {http.MethodPost, "application/json", "", []byte(`[{"traceId":"5af7183fb1d4cf5f"}]`), http.StatusBadRequest, "valid span id required", 0},
		"bad gzip":         {http.MethodPost, "application/json", "gzip", []byte("nope"), http.StatusBadRequest, "", 0},
		"too large":        {http.MethodPost, "application/json", "", []byte(strings.Repeat(" ", 2048) + valid), http.StatusRequestEntityTooLarge, "exceeds 1024 bytes", 0},
		"protobuf":         {http.MethodPost, "application/x-protobuf", "", []byte{1}, http.StatusUnsupportedMediaType, "not supported", 0},
		"unknown encoding": {http.MethodPost, "application/json", "br", []byte(valid), http.StatusBadRequest, "unsupported Content-Encoding", 0},
		"get":              {http.MethodGet, "", "", nil, http.StatusMethodNotAllowed, "", 0},
		"too many spans":   {http.MethodPost, "application/json", "", []byte("[" + strings.Repeat(strings.Trim(valid, "[]")+",", 3) + strings.Trim(valid, "[]") + "]"), http.StatusRequestEntityTooLarge, "4 spans, the limit is 3", 0},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			c := &capture{}
			h := ZipkinHandler(c, NewMetrics(nil), Limits{MaxBodyBytes: 1024, MaxSpans: 3})
			req := httptest.NewRequest(sc.method, ZipkinPath, bytes.NewReader(sc.body))
			if sc.contentType != "" {
				req.Header.Set("Content-Type", sc.contentType)
			}
			if sc.encoding != "" {
				req.Header.Set("Content-Encoding", sc.encoding)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			require.Equal(t, sc.wantCode, rec.Code, rec.Body.String())
			require.Contains(t, rec.Body.String(), sc.wantBody)
			require.Len(t, c.spans(), sc.wantSpans)
		})
	}
}

func sampleTraces() ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "svc")
	span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	span.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	span.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, 8})
	span.SetName("op")
	span.SetKind(ptrace.SpanKindServer)
	span.SetStartTimestamp(pcommon.NewTimestampFromTime(time.Unix(1700000000, 0)))
	span.SetEndTimestamp(pcommon.NewTimestampFromTime(time.Unix(1700000000, 5e6)))
	span.Attributes().PutInt("n", 3)
	span.Status().SetCode(ptrace.StatusCodeError)
	return td
}

func TestOTLPHandlerJSONAndProtobufAgree(t *testing.T) {
	req := ptraceotlp.NewExportRequestFromTraces(sampleTraces())
	pb, err := req.MarshalProto()
	require.NoError(t, err)
	js, err := req.MarshalJSON()
	require.NoError(t, err)
	require.Contains(t, string(js), `"traceId":"0102030405060708090a0b0c0d0e0f10"`, "OTLP/JSON ids are hex")

	var got []ptrace.Traces
	for _, tc := range []struct {
		contentType string
		body        []byte
	}{{"application/x-protobuf", pb}, {"application/json", js}} {
		c := &capture{}
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, OTLPPath, bytes.NewReader(tc.body))
		r.Header.Set("Content-Type", tc.contentType)
		OTLPHandler(c, NewMetrics(nil), Limits{MaxBodyBytes: DefaultMaxBodyBytes}).ServeHTTP(rec, r)
		require.Equal(t, http.StatusOK, rec.Code)
		require.Equal(t, tc.contentType, rec.Header().Get("Content-Type"))
		require.Len(t, c.batches, 1)
		got = append(got, c.batches[0])
	}
	require.Equal(t, got[0], got[1])
	require.Equal(t, sampleTraces(), got[0])
}

func TestOTLPHandlerErrors(t *testing.T) {
	scenarios := map[string]struct {
		contentType string
		body        []byte
		wantCode    int
	}{
		"garbage protobuf": {"application/x-protobuf", []byte{0xff, 0xff, 0xff}, http.StatusBadRequest},
		"garbage json":     {"application/json", []byte(`{"resourceSpans":`), http.StatusBadRequest},
		"unsupported type": {"text/plain", []byte(`x`), http.StatusUnsupportedMediaType},
		"too large":        {"application/json", bytes.Repeat([]byte(" "), 100), http.StatusRequestEntityTooLarge},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			c := &capture{}
			rec := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodPost, OTLPPath, bytes.NewReader(sc.body))
			r.Header.Set("Content-Type", sc.contentType)
			OTLPHandler(c, NewMetrics(nil), Limits{MaxBodyBytes: 64}).ServeHTTP(rec, r)
			require.Equal(t, sc.wantCode, rec.Code, rec.Body.String())
			require.Empty(t, c.batches)
		})
	}
}

func FuzzParseZipkin(f *testing.F) {
	f.Add([]byte(`[{"traceId":"5af7183fb1d4cf5f","id":"6b221d5bc9e6496c","name":"x","kind":"CLIENT","timestamp":1,"duration":1,"localEndpoint":{"serviceName":"a","ipv4":"1.2.3.4"},"tags":{"error":"true","span.kind":"internal"},"annotations":[{"timestamp":1,"value":"v"}]}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"traceId":"463ac35c9f6413ad48485a3953bb6124","id":"1","parentId":"1"}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		td, err := ParseZipkin(b)
		if err == nil {
			// Whatever decodes must survive an OTLP round trip.
			req := ptraceotlp.NewExportRequestFromTraces(td)
			pb, err := req.MarshalProto()
			require.NoError(t, err)
			back := ptraceotlp.NewExportRequest()
			require.NoError(t, back.UnmarshalProto(pb))
			require.Equal(t, td.SpanCount(), back.Traces().SpanCount())
		}
	})
}

func FuzzOTLPJSON(f *testing.F) {
	js, _ := ptraceotlp.NewExportRequestFromTraces(sampleTraces()).MarshalJSON()
	f.Add(js)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","kind":"x","startTimeUnixNano":"-1"}]}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		c := &capture{}
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, OTLPPath, bytes.NewReader(b))
		r.Header.Set("Content-Type", "application/json")
		OTLPHandler(c, NewMetrics(nil), Limits{MaxBodyBytes: DefaultMaxBodyBytes}).ServeHTTP(rec, r)
		if rec.Code == http.StatusOK {
			require.Len(t, c.batches, 1)
		} else {
			require.Equal(t, http.StatusBadRequest, rec.Code)
			require.Empty(t, c.batches)
		}
	})
}
