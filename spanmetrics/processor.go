package spanmetrics

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/promslog"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Metric names of the two naming profiles.
const (
	tempoCalls      = "traces_spanmetrics_calls_total"
	tempoLatency    = "traces_spanmetrics_latency"
	tempoSize       = "traces_spanmetrics_size_total"
	otelCalls       = "traces_span_metrics_calls_total"
	otelLatency     = "traces_span_metrics_duration_milliseconds"
	targetInfoName  = "traces_target_info"
	exemplarTraceID = "traceID"
)

// Reasons for dropped spans.
const (
	dropSlack         = "outside_metrics_ingestion_slack"
	dropFiltered      = "filtered"
	dropMaxSeries     = "max_series"
	dropInvalidUTF8   = "invalid_utf8"
	dropNoServiceName = "no_service_name"
)

// sweepInterval is how often stale series and expired edges are removed.
const sweepInterval = time.Second

// Processor turns spans into span metrics and service graph metrics. It is
// safe for concurrent use and is a prometheus.Collector of its series.
type Processor struct {
	cfg    Config
	now    func() time.Time
	logger *slog.Logger
	filter *spanFilter

	callsName, latencyName string
	// labels are the label names of span metric series, in slot order.
	labels []string
	// dimSlot is the first slot of the custom dimensions.
	dimSlot int
	// latencyScale converts seconds to the histogram's unit.
	latencyScale float64
	// keys numbers the span attributes looked up by key; dimKeys are the
	// numbers of the custom dimensions.
	keys    keyIndex
	dimKeys []int
	// kindHashes and statusHashes are the hashes of the span kind and
	// status code label values.
	kindHashes   [6]uint64
	statusHashes [3]uint64

	descs map[string]*prometheus.Desc

	mu         sync.Mutex
	series     map[uint64]*spanSeries
	targetInfo map[uint64]*infoSeries
	graph      *serviceGraph
	active     int
	history    []serviceSnapshot

	// batches holds the scratch space of ConsumeTraces calls.
	batches sync.Pool

	self *selfMetrics
}

// spanSeries holds the calls, latency and size of one label set.
type spanSeries struct {
	values     []string
	next       *spanSeries
	calls      float64
	buckets    []float64
	count, sum float64
	size       float64
	exemplars  []exemplar
	updated    time.Time
}

// exemplar is the last observation of a bucket. It holds no pointers, so
// that recording one needs no write barrier and the garbage collector does
// not scan a series' exemplars.
type exemplar struct {
	traceID pcommon.TraceID
	value   float64
	// at is the time of the observation in Unix nanoseconds.
	at int64
}

// infoSeries is one traces_target_info series.
type infoSeries struct {
	names, values []string
	updated       time.Time
}

