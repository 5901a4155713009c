package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
)

// Tolerated differences between pushrelay and the reference Pushgateway
// 1.5.1. Everything else a scenario sends must be answered identically.
//
//  1. Path cleaning: 1.5.1 redirects with 301, 1.11 (and pushrelay) with 307
//     (spec §13). The Location must be the same.
//  2. The scrape Content-Type of pushrelay carries "; escaping=underscores",
//     as Pushgateway 1.11 does (spec §7, §13).
//  3. Errors quoting a collected metric ("collected metric "x" { <metric> }
//     ...") print the metric in protobuf text form, whose spacing differs
//     between protobuf versions; the message is compared up to the '{'.
//     Which of two conflicting metrics is named is up to the Pushgateway's
//     map order anyway, and so is the side from which a summary or
//     histogram name collision ("x_count" vs summary "x") is reported:
//     both sides are written in one canonical form.
//  4. Not sent to 1.5.1 at all, checked against the 1.11 behaviour in
//     TestPushrelayBeyond151 instead: snappy bodies and upper-case gzip
//     Content-Encoding (1.5.1 lacks both), an invalid base64 job (it wedges
//     the route of 1.5.1; pushrelay's message quotes the raw segment rather
//     than the decoded prefix), bodies whose decompression fails after a
//     valid gzip header and protobuf families with invalid names (the older
//     prometheus/common and client_golang of 1.5.1 take the first as an
//     empty body and let the second through), gauge histograms (the text
//     encoder of 1.5.1 cannot write them), undecodable protobuf bodies (the
//     error is the decoder's, and 1.5.1's pbutil words it differently from
//     the protodelim decoder of current versions). Native histograms in the
//     JSON API (1.8+) are checked in TestClientGolangPush.
//  5. Own metrics (go_*, process_*, pushgateway_*, pushrelay_*, promhttp_*)
//     are not compared, nor are time values: push_time_seconds and
//     push_failure_time_seconds other than 0, and JSON time_stamp fields.
//  6. /api/v1/status: only the flags both have, except Debian's
//     --web.local-assets, and the shape of the rest.
//  7. OpenMetrics: a scraper that asks for it (Prometheus does) gets
//     OpenMetrics from pushrelay, as issue 2 requires, where the Pushgateway
//     answers text 0.0.4. The reference's text answer is then converted by
//     expfmt's OpenMetrics encoder, with le and quantile values kept in
//     their text form (so Prometheus 2 stores the same series from both),
//     and must equal pushrelay's answer.
//  8. --push.disable-consistency-check: pushrelay still checks in the
//     background and drops an inconsistent push (setting its failure time)
//     instead of storing it and failing every later scrape with 500, as the
//     README says. The answer to the push (202) is the same.

// tolerateStatus applies difference 1 to the reference's status for a
// request to path. (A GET of a known path with a trailing slash is
// redirected with 301 by the router of every version; that is not
// tolerated.)
func tolerateStatus(path string, ref response) int {
	unclean := strings.Contains(path, "//") || strings.Contains(path, "/./") || strings.Contains(path, "/../") ||
		strings.HasSuffix(path, "/.") || strings.HasSuffix(path, "/..")
	if unclean && ref.status == http.StatusMovedPermanently {
		return http.StatusTemporaryRedirect
	}
	return ref.status
}

// tolerateContentType applies difference 2.
func tolerateContentType(ct string) string {
	return strings.Replace(ct, "; escaping=underscores", "", 1)
}

// collectedMetric matches the protobuf text of difference 3.
var collectedMetric = regexp.MustCompile(`(collected metric "[^"]*" )\{.*`)

// Both sides of a name collision, as client_golang words them.
var (
	collisionFromSuffix = regexp.MustCompile(`collected metric named ("[^"]*") collides with previously collected (?:summary|histogram) named ("[^"]*")`)
	collisionFromBase   = regexp.MustCompile(`collected (?:histogram or summary|histogram|summary) named ("[^"]*") collides with previously collected metric named ("[^"]*")`)
)

// tolerateBody applies difference 3.
func tolerateBody(body string) string {
	body = collectedMetric.ReplaceAllString(body, "$1{…")
	body = collisionFromSuffix.ReplaceAllString(body, "names $2 and $1 collide")
	return collisionFromBase.ReplaceAllString(body, "names $1 and $2 collide")
}

