// This file tests TTL expiry ("zero" action) end to end: the real binary with
// --staleness.ttl and a bbolt file, scraped by a real Prometheus, restarted
// on the same file.

package e2e

import (
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// staleTTL is the --staleness.ttl of TestStalenessZeroAndRevive.
const staleTTL = 2 * time.Second

// flatSamples returns every sample of the series whose job label is job, keyed
// by the sample name and its labels other than job and instance, as
// `name{a="1",le="0.5"}` (histograms and summaries give their _bucket, _sum
// and _count samples and quantiles).
func flatSamples(mfs map[string]*dto.MetricFamily, job string) map[string]float64 {
	out := map[string]float64{}
	key := func(name string, m *dto.Metric, extra ...string) string {
		var ls []string
		for _, lp := range m.Label {
			if lp.GetName() == "job" || lp.GetName() == "instance" {
				continue
			}
			ls = append(ls, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
		}
		for i := 0; i+1 < len(extra); i += 2 {
			ls = append(ls, fmt.Sprintf("%s=%q", extra[i], extra[i+1]))
		}
		sort.Strings(ls)
		if len(ls) == 0 {
			return name
		}
		return name + "{" + strings.Join(ls, ",") + "}"
	}
	bound := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	for name, mf := range mfs {
		for _, m := range mf.Metric {
			var j string
			for _, lp := range m.Label {
				if lp.GetName() == "job" {
					j = lp.GetValue()
				}
			}
			if j != job {
				continue
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key(name, m)] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key(name, m)] = m.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				out[key(name, m)] = m.GetUntyped().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					out[key(name+"_bucket", m, "le", bound(b.GetUpperBound()))] = float64(b.GetCumulativeCount())
				}
				if _, ok := out[key(name+"_bucket", m, "le", "+Inf")]; !ok {
					out[key(name+"_bucket", m, "le", "+Inf")] = float64(h.GetSampleCount())
				}
				out[key(name+"_sum", m)] = h.GetSampleSum()
				out[key(name+"_count", m)] = float64(h.GetSampleCount())
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					out[key(name, m, "quantile", bound(q.GetQuantile()))] = q.GetValue()
				}
				out[key(name+"_sum", m)] = s.GetSampleSum()
				out[key(name+"_count", m)] = float64(s.GetSampleCount())
			}
		}
	}
	return out
}

