package spanmetrics

import "github.com/prometheus/client_golang/prometheus"

// selfMetrics are the processor's own metrics.
type selfMetrics struct {
	dropped      *prometheus.CounterVec
	refused      prometheus.Counter
	series       prometheus.Gauge
	graphDropped prometheus.Counter
	graphExpired *prometheus.CounterVec
}

func newSelfMetrics(reg prometheus.Registerer) *selfMetrics {
	m := &selfMetrics{
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushrelay_spans_dropped_total",
			Help: "Spans not counted in span metrics, by reason.",
		}, []string{"reason"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushrelay_spanmetrics_series_refused_total",
			Help: "Span metric and service graph series not created because the series limit was reached.",
		}),
		series: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushrelay_spanmetrics_series",
			Help: "Active label sets of span metrics, target info and service graphs.",
		}),
		graphDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushrelay_service_graph_dropped_spans_total",
			Help: "Spans not paired into service graph edges because too many edges were pending.",
		}),
		graphExpired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushrelay_service_graph_expired_edges_total",
			Help: "Service graph edges that expired unpaired, by result (virtual_node or dropped).",
		}, []string{"result"}),
	}
	for _, r := range []string{dropSlack, dropFiltered, dropMaxSeries, dropInvalidUTF8, dropNoServiceName} {
		m.dropped.WithLabelValues(r)
	}
	for _, r := range []string{expiredVirtual, expiredDropped} {
		m.graphExpired.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.dropped, m.refused, m.series, m.graphDropped, m.graphExpired)
	}
	return m
}