// ownFamily reports whether a metric name belongs to a server's own metrics
// (difference 5).
func ownFamily(name string) bool {
	for _, p := range []string{"go_", "process_", "pushgateway_", "pushrelay_", "promhttp_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// pushedExposition keeps the pushed part of a text exposition: the HELP and
// TYPE lines of families that are not own metrics and every sample carrying
// a job label; push time values other than 0 are masked (difference 5).
func pushedExposition(text string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if line == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# "); ok {
			fields := strings.Fields(rest)
			if len(fields) >= 2 && ownFamily(fields[1]) {
				continue
			}
			out = append(out, line)
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		if ownFamily(name) && !strings.Contains(line, `job="`) {
			continue
		}
		if name == "push_time_seconds" || name == "push_failure_time_seconds" {
			if i := strings.LastIndexByte(line, ' '); line[i+1:] != "0" {
				line = line[:i+1] + "<time>"
			}
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// normalizedAPI masks time values in /api/v1/metrics JSON (difference 5)
// and orders the groups by their labels.
func normalizedAPI(body []byte) (string, error) {
	var v struct {
		Status string           `json:"status"`
		Data   []map[string]any `json:"data"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return "", fmt.Errorf("%w: %s", err, body)
	}
	for _, g := range v.Data {
		for name, f := range g {
			fam, ok := f.(map[string]any)
			if !ok || name == "labels" {
				continue
			}
			fam["time_stamp"] = "<time>"
			if name != "push_time_seconds" && name != "push_failure_time_seconds" {
				continue
			}
			ms, _ := fam["metrics"].([]any)
			for _, m := range ms {
				if m, ok := m.(map[string]any); ok && m["value"] != "0" {
					m["value"] = "<time>"
				}
			}
		}
	}
	labelsOf := func(g map[string]any) string {
		b, _ := json.Marshal(g["labels"])
		return string(b)
	}
	sort.SliceStable(v.Data, func(i, j int) bool { return labelsOf(v.Data[i]) < labelsOf(v.Data[j]) })
	b, err := json.MarshalIndent(v, "", " ")
	return string(b), err
}

// cmpKind says how the answers to a request are compared.
type cmpKind int

const (
	// cmpExact compares status, Content-Type, Location and body.
	cmpExact cmpKind = iota
	// cmpScrape compares an exposition reduced to the pushed families; it
	// retries for a while since the Pushgateway applies deletes later.
	cmpScrape
	// cmpAPI compares /api/v1/metrics with time values masked; it retries
	// like cmpScrape.
	cmpAPI
	// cmpStatus compares /api/v1/status (difference 6).
	cmpStatus
)

// req is one request of a differential scenario.
type req struct {
	method string
	path   string
	header http.Header
	body   []byte
	cmp    cmpKind
	// headers are further response headers that must be equal.
	headers []string
}

func (r req) with(name, value string) req {
	h := http.Header{}
	for k, v := range r.header {
		h[k] = v
	}
	h.Set(name, value)
	r.header = h
	return r
}

func (r req) compareHeaders(names ...string) req {
	r.headers = append(r.headers, names...)
	return r
}

func put(path, body string) req  { return req{method: http.MethodPut, path: path, body: []byte(body)} }
func post(path, body string) req { return req{method: http.MethodPost, path: path, body: []byte(body)} }
func del(path string) req        { return req{method: http.MethodDelete, path: path} }
func get(path string) req        { return req{method: http.MethodGet, path: path} }
func method(m, path string) req  { return req{method: m, path: path} }

// scrapeReq and apiReq compare the state; the default paths are checked
// after every scenario anyway.
func scrapeReq(path string) req { return req{method: http.MethodGet, path: path, cmp: cmpScrape} }
func apiReq(path string) req    { return req{method: http.MethodGet, path: path, cmp: cmpAPI} }

// Content types of push bodies.
const (
	protoContentType = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
	promAccept       = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

func pushProto(m, path string, mfs ...*dto.MetricFamily) req {
	var buf bytes.Buffer
	for _, mf := range mfs {
		if _, err := protodelim.MarshalTo(&buf, mf); err != nil {
			panic(err)
		}
	}
	return req{method: m, path: path, body: buf.Bytes()}.with("Content-Type", protoContentType)
}

func gzipped(body string) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write([]byte(body))
	_ = zw.Close()
	return buf.Bytes()
}

func snappied(body string) []byte {
	var buf bytes.Buffer
	w := snappy.NewBufferedWriter(&buf)
	_, _ = w.Write([]byte(body))
	_ = w.Close()
	return buf.Bytes()
}

// Builders of protobuf families.
func family(name string, typ dto.MetricType, help string, ms ...*dto.Metric) *dto.MetricFamily {
	mf := &dto.MetricFamily{Name: proto.String(name), Type: typ.Enum(), Metric: ms}
	if help != "" {
		mf.Help = proto.String(help)
	}
	return mf
}

func labelPairs(kv ...string) []*dto.LabelPair {
	var ls []*dto.LabelPair
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, &dto.LabelPair{Name: proto.String(kv[i]), Value: proto.String(kv[i+1])})
	}
	return ls
}

func counterMetric(v float64, kv ...string) *dto.Metric {
	return &dto.Metric{Label: labelPairs(kv...), Counter: &dto.Counter{Value: proto.Float64(v)}}
}

func gaugeMetric(v float64, kv ...string) *dto.Metric {
	return &dto.Metric{Label: labelPairs(kv...), Gauge: &dto.Gauge{Value: proto.Float64(v)}}
}

// diffScenario is a sequence of requests sent to a fresh pushrelay and a
// fresh Pushgateway started with the same flags.
type diffScenario struct {
	flags []string
	reqs  []req
	// prefix is the route prefix the final state checks use.
	prefix string
	// telemetry is the exposition path, /metrics by default.
	telemetry string
	// quits: the last request stops both servers; both must exit 0.
	quits bool
}

func protoTimestamped() *dto.MetricFamily {
	m := gaugeMetric(1)
	m.TimestampMs = proto.Int64(1700000000000)
	return family("ts_gauge", dto.MetricType_GAUGE, "", m)
}

func protoEverything() []*dto.MetricFamily {
	return []*dto.MetricFamily{
		family("pb_requests_total", dto.MetricType_COUNTER, "Requests.", counterMetric(7, "code", "200"), counterMetric(1, "code", "500")),
		family("pb_temperature", dto.MetricType_GAUGE, "", gaugeMetric(-3.5)),
		family("pb_untyped", dto.MetricType_UNTYPED, "Untyped.", &dto.Metric{Untyped: &dto.Untyped{Value: proto.Float64(2)}}),
		family("pb_latency", dto.MetricType_SUMMARY, "Latency.", &dto.Metric{Summary: &dto.Summary{
			SampleCount: proto.Uint64(10), SampleSum: proto.Float64(2.5),
			Quantile: []*dto.Quantile{{Quantile: proto.Float64(0.5), Value: proto.Float64(0.2)}, {Quantile: proto.Float64(0.99), Value: proto.Float64(1.5)}},
		}}),
		family("pb_size", dto.MetricType_HISTOGRAM, "Size.", &dto.Metric{Label: labelPairs("kind", "x"), Histogram: &dto.Histogram{
			SampleCount: proto.Uint64(4), SampleSum: proto.Float64(1000),
			Bucket: []*dto.Bucket{{UpperBound: proto.Float64(100), CumulativeCount: proto.Uint64(1)}, {UpperBound: proto.Float64(1000), CumulativeCount: proto.Uint64(3)}},
		}}),
	}
}

// diffScenarios is the table of the differential test.
func diffScenarios() map[string]diffScenario {
	const (
		ab   = "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"2\"} 2\n# TYPE b counter\nb 5\n"
		tsOK = "# TYPE ts_gauge gauge\nts_gauge 1\n"
	)
	return map[string]diffScenario{
		"put replaces the whole group": {reqs: []req{
			put("/metrics/job/s", ab),
			put("/metrics/job/s", "# TYPE a gauge\na{x=\"3\"} 3\n"),
		}},
		"post replaces same-named families only": {reqs: []req{
			put("/metrics/job/s/instance/i", ab),
			post("/metrics/job/s/instance/i", "# TYPE a gauge\na{x=\"3\"} 3\n# TYPE c untyped\nc 1\n"),
			scrapeReq("/metrics"),
			post("/metrics/job/s/instance/i", "b 6\n"),
		}},
		"delete removes the group": {reqs: []req{
			put("/metrics/job/d", ab),
			put("/metrics/job/d/instance/x", ab),
			del("/metrics/job/d"),
			scrapeReq("/metrics"),
			del("/metrics/job/unknown/instance/none"),
			del("/metrics/job/d/instance/x").with("Content-Type", "text/plain"),
		}},
		"delete then put in one burst": {reqs: []req{
			put("/metrics/job/dp", ab),
			del("/metrics/job/dp"),
			put("/metrics/job/dp", "b 1\n"),
		}},
		"label order and label sets": {reqs: []req{
			put("/metrics/job/o/a/1/b/2", "m 1\n"),
			post("/metrics/job/o/b/2/a/1", "n 2\n"),
			put("/metrics/job/o/a/1", "m 3\n"),
			put("/metrics/job/o/a/1/first@base64/=", "m 4\n"),
		}},
		"empty bodies": {reqs: []req{
			put("/metrics/job/e1", ""),
			post("/metrics/job/e2", ""),
			put("/metrics/job/e3", ab),
			put("/metrics/job/e3", ""),
			put("/metrics/job/e4", ab),
			post("/metrics/job/e4", ""),
		}},
		"base64 job and label values": {reqs: []req{
			put("/metrics/job@base64/YmF6", "m 1\n"),
			put("/metrics/job@base64/YmF6==/l@base64/YmE=", "m 2\n"),
			put("/metrics/job@base64/YmF6/l@base64/YmE/e@base64/=", "m 3\n"),
			put("/metrics/job@base64/YmF6/e@base64/==", "m 4\n"),
			put("/metrics/job/p/path@base64/L3Zhci9saWIvZGF0YQ", "m 5\n"),
			put("/metrics/job@base64/d2luZG1pbGwvZmxvd3M/x@base64/w6nDqQ", "m 6\n"),
			del("/metrics/job@base64/YmF6/e@base64/="),
			put("/metrics/job/p/l@base64/YmE+", "m 7\n"),
			put("/metrics/job/p/l@base64/Y", "m 8\n"),
			put("/metrics/job/p/l@base64/YQ/m@base64/!!", "m 9\n"),
			put("/metrics/job@base64/=", "m 10\n"),
			put("/metrics/job@base64/==/l/v", "m 11\n"),
		}},
		"escaped values in the path": {reqs: []req{
			put("/metrics/job/pct/v/a%20b", "m 1\n"),
			put("/metrics/job/pct/v/a+b", "m 2\n"),
			put("/metrics/job/pct/v/%CE%A0", "m 3\n"),
			put("/metrics/job/pct/v/a%2Fb", "m 4\n"),
			put("/metrics/job/pct%2Fx", "m 5\n"),
			put("/metrics/job/q?x=1&y=2", "m 6\n"),
		}},
		"odd components and improper label names": {reqs: []req{
			put("/metrics/job/a/b", "m 1\n"),
			put("/metrics/job/a/b/c/", "m 1\n"),
			post("/metrics/job/a/b/c/d", "m 1\n"),
			del("/metrics/job/a/b"),
			put("/metrics/job/a/foo-bar/c", "m 1\n"),
			put("/metrics/job/a/__x/c", "m 1\n"),
			put("/metrics/job/a/1abc/c", "m 1\n"),
			put("/metrics/job/a/foo-bar@base64/YQ", "m 1\n"),
			del("/metrics/job/a/__x/c"),
		}},
		"trailing slash and path cleaning": {reqs: []req{
			put("/metrics/job/ts/", "m 1\n"),
			post("/metrics/job/ts2/", "m 2\n"),
			put("/metrics/job//a", "m 3\n"),
			put("/metrics/job/a/x/y//z/w", "m 4\n"),
			put("/metrics/job/./a", "m 5\n"),
			put("/metrics/job/a/x/../y", "m 6\n"),
			put("/metrics/job/", "m 7\n"),
			get("/metrics/"),
			get("/-/healthy/"),
			get("//metrics"),
		}},
		"job label inside the label part is overridden": {reqs: []req{
			put("/metrics/job/ov/job/other/x/y", "m 1\n"),
			put("/metrics/job/ov/job@base64/b3RoZXI", "m 2\n"),
		}},
		"grouping labels override body labels": {reqs: []req{
			put("/metrics/job/j/instance/i", "m{job=\"j2\",instance=\"i2\",other=\"o\"} 1\n"),
			put("/metrics/job/k", "m{instance=\"body\"} 2\n# TYPE n gauge\nn{job=\"x\"} 3\n"),
			put("/metrics/job/k2/zone/z", "m{zone=\"body\",instance=\"bi\"} 4\n"),
		}},
		"type conflict across groups": {reqs: []req{
			put("/metrics/job/tc1", "# TYPE tc counter\ntc 1\n"),
			put("/metrics/job/tc2", "# TYPE tc gauge\ntc 1\n"),
			put("/metrics/job/tc1", "# TYPE tc2 gauge\ntc2 2\n# TYPE tc counter\ntc 2\n"),
			post("/metrics/job/tc1", "tc 3\n"),
			put("/metrics/job/tc2", "# TYPE tc counter\ntc 4\n"),
		}},
		"type conflict with own metrics": {reqs: []req{
			put("/metrics/job/go", "go_goroutines 1\n"),
			put("/metrics/job/go", "# TYPE go_goroutines counter\ngo_goroutines 1\n"),
			put("/metrics/job/go2", "# TYPE go_goroutines gauge\ngo_goroutines 1\n"),
			put("/metrics/job/go3", "# TYPE process_start_time_seconds counter\nprocess_start_time_seconds 1\n"),
		}},
		"duplicate series": {reqs: []req{
			put("/metrics/job/dup", "dm{instance=\"x\"} 1\n"),
			put("/metrics/job/dup/instance/x", "dm 1\n"),
			put("/metrics/job/dup/instance/y", "dm 1\n"),
			put("/metrics/job/dupin", "d 1\nd 2\n"),
			put("/metrics/job/dupin2", "d{a=\"1\",instance=\"\"} 1\nd{a=\"1\"} 2\n"),
		}},
		"summary and histogram suffix collisions": {reqs: []req{
			put("/metrics/job/col1", "# TYPE sm summary\nsm_sum 1\nsm_count 1\n"),
			put("/metrics/job/col2", "sm_count 2\n"),
			put("/metrics/job/col3", "# TYPE hg histogram\nhg_bucket{le=\"+Inf\"} 1\nhg_sum 1\nhg_count 1\n"),
			put("/metrics/job/col4", "hg_bucket 3\n"),
		}},
		"timestamps are rejected": {reqs: []req{
			put("/metrics/job/ts", tsOK),
			put("/metrics/job/ts", "ts_gauge 2 1700000000000\n"),
			post("/metrics/job/ts", "other 1\nts_gauge 2 1700000000000\n"),
			put("/metrics/job/tsnew", "m 1 1700000000000\n"),
			pushProto(http.MethodPut, "/metrics/job/tspb", protoTimestamped()),
		}},
		"text format parsing errors": {reqs: []req{
			put("/metrics/job/p", "m 1\r\n"),
			put("/metrics/job/p", "m 1"),
			put("/metrics/job/p", "# TYPE a counter\n# TYPE a counter\na 1\n"),
			put("/metrics/job/p", "a 1\n# TYPE a counter\n"),
			put("/metrics/job/p", "1bad 1\n"),
			put("/metrics/job/p", "m{l=\"unterminated} 1\n"),
			put("/metrics/job/p", "m{l=\"v\"} abc\n"),
			put("/metrics/job/p", "# TYPE h histogram\nh_bucket{le=\"x\"} 1\n"),
		}},
		"text format details": {reqs: []req{
			put("/metrics/job/t", "# HELP esc a\\\\b\\nline\n# TYPE esc gauge\nesc{l=\"q\\\"x\\\\y\\nz\"} 1\n"),
			put("/metrics/job/t2", "# TYPE x counter\nx_total 1\n# EOF\n"),
			put("/metrics/job/t3", "sp{a=\"1\"} NaN\nsp{a=\"2\"} +Inf\nsp{a=\"3\"} -Inf\nsp{a=\"4\"} 1e-300\nsp{a=\"5\"} -0.000001\n"),
			put("/metrics/job/t4", "untyped_no_type 1\n# HELP only_help Help only.\nonly_help 2\n"),
			put("/metrics/job/t5", "# TYPE sm summary\nsm{quantile=\"0.5\"} 1\nsm{quantile=\"0.9\"} 2\nsm_sum 10\nsm_count 4\n# TYPE hh histogram\nhh_bucket{le=\"0.5\"} 1\nhh_bucket{le=\"+Inf\"} 2\nhh_sum 3\nhh_count 2\n"),
			put("/metrics/job/t6", "# HELP wm_python Python style.\n# TYPE wm_python summary\nwm_python_count 2.0\nwm_python_sum 128.0\n# TYPE wm_python_created gauge\nwm_python_created 1.7953176438725297e+09\n"),
		}},
		"content types are not sniffed": {reqs: []req{
			put("/metrics/job/ct", "m 1\n").with("Content-Type", "application/json"),
			put("/metrics/job/ct2", "m 2\n").with("Content-Type", "application/openmetrics-text; version=1.0.0"),
			put("/metrics/job/ct3", "m 3\n").with("Content-Type", "application/x-www-form-urlencoded"),
			put("/metrics/job/ct4", "m 4\n").with("Content-Type", "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily"),
		}},
		"push times in the body are replaced": {reqs: []req{
			put("/metrics/job/pt", "push_time_seconds 5\n"),
			put("/metrics/job/pt2", "# TYPE push_failure_time_seconds gauge\npush_failure_time_seconds 7\nm 1\n"),
			put("/metrics/job/pt3", "# TYPE push_time_seconds counter\npush_time_seconds 5\n"),
		}},
		"protobuf body": {reqs: []req{
			pushProto(http.MethodPut, "/metrics/job/pb/instance/i", protoEverything()...),
			pushProto(http.MethodPost, "/metrics/job/pb/instance/i",
				family("pb_temperature", dto.MetricType_GAUGE, "", gaugeMetric(1)),
				family("pb_temperature", dto.MetricType_GAUGE, "Later wins.", gaugeMetric(2, "later", "yes"))),
			// As many series as the other side, so that the number of
			// errors does not depend on which group the Pushgateway meets
			// first.
			pushProto(http.MethodPut, "/metrics/job/pb2", family("pb_requests_total", dto.MetricType_GAUGE, "", gaugeMetric(1, "code", "200"), gaugeMetric(2, "code", "404"))),
			pushProto(http.MethodPut, "/metrics/job/pb3", family("pb_bad", dto.MetricType_COUNTER, "", gaugeMetric(1))),
			pushProto(http.MethodPut, "/metrics/job/pb5", family("pb_lbl", dto.MetricType_GAUGE, "", gaugeMetric(1, "bad-label", "x"))),
			pushProto(http.MethodPut, "/metrics/job/pb6"),
		}},
		"compressed bodies": {reqs: []req{
			{method: http.MethodPut, path: "/metrics/job/gz", body: gzipped("gz 1\n")},
			req{method: http.MethodPut, path: "/metrics/job/gz", body: gzipped("gz 2\n")}.with("Content-Encoding", "gzip"),
			req{method: http.MethodPut, path: "/metrics/job/gz2", body: []byte("notgzip")}.with("Content-Encoding", "gzip"),
			req{method: http.MethodPut, path: "/metrics/job/gz4", body: gzipped("gz 4")}.with("Content-Encoding", "gzip"),
			put("/metrics/job/gz5", "gz 5\n").with("Content-Encoding", "deflate"),
			put("/metrics/job/gz6", "gz 6\n").with("Content-Encoding", "identity"),
			func() req {
				var buf bytes.Buffer
				for _, mf := range protoEverything() {
					_, _ = protodelim.MarshalTo(&buf, mf)
				}
				return req{method: http.MethodPut, path: "/metrics/job/gz7", body: gzipped(buf.String())}.
					with("Content-Encoding", "gzip").with("Content-Type", protoContentType)
			}(),
		}},
		"methods and unknown paths": {reqs: []req{
			get("/metrics/job/x").compareHeaders("Allow"),
			method(http.MethodPatch, "/metrics/job/x").compareHeaders("Allow"),
			get("/metrics/job/x/a/b").compareHeaders("Allow"),
			method(http.MethodHead, "/metrics").compareHeaders("Allow"),
			post("/metrics", "m 1\n").compareHeaders("Allow"),
			method(http.MethodPost, "/api/v1/metrics").compareHeaders("Allow"),
			method(http.MethodDelete, "/api/v1/status").compareHeaders("Allow"),
			method(http.MethodOptions, "/metrics/job/x").compareHeaders("Allow"),
			method(http.MethodOptions, "/metrics/job@base64/eA/a/b").compareHeaders("Allow"),
			method(http.MethodOptions, "/metrics").compareHeaders("Allow"),
			method(http.MethodOptions, "/-/healthy").compareHeaders("Allow"),
			method(http.MethodOptions, "/-/ready").compareHeaders("Allow"),
			method(http.MethodOptions, "/-/quit").compareHeaders("Allow"),
			method(http.MethodOptions, "/nope"),
			get("/nope"),
			put("/metrics/job", "m 1\n"),
			put("/metrics/jobs/x", "m 1\n"),
			get("/api/v1/x"),
			get("/api/v1/"),
			put("/api/v1/admin/wipe", ""),
			get("/metrics/job/"),
			put("/metrics/job@base64/", "m 1\n"),
		}},
		"health, readiness and quit without lifecycle": {reqs: []req{
			get("/-/healthy"),
			get("/-/ready"),
			method(http.MethodHead, "/-/healthy"),
			put("/-/quit", ""),
			post("/-/quit", ""),
			get("/-/quit"),
			method(http.MethodDelete, "/-/quit"),
		}},
		"JSON API": {reqs: []req{
			apiReq("/api/v1/metrics"),
			put("/metrics/job/api/instance/i", "# HELP a Help of a.\n# TYPE a gauge\na{x=\"1\"} 1\n"),
			pushProto(http.MethodPut, "/metrics/job/api2", protoEverything()...),
			put("/metrics/job/api3", "# TYPE tc counter\ntc 1 1700000000000\n"),
			apiReq("/api/v1/metrics").compareHeaders("Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
				"Access-Control-Allow-Headers", "Access-Control-Expose-Headers", "Cache-Control"),
			req{method: http.MethodGet, path: "/api/v1/status", cmp: cmpStatus},
			method(http.MethodOptions, "/api/v1/x").compareHeaders("Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
				"Access-Control-Allow-Headers", "Access-Control-Expose-Headers", "Cache-Control"),
			method(http.MethodOptions, "/api/v1/metrics"),
			method(http.MethodOptions, "/api/v1/"),
		}},
		"scrape formats": {reqs: []req{
			pushProto(http.MethodPut, "/metrics/job/sf/instance/i", protoEverything()...),
			put("/metrics/job/sf2", "# TYPE c_no_suffix counter\nc_no_suffix 3\n# TYPE hh histogram\nhh_bucket{le=\"1\"} 1\nhh_bucket{le=\"+Inf\"} 2\nhh_sum 3\nhh_count 2\n"),
			scrapeReq("/metrics").with("Accept", string(expfmt.NewFormat(expfmt.TypeProtoDelim))),
			scrapeReq("/metrics").with("Accept-Encoding", "gzip"),
			scrapeReq("/metrics").with("Accept", promAccept).with("Accept-Encoding", "gzip"),
			scrapeReq("/metrics").with("Accept", "application/openmetrics-text; version=1.0.0"),
		}},
		"admin API": {flags: []string{"--web.enable-admin-api"}, reqs: []req{
			put("/metrics/job/w1", "m 1\n"),
			put("/metrics/job/w2/instance/i", "m 2\n"),
			put("/api/v1/admin/wipe", ""),
			scrapeReq("/metrics"),
			get("/api/v1/admin/wipe"),
			post("/api/v1/admin/wipe", ""),
			put("/metrics/job/w3", "m 3\n"),
		}},
		"lifecycle quit": {flags: []string{"--web.enable-lifecycle"}, quits: true, reqs: []req{
			get("/-/quit"),
			put("/metrics/job/q", "m 1\n"),
			post("/-/quit", ""),
		}},
		"route prefix": {flags: []string{"--web.route-prefix=/pg/"}, prefix: "/pg", reqs: []req{
			put("/pg/metrics/job/rp", "m 1\n"),
			put("/metrics/job/rp2", "m 2\n"),
			scrapeReq("/pg/metrics"),
			get("/metrics"),
			get("/pg/-/healthy"),
			get("/-/healthy"),
			put("/pg/-/quit", ""),
			put("/-/quit", ""),
			get("/-/quit"),
			get("/pg/-/quit"),
			del("/pg/metrics/job/rp"),
			apiReq("/pg/api/v1/metrics"),
			get("/api/v1/metrics"),
			method(http.MethodOptions, "/pg/api/v1/x"),
		}},
		"telemetry path": {flags: []string{"--web.telemetry-path=/m"}, telemetry: "/m", reqs: []req{
			put("/metrics/job/tp", "m 1\n"),
			get("/metrics"),
			scrapeReq("/m"),
		}},
		"consistency check disabled": {flags: []string{"--push.disable-consistency-check"}, reqs: []req{
			put("/metrics/job/u1", "# TYPE uc counter\nuc 1\n"),
			scrapeReq("/metrics"),
			put("/metrics/job/u3", "m 1 1700000000000\n"),
			put("/metrics/job/u4", "m 1\r\n"),
			put("/metrics/job/u4/a", "m 1\n"),
			apiReq("/api/v1/metrics"),
		}},
	}
}

// TestDisabledCheckDropsInconsistentPush checks difference 8: with
// --push.disable-consistency-check an inconsistent push is answered 202
// like any other, then dropped with its failure time set, and scrapes keep
// working.
func TestDisabledCheckDropsInconsistentPush(t *testing.T) {
	e2eTest(t)
	pr := startPushrelay(t, "--push.disable-consistency-check")
	send(t, pr, http.MethodPut, "/metrics/job/u1", "# TYPE uc counter\nuc 1\n", http.StatusAccepted)
	send(t, pr, http.MethodPut, "/metrics/job/u2", "# TYPE uc gauge\nuc 2\n", http.StatusAccepted)
	eventually(t, 5*time.Second, func() error {
		r := do(t, http.MethodGet, pr.url+"/metrics", nil, nil)
		body := string(r.body)
		switch {
		case r.status != http.StatusOK:
			return fmt.Errorf("scrape answered %d: %s", r.status, body)
		case !strings.Contains(body, `uc{instance="",job="u1"} 1`):
			return errors.New("the consistent push is missing")
		case strings.Contains(body, `uc{instance="",job="u2"}`):
			return errors.New("the inconsistent push was stored")
		case !regexp.MustCompile(`push_failure_time_seconds\{instance="",job="u2"\} [1-9]`).MatchString(body):
			return errors.New("the inconsistent push did not set its group's failure time")
		case !strings.Contains(body, `push_time_seconds{instance="",job="u2"} 0`):
			return errors.New("the group of the inconsistent push has a push time")
		}
		return nil
	})
}

// TestDifferentialAgainstPushgateway sends every scenario to a fresh
// pushrelay and a fresh Pushgateway and requires the same answers, up to the
// tolerated differences listed at the top of this file.
func TestDifferentialAgainstPushgateway(t *testing.T) {
	e2eTest(t)
	requirePushgateway(t)
	for name, sc := range diffScenarios() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runDiffScenario(t, sc)
		})
	}
}

func runDiffScenario(t *testing.T, sc diffScenario) {
	pr := startPushrelay(t, sc.flags...)
	pg := startPushgateway(t, sc.flags...)
	// Each request is a subtest, so that one difference does not hide the
	// next ones; the requests still run in order.
	for i, r := range sc.reqs {
		t.Run(fmt.Sprintf("%d %s %s", i+1, r.method, r.path), func(t *testing.T) {
			compareRequest(t, r, pr, pg)
		})
	}
	if sc.quits {
		for _, p := range []*process{pr, pg} {
			select {
			case <-p.exited:
				require.NoError(t, p.waitErr, "%s exit status after /-/quit", p.name)
			case <-time.After(stopTimeout):
				t.Fatalf("%s still running %v after /-/quit", p.name, stopTimeout)
			}
		}
		return
	}
	telemetry := sc.telemetry
	if telemetry == "" {
		telemetry = "/metrics"
	}
	t.Run("final exposition", func(t *testing.T) { compareRequest(t, scrapeReq(sc.prefix+telemetry), pr, pg) })
	t.Run("final JSON API", func(t *testing.T) { compareRequest(t, apiReq(sc.prefix+"/api/v1/metrics"), pr, pg) })
}

// compareRequest sends r to both servers and requires equal answers.
func compareRequest(t *testing.T, r req, pr, pg *process) {
	t.Helper()
	switch r.cmp {
	case cmpScrape, cmpAPI:
		// The Pushgateway applies deletes and wipes after answering: poll
		// until both agree, then report the last difference.
		var last func()
		deadline := time.Now().Add(3 * time.Second)
		for {
			a, b := do(t, r.method, pr.url+r.path, r.header, r.body), do(t, r.method, pg.url+r.path, r.header, r.body)
			sa, sb, err := stateViews(r, a, b)
			require.NoError(t, err)
			if sa == sb {
				return
			}
			last = func() { require.Equal(t, sb, sa, "pushrelay (actual) differs from the Pushgateway (expected)") }
			if time.Now().After(deadline) {
				last()
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	case cmpStatus:
		a, b := do(t, r.method, pr.url+r.path, r.header, r.body), do(t, r.method, pg.url+r.path, r.header, r.body)
		compareStatusAPI(t, a, b)
	case cmpExact:
		a, b := do(t, r.method, pr.url+r.path, r.header, r.body), do(t, r.method, pg.url+r.path, r.header, r.body)
		require.Equal(t, exactView(r, b, true), exactView(r, a, false),
			"pushrelay (actual) differs from the Pushgateway (expected)")
	default:
		t.Fatalf("unknown comparison kind %d", r.cmp)
	}
}

// exactView renders the compared parts of a response.
func exactView(r req, resp response, reference bool) string {
	status, body := resp.status, string(resp.body)
	if reference {
		status = tolerateStatus(r.path, resp)
		if status != resp.status { // the redirect page names the status
			body = strings.Replace(body, http.StatusText(resp.status), http.StatusText(status), 1)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "status: %d\n", status)
	fmt.Fprintf(&sb, "Content-Type: %s\n", tolerateContentType(resp.header.Get("Content-Type")))
	if loc := resp.header.Get("Location"); loc != "" {
		fmt.Fprintf(&sb, "Location: %s\n", loc)
	}
	for _, h := range r.headers {
		fmt.Fprintf(&sb, "%s: %s\n", h, resp.header.Get(h))
	}
	fmt.Fprintf(&sb, "body:\n%s", tolerateBody(body))
	return sb.String()
}

// stateViews renders two scrapes or two JSON API answers for comparison.
func stateViews(r req, a, b response) (string, string, error) {
	views := make([]string, 2)
	for i, resp := range []response{a, b} {
		head := fmt.Sprintf("status: %d\nContent-Type: %s\nContent-Encoding: %s\n",
			resp.status, tolerateContentType(resp.header.Get("Content-Type")), resp.header.Get("Content-Encoding"))
		for _, h := range r.headers {
			head += fmt.Sprintf("%s: %s\n", h, resp.header.Get(h))
		}
		if resp.status != http.StatusOK {
			views[i] = head + tolerateBody(string(resp.body))
			continue
		}
		body := resp.body
		if resp.header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				return "", "", err
			}
			if body, err = io.ReadAll(zr); err != nil {
				return "", "", err
			}
		}
		var view string
		var err error
		switch {
		case r.cmp == cmpAPI:
			view, err = normalizedAPI(body)
		case i == 1 && isOpenMetrics(a) && !isOpenMetrics(b):
			// Difference 7.
			head = strings.Replace(head, tolerateContentType(b.header.Get("Content-Type")), tolerateContentType(a.header.Get("Content-Type")), 1)
			view, err = textAsOpenMetrics(body)
			view = pushedExposition(view)
		case strings.HasPrefix(resp.header.Get("Content-Type"), "application/vnd.google.protobuf"):
			view, err = protoAsText(body)
			view = pushedExposition(view)
		default:
			view = pushedExposition(string(body))
		}
		if err != nil {
			return "", "", err
		}
		views[i] = head + view
	}
	return views[0], views[1], nil
}

func isOpenMetrics(r response) bool {
	return strings.HasPrefix(r.header.Get("Content-Type"), "application/openmetrics-text")
}

// textBound matches an le or quantile value that OpenMetrics writes with a
// ".0" the text format leaves out.
var textBound = regexp.MustCompile(`([{,](?:le|quantile)=")(-?[0-9]+)\.0"`)

// textAsOpenMetrics converts a text-format exposition to OpenMetrics as
// difference 7 describes.
func textAsOpenMetrics(b []byte) (string, error) {
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	names := make([]string, 0, len(mfs))
	for n := range mfs {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	for _, n := range names {
		if _, err := expfmt.MetricFamilyToOpenMetrics(&buf, mfs[n]); err != nil {
			return "", err
		}
	}
	if _, err := expfmt.FinalizeOpenMetrics(&buf); err != nil {
		return "", err
	}
	return textBound.ReplaceAllString(buf.String(), `${1}${2}"`), nil
}

// protoAsText converts a delimited protobuf exposition to the text format.
func protoAsText(b []byte) (string, error) {
	var sb strings.Builder
	dec := expfmt.NewDecoder(bytes.NewReader(b), expfmt.NewFormat(expfmt.TypeProtoDelim))
	for {
		mf := &dto.MetricFamily{}
		err := dec.Decode(mf)
		if errors.Is(err, io.EOF) {
			return sb.String(), nil
		}
		if err != nil {
			return "", err
		}
		if _, err := expfmt.MetricFamilyToText(&sb, mf); err != nil {
			return "", err
		}
	}
}

// compareStatusAPI compares /api/v1/status (difference 6): the envelope
// and headers, the build information keys, a start time, and the flags the
// reference has, with their values where they do not name addresses.
func compareStatusAPI(t *testing.T, a, b response) {
	t.Helper()
	type status struct {
		Status string `json:"status"`
		Data   struct {
			BuildInformation map[string]string `json:"build_information"`
			Flags            map[string]string `json:"flags"`
			StartTime        time.Time         `json:"start_time"`
		} `json:"data"`
	}
	var sa, sb status
	require.Equal(t, b.status, a.status)
	require.Equal(t, b.header.Get("Content-Type"), a.header.Get("Content-Type"))
	require.NoError(t, json.Unmarshal(a.body, &sa), "%s", a.body)
	require.NoError(t, json.Unmarshal(b.body, &sb), "%s", b.body)
	require.Equal(t, sb.Status, sa.Status)
	require.Equal(t, sortedKeys(sb.Data.BuildInformation), sortedKeys(sa.Data.BuildInformation), "build_information keys")
	require.WithinDuration(t, time.Now(), sa.Data.StartTime, time.Minute, "start_time")
	for name, want := range sb.Data.Flags {
		if name == "web.local-assets" { // Debian's own flag
			continue
		}
		got, ok := sa.Data.Flags[name]
		require.True(t, ok, "flag %s missing", name)
		if name != "web.listen-address" {
			require.Equal(t, want, got, "value of flag %s", name)
		}
	}
}