// Options are the dependencies of a Processor.
type Options struct {
	// Registerer receives the self-metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// New validates cfg and returns a Processor.
func New(cfg Config, opts Options) (*Processor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Processor{
		cfg:        cfg,
		now:        opts.Now,
		logger:     opts.Logger,
		filter:     newSpanFilter(cfg.FilterPolicies),
		series:     map[uint64]*spanSeries{},
		targetInfo: map[uint64]*infoSeries{},
		self:       newSelfMetrics(opts.Registerer),
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.logger == nil {
		p.logger = promslog.NewNopLogger()
	}
	serviceLabel := labelService
	p.callsName, p.latencyName, p.latencyScale = tempoCalls, tempoLatency, 1
	if cfg.Naming == NamingOTel {
		serviceLabel = labelServiceName
		p.callsName, p.latencyName, p.latencyScale = otelCalls, otelLatency, 1000
	}
	in := cfg.IntrinsicDimensions
	for _, l := range []struct {
		on   bool
		name string
	}{{in.Service, serviceLabel}, {in.SpanName, labelSpanName}, {in.SpanKind, labelSpanKind}, {in.StatusCode, labelStatusCode}, {in.StatusMessage, labelStatusMessage}} {
		if l.on {
			p.labels = append(p.labels, l.name)
		}
	}
	p.dimSlot = len(p.labels)
	for _, d := range cfg.Dimensions {
		p.labels = append(p.labels, dimensionLabel(d))
	}
	p.dimKeys = p.keys.addAll(cfg.Dimensions)
	for k := range p.kindHashes {
		p.kindHashes[k] = valueHash(spanKindName(ptrace.SpanKind(k)))
	}
	for c := range p.statusHashes {
		p.statusHashes[c] = valueHash(statusCodeName(ptrace.StatusCode(c)))
	}
	if cfg.EnableTargetInfo {
		p.labels = append(p.labels, labelJob, labelInstance)
	}
	p.graph = newServiceGraph(&p.cfg.ServiceGraphs, p)
	// Service summaries count from start until a window has passed.
	p.history = []serviceSnapshot{{at: p.now(), totals: map[string]*serviceTotals{}}}
	p.descs = map[string]*prometheus.Desc{}
	for name, help := range p.helps() {
		p.descs[name] = prometheus.NewDesc(name, help, nil, nil)
	}
	return p, nil
}

// helps returns the help string of every family the processor can emit.
func (p *Processor) helps() map[string]string {
	h := map[string]string{}
	if !p.cfg.DisableCalls {
		h[p.callsName] = "Number of spans, by service, span name, span kind and status code."
	}
	if !p.cfg.DisableLatency {
		h[p.latencyName] = "Duration of spans."
	}
	if !p.cfg.DisableSize && p.cfg.Naming == NamingTempo {
		h[tempoSize] = "Size of spans in bytes, as OTLP protobuf Span messages."
	}
	if p.cfg.EnableTargetInfo {
		h[targetInfoName] = "Resource attributes of the services that sent spans."
	}
	if !p.cfg.ServiceGraphs.Disabled {
		for name, help := range graphHelps {
			h[name] = help
		}
	}
	return h
}

// FamilyTypes returns the name and type of every family the processor can
// emit, so that pushes cannot redefine them.
func (p *Processor) FamilyTypes() map[string]dto.MetricType {
	types := map[string]dto.MetricType{}
	for name := range p.helps() {
		switch name {
		case p.latencyName, graphServerSeconds, graphClientSeconds:
			types[name] = dto.MetricType_HISTOGRAM
		case targetInfoName:
			types[name] = dto.MetricType_GAUGE
		default:
			types[name] = dto.MetricType_COUNTER
		}
	}
	return types
}

// ConsumeTraces counts a batch of spans. It does not retain td.
//
// It derives the label values, hash, latency and size of every span before
// it takes the processor's lock, and holds the lock only to find the series
// and add to them.
func (p *Processor) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	now := p.now()
	b := p.getBatch()
	defer p.putBatch(b)
	p.prepare(b, td, now)
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range b.resources {
		r := &b.resources[i]
		if p.cfg.EnableTargetInfo {
			p.recordTargetInfo(r.attrs, r.job, r.instance, now)
		}
		for j := r.first; j < r.end; j++ {
			rec := &b.spans[j]
			if !rec.ok {
				continue
			}
			p.observe(rec, b.labelValues(j), now)
			if rec.graph.ok {
				p.graph.consume(&rec.graph, now)
			}
		}
	}
	p.self.series.Set(float64(p.active))
	return nil
}

// batch is the scratch space of one ConsumeTraces call: what was derived
// from the spans before the lock was taken. It refers to strings of the
// spans, so it is cleared before it goes back to the pool.
type batch struct {
	resources []resourceRecord
	spans     []spanRecord
	// values holds the label values of span i at [i*width, (i+1)*width).
	values []string
	width  int
	// res holds the labels of the current resource.
	res resourceLabels
	// attrs holds the looked-up attributes of the current span.
	attrs *spanAttrs
}

// resourceRecord is one resource of a batch and the range of its spans in
// batch.spans.
type resourceRecord struct {
	attrs         pcommon.Map
	job, instance string
	first, end    int
}

// resourceLabels are the label values a resource gives all its spans,
// truncated, with their hashes.
type resourceLabels struct {
	service, job, instance             string
	serviceHash, jobHash, instanceHash uint64
	dims                               []resourceDim
}

// resourceDim is a custom dimension looked up on a resource.
type resourceDim struct {
	value   string
	present bool
	hash    uint64
}

// set fills l from a resource's service and attributes.
func (l *resourceLabels) set(p *Processor, res pcommon.Map, service, job, instance string) {
	l.service, l.job, l.instance = truncate(service, maxLabelValueLength), truncate(job, maxLabelValueLength), truncate(instance, maxLabelValueLength)
	l.serviceHash, l.jobHash, l.instanceHash = valueHash(l.service), valueHash(l.job), valueHash(l.instance)
	for d, name := range p.cfg.Dimensions {
		rd := &l.dims[d]
		rd.value, rd.present = lookup(name, res)
		rd.value = truncate(rd.value, maxLabelValueLength)
		rd.hash = valueHash(rd.value)
	}
}

// spanRecord is one span, ready to be added to its series if ok: the span
// passed the ingestion window and the filters.
type spanRecord struct {
	ok      bool
	hash    uint64
	mult    float64
	latency float64
	size    float64
	traceID pcommon.TraceID
	graph   graphSpan
}

func (b *batch) labelValues(i int) []string {
	return b.values[i*b.width : (i+1)*b.width : (i+1)*b.width]
}

// getBatch takes an empty batch from the pool.
func (p *Processor) getBatch() *batch {
	if b, ok := p.batches.Get().(*batch); ok {
		return b
	}
	return &batch{width: len(p.labels), res: resourceLabels{dims: make([]resourceDim, len(p.cfg.Dimensions))}, attrs: newSpanAttrs(&p.keys)}
}

// putBatch clears b, so that it keeps no span data alive, and returns it
// to the pool.
func (p *Processor) putBatch(b *batch) {
	clear(b.resources)
	clear(b.spans)
	clear(b.values)
	clear(b.attrs.values)
	clear(b.res.dims)
	b.res = resourceLabels{dims: b.res.dims}
	b.resources, b.spans, b.values = b.resources[:0], b.spans[:0], b.values[:0]
	p.batches.Put(b)
}

// prepare fills b with the spans of td. It needs no lock: it reads only td
// and the configuration, and counts drops in self-metrics.
//
// It walks td backwards: the spans decoded last are the ones still in the
// CPU caches. The order in which spans reach the series does not change.
func (p *Processor) prepare(b *batch, td ptrace.Traces, now time.Time) {
	graphOn := !p.cfg.ServiceGraphs.Disabled
	withSize := !p.cfg.DisableSize && p.cfg.Naming == NamingTempo
	rss := td.ResourceSpans()
	total := 0
	for i := 0; i < rss.Len(); i++ {
		r := resourceRecord{attrs: rss.At(i).Resource().Attributes(), first: total}
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			total += sss.At(j).Spans().Len()
		}
		r.end = total
		b.resources = append(b.resources, r)
	}
	b.spans = slices.Grow(b.spans, total)[:total]
	b.values = slices.Grow(b.values, total*b.width)[:total*b.width]
	for i := rss.Len() - 1; i >= 0; i-- {
		r := &b.resources[i]
		res := r.attrs
		service, _ := lookup("service.name", res)
		if p.cfg.EnableTargetInfo {
			r.job, r.instance = p.jobInstance(res, service)
		}
		b.res.set(p, res, service, r.job, r.instance)
		var gres graphResource
		if graphOn && service != "" {
			gres = p.graph.resource(res)
		}
		n := r.end
		sss := rss.At(i).ScopeSpans()
		for j := sss.Len() - 1; j >= 0; j-- {
			spans := sss.At(j).Spans()
			for k := spans.Len() - 1; k >= 0; k-- {
				n--
				rec := &b.spans[n]
				span := spans.At(k)
				if !p.accept(res, span, service, now) {
					*rec = spanRecord{}
					continue
				}
				*rec = spanRecord{ok: true, mult: p.multiplier(res, span), latency: latency(span) * p.latencyScale, traceID: span.TraceID()}
				b.attrs.scan(span.Attributes(), withSize)
				rec.hash = p.labelValuesOf(b.labelValues(n), &b.res, b.attrs, span)
				if withSize {
					rec.size = float64(spanSizeWithoutAttributes(span) + b.attrs.size)
				}
				if graphOn && service != "" {
					p.graph.prepare(&rec.graph, &gres, b.attrs, span, service, rec.mult)
				}
			}
		}
	}
}

