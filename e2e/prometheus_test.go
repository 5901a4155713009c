package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// promConfigHead starts the Prometheus configurations of the tests: a
// scrape every second, then their scrape configs.
const promConfigHead = `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
`

// prometheusConfig scrapes one pushrelay every second and keeps the pushed
// job and instance labels, as the README tells users to.
const prometheusConfig = promConfigHead + `  - job_name: pushrelay
    honor_labels: true
    static_configs:
      - targets: [%q]
`

// startPrometheus starts the Debian Prometheus server scraping target.
func startPrometheus(t *testing.T, target string) *process {
	t.Helper()
	return startPrometheusWith(t, fmt.Sprintf(prometheusConfig, target))
}

// startPrometheusWith starts the Debian Prometheus server with the
// configuration cfg.
func startPrometheusWith(t *testing.T, cfg string) *process {
	t.Helper()
	requirePrometheus(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(config, []byte(cfg), 0o600))
	return start(t, procSpec{
		name: "prometheus",
		bin:  prometheusBin,
		args: func(addr string) []string {
			return []string{
				"--config.file=" + config,
				"--storage.tsdb.path=" + filepath.Join(dir, "tsdb"),
				"--web.listen-address=" + addr,
			}
		},
		readyPath: "/-/ready",
	})
}

// promSample is one element of an instant-vector query result.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) value() (float64, error) {
	str, ok := s.Value[1].(string)
	if !ok {
		return 0, fmt.Errorf("sample value %v is not a string", s.Value[1])
	}
	return strconv.ParseFloat(str, 64)
}

// query runs an instant query against Prometheus' HTTP API.
func query(prom *process, q string) ([]promSample, error) {
	return promQuery[promSample](prom, q, "vector")
}

// promQuery runs q against Prometheus' HTTP API and returns its result,
// which must be of resultType.
func promQuery[T any](prom *process, q, resultType string) ([]T, error) {
	r, err := doErr(http.MethodGet, prom.url+"/api/v1/query?query="+url.QueryEscape(q), nil, nil)
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, fmt.Errorf("query %s: status %d: %s", q, r.status, r.body)
	}
	var res struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []T    `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(r.body, &res); err != nil {
		return nil, fmt.Errorf("query %s: %w: %s", q, err, r.body)
	}
	if res.Status != "success" || res.Data.ResultType != resultType {
		return nil, fmt.Errorf("query %s: %s", q, r.body)
	}
	return res.Data.Result, nil
}

// expectSeries is what one query must return: exactly one series with
// these labels and a value accepted by check.
type expectSeries struct {
	query  string
	labels map[string]string
	check  func(v float64) error
}

func equals(want float64) func(float64) error {
	return func(v float64) error {
		if v != want {
			return fmt.Errorf("value %v, want %v", v, want)
		}
		return nil
	}
}

// waitForSeries polls Prometheus until every expectation holds.
func waitForSeries(t *testing.T, prom *process, want []expectSeries) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		for _, w := range want {
			res, err := query(prom, w.query)
			if err != nil {
				return err
			}
			if len(res) != 1 {
				return fmt.Errorf("query %s: %d series, want 1: %v", w.query, len(res), res)
			}
			if !equalLabels(res[0].Metric, w.labels) {
				return fmt.Errorf("query %s: labels %v, want %v", w.query, res[0].Metric, w.labels)
			}
			v, err := res[0].value()
			if err != nil {
				return err
			}
			if err := w.check(v); err != nil {
				return fmt.Errorf("query %s: %w", w.query, err)
			}
		}
		return nil
	})
}

// TestPrometheusScrape lets the Debian Prometheus server scrape pushrelay with
// honor_labels: true and checks, through its query API, that users see the
// pushed values under the pushed job and instance labels, and the push time.
func TestPrometheusScrape(t *testing.T) {
	e2eTest(t)
	requirePrometheus(t)
	gw := startPushrelay(t)

	const body = `# HELP wm_records_processed Records processed by the last run.
