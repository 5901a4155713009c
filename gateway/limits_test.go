package gateway

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/stretchr/testify/require"
)

// TestLimits checks that every limit answers with its status and a message
// naming the flag, and that nothing stored changes.
func TestLimits(t *testing.T) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		_, _ = w.Write([]byte(s))
		_ = w.Close()
		return b.Bytes()
	}
	big := strings.Repeat("m{x=\"1234567890\"} 1\n", 200) // 4 KiB of duplicate-free-looking text
	scenarios := map[string]struct {
		limits   Limits
		maxBody  int64
		setup    []string // bodies PUT before, each to /metrics/job/setup<i>
		method   string
		path     string
		body     []byte
		encoding string
		wantCode int
		wantMsg  string
	}{
		"body over the limit": {
			maxBody: 1024, method: http.MethodPut, path: "/metrics/job/a", body: []byte(big),
			wantCode: http.StatusRequestEntityTooLarge, wantMsg: "push body exceeds the limit of 1024 bytes (--push.max-body-bytes)",
		},
		"gzip bomb over the limit once decompressed": {
			maxBody: 1024, method: http.MethodPut, path: "/metrics/job/a", body: gz(strings.Repeat("# comment\n", 1000)), encoding: "gzip",
			wantCode: http.StatusRequestEntityTooLarge, wantMsg: "--push.max-body-bytes",
		},
		"too many groups": {
			limits: Limits{MaxGroups: 2}, setup: []string{"m 1\n", "m 2\n"},
			method: http.MethodPut, path: "/metrics/job/third", body: []byte("m 3\n"),
			wantCode: http.StatusInsufficientStorage, wantMsg: "maximum of 2 groups (--push.max-groups)",
		},
		"existing group under the group limit": {
			limits: Limits{MaxGroups: 2}, setup: []string{"m 1\n", "m 2\n"},
			method: http.MethodPut, path: "/metrics/job/setup0", body: []byte("m 3\n"),
			wantCode: http.StatusOK,
		},
		"too many series in a push": {
			limits: Limits{MaxSeriesPerGroup: 2}, method: http.MethodPut, path: "/metrics/job/a",
			body:     []byte("m{a=\"1\"} 1\nm{a=\"2\"} 1\nm{a=\"3\"} 1\n"),
			wantCode: http.StatusRequestEntityTooLarge, wantMsg: "would hold 3 series, more than the limit of 2 (--push.max-series-per-group)",
		},
		"POST adding series beyond the limit": {
			limits: Limits{MaxSeriesPerGroup: 2}, setup: []string{"m{a=\"1\"} 1\nm{a=\"2\"} 1\n"},
			method: http.MethodPost, path: "/metrics/job/setup0", body: []byte("other 1\n"),
			wantCode: http.StatusRequestEntityTooLarge, wantMsg: "would hold 3 series",
		},
		"POST replacing a family within the limit": {
			limits: Limits{MaxSeriesPerGroup: 2}, setup: []string{"m{a=\"1\"} 1\nm{a=\"2\"} 1\n"},
			method: http.MethodPost, path: "/metrics/job/setup0", body: []byte("m 5\n"),
			wantCode: http.StatusOK,
		},
		"label name too long": {
			limits: Limits{MaxLabelNameLength: 8}, method: http.MethodPut, path: "/metrics/job/a",
			body:     []byte("m{a_very_long_label=\"x\"} 1\n"),
			wantCode: http.StatusBadRequest, wantMsg: "more than the limit of 8 (--push.max-label-name-length)",
		},
		"label value too long": {
			limits: Limits{MaxLabelValueLength: 4}, method: http.MethodPut, path: "/metrics/job/a",
			body:     []byte("m{a=\"12345\"} 1\n"),
			wantCode: http.StatusBadRequest, wantMsg: "value of label \"a\" of metric \"m\" is 5 bytes long, more than the limit of 4 (--push.max-label-value-length)",
		},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			st, err := NewStore(StoreOptions{Limits: sc.limits})
			require.NoError(t, err)
			defer st.Close()
			h := NewHandler(st, HandlerOptions{MaxBodyBytes: sc.maxBody})
			serve := func(method, path string, body []byte, encoding string) *httptest.ResponseRecorder {
				req := httptest.NewRequest(method, path, bytes.NewReader(body))
				if encoding != "" {
					req.Header.Set("Content-Encoding", encoding)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				return rec
			}
			for i, body := range sc.setup {
				rec := serve(http.MethodPut, "/metrics/job/setup"+string(rune('0'+i)), []byte(body), "")
				require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			}
			before := serve(http.MethodGet, "/metrics", nil, "").Body.String()
			rec := serve(sc.method, sc.path, sc.body, sc.encoding)
			require.Equal(t, sc.wantCode, rec.Code, rec.Body.String())
			require.Contains(t, rec.Body.String(), sc.wantMsg)
			if sc.wantCode != http.StatusOK {
				after := serve(http.MethodGet, "/metrics", nil, "").Body.String()
				require.Equal(t, pushedLines(before), pushedLines(after), "a refused push changes nothing")
			}
		})
	}
}

// pushedLines keeps the exposition lines of pushed metrics.
func pushedLines(exposition string) []string {
	var out []string
	for _, l := range strings.Split(exposition, "\n") {
		if strings.Contains(l, `job="`) {
			out = append(out, l)
		}
	}
	return out
}

// TestPprofRoutes checks that every profile is reachable, not only the index.
func TestPprofRoutes(t *testing.T) {
	st, err := NewStore(StoreOptions{})
	require.NoError(t, err)
	defer st.Close()
	h := NewHandler(st, HandlerOptions{})
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/symbol", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		require.Equal(t, http.StatusOK, rec.Code, path)
	}
}
