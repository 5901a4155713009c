package spanmetrics

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// testNow is the fixed clock of the golden tests.
var testNow = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

var agoRE = regexp.MustCompile(`\{\{ago (\d+)\}\}`)

// loadTraces reads an OTLP JSON file whose {{ago N}} placeholders stand for
// N milliseconds before now.
func loadTraces(t *testing.T, name string, now time.Time) ptrace.Traces {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	b = agoRE.ReplaceAllFunc(b, func(m []byte) []byte {
		ms, _ := strconv.Atoi(string(agoRE.FindSubmatch(m)[1]))
		return []byte(strconv.FormatInt(now.Add(-time.Duration(ms)*time.Millisecond).UnixNano(), 10))
	})
	var u ptrace.JSONUnmarshaler
	td, err := u.UnmarshalTraces(b)
	require.NoError(t, err)
	return td
}

// exposition renders everything reg gathers in the text format.
func exposition(t *testing.T, reg *prometheus.Registry, openMetrics bool) string {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var buf bytes.Buffer
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	if openMetrics {
		format = expfmt.NewFormat(expfmt.TypeOpenMetrics)
	}
	enc := expfmt.NewEncoder(&buf, format)
	for _, mf := range mfs {
		require.NoError(t, enc.Encode(mf))
	}
	if c, ok := enc.(expfmt.Closer); ok {
		require.NoError(t, c.Close())
	}
	return buf.String()
}

func requireGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create %s", path)
	require.Equal(t, string(want), got)
}

// clock is a settable fake clock.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func TestGolden(t *testing.T) {
	scenarios := map[string]struct {
		cfg         func(*Config)
		files       []string
		afterWait   bool
		openMetrics bool
	}{
		"windmill_default": {files: []string{"windmill.json"}},
		"windmill_dimensions": {
			cfg: func(c *Config) {
				c.Dimensions = []string{"workspace_id", "language", "tag", "script_path", "deployment.environment", "status_code"}
			},
			files: []string{"windmill.json"},
		},
		"windmill_otel": {
			cfg:   func(c *Config) { c.Naming = NamingOTel; c.Dimensions = []string{"workspace_id"} },
			files: []string{"windmill.json"},
		},
		"windmill_status_message_target_info_no_slack": {
			cfg: func(c *Config) {
				c.IntrinsicDimensions.StatusMessage = true
				c.EnableTargetInfo = true
				c.IngestionSlack = 0
				c.ServiceGraphs.Disabled = true
			},
			files: []string{"windmill.json"},
		},
		"windmill_exemplars_openmetrics": {
			cfg:         func(c *Config) { c.DisableSize = true; c.DisableCalls = true },
			files:       []string{"windmill.json"},
			openMetrics: true,
		},
		"rpc_service_graph_paired": {files: []string{"rpc.json"}},
		"rpc_service_graph_after_wait": {
			cfg:       func(c *Config) { c.ServiceGraphs.EnableVirtualNodeLabel = true },
			files:     []string{"rpc.json"},
			afterWait: true,
		},
		"rpc_filter_and_multiplier": {
			cfg: func(c *Config) {
				c.FilterPolicies = []FilterPolicy{
					{Exclude: &PolicyMatch{MatchType: "regex", Attributes: []MatchAttribute{{Key: "name", Value: "^SELECT"}}}},
					{Include: &PolicyMatch{MatchType: "strict", Attributes: []MatchAttribute{{Key: "resource.service.name", Value: "frontend"}}}},
				}
				c.SpanMultiplierKey = "sampling.ratio"
				c.ServiceGraphs.Disabled = true
			},
			files: []string{"rpc.json", "sampled.json"},
		},
		"max_series": {
			cfg:   func(c *Config) { c.MaxSeries = 3; c.ServiceGraphs.Disabled = true },
			files: []string{"rpc.json"},
		},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			if sc.cfg != nil {
				sc.cfg(&cfg)
			}
			clk := &clock{now: testNow}
			reg := prometheus.NewRegistry()
			p, err := New(cfg, Options{Registerer: reg, Now: clk.Now})
			require.NoError(t, err)
			reg.MustRegister(p)
			for _, f := range sc.files {
				require.NoError(t, p.ConsumeTraces(context.Background(), loadTraces(t, f, testNow)))
			}
			if sc.afterWait {
				clk.now = clk.now.Add(cfg.ServiceGraphs.Wait)
				p.sweep()
			}
			requireGolden(t, name+".golden", exposition(t, reg, sc.openMetrics))
		})
	}
}

