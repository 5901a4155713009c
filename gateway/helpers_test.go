package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/pushrelay/pushrelay/gateway"
	"github.com/pushrelay/pushrelay/persistence"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// protoContentType is the Content-Type of a delimited protobuf push body and
// the Accept header asking for a delimited protobuf exposition.
const protoContentType = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"

// t0 is the fake clock's start: push_time_seconds of a push at t0+n seconds
// reads 1.70000000n e+09.
var t0 = time.Unix(1_700_000_000, 0).UTC()

// fakeClock is a clock for StoreOptions.Now that only moves when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// gatewayConfig configures MustNewGateway.
type gatewayConfig struct {
	// handler is copied into every handler the gateway builds; Registry
	// is replaced by a fresh registry per handler.
	handler gateway.HandlerOptions
	// own registers own metrics in each fresh registry before the store
	// is created.
	own func(*prometheus.Registry)
}

// testGateway is a real store on a temporary bbolt file behind the real
// handler, with a fake clock.
type testGateway struct {
	t       *testing.T
	cfg     gatewayConfig
	path    string
	clock   *fakeClock
	db      *persistence.DB
	store   *gateway.Store
	reg     *prometheus.Registry
	handler http.Handler
}

// MustNewGateway opens a store on a new bbolt file under t.TempDir() and
// builds its handler. Cleanup closes the store and the file and checks that
// the file can be opened again.
func MustNewGateway(t *testing.T, opts ...func(*gatewayConfig)) *testGateway {
	t.Helper()
	g := &testGateway{t: t, path: filepath.Join(t.TempDir(), "data", "pushrelay.db"), clock: &fakeClock{now: t0}}
	for _, o := range opts {
		o(&g.cfg)
	}
	g.start()
	t.Cleanup(func() {
		g.stop()
		db, err := persistence.Open(g.path, nil)
		require.NoError(t, err, "persistence file must reopen after the test")
		require.NoError(t, db.Close())
	})
	return g
}

func withHandler(f func(*gateway.HandlerOptions)) func(*gatewayConfig) {
	return func(c *gatewayConfig) { f(&c.handler) }
}

func withOwn(f func(*prometheus.Registry)) func(*gatewayConfig) {
	return func(c *gatewayConfig) { c.own = f }
}

func (g *testGateway) start() {
	g.t.Helper()
	db, err := persistence.Open(g.path, nil)
	require.NoError(g.t, err)
	g.db = db
	persister := gateway.Persister(db)
	g.reg = prometheus.NewRegistry()
	if g.cfg.own != nil {
		g.cfg.own(g.reg)
	}
	store, err := gateway.NewStore(gateway.StoreOptions{Persister: persister, Own: g.reg, Now: g.clock.Now})
	require.NoError(g.t, err)
	g.store = store
	ho := g.cfg.handler
	ho.Registry = g.reg
	g.handler = gateway.NewHandler(store, ho)
}

func (g *testGateway) stop() {
	if g.store != nil {
		g.store.Close()
		g.store = nil
	}
	if g.db != nil {
		require.NoError(g.t, g.db.Close())
		g.db = nil
	}
}

// Restart closes the store and the file, then opens both again.
func (g *testGateway) Restart() {
	g.t.Helper()
	g.stop()
	g.start()
}

// At sets the fake clock to t0 plus sec seconds.
func (g *testGateway) At(sec float64) *testGateway {
	g.clock.Set(t0.Add(time.Duration(sec * float64(time.Second))))
	return g
}

// Do serves one request; headers are name/value pairs.
func (g *testGateway) Do(method, target string, body []byte, headers ...string) *httptest.ResponseRecorder {
	g.t.Helper()
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	g.handler.ServeHTTP(rec, req)
	return rec
}

