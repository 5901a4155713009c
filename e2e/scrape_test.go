package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// withoutOwn drops the lines of own metric families from an exposition, so
// that scrapes taken one after the other compare equal.
func withoutOwn(text string) string {
	var out []string
	for _, line := range strings.SplitAfter(text, "\n") {
		name := line
		if rest, ok := strings.CutPrefix(line, "# "); ok {
			if fields := strings.Fields(rest); len(fields) >= 2 {
				name = fields[1]
			}
		}
		if ownFamily(name) {
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "")
}

// TestScrapeGzipDecoders checks that a gzip scrape, assembled from cached
// deflate segments of many chunks, decodes with Python's gzip and zlib
// modules and with curl to the same exposition as a plain scrape, in the
// text format and in OpenMetrics, before and after a change.
func TestScrapeGzipDecoders(t *testing.T) {
	e2eTest(t)
	requireDep(t, "python3", executable(pythonBin))
	curl, err := exec.LookPath("curl")
	requireDep(t, "curl", err)
	pr := startPushrelay(t)
	push := func(i, v int) {
		body := fmt.Sprintf("# HELP c_total A counter.\n# TYPE c_total counter\nc_total{a=\"x\"} %d\nc_total{a=\"y\"} %d\n"+
			"# TYPE h histogram\nh_bucket{le=\"1\"} %d\nh_bucket{le=\"+Inf\"} %d\nh_sum 1.5\nh_count %d\n", v, v+1, v, v+2, v+2)
		send(t, pr, http.MethodPut, fmt.Sprintf("/metrics/job/gz/instance/i%04d", i), body, http.StatusOK)
	}
	const groups = 700
	for i := range groups {
		push(i, i)
	}
	decoders := map[string]func(t *testing.T, accept string, gz []byte) string{
		"python gzip": func(t *testing.T, _ string, gz []byte) string {
			return python(t, "import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))", gz)
		},
		"python zlib": func(t *testing.T, _ string, gz []byte) string {
			return python(t, "import zlib, sys\n"+
				"d = zlib.decompressobj(wbits=31)\n"+
				"out = d.decompress(sys.stdin.buffer.read()) + d.flush()\n"+
				"assert d.eof and not d.unused_data, 'not exactly one gzip member'\n"+
				"sys.stdout.buffer.write(out)", gz)
		},
		"curl --compressed": func(t *testing.T, accept string, _ []byte) string {
			out, err := exec.Command(curl, "-sS", "--fail", "--compressed", "-H", "Accept: "+accept, pr.url+"/metrics").Output()
			require.NoError(t, err)
			return string(out)
		},
	}
	formats := map[string]string{
		"text":        "text/plain;version=0.0.4",
		"openmetrics": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
	}
	check := func(t *testing.T) {
		for name, accept := range formats {
			plain := do(t, http.MethodGet, pr.url+"/metrics", http.Header{"Accept": {accept}, "Accept-Encoding": {"identity"}}, nil)
			require.Equal(t, http.StatusOK, plain.status)
			gz := do(t, http.MethodGet, pr.url+"/metrics", http.Header{"Accept": {accept}, "Accept-Encoding": {"gzip"}}, nil)
			require.Equal(t, "gzip", gz.header.Get("Content-Encoding"))
			require.Equal(t, plain.header.Get("Content-Type"), gz.header.Get("Content-Type"))
			want := withoutOwn(string(plain.body))
			require.Equal(t, 2*groups, strings.Count(want, "c_total{"), "every group exposed")
			for decoder, decode := range decoders {
				require.Equal(t, want, withoutOwn(decode(t, accept, gz.body)), "%s, %s", name, decoder)
			}
		}
	}
	t.Run("filled", check)
	for i := 0; i < groups; i += 50 {
		push(i, 10*i)
	}
	send(t, pr, http.MethodDelete, "/metrics/job/gz/instance/i0001", "", http.StatusAccepted)
	push(groups, 1)
	t.Run("changed", check)
}

// python runs a script with stdin and returns its standard output.
func python(t *testing.T, script string, stdin []byte) string {
	t.Helper()
	cmd := exec.Command(pythonBin, "-c", script)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	return string(out)
}
