package gateway

import (
	"encoding/json"
	"fmt"
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
