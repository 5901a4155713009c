package e2e

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Paths of the Debian tools the tests drive.
const (
	prometheusBin  = "/usr/bin/prometheus"
	pushgatewayBin = "/usr/bin/prometheus-pushgateway"
	pythonBin      = "/usr/bin/python3"
)

const (
	// startTimeout bounds how long a process may take to become ready.
	startTimeout = 30 * time.Second
	// stopTimeout bounds a graceful stop before the process is killed.
	stopTimeout = 10 * time.Second
	// portAttempts is how often a start is retried when another process
	// took the chosen port first.
	portAttempts = 5
)

// pushrelayBin is the binary TestMain built from ./cmd/pushrelay.
var pushrelayBin string

// raceBuild is set when the tests run with -race (race_test.go); pushrelay
// is then built with the race detector as well.
var raceBuild bool

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run() // every test skips itself; nothing to build
	}
	dir, err := os.MkdirTemp("", "pushrelay-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	pushrelayBin = filepath.Join(dir, "pushrelay")
	if err := buildPushrelay(pushrelayBin); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if err := detectListeners(pushrelayBin); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// buildPushrelay runs `go build -o out ./cmd/pushrelay` in the module root.
func buildPushrelay(out string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("cannot find the go command: %w", err)
	}
	args := []string{"build", "-o", out}
	if raceBuild {
		args = append(args, "-race")
	}
	cmd := exec.Command(goBin, append(args, "./cmd/pushrelay")...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/pushrelay: %w\n%s", err, b)
	}
	return nil
}

// extraListeners are flags of listeners besides the web one that pushrelay
// opens by default on fixed ports of every interface; the tests turn off the
// ones the binary has, to stay on loopback and to run several instances.
var extraListeners = []string{
	"traces.otlp-grpc.listen-address",
	"traces.otlp-http.listen-address",
	"traces.zipkin.listen-address",
}

// defaultPushrelayFlags are added to every pushrelay command line.
var defaultPushrelayFlags []string

// detectListeners sets defaultPushrelayFlags from `pushrelay --help`.
func detectListeners(bin string) error {
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s --help: %w\n%s", bin, err, out)
	}
	for _, name := range extraListeners {
		if bytes.Contains(out, []byte("--"+name+"=")) {
			defaultPushrelayFlags = append(defaultPushrelayFlags, "--"+name+"=")
		}
	}
	return nil
}

// moduleRoot returns the closest directory at or above the working
// directory that holds a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// e2eTest skips t in -short mode; every test calls it first.
func e2eTest(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
}

// requireDep skips t when a tool it needs is missing, or fails it when
// PUSHRELAY_E2E=1 or CI is set.
func requireDep(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s is not available (%v); `make deps` installs it", what, err)
	if os.Getenv("PUSHRELAY_E2E") == "1" || os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

func requirePrometheus(t *testing.T) {
	t.Helper()
	requireDep(t, "Prometheus server (Debian package prometheus)", executable(prometheusBin))
}

func requirePushgateway(t *testing.T) {
	t.Helper()
	requireDep(t, "Pushgateway (Debian package prometheus-pushgateway)", executable(pushgatewayBin))
}

var (
	pythonOnce sync.Once
	pythonErr  error
)

func requirePythonClient(t *testing.T) {
	t.Helper()
	pythonOnce.Do(func() {
		if pythonErr = executable(pythonBin); pythonErr != nil {
			return
		}
		out, err := exec.Command(pythonBin, "-c", "import prometheus_client").CombinedOutput()
		if err != nil {
			pythonErr = fmt.Errorf("%s cannot import prometheus_client: %v: %s", pythonBin, err, bytes.TrimSpace(out))
		}
	})
	requireDep(t, "Python client (Debian package python3-prometheus-client)", pythonErr)
}

// process is a server started by a test.
type process struct {
	name    string
	addr    string // 127.0.0.1:port
	url     string // http://addr
	logPath string
	cmd     *exec.Cmd

	exited  chan struct{}
	waitErr error // valid once exited is closed
}

// procSpec describes how to start and probe a server.
type procSpec struct {
	name string
	bin  string
	// args returns the command line for the listen address addr.
	args func(addr string) []string
	// readyPath answers 200 once the server is ready.
	readyPath string
}

// listenLog matches the log line of exporter-toolkit ("Listening on") or
// Prometheus ("Start listening for connections") naming the bound address;
// it proves that the server answering on the port is the one started.
func listenLog(addr string) *regexp.Regexp {
	return regexp.MustCompile(`address=` + regexp.QuoteMeta(addr) + `\b`)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

// start runs spec on a free port and waits until it is ready. The process
// is killed when the test ends; its log is printed if the test failed.
func start(t *testing.T, spec procSpec) *process {
	t.Helper()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		p := launch(t, spec, addr, filepath.Join(dir, fmt.Sprintf("%s-%d.log", spec.name, attempt)))
		err := p.waitReady(spec.readyPath)
		if err == nil {
			return p
		}
		p.kill()
		if attempt < portAttempts && strings.Contains(p.log(), "address already in use") {
			t.Logf("%s: port %s was taken, retrying", spec.name, addr)
			continue
		}
		require.NoError(t, err, "%s did not start; log %s:\n%s", spec.name, p.logPath, p.log())
	}
}

// launch starts spec listening on addr with its output in logPath.
func launch(t *testing.T, spec procSpec, addr, logPath string) *process {
	t.Helper()
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	p := &process{
		name:    spec.name,
		addr:    addr,
		url:     "http://" + addr,
		logPath: logPath,
		cmd:     exec.Command(spec.bin, spec.args(addr)...),
		exited:  make(chan struct{}),
	}
	p.cmd.Stdout = logFile
	p.cmd.Stderr = logFile
	require.NoError(t, p.cmd.Start(), "start %s", spec.name)
	go func() {
		p.waitErr = p.cmd.Wait()
		_ = logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if strings.Contains(p.log(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", p.name)
		}
		if t.Failed() {
			t.Logf("%s log (%s):\n%s", p.name, p.logPath, p.log())
		}
	})
	return p
}

// waitReady waits until the process logged that it listens on its address
// and readyPath answers 200.
func (p *process) waitReady(readyPath string) error {
	listening := listenLog(p.addr)
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before it was ready: %v", p.name, p.waitErr)
		default:
		}
		if listening.MatchString(p.log()) {
			resp, err := probeClient.Get(p.url + readyPath)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready on %s%s after %v", p.name, p.url, readyPath, startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// log returns the process output so far.
func (p *process) log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	return string(b)
}

// kill sends SIGKILL, as kill -9 does, and waits for the process to exit.
func (p *process) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// stop asks the process to exit with SIGTERM and returns its exit error; it
// kills the process if it takes longer than stopTimeout.
func (p *process) stop(t *testing.T) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.waitErr
	default:
	}
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.exited:
		return p.waitErr
	case <-time.After(stopTimeout):
		p.kill()
		t.Fatalf("%s did not exit within %v of SIGTERM", p.name, stopTimeout)
		return nil
	}
}

