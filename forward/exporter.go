package forward

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
)

// ExporterConfig configures the OTLP gRPC exporter.
type ExporterConfig struct {
	// Endpoint is host:port or a URL; empty leaves it to the
	// OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT variables.
	Endpoint string
	// Headers are sent with every request, as k=v,k2=v2.
	Headers string
	// CAFile verifies the collector's certificate.
	CAFile string
	// Insecure uses plaintext gRPC.
	Insecure bool
	// Interval is the forwarding interval; retries stop after half of it.
	Interval time.Duration
	// Timeout bounds one request.
	Timeout time.Duration
}

// NewExporter returns the OTLP gRPC exporter, or nil when forwarding is off:
// no endpoint and no standard endpoint variable. Settings left empty come
// from the OTEL_EXPORTER_OTLP_* variables.
func NewExporter(c ExporterConfig) (Exporter, error) {
	if c.Endpoint == "" && os.Getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		return nil, nil
	}
	if c.Interval <= 0 {
		return nil, fmt.Errorf("forwarding interval must be positive, got %s", c.Interval)
	}
	var opts []otlpmetricgrpc.Option
	switch {
	case strings.Contains(c.Endpoint, "://"):
		opts = append(opts, otlpmetricgrpc.WithEndpointURL(c.Endpoint))
	case c.Endpoint != "":
		opts = append(opts, otlpmetricgrpc.WithEndpoint(c.Endpoint))
	}
	if c.Insecure {
		opts = append(opts, otlpmetricgrpc.WithInsecure())
	}
	if c.Headers != "" {
		h, err := ParseHeaders(c.Headers)
		if err != nil {
			return nil, err
		}
		opts = append(opts, otlpmetricgrpc.WithHeaders(h))
	}
	if c.CAFile != "" {
		creds, err := credentials.NewClientTLSFromFile(c.CAFile, "")
		if err != nil {
			return nil, fmt.Errorf("cannot load CA file %q: %w", c.CAFile, err)
		}
		opts = append(opts, otlpmetricgrpc.WithTLSCredentials(creds))
	}
	// Reconnect at least once per interval: gRPC's default backoff grows to
	// two minutes, which would delay forwarding long after the collector
	// is back.
	reconnect := grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: c.Timeout}
	reconnect.Backoff.MaxDelay = c.Interval
	opts = append(opts,
		otlpmetricgrpc.WithDialOption(grpc.WithConnectParams(reconnect)),
		otlpmetricgrpc.WithTimeout(c.Timeout),
		otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{
			Enabled: true, InitialInterval: time.Second, MaxInterval: 5 * time.Second,
			MaxElapsedTime: c.Interval / 2,
		}),
	)
	// New only prepares a lazy connection: a collector that is down does
	// not delay start-up.
	exp, err := otlpmetricgrpc.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot create OTLP exporter: %w", err)
	}
	return exp, nil
}

// ParseHeaders parses k=v,k2=v2.
func ParseHeaders(s string) (map[string]string, error) {
	h := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("invalid header entry %q: want key=value", part)
		}
		h[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return h, nil
}
