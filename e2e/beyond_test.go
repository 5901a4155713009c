package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
)

// expect is a request with the answer Pushgateway 1.11 gives (spec
// sections cited per scenario) and the exposition lines it leaves behind.
type expect struct {
	req        req
	status     int
	body       string // exact body, unless bodyPrefix is set
	bodyPrefix string
	lines      []string
}

// protoGarbage expects a protobuf push of body to be refused with the error
// of the protodelim decoder, which current Pushgateways use.
func protoGarbage(body string) expect {
	var err error
	r := bufio.NewReader(strings.NewReader(body))
	for err == nil {
		err = protodelim.UnmarshalFrom(r, &dto.MetricFamily{})
	}
	if errors.Is(err, io.EOF) {
		panic(fmt.Sprintf("%q decodes", body))
	}
	return expect{
		req:    put("/metrics/job/pbg", body).with("Content-Type", protoContentType),
		status: http.StatusBadRequest,
		body:   err.Error() + "\n",
	}
}

// TestPushrelayBeyond151 checks, against the spec of Pushgateway 1.11, the
// cases of difference 4 in diff_test.go that 1.5.1 cannot serve as a
// reference for.
func TestPushrelayBeyond151(t *testing.T) {
	e2eTest(t)
	scenarios := map[string][]expect{
		// Spec §4: gzip and snappy, case-insensitive; 1.5.1 has no snappy
		// and only lower-case gzip.
		"snappy and case-insensitive Content-Encoding": {
			{req: req{method: http.MethodPut, path: "/metrics/job/sn", body: snappied("sn 1\n")}.with("Content-Encoding", "snappy"), status: http.StatusOK},
			{req: req{method: http.MethodPut, path: "/metrics/job/sn2", body: snappied("sn 2\n")}.with("Content-Encoding", "Snappy"), status: http.StatusOK},
			{req: req{method: http.MethodPut, path: "/metrics/job/gz", body: gzipped("gz 1\n")}.with("Content-Encoding", "GZIP"), status: http.StatusOK,
				lines: []string{`sn{instance="",job="sn"} 1`, `sn{instance="",job="sn2"} 2`, `gz{instance="",job="gz"} 1`}},
		},
		// Spec §3: an invalid base64 job is a 400; 1.5.1 wedges the
		// route afterwards, 1.6+ does not. pushrelay quotes the segment
		// as sent (a deliberate choice).
		"invalid base64 job": {
			{req: put("/metrics/job@base64/!!!", "m 1\n"), status: http.StatusBadRequest,
				body: "invalid base64 encoding in job name \"!!!\": illegal base64 data at input byte 0\n"},
			{req: post("/metrics/job@base64/YQ!/l/v", "m 1\n"), status: http.StatusBadRequest,
				body: "invalid base64 encoding in job name \"YQ!\": illegal base64 data at input byte 2\n"},
			{req: del("/metrics/job@base64/!!!"), status: http.StatusBadRequest,
				body: "invalid base64 encoding in job name \"!!!\": illegal base64 data at input byte 0\n"},
			{req: put("/metrics/job@base64/YQ", "m 2\n"), status: http.StatusOK},
			{req: put("/metrics/job@base64/YQ/l/v", "m 3\n"), status: http.StatusOK},
			{req: del("/metrics/job@base64/YQ/l/v"), status: http.StatusAccepted,
				lines: []string{`m{instance="",job="a"} 2`}},
		},
		// Spec §4: undecodable gzip is a 400 with the decoder's error; the
		// text parser of 1.5.1 ends the body at the first read error.
		"gzip stream broken after a valid header": {
			{req: req{method: http.MethodPut, path: "/metrics/job/gz3", body: []byte("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xffgarbage-deflate")}.with("Content-Encoding", "gzip"),
				status: http.StatusBadRequest, body: "flate: corrupt input before offset 1\n"},
		},
		// Spec §6: invalid names that the protobuf path lets through are
		// rejected by the consistency check; 1.5.1 stores them.
		"protobuf family with an invalid name": {
			{req: pushProto(http.MethodPut, "/metrics/job/pb4", family("pb bad name", dto.MetricType_GAUGE, "", gaugeMetric(1))),
				status: http.StatusBadRequest, bodyPrefix: "pushed metrics are invalid or inconsistent with existing metrics: "},
		},
		// Spec §4: a truncated or garbage protobuf body is a 400 with the
		// decoder's error.
		"undecodable protobuf bodies": {
			protoGarbage("\x05\x0a\x03ab"),
			protoGarbage("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
			protoGarbage("\x03\xff\xff\xff"),
			protoGarbage("\x02\x0a\x01a\x07"),
		},
		// Spec §7: gauge histograms pushed by protobuf are exposed in the
		// text format as histograms; 1.5.1 cannot encode them.
		"gauge histogram by protobuf": {
			{req: pushProto(http.MethodPut, "/metrics/job/gh", family("gh", dto.MetricType_GAUGE_HISTOGRAM, "Gauge histogram.", &dto.Metric{Histogram: &dto.Histogram{
				SampleCount: proto.Uint64(3), SampleSum: proto.Float64(6),
				Bucket: []*dto.Bucket{{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(1)}, {UpperBound: proto.Float64(5), CumulativeCount: proto.Uint64(3)}},
			}})), status: http.StatusOK, lines: []string{
				"# HELP gh Gauge histogram.",
				"# TYPE gh histogram",
				`gh_bucket{instance="",job="gh",le="1"} 1`,
				`gh_bucket{instance="",job="gh",le="5"} 3`,
				`gh_bucket{instance="",job="gh",le="+Inf"} 3`,
				`gh_sum{instance="",job="gh"} 6`,
				`gh_count{instance="",job="gh"} 3`,
			}},
		},
	}
	for name, rows := range scenarios {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			gw := startPushrelay(t)
			for _, row := range rows {
				r := do(t, row.req.method, gw.url+row.req.path, row.req.header, row.req.body)
				require.Equal(t, row.status, r.status, "%s %s: %s", row.req.method, row.req.path, r.body)
				if row.bodyPrefix != "" {
					require.True(t, strings.HasPrefix(string(r.body), row.bodyPrefix), "%s %s: body %q", row.req.method, row.req.path, r.body)
				} else {
					// The protobuf library words its errors with a space or a
					// no-break space, fixed per binary, to keep callers from
					// matching them: compare with one kind of space.
					require.Equal(t, nbspToSpace(row.body), nbspToSpace(string(r.body)), "%s %s", row.req.method, row.req.path)
				}
				if row.lines != nil {
					text, _ := scrape(t, gw)
					requireLines(t, text, row.lines...)
				}
			}
		})
	}
}

func nbspToSpace(s string) string { return strings.ReplaceAll(s, "\u00a0", " ") }
