package spanmetrics

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// Naming selects the metric names and units.
type Naming string

const (
	// NamingTempo emits Tempo's traces_spanmetrics_* in seconds with a
	// service label.
	NamingTempo Naming = "tempo"
	// NamingOTel emits the OpenTelemetry Collector connector's
	// traces_span_metrics_* in milliseconds with a service_name label.
	NamingOTel Naming = "otel"
)

// Config configures span metrics and service graphs. DefaultConfig returns
// Tempo's defaults; the YAML names are those of Tempo's configuration.
type Config struct {
	// Naming is "tempo" (default) or "otel".
	Naming Naming `yaml:"naming"`
	// Dimensions are span or resource attribute names that become labels.
	Dimensions []string `yaml:"dimensions"`
	// IntrinsicDimensions switches the built-in labels on and off.
	IntrinsicDimensions IntrinsicDimensions `yaml:"intrinsic_dimensions"`
	// HistogramBuckets are the latency bounds in seconds (tempo) or
	// milliseconds (otel); empty means the naming profile's defaults.
	HistogramBuckets []float64 `yaml:"histogram_buckets"`
	// EnableTargetInfo adds job and instance labels from the resource and
	// the traces_target_info metric.
	EnableTargetInfo bool `yaml:"enable_target_info"`
	// SpanMultiplierKey names a double attribute whose inverse scales calls
	// and histogram counts (sampling compensation); empty disables.
	SpanMultiplierKey string `yaml:"span_multiplier_key"`
	// FilterPolicies decide which spans count.
	FilterPolicies []FilterPolicy `yaml:"filter_policies"`
	// IngestionSlack drops spans whose end time is further than this in the
	// past or future; 0 disables the window.
	IngestionSlack time.Duration `yaml:"ingestion_time_range_slack"`
	// MaxSeries bounds the number of label sets of span metrics and service
	// graphs together.
	MaxSeries int `yaml:"max_series"`
	// StaleAfter removes a series not updated for this long.
	StaleAfter time.Duration `yaml:"stale_duration"`
	// DisableCalls, DisableLatency and DisableSize switch off one metric
	// each.
	DisableCalls   bool `yaml:"disable_calls"`
	DisableLatency bool `yaml:"disable_latency"`
	DisableSize    bool `yaml:"disable_size"`
	// ServiceGraphs configures the service graph metrics.
	ServiceGraphs ServiceGraphConfig `yaml:"service_graphs"`
}

// IntrinsicDimensions switches the built-in labels.
type IntrinsicDimensions struct {
	Service       bool `yaml:"service"`
	SpanName      bool `yaml:"span_name"`
	SpanKind      bool `yaml:"span_kind"`
	StatusCode    bool `yaml:"status_code"`
	StatusMessage bool `yaml:"status_message"`
}

// ServiceGraphConfig configures service graph metrics.
type ServiceGraphConfig struct {
	// Disabled switches service graphs off.
	Disabled bool `yaml:"disabled"`
	// Wait is how long an unpaired edge waits for its other side.
	Wait time.Duration `yaml:"wait"`
	// MaxItems bounds the unpaired edges kept.
	MaxItems int `yaml:"max_items"`
	// HistogramBuckets are the latency bounds in seconds.
	HistogramBuckets []float64 `yaml:"histogram_buckets"`
	// Dimensions are attributes added as labels of both sides.
	Dimensions []string `yaml:"dimensions"`
	// EnableClientServerPrefix names dimension labels client_<dim> and
	// server_<dim>.
	EnableClientServerPrefix bool `yaml:"enable_client_server_prefix"`
	// EnableVirtualNodeLabel adds virtual_node="client"|"server" to virtual
	// edges.
	EnableVirtualNodeLabel bool `yaml:"enable_virtual_node_label"`
	// PeerAttributes name the peer of an unpaired span, first present wins.
	PeerAttributes []string `yaml:"peer_attributes"`
	// DatabaseNameAttributes mark a client span as a database call.
	DatabaseNameAttributes []string `yaml:"database_name_attributes"`
}

// DefaultConfig returns Tempo's defaults.
func DefaultConfig() Config {
	return Config{
		Naming: NamingTempo,
		IntrinsicDimensions: IntrinsicDimensions{
			Service: true, SpanName: true, SpanKind: true, StatusCode: true,
		},
		IngestionSlack: 30 * time.Second,
		MaxSeries:      10000,
		StaleAfter:     15 * time.Minute,
		ServiceGraphs: ServiceGraphConfig{
			Wait:                   10 * time.Second,
			MaxItems:               10000,
			HistogramBuckets:       []float64{0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8},
			PeerAttributes:         []string{"peer.service", "db.name", "db.system", "db.system.name"},
			DatabaseNameAttributes: []string{"db.namespace", "db.name", "db.system", "db.system.name"},
		},
	}
}

// DefaultBuckets returns the latency bounds of a naming profile: Tempo's
// 2 ms·2ⁿ in seconds, or the OpenTelemetry connector's in milliseconds.
func DefaultBuckets(n Naming) []float64 {
	if n == NamingOTel {
		return []float64{2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000}
	}
	b := make([]float64, 14)
	for i := range b {
		b[i] = 0.002 * float64(int(1)<<i)
	}
	return b
}

// Validate checks c and sorts its bucket bounds.
func (c *Config) Validate() error {
	switch c.Naming {
	case NamingTempo, NamingOTel:
	default:
		return fmt.Errorf("invalid span metrics naming %q: want tempo or otel", c.Naming)
	}
	if c.MaxSeries <= 0 {
		return errors.New("span metrics max_series must be positive")
	}
	if c.StaleAfter <= 0 {
		return errors.New("span metrics stale_duration must be positive")
	}
	if len(c.HistogramBuckets) == 0 {
		c.HistogramBuckets = DefaultBuckets(c.Naming)
	}
	if c.IngestionSlack < 0 {
		return errors.New("span metrics ingestion_time_range_slack must not be negative")
	}
	if err := checkBuckets(c.HistogramBuckets); err != nil {
		return fmt.Errorf("span metrics histogram_buckets: %w", err)
	}
	if err := checkBuckets(c.ServiceGraphs.HistogramBuckets); err != nil {
		return fmt.Errorf("service graph histogram_buckets: %w", err)
	}
	if !c.ServiceGraphs.Disabled && (c.ServiceGraphs.Wait <= 0 || c.ServiceGraphs.MaxItems <= 0) {
		return errors.New("service graph wait and max_items must be positive")
	}
	for i, p := range c.FilterPolicies {
		if err := p.compile(); err != nil {
			return fmt.Errorf("filter policy %d: %w", i+1, err)
		}
		c.FilterPolicies[i] = p
	}
	sort.Float64s(c.HistogramBuckets)
	sort.Float64s(c.ServiceGraphs.HistogramBuckets)
	return nil
}

func checkBuckets(b []float64) error {
	if len(b) == 0 {
		return errors.New("at least one bound is needed")
	}
	seen := map[float64]bool{}
	for _, v := range b {
		if seen[v] {
			return fmt.Errorf("duplicate bound %v", v)
		}
		seen[v] = true
	}
	return nil
}
