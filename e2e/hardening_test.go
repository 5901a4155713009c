package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
)

// hardCert writes a self-signed ECDSA certificate for 127.0.0.1 and
// localhost with its key into dir and returns their paths and a pool that
// trusts it.
func hardCert(t *testing.T, dir string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "pushrelay e2e"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// hardHash returns a bcrypt hash of password (minimal cost: the tests
// check authorization, not bcrypt).
func hardHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	require.NoError(t, err)
	return string(h)
}

// hardWrite writes content to dir/name and returns its path.
func hardWrite(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// hardProc is a pushrelay started with the web listener and all three
// trace receivers on loopback ports.
type hardProc struct {
	*process
	otlpGRPC, otlpHTTP, zipkin string // 127.0.0.1:port
}

// hardStart starts pushrelay with flags, the three trace receivers on free
// loopback ports, and waits until every listener logged its address and
// /-/ready answers 200 through client at scheme://addr (with user and
// password, if user is set).
func hardStart(t *testing.T, client *http.Client, scheme, user, password string, flags ...string) *hardProc {
	t.Helper()
	receivers := []string{"--traces.otlp-grpc.listen-address", "--traces.otlp-http.listen-address", "--traces.zipkin.listen-address"}
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		hp := &hardProc{}
		spec := pushrelaySpec(flags...)
		base := spec.args
		spec.args = func(addr string) []string {
			args := slices.DeleteFunc(base(addr), func(a string) bool {
				return slices.ContainsFunc(receivers, func(r string) bool { return strings.HasPrefix(a, r+"=") })
			})
			free := func() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))) }
			hp.otlpGRPC, hp.otlpHTTP, hp.zipkin = free(), free(), free()
			return append(args, receivers[0]+"="+hp.otlpGRPC, receivers[1]+"="+hp.otlpHTTP, receivers[2]+"="+hp.zipkin)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		p := launch(t, spec, addr, filepath.Join(dir, fmt.Sprintf("pushrelay-%d.log", attempt)))
		p.url = scheme + "://" + addr
		hp.process = p
		err := hardWaitReady(hp, client, user, password)
		if err == nil {
			return hp
		}
		p.kill()
		if attempt < portAttempts && strings.Contains(p.log(), "address already in use") {
			t.Logf("pushrelay: a port was taken, retrying")
			continue
		}
		require.NoError(t, err, "pushrelay did not start; log %s:\n%s", p.logPath, p.log())
	}
}

func hardWaitReady(hp *hardProc, client *http.Client, user, password string) error {
	logs := []string{hp.addr, hp.otlpGRPC, hp.otlpHTTP, hp.zipkin}
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-hp.exited:
			return fmt.Errorf("pushrelay exited before it was ready: %v", hp.waitErr)
		default:
		}
		log := hp.log()
		if !slices.ContainsFunc(logs, func(a string) bool { return !listenLog(a).MatchString(log) }) {
			req, err := http.NewRequest(http.MethodGet, hp.url+"/-/ready", nil)
			if err != nil {
				return err
			}
			if user != "" {
				req.SetBasicAuth(user, password)
			}
			if resp, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pushrelay not ready on %s after %v", hp.url, startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hardStatus is doWith that fails t on a transport error and returns the
// status and body.
func hardStatus(t *testing.T, client *http.Client, method, url, user, password string, header http.Header, body []byte) (int, string) {
	t.Helper()
	r, err := doWith(client, method, url, user, password, header, body)
	require.NoError(t, err, "%s %s", method, url)
	return r.status, string(r.body)
}

// hardSpans returns one OTLP request with a server span of service that
// ended just now.
func hardSpans(service string) ptraceotlp.ExportRequest {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", service)
	s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	now := time.Now()
	s.SetTraceID(pcommon.TraceID{0x5a, 0xf7, 0x18, 0x3f, 0xb1, 0xd4, 0xcf, 0x5f, 1})
	s.SetSpanID(pcommon.SpanID{0x6b, 0x22, 0x1d, 0x5b, 1})
	s.SetName("GET /hardening")
	s.SetKind(ptrace.SpanKindServer)
	s.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-5 * time.Millisecond)))
	s.SetEndTimestamp(pcommon.NewTimestampFromTime(now))
	return ptraceotlp.NewExportRequestFromTraces(td)
}