# TYPE wm_records_processed gauge
wm_records_processed 1234
# TYPE wm_failures_total counter
wm_failures_total{step="load"} 3
# TYPE wm_run_seconds histogram
wm_run_seconds_bucket{le="1"} 1
wm_run_seconds_bucket{le="10"} 3
wm_run_seconds_bucket{le="+Inf"} 4
wm_run_seconds_sum 42.5
wm_run_seconds_count 4
`
	// flow@base64 carries a value with a '/': "f/etl".
	const path = "/metrics/job/wm_nightly/instance/worker-1/flow@base64/Zi9ldGw"
	from := time.Now()
	send(t, gw, http.MethodPut, path, body, http.StatusOK)
	to := time.Now()
	grouping := map[string]string{"job": "wm_nightly", "instance": "worker-1", "flow": "f/etl"}
	pushed := requireGroup(t, getGroups(t, gw), grouping).timeValue(t, "push_time_seconds")
	requireBetween(t, pushed, from, to)

	prom := startPrometheus(t, gw.addr)

	series := func(name string, extra ...string) map[string]string {
		l := map[string]string{"__name__": name}
		for k, v := range grouping {
			l[k] = v
		}
		for i := 0; i+1 < len(extra); i += 2 {
			l[extra[i]] = extra[i+1]
		}
		return l
	}
	pushTimeMatches := func(want float64) func(float64) error {
		return func(v float64) error {
			if v != want {
				return fmt.Errorf("push_time_seconds %v, pushrelay exposes %v", v, want)
			}
			if d := math.Abs(v - float64(to.UnixNano())/1e9); d > 1 {
				return fmt.Errorf("push_time_seconds %v is %.3fs away from the push", v, d)
			}
			return nil
		}
	}
	waitForSeries(t, prom, []expectSeries{
		{`wm_records_processed{job="wm_nightly"}`, series("wm_records_processed"), equals(1234)},
		{`wm_failures_total{job="wm_nightly"}`, series("wm_failures_total", "step", "load"), equals(3)},
		{`wm_run_seconds_sum{job="wm_nightly"}`, series("wm_run_seconds_sum"), equals(42.5)},
		{`wm_run_seconds_bucket{job="wm_nightly",le="+Inf"}`, series("wm_run_seconds_bucket", "le", "+Inf"), equals(4)},
		{`push_time_seconds{job="wm_nightly"}`, series("push_time_seconds"), pushTimeMatches(pushed)},
		{`push_failure_time_seconds{job="wm_nightly"}`, series("push_failure_time_seconds"), equals(0)},
		{`up{job="pushrelay"}`, map[string]string{"__name__": "up", "job": "pushrelay", "instance": gw.addr}, equals(1)},
	})
	res, err := query(prom, `{exported_job!=""} or {exported_instance!=""}`)
	require.NoError(t, err)
	require.Empty(t, res, "with honor_labels: true no label may be renamed")

	// Prometheus stores what the scrape format says: a Pushgateway is
	// scraped in the text format, so bucket bounds keep their pushed form
	// (le="10", not the OpenMetrics le="10.0") and a counter's metadata is
	// found under its sample name.
	t.Run("bucket labels as from a Pushgateway", func(t *testing.T) {
		res, err := query(prom, `wm_run_seconds_bucket{job="wm_nightly"}`)
		require.NoError(t, err)
		le := map[string]string{}
		for _, s := range res {
			v, err := s.value()
			require.NoError(t, err)
			le[s.Metric["le"]] = fmt.Sprint(v)
		}
		require.Equal(t, map[string]string{"1": "1", "10": "3", "+Inf": "4"}, le, "le label -> bucket count")
	})
	// Prometheus asks for OpenMetrics and pushrelay offers it (difference 7
	// in diff_test.go): a counter's metadata is then named like its
	// OpenMetrics family, without _total, as for any OpenMetrics target;
	// the series keep the names they have from the Pushgateway.
	t.Run("metadata of an OpenMetrics target", func(t *testing.T) {
		r := do(t, http.MethodGet, prom.url+"/api/v1/metadata", nil, nil)
		require.Equal(t, http.StatusOK, r.status)
		var meta struct {
			Data map[string][]struct {
				Type string `json:"type"`
				Help string `json:"help"`
			} `json:"data"`
		}
		require.NoError(t, json.Unmarshal(r.body, &meta))
		for name, typ := range map[string]string{"wm_failures": "counter", "wm_records_processed": "gauge", "wm_run_seconds": "histogram"} {
			require.NotEmpty(t, meta.Data[name], "no metadata for %s; metadata names: %v", name, sortedKeys(meta.Data))
			require.Equal(t, typ, meta.Data[name][0].Type, name)
		}
	})

	// A later POST is what Prometheus shows after its next scrape.
	send(t, gw, http.MethodPost, path, "# TYPE wm_records_processed gauge\nwm_records_processed 99\n", http.StatusOK)
	to = time.Now()
	pushed2 := requireGroup(t, getGroups(t, gw), grouping).timeValue(t, "push_time_seconds")
	require.Greater(t, pushed2, pushed)
	waitForSeries(t, prom, []expectSeries{
		{`wm_records_processed{job="wm_nightly"}`, series("wm_records_processed"), equals(99)},
		{`wm_failures_total{job="wm_nightly"}`, series("wm_failures_total", "step", "load"), equals(3)},
		{`push_time_seconds{job="wm_nightly"}`, series("push_time_seconds"), pushTimeMatches(pushed2)},
	})
}

// TestPrometheusScrapeNameFilter lets the Debian Prometheus server scrape
// pushrelay with name[] parameters in its scrape config: it stores the
// families named, pushed and own, and no other.
func TestPrometheusScrapeNameFilter(t *testing.T) {
	e2eTest(t)
	requirePrometheus(t)
	gw := startPushrelay(t)
	send(t, gw, http.MethodPut, "/metrics/job/wm_nightly", "# TYPE wm_records_processed gauge\nwm_records_processed 1234\n# TYPE wm_left_out gauge\nwm_left_out 1\n", http.StatusOK)
	prom := startPrometheusWith(t, fmt.Sprintf(promConfigHead+`  - job_name: pushrelay
    honor_labels: true
    params:
      'name[]': [wm_records_processed, push_time_seconds, pushrelay_groups]
    static_configs:
      - targets: [%q]
