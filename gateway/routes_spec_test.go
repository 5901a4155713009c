package gateway_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/gateway"
	"github.com/pushrelay/pushrelay/persistence"
)

// TestRoutes checks status codes and bodies of every route for several
// handler configurations. Bodies are compared without a trailing newline.
func TestRoutes(t *testing.T) {
	type request struct {
		method, path string
		code         int
		body         string
		// contains, when set, replaces the exact body check.
		contains string
		// allow, when set, is the Allow header wanted.
		allow string
		// location, when set, is the Location header wanted.
		location string
	}
	scenarios := map[string]struct {
		opts     func(*gateway.HandlerOptions)
		requests []request
	}{
		"defaults": {
			requests: []request{
				{method: "GET", path: "/-/healthy", code: 200, body: "OK"},
				{method: "GET", path: "/-/ready", code: 200, body: "OK"},
				{method: "POST", path: "/-/healthy", code: 405, body: "Method Not Allowed", allow: "GET, OPTIONS"},
				{method: "OPTIONS", path: "/-/healthy", code: 200, allow: "GET, OPTIONS"},
				{method: "HEAD", path: "/metrics", code: 405, body: "Method Not Allowed", allow: "GET, OPTIONS"},
				{method: "OPTIONS", path: "/metrics", code: 200, allow: "GET, OPTIONS"},
				{method: "POST", path: "/metrics", code: 405, body: "Method Not Allowed", allow: "GET, OPTIONS"},
				{method: "GET", path: "/metrics", code: 200, contains: "# TYPE pushrelay_http_requests_total counter"},
				{method: "GET", path: "/metrics/job/x", code: 405, body: "Method Not Allowed", allow: "DELETE, OPTIONS, POST, PUT"},
				{method: "OPTIONS", path: "/metrics/job/x/a/b", code: 200, allow: "DELETE, OPTIONS, POST, PUT"},
				{method: "OPTIONS", path: "/no/such/path", code: 404, body: "404 page not found"},
				{method: "OPTIONS", path: "/-/quit", code: 200, allow: "GET, OPTIONS, POST, PUT"},
				{method: "PATCH", path: "/metrics/job/x", code: 405, body: "Method Not Allowed", allow: "DELETE, OPTIONS, POST, PUT"},
				{method: "GET", path: "/metrics/job", code: 404, body: "404 page not found"},
				{method: "GET", path: "/no/such/path", code: 404, body: "404 page not found"},
				{method: "PUT", path: "/-/quit", code: 403, body: "Lifecycle API is not enabled."},
				{method: "POST", path: "/-/quit", code: 403, body: "Lifecycle API is not enabled."},
				{method: "GET", path: "/-/quit", code: 405, body: "Only POST or PUT requests allowed."},
				{method: "GET", path: "/api/v1/metrics", code: 200, body: `{"status":"success","data":[]}`},
				{method: "PUT", path: "/api/v1/metrics", code: 405, body: "Method Not Allowed", allow: "GET, OPTIONS"},
				{method: "OPTIONS", path: "/api/v1/whatever", code: 200, body: ""},
				// The Pushgateway's router redirects a path with a trailing
				// slash too many or too few, or with the fixed parts of a
				// route in other case: 301 for a GET (and for any method at
				// the JSON API's root), 307 otherwise.
				{method: "GET", path: "/api/v1/metrics/", code: 301, contains: "Moved Permanently", location: "/api/v1/metrics"},
				{method: "PUT", path: "/-/quit/", code: 307, location: "/-/quit"},
				{method: "GET", path: "/api/v1", code: 301, contains: "Moved Permanently", location: "/api/v1/"},
				{method: "PUT", path: "/api/v1", code: 301, location: "/api/v1/"},
				{method: "GET", path: "/Metrics", code: 301, contains: "Moved Permanently", location: "/metrics"},
				{method: "GET", path: "/-/Healthy", code: 301, contains: "Moved Permanently", location: "/-/healthy"},
				{method: "GET", path: "/Metrics/", code: 301, contains: "Moved Permanently", location: "/metrics"},
				{method: "GET", path: "/Metrics?x=1", code: 301, contains: "Moved Permanently", location: "/metrics?x=1"},
				{method: "GET", path: "/Static", code: 301, contains: "Moved Permanently", location: "/static/"},
				{method: "GET", path: "/metric%C5%BF", code: 404, body: "404 page not found"},
				// The JSON API's subtree is matched in exact case; within it,
				// the redirects keep its prefix (the Pushgateway's lose it).
				{method: "GET", path: "/API/V1/Status", code: 404, body: "404 page not found"},
				{method: "OPTIONS", path: "/API/v1/metrics", code: 404, body: "404 page not found"},
				{method: "GET", path: "/api/v1/Status", code: 301, contains: "Moved Permanently", location: "/api/v1/status"},
				{method: "PUT", path: "/metrics/Job/a/Label/V", code: 307, location: "/metrics/job/a/Label/V"},
				{method: "POST", path: "/Metrics/job@BASE64/YQ", code: 307, location: "/metrics/job@base64/YQ"},
				{method: "DELETE", path: "/METRICS/JOB/a", code: 307, location: "/metrics/job/a"},
				{method: "GET", path: "/METRICS/JOB/a", code: 404, body: "404 page not found"},
				{method: "PUT", path: "/metrics/job", code: 404, body: "404 page not found"},
				{method: "PUT", path: "/Metrics/Job/", code: 404, body: "404 page not found"},
				{method: "DELETE", path: "/Metrics/Job@Base64/", code: 404, body: "404 page not found"},
				{method: "PUT", path: "/metrics/job/?x=1", code: 307, location: "/metrics/job?x=1"},
			},
		},
		"admin API enabled": {
			opts: func(o *gateway.HandlerOptions) { o.EnableAdminAPI = true },
			requests: []request{
				{method: "PUT", path: "/metrics/job/a", code: 200},
				{method: "GET", path: "/api/v1/admin/wipe", code: 405, body: "Method Not Allowed", allow: "OPTIONS, PUT"},
				{method: "POST", path: "/api/v1/admin/wipe", code: 405, body: "Method Not Allowed", allow: "OPTIONS, PUT"},
				{method: "PUT", path: "/api/v1/admin/wipe", code: 202, body: ""},
				{method: "GET", path: "/api/v1/metrics", code: 200, body: `{"status":"success","data":[]}`},
			},
		},
		"lifecycle enabled": {
			opts: func(o *gateway.HandlerOptions) { o.EnableLifecycle = true },
			requests: []request{
				{method: "PUT", path: "/-/quit", code: 200, body: "Requesting termination... Goodbye!"},
				{method: "POST", path: "/-/quit", code: 200, body: "Requesting termination... Goodbye!"},
				{method: "GET", path: "/-/quit", code: 405, body: "Only POST or PUT requests allowed."},
			},
		},
		"route prefix": {
			opts: func(o *gateway.HandlerOptions) { o.RoutePrefix = "pfx/"; o.EnableAdminAPI = true },
			requests: []request{
				{method: "PUT", path: "/pfx/metrics/job/a", code: 200},
				{method: "GET", path: "/pfx/metrics", code: 200, contains: `push_time_seconds{instance="",job="a"}`},
				{method: "GET", path: "/pfx/-/healthy", code: 200, body: "OK"},
				{method: "GET", path: "/pfx/-/ready", code: 200, body: "OK"},
				{method: "GET", path: "/pfx/api/v1/status", code: 200, contains: `"status":"success"`},
				{method: "OPTIONS", path: "/pfx/api/v1/x", code: 200},
				{method: "OPTIONS", path: "/pfx/metrics/job/a", code: 200, allow: "DELETE, OPTIONS, POST, PUT"},
				{method: "OPTIONS", path: "/pfx/metrics", code: 200, allow: "GET, OPTIONS"},
				{method: "POST", path: "/pfx/-/healthy", code: 405, body: "Method Not Allowed", allow: "GET, OPTIONS"},
				{method: "OPTIONS", path: "/metrics", code: 404, body: "404 page not found"},
				{method: "PUT", path: "/pfx/-/quit", code: 403, body: "Lifecycle API is not enabled."},
				{method: "GET", path: "/-/quit", code: 405, body: "Only POST or PUT requests allowed."},
				{method: "PUT", path: "/metrics/job/a", code: 404, body: "404 page not found"},
				{method: "GET", path: "/metrics", code: 404, body: "404 page not found"},
				{method: "GET", path: "/-/healthy", code: 404, body: "404 page not found"},
				{method: "GET", path: "/api/v1/metrics", code: 404, body: "404 page not found"},
				{method: "GET", path: "/pfx", code: 301, contains: "Moved Permanently", location: "/pfx/"},
				{method: "GET", path: "/PFX/-/ready", code: 301, contains: "Moved Permanently", location: "/pfx/-/ready"},
				{method: "GET", path: "/PFX", code: 301, contains: "Moved Permanently", location: "/pfx/"},
				{method: "DELETE", path: "/pfx/metrics/job/a", code: 202},
				{method: "PUT", path: "/pfx/api/v1/admin/wipe", code: 202},
			},
		},
		"telemetry path": {
			opts: func(o *gateway.HandlerOptions) { o.TelemetryPath = "/telemetry" },
			requests: []request{
				{method: "PUT", path: "/metrics/job/a", code: 200},
				{method: "GET", path: "/telemetry", code: 200, contains: `push_time_seconds{instance="",job="a"}`},
				{method: "GET", path: "/metrics", code: 404, body: "404 page not found"},
			},
		},
		"telemetry path under a prefix": {
			opts: func(o *gateway.HandlerOptions) { o.TelemetryPath = "/telemetry"; o.RoutePrefix = "/p" },
			requests: []request{
				{method: "PUT", path: "/p/metrics/job/a", code: 200},
				{method: "GET", path: "/p/telemetry", code: 200, contains: `push_time_seconds{instance="",job="a"}`},
			},
		},
	}
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			var opts []func(*gatewayConfig)
			if s.opts != nil {
				opts = append(opts, withHandler(s.opts))
			}
			g := MustNewGateway(t, opts...)
			for _, r := range s.requests {
				rec := g.Do(r.method, r.path, nil)
				require.Equal(t, r.code, rec.Code, "%s %s: %q", r.method, r.path, rec.Body.String())
				got := strings.TrimSuffix(rec.Body.String(), "\n")
				if r.contains != "" {
					require.Contains(t, got, r.contains, "%s %s", r.method, r.path)
				} else {
					require.Equal(t, r.body, got, "%s %s", r.method, r.path)
				}
				if r.allow != "" {
					require.Equal(t, r.allow, rec.Header().Get("Allow"), "%s %s", r.method, r.path)
				}
				require.Equal(t, r.location, rec.Header().Get("Location"), "%s %s", r.method, r.path)
				if rec.Code >= 400 && r.method != http.MethodHead {
					require.Equal(t, "text/plain; charset=utf-8", rec.Header().Get("Content-Type"), "%s %s", r.method, r.path)
				}
			}
		})
	}
}