func TestCallsAndCountAgree(t *testing.T) {
	p, err := New(DefaultConfig(), Options{Now: func() time.Time { return testNow }})
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		require.NoError(t, p.ConsumeTraces(context.Background(), loadTraces(t, "rpc.json", testNow)))
	}
	for _, head := range p.series {
		for s := head; s != nil; s = s.next {
			require.Equal(t, s.calls, s.count, "calls and _count of %v", s.values)
			require.Equal(t, 3.0, s.calls)
		}
	}
}

func TestLatencyBuckets(t *testing.T) {
	scenarios := map[string]struct {
		duration time.Duration
		wantLe   string
	}{
		"inclusive upper bound": {4 * time.Millisecond, "0.004"},
		"just above":            {4*time.Millisecond + time.Nanosecond, "0.008"},
		"zero":                  {0, "0.002"},
		"negative clamps to 0":  {-time.Second, "0.002"},
		"largest bound":         {16384 * time.Millisecond, "16.384"},
		"overflow":              {time.Minute, "+Inf"},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			p, err := New(DefaultConfig(), Options{Now: func() time.Time { return testNow }})
			require.NoError(t, err)
			td := ptrace.NewTraces()
			rs := td.ResourceSpans().AppendEmpty()
			rs.Resource().Attributes().PutStr("service.name", "svc")
			span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
			span.SetName("op")
			end := testNow.Add(-time.Second)
			span.SetStartTimestamp(pcommonTime(end.Add(-sc.duration)))
			span.SetEndTimestamp(pcommonTime(end))
			require.NoError(t, p.ConsumeTraces(context.Background(), td))
			reg := prometheus.NewRegistry()
			reg.MustRegister(p)
			out := exposition(t, reg, false)
			// The first bucket holding the span is the one named.
			require.Contains(t, out, fmt.Sprintf(`le="%s"} 1`, sc.wantLe))
			if sc.wantLe != "0.002" {
				require.Contains(t, out, `le="0.002"} 0`)
			}
		})
	}
}

func TestStaleSeriesAreRemoved(t *testing.T) {
	clk := &clock{now: testNow}
	cfg := DefaultConfig()
	p, err := New(cfg, Options{Now: clk.Now})
	require.NoError(t, err)
	require.NoError(t, p.ConsumeTraces(context.Background(), loadTraces(t, "windmill.json", testNow)))
	require.Positive(t, p.active)
	clk.now = clk.now.Add(cfg.StaleAfter - time.Second)
	p.sweep()
	require.Positive(t, p.active)
	clk.now = clk.now.Add(2 * time.Second)
	p.sweep()
	require.Zero(t, p.active)
	require.Empty(t, p.series)
}

func TestConfigErrors(t *testing.T) {
	scenarios := map[string]struct {
		cfg     func(*Config)
		wantErr string
	}{
		"naming":     {func(c *Config) { c.Naming = "jaeger" }, `invalid span metrics naming "jaeger"`},
		"max series": {func(c *Config) { c.MaxSeries = 0 }, "max_series must be positive"},
		"buckets":    {func(c *Config) { c.HistogramBuckets = []float64{1, 1} }, "duplicate bound 1"},
		"policy type": {func(c *Config) {
			c.FilterPolicies = []FilterPolicy{{Include: &PolicyMatch{MatchType: "glob", Attributes: []MatchAttribute{{Key: "name", Value: "x"}}}}}
		}, `invalid match_type "glob"`},
		"policy regexp": {func(c *Config) {
			c.FilterPolicies = []FilterPolicy{{Exclude: &PolicyMatch{MatchType: "regex", Attributes: []MatchAttribute{{Key: "name", Value: "("}}}}}
		}, "invalid regular expression"},
		"two kinds": {func(c *Config) {
			m := &PolicyMatch{MatchType: "strict", Attributes: []MatchAttribute{{Key: "name", Value: "x"}}}
			c.FilterPolicies = []FilterPolicy{{Include: m, Exclude: m}}
		}, "exactly one of"},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			sc.cfg(&cfg)
			_, err := New(cfg, Options{})
			require.ErrorContains(t, err, sc.wantErr)
		})
	}
}