`, gw.addr))
	waitForSeries(t, prom, []expectSeries{
		{`wm_records_processed`, map[string]string{"__name__": "wm_records_processed", "job": "wm_nightly"}, equals(1234)},
		{`pushrelay_groups`, map[string]string{"__name__": "pushrelay_groups", "job": "pushrelay", "instance": gw.addr}, equals(1)},
		{`scrape_samples_scraped`, map[string]string{"__name__": "scrape_samples_scraped", "job": "pushrelay", "instance": gw.addr}, equals(3)},
	})
	for _, q := range []string{`wm_left_out`, `push_failure_time_seconds`, `pushrelay_http_requests_total`} {
		res, err := query(prom, q)
		require.NoError(t, err)
		require.Empty(t, res, "%s is not named in the scrape config", q)
	}
}

// storedSeriesBody pushes what differs between the text format and
// OpenMetrics: a counter without the _total suffix, escaped and empty
// label values, NaN and infinities, summaries and classic histograms with
// bounds written in several ways.
const storedSeriesBody = `# HELP c_no_suffix A counter without the suffix.
# TYPE c_no_suffix counter
c_no_suffix{path="/a b",quote="say \"hi\"",nl="x\ny",back="c:\\d"} 3
# TYPE c_total counter
c_total 4.5
# TYPE g gauge
g{empty=""} NaN
g{empty="no"} +Inf
g{empty="neg"} -Inf
# TYPE s summary
s{quantile="0.5"} 1
s{quantile="0.99"} 2e-05
s_sum 10
s_count 3
# TYPE h histogram
h_bucket{le="0.5"} 1
h_bucket{le="1"} 2
h_bucket{le="1e+06"} 3
h_bucket{le="+Inf"} 4
h_sum 1.5e+06
h_count 4
u 7
`

// TestPrometheusStoresWhatThePushgatewayGives pushes the same groups to
// pushrelay and to the Debian Pushgateway, lets one Prometheus server
// scrape both (pushrelay in OpenMetrics, which it offers, the Pushgateway in
// the text format) and requires the same stored series with the same
// values: only the times of push_time_seconds may differ.
func TestPrometheusStoresWhatThePushgatewayGives(t *testing.T) {
	e2eTest(t)
	requirePrometheus(t)
	pr, pg := startPushrelay(t), startPushgateway(t)

	var pb bytes.Buffer
	created := timestamppb.New(time.Unix(1700000000, 0))
	for _, mf := range append(protoEverything(), family("pb_created_total", dto.MetricType_COUNTER, "With a created timestamp.",
		&dto.Metric{Counter: &dto.Counter{Value: proto.Float64(3), CreatedTimestamp: created}})) {
		_, err := protodelim.MarshalTo(&pb, mf)
		require.NoError(t, err)
	}
	for _, p := range []*process{pr, pg} {
		send(t, p, http.MethodPut, "/metrics/job/stored", storedSeriesBody, http.StatusOK)
		send(t, p, http.MethodPut, "/metrics/job/stored/instance/i1", "# TYPE c_total counter\nc_total 1\n", http.StatusOK)
		send(t, p, http.MethodPut, "/metrics/job@base64/c3RvcmVkL3g/flow@base64/=", "u 8\n", http.StatusOK)
		r := do(t, http.MethodPut, p.url+"/metrics/job/stored_pb", http.Header{"Content-Type": {protoContentType}}, pb.Bytes())
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	}

	prom := startPrometheusWith(t, fmt.Sprintf(promConfigHead+`  - job_name: pushrelay
    honor_labels: true
    static_configs:
      - targets: [%q]
        labels: {source: pushrelay}
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: [%q]
        labels: {source: pushgateway}