func TestQuitCallsQuit(t *testing.T) {
	quit := make(chan struct{}, 1)
	g := MustNewGateway(t, withHandler(func(o *gateway.HandlerOptions) {
		o.EnableLifecycle = true
		o.Quit = func() { quit <- struct{}{} }
	}))
	g.MustDo(http.StatusOK, http.MethodPost, "/-/quit", "")
	select {
	case <-quit:
	case <-time.After(10 * time.Second):
		t.Fatal("Quit was not called")
	}
}

func TestWipe(t *testing.T) {
	g := MustNewGateway(t, withHandler(func(o *gateway.HandlerOptions) { o.EnableAdminAPI = true }))
	g.At(1).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/a", "m 1\n")
	g.At(2).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/b/instance/i", "m 2\n")
	g.At(3).MustDo(http.StatusAccepted, http.MethodPut, "/api/v1/admin/wipe", "")
	require.Eventually(t, func() bool { return g.Samples() == "" }, 10*time.Second, 10*time.Millisecond)
	g.Restart()
	require.Empty(t, g.Samples(), "a wipe is persisted")
	g.At(4).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/a", "# TYPE m counter\nm 1\n")
}

// blockingPersister is a Persister whose commits wait until released.
type blockingPersister struct {
	release chan struct{}
	once    sync.Once
}