// accept applies the ingestion window, the filter policies and the naming
// profile's requirements, counting what it drops.
func (p *Processor) accept(res pcommon.Map, span ptrace.Span, service string, now time.Time) bool {
	if slack := p.cfg.IngestionSlack; slack > 0 {
		end := span.EndTimestamp().AsTime()
		if end.Before(now.Add(-slack)) || end.After(now.Add(slack)) {
			p.self.dropped.WithLabelValues(dropSlack).Inc()
			return false
		}
	}
	if !p.filter.empty() && !p.filter.keep(res, span) {
		p.self.dropped.WithLabelValues(dropFiltered).Inc()
		return false
	}
	if p.cfg.Naming == NamingOTel && service == "" {
		p.self.dropped.WithLabelValues(dropNoServiceName).Inc()
		return false
	}
	return true
}

// multiplier returns the sampling compensation of a span: 1/value of the
// configured double attribute (span first, then resource), else 1.
func (p *Processor) multiplier(res pcommon.Map, span ptrace.Span) float64 {
	key := p.cfg.SpanMultiplierKey
	if key == "" {
		return 1
	}
	for _, m := range []pcommon.Map{span.Attributes(), res} {
		if v, ok := m.Get(key); ok && v.Type() == pcommon.ValueTypeDouble && v.Double() > 0 {
			return 1 / v.Double()
		}
	}
	return 1
}

