package gateway_test

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/klauspost/compress/snappy"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/gateway"
)

// familyTypes summarises parsed families as "name:TYPE:metrics".
func familyTypes(mfs map[string]*dto.MetricFamily) string {
	var out []string
	for name, mf := range mfs {
		out = append(out, name+":"+mf.GetType().String()+":"+string(rune('0'+len(mf.Metric))))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestParseBody(t *testing.T) {
	gaugeFamily := func(name string, v float64) *dto.MetricFamily {
		return &dto.MetricFamily{Name: ptr(name), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr(v)}}}}
	}
	pb := delimited(t, gaugeFamily("a", 1), gaugeFamily("b", 2))
	scenarios := map[string]struct {
		body        string
		contentType string
		want        string
		err         string
	}{
		"empty text body":           {body: "", want: ""},
		"empty protobuf body":       {body: "", contentType: protoContentType, want: ""},
		"text without type":         {body: "m 1\n", want: "m:UNTYPED:1"},
		"text, every type":          {body: "# TYPE c counter\nc 1\n# TYPE g gauge\ng 1\n# TYPE s summary\ns_sum 1\n# TYPE h histogram\nh_count 1\n", want: "c:COUNTER:1 g:GAUGE:1 h:HISTOGRAM:1 s:SUMMARY:1"},
		"JSON content type is text": {body: "m 1\n", contentType: "application/json", want: "m:UNTYPED:1"},
		"form content type is text": {body: "m 1\n", contentType: "application/x-www-form-urlencoded", want: "m:UNTYPED:1"},
		"OpenMetrics body is read as text": {
			body: "# TYPE x counter\nx_total 1\n# EOF\n", contentType: "application/openmetrics-text; version=1.0.0",
			want: "x_total:UNTYPED:1",
		},
		"protobuf":                       {body: pb, contentType: protoContentType, want: "a:GAUGE:1 b:GAUGE:1"},
		"protobuf params in any order":   {body: pb, contentType: "application/vnd.google.protobuf;encoding=delimited;proto=io.prometheus.client.MetricFamily", want: "a:GAUGE:1 b:GAUGE:1"},
		"protobuf params with spaces":    {body: pb, contentType: "application/vnd.google.protobuf ;  proto=io.prometheus.client.MetricFamily ; encoding=delimited", want: "a:GAUGE:1 b:GAUGE:1"},
		"protobuf without encoding":      {body: "m 1\n", contentType: "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily", want: "m:UNTYPED:1"},
		"later protobuf family wins":     {body: delimited(t, gaugeFamily("a", 1), &dto.MetricFamily{Name: ptr("a"), Type: dto.MetricType_COUNTER.Enum()}), contentType: protoContentType, want: "a:COUNTER:0"},
		"CRLF":                           {body: "m 1\r\n", err: `text format parsing error in line 1: expected float as value, got "1\r"`},
		"missing final newline":          {body: "m 1", err: "text format parsing error in line 1: unexpected end of input stream"},
		"TYPE after samples":             {body: "m 1\n# TYPE m gauge\n", err: `text format parsing error in line 2: second TYPE line for metric name "m", or TYPE reported after samples`},
		"truncated protobuf":             {body: pb[:len(pb)-3], contentType: protoContentType, err: "unexpected EOF"},
		"garbage protobuf":               {body: "\x05\xff\xff\xff\xff\xff", contentType: protoContentType, err: "cannot parse invalid wire-format data"},
		"protobuf body read as text":     {body: pb, err: "text format parsing error"},
		"label value escapes":            {body: "m{a=\"\\\"\\\\\\n\"} 1\n", want: "m:UNTYPED:1"},
		"help escapes":                   {body: "# HELP m a\\\\b\\nc\nm 1\n", want: "m:UNTYPED:1"},
		"declared family without sample": {body: "# TYPE x counter\n# HELP x h\n", want: ""},
	}
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			mfs, err := gateway.ParseBody(strings.NewReader(s.body), s.contentType)
			if s.err != "" {
				require.ErrorContains(t, err, s.err)
				if strings.HasPrefix(s.err, "text format") && !strings.HasSuffix(s.err, "error") {
					require.EqualError(t, err, s.err)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, s.want, familyTypes(mfs))
		})
	}
}

// TestContentEncoding pushes compressed bodies through the handler.
func TestContentEncoding(t *testing.T) {
	body := "m 1\n"
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(body))
	require.NoError(t, zw.Close())
	var sn bytes.Buffer
	sw := snappy.NewBufferedWriter(&sn)
	_, _ = sw.Write([]byte(body))
	require.NoError(t, sw.Close())

	scenarios := map[string]struct {
		body     []byte
		encoding string
		code     int
		resp     string
	}{
		"gzip":                 {body: gz.Bytes(), encoding: "gzip", code: 200},
		"gzip upper case":      {body: gz.Bytes(), encoding: "GZIP", code: 200},
		"snappy framed":        {body: sn.Bytes(), encoding: "snappy", code: 200},
		"snappy mixed case":    {body: sn.Bytes(), encoding: "Snappy", code: 200},
		"unknown encoding":     {body: []byte(body), encoding: "br", code: 200},
		"identity":             {body: []byte(body), encoding: "identity", code: 200},
		"not gzip":             {body: []byte("m 1\nm2 2\nm3 3\n"), encoding: "gzip", code: 400, resp: "gzip: invalid header"},
		"truncated gzip":       {body: gz.Bytes()[:gz.Len()-6], encoding: "gzip", code: 400, resp: "unexpected EOF"},
		"gzip body, no header": {body: gz.Bytes(), code: 400},
		"empty gzip body":      {body: nil, encoding: "gzip", code: 400, resp: "EOF"},
	}
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			g := MustNewGateway(t)
			headers := []string{}
			if s.encoding != "" {
				headers = append(headers, "Content-Encoding", s.encoding)
			}
			rec := g.At(1).Do(http.MethodPut, "/metrics/job/j", s.body, headers...)
			require.Equal(t, s.code, rec.Code, rec.Body.String())
			if s.code == http.StatusOK {
				require.Equal(t, lines(`m{instance="",job="j"} 1`), withoutPushTimes(g.Samples()))
				return
			}
			if s.resp != "" {
				require.Contains(t, rec.Body.String(), s.resp)
			}
			require.Empty(t, g.APIMetrics(), "a body that cannot be decoded creates no group")
		})
	}
}
