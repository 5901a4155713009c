package gateway

import (
	"net/http"
	"strconv"
	"time"

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

// push instruments a push handler with the counter, duration and size, as
// promhttp's InstrumentHandlerCounter, InstrumentHandlerDuration and
// InstrumentHandlerRequestSize would, in one wrapper: pushes are the hot
// path, and the three wrappers cost one response delegator and one label map
// each per request.
func (m *httpMetrics) push(name string, h http.Handler) http.Handler {
	requests := m.requests.MustCurryWith(prometheus.Labels{"handler": name})
	type observers struct{ duration, size prometheus.Observer }
	byMethod := map[string]observers{}
	for _, method := range []string{http.MethodPut, http.MethodPost} {
		label := methodLabel(method)
		byMethod[method] = observers{m.pushDuration.WithLabelValues(label), m.pushSize.WithLabelValues(label)}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		method := methodLabel(r.Method)
		requests.WithLabelValues(codeLabel(sw.status), method).Inc()
		obs, ok := byMethod[r.Method]
		if !ok {
			obs = observers{m.pushDuration.WithLabelValues(method), m.pushSize.WithLabelValues(method)}
		}
		obs.duration.Observe(time.Since(start).Seconds())
		obs.size.Observe(float64(approximateRequestSize(r)))
	})
}

// statusWriter records the status code a handler answers with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap gives http.ResponseController the wrapped writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// codeLabel is the code label of a response status, as promhttp writes it:
// a handler that wrote nothing answered 200.
func codeLabel(status int) string {
	switch status {
	case 0, http.StatusOK:
		return "200"
	case http.StatusAccepted:
		return "202"
	case http.StatusBadRequest:
		return "400"
	}
	return strconv.Itoa(status)
}

// methodLabel is the method label of a request method, as promhttp writes
// it: a standard method, in upper or lower case, in lower case; any other
// "unknown".
func methodLabel(method string) string {
	for _, m := range standardMethods {
		if method == m[0] || method == m[1] {
			return m[1]
		}
	}
	return "unknown"
}

// standardMethods are the methods promhttp labels by name, in upper and
// lower case.
var standardMethods = [][2]string{
	{http.MethodPut, "put"}, {http.MethodPost, "post"}, {http.MethodGet, "get"}, {http.MethodHead, "head"},
	{http.MethodDelete, "delete"}, {http.MethodConnect, "connect"}, {http.MethodOptions, "options"},
	{"NOTIFY", "notify"}, {http.MethodTrace, "trace"}, {http.MethodPatch, "patch"},
}

// approximateRequestSize is the size promhttp's request size summaries
// observe: the lengths of the URL, method, protocol, headers and host, and
// the body's declared length.
func approximateRequestSize(r *http.Request) int {
	size := len(r.Method) + len(r.Proto) + len(r.Host)
	if r.URL != nil {
		size += len(r.URL.String())
	}
	for name, values := range r.Header {
		size += len(name)
		for _, v := range values {
			size += len(v)
		}
	}
	if r.ContentLength != -1 {
		size += int(r.ContentLength)
	}
	return size
}
