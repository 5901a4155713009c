package traces

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"sort"
	"strings"

	"github.com/openzipkin/zipkin-go/model"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// ZipkinPath is where the Zipkin receiver takes spans.
const ZipkinPath = "/api/v2/spans"

// Attribute names the Zipkin mapping produces.
const (
	attrServiceName      = "service.name"
	attrPeerService      = "service.peer.name"
	attrLocalAddress     = "network.local.address"
	attrLocalPort        = "net.host.port"
	attrPeerAddress      = "network.peer.address"
	attrPeerPort         = "net.peer.port"
	attrAbsentStartTime  = "otel.zipkin.absentField.startTime"
	tagStatusCode        = "otel.status_code"
	tagStatusDescription = "otel.status_description"
	tagError             = "error"
	tagSpanKind          = "span.kind"
	tagScopeName         = "otel.scope.name"
	tagScopeVersion      = "otel.scope.version"
	tagLibraryName       = "otel.library.name"
	tagLibraryVersion    = "otel.library.version"
)

// resourceTagPrefixes name the tags that describe the resource rather than
// the span; they move to the resource.
var resourceTagPrefixes = []string{
	"telemetry.", "host.", "k8s.", "cloud.", "container.", "os.", "process.",
	"deployment.", "faas.", "device.", "browser.", "webengine.", "gcp.", "heroku.",
	"aws.ecs.", "aws.eks.", "aws.log.",
}

var resourceTags = map[string]bool{
	"service.namespace": true, "service.version": true, "service.instance.id": true,
}

func isResourceTag(key string) bool {
	if resourceTags[key] {
		return true
	}
	for _, p := range resourceTagPrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// ZipkinHandler serves POST /api/v2/spans with a Zipkin v2 JSON array, plain
// or compressed, and answers 202 once the spans are counted.
func ZipkinHandler(c Consumer, m *Metrics, l Limits) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "only POST is allowed", http.StatusMethodNotAllowed)
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-protobuf" {
			m.requests.WithLabelValues(ReceiverZipkin, "bad_request").Inc()
			http.Error(w, "Zipkin protobuf bodies are not supported: send Zipkin v2 JSON", http.StatusUnsupportedMediaType)
			return
		}
		body, err := readBody(r, l.MaxBodyBytes)
		if err == nil {
			var td ptrace.Traces
			if td, err = ParseZipkin(body); err == nil {
				err = l.checkSpans(td)
			}
			if err == nil {
				if err := m.consume(r.Context(), c, ReceiverZipkin, td); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				w.WriteHeader(http.StatusAccepted)
				return
			}
		}
		code, result := httpStatus(err)
		m.requests.WithLabelValues(ReceiverZipkin, result).Inc()
		http.Error(w, err.Error(), code)
	})
}

// ParseZipkin decodes a Zipkin v2 JSON array of spans into OTLP traces.
func ParseZipkin(body []byte) (ptrace.Traces, error) {
	var spans []model.SpanModel
	if err := json.Unmarshal(body, &spans); err != nil {
		return ptrace.Traces{}, fmt.Errorf("cannot decode Zipkin spans: %w", err)
	}
	return ZipkinToTraces(spans), nil
}

// ZipkinToTraces maps Zipkin spans to the OTLP model as the OpenTelemetry
// Collector's Zipkin receiver does: spans are grouped by local service, and
// consecutive spans of one service share a resource built from the first
// one's resource tags.
func ZipkinToTraces(spans []model.SpanModel) ptrace.Traces {
	td := ptrace.NewTraces()
	order := make([]int, len(spans))
	for i := range order {
		order[i] = i
	}
	serviceOf := func(i int) string {
		if ep := spans[i].LocalEndpoint; ep != nil {
			return ep.ServiceName
		}
		return ""
	}
	sort.SliceStable(order, func(a, b int) bool { return serviceOf(order[a]) < serviceOf(order[b]) })

	var (
		rs      ptrace.ResourceSpans
		scopes  map[[2]string]ptrace.ScopeSpans
		current string
		started bool
	)
	for _, i := range order {
		zs := &spans[i]
		service := serviceOf(i)
		if !started || service != current {
			started, current = true, service
			rs = td.ResourceSpans().AppendEmpty()
			scopes = map[[2]string]ptrace.ScopeSpans{}
			res := rs.Resource().Attributes()
			if service != "" {
				res.PutStr(attrServiceName, service)
			}
			for _, k := range sortedKeys(zs.Tags) {
				if isResourceTag(k) {
					res.PutStr(k, zs.Tags[k])
				}
			}
		}
		scope := [2]string{firstTag(zs.Tags, tagScopeName, tagLibraryName), firstTag(zs.Tags, tagScopeVersion, tagLibraryVersion)}
		ss, ok := scopes[scope]
		if !ok {
			ss = rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName(scope[0])
			ss.Scope().SetVersion(scope[1])
			scopes[scope] = ss
		}
		zipkinSpan(zs, ss.Spans().AppendEmpty())
	}
	return td
}