`, pr.addr, pg.addr))

	// stored returns the pushed series Prometheus holds from source, as
	// sorted "name{labels} value" lines without the source label and the
	// instance label that Prometheus sets to the target's address when a
	// series has none.
	stored := func(source, addr string) ([]string, error) {
		res, err := query(prom, fmt.Sprintf(`{source=%q}`, source))
		if err != nil {
			return nil, err
		}
		var out []string
		for _, s := range res {
			name := s.Metric["__name__"]
			if isOwnSeries(name) {
				continue
			}
			var labels []string
			for k, v := range s.Metric {
				if k == "__name__" || k == "source" || k == "instance" && v == addr {
					continue
				}
				labels = append(labels, fmt.Sprintf("%s=%q", k, v))
			}
			sort.Strings(labels)
			value := fmt.Sprint(s.Value[1])
			if (name == "push_time_seconds" || name == "push_failure_time_seconds") && value != "0" {
				value = "(a time)"
			}
			out = append(out, fmt.Sprintf("%s{%s} %s", name, strings.Join(labels, ","), value))
		}
		sort.Strings(out)
		return out, nil
	}
	var fromPushrelay, fromPushgateway []string
	eventually(t, 30*time.Second, func() error {
		var err error
		if fromPushrelay, err = stored("pushrelay", pr.addr); err != nil {
			return err
		}
		if fromPushgateway, err = stored("pushgateway", pg.addr); err != nil {
			return err
		}
		// Every group of both, pushed series and push times, is in.
		if len(fromPushgateway) < 40 || len(fromPushrelay) != len(fromPushgateway) {
			return fmt.Errorf("%d series from pushrelay, %d from the Pushgateway", len(fromPushrelay), len(fromPushgateway))
		}
		return nil
	})
	require.Equal(t, strings.Join(fromPushgateway, "\n"), strings.Join(fromPushrelay, "\n"))
}

// isOwnSeries reports series that are not pushed: the servers' own metrics
// and those Prometheus adds to every target.
func isOwnSeries(name string) bool {
	for _, p := range []string{"go_", "process_", "pushgateway_", "pushrelay_", "promhttp_", "scrape_", "net_conntrack_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return name == "up"
}
