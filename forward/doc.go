// Package forward exports everything pushrelay holds — every push group and
// all span metrics and service graphs — to an OpenTelemetry collector over
// OTLP at a fixed interval.
//
// Each round converts the current state to OTLP metrics with cumulative
// temporality: counters become monotonic sums, gauges and untyped metrics
// gauges, histograms histograms with the same bounds, summaries summaries.
// Every push group is its own resource: its job label becomes service.name,
// its instance label service.instance.id, its other grouping labels resource
// attributes; data points keep every label of the series but job and
// instance. Span metrics share one resource named after pushrelay. Metric
// names are exported unchanged and without units, so a Prometheus backend
// that ingests the stream shows the names users see on /metrics.
//
// The start time of a cumulative point is the time the series was first
// exported (or its family's push time, if earlier); it moves only when the
// value goes down, which marks a reset.
//
// # Caveats
//
// The forwarder never slows pushes or scrapes: it reads immutable snapshots,
// runs in its own goroutine, bounds every round by the interval, drops a
// round instead of queueing it, and keeps no backlog, so its memory does not
// grow while the collector is away. A counter whose name lacks the _total
// suffix gains it in a Prometheus backend, as OTLP translation adds it to
// every monotonic sum.
package forward
