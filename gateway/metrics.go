package gateway

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// storeMetrics are the store's own metrics.
type storeMetrics struct {
	groups         prometheus.Gauge
	batchSize      prometheus.Histogram
	writeDuration  prometheus.Histogram
	commitDuration prometheus.Histogram
	expirations    *prometheus.CounterVec
}

func newStoreMetrics(reg prometheus.Registerer) *storeMetrics {
	m := &storeMetrics{
		groups: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushrelay_groups",
			Help: "Number of push groups held.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pushrelay_store_write_batch_size",
			Help:    "Number of writes applied and committed together.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9),
		}),
		writeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pushrelay_store_write_duration_seconds",
			Help:    "Time to check, apply and commit one batch of writes.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pushrelay_persistence_commit_duration_seconds",
			Help:    "Time to commit and sync one batch of writes to the persistence file.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	m.expirations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushrelay_group_expirations_total",
		Help: "Groups expired because their last successful push is older than their TTL, by action.",
	}, []string{"action"})
	for _, action := range []string{actionZero, actionDelete} {
		m.expirations.WithLabelValues(action)
	}
	if reg != nil {
		reg.MustRegister(m.groups, m.batchSize, m.writeDuration, m.commitDuration, m.expirations)
	}
	return m
}

// httpMetrics instrument the HTTP handlers like the Pushgateway's.
type httpMetrics struct {
	requests     *prometheus.CounterVec
	pushDuration *prometheus.SummaryVec
	pushSize     *prometheus.SummaryVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	objectives := map[float64]float64{0.1: 0.01, 0.5: 0.05, 0.9: 0.01}
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushrelay_http_requests_total",
			Help: "Total HTTP requests processed by pushrelay, excluding scrapes.",
		}, []string{"code", "handler", "method"}),
		pushDuration: prometheus.NewSummaryVec(prometheus.SummaryOpts{
			Name:       "pushrelay_http_push_duration_seconds",
			Help:       "HTTP request duration for pushes to pushrelay.",
			Objectives: objectives,
		}, []string{"method"}),
		pushSize: prometheus.NewSummaryVec(prometheus.SummaryOpts{
			Name:       "pushrelay_http_push_size_bytes",
			Help:       "HTTP request size for pushes to pushrelay.",
			Objectives: objectives,
		}, []string{"method"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.pushDuration, m.pushSize)
	}
	return m
}

// counted instruments h with the request counter under the handler name.
func (m *httpMetrics) counted(name string, h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(prometheus.Labels{"handler": name}), h)
}

// push instruments a push handler with the counter, duration and size.
func (m *httpMetrics) push(name string, h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerRequestSize(m.pushSize,
		promhttp.InstrumentHandlerDuration(m.pushDuration, m.counted(name, h)))
}