// hardZipkin returns a Zipkin v2 JSON body with one server span of service
// that ended just now.
func hardZipkin(service string) []byte {
	start := time.Now().Add(-5 * time.Millisecond).UnixMicro()
	return fmt.Appendf(nil, `[{"traceId":"5af7183fb1d4cf5f","id":"6b221d5bc9e6496c","name":"get /hardening","kind":"SERVER","timestamp":%d,"duration":5000,"localEndpoint":{"serviceName":%q}}]`, start, service)
}

// TestHardeningTLSBasicAuth runs pushrelay with a --web.config.file that
// enables TLS and basic auth, and checks every listener: the push/scrape
// port, OTLP HTTP and Zipkin refuse plain HTTP, answer 401 without
// credentials and serve with them; OTLP gRPC takes an export over TLS and
// refuses a plaintext client.
func TestHardeningTLSBasicAuth(t *testing.T) {
	e2eTest(t)
	dir := t.TempDir()
	certPath, keyPath, pool := hardCert(t, dir)
	const user, password = "relay", "s3cret-pw"
	webConfig := hardWrite(t, dir, "web.yml", fmt.Sprintf(`tls_server_config:
  cert_file: %s
  key_file: %s
basic_auth_users:
  %s: %q
`, certPath, keyPath, user, hardHash(t, password)))

	tlsClient := &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:    &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			DisableCompression: true,
		},
	}
	defer tlsClient.CloseIdleConnections()
	plainClient := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	defer plainClient.CloseIdleConnections()

	p := hardStart(t, tlsClient, "https", user, password, "--web.config.file="+webConfig)
	require.Contains(t, p.log(), "TLS is enabled")

	// requirePlainFails checks that plain HTTP to addr gets no 2xx: Go's TLS
	// server answers a plaintext request 400 and closes.
	requirePlainFails := func(method, url string, body []byte) {
		t.Helper()
		r, err := doWith(plainClient, method, url, user, password, nil, body)
		if err == nil {
			require.Equal(t, http.StatusBadRequest, r.status, "plain HTTP %s %s: %s", method, url, r.body)
			require.Contains(t, string(r.body), "HTTPS")
		}
	}

	// The push/scrape port.
	group := "/metrics/job/hardening/instance/tls"
	requirePlainFails(http.MethodPut, "http://"+p.addr+group, []byte("tls_pushed 1\n"))
	code, body := hardStatus(t, tlsClient, http.MethodPut, p.url+group, "", "", nil, []byte("tls_pushed 2\n"))
	require.Equal(t, http.StatusUnauthorized, code, body)
	code, body = hardStatus(t, tlsClient, http.MethodPut, p.url+group, user, "wrong", nil, []byte("tls_pushed 3\n"))
	require.Equal(t, http.StatusUnauthorized, code, body)
	code, body = hardStatus(t, tlsClient, http.MethodGet, p.url+"/metrics", "", "", nil, nil)
	require.Equal(t, http.StatusUnauthorized, code, body)
	code, body = hardStatus(t, tlsClient, http.MethodPut, p.url+group, user, password, nil, []byte("tls_pushed 42\n"))
	require.Equal(t, http.StatusOK, code, body)
	code, body = hardStatus(t, tlsClient, http.MethodGet, p.url+"/metrics", user, password, nil, nil)
	require.Equal(t, http.StatusOK, code, body)
	requireLines(t, body, `tls_pushed{instance="tls",job="hardening"} 42`)
	code, body = hardStatus(t, tlsClient, http.MethodGet, p.url+"/api/v1/metrics", user, password, nil, nil)
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"tls_pushed"`)

	// OTLP HTTP.
	pb, err := hardSpans("tls-otlp-http").MarshalProto()
	require.NoError(t, err)
	protoHeader := http.Header{"Content-Type": {"application/x-protobuf"}}
	requirePlainFails(http.MethodPost, "http://"+p.otlpHTTP+"/v1/traces", pb)
	code, body = hardStatus(t, tlsClient, http.MethodPost, "https://"+p.otlpHTTP+"/v1/traces", "", "", protoHeader, pb)
	require.Equal(t, http.StatusUnauthorized, code, body)
	code, body = hardStatus(t, tlsClient, http.MethodPost, "https://"+p.otlpHTTP+"/v1/traces", user, password, protoHeader, pb)
	require.Equal(t, http.StatusOK, code, body)

	// Zipkin.
	zb := hardZipkin("tls-zipkin")
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	requirePlainFails(http.MethodPost, "http://"+p.zipkin+"/api/v2/spans", zb)
	code, body = hardStatus(t, tlsClient, http.MethodPost, "https://"+p.zipkin+"/api/v2/spans", "", "", jsonHeader, zb)
	require.Equal(t, http.StatusUnauthorized, code, body)
	code, body = hardStatus(t, tlsClient, http.MethodPost, "https://"+p.zipkin+"/api/v2/spans", user, password, jsonHeader, zb)
	require.Equal(t, http.StatusAccepted, code, body)

	// OTLP gRPC: TLS with the certificate's pool works, plaintext does not,
	// nor does TLS without trusting the certificate.
	export := func(creds credentials.TransportCredentials, service string) error {
		conn, err := grpc.NewClient(p.otlpGRPC, grpc.WithTransportCredentials(creds))
		require.NoError(t, err)
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = ptraceotlp.NewGRPCClient(conn).Export(ctx, hardSpans(service))
		return err
	}
	require.NoError(t, export(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}), "tls-otlp-grpc"))
	require.Error(t, export(insecure.NewCredentials(), "plain-otlp-grpc"), "a plaintext gRPC client must fail")
	require.Error(t, export(credentials.NewTLS(&tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}), "untrusted-otlp-grpc"),
		"a client that does not trust the certificate must fail")

	// Exactly the authenticated spans were counted.
	eventually(t, 10*time.Second, func() error {
		r, err := doWith(tlsClient, http.MethodGet, p.url+"/metrics", user, password, nil, nil)
		if err != nil {
			return err
		}
		for _, svc := range []string{"tls-otlp-http", "tls-zipkin", "tls-otlp-grpc"} {
			want := fmt.Sprintf(`traces_spanmetrics_calls_total{service=%q,span_kind="SPAN_KIND_SERVER",span_name=`, svc)
			if !strings.Contains(string(r.body), want) {
				return fmt.Errorf("no span metric for %s in\n%s", svc, linesContaining(string(r.body), "traces_spanmetrics_calls_total"))
			}
		}
		for _, svc := range []string{"plain-otlp-grpc", "untrusted-otlp-grpc"} {
			if strings.Contains(string(r.body), svc) {
				return fmt.Errorf("spans of %s were counted", svc)
			}
		}
		return nil
	})
	// Neither the plaintext nor the unauthenticated push reached the store.
	code, body = hardStatus(t, tlsClient, http.MethodGet, p.url+"/metrics", user, password, nil, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, []string{`tls_pushed{instance="tls",job="hardening"} 42`}, linesContaining(body, "tls_pushed{"))
	require.NoError(t, p.stop(t))
}

// TestHardeningSeparateCredentials checks the auth: section of the
// configuration file: pushers, scrapers and admins each have their own
// users and cannot use the others' endpoints.
func TestHardeningSeparateCredentials(t *testing.T) {
	e2eTest(t)
	dir := t.TempDir()
	cfg := hardWrite(t, dir, "pushrelay.yml", fmt.Sprintf(`auth:
  push:   {basic_auth_users: {ci: %q}}
  scrape: {basic_auth_users: {prometheus: %q}}
  admin:  {basic_auth_users: {ops: %q}}
`, hardHash(t, "push-pw"), hardHash(t, "scrape-pw"), hardHash(t, "admin-pw")))
	p := startPushrelay(t, "--config.file="+cfg, "--web.enable-admin-api", "--web.enable-lifecycle")
	cl := probeClient

	type cred struct{ user, password string }
	none, pusher, scraper, admin := cred{}, cred{"ci", "push-pw"}, cred{"prometheus", "scrape-pw"}, cred{"ops", "admin-pw"}
	wrongPusher := cred{"ci", "scrape-pw"}
	status := func(method, path string, c cred, body string) int {
		t.Helper()
		var b []byte
		if body != "" {
			b = []byte(body)
		}
		code, _ := hardStatus(t, cl, method, p.url+path, c.user, c.password, nil, b)
		return code
	}
	group := "/metrics/job/creds/instance/a"

	// Health is always open.
	for _, path := range []string{"/-/healthy", "/-/ready"} {
		require.Equal(t, http.StatusOK, status(http.MethodGet, path, none, ""), path)
	}
	// Pushing needs the push user.
	for _, c := range []cred{none, scraper, admin, wrongPusher} {
		require.Equal(t, http.StatusUnauthorized, status(http.MethodPut, group, c, "creds_value 1\n"), "PUT as %q", c.user)
		require.Equal(t, http.StatusUnauthorized, status(http.MethodPost, group, c, "creds_value 1\n"), "POST as %q", c.user)
		require.Equal(t, http.StatusUnauthorized, status(http.MethodDelete, group, c, ""), "DELETE as %q", c.user)
	}
	require.Equal(t, http.StatusOK, status(http.MethodPut, group, pusher, "creds_value 7\n"))
	require.Equal(t, http.StatusOK, status(http.MethodPut, "/metrics/job/creds/instance/b", pusher, "creds_value 8\n"))
	// Reading needs the scrape user.
	for _, path := range []string{"/metrics", "/api/v1/metrics", "/api/v1/status", "/"} {
		for _, c := range []cred{none, pusher, admin} {
			require.Equal(t, http.StatusUnauthorized, status(http.MethodGet, path, c, ""), "GET %s as %q", path, c.user)
		}
		require.Equal(t, http.StatusOK, status(http.MethodGet, path, scraper, ""), "GET %s as the scraper", path)
	}
	_, exposition := hardStatus(t, cl, http.MethodGet, p.url+"/metrics", scraper.user, scraper.password, nil, nil)
	requireLines(t, exposition, `creds_value{instance="a",job="creds"} 7`, `creds_value{instance="b",job="creds"} 8`)
	// Administration needs the admin user.
	for _, c := range []cred{none, pusher, scraper} {
		require.Equal(t, http.StatusUnauthorized, status(http.MethodPut, "/api/v1/admin/wipe", c, ""), "wipe as %q", c.user)
		require.Equal(t, http.StatusUnauthorized, status(http.MethodGet, "/debug/pprof/", c, ""), "pprof as %q", c.user)
		require.Equal(t, http.StatusUnauthorized, status(http.MethodPost, "/-/reload", c, ""), "reload as %q", c.user)
		require.Equal(t, http.StatusUnauthorized, status(http.MethodPost, "/-/quit", c, ""), "quit as %q", c.user)
	}
	_, exposition = hardStatus(t, cl, http.MethodGet, p.url+"/metrics", scraper.user, scraper.password, nil, nil)
	require.Len(t, linesContaining(exposition, "creds_value{"), 2, "a refused request changed the groups")
	require.Equal(t, http.StatusOK, status(http.MethodGet, "/debug/pprof/", admin, ""))
	require.Equal(t, http.StatusOK, status(http.MethodPost, "/-/reload", admin, ""))
	require.Equal(t, http.StatusAccepted, status(http.MethodPut, "/api/v1/admin/wipe", admin, ""))
	_, exposition = hardStatus(t, cl, http.MethodGet, p.url+"/metrics", scraper.user, scraper.password, nil, nil)
	require.Empty(t, linesContaining(exposition, "creds_value{"), "the wipe left groups")
	// The push user deletes its groups.
	require.Equal(t, http.StatusOK, status(http.MethodPut, group, pusher, "creds_value 9\n"))
	require.Equal(t, http.StatusAccepted, status(http.MethodDelete, group, pusher, ""))
	_, exposition = hardStatus(t, cl, http.MethodGet, p.url+"/metrics", scraper.user, scraper.password, nil, nil)
	require.Empty(t, linesContaining(exposition, "creds_value{"))
	require.NoError(t, p.stop(t))
}

// hardProtoBody returns a delimited protobuf push body of families.
func hardProtoBody(t *testing.T, families ...*dto.MetricFamily) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, mf := range families {
		_, err := protodelim.MarshalTo(&buf, mf)
		require.NoError(t, err)
	}
	return buf.Bytes()
}

// TestHardeningInvalidUTF8 checks that pushes with invalid UTF-8 in label
// values (text and protobuf, in the body and in the URL) and in a metric
// name (protobuf; the text parser cannot carry one) are answered 400 and
// store nothing, and that the exposition stays valid.
func TestHardeningInvalidUTF8(t *testing.T) {
	e2eTest(t)
	dir := t.TempDir()
	p := startPushrelay(t, "--persistence.file="+filepath.Join(dir, "utf8.db"))
	protoType := http.Header{"Content-Type": {"application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"}}
	gauge := func(name, labelValue string) *dto.MetricFamily {
		return &dto.MetricFamily{
			Name: proto.String(name),
			Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{
				Label: []*dto.LabelPair{{Name: proto.String("path"), Value: proto.String(labelValue)}},
				Gauge: &dto.Gauge{Value: proto.Float64(1)},
			}},
		}
	}
	cases := []struct {
		name   string
		path   string
		header http.Header
		body   []byte
	}{
		{"text label value", "/metrics/job/utf8/instance/text", nil, []byte("utf8_bad{path=\"a\xffb\"} 1\n")},
		{"text overlong label value", "/metrics/job/utf8/instance/overlong", nil, []byte("utf8_bad{path=\"\xc0\xaf\"} 1\n")},
		{"text surrogate label value", "/metrics/job/utf8/instance/surrogate", nil, []byte("utf8_bad{path=\"\xed\xa0\x80\"} 1\n")},
		{"protobuf label value", "/metrics/job/utf8/instance/proto-label", protoType, hardProtoBody(t, gauge("utf8_bad", "a\xffb"))},
		{"protobuf metric name", "/metrics/job/utf8/instance/proto-name", protoType, hardProtoBody(t, gauge("utf8_bad_\xff", "ok"))},
		{"protobuf label name", "/metrics/job/utf8/instance/proto-label-name", protoType, hardProtoBody(t, &dto.MetricFamily{
			Name: proto.String("utf8_bad"), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: proto.String("p\xff"), Value: proto.String("x")}}, Gauge: &dto.Gauge{Value: proto.Float64(1)}}},
		})},
		{"protobuf second family", "/metrics/job/utf8/instance/proto-second", protoType, hardProtoBody(t, gauge("utf8_good", "fine"), gauge("utf8_bad", "\xfe"))},
		{"grouping label value in the URL", "/metrics/job/utf8/instance/url%FFvalue", nil, []byte("utf8_good 1\n")},
		{"base64 grouping label value", "/metrics/job/utf8/instance@base64/" + base64.RawURLEncoding.EncodeToString([]byte("b64\xff")), nil, []byte("utf8_good 1\n")},
		{"job in the URL", "/metrics/job/utf8%FF", nil, []byte("utf8_good 1\n")},
	}
	for _, c := range cases {
		for _, method := range []string{http.MethodPut, http.MethodPost} {
			r := do(t, method, p.url+c.path, c.header, c.body)
			require.Equal(t, http.StatusBadRequest, r.status, "%s %s: %s", method, c.name, r.body)
		}
	}
	// No pushed sample is stored. As the Pushgateway does for any push its
	// consistency check refuses, a refused protobuf push leaves its group
	// with push_failure_time_seconds and a zero push_time_seconds (README:
	// "changes nothing but the group's push_failure_time_seconds"); the
	// text and URL cases are refused before that and create no group.
	failureGroups := []string{"proto-label", "proto-label-name", "proto-name", "proto-second"}
	requireNothing := func(p *process) {
		t.Helper()
		text, _ := scrape(t, p) // parses the exposition: it stays valid
		require.Empty(t, linesContaining(text, "utf8_"), "an invalid push stored metrics")
		var groupLines []string
		for _, l := range linesContaining(text, `job="utf8"`) {
			if !strings.HasPrefix(l, "push_failure_time_seconds{") {
				groupLines = append(groupLines, l)
			}
		}
		var want []string
		for _, g := range failureGroups {
			want = append(want, fmt.Sprintf(`push_time_seconds{instance=%q,job="utf8"} 0`, g))
		}
		require.ElementsMatch(t, want, groupLines, "an invalid push created a group or stored a sample")
		require.Len(t, linesContaining(text, "push_failure_time_seconds{"), len(failureGroups))
		r := do(t, http.MethodGet, p.url+"/api/v1/metrics", nil, nil)
		require.Equal(t, http.StatusOK, r.status)
		require.NotContains(t, string(r.body), "utf8_")
	}
	requireNothing(p)
	// A valid push still works, and nothing invalid comes back from the file.
	send(t, p, http.MethodPut, "/metrics/job/utf8ok", "utf8_ok 1\n", http.StatusOK)
	require.NoError(t, p.stop(t))
	p = startPushrelay(t, "--persistence.file="+filepath.Join(dir, "utf8.db"))
	text, _ := scrape(t, p)
	requireLines(t, text, `utf8_ok{instance="",job="utf8ok"} 1`)
	send(t, p, http.MethodDelete, "/metrics/job/utf8ok", "", http.StatusAccepted)
	requireNothing(p)
	require.NoError(t, p.stop(t))
}

// TestHardeningSlowLoris checks that connections that send their headers
// too slowly are closed: one that stalls after a partial header and one
// that trickles a byte a second, on the push/scrape port and on the OTLP
// HTTP and Zipkin receivers (ReadHeaderTimeout 10 s), and one that sends
// half the HTTP/2 preface to OTLP gRPC (handshake timeout 10 s), while the
// server keeps serving others.
func TestHardeningSlowLoris(t *testing.T) {
	e2eTest(t)
	p := hardStart(t, probeClient, "http", "", "")
	const limit = 20 * time.Second
	type result struct {
		what    string
		elapsed time.Duration
		err     error
	}
	results := make(chan result, 16)
	httpStart := func(addr string) string {
		return "POST /metrics/job/loris HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: text/plain\r\n"
	}
	attack := func(what, addr, prefix string, trickle bool) {
		start := time.Now()
		err := func() error {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return err
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, prefix); err != nil {
				return err
			}
			deadline := start.Add(limit)
			closed := make(chan error, 1)
			go func() {
				// Reads until the server closes the connection.
				_ = conn.SetReadDeadline(deadline)
				_, err := io.Copy(io.Discard, conn)
				if err == nil {
					err = io.EOF
				}
				closed <- err
			}()
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case err := <-closed:
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						return fmt.Errorf("still open after %v", limit)
					}
					return nil // EOF or reset: closed by the server
				case <-tick.C:
					if trickle {
						// One more header byte: never a complete header.
						_, _ = conn.Write([]byte{"X-Loris: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"[i%38]})
					}
				}
			}
		}()
		results <- result{what, time.Since(start), err}
	}
	attacks := []struct {
		what, addr, start string
		trickle           bool
	}{
		{"web stalled", p.addr, httpStart(p.addr), false},
		{"web trickle", p.addr, httpStart(p.addr), true},
		{"otlp-http stalled", p.otlpHTTP, httpStart(p.otlpHTTP), false},
		{"zipkin stalled", p.zipkin, httpStart(p.zipkin), false},
		{"zipkin trickle", p.zipkin, httpStart(p.zipkin), true},
		// Half the HTTP/2 client preface, then nothing: the gRPC
		// handshake timeout (10 s) closes it.
		{"otlp-grpc partial preface", p.otlpGRPC, "PRI * HTTP/2.0\r\n", false},
	}
	for _, a := range attacks {
		go attack(a.what, a.addr, a.start, a.trickle)
	}
	// Meanwhile the server serves normal requests.
	time.Sleep(time.Second)
	send(t, p.process, http.MethodPut, "/metrics/job/loris_ok", "loris_ok 1\n", http.StatusOK)
	for range attacks {
		r := <-results
		require.NoError(t, r.err, r.what)
		t.Logf("%s: closed by the server after %v", r.what, r.elapsed.Round(100*time.Millisecond))
		require.Greater(t, r.elapsed, 8*time.Second, "%s closed sooner than the header timeout", r.what)
	}
	text, _ := scrape(t, p.process)
	require.Empty(t, linesContaining(text, `job="loris"`))
	requireLines(t, text, `loris_ok{instance="",job="loris_ok"} 1`)
}

// TestHardeningGracefulShutdown sends SIGTERM to pushrelay while clients
// push, and checks that it exits 0 within 30 s and that every push answered
// 2xx, before or during the shutdown, is in the file after a restart.
func TestHardeningGracefulShutdown(t *testing.T) {
	e2eTest(t)
	dir := t.TempDir()
	file := "--persistence.file=" + filepath.Join(dir, "shutdown.db")
	p := startPushrelay(t, file)

	const workers, groupsPerWorker = 8, 25
	type groupState struct {
		acked int // highest sequence answered 2xx
	}
	var (
		mu     sync.Mutex
		state  = map[string]*groupState{}
		stats  = map[string]int{}
		stop   atomic.Bool
		total  atomic.Int64
		termAt time.Time
	)
	client := &http.Client{Timeout: 40 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			failures := 0
			for seq := 1; !stop.Load(); seq++ {
				g := fmt.Sprintf("w%d-g%d", w, seq%groupsPerWorker)
				method := http.MethodPut
				if seq%3 == 0 {
					method = http.MethodPost
				}
				body := fmt.Sprintf("# TYPE shutdown_seq gauge\nshutdown_seq %d\nshutdown_other{w=\"%d\"} %d\n", seq, w, seq)
				r, err := doWith(client, method, p.url+"/metrics/job/shutdown/instance/"+g, "", "", nil, []byte(body))
				total.Add(1)
				mu.Lock()
				switch {
				case err != nil:
					if errors.Is(err, syscall.ECONNREFUSED) {
						stats["connection refused"]++
					} else {
						stats["transport error"]++
					}
				case r.status/100 == 2:
					st := state[g]
					if st == nil {
						st = &groupState{}
						state[g] = st
					}
					st.acked = seq // each worker owns its groups: acks come in order
					if !termAt.IsZero() {
						stats["2xx after SIGTERM"]++
					} else {
						stats["2xx"]++
					}
				default:
					stats[fmt.Sprintf("HTTP %d: %s", r.status, bytes.TrimSpace(r.body))]++
				}
				mu.Unlock()
				if err != nil || r.status/100 != 2 {
					failures++
					if failures > 20 {
						return // the server is gone
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
	// Let the load run, then ask for a graceful stop in its middle.
	eventually(t, 30*time.Second, func() error {
		if n := total.Load(); n < 400 {
			return fmt.Errorf("only %d pushes so far", n)
		}
		return nil
	})
	mu.Lock()
	termAt = time.Now()
	mu.Unlock()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		stop.Store(true)
		t.Fatalf("pushrelay did not exit within 30s of SIGTERM")
	}
	exitAfter := time.Since(termAt)
	stop.Store(true)
	wg.Wait()
	require.NoError(t, p.waitErr, "exit status after SIGTERM")
	require.Contains(t, p.log(), "pushrelay stopped")
	t.Logf("exited 0 %v after SIGTERM; %d requests: %v", exitAfter.Round(time.Millisecond), total.Load(), stats)
	for k := range stats {
		require.Falsef(t, strings.HasPrefix(k, "HTTP 5"), "a push was answered %s", k)
	}

	// Every acknowledged push is in the file.
	p = startPushrelay(t, file)
	_, mfs := scrape(t, p)
	stored := map[string]float64{}
	if mf := mfs["shutdown_seq"]; mf != nil {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "instance" {
					stored[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	require.NotEmpty(t, state)
	var lost []string
	for g, st := range state {
		if v, ok := stored[g]; !ok || v < float64(st.acked) {
			lost = append(lost, fmt.Sprintf("%s: acked %d, stored %v (present %v)", g, st.acked, v, ok))
		}
	}
	slices.Sort(lost)
	require.Empty(t, lost, "acknowledged pushes lost across the graceful shutdown")
	require.NoError(t, p.stop(t))
}

// TestHardeningShutdownBound checks that SIGTERM ends pushrelay within its
// 30 s shutdown bound (shutdownTimeout) whatever clients do:
//   - an OTLP gRPC client that connected and never sent the HTTP/2
//     preface, and one that opened an Export stream and never sent the
//     request message: grpc.Server.GracefulStop waits for both (the first
//     up to grpc-go's 120 s connection timeout, the second until the client
//     goes away), so the receiver's stop needs its own bound;
//   - uploads that stall in their bodies on the push port, OTLP HTTP and
//     Zipkin at once: each server's Shutdown waits up to 30 s, one after
//     the other.
func TestHardeningShutdownBound(t *testing.T) {
	e2eTest(t)
	const bound = 35 * time.Second // shutdownTimeout plus slack
	stalls := map[string]func(t *testing.T, p *hardProc) func(){
		"grpc connection without preface": func(t *testing.T, p *hardProc) func() {
			conn, err := net.DialTimeout("tcp", p.otlpGRPC, 5*time.Second)
			require.NoError(t, err)
			return func() { _ = conn.Close() }
		},
		"grpc export stream without message": func(t *testing.T, p *hardProc) func() {
			conn, err := grpc.NewClient(p.otlpGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			_, err = conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true},
				"/opentelemetry.proto.collector.trace.v1.TraceService/Export")
			require.NoError(t, err)
			return func() { cancel(); _ = conn.Close() }
		},
		"stalled uploads on every HTTP listener": func(t *testing.T, p *hardProc) func() {
			var conns []net.Conn
			for _, target := range []struct{ addr, path string }{
				{p.addr, "/metrics/job/stalled_upload"}, {p.otlpHTTP, "/v1/traces"}, {p.zipkin, "/api/v2/spans"},
			} {
				conn, err := net.DialTimeout("tcp", target.addr, 5*time.Second)
				require.NoError(t, err)
				_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[", target.path, target.addr)
				require.NoError(t, err)
				conns = append(conns, conn)
			}
			return func() {
				for _, c := range conns {
					_ = c.Close()
				}
			}
		},
	}
	for name, stall := range stalls {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			p := hardStart(t, probeClient, "http", "", "")
			release := stall(t, p)
			defer release()
			time.Sleep(500 * time.Millisecond) // the server sees the connection, stream or request
			send(t, p.process, http.MethodPut, "/metrics/job/stalled", "stalled 1\n", http.StatusOK)
			t0 := time.Now()
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
			select {
			case <-p.exited:
				t.Logf("exited %v after SIGTERM: %v", time.Since(t0).Round(time.Millisecond), p.waitErr)
				require.NoError(t, p.waitErr)
			case <-time.After(bound):
				t.Fatalf("pushrelay did not exit within %v of SIGTERM (shutdown bound 30s) with %s", bound, name)
			}
		})
	}
}