func firstTag(tags map[string]string, keys ...string) string {
	for _, k := range keys {
		if v, ok := tags[k]; ok {
			return v
		}
	}
	return ""
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// zipkinSpan fills span from one Zipkin span.
func zipkinSpan(zs *model.SpanModel, span ptrace.Span) {
	var tid [16]byte
	binary.BigEndian.PutUint64(tid[:8], zs.TraceID.High)
	binary.BigEndian.PutUint64(tid[8:], zs.TraceID.Low)
	span.SetTraceID(tid)
	span.SetSpanID(spanID(uint64(zs.ID)))
	if zs.ParentID != nil && *zs.ParentID != zs.ID {
		span.SetParentSpanID(spanID(uint64(*zs.ParentID)))
	}
	span.SetName(zs.Name)

	attrs := span.Attributes()
	tags := zs.Tags
	handled := map[string]bool{tagScopeName: true, tagScopeVersion: true, tagLibraryName: true, tagLibraryVersion: true}

	switch zs.Kind {
	case model.Client:
		span.SetKind(ptrace.SpanKindClient)
	case model.Server:
		span.SetKind(ptrace.SpanKindServer)
	case model.Producer:
		span.SetKind(ptrace.SpanKindProducer)
	case model.Consumer:
		span.SetKind(ptrace.SpanKindConsumer)
	default:
		if strings.EqualFold(tags[tagSpanKind], "internal") {
			span.SetKind(ptrace.SpanKindInternal)
			handled[tagSpanKind] = true
		}
	}

	if code, ok := tags[tagStatusCode]; ok {
		handled[tagStatusCode], handled[tagStatusDescription] = true, true
		switch strings.ToUpper(strings.TrimPrefix(strings.ToUpper(code), "STATUS_CODE_")) {
		case "OK":
			span.Status().SetCode(ptrace.StatusCodeOk)
		case "ERROR":
			span.Status().SetCode(ptrace.StatusCodeError)
		}
		span.Status().SetMessage(tags[tagStatusDescription])
	} else if v, ok := tags[tagError]; ok {
		span.Status().SetCode(ptrace.StatusCodeError)
		handled[tagError] = v == "true"
	}

	if zs.Timestamp.IsZero() {
		attrs.PutBool(attrAbsentStartTime, true)
		span.SetEndTimestamp(pcommon.Timestamp(zs.Duration.Nanoseconds()))
	} else {
		start := zs.Timestamp.UnixNano()
		span.SetStartTimestamp(pcommon.Timestamp(start))
		span.SetEndTimestamp(pcommon.Timestamp(start + zs.Duration.Nanoseconds()))
	}

	if ep := zs.LocalEndpoint; ep != nil {
		if ip := endpointIP(ep); ip != "" {
			attrs.PutStr(attrLocalAddress, ip)
		}
		if ep.Port != 0 {
			attrs.PutInt(attrLocalPort, int64(ep.Port))
		}
	}
	if ep := zs.RemoteEndpoint; ep != nil {
		if ep.ServiceName != "" {
			attrs.PutStr(attrPeerService, ep.ServiceName)
		}
		if ip := endpointIP(ep); ip != "" {
			attrs.PutStr(attrPeerAddress, ip)
		}
		if ep.Port != 0 {
			attrs.PutInt(attrPeerPort, int64(ep.Port))
		}
	}
	for _, k := range sortedKeys(tags) {
		if handled[k] || isResourceTag(k) {
			continue
		}
		attrs.PutStr(k, tags[k])
	}
	for _, a := range zs.Annotations {
		ev := span.Events().AppendEmpty()
		ev.SetName(a.Value)
		ev.SetTimestamp(pcommon.NewTimestampFromTime(a.Timestamp))
	}
}

func spanID(id uint64) pcommon.SpanID {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], id)
	return b
}

func endpointIP(ep *model.Endpoint) string {
	switch {
	case len(ep.IPv4) > 0:
		return ep.IPv4.String()
	case len(ep.IPv6) > 0:
		return ep.IPv6.String()
	}
	return ""
}