// ownValue returns the value of an own metric with one label pair, or an
// error when the series is not in mfs.
func ownValue(mfs map[string]*dto.MetricFamily, name, label, value string) (float64, error) {
	mf := mfs[name]
	if mf == nil {
		return 0, fmt.Errorf("no %s in /metrics", name)
	}
	for _, m := range mf.Metric {
		for _, lp := range m.Label {
			if lp.GetName() == label && lp.GetValue() == value {
				switch {
				case m.Counter != nil:
					return m.GetCounter().GetValue(), nil
				case m.Gauge != nil:
					return m.GetGauge().GetValue(), nil
				case m.Untyped != nil:
					return m.GetUntyped().GetValue(), nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no %s{%s=%q} in /metrics", name, label, value)
}

// zeroExpirations returns pushrelay_group_expirations_total{action="zero"}.
func zeroExpirations(t *testing.T, gw *process) float64 {
	t.Helper()
	_, mfs := scrape(t, gw)
	v, err := ownValue(mfs, "pushrelay_group_expirations_total", "action", "zero")
	require.NoError(t, err)
	return v
}

// requireZeroExpirations waits until pushrelay_group_expirations_total
// {action="zero"} is want: an expiry is visible to scrapes once applied,
// and counted once committed to the file, a moment later.
func requireZeroExpirations(t *testing.T, gw *process, want float64) {
	t.Helper()
	from := time.Now()
	defer func() {
		if d := time.Since(from); d > 100*time.Millisecond {
			t.Logf("pushrelay_group_expirations_total{action=\"zero\"} reached %v %v after the check began", want, d.Round(time.Millisecond))
		}
	}()
	eventually(t, 5*time.Second, func() error {
		v := zeroExpirations(t, gw)
		require.LessOrEqual(t, v, want, "pushrelay_group_expirations_total{action=\"zero\"}")
		if v != want {
			return fmt.Errorf("pushrelay_group_expirations_total{action=\"zero\"} is %v, want %v", v, want)
		}
		return nil
	})
}

// zeroedSamples returns want with every sample of the pushed families set to
// 0, push_stale to 1 and the push times kept.
func zeroedSamples(want map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(want))
	for k, v := range want {
		switch k {
		case "push_time_seconds", "push_failure_time_seconds":
			out[k] = v
		case "push_stale":
			out[k] = 1
		default:
			out[k] = 0
		}
	}
	return out
}

// groupTTL returns the ttl_seconds and stale fields /api/v1/metrics shows for
// the group, "" when absent.
func groupTTL(t *testing.T, gw *process, grouping map[string]string) (ttl, stale string) {
	t.Helper()
	g := requireGroup(t, getGroups(t, gw), grouping)
	return g.Extra["ttl_seconds"], g.Extra["stale"]
}

// familyTime returns the time_stamp of a family of the group in
// /api/v1/metrics.
func familyTime(t *testing.T, gw *process, grouping map[string]string, name string) time.Time {
	t.Helper()
	g := requireGroup(t, getGroups(t, gw), grouping)
	f, ok := g.Families[name]
	require.True(t, ok, "group %v has no %s", grouping, name)
	return f.TimeStamp
}

// promRange is one series of a range-vector query: the raw samples
// Prometheus scraped.
type promRange struct {
	Metric map[string]string `json:"metric"`
	Values [][2]any          `json:"values"`
}

// rawSamples returns the samples Prometheus stored for a selector over
// window, keyed by their timestamp in milliseconds; it fails when the
// selector matches more than one series.
func rawSamples(prom *process, selector string, window string) (map[int64]float64, error) {
	q := selector + "[" + window + "]"
	result, err := promQuery[promRange](prom, q, "matrix")
	if err != nil {
		return nil, err
	}
	if len(result) > 1 {
		return nil, fmt.Errorf("query %s matches %d series", q, len(result))
	}
	out := map[int64]float64{}
	if len(result) == 0 {
		return out, nil
	}
	for _, sv := range result[0].Values {
		ts, ok := sv[0].(float64)
		if !ok {
			return nil, fmt.Errorf("query %s: timestamp %v", q, sv[0])
		}
		s, ok := sv[1].(string)
		if !ok {
			return nil, fmt.Errorf("query %s: value %v", q, sv[1])
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, err
		}
		out[int64(math.Round(ts*1000))] = v
	}
	return out, nil
}

// TestStalenessZeroAndRevive runs pushrelay with --staleness.ttl=2s (action
// zero) and a bbolt file, lets a real Prometheus scrape it, and checks that a
// group that stops pushing is zeroed after its TTL — every sample, buckets,
// sums and counts included, push time kept, push_stale 1 — while a group
// pushed with X-Pushrelay-TTL: 0 is never touched; that the next push revives
// the group; and that the expired state survives a restart, including for a
// group whose TTL ran out while pushrelay was stopped.
func TestStalenessZeroAndRevive(t *testing.T) {
	e2eTest(t)
	requirePrometheus(t)
	testStart := time.Now()
	flags := []string{
		"--persistence.file=" + filepath.Join(t.TempDir(), "pushrelay.db"),
		"--staleness.ttl=" + staleTTL.String(),
	}
	gw := startPushrelay(t, flags...)

	// Prometheus scrapes pushrelay before anything is pushed, so that it sees
	// the pushed values before they expire.
	prom := startPrometheus(t, gw.addr)
	waitForSeries(t, prom, []expectSeries{
		{`up{job="pushrelay"}`, map[string]string{"__name__": "up", "job": "pushrelay", "instance": gw.addr}, equals(1)},
	})

	const (
		jobStale   = "st_nightly"
		jobForever = "st_forever"
		pathStale  = "/metrics/job/" + jobStale + "/instance/worker-1"
		pathFor    = "/metrics/job/" + jobForever
	)
	groupStale := map[string]string{"job": jobStale, "instance": "worker-1"}
	groupForever := map[string]string{"job": jobForever}
	const bodyStale = `# TYPE st_records_total counter
st_records_total{step="load"} 12
st_records_total{step="save"} 5
# TYPE st_last_size_bytes gauge
st_last_size_bytes 3500
# TYPE st_duration_seconds histogram
st_duration_seconds_bucket{le="0.5"} 2
st_duration_seconds_bucket{le="5"} 5
st_duration_seconds_bucket{le="+Inf"} 6
st_duration_seconds_sum 12.5
st_duration_seconds_count 6
`
	pushedStale := map[string]float64{
		`st_records_total{step="load"}`:         12,
		`st_records_total{step="save"}`:         5,
		`st_last_size_bytes`:                    3500,
		`st_duration_seconds_bucket{le="0.5"}`:  2,
		`st_duration_seconds_bucket{le="5"}`:    5,
		`st_duration_seconds_bucket{le="+Inf"}`: 6,
		`st_duration_seconds_sum`:               12.5,
		`st_duration_seconds_count`:             6,
		`push_failure_time_seconds`:             0,
		`push_stale`:                            0,
		`push_time_seconds`:                     0, // set below
	}

	send(t, gw, http.MethodPut, pathStale, bodyStale, http.StatusOK)
	pushedAt := time.Now()
	r := do(t, http.MethodPut, gw.url+pathFor, http.Header{"X-Pushrelay-TTL": {"0"}}, []byte("# TYPE st_forever_value gauge\nst_forever_value 7\n"))
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)

	// Before the TTL: the values as pushed, push_stale 0.
	_, mfs := scrape(t, gw)
	pushTime := requireGroup(t, getGroups(t, gw), groupStale).timeValue(t, "push_time_seconds")
	require.Less(t, time.Since(pushedAt), staleTTL, "the checks before the TTL came too late")
	pushedStale["push_time_seconds"] = pushTime
	require.Equal(t, pushedStale, flatSamples(mfs, jobStale), "group before its TTL")
	foreverWant := flatSamples(mfs, jobForever)
	require.Equal(t, 7.0, foreverWant["st_forever_value"])
	require.NotContains(t, foreverWant, "push_stale", "a group with X-Pushrelay-TTL: 0 has no push_stale")
	ttl, stale := groupTTL(t, gw, groupStale)
	require.Equal(t, "2", ttl, "ttl_seconds")
	require.Equal(t, "false", stale, "stale")
	require.Zero(t, zeroExpirations(t, gw))

	// After the TTL: every sample 0, push time kept, push_stale 1.
	zeroed := zeroedSamples(pushedStale)
	eventually(t, 10*time.Second, func() error {
		r, err := doErr(http.MethodGet, gw.url+"/metrics", nil, nil)
		if err != nil {
			return err
		}
		if got := flatSamples(parseText(t, r.body), jobStale); got["push_stale"] != 1 {
			return fmt.Errorf("group not expired yet: %v", got)
		}
		return nil
	})
	t.Logf("group expired %v after its push answer (TTL %v)", time.Since(pushedAt).Round(time.Millisecond), staleTTL)
	_, mfs = scrape(t, gw)
	require.Equal(t, zeroed, flatSamples(mfs, jobStale), "group after its TTL")
	require.Equal(t, foreverWant, flatSamples(mfs, jobForever), "the group with X-Pushrelay-TTL: 0 must not change")
	ttl, stale = groupTTL(t, gw, groupStale)
	require.Equal(t, "2", ttl, "ttl_seconds")
	require.Equal(t, "true", stale, "stale")
	// Expiry is not early: push_stale was written no sooner than the TTL
	// after the push.
	expiredAt := familyTime(t, gw, groupStale, "push_stale")
	require.GreaterOrEqual(t, float64(expiredAt.UnixNano())/1e9-pushTime, staleTTL.Seconds()-1e-3, "expired at %v, pushed at %v", expiredAt, pushTime)
	requireZeroExpirations(t, gw, 1)
	foreverGroup := requireGroup(t, getGroups(t, gw), groupForever)
	require.NotContains(t, foreverGroup.Families, "push_stale")
	require.Equal(t, "false", foreverGroup.Extra["stale"], "group with X-Pushrelay-TTL: 0: %v", foreverGroup.Extra)

	// What Prometheus stores: the pushed value, then 0 with push_stale 1;
	// the TTL-0 group untouched and without push_stale.
	sel := func(name string) string { return name + `{job="` + jobStale + `"}` }
	series := func(name string, extra ...string) map[string]string {
		l := map[string]string{"__name__": name, "job": jobStale, "instance": "worker-1"}
		for i := 0; i+1 < len(extra); i += 2 {
			l[extra[i]] = extra[i+1]
		}
		return l
	}
	waitForSeries(t, prom, []expectSeries{
		{sel("st_last_size_bytes"), series("st_last_size_bytes"), equals(0)},
		{sel("push_stale"), series("push_stale"), equals(1)},
		{`st_records_total{job="st_nightly",step="load"}`, series("st_records_total", "step", "load"), equals(0)},
		{`st_duration_seconds_bucket{job="st_nightly",le="+Inf"}`, series("st_duration_seconds_bucket", "le", "+Inf"), equals(0)},
		{sel("st_duration_seconds_sum"), series("st_duration_seconds_sum"), equals(0)},
		{sel("st_duration_seconds_count"), series("st_duration_seconds_count"), equals(0)},
		{sel("push_time_seconds"), series("push_time_seconds"), equals(pushTime)},
		{`max_over_time(st_last_size_bytes{job="st_nightly"}[1m])`, map[string]string{"job": jobStale, "instance": "worker-1"}, equals(3500)},
		{`st_forever_value{job="st_forever"}`, map[string]string{"__name__": "st_forever_value", "job": jobForever}, equals(7)},
	})
	res, err := query(prom, `push_stale{job="st_forever"}`)
	require.NoError(t, err)
	require.Empty(t, res, "a group with X-Pushrelay-TTL: 0 has no push_stale series")

	// Every scrape is consistent: the gauge is 0 exactly when push_stale is
	// 1, scrape by scrape.
	requireConsistentScrapes := func(wantRevived float64) {
		t.Helper()
		eventually(t, 15*time.Second, func() error {
			gauge, err := rawSamples(prom, sel("st_last_size_bytes"), "2m")
			if err != nil {
				return err
			}
			staleness, err := rawSamples(prom, sel("push_stale"), "2m")
			if err != nil {
				return err
			}
			values := map[float64]bool{}
			for ts, v := range gauge {
				s, ok := staleness[ts]
				if !ok {
					return fmt.Errorf("scrape at %d has st_last_size_bytes but no push_stale", ts)
				}
				if (v == 0) != (s == 1) {
					require.Failf(t, "inconsistent scrape", "at %d: st_last_size_bytes %v with push_stale %v", ts, v, s)
				}
				values[v] = true
			}
			if !values[wantRevived] {
				return fmt.Errorf("prometheus has no scrape with st_last_size_bytes %v yet: %v", wantRevived, gauge)
			}
			return nil
		})
	}
	requireConsistentScrapes(3500)

	// A new push revives the group: new values, push_stale 0.
	const bodyRevived = `# TYPE st_records_total counter
st_records_total{step="load"} 20
# TYPE st_last_size_bytes gauge
st_last_size_bytes 4200
# TYPE st_duration_seconds histogram
st_duration_seconds_bucket{le="0.5"} 1
st_duration_seconds_bucket{le="5"} 1
st_duration_seconds_bucket{le="+Inf"} 2
st_duration_seconds_sum 7.25
st_duration_seconds_count 2
`
	send(t, gw, http.MethodPut, pathStale, bodyRevived, http.StatusOK)
	revivedAt := time.Now()
	_, mfs = scrape(t, gw)
	revivedTime := requireGroup(t, getGroups(t, gw), groupStale).timeValue(t, "push_time_seconds")
	ttl, stale = groupTTL(t, gw, groupStale)
	require.Less(t, time.Since(revivedAt), staleTTL, "the checks after the revival came too late")
	require.Greater(t, revivedTime, pushTime)
	revived := map[string]float64{
		`st_records_total{step="load"}`:         20,
		`st_last_size_bytes`:                    4200,
		`st_duration_seconds_bucket{le="0.5"}`:  1,
		`st_duration_seconds_bucket{le="5"}`:    1,
		`st_duration_seconds_bucket{le="+Inf"}`: 2,
		`st_duration_seconds_sum`:               7.25,
		`st_duration_seconds_count`:             2,
		`push_failure_time_seconds`:             0,
		`push_stale`:                            0,
		`push_time_seconds`:                     revivedTime,
	}
	require.Equal(t, revived, flatSamples(mfs, jobStale), "group revived by a push")
	require.Equal(t, "2", ttl, "ttl_seconds")
	require.Equal(t, "false", stale, "stale")
	// Prometheus sees the revived values with push_stale 0 in the same
	// scrape (the group expires again 2s later).
	requireConsistentScrapes(4200)
	t.Logf("prometheus saw the revived values")

	// It expires again after its TTL.
	eventually(t, 10*time.Second, func() error {
		_, mfs := scrape(t, gw)
		if got := flatSamples(mfs, jobStale); got["push_stale"] != 1 {
			return fmt.Errorf("revived group not expired yet: %v", got)
		}
		return nil
	})
	_, mfs = scrape(t, gw)
	require.Equal(t, zeroedSamples(revived), flatSamples(mfs, jobStale), "revived group after its TTL")
	requireZeroExpirations(t, gw, 2)
	waitForSeries(t, prom, []expectSeries{
		{sel("st_last_size_bytes"), series("st_last_size_bytes"), equals(0)},
		{sel("push_stale"), series("push_stale"), equals(1)},
		{sel("push_time_seconds"), series("push_time_seconds"), equals(revivedTime)},
	})
	requireConsistentScrapes(4200)
	prom.kill() // not needed any more; it would only fail to scrape

	// Restart: a group zeroed before the stop stays zeroed.
	const (
		jobShort = "st_short"
		jobDown  = "st_down"
	)
	groupShort := map[string]string{"job": jobShort}
	groupDown := map[string]string{"job": jobDown}
	r = do(t, http.MethodPut, gw.url+"/metrics/job/"+jobShort, http.Header{"X-Pushrelay-TTL": {"1s"}},
		[]byte("# TYPE st_short_value gauge\nst_short_value 11\n# TYPE st_short_total counter\nst_short_total 4\n"))
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	eventually(t, 10*time.Second, func() error {
		_, mfs := scrape(t, gw)
		if got := flatSamples(mfs, jobShort); got["push_stale"] != 1 {
			return fmt.Errorf("group with X-Pushrelay-TTL: 1s not expired yet: %v", got)
		}
		return nil
	})
	_, mfs = scrape(t, gw)
	shortZeroed := flatSamples(mfs, jobShort)
	require.Equal(t, 0.0, shortZeroed["st_short_value"])
	require.Equal(t, 0.0, shortZeroed["st_short_total"])
	ttl, stale = groupTTL(t, gw, groupShort)
	require.Equal(t, "1", ttl, "ttl_seconds")
	require.Equal(t, "true", stale, "stale")
	requireZeroExpirations(t, gw, 3)

	// A group whose TTL runs out while pushrelay is stopped.
	r = do(t, http.MethodPut, gw.url+"/metrics/job/"+jobDown, http.Header{"X-Pushrelay-TTL": {"3s"}},
		[]byte("# TYPE st_down_value gauge\nst_down_value 13\n"))
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	downPushed := time.Now()
	_, mfs = scrape(t, gw)
	downWant := flatSamples(mfs, jobDown)
	require.Equal(t, 13.0, downWant["st_down_value"])
	require.Equal(t, 0.0, downWant["push_stale"])
	_, mfs = scrape(t, gw)
	before := map[string]map[string]float64{
		jobStale:   flatSamples(mfs, jobStale),
		jobForever: flatSamples(mfs, jobForever),
		jobShort:   flatSamples(mfs, jobShort),
	}
	require.NoError(t, gw.stop(t), "pushrelay must exit 0 on SIGTERM")
	require.Less(t, time.Since(downPushed), 3*time.Second, "pushrelay stopped too late for the check")
	time.Sleep(time.Until(downPushed.Add(3*time.Second + 500*time.Millisecond)))

	gw = startPushrelay(t, flags...)
	_, mfs = scrape(t, gw)
	atStart := flatSamples(mfs, jobDown)
	t.Logf("first scrape after the restart: %s = %v", jobDown, atStart)
	for job, want := range before {
		require.Equal(t, want, flatSamples(mfs, job), "group %s after the restart", job)
	}
	require.NotContains(t, flatSamples(mfs, jobForever), "push_stale")
	ttl, stale = groupTTL(t, gw, groupShort)
	require.Equal(t, "1", ttl, "ttl_seconds after the restart")
	require.Equal(t, "true", stale, "stale after the restart")
	ttl, stale = groupTTL(t, gw, groupStale)
	require.Equal(t, "2", ttl, "ttl_seconds after the restart")
	require.Equal(t, "true", stale, "stale after the restart")
	// The group whose TTL ran out during the stop is expired at start-up.
	eventually(t, 2*time.Second, func() error {
		_, mfs := scrape(t, gw)
		if got := flatSamples(mfs, jobDown); got["push_stale"] != 1 {
			return fmt.Errorf("%s not expired at start-up: %v", jobDown, got)
		}
		return nil
	})
	_, mfs = scrape(t, gw)
	require.Equal(t, zeroedSamples(downWant), flatSamples(mfs, jobDown), "group whose TTL ran out while pushrelay was stopped")
	ttl, stale = groupTTL(t, gw, groupDown)
	require.Equal(t, "3", ttl, "ttl_seconds")
	require.Equal(t, "true", stale, "stale")
	// Only that group expired in this process: expired groups restored from
	// the file are not expired again.
	requireZeroExpirations(t, gw, 1)
	t.Logf("test took %v", time.Since(testStart).Round(time.Millisecond))
}
