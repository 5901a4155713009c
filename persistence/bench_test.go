package persistence_test

import (
	"fmt"
	"path/filepath"
	"sort"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/pushrelay/pushrelay/persistence"
)

// benchGroup returns the stored form of one group holding the 40-sample
// body of cmd/pushrelay-bench (12 families: 10 counter samples, 17 gauge
// samples, a histogram with 10 buckets), with the grouping labels and the
// empty-instance handling the gateway applies.
func benchGroup(i int) *persistence.Group {
	instance := fmt.Sprintf("g%06d", i)
	labels := func(extra ...string) []*dto.LabelPair {
		pairs := []*dto.LabelPair{
			{Name: proto.String("instance"), Value: proto.String(instance)},
			{Name: proto.String("job"), Value: proto.String("pushrelay_bench")},
		}
		for j := 0; j+1 < len(extra); j += 2 {
			pairs = append(pairs, &dto.LabelPair{Name: proto.String(extra[j]), Value: proto.String(extra[j+1])})
		}
		sort.Slice(pairs, func(a, b int) bool { return pairs[a].GetName() < pairs[b].GetName() })
		return pairs
	}
	marshal := func(m *dto.Metric) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		return b
	}
	counter := func(v float64, l ...string) []byte {
		return marshal(&dto.Metric{Label: labels(l...), Counter: &dto.Counter{Value: proto.Float64(v)}})
	}
	gauge := func(v float64, l ...string) []byte {
		return marshal(&dto.Metric{Label: labels(l...), Gauge: &dto.Gauge{Value: proto.Float64(v)}})
	}
	now := time.Now().UnixNano()
	fam := func(name string, typ dto.MetricType, metrics ...[]byte) persistence.Family {
		return persistence.Family{Name: name, Help: "Help for " + name + ".", HasHelp: true, Type: int32(typ), Time: now, Metrics: metrics}
	}
	h := &dto.Histogram{SampleCount: proto.Uint64(453), SampleSum: proto.Float64(167.6)}
	cum := uint64(0)
	for j, le := range []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5} {
		cum += uint64(10 * j)
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(le), CumulativeCount: proto.Uint64(cum)})
	}
	var queues [][]byte
	for q := range 8 {
		queues = append(queues, gauge(float64(q*3), "queue", fmt.Sprintf("q%d", q)))
	}
	return &persistence.Group{
		Labels:   []persistence.Label{{Name: "instance", Value: instance}, {Name: "job", Value: "pushrelay_bench"}},
		PushTime: now,
		Families: []persistence.Family{
			fam("bench_bytes_written_total", dto.MetricType_COUNTER, counter(1.5e9)),
			fam("bench_info", dto.MetricType_GAUGE, gauge(1, "commit", "4f2a9c1", "version", "1.2.3")),
			fam("bench_job_runs_total", dto.MetricType_COUNTER, counter(1000, "result", "failure"), counter(1001, "result", "skipped"), counter(1002, "result", "success")),
			fam("bench_last_run_duration_seconds", dto.MetricType_GAUGE, gauge(12.5)),
			fam("bench_last_success_timestamp_seconds", dto.MetricType_GAUGE, gauge(1.7e9)),
			fam("bench_memory_bytes", dto.MetricType_GAUGE, gauge(2.5e8, "kind", "heap"), gauge(2.6e8, "kind", "rss"), gauge(2.7e8, "kind", "stack")),
			fam("bench_queue_depth", dto.MetricType_GAUGE, queues...),
			fam("bench_records_processed_total", dto.MetricType_COUNTER, counter(1e6, "stage", "extract"), counter(1e6+1, "stage", "load"), counter(1e6+2, "stage", "transform")),
			fam("bench_retries_total", dto.MetricType_COUNTER, counter(1, "reason", "error"), counter(2, "reason", "throttled"), counter(3, "reason", "timeout")),
			fam("bench_task_duration_seconds", dto.MetricType_HISTOGRAM, marshal(&dto.Metric{Label: labels(), Histogram: h})),
			fam("bench_up", dto.MetricType_GAUGE, gauge(1)),
			fam("bench_workers", dto.MetricType_GAUGE, gauge(3, "state", "busy"), gauge(5, "state", "idle")),
		},
	}
}

func benchKey(i int) string {
	return fmt.Sprintf("instance\xffg%06d\xffjob\xffpushrelay_bench", i)
}

// BenchmarkEncodeGroup encodes one 40-sample group record.
func BenchmarkEncodeGroup(b *testing.B) {
	g := benchGroup(1)
	buf := persistence.EncodeGroup(nil, g)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = persistence.EncodeGroup(buf[:0], g)
	}
}

// BenchmarkDecodeGroup decodes one 40-sample group record, as a restart
// does for every group.
func BenchmarkDecodeGroup(b *testing.B) {
	rec := persistence.EncodeGroup(nil, benchGroup(1))
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := persistence.DecodeGroup(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommit commits batches of group rewrites (one transaction and
// one fsync per Commit) into a file that already holds 1000 groups, as the
// gateway's group commit does under load.
func BenchmarkCommit(b *testing.B) {
	const stored = 1000
	for _, batch := range []int{1, 32, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			db, err := persistence.Open(filepath.Join(b.TempDir(), "bench.db"), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			groups := make([]*persistence.Group, stored)
			fill := make([]persistence.Op, 0, stored)
			for i := range groups {
				groups[i] = benchGroup(i)
				fill = append(fill, persistence.Op{Key: benchKey(i), Group: groups[i]})
			}
			if err := db.Commit(fill); err != nil {
				b.Fatal(err)
			}
			ops := make([]persistence.Op, batch)
			next := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range ops {
					k := (next * 7919) % stored
					next++
					ops[j] = persistence.Op{Key: benchKey(k), Group: groups[k]}
				}
				if err := db.Commit(ops); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/group")
			b.ReportMetric(float64(db.Size()), "file-bytes")
		})
	}
}
