package forward

import (
	"context"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/promslog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/pushrelay/pushrelay/gateway"
)

// ScopeName is the instrumentation scope of every exported metric.
const ScopeName = "github.com/pushrelay/pushrelay"

// warnEvery rate-limits the warning logged while exports fail.
const warnEvery = time.Minute

// Exporter sends one resource's metrics; otlpmetricgrpc.Exporter is one.
type Exporter interface {
	Export(ctx context.Context, rm *metricdata.ResourceMetrics) error
	Shutdown(ctx context.Context) error
}

// Options configures a Forwarder.
type Options struct {
	// Groups returns the current push groups.
	Groups func() []gateway.GroupView
	// Gatherer gathers the span metrics and service graphs.
	Gatherer prometheus.Gatherer
	// Exporter sends the metrics.
	Exporter Exporter
	// Interval between rounds; a round may take at most this long.
	Interval time.Duration
	// Resource describes pushrelay itself, for the span metrics.
	Resource *resource.Resource
	// Registerer receives the forwarder's own metrics; nil registers none.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// Forwarder exports the state of pushrelay at every interval.
type Forwarder struct {
	opts    Options
	logger  *slog.Logger
	metrics *metrics

	mu       sync.Mutex
	starts   map[string]start
	lastWarn time.Time
}

// start remembers the start time of a cumulative series and its last value.
type start struct {
	at   time.Time
	last float64
}

// New returns a Forwarder; Run starts it.
func New(opts Options) *Forwarder {
	if opts.Logger == nil {
		opts.Logger = promslog.NewNopLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Resource == nil {
		opts.Resource = resource.Empty()
	}
	return &Forwarder{opts: opts, logger: opts.Logger, metrics: newMetrics(opts.Registerer), starts: map[string]start{}}
}

// Run exports one round per interval until ctx is done, then shuts the
// exporter down.
func (f *Forwarder) Run(ctx context.Context) {
	t := time.NewTicker(f.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = f.opts.Exporter.Shutdown(sctx)
			return
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, f.opts.Interval)
			_ = f.Round(rctx)
			cancel()
		}
	}
}

// Round converts the current state and exports it, resource by resource,
// stopping at the first failure: a collector that refused one resource
// would refuse the others too.
func (f *Forwarder) Round(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.opts.Now()
	seen := map[string]bool{}
	rms := f.collect(now, seen)
	points := 0
	for _, rm := range rms {
		if err := f.opts.Exporter.Export(ctx, rm); err != nil {
			f.metrics.exports.WithLabelValues("failure").Inc()
			if now.Sub(f.lastWarn) >= warnEvery {
				f.lastWarn = now
				f.logger.Warn("cannot forward metrics to the OTLP collector; retrying next interval", "err", err)
			}
			return err
		}
		points += countPoints(rm)
	}
	// Forget the start times of series that are gone.
	for k := range f.starts {
		if !seen[k] {
			delete(f.starts, k)
		}
	}
	f.metrics.exports.WithLabelValues("success").Inc()
	f.metrics.points.Add(float64(points))
	f.metrics.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
	return nil
}

// collect converts every group and the gathered span metrics.
func (f *Forwarder) collect(now time.Time, seen map[string]bool) []*metricdata.ResourceMetrics {
	var out []*metricdata.ResourceMetrics
	for _, g := range f.opts.Groups() {
		res := groupResource(g.Grouping)
		prefix := "group\xff" + gateway.Grouping(g.Grouping).Key() + "\xff"
		var ms []metricdata.Metrics
		for _, fv := range g.Families {
			if m, ok := f.convert(fv.Family, fv.Time, now, prefix, true, seen); ok {
				ms = append(ms, m)
			}
		}
		out = append(out, resourceMetrics(res, ms))
	}
	if f.opts.Gatherer != nil {
		mfs, err := f.opts.Gatherer.Gather()
		if err != nil {
			f.logger.Warn("cannot gather span metrics for forwarding", "err", err)
		}
		var ms []metricdata.Metrics
		for _, mf := range mfs {
			if m, ok := f.convert(mf, now, now, "spans\xff", false, seen); ok {
				ms = append(ms, m)
			}
		}
		if len(ms) > 0 {
			out = append(out, resourceMetrics(f.opts.Resource, ms))
		}
	}
	return out
}

func resourceMetrics(res *resource.Resource, ms []metricdata.Metrics) *metricdata.ResourceMetrics {
	return &metricdata.ResourceMetrics{
		Resource:     res,
		ScopeMetrics: []metricdata.ScopeMetrics{{Scope: instrumentation.Scope{Name: ScopeName}, Metrics: ms}},
	}
}

// groupResource maps grouping labels to resource attributes.
func groupResource(g map[string]string) *resource.Resource {
	attrs := make([]attribute.KeyValue, 0, len(g))
	for name, value := range g {
		switch name {
		case "job":
			attrs = append(attrs, attribute.String("service.name", value))
		case "instance":
			if value != "" {
				attrs = append(attrs, attribute.String("service.instance.id", value))
			}
		default:
			attrs = append(attrs, attribute.String(name, value))
		}
	}
	return resource.NewSchemaless(attrs...)
}

