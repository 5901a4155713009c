package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// runPythonJob runs one step of testdata/windmill_job.py against gw with
// the Debian interpreter and returns the exposition the step sent and the
// interval around the call.
func runPythonJob(t *testing.T, gw *process, step string) (map[string]*dto.MetricFamily, time.Time, time.Time) {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("testdata", "windmill_job.py"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, pythonBin, script, gw.url, step)
	cmd.Env = pythonEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	from := time.Now()
	out, err := cmd.Output()
	to := time.Now()
	require.NoError(t, err, "windmill_job.py %s: %s", step, stderr.String())
	return parseText(t, out), from, to
}

// runPythonScript runs script, saved as name, with the Debian interpreter
// and gw's URL as its argument, and returns its output.
func runPythonScript(t *testing.T, gw *process, name, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(script), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, pythonBin, path, gw.url)
	cmd.Env = pythonEnv()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s: %s", name, out)
	return string(out)
}

// pythonEnv is the environment without PYTHON* variables, so that the
// Debian interpreter imports the Debian prometheus_client.
func pythonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PYTHON") {
			env = append(env, kv)
		}
	}
	return env
}

// sentValue returns the value of the series of a sent family with the given
// label values, formatted like the JSON API formats numbers.
func sentValue(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) string {
	t.Helper()
	mf, ok := mfs[name]
	require.True(t, ok, "the job sent no %s", name)
next:
	for _, m := range mf.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return fmt.Sprint(m.GetGauge().GetValue())
		case m.Counter != nil:
			return fmt.Sprint(m.GetCounter().GetValue())
		}
	}
	t.Fatalf("the job sent no %s%v", name, labels)
	return ""
}

