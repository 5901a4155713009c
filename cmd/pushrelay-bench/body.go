package main

import (
	"fmt"
	"strings"
)

// samplesPerBody is the number of samples in every push body.
const samplesPerBody = 40

// histogramBuckets are the upper bounds of the pushed histogram (10 buckets
// plus +Inf).
var histogramBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// pushBody returns a text-format push body of samplesPerBody samples: 10
// counter samples, 17 gauge samples and a histogram with 10 buckets (13
// samples), in the shape a batch job pushes. variant changes the values so
// that consecutive pushes are not byte-identical.
func pushBody(variant int) []byte {
	v := float64(variant)
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }

	w("# HELP bench_job_runs_total Job runs by result.\n# TYPE bench_job_runs_total counter\n")
	for i, r := range []string{"success", "failure", "skipped"} {
		w("bench_job_runs_total{result=%q} %g\n", r, 1000+v*7+float64(i))
	}
	w("# HELP bench_records_processed_total Records processed by stage.\n# TYPE bench_records_processed_total counter\n")
	for i, s := range []string{"extract", "transform", "load"} {
		w("bench_records_processed_total{stage=%q} %g\n", s, 1e6+v*1234+float64(i))
	}
	w("# HELP bench_bytes_written_total Bytes written.\n# TYPE bench_bytes_written_total counter\n")
	w("bench_bytes_written_total %g\n", 1.5e9+v*4096)
	w("# HELP bench_retries_total Retries by reason.\n# TYPE bench_retries_total counter\n")
	for i, r := range []string{"timeout", "throttled", "error"} {
		w("bench_retries_total{reason=%q} %g\n", r, v+float64(i))
	}

	w("# HELP bench_last_success_timestamp_seconds Unix time of the last successful run.\n# TYPE bench_last_success_timestamp_seconds gauge\n")
	w("bench_last_success_timestamp_seconds %g\n", 1.7e9+v)
	w("# HELP bench_last_run_duration_seconds Duration of the last run.\n# TYPE bench_last_run_duration_seconds gauge\n")
	w("bench_last_run_duration_seconds %g\n", 12.5+v/10)
	w("# HELP bench_queue_depth Items waiting per queue.\n# TYPE bench_queue_depth gauge\n")
	for i := range 8 {
		w("bench_queue_depth{queue=\"q%d\"} %g\n", i, v+float64(i*3))
	}
	w("# HELP bench_workers Workers by state.\n# TYPE bench_workers gauge\n")
	w("bench_workers{state=\"busy\"} %g\nbench_workers{state=\"idle\"} %g\n", 3+v, 5-v/100)
	w("# HELP bench_memory_bytes Memory use by kind.\n# TYPE bench_memory_bytes gauge\n")
	for i, k := range []string{"heap", "stack", "rss"} {
		w("bench_memory_bytes{kind=%q} %g\n", k, 2.5e8+v*1024+float64(i<<20))
	}
	w("# HELP bench_up Whether the job ran.\n# TYPE bench_up gauge\nbench_up 1\n")
	w("# HELP bench_info Build information.\n# TYPE bench_info gauge\nbench_info{commit=\"4f2a9c1\",version=\"1.2.3\"} 1\n")

	w("# HELP bench_task_duration_seconds Task durations.\n# TYPE bench_task_duration_seconds histogram\n")
	cum := 0.0
	for i, le := range histogramBuckets {
		cum += float64(10*i) + v
		w("bench_task_duration_seconds_bucket{le=\"%g\"} %g\n", le, cum)
	}
	cum += v + 3
	w("bench_task_duration_seconds_bucket{le=\"+Inf\"} %g\n", cum)
	w("bench_task_duration_seconds_sum %g\n", cum*0.37)
	w("bench_task_duration_seconds_count %g\n", cum)
	return []byte(sb.String())
}

// countSamples counts the lines of an exposition that are neither empty nor
// comments.
func countSamples(b []byte) int {
	n := 0
	start := 0
	for i := 0; i <= len(b); i++ {
		if i == len(b) || b[i] == '\n' {
			if i > start && b[start] != '#' {
				n++
			}
			start = i + 1
		}
	}
	return n
}