// pointAttributes returns a metric's labels, without job and instance when
// they are carried by the resource.
func pointAttributes(m *dto.Metric, dropGrouping bool) (attribute.Set, string) {
	kvs := make([]attribute.KeyValue, 0, len(m.Label))
	var key strings.Builder
	for _, lp := range m.Label {
		name := lp.GetName()
		if dropGrouping && (name == "job" || name == "instance") {
			continue
		}
		kvs = append(kvs, attribute.String(name, lp.GetValue()))
		key.WriteString(name)
		key.WriteByte(0xff)
		key.WriteString(lp.GetValue())
		key.WriteByte(0xff)
	}
	return attribute.NewSet(kvs...), key.String()
}

// startTime returns the start time of a cumulative series, moving it to now
// when the value went down.
func (f *Forwarder) startTime(key string, value float64, first, now time.Time, seen map[string]bool) time.Time {
	seen[key] = true
	s, ok := f.starts[key]
	switch {
	case !ok:
		s = start{at: first}
		if first.After(now) || first.IsZero() {
			s.at = now
		}
	case value < s.last:
		s.at = now
	}
	s.last = value
	f.starts[key] = s
	return s.at
}

// convert turns one family into an OTLP metric.
func (f *Forwarder) convert(mf *dto.MetricFamily, pushed, now time.Time, prefix string, dropGrouping bool, seen map[string]bool) (metricdata.Metrics, bool) {
	if len(mf.Metric) == 0 {
		return metricdata.Metrics{}, false
	}
	m := metricdata.Metrics{Name: mf.GetName(), Description: mf.GetHelp()}
	switch mf.GetType() {
	case dto.MetricType_COUNTER:
		sum := metricdata.Sum[float64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
		for _, dm := range mf.Metric {
			attrs, key := pointAttributes(dm, dropGrouping)
			v := dm.GetCounter().GetValue()
			st := f.startTime(prefix+mf.GetName()+"\xff"+key, v, pushed, now, seen)
			sum.DataPoints = append(sum.DataPoints, metricdata.DataPoint[float64]{Attributes: attrs, StartTime: st, Time: now, Value: v})
		}
		m.Data = sum
	case dto.MetricType_GAUGE, dto.MetricType_UNTYPED:
		gauge := metricdata.Gauge[float64]{}
		for _, dm := range mf.Metric {
			attrs, _ := pointAttributes(dm, dropGrouping)
			v := dm.GetGauge().GetValue()
			if dm.Untyped != nil {
				v = dm.GetUntyped().GetValue()
			}
			gauge.DataPoints = append(gauge.DataPoints, metricdata.DataPoint[float64]{Attributes: attrs, Time: now, Value: v})
		}
		m.Data = gauge
	case dto.MetricType_SUMMARY:
		summary := metricdata.Summary{}
		for _, dm := range mf.Metric {
			attrs, key := pointAttributes(dm, dropGrouping)
			s := dm.GetSummary()
			dp := metricdata.SummaryDataPoint{
				Attributes: attrs, Time: now, Count: s.GetSampleCount(), Sum: s.GetSampleSum(),
				StartTime: f.startTime(prefix+mf.GetName()+"\xff"+key, float64(s.GetSampleCount()), pushed, now, seen),
			}
			for _, q := range s.GetQuantile() {
				dp.QuantileValues = append(dp.QuantileValues, metricdata.QuantileValue{Quantile: q.GetQuantile(), Value: q.GetValue()})
			}
			summary.DataPoints = append(summary.DataPoints, dp)
		}
		m.Data = summary
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		hist := metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
		for _, dm := range mf.Metric {
			attrs, key := pointAttributes(dm, dropGrouping)
			dp := histogramPoint(dm.GetHistogram())
			dp.Attributes, dp.Time = attrs, now
			dp.StartTime = f.startTime(prefix+mf.GetName()+"\xff"+key, float64(dp.Count), pushed, now, seen)
			hist.DataPoints = append(hist.DataPoints, dp)
		}
		m.Data = hist
	default:
		return metricdata.Metrics{}, false
	}
	return m, true
}

// histogramPoint converts cumulative Prometheus buckets to OTLP bucket
// counts; the +Inf bucket is implied by the bounds.
func histogramPoint(h *dto.Histogram) metricdata.HistogramDataPoint[float64] {
	count := h.GetSampleCount()
	if h.SampleCountFloat != nil {
		count = uint64(math.Round(h.GetSampleCountFloat()))
	}
	dp := metricdata.HistogramDataPoint[float64]{Count: count, Sum: h.GetSampleSum()}
	buckets := append([]*dto.Bucket(nil), h.GetBucket()...)
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].GetUpperBound() < buckets[j].GetUpperBound() })
	var prev uint64
	for _, b := range buckets {
		cum := b.GetCumulativeCount()
		if b.CumulativeCountFloat != nil {
			cum = uint64(math.Round(b.GetCumulativeCountFloat()))
		}
		if math.IsInf(b.GetUpperBound(), +1) {
			continue
		}
		dp.Bounds = append(dp.Bounds, b.GetUpperBound())
		dp.BucketCounts = append(dp.BucketCounts, cum-min(cum, prev))
		prev = max(prev, cum)
	}
	dp.BucketCounts = append(dp.BucketCounts, count-min(count, prev))
	return dp
}

func countPoints(rm *metricdata.ResourceMetrics) int {
	n := 0
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[float64]:
				n += len(d.DataPoints)
			case metricdata.Gauge[float64]:
				n += len(d.DataPoints)
			case metricdata.Histogram[float64]:
				n += len(d.DataPoints)
			case metricdata.Summary:
				n += len(d.DataPoints)
			}
		}
	}
	return n
}