// latency returns the duration of a span in seconds, never negative.
func latency(span ptrace.Span) float64 {
	start, end := span.StartTimestamp(), span.EndTimestamp()
	if end <= start {
		return 0
	}
	return float64(end-start) / 1e9
}

// labelValuesOf writes the label values of a span, in slot order, to v,
// and returns hashValues(v). res holds the labels of the span's resource,
// attrs the span's looked-up attributes.
func (p *Processor) labelValuesOf(v []string, res *resourceLabels, attrs *spanAttrs, span ptrace.Span) uint64 {
	h := uint64(len(v))
	slot := 0
	set := func(value string, hash uint64) {
		v[slot] = value
		h = mixHash(h, hash)
		slot++
	}
	in := p.cfg.IntrinsicDimensions
	if in.Service {
		set(res.service, res.serviceHash)
	}
	if in.SpanName {
		name := truncate(span.Name(), maxLabelValueLength)
		set(name, valueHash(name))
	}
	if in.SpanKind {
		k := span.Kind()
		set(spanKindName(k), p.kindHash(k))
	}
	if in.StatusCode {
		c := span.Status().Code()
		set(statusCodeName(c), p.statusHash(c))
	}
	if in.StatusMessage {
		msg := truncate(span.Status().Message(), maxLabelValueLength)
		set(msg, valueHash(msg))
	}
	// Tempo looks dimensions up on the resource first, the OTel connector
	// on the span first.
	resFirst := p.cfg.Naming != NamingOTel
	for d, key := range p.dimKeys {
		rd := &res.dims[d]
		if resFirst && rd.present {
			set(rd.value, rd.hash)
		} else if val, ok := attrs.get(key); ok {
			val = truncate(val, maxLabelValueLength)
			set(val, valueHash(val))
		} else {
			set(rd.value, rd.hash)
		}
	}
	if p.cfg.EnableTargetInfo {
		set(res.job, res.jobHash)
		set(res.instance, res.instanceHash)
	}
	return h
}

