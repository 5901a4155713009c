package spanmetrics

import (
	"math"
	"sort"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Service summaries are computed from snapshots of the per-service totals
// taken every snapshotEvery and kept for serviceWindow.
const (
	snapshotEvery = 5 * time.Second
	serviceWindow = time.Minute
)

// ServiceStats summarises the recent spans of one service.
type ServiceStats struct {
	Service string
	// Calls is the total of spans counted since they were first seen.
	Calls float64
	// CallsPerSecond and ErrorRatio cover the last minute (or less, right
	// after start).
	CallsPerSecond float64
	ErrorRatio     float64
	// P50 and P95 are latency quantiles over the same window, in seconds,
	// interpolated within histogram buckets; NaN without spans.
	P50, P95 float64
}

// serviceTotals are the cumulative counts of one service.
type serviceTotals struct {
	calls, errors float64
	buckets       []float64
}

type serviceSnapshot struct {
	at     time.Time
	totals map[string]*serviceTotals
}

// totals sums the series per service. Must be called holding p.mu.
func (p *Processor) totals() map[string]*serviceTotals {
	out := map[string]*serviceTotals{}
	serviceSlot, statusSlot := -1, -1
	for i, l := range p.labels {
		switch l {
		case labelService, labelServiceName:
			serviceSlot = i
		case labelStatusCode:
			statusSlot = i
		}
	}
	if serviceSlot < 0 {
		return out
	}
	for _, head := range p.series {
		for s := head; s != nil; s = s.next {
			name := s.values[serviceSlot]
			t := out[name]
			if t == nil {
				t = &serviceTotals{buckets: make([]float64, len(p.cfg.HistogramBuckets)+1)}
				out[name] = t
			}
			t.calls += s.calls
			if statusSlot >= 0 && s.values[statusSlot] == statusCodeName(ptrace.StatusCodeError) {
				t.errors += s.calls
			}
			for i, b := range s.buckets {
				t.buckets[i] += b
			}
		}
	}
	return out
}

// snapshot records the per-service totals at most every snapshotEvery.
// Must be called holding p.mu.
func (p *Processor) snapshot(now time.Time) {
	if n := len(p.history); n > 0 && now.Sub(p.history[n-1].at) < snapshotEvery {
		return
	}
	p.history = append(p.history, serviceSnapshot{at: now, totals: p.totals()})
	for len(p.history) > 1 && now.Sub(p.history[1].at) >= serviceWindow {
		p.history = p.history[1:]
	}
}

// Services returns the recent activity of every service, sorted by name.
func (p *Processor) Services() []ServiceStats {
	now := p.now()
	p.mu.Lock()
	current := p.totals()
	var past serviceSnapshot
	if len(p.history) > 0 {
		past = p.history[0]
	}
	p.mu.Unlock()

	var out []ServiceStats
	for name, cur := range current {
		st := ServiceStats{Service: name, Calls: cur.calls, P50: math.NaN(), P95: math.NaN()}
		delta := &serviceTotals{calls: cur.calls, errors: cur.errors, buckets: append([]float64(nil), cur.buckets...)}
		window := now.Sub(past.at).Seconds()
		if old := past.totals[name]; old != nil && old.calls <= cur.calls {
			delta.calls -= old.calls
			delta.errors -= old.errors
			for i := range delta.buckets {
				delta.buckets[i] -= old.buckets[i]
			}
		}
		if past.at.IsZero() || window <= 0 {
			window = 0
		}
		if window > 0 {
			st.CallsPerSecond = delta.calls / window
		}
		if delta.calls > 0 {
			st.ErrorRatio = delta.errors / delta.calls
			st.P50 = bucketQuantile(0.5, p.cfg.HistogramBuckets, delta.buckets) / p.latencyScale
			st.P95 = bucketQuantile(0.95, p.cfg.HistogramBuckets, delta.buckets) / p.latencyScale
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// bucketQuantile estimates a quantile from per-bucket counts the way
// PromQL's histogram_quantile does: linear interpolation inside the bucket,
// the highest finite bound for the +Inf bucket.
func bucketQuantile(q float64, bounds, counts []float64) float64 {
	total := 0.0
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	cum := 0.0
	for i, c := range counts {
		if cum+c >= rank && c > 0 {
			if i == len(bounds) {
				return bounds[len(bounds)-1]
			}
			lower := 0.0
			if i > 0 {
				lower = bounds[i-1]
			}
			return lower + (bounds[i]-lower)*(rank-cum)/c
		}
		cum += c
	}
	return bounds[len(bounds)-1]
}