// startPushrelay starts the binary built by TestMain with flags (memory only
// unless flags name a --persistence.file).
func startPushrelay(t *testing.T, flags ...string) *process {
	t.Helper()
	return start(t, pushrelaySpec(flags...))
}

func pushrelaySpec(flags ...string) procSpec {
	return procSpec{
		name: "pushrelay",
		bin:  pushrelayBin,
		args: func(addr string) []string {
			args := append([]string{"--web.listen-address=" + addr}, defaultPushrelayFlags...)
			if !hasFlag(flags, "--persistence.file") {
				args = append(args, "--persistence.file=")
			}
			return append(args, flags...)
		},
		readyPath: readyPath(flags),
	}
}

// startPushgateway starts the reference Pushgateway, memory only.
func startPushgateway(t *testing.T, flags ...string) *process {
	t.Helper()
	requirePushgateway(t)
	return start(t, procSpec{
		name: "pushgateway",
		bin:  pushgatewayBin,
		args: func(addr string) []string {
			return append([]string{"--web.listen-address=" + addr, "--persistence.file="}, flags...)
		},
		readyPath: readyPath(flags),
	})
}

func hasFlag(flags []string, name string) bool {
	for _, f := range flags {
		if f == name || strings.HasPrefix(f, name+"=") {
			return true
		}
	}
	return false
}

// readyPath returns /-/ready under the --web.route-prefix among flags.
func readyPath(flags []string) string {
	for _, f := range flags {
		if prefix, ok := strings.CutPrefix(f, "--web.route-prefix="); ok {
			return strings.TrimRight("/"+strings.Trim(prefix, "/"), "/") + "/-/ready"
		}
	}
	return "/-/ready"
}

// probeClient never follows redirects and never asks for compression, so
// that tests see responses exactly as sent.
var probeClient = &http.Client{
	Timeout: 15 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
	Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16},
}

// response is a completed HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request and reads the whole answer.
func do(t *testing.T, method, url string, header http.Header, body []byte) response {
	t.Helper()
	r, err := doErr(method, url, header, body)
	require.NoError(t, err, "%s %s", method, url)
	return r
}

func doErr(method, url string, header http.Header, body []byte) (response, error) {
	return doWith(probeClient, method, url, "", "", header, body)
}

// doWith sends one request through client, with basic auth when user is
// set, and reads the whole answer.
func doWith(client *http.Client, method, url, user, password string, header http.Header, body []byte) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return response{}, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// send sends a text-format body with method to path and requires want.
func send(t *testing.T, p *process, method, path, body string, want int) {
	t.Helper()
	r := do(t, method, p.url+path, nil, []byte(body))
	require.Equal(t, want, r.status, "%s %s: %s", method, path, r.body)
}

// eventually polls f every 20ms until it returns nil or timeout passes, and
// fails t with f's last error.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