// kindHash returns valueHash(spanKindName(k)), precomputed for the kinds
// of the OTLP enum.
func (p *Processor) kindHash(k ptrace.SpanKind) uint64 {
	if k >= 0 && int(k) < len(p.kindHashes) {
		return p.kindHashes[k]
	}
	return valueHash(spanKindName(k))
}

// statusHash returns valueHash(statusCodeName(c)), precomputed for the
// codes of the OTLP enum.
func (p *Processor) statusHash(c ptrace.StatusCode) uint64 {
	if c >= 0 && int(c) < len(p.statusHashes) {
		return p.statusHashes[c]
	}
	return valueHash(statusCodeName(c))
}

// observe adds one span, with label values v, to its span-metric series.
// Must be called holding p.mu.
func (p *Processor) observe(rec *spanRecord, v []string, now time.Time) {
	s := p.lookupSeries(rec.hash, v, now)
	if s == nil {
		return
	}
	mult, lat := rec.mult, rec.latency
	s.calls += mult
	if !p.cfg.DisableLatency {
		i := sort.SearchFloat64s(p.cfg.HistogramBuckets, lat)
		s.buckets[i] += mult
		s.count += mult
		s.sum += lat * mult
		if !rec.traceID.IsEmpty() {
			s.exemplars[i] = exemplar{traceID: rec.traceID, value: lat, at: now.UnixNano()}
		}
	}
	s.size += rec.size
	s.updated = now
}

// lookupSeries finds or creates the series of the label values v, whose
// hash is h. It returns nil, counting why, when the series cannot be
// created. Must be called holding p.mu.
func (p *Processor) lookupSeries(h uint64, v []string, now time.Time) *spanSeries {
	head := p.series[h]
	for s := head; s != nil; s = s.next {
		if equalValues(s.values, v) {
			return s
		}
	}
	if !p.admitSeries(v) {
		return nil
	}
	s := &spanSeries{values: cloneValues(v), next: head, updated: now}
	if !p.cfg.DisableLatency {
		s.buckets = make([]float64, len(p.cfg.HistogramBuckets)+1)
		s.exemplars = make([]exemplar, len(p.cfg.HistogramBuckets)+1)
	}
	p.series[h] = s
	return s
}

// admitSeries decides whether a new series with label values v may be
// created: its values must be UTF-8 and there must be room under the
// series limit. It counts what it refuses. Must be called holding p.mu.
func (p *Processor) admitSeries(v []string) bool {
	for _, val := range v {
		if !utf8.ValidString(val) {
			p.self.dropped.WithLabelValues(dropInvalidUTF8).Inc()
			return false
		}
	}
	return p.reserveSeries()
}

// reserveSeries takes one place under the series limit, counting a refusal.
// Must be called holding p.mu.
func (p *Processor) reserveSeries() bool {
	if p.active >= p.cfg.MaxSeries {
		p.self.refused.Inc()
		p.self.dropped.WithLabelValues(dropMaxSeries).Inc()
		return false
	}
	p.active++
	return true
}

// hashValues hashes a list of label values: the valueHash of every value,
// combined in order by mixHash.
func hashValues(v []string) uint64 {
	h := uint64(len(v))
	for _, s := range v {
		h = mixHash(h, valueHash(s))
	}
	return h
}

// valueHash hashes one label value.
func valueHash(s string) uint64 { return xxhash.Sum64String(s) }

// mixHash adds the hash of the next label value to h.
func mixHash(h, valueHash uint64) uint64 { return (h ^ valueHash) * 0x9e3779b97f4a7c15 }

