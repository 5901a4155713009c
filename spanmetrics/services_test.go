package spanmetrics

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestBucketQuantile(t *testing.T) {
	bounds := []float64{1, 2, 4}
	require.True(t, math.IsNaN(bucketQuantile(0.5, bounds, []float64{0, 0, 0, 0})))
	require.Equal(t, 0.5, bucketQuantile(0.5, bounds, []float64{10, 0, 0, 0}))
	require.Equal(t, 1.5, bucketQuantile(0.5, bounds, []float64{0, 10, 0, 0}))
	require.Equal(t, 4.0, bucketQuantile(0.95, bounds, []float64{0, 0, 0, 10}), "the +Inf bucket gives the highest bound")
}

func TestServices(t *testing.T) {
	clk := &clock{now: testNow}
	p, err := New(DefaultConfig(), Options{Now: clk.Now})
	require.NoError(t, err)
	send := func(service string, n int, errors int, d time.Duration) {
		td := ptrace.NewTraces()
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", service)
		spans := rs.ScopeSpans().AppendEmpty().Spans()
		for i := 0; i < n; i++ {
			s := spans.AppendEmpty()
			s.SetName("op")
			s.SetStartTimestamp(pcommon.NewTimestampFromTime(clk.now.Add(-d)))
			s.SetEndTimestamp(pcommon.NewTimestampFromTime(clk.now))
			if i < errors {
				s.Status().SetCode(ptrace.StatusCodeError)
			}
		}
		require.NoError(t, p.ConsumeTraces(context.Background(), td))
	}
	// Right after start the window begins at the start.
	send("old", 100, 0, time.Millisecond)
	clk.now = clk.now.Add(time.Second)
	require.InDelta(t, 100.0, p.Services()[0].CallsPerSecond, 1e-9, "100 spans in the first second")

	// A minute of snapshots later, the window is the last minute.
	for i := 0; i < 13; i++ {
		clk.now = clk.now.Add(5 * time.Second)
		if i == 12 {
			send("api", 40, 10, 3*time.Millisecond)
		}
		p.sweep()
	}
	stats := p.Services()
	require.Len(t, stats, 2)
	api, old := stats[0], stats[1]
	require.Equal(t, "api", api.Service)
	require.InDelta(t, 40.0/60, api.CallsPerSecond, 1e-9, "40 spans in the 60 s window")
	require.InDelta(t, 0.25, api.ErrorRatio, 1e-9)
	require.InDelta(t, 0.003, api.P50, 1e-9, "interpolated inside the 2-4 ms bucket")
	require.Equal(t, 100.0, old.Calls)
	require.Zero(t, old.CallsPerSecond, "nothing new in the window")
	require.True(t, math.IsNaN(old.P95))
}
