package traces

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Receiver names, used as the receiver label of the span counters.
const (
	ReceiverOTLPGRPC = "otlp_grpc"
	ReceiverOTLPHTTP = "otlp_http"
	ReceiverZipkin   = "zipkin"
)

// DefaultMaxBodyBytes bounds a decoded request body.
const DefaultMaxBodyBytes = 16 << 20

// Limits bound one export request.
type Limits struct {
	// MaxBodyBytes bounds the body on the wire and decompressed.
	MaxBodyBytes int64
	// MaxSpans bounds the spans of one request; 0 means no limit.
	MaxSpans int
}

// errTooManySpans marks a request with more spans than allowed.
var errTooManySpans = errors.New("too many spans in one request")

// checkSpans enforces Limits.MaxSpans.
func (l Limits) checkSpans(td ptrace.Traces) error {
	if n := td.SpanCount(); l.MaxSpans > 0 && n > l.MaxSpans {
		return fmt.Errorf("%w: %d spans, the limit is %d (--traces.max-spans-per-request)", errTooManySpans, n, l.MaxSpans)
	}
	return nil
}

// Consumer receives span batches. It must not retain td after it returns.
type Consumer interface {
	ConsumeTraces(ctx context.Context, td ptrace.Traces) error
}

// Metrics counts what the receivers take in.
type Metrics struct {
	received *prometheus.CounterVec
	requests *prometheus.CounterVec
}

// NewMetrics registers the receivers' counters with reg (which may be nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushrelay_spans_received_total",
			Help: "Spans received, by receiver.",
		}, []string{"receiver"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushrelay_trace_requests_total",
			Help: "Trace export requests, by receiver and result (ok, bad_request, too_large, error).",
		}, []string{"receiver", "result"}),
	}
	for _, r := range []string{ReceiverOTLPGRPC, ReceiverOTLPHTTP, ReceiverZipkin} {
		m.received.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.received, m.requests)
	}
	return m
}

func (m *Metrics) consume(ctx context.Context, c Consumer, receiver string, td ptrace.Traces) error {
	n := td.SpanCount()
	if err := c.ConsumeTraces(ctx, td); err != nil {
		m.requests.WithLabelValues(receiver, "error").Inc()
		return err
	}
	m.received.WithLabelValues(receiver).Add(float64(n))
	m.requests.WithLabelValues(receiver, "ok").Inc()
	return nil
}

// errTooLarge marks a body over the size limit.
var errTooLarge = errors.New("request body too large")

// readBody reads a request body, undoing gzip, deflate or zlib
// Content-Encoding, and enforces limit on both the wire and the decoded
// size.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	var body io.Reader = http.MaxBytesReader(nil, r.Body, limit)
	switch strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))) {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, bodyError(err)
		}
		defer zr.Close()
		body = zr
	case "deflate", "zlib":
		zr, err := zlib.NewReader(body)
		if err != nil {
			return nil, bodyError(err)
		}
		defer zr.Close()
		body = zr
	default:
		return nil, fmt.Errorf("unsupported Content-Encoding %q", r.Header.Get("Content-Encoding"))
	}
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, bodyError(err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: decoded body exceeds %d bytes", errTooLarge, limit)
	}
	return b, nil
}

func bodyError(err error) error {
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return fmt.Errorf("%w: body exceeds %d bytes", errTooLarge, maxErr.Limit)
	}
	return err
}

// httpStatus maps a body error to its status code.
func httpStatus(err error) (int, string) {
	if errors.Is(err, errTooLarge) || errors.Is(err, errTooManySpans) {
		return http.StatusRequestEntityTooLarge, "too_large"
	}
	return http.StatusBadRequest, "bad_request"
}