// cloneValues copies label values into one allocation, so that a series
// keeps no strings of the spans alive and its values share cache lines
// when they are compared.
func cloneValues(v []string) []string {
	n := 0
	for _, s := range v {
		n += len(s)
	}
	var sb strings.Builder
	sb.Grow(n)
	for _, s := range v {
		sb.WriteString(s)
	}
	all := sb.String()
	out := make([]string, len(v))
	for i, s := range v {
		out[i], all = all[:len(s)], all[len(s):]
	}
	return out
}

func equalValues(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// jobInstance derives the job and instance labels of a resource.
func (p *Processor) jobInstance(res pcommon.Map, service string) (string, string) {
	job := service
	if ns, ok := lookup("service.namespace", res); ok && ns != "" && service != "" {
		job = ns + "/" + service
	}
	instance, _ := lookup("service.instance.id", res)
	return job, instance
}

// recordTargetInfo keeps the traces_target_info series of a resource. Must
// be called holding p.mu.
func (p *Processor) recordTargetInfo(res pcommon.Map, job, instance string, now time.Time) {
	if job == "" && instance == "" {
		return
	}
	type pair struct{ name, value string }
	var pairs []pair
	res.Range(func(k string, v pcommon.Value) bool {
		switch k {
		case "service.name", "service.namespace", "service.instance.id":
			return true
		}
		if k == "" || k[0] >= '0' && k[0] <= '9' {
			return true
		}
		val := truncate(stringify(v), maxLabelValueLength)
		if val == "" {
			return true
		}
		pairs = append(pairs, pair{dimensionLabel(k), val})
		return true
	})
	if len(pairs) == 0 {
		return
	}
	if job != "" {
		pairs = append(pairs, pair{labelJob, job})
	}
	if instance != "" {
		pairs = append(pairs, pair{labelInstance, instance})
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].name < pairs[j].name })
	names := make([]string, len(pairs))
	values := make([]string, len(pairs))
	flat := make([]string, 0, 2*len(pairs))
	for i, pr := range pairs {
		names[i], values[i] = pr.name, pr.value
		flat = append(flat, pr.name, pr.value)
	}
	h := hashValues(flat)
	if s := p.targetInfo[h]; s != nil {
		s.updated = now
		return
	}
	for _, val := range values {
		if !utf8.ValidString(val) {
			return
		}
	}
	if !p.reserveSeries() {
		return
	}
	p.targetInfo[h] = &infoSeries{names: names, values: values, updated: now}
}

// Run removes stale series and expires unpaired service graph edges until
// ctx is done.
func (p *Processor) Run(ctx context.Context) {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.sweep()
		}
	}
}

// sweep removes series not updated for StaleAfter and expires edges that
// waited long enough.
func (p *Processor) sweep() {
	now := p.now()
	cutoff := now.Add(-p.cfg.StaleAfter)
	p.mu.Lock()
	defer p.mu.Unlock()
	for h, head := range p.series {
		var kept *spanSeries
		for s := head; s != nil; {
			next := s.next
			if s.updated.Before(cutoff) {
				p.active--
			} else {
				s.next = kept
				kept = s
			}
			s = next
		}
		if kept == nil {
			delete(p.series, h)
		} else {
			p.series[h] = kept
		}
	}
	for h, s := range p.targetInfo {
		if s.updated.Before(cutoff) {
			delete(p.targetInfo, h)
			p.active--
		}
	}
	p.graph.expire(now)
	p.graph.removeStale(cutoff)
	p.snapshot(now)
	p.self.series.Set(float64(p.active))
}

// Describe sends nothing: the processor is an unchecked collector whose
// label sets vary with the spans.
func (p *Processor) Describe(chan<- *prometheus.Desc) {}

