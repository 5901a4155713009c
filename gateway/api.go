package gateway

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// corsHeaders are set on every /api/v1 response, as by the Pushgateway.
var corsHeaders = map[string]string{
	"Access-Control-Allow-Headers":  "Accept, Authorization, Content-Type, Origin",
	"Access-Control-Allow-Methods":  "GET, POST, DELETE, OPTIONS",
	"Access-Control-Allow-Origin":   "*",
	"Access-Control-Expose-Headers": "Date",
	"Cache-Control":                 "no-cache, no-store, must-revalidate",
}

func setCORS(w http.ResponseWriter) {
	for h, v := range corsHeaders {
		w.Header().Set(h, v)
	}
}

// apiFamily is the JSON form of one family of a group.
type apiFamily struct {
	Timestamp time.Time        `json:"time_stamp"`
	Type      string           `json:"type"`
	Help      string           `json:"help,omitempty"`
	Metrics   []map[string]any `json:"metrics"`
}

// apiGroups renders groups as the data of /api/v1/metrics.
func apiGroups(groups []GroupView) []map[string]any {
	res := make([]map[string]any, 0, len(groups))
	for i := range groups {
		g := &groups[i]
		obj := map[string]any{
			"labels":               map[string]string(g.Grouping),
			"last_push_successful": g.LastPushSuccessful(),
		}
		if g.TTLSource != "" {
			obj["ttl_seconds"] = g.TTL.Seconds()
			obj["stale"] = g.Stale
		}
		for _, f := range g.Families {
			obj[f.Family.GetName()] = apiFamily{
				Timestamp: f.Time,
				Type:      f.Family.GetType().String(),
				Help:      f.Family.GetHelp(),
				Metrics:   apiMetrics(f.Family),
			}
		}
		res = append(res, obj)
	}
	return res
}

// apiMetrics renders metrics with every number as a Go %v string.
func apiMetrics(mf *dto.MetricFamily) []map[string]any {
	out := make([]map[string]any, len(mf.Metric))
	for i, m := range mf.Metric {
		labels := make(map[string]string, len(m.Label))
		for _, lp := range m.Label {
			labels[lp.GetName()] = lp.GetValue()
		}
		obj := map[string]any{"labels": labels}
		switch mf.GetType() {
		case dto.MetricType_SUMMARY:
			q := map[string]string{}
			for _, qv := range m.GetSummary().GetQuantile() {
				q[fmt.Sprint(qv.GetQuantile())] = fmt.Sprint(qv.GetValue())
			}
			obj["quantiles"] = q
			obj["count"] = fmt.Sprint(m.GetSummary().GetSampleCount())
			obj["sum"] = fmt.Sprint(m.GetSummary().GetSampleSum())
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			h := m.GetHistogram()
			if len(h.GetPositiveSpan())+len(h.GetNegativeSpan()) > 0 {
				obj["buckets"] = nativeBuckets(h)
				if h.SampleCountFloat != nil {
					obj["count"] = fmt.Sprint(h.GetSampleCountFloat())
				} else {
					obj["count"] = fmt.Sprint(h.GetSampleCount())
				}
				obj["sum"] = fmt.Sprint(h.GetSampleSum())
				break
			}
			b := map[string]string{}
			for _, bk := range h.GetBucket() {
				if c := bk.GetCumulativeCountFloat(); c > 0 {
					b[fmt.Sprint(bk.GetUpperBound())] = fmt.Sprint(c)
				} else {
					b[fmt.Sprint(bk.GetUpperBound())] = fmt.Sprint(bk.GetCumulativeCount())
				}
			}
			obj["buckets"] = b
			if c := h.GetSampleCountFloat(); c > 0 {
				obj["count"] = fmt.Sprint(c)
			} else {
				obj["count"] = fmt.Sprint(h.GetSampleCount())
			}
			obj["sum"] = fmt.Sprint(h.GetSampleSum())
		default:
			var v float64
			switch {
			case m.Gauge != nil:
				v = m.GetGauge().GetValue()
			case m.Counter != nil:
				v = m.GetCounter().GetValue()
			case m.Untyped != nil:
				v = m.GetUntyped().GetValue()
			}
			obj["value"] = fmt.Sprint(v)
		}
		out[i] = obj
	}
	return out
}

// respondJSON writes the success envelope of the JSON API.
func respondJSON(w http.ResponseWriter, data any) {
	b, err := json.Marshal(struct {
		Status string `json:"status"`
		Data   any    `json:"data"`
	}{"success", data})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// Boundary rules of native histogram buckets in the Prometheus HTTP API.
const (
	openLeft   = 0 // (lower, upper]
	openRight  = 1 // [lower, upper)
	closedBoth = 3 // [lower, upper]
)

// nativeBuckets lists the non-empty buckets of a native histogram as the
// Prometheus API does: [boundary rule, "lower", "upper", "count"], negative
// buckets first, then the zero bucket, then the positive ones.
func nativeBuckets(h *dto.Histogram) [][]any {
	float := h.SampleCountFloat != nil || len(h.GetPositiveCount())+len(h.GetNegativeCount()) > 0
	count := func(v float64) string {
		if float {
			return fmt.Sprint(v)
		}
		return fmt.Sprint(uint64(v))
	}
	var out [][]any
	neg := spanBuckets(h.GetSchema(), h.GetNegativeSpan(), h.GetNegativeDelta(), h.GetNegativeCount())
	for i := len(neg) - 1; i >= 0; i-- {
		b := neg[i]
		out = append(out, []any{openRight, fmt.Sprint(-b.upper), fmt.Sprint(-b.lower), count(b.count)})
	}
	zero := h.GetZeroCountFloat()
	if h.ZeroCountFloat == nil {
		zero = float64(h.GetZeroCount())
	}
	if zero > 0 {
		zt := h.GetZeroThreshold()
		out = append(out, []any{closedBoth, fmt.Sprint(-zt), fmt.Sprint(zt), count(zero)})
	}
	for _, b := range spanBuckets(h.GetSchema(), h.GetPositiveSpan(), h.GetPositiveDelta(), h.GetPositiveCount()) {
		out = append(out, []any{openLeft, fmt.Sprint(b.lower), fmt.Sprint(b.upper), count(b.count)})
	}
	return out
}

type nativeBucket struct{ lower, upper, count float64 }

// spanBuckets expands spans with delta-encoded integer counts (or absolute
// float counts) into the non-empty buckets of one side, ascending.
func spanBuckets(schema int32, spans []*dto.BucketSpan, deltas []int64, floats []float64) []nativeBucket {
	var out []nativeBucket
	idx, n := int32(0), 0
	var abs int64
	for _, sp := range spans {
		idx += sp.GetOffset()
		for j := uint32(0); j < sp.GetLength(); j++ {
			var c float64
			switch {
			case n < len(floats):
				c = floats[n]
			case n < len(deltas):
				abs += deltas[n]
				c = float64(abs)
			}
			n++
			if c != 0 {
				lower, upper := bucketBounds(schema, idx)
				out = append(out, nativeBucket{lower, upper, c})
			}
			idx++
		}
	}
	return out
}

// bucketBounds returns the bounds of bucket idx of an exponential schema:
// (base^(idx-1), base^idx] with base = 2^(2^-schema).
func bucketBounds(schema int32, idx int32) (float64, float64) {
	upper := math.Exp2(float64(idx) * math.Exp2(-float64(schema)))
	lower := math.Exp2(float64(idx-1) * math.Exp2(-float64(schema)))
	return lower, upper
}