func (p *blockingPersister) Commit([]persistence.Op) error {
	<-p.release
	return nil
}

func (p *blockingPersister) Load(func(*persistence.Group) error) error { return nil }
func (p *blockingPersister) Probe() error                              { return nil }
func (p *blockingPersister) Release()                                  { p.once.Do(func() { close(p.release) }) }

// TestHealthWhenQueueFull fills the write queue behind a commit that does
// not return: /-/healthy and /-/ready then answer 500.
func TestHealthWhenQueueFull(t *testing.T) {
	p := &blockingPersister{release: make(chan struct{})}
	store, err := gateway.NewStore(gateway.StoreOptions{Persister: p})
	require.NoError(t, err)
	t.Cleanup(store.Close)
	t.Cleanup(p.Release)
	h := gateway.NewHandler(store, gateway.HandlerOptions{})
	g := &testGateway{t: t, handler: h}
	g.MustDo(http.StatusOK, http.MethodGet, "/-/healthy", "")

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			mfs := map[string]*dto.MetricFamily{}
			if err := store.Push(gateway.Grouping{"job": "j"}, mfs, false, false); err != nil {
				return
			}
			select {
			case <-p.release:
				return
			default:
			}
		}
	}()
	require.Eventually(t, func() bool {
		return g.Do(http.MethodGet, "/-/healthy", nil).Code == http.StatusInternalServerError
	}, 30*time.Second, time.Millisecond)
	require.Equal(t, "write queue is full\n", g.MustDo(http.StatusInternalServerError, http.MethodGet, "/-/ready", ""))
	p.Release()
	<-done
	require.Eventually(t, func() bool {
		return g.Do(http.MethodGet, "/-/healthy", nil).Code == http.StatusOK
	}, 30*time.Second, time.Millisecond)
}
