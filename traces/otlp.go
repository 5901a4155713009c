package traces

import (
	"context"
	"fmt"
	"mime"
	"net/http"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Content types of OTLP over HTTP.
const (
	contentTypeProtobuf = "application/x-protobuf"
	contentTypeJSON     = "application/json"
)

// OTLPPath is where OTLP over HTTP receives spans.
const OTLPPath = "/v1/traces"

// grpcService implements the OTLP TraceService.
type grpcService struct {
	ptraceotlp.UnimplementedGRPCServer
	consumer Consumer
	metrics  *Metrics
	limits   Limits
}

func (s *grpcService) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	if err := s.limits.checkSpans(req.Traces()); err != nil {
		s.metrics.requests.WithLabelValues(ReceiverOTLPGRPC, "too_large").Inc()
		return ptraceotlp.NewExportResponse(), status.Error(codes.ResourceExhausted, err.Error())
	}
	if err := s.metrics.consume(ctx, s.consumer, ReceiverOTLPGRPC, req.Traces()); err != nil {
		return ptraceotlp.NewExportResponse(), status.Error(codes.Internal, err.Error())
	}
	return ptraceotlp.NewExportResponse(), nil
}

// RegisterGRPC registers the OTLP TraceService on srv. Create srv with
// GRPCServerOptions to apply the body size limit.
func RegisterGRPC(srv *grpc.Server, c Consumer, m *Metrics, l Limits) {
	ptraceotlp.RegisterGRPCServer(srv, &grpcService{consumer: c, metrics: m, limits: l})
}

// grpcHandshakeTimeout bounds how long a new connection may take to
// complete its handshake (gRPC's default is 120 s).
const grpcHandshakeTimeout = 10 * time.Second

// GRPCServerOptions bound the size of a received message and the time a
// connection may take to start, and set the codec that decodes requests
// with pdata.
func GRPCServerOptions(maxBodyBytes int) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxBodyBytes), grpc.ConnectionTimeout(grpcHandshakeTimeout),
		grpc.ForceServerCodecV2(newGRPCCodec()),
	}
}

// OTLPHandler serves POST /v1/traces with protobuf or JSON bodies, plain or
// compressed, and answers like an OTLP/HTTP receiver: 200 with an
// ExportTraceServiceResponse in the request's format, or an error status
// with a google.rpc.Status body.
func OTLPHandler(c Consumer, m *Metrics, l Limits) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "only POST is allowed", http.StatusMethodNotAllowed)
			return
		}
		mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		isJSON := mediaType == contentTypeJSON
		if !isJSON && mediaType != contentTypeProtobuf {
			writeOTLPError(w, false, http.StatusUnsupportedMediaType, codes.InvalidArgument,
				"unsupported Content-Type "+r.Header.Get("Content-Type")+": want "+contentTypeProtobuf+" or "+contentTypeJSON)
			m.requests.WithLabelValues(ReceiverOTLPHTTP, "bad_request").Inc()
			return
		}
		body, err := readBody(r, l.MaxBodyBytes)
		if err == nil {
			req := ptraceotlp.NewExportRequest()
			if isJSON {
				err = req.UnmarshalJSON(body)
			} else {
				err = req.UnmarshalProto(body)
			}
			if err != nil {
				err = fmt.Errorf("cannot decode spans: %w", err)
			} else {
				err = l.checkSpans(req.Traces())
			}
			if err == nil {
				if err := m.consume(r.Context(), c, ReceiverOTLPHTTP, req.Traces()); err != nil {
					writeOTLPError(w, isJSON, http.StatusInternalServerError, codes.Internal, err.Error())
					return
				}
				writeOTLPResponse(w, isJSON)
				return
			}
		}
		code, result := httpStatus(err)
		m.requests.WithLabelValues(ReceiverOTLPHTTP, result).Inc()
		writeOTLPError(w, isJSON, code, codes.InvalidArgument, err.Error())
	})
}

func writeOTLPResponse(w http.ResponseWriter, isJSON bool) {
	resp := ptraceotlp.NewExportResponse()
	var b []byte
	var err error
	if isJSON {
		b, err = resp.MarshalJSON()
		w.Header().Set("Content-Type", contentTypeJSON)
	} else {
		b, err = resp.MarshalProto()
		w.Header().Set("Content-Type", contentTypeProtobuf)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func writeOTLPError(w http.ResponseWriter, isJSON bool, httpCode int, code codes.Code, msg string) {
	st := &rpcstatus.Status{Code: int32(code), Message: msg}
	var b []byte
	if isJSON {
		b, _ = protojson.Marshal(st)
		w.Header().Set("Content-Type", contentTypeJSON)
	} else {
		b, _ = proto.Marshal(st)
		w.Header().Set("Content-Type", contentTypeProtobuf)
	}
	w.WriteHeader(httpCode)
	_, _ = w.Write(b)
}
