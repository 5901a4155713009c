package traces

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
)

// GRPCTLSConfig reads the TLS settings of an exporter-toolkit web
// configuration file (--web.config.file) for the OTLP gRPC receiver. It
// returns nil when path is empty or the file enables no TLS.
func GRPCTLSConfig(path string) (*tls.Config, error) {
	if path == "" {
		return nil, nil
	}
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read web config file %q: %w", path, err)
	}
	c := &web.Config{TLSConfig: web.TLSConfig{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}}
	if err := yaml.UnmarshalStrict(content, c); err != nil {
		return nil, fmt.Errorf("invalid web config file %q: %w", path, err)
	}
	c.TLSConfig.SetDirectory(filepath.Dir(path))
	if !c.TLSConfig.IsEnabled() {
		return nil, nil
	}
	cfg, err := web.ConfigToTLSConfig(&c.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("invalid TLS settings in web config file %q: %w", path, err)
	}
	return cfg, nil
}