// TestPythonClient runs a Windmill-like job with the real Python client:
// push_to_gateway, pushadd_to_gateway and delete_from_gateway, checking after
// each step what the text exposition and the JSON API show.
func TestPythonClient(t *testing.T) {
	e2eTest(t)
	requirePythonClient(t)
	gw := startPushrelay(t)

	// The client QueryEscapes plain grouping values and the gateway does not
	// unescape '+': 'a b' is stored as 'a+b', as the Pushgateway does.
	grouping := map[string]string{"job": "windmill", "instance": "wm-worker-1", "flow": "a+b"}
	const sel = `flow="a+b",instance="wm-worker-1",job="windmill"`

	// Step 1: push_to_gateway with one family of every type.
	sent, from, to := runPythonJob(t, gw, "push")
	groups := getGroups(t, gw)
	require.Len(t, groups, 1)
	g := requireGroup(t, groups, grouping)
	require.True(t, g.LastPushSuccessful)
	pushed := g.timeValue(t, "push_time_seconds")
	requireBetween(t, pushed, from, to, "push_time_seconds")
	require.Zero(t, g.timeValue(t, "push_failure_time_seconds"))

	labels := func(extra ...string) obj { return seriesLabels(grouping, extra...) }
	wantFamilies := map[string]apiFamily{
		"wm_jobs_total": {Type: "COUNTER", Help: "Jobs run by the worker.", Metrics: []obj{
			{"labels": labels("language", "deno"), "value": "1"},
			{"labels": labels("language", "python3"), "value": "3"},
		}},
		"wm_jobs_created": {Type: "GAUGE", Help: "Jobs run by the worker.", Metrics: []obj{
			{"labels": labels("language", "deno"), "value": sentValue(t, sent, "wm_jobs_created", "language", "deno")},
			{"labels": labels("language", "python3"), "value": sentValue(t, sent, "wm_jobs_created", "language", "python3")},
		}},
		"wm_queue_depth": {Type: "GAUGE", Help: "Jobs waiting in the queue.", Metrics: []obj{
			{"labels": labels(), "value": "2.5"},
		}},
		"wm_job_duration_seconds": {Type: "HISTOGRAM", Help: "Job duration.", Metrics: []obj{{
			"labels":  labels(),
			"buckets": obj{"0.1": "1", "1": "2", "10": "3", "+Inf": "3"},
			"count":   "3",
			"sum":     "4.5625",
		}}},
		"wm_job_duration_seconds_created": {Type: "GAUGE", Help: "Job duration.", Metrics: []obj{
			{"labels": labels(), "value": sentValue(t, sent, "wm_job_duration_seconds_created")},
		}},
		"wm_result_size_bytes": {Type: "SUMMARY", Help: "Size of job results.", Metrics: []obj{{
			"labels":    labels(),
			"quantiles": obj{},
			"count":     "2",
			"sum":       "128",
		}}},
		"wm_result_size_bytes_created": {Type: "GAUGE", Help: "Size of job results.", Metrics: []obj{
			{"labels": labels(), "value": sentValue(t, sent, "wm_result_size_bytes_created")},
		}},
	}
	requireFamilies := func(g *apiGroup, want map[string]apiFamily) {
		t.Helper()
		for name, w := range want {
			f, ok := g.Families[name]
			require.True(t, ok, "group has no %s", name)
			require.Equal(t, w.Type, f.Type, name)
			require.Equal(t, w.Help, f.Help, name)
			require.ElementsMatch(t, w.Metrics, f.Metrics, name)
		}
		require.Len(t, g.Families, len(want)+2, "families other than the pushed ones and the two push times")
	}
	requireFamilies(g, wantFamilies)
	t.Run("no keys beyond the Pushgateway's", func(t *testing.T) {
		// With staleness off, a group is labels, last_push_successful and
		// one object per metric name, nothing else.
		require.Empty(t, g.Extra, "group %v has keys that are neither labels, last_push_successful nor a metric family", g.Labels)
	})
	for name, f := range g.Families {
		requireBetween(t, float64(f.TimeStamp.UnixNano())/1e9, from, to, "time_stamp of %s", name)
	}

	text, _ := scrape(t, gw)
	requireLines(t, text,
		"# HELP wm_jobs_total Jobs run by the worker.",
		"# TYPE wm_jobs_total counter",
		`wm_jobs_total{`+sel+`,language="deno"} 1`,
		`wm_jobs_total{`+sel+`,language="python3"} 3`,
		"# TYPE wm_queue_depth gauge",
		`wm_queue_depth{`+sel+`} 2.5`,
		"# TYPE wm_job_duration_seconds histogram",
		`wm_job_duration_seconds_bucket{`+sel+`,le="0.1"} 1`,
		`wm_job_duration_seconds_bucket{`+sel+`,le="1"} 2`,
		`wm_job_duration_seconds_bucket{`+sel+`,le="10"} 3`,
		`wm_job_duration_seconds_bucket{`+sel+`,le="+Inf"} 3`,
		`wm_job_duration_seconds_sum{`+sel+`} 4.5625`,
		`wm_job_duration_seconds_count{`+sel+`} 3`,
		"# TYPE wm_result_size_bytes summary",
		`wm_result_size_bytes_sum{`+sel+`} 128`,
		`wm_result_size_bytes_count{`+sel+`} 2`,
		"# HELP push_time_seconds Last Unix time when changing this group in the Pushgateway succeeded.",
		"# TYPE push_time_seconds gauge",
		`push_time_seconds{`+sel+`} `+fmt.Sprint(pushed),
		`push_failure_time_seconds{`+sel+`} 0`,
	)

	// Step 2: pushadd_to_gateway replaces only the family it sends.
	_, from2, to2 := runPythonJob(t, gw, "pushadd")
	groups = getGroups(t, gw)
	g2 := requireGroup(t, groups, grouping)
	require.True(t, g2.LastPushSuccessful)
	pushed2 := g2.timeValue(t, "push_time_seconds")
	requireBetween(t, pushed2, from2, to2, "push_time_seconds after pushadd")
	require.Greater(t, pushed2, pushed)
	wantFamilies["wm_queue_depth"] = apiFamily{Type: "GAUGE", Help: "Jobs waiting in the queue.", Metrics: []obj{
		{"labels": labels(), "value": "0"},
	}}
	requireFamilies(g2, wantFamilies)
	for name, f := range g2.Families {
		switch name {
		case "wm_queue_depth", "push_time_seconds":
			requireBetween(t, float64(f.TimeStamp.UnixNano())/1e9, from2, to2, "time_stamp of %s", name)
		default:
			require.True(t, f.TimeStamp.Equal(g.Families[name].TimeStamp),
				"time_stamp of %s changed by a POST that did not send it: %v -> %v", name, g.Families[name].TimeStamp, f.TimeStamp)
		}
	}
	text, _ = scrape(t, gw)
	requireLines(t, text,
		`wm_queue_depth{`+sel+`} 0`,
		`wm_jobs_total{`+sel+`,language="python3"} 3`,
		`push_time_seconds{`+sel+`} `+fmt.Sprint(pushed2),
	)

	// Step 3: a job and grouping values that the client sends base64-encoded.
	_, from3, to3 := runPythonJob(t, gw, "paths")
	pathsGrouping := map[string]string{"job": "windmill/flows", "script_path": "u/admin/etl", "tag": ""}
	g3 := requireGroup(t, getGroups(t, gw), pathsGrouping)
	requireBetween(t, g3.timeValue(t, "push_time_seconds"), from3, to3)
	require.Equal(t, []obj{{"labels": seriesLabels(pathsGrouping), "value": "4"}}, g3.Families["wm_flow_steps"].Metrics)
	text, _ = scrape(t, gw)
	requireLines(t, text, `wm_flow_steps{instance="",job="windmill/flows",script_path="u/admin/etl",tag=""} 4`)

	// Step 4: delete_from_gateway removes both groups entirely.
	runPythonJob(t, gw, "delete")
	require.Empty(t, getGroups(t, gw))
	text, _ = scrape(t, gw)
	require.Empty(t, linesContaining(text, `job="windmill`), "series left after delete_from_gateway")
	require.Empty(t, linesContaining(text, "wm_"), "families left after delete_from_gateway")
}