// Collect sends every series.
func (p *Processor) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, head := range p.series {
		for s := head; s != nil; s = s.next {
			labels := labelPairs(p.labels, s.values)
			if !p.cfg.DisableCalls {
				ch <- constMetric(p.descs[p.callsName], &dto.Metric{Label: labels, Counter: &dto.Counter{Value: proto.Float64(s.calls)}})
			}
			if !p.cfg.DisableLatency {
				ch <- constMetric(p.descs[p.latencyName], &dto.Metric{Label: labels, Histogram: histogram(p.cfg.HistogramBuckets, s.buckets, s.count, s.sum, s.exemplars)})
			}
			if !p.cfg.DisableSize && p.cfg.Naming == NamingTempo {
				ch <- constMetric(p.descs[tempoSize], &dto.Metric{Label: labels, Counter: &dto.Counter{Value: proto.Float64(s.size)}})
			}
		}
	}
	for _, s := range p.targetInfo {
		ch <- constMetric(p.descs[targetInfoName], &dto.Metric{Label: labelPairs(s.names, s.values), Gauge: &dto.Gauge{Value: proto.Float64(1)}})
	}
	p.graph.collect(ch)
}

// labelPairs returns the non-empty labels, sorted by name.
func labelPairs(names, values []string) []*dto.LabelPair {
	pairs := make([]*dto.LabelPair, 0, len(names))
	for i, n := range names {
		if values[i] != "" {
			pairs = append(pairs, &dto.LabelPair{Name: proto.String(n), Value: proto.String(values[i])})
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].GetName() < pairs[j].GetName() })
	return pairs
}

// histogram renders per-bucket counts as a cumulative dto histogram. Counts
// are whole numbers unless a span multiplier made them fractional.
func histogram(bounds, buckets []float64, count, sum float64, exemplars []exemplar) *dto.Histogram {
	h := &dto.Histogram{SampleSum: proto.Float64(sum)}
	whole := count == math.Trunc(count)
	for _, b := range buckets {
		whole = whole && b == math.Trunc(b)
	}
	if whole {
		h.SampleCount = proto.Uint64(uint64(count))
	} else {
		h.SampleCountFloat = proto.Float64(count)
	}
	cum := 0.0
	for i, bound := range bounds {
		cum += buckets[i]
		b := &dto.Bucket{UpperBound: proto.Float64(bound)}
		if whole {
			b.CumulativeCount = proto.Uint64(uint64(cum))
		} else {
			b.CumulativeCountFloat = proto.Float64(cum)
		}
		if i < len(exemplars) && !exemplars[i].traceID.IsEmpty() {
			b.Exemplar = exemplarProto(exemplars[i])
		}
		h.Bucket = append(h.Bucket, b)
	}
	inf := &dto.Bucket{UpperBound: proto.Float64(math.Inf(1))}
	if whole {
		inf.CumulativeCount = proto.Uint64(uint64(count))
	} else {
		inf.CumulativeCountFloat = proto.Float64(count)
	}
	if last := len(bounds); last < len(exemplars) && !exemplars[last].traceID.IsEmpty() {
		inf.Exemplar = exemplarProto(exemplars[last])
	}
	h.Bucket = append(h.Bucket, inf)
	return h
}

func exemplarProto(e exemplar) *dto.Exemplar {
	return &dto.Exemplar{
		Label:     []*dto.LabelPair{{Name: proto.String(exemplarTraceID), Value: proto.String(e.traceID.String())}},
		Value:     proto.Float64(e.value),
		Timestamp: timestamppb.New(time.Unix(0, e.at)),
	}
}

// readyMetric is a prometheus.Metric whose dto is built by the processor.
type readyMetric struct {
	desc *prometheus.Desc
	m    *dto.Metric
}

func (r readyMetric) Desc() *prometheus.Desc { return r.desc }

// Write hands out the dto's parts; the processor never changes them after
// building them.
func (r readyMetric) Write(out *dto.Metric) error {
	out.Label, out.Counter, out.Gauge, out.Histogram = r.m.Label, r.m.Counter, r.m.Gauge, r.m.Histogram
	return nil
}

func constMetric(desc *prometheus.Desc, m *dto.Metric) prometheus.Metric {
	if desc == nil {
		panic(fmt.Sprintf("BUG: no descriptor for metric %v", m))
	}
	return readyMetric{desc: desc, m: m}
}
