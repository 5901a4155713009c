// Package spanmetrics derives RED metrics from spans the way Tempo's
// metrics-generator does: traces_spanmetrics_calls_total,
// traces_spanmetrics_latency (a histogram in seconds) and
// traces_spanmetrics_size_total per service, span name, span kind and status
// code, plus traces_service_graph_* metrics for the edges between services.
//
// A Processor consumes batches of OTLP spans (ptrace.Traces) from any
// receiver and keeps cumulative series in memory; it is a
// prometheus.Collector, so the series are exposed on the same /metrics as
// the pushed groups. The "otel" naming profile emits instead what the
// OpenTelemetry Collector's spanmetrics connector and Jaeger's Monitor tab
// use: traces_span_metrics_calls_total and
// traces_span_metrics_duration_milliseconds with a service_name label.
//
// # Series lifecycle
//
// Counters are cumulative and never reset while the process lives. A series
// not updated for Config.StaleAfter (15 minutes by default) is removed. At
// most Config.MaxSeries label sets exist at once; spans that would create
// more are counted in pushrelay_spanmetrics_series_refused_total and
// pushrelay_spans_dropped_total{reason="max_series"}.
//
// # Caveats
//
// The calls counter and the histogram of one label set are updated under
// one lock, so _count and calls agree at every scrape. Exemplars (trace ids)
// are only visible to scrapers that ask for OpenMetrics.
package spanmetrics