// emptyInstanceJob pushes with the Python client to {job="ge"} and then to
// {job="ge",instance=""}, which the client sends as instance@base64/=, and
// prints the rejection of the second push.
const emptyInstanceJob = `import sys
from urllib.error import HTTPError
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

gateway = sys.argv[1]
first = CollectorRegistry()
Gauge("job_records", "Records.", registry=first).set(1)
push_to_gateway(gateway, job="ge", registry=first)
second = CollectorRegistry()
Gauge("job_other", "Other records.", registry=second).set(2)
try:
    push_to_gateway(gateway, job="ge", grouping_key={"instance": ""}, registry=second)
except HTTPError as e:
    print(e.code, e.read().decode())
else:
    sys.exit("the push to the empty instance was accepted")
`

// TestPythonClientEmptyInstance checks that a push that would create a group
// whose push_time_seconds and push_failure_time_seconds another group holds
// is rejected with both series named and creates no group, so the first
// group's push time stays what the scrape shows.
func TestPythonClientEmptyInstance(t *testing.T) {
	e2eTest(t)
	requirePythonClient(t)
	gw := startPushrelay(t)

	out := runPythonScript(t, gw, "empty_instance.py", emptyInstanceJob)
	require.Regexp(t, `^400 pushed metrics are invalid or inconsistent with existing metrics: 2 error\(s\) occurred:\n`+
		`\* collected metric "push_time_seconds" \{ .*\} was collected before with the same name and label values\n`+
		`\* collected metric "push_failure_time_seconds" \{ .*\} was collected before with the same name and label values\n`, out)

	groups := getGroups(t, gw)
	require.Len(t, groups, 1)
	g := requireGroup(t, groups, map[string]string{"job": "ge"})
	pushed := g.timeValue(t, "push_time_seconds")
	require.NotZero(t, pushed)
	_, mfs := scrape(t, gw)
	require.Len(t, mfs["push_time_seconds"].GetMetric(), 1)
	require.InDelta(t, pushed, mfs["push_time_seconds"].GetMetric()[0].GetGauge().GetValue(), 1e-6)
	require.NotContains(t, mfs, "job_other")
}