// MustDo serves one request and requires the status code.
func (g *testGateway) MustDo(code int, method, target, body string, headers ...string) string {
	g.t.Helper()
	rec := g.Do(method, target, []byte(body), headers...)
	require.Equal(g.t, code, rec.Code, "%s %s answered %q", method, target, rec.Body.String())
	return rec.Body.String()
}

// Metrics returns GET /metrics in the text format without the families of
// the own registry (pushrelay_*, promhttp_*), which count requests.
func (g *testGateway) Metrics() string {
	g.t.Helper()
	return withoutOwn(g.MustDo(http.StatusOK, http.MethodGet, "/metrics", ""))
}

// Samples returns the sample lines of GET /metrics without HELP and TYPE
// lines and without the own registry's families.
func (g *testGateway) Samples() string {
	return samplesOnly(g.Metrics())
}

// APIMetrics returns the data of /api/v1/metrics.
func (g *testGateway) APIMetrics() []map[string]any {
	g.t.Helper()
	var resp struct {
		Status string           `json:"status"`
		Data   []map[string]any `json:"data"`
	}
	require.NoError(g.t, json.Unmarshal([]byte(g.MustDo(http.StatusOK, http.MethodGet, "/api/v1/metrics", "")), &resp))
	require.Equal(g.t, "success", resp.Status)
	return resp.Data
}

// ownPrefixes are the name prefixes of the families the handler registers
// in its own registry.
var ownPrefixes = []string{"pushrelay_", "promhttp_"}

func isOwnFamily(name string) bool {
	for _, p := range ownPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// withoutOwn drops every line of a text or OpenMetrics exposition that
// belongs to an own family.
func withoutOwn(text string) string {
	var sb strings.Builder
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		line := sc.Text()
		name := line
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			name = rest
		} else if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name = rest
		}
		if isOwnFamily(name) {
			continue
		}
		sb.WriteString(line)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// samplesOnly drops HELP and TYPE lines.
func samplesOnly(text string) string {
	var sb strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		if strings.HasPrefix(line, "# ") {
			continue
		}
		sb.WriteString(line)
	}
	return sb.String()
}

// lines joins lines with a final newline.
func lines(ls ...string) string {
	if len(ls) == 0 {
		return ""
	}
	return strings.Join(ls, "\n") + "\n"
}

// delimited encodes families as a delimited protobuf push body.
func delimited(t testing.TB, mfs ...*dto.MetricFamily) string {
	t.Helper()
	var buf bytes.Buffer
	for _, mf := range mfs {
		_, err := protodelim.MarshalTo(&buf, mf)
		require.NoError(t, err)
	}
	return buf.String()
}

// readDelimited decodes a delimited protobuf exposition.
func readDelimited(t testing.TB, r io.Reader) []*dto.MetricFamily {
	t.Helper()
	var mfs []*dto.MetricFamily
	br := bufio.NewReader(r)
	for {
		mf := &dto.MetricFamily{}
		err := protodelim.UnmarshalFrom(br, mf)
		if err == io.EOF {
			return mfs
		}
		require.NoError(t, err)
		mfs = append(mfs, mf)
	}
}

// requireGolden compares got with testdata/name, or rewrites the file when
// the test runs with -update.
func requireGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create the golden file")
	require.Equal(t, string(want), string(got), "golden file %s differs; run go test -update to rewrite it", path)
}

// label returns a label pair.
func label(name, value string) *dto.LabelPair {
	return &dto.LabelPair{Name: &name, Value: &value}
}

func ptr[T any](v T) *T { return &v }

// parseText parses a text-format exposition.
func parseText(text string) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(strings.NewReader(text))
}

// checkGather runs client_golang's gather checks (types, duplicate series,
// suffix collisions, label names) over families.
func checkGather(mfs map[string]*dto.MetricFamily) error {
	_, err := prometheus.Gatherers{prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		out := make([]*dto.MetricFamily, 0, len(mfs))
		for _, mf := range mfs {
			out = append(out, mf)
		}
		return out, nil
	})}.Gather()
	return err
}
