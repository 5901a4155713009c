package forward

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	exports     *prometheus.CounterVec
	points      prometheus.Counter
	lastSuccess prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		exports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushrelay_forward_exports_total",
			Help: "Rounds of OTLP metric forwarding, by result (success or failure).",
		}, []string{"result"}),
		points: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushrelay_forward_points_exported_total",
			Help: "Data points forwarded to the OTLP collector.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushrelay_forward_last_success_timestamp_seconds",
			Help: "Unix time of the last round that the OTLP collector accepted.",
		}),
	}
	m.exports.WithLabelValues("success")
	m.exports.WithLabelValues("failure")
	if reg != nil {
		reg.MustRegister(m.exports, m.points, m.lastSuccess)
	}
	return m
}