// TestConsumeTracesAllocations checks that spans of existing series cost
// no allocations when service graphs, which keep edges, are off.
func TestConsumeTracesAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	cfg := DefaultConfig()
	cfg.Dimensions = []string{"workspace_id", "language"}
	cfg.ServiceGraphs.Disabled = true
	p, err := New(cfg, Options{Now: func() time.Time { return testNow }})
	require.NoError(t, err)
	td := loadTraces(t, "windmill.json", testNow)
	require.NoError(t, p.ConsumeTraces(context.Background(), td))
	allocs := testing.AllocsPerRun(100, func() {
		_ = p.ConsumeTraces(context.Background(), td)
	})
	require.Zero(t, allocs)
}

// TestSeriesKeysAreValueHashes checks that the hash ConsumeTraces derives
// for a span, partly from per-resource and precomputed value hashes, is the
// hash of the series' label values.
func TestSeriesKeysAreValueHashes(t *testing.T) {
	long := strings.Repeat("é", maxLabelValueLength)
	scenarios := map[string]func(*Config){
		"default":    nil,
		"dimensions": func(c *Config) { c.Dimensions = []string{"workspace_id", "language", "long", "deployment.environment"} },
		"otel":       func(c *Config) { c.Naming = NamingOTel; c.Dimensions = []string{"workspace_id", "long"} },
		"status message and target info": func(c *Config) {
			c.IntrinsicDimensions.StatusMessage = true
			c.EnableTargetInfo = true
			c.Dimensions = []string{"long"}
		},
	}
	for name, set := range scenarios {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			if set != nil {
				set(&cfg)
			}
			p, err := New(cfg, Options{Now: func() time.Time { return testNow }})
			require.NoError(t, err)
			td := loadTraces(t, "windmill.json", testNow)
			rs := td.ResourceSpans().At(0)
			rs.Resource().Attributes().PutStr("long", long)
			rs.ScopeSpans().At(0).Spans().At(0).SetName(long)
			require.NoError(t, p.ConsumeTraces(context.Background(), td))
			require.NotEmpty(t, p.series)
			for h, head := range p.series {
				for s := head; s != nil; s = s.next {
					require.Equal(t, hashValues(s.values), h, "%q", s.values)
					for _, v := range s.values {
						require.LessOrEqual(t, len(v), maxLabelValueLength)
					}
				}
			}
		})
	}
}

// TestConsumeTracesConcurrently checks that batches consumed at the same
// time, which are prepared outside the lock, count as if consumed one by
// one.
func TestConsumeTracesConcurrently(t *testing.T) {
	const workers, rounds = 4, 20
	newProcessor := func() *Processor {
		cfg := DefaultConfig()
		cfg.Dimensions = []string{"workspace_id", "language"}
		p, err := New(cfg, Options{Now: func() time.Time { return testNow }})
		require.NoError(t, err)
		return p
	}
	serial, concurrent := newProcessor(), newProcessor()
	var wg sync.WaitGroup
	for range workers {
		td := loadTraces(t, "windmill.json", testNow)
		wg.Go(func() {
			for range rounds {
				_ = concurrent.ConsumeTraces(context.Background(), td)
			}
		})
		for range rounds {
			require.NoError(t, serial.ConsumeTraces(context.Background(), td))
		}
	}
	wg.Wait()
	totals := func(p *Processor) map[string][3]float64 {
		out := map[string][3]float64{}
		for _, head := range p.series {
			for s := head; s != nil; s = s.next {
				out[strings.Join(s.values, "|")] = [3]float64{s.calls, s.count, s.size}
			}
		}
		return out
	}
	require.Equal(t, totals(serial), totals(concurrent))
	require.Equal(t, serial.active, concurrent.active)
}
