package main

// Soak and fault mode (--soak): pushrelay with its bbolt file under a mixed
// load at about half its measured capacity for --soak-duration, killed
// with SIGKILL in the middle and restarted on the same file and address,
// checking that no acknowledged push is ever lost.
//
// The load, all on loopback:
//
//   - PUT (70%), POST (20%) and DELETE (10%) to --soak-groups groups
//     job=soak,instance=gNNNNN, paced by a token bucket at the target rate.
//     Every push carries soak_seq, a per-group sequence number; at most one
//     request per group is in flight, so a later acknowledgement always
//     carries a higher number;
//   - a scrape of /metrics as Prometheus sends it every --soak-scrape-interval;
//   - Zipkin v2 spans, --soak-span-rate requests of 10 spans per second.
//
// The tool remembers, per group, the highest sequence number acknowledged
// (2xx), whether a DELETE was acknowledged after it, and which requests had
// an unknown outcome (no answer: the server may or may not have applied
// them). After the restart (with the load paused) and at the end (and once
// more after a graceful SIGTERM and a restart) it scrapes /metrics and
// checks every group:
//
//   - present: soak_seq >= the last acknowledged sequence, and <= the last
//     one sent; a group whose DELETE was acknowledged may only be present
//     again with a later push (acknowledged or not);
//   - absent: only if a DELETE was acknowledged after the last acknowledged
//     push, or a DELETE after it had an unknown outcome.
//
// Anything else is a lost acknowledged push. Every 10 s it samples the
// server's VmRSS and go_goroutines. Errors are counted by kind; those of
// requests that overlapped the kill and restart window are expected and
// counted apart.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"
)

// soakFlags are the settings of the soak mode.
type soakFlags struct {
	enabled        bool
	duration       time.Duration
	groups         int
	rate           float64
	capacityShare  float64
	measure        time.Duration
	killAt         float64
	sampleInterval time.Duration
	scrapeInterval time.Duration
	spanRate       float64
	requestTimeout time.Duration
}

// addSoakFlags registers the soak mode's flags on app.
func addSoakFlags(app *kingpin.Application) *soakFlags {
	s := &soakFlags{}
	app.Flag("soak", "Soak and fault mode: run pushrelay (--pushrelay-bin) with a bbolt file under mixed load, kill -9 and restart it in the middle, and check that no acknowledged push is lost.").BoolVar(&s.enabled)
	app.Flag("soak-duration", "Length of the paced soak load.").Default("10m").DurationVar(&s.duration)
	app.Flag("soak-groups", "Groups the soak pushes to.").Default("3000").IntVar(&s.groups)
	app.Flag("soak-rate", "Requests per second (pushes and deletes) of the soak load; 0 measures the capacity first and uses --soak-capacity-share of it.").Default("0").Float64Var(&s.rate)
	app.Flag("soak-capacity-share", "Share of the measured capacity the soak runs at.").Default("0.5").Float64Var(&s.capacityShare)
	app.Flag("soak-measure", "Length of the capacity measurement.").Default("10s").DurationVar(&s.measure)
	app.Flag("soak-kill-at", "When to kill -9 and restart pushrelay, as a share of --soak-duration; 0 never.").Default("0.5").Float64Var(&s.killAt)
	app.Flag("soak-sample-interval", "Interval of the RSS and goroutine samples.").Default("10s").DurationVar(&s.sampleInterval)
	app.Flag("soak-scrape-interval", "Interval of the Prometheus-like scrapes of /metrics.").Default("2s").DurationVar(&s.scrapeInterval)
	app.Flag("soak-span-rate", "Zipkin requests (10 spans each) per second.").Default("10").Float64Var(&s.spanRate)
	app.Flag("soak-request-timeout", "Timeout of one soak request.").Default("30s").DurationVar(&s.requestTimeout)
	return s
}

// soakJob is the job label of the soak groups.
const soakJob = "soak"

// soakGroup is what the tool knows of one group. mu is held for the whole
// request, so one request per group is in flight.
type soakGroup struct {
	mu sync.Mutex
	// sent is the highest sequence number sent in a push, acked the
	// highest one answered 2xx (0: none).
	sent, acked int64
	// deleted: a DELETE was acknowledged after the last acknowledged push.
	deleted bool
	// pushAfterDelete: a push with an unknown outcome followed that DELETE.
	pushAfterDelete bool
	// maybeDeleted: a DELETE with an unknown outcome followed the last
	// acknowledged push.
	maybeDeleted bool
}

// soakSample is one reading of the server's state.
type soakSample struct {
	At         float64 `json:"seconds"`
	PID        int     `json:"pid"`
	RSSBytes   int64   `json:"rss_bytes"`
	Goroutines float64 `json:"goroutines"`
	Groups     float64 `json:"groups"`
	FileBytes  float64 `json:"file_bytes"`
	OpsPerSec  float64 `json:"ops_per_second"`
	Errors     int64   `json:"errors"`
	Note       string  `json:"note,omitempty"`
}

// soakCheck is the outcome of one verification.
type soakCheck struct {
	When    string   `json:"when"`
	Groups  int      `json:"groups"`
	Present int      `json:"present"`
	Absent  int      `json:"absent_after_acked_delete"`
	Maybe   int      `json:"absent_after_unacknowledged_delete"`
	Lost    int      `json:"lost"`
	Bad     int      `json:"anomalies"`
	Details []string `json:"details,omitempty"`
	Err     string   `json:"error,omitempty"`
}

// soakResult is everything the soak reports.
type soakResult struct {
	Started        time.Time            `json:"started"`
	Command        string               `json:"command"`
	Groups         int                  `json:"groups"`
	CapacityOps    float64              `json:"measured_capacity_ops_per_second"`
	TargetOps      float64              `json:"target_ops_per_second"`
	Seconds        float64              `json:"seconds"`
	Ops            map[string]int64     `json:"acknowledged_ops"`
	Missed         int64                `json:"tokens_missed"`
	Errors         map[string]int64     `json:"unexpected_errors"`
	ExpectedErrors map[string]int64     `json:"restart_window_errors"`
	FirstErrors    map[string]string    `json:"first_error_messages"`
	Latency        map[string][]float64 `json:"latency_ms_p50_p99_max"`
	Restarts       []string             `json:"restarts"`
	Samples        []soakSample         `json:"samples"`
	Checks         []soakCheck          `json:"checks"`
	Lost           int                  `json:"lost_acknowledged_pushes"`
	Failures       []string             `json:"failures,omitempty"`
}

// soaker runs one soak.
type soaker struct {
	c   *config
	f   *soakFlags
	cl  *http.Client
	dir string

	addr, zipkinAddr, file, url string

	procMu sync.Mutex
	p      *proc

	groups []soakGroup
	// gate is read-locked by every request and write-locked by a
	// verification, which so sees no request in flight.
	gate sync.RWMutex

	// The restart window: requests overlapping it may fail.
	winMu            sync.Mutex
	killAt, upAt     time.Time
	down             bool
	start            time.Time
	opsDone, errsNum atomic.Int64

	mu       sync.Mutex
	res      *soakResult
	lat      map[string][]time.Duration
	failures []string
	// The previous sample's counts.
	lastOps, lastErrs int64
	lastAt            time.Time
}

// runSoak runs the soak mode and returns the exit code.
func runSoak(c *config, f *soakFlags, args []string) int {
	if c.pushrelayBin == "" {
		fmt.Fprintln(os.Stderr, "pushrelay-bench: --soak needs --pushrelay-bin")
		return 2
	}
	if f.groups < 1 || f.duration <= 0 || f.capacityShare <= 0 || f.killAt < 0 || f.killAt >= 1 || f.sampleInterval <= 0 || f.scrapeInterval <= 0 {
		fmt.Fprintln(os.Stderr, "pushrelay-bench: invalid soak settings")
		return 2
	}
	s := &soaker{
		c: c, f: f, dir: filepath.Join(c.workDir, "soak"),
		groups: make([]soakGroup, f.groups),
		lat:    map[string][]time.Duration{},
		res: &soakResult{
			Started: time.Now(), Command: "pushrelay-bench " + strings.Join(args, " "), Groups: f.groups,
			Ops: map[string]int64{}, Errors: map[string]int64{}, ExpectedErrors: map[string]int64{},
			FirstErrors: map[string]string{}, Latency: map[string][]float64{},
		},
	}
	s.cl = &http.Client{Timeout: f.requestTimeout, Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * c.clients,
		MaxIdleConnsPerHost: 4 * c.clients,
		IdleConnTimeout:     90 * time.Second,
	}}
	code := s.run()
	s.report(os.Stdout)
	if c.jsonOut != "" {
		b, _ := json.MarshalIndent(s.res, "", "  ")
		if err := os.WriteFile(c.jsonOut, b, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "pushrelay-bench: %v\n", err)
			code = 1
		}
	}
	if c.keep {
		fmt.Fprintf(os.Stderr, "kept %s\n", c.workDir)
	}
	return code
}

func (s *soaker) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(s.res.Started).Seconds(), fmt.Sprintf(format, args...))
}

func (s *soaker) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.failures = append(s.failures, msg)
	s.mu.Unlock()
	s.logf("FAILURE: %s", msg)
}

func (s *soaker) run() int {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "pushrelay-bench: %v\n", err)
		return 1
	}
	s.file = filepath.Join(s.dir, "pushrelay.db")
	for _, a := range []*string{&s.addr, &s.zipkinAddr} {
		port, err := freePort()
		if err != nil {
			fmt.Fprintf(os.Stderr, "pushrelay-bench: %v\n", err)
			return 1
		}
		*a = fmt.Sprintf("127.0.0.1:%d", port)
	}
	s.url = "http://" + s.addr
	if err := s.startServer("start"); err != nil {
		s.fail("%v", err)
		return s.finish()
	}
	defer func() {
		if p := s.proc(); p != nil {
			p.kill()
		}
	}()

	// Fill every group once.
	s.logf("filling %d groups", s.f.groups)
	if !s.closedLoop(s.f.groups, 5*time.Minute, func(w, i int, _ *rand.Rand) { s.push(i, http.MethodPut) }) {
		s.fail("fill did not finish within 5m")
		return s.finish()
	}
	s.logf("filled: %v", s.snapshotOps())

	// Capacity: the mix, closed loop, as fast as the clients go.
	target := s.f.rate
	if target <= 0 {
		before := s.opsDone.Load()
		t0 := time.Now()
		deadline := t0.Add(s.f.measure)
		s.closedLoop(-1, s.f.measure+time.Minute, func(w, _ int, rng *rand.Rand) {
			if time.Now().After(deadline) {
				return
			}
			s.mixedOp(rng)
		})
		capacity := float64(s.opsDone.Load()-before) / time.Since(t0).Seconds()
		s.res.CapacityOps = capacity
		target = capacity * s.f.capacityShare
		s.logf("measured capacity %.0f requests/s with %d clients; soaking at %.0f/s", capacity, s.c.clients, target)
	}
	s.res.TargetOps = target

	// The paced soak.
	ctx, cancel := context.WithTimeout(context.Background(), s.f.duration)
	defer cancel()
	s.start = time.Now()
	s.resetOps()
	tokens := make(chan struct{}, 2*s.c.clients)
	var wg sync.WaitGroup
	wg.Go(func() { s.pace(ctx, target, tokens) })
	for w := range s.c.clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(s.c.seed, uint64(1000+w)))
			for {
				select {
				case <-ctx.Done():
					return
				case <-tokens:
					s.mixedOp(rng)
				}
			}
		})
	}
	wg.Go(func() { s.scraper(ctx) })
	wg.Go(func() { s.spans(ctx) })
	wg.Go(func() { s.sampler(ctx) })
	if s.f.killAt > 0 {
		wg.Go(func() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(float64(s.f.duration) * s.f.killAt)):
			}
			s.killAndRestart()
		})
	}
	wg.Wait()
	s.res.Seconds = time.Since(s.start).Seconds()
	s.sample("end of load")

	// The end: the running server, then after a graceful stop and restart.
	s.verify("end of load")
	if p := s.proc(); p != nil {
		t0 := time.Now()
		if err := p.stopGraceful(30 * time.Second); err != nil {
			s.fail("graceful stop: %v", err)
		} else {
			s.logf("SIGTERM: exited 0 after %v", time.Since(t0).Round(time.Millisecond))
		}
		if err := s.startServer("restart after SIGTERM"); err != nil {
			s.fail("%v", err)
		} else {
			s.verify("after SIGTERM and restart")
			if err := s.proc().stopGraceful(30 * time.Second); err != nil {
				s.fail("final graceful stop: %v", err)
			}
		}
	}
	return s.finish()
}

func (s *soaker) finish() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.lat {
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
		s.res.Latency[k] = []float64{ms(percentile(v, 0.5)), ms(percentile(v, 0.99)), ms(percentile(v, 1))}
	}
	for _, c := range s.res.Checks {
		s.res.Lost += c.Lost
	}
	s.res.Failures = s.failures
	if s.res.Lost > 0 || len(s.failures) > 0 || len(s.res.Errors) > 0 {
		return 1
	}
	return 0
}

// proc returns the current server process.
func (s *soaker) proc() *proc {
	s.procMu.Lock()
	defer s.procMu.Unlock()
	return s.p
}

// startServer starts pushrelay on s.addr with the bbolt file and waits
// until /-/ready answers 200.
func (s *soaker) startServer(why string) error {
	logf, err := os.OpenFile(filepath.Join(s.dir, "pushrelay.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := append([]string{
		"--web.listen-address=" + s.addr,
		"--persistence.file=" + s.file,
		"--traces.zipkin.listen-address=" + s.zipkinAddr,
		"--traces.otlp-grpc.listen-address=",
		"--traces.otlp-http.listen-address=",
		"--log.level=warn",
	}, s.c.pushrelayArgs...)
	cmd := exec.Command(s.c.pushrelayBin, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	fmt.Fprintf(logf, "### %s: %s %s\n", why, s.c.pushrelayBin, strings.Join(args, " "))
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", s.c.pushrelayBin, err)
	}
	p := &proc{name: "pushrelay", cmd: cmd, url: s.url, log: logf, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	s.procMu.Lock()
	s.p = p
	s.procMu.Unlock()
	cl := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	deadline := t0.Add(time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("pushrelay exited during start-up (%s): %v; see %s", why, p.err, logf.Name())
		default:
		}
		resp, err := cl.Get(s.url + "/-/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				msg := fmt.Sprintf("%s: pid %d ready after %v", why, p.pid(), time.Since(t0).Round(time.Millisecond))
				s.logf("%s", msg)
				s.mu.Lock()
				s.res.Restarts = append(s.res.Restarts, msg)
				s.mu.Unlock()
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.kill()
	return fmt.Errorf("pushrelay not ready within 1m (%s); see %s", why, logf.Name())
}

// stopGraceful sends SIGTERM and requires exit status 0 within timeout.
func (p *proc) stopGraceful(timeout time.Duration) error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s had already exited: %v", p.name, p.err)
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.name, timeout)
	}
}

// killAndRestart kills the server with SIGKILL under load, restarts it on
// the same file and address, and verifies the groups with the load paused.
func (s *soaker) killAndRestart() {
	p := s.proc()
	s.winMu.Lock()
	s.killAt, s.down = time.Now(), true
	s.winMu.Unlock()
	s.sample("before kill -9")
	s.logf("kill -9 pid %d under load", p.pid())
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		s.fail("pid %d did not die within 10s of SIGKILL", p.pid())
	}
	err := s.startServer("restart after kill -9")
	s.winMu.Lock()
	s.upAt, s.down = time.Now(), false
	s.winMu.Unlock()
	if err != nil {
		s.fail("%v", err)
		return
	}
	s.sample("after restart")
	s.verify("after kill -9 and restart")
}

// inWindow reports whether a request from t0 to t1 overlapped the kill and
// restart window.
func (s *soaker) inWindow(t0, t1 time.Time) bool {
	s.winMu.Lock()
	defer s.winMu.Unlock()
	if s.killAt.IsZero() {
		return false
	}
	if s.down {
		return !t1.Before(s.killAt)
	}
	return !t1.Before(s.killAt) && !t0.After(s.upAt)
}

// pace sends rate tokens per second into tokens until ctx ends; tokens no
// worker was free for are counted as missed.
func (s *soaker) pace(ctx context.Context, rate float64, tokens chan<- struct{}) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	budget := 0.0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			budget += rate * now.Sub(last).Seconds()
			last = now
			for ; budget >= 1; budget-- {
				select {
				case tokens <- struct{}{}:
				default:
					s.mu.Lock()
					s.res.Missed++
					s.mu.Unlock()
				}
			}
		}
	}
}

// closedLoop runs op from every client: with n >= 0 once for each i in
// [0, n), else until op's caller stops it by returning quickly at its own
// deadline. It reports whether it finished within timeout.
func (s *soaker) closedLoop(n int, timeout time.Duration, op func(w, i int, rng *rand.Rand)) bool {
	var next atomic.Int64
	deadline := time.Now().Add(timeout)
	stopAt := time.Now().Add(s.f.measure)
	var wg sync.WaitGroup
	for w := range s.c.clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(s.c.seed, uint64(w)))
			for time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				if n >= 0 && i >= n {
					return
				}
				if n < 0 && time.Now().After(stopAt) {
					return
				}
				op(w, i, rng)
			}
		})
	}
	wg.Wait()
	return time.Now().Before(deadline)
}

// mixedOp sends one PUT (70%), POST (20%) or DELETE (10%) to a random
// group.
func (s *soaker) mixedOp(rng *rand.Rand) {
	i := rng.IntN(len(s.groups))
	switch r := rng.IntN(100); {
	case r < 70:
		s.push(i, http.MethodPut)
	case r < 90:
		s.push(i, http.MethodPost)
	default:
		s.del(i)
	}
}

func (s *soaker) groupURL(i int) string {
	return fmt.Sprintf("%s/metrics/job/%s/instance/g%05d", s.url, soakJob, i)
}

// soakBody is a push body carrying seq: for PUT the bench's 40 samples plus
// soak_seq, for POST soak_seq and one more family.
func soakBody(method string, seq int64, variant int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# TYPE soak_seq gauge\nsoak_seq %d\n", seq)
	if method == http.MethodPut {
		b.Write(pushBody(variant))
	} else {
		fmt.Fprintf(&b, "# TYPE soak_posts_total counter\nsoak_posts_total %d\n", seq)
	}
	return b.Bytes()
}

// outcome is how a request ended.
type outcome int

const (
	acked   outcome = iota // 2xx
	refused                // an answer that is not 2xx: nothing applied
	unknown                // no answer: maybe applied
)

// do sends one request and classifies its outcome. Callers hold the gate
// (read-locked) around it.
func (s *soaker) do(kind, method, url string, body []byte, contentType string) outcome {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		s.countErr(kind, "request", err.Error(), time.Now(), time.Now())
		return refused
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if method == http.MethodGet {
		req.Header.Set("Accept", prometheusAccept)
		req.Header.Set("Accept-Encoding", "gzip")
	}
	t0 := time.Now()
	resp, err := s.cl.Do(req)
	var status int
	var msg []byte
	if err == nil {
		status = resp.StatusCode
		if status/100 == 2 {
			_, err = io.Copy(io.Discard, resp.Body)
		} else {
			msg, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
		}
		resp.Body.Close()
	}
	t1 := time.Now()
	switch {
	case err != nil:
		s.countErr(kind, transportKind(err), err.Error(), t0, t1)
		return unknown
	case status/100 != 2:
		s.countErr(kind, fmt.Sprintf("HTTP %d", status), strings.TrimSpace(string(msg)), t0, t1)
		return refused
	}
	s.opsDone.Add(1)
	s.mu.Lock()
	s.res.Ops[kind]++
	s.lat[kind] = append(s.lat[kind], t1.Sub(t0))
	s.mu.Unlock()
	return acked
}

// transportKind names a transport error.
func transportKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "transport"
}

func (s *soaker) countErr(kind, what, msg string, t0, t1 time.Time) {
	key := kind + " " + what
	expected := s.inWindow(t0, t1)
	s.errsNum.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if expected {
		s.res.ExpectedErrors[key]++
	} else {
		s.res.Errors[key]++
		if _, ok := s.res.FirstErrors[key]; !ok {
			if len(msg) > 300 {
				msg = msg[:300] + "…"
			}
			s.res.FirstErrors[key] = msg
			s.logf("first unexpected %s: %s", key, msg)
		}
	}
}

// push sends a PUT or POST with the group's next sequence number.
func (s *soaker) push(i int, method string) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	g := &s.groups[i]
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sent++
	seq := g.sent
	switch s.do(method, method, s.groupURL(i), soakBody(method, seq, int(seq)%bodyVariants), pushContentType) {
	case acked:
		g.acked = seq
		g.deleted, g.pushAfterDelete, g.maybeDeleted = false, false, false
	case unknown:
		if g.deleted {
			g.pushAfterDelete = true
		}
	}
}

// del deletes group i.
func (s *soaker) del(i int) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	g := &s.groups[i]
	g.mu.Lock()
	defer g.mu.Unlock()
	switch s.do("DELETE", http.MethodDelete, s.groupURL(i), nil, "") {
	case acked:
		g.deleted, g.pushAfterDelete, g.maybeDeleted = true, false, false
	case unknown:
		g.maybeDeleted = true
	}
}

// scraper scrapes /metrics as Prometheus does until ctx ends.
func (s *soaker) scraper(ctx context.Context) {
	tick := time.NewTicker(s.f.scrapeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.gate.RLock()
			s.do("scrape", http.MethodGet, s.url+"/metrics", nil, "")
			s.gate.RUnlock()
		}
	}
}

// spans sends Zipkin batches of 10 spans until ctx ends.
func (s *soaker) spans(ctx context.Context) {
	if s.f.spanRate <= 0 {
		return
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / s.f.spanRate))
	defer tick.Stop()
	services := []string{"soak-api", "soak-worker", "soak-db"}
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var b bytes.Buffer
		b.WriteByte('[')
		now := time.Now()
		for k := range 10 {
			if k > 0 {
				b.WriteByte(',')
			}
			kind := "SERVER"
			if k%2 == 1 {
				kind = "CLIENT"
			}
			dur := int64(1000 + (n*37+k*101)%50000)
			fmt.Fprintf(&b, `{"traceId":"%016x%016x","id":"%016x","name":"op-%d","kind":%q,"timestamp":%d,"duration":%d,"localEndpoint":{"serviceName":%q}`,
				n+1, k+1, n*10+k+1, k%5, kind, now.Add(-time.Duration(dur)*time.Microsecond).UnixMicro(), dur, services[k%len(services)])
			if k%7 == 3 {
				b.WriteString(`,"tags":{"error":"boom"}`)
			}
			b.WriteByte('}')
		}
		b.WriteByte(']')
		s.gate.RLock()
		s.do("zipkin", http.MethodPost, "http://"+s.zipkinAddr+"/api/v2/spans", b.Bytes(), "application/json")
		s.gate.RUnlock()
	}
}

// sampler records a sample every --soak-sample-interval until ctx ends.
func (s *soaker) sampler(ctx context.Context) {
	s.sample("start of load")
	tick := time.NewTicker(s.f.sampleInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.sample("")
		}
	}
}

// sample reads VmRSS and the server's own go_goroutines, pushrelay_groups
// and file size.
func (s *soaker) sample(note string) {
	p := s.proc()
	smp := soakSample{At: time.Since(s.start).Seconds(), Note: note}
	s.winMu.Lock()
	down := s.down
	s.winMu.Unlock()
	if down && note == "" {
		return // being restarted: killAndRestart samples around it
	}
	if p != nil && p.alive() == nil {
		smp.PID = p.pid()
		_, smp.RSSBytes = memStatus(smp.PID)
		own := s.ownGauges("go_goroutines", "pushrelay_groups", "pushrelay_persistence_file_size_bytes")
		smp.Goroutines, smp.Groups, smp.FileBytes = own["go_goroutines"], own["pushrelay_groups"], own["pushrelay_persistence_file_size_bytes"]
	} else if p != nil && !s.inWindow(time.Now(), time.Now()) {
		s.fail("pushrelay exited on its own: %v", p.alive())
	}
	s.mu.Lock()
	now, ops, errs := time.Now(), s.opsDone.Load(), s.errsNum.Load()
	if !s.lastAt.IsZero() {
		smp.OpsPerSec = float64(ops-s.lastOps) / now.Sub(s.lastAt).Seconds()
		smp.Errors = errs - s.lastErrs
	}
	s.lastOps, s.lastErrs, s.lastAt = ops, errs, now
	s.res.Samples = append(s.res.Samples, smp)
	s.mu.Unlock()
	s.logf("sample: pid %d RSS %.1f MB, goroutines %.0f, groups %.0f, file %.1f MB, %.0f ok/s, errors %d %s",
		smp.PID, float64(smp.RSSBytes)/(1<<20), smp.Goroutines, smp.Groups, smp.FileBytes/(1<<20), smp.OpsPerSec, smp.Errors, note)
}

// ownGauges scrapes the text exposition and returns the unlabelled samples
// named.
func (s *soaker) ownGauges(names ...string) map[string]float64 {
	out := map[string]float64{}
	b, err := s.exposition()
	if err != nil {
		return out
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		for _, n := range names {
			if name == n {
				out[n], _ = strconv.ParseFloat(value, 64)
			}
		}
	}
	return out
}

// exposition returns GET /metrics in the text format.
func (s *soaker) exposition() ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, s.url+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", textAccept)
	resp, err := s.cl.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET /metrics: HTTP %d: %.200s", resp.StatusCode, b)
	}
	return b, err
}

// verify pauses the load, scrapes soak_seq of every group and checks it
// against what was acknowledged.
func (s *soaker) verify(when string) {
	s.gate.Lock()
	defer s.gate.Unlock()
	chk := soakCheck{When: when, Groups: len(s.groups)}
	defer func() {
		s.mu.Lock()
		s.res.Checks = append(s.res.Checks, chk)
		s.mu.Unlock()
		s.logf("check %s: %d groups, %d present, %d absent after an acknowledged delete, %d absent after an unacknowledged delete, lost %d, anomalies %d %s",
			when, chk.Groups, chk.Present, chk.Absent, chk.Maybe, chk.Lost, chk.Bad, chk.Err)
		for _, d := range chk.Details {
			s.logf("  %s", d)
		}
	}()
	b, err := s.exposition()
	if err != nil {
		chk.Err = err.Error()
		s.fail("check %s: %v", when, err)
		return
	}
	stored := map[int]float64{}
	prefix := []byte("soak_seq{")
	for line := range bytes.Lines(b) {
		if !bytes.HasPrefix(line, prefix) {
			continue
		}
		i := bytes.Index(line, []byte(`instance="g`))
		j := bytes.LastIndexByte(line, ' ')
		if i < 0 || j < 0 {
			continue
		}
		rest := line[i+len(`instance="g`):]
		k := bytes.IndexByte(rest, '"')
		if k < 0 {
			continue
		}
		idx, err1 := strconv.Atoi(string(rest[:k]))
		v, err2 := strconv.ParseFloat(strings.TrimSpace(string(line[j+1:])), 64)
		if err1 == nil && err2 == nil {
			stored[idx] = v
		}
	}
	detail := func(bad *int, format string, args ...any) {
		*bad++
		if len(chk.Details) < 20 {
			chk.Details = append(chk.Details, fmt.Sprintf(format, args...))
		}
	}
	for i := range s.groups {
		g := &s.groups[i] // the gate excludes every request: no lock needed
		v, present := stored[i]
		switch {
		case present && g.deleted && !(g.pushAfterDelete && v > float64(g.acked)):
			detail(&chk.Bad, "g%05d: present with soak_seq %v after an acknowledged DELETE (last acknowledged push %d, no later push applied)", i, v, g.acked)
		case present && v < float64(g.acked):
			detail(&chk.Lost, "g%05d: soak_seq %v < last acknowledged %d: LOST", i, v, g.acked)
		case present && v > float64(g.sent):
			detail(&chk.Bad, "g%05d: soak_seq %v was never sent (last sent %d)", i, v, g.sent)
		case present:
			chk.Present++
		case g.acked == 0:
			// Never acknowledged: nothing to find.
		case g.deleted:
			chk.Absent++
		case g.maybeDeleted:
			chk.Maybe++
		default:
			detail(&chk.Lost, "g%05d: absent, last acknowledged push %d, no DELETE after it: LOST", i, g.acked)
		}
	}
	if chk.Lost > 0 {
		s.fail("check %s: %d acknowledged pushes lost", when, chk.Lost)
	}
	if chk.Bad > 0 {
		s.fail("check %s: %d anomalies", when, chk.Bad)
	}
}

func (s *soaker) snapshotOps() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for k, v := range s.res.Ops {
		out[k] = v
	}
	return out
}

// resetOps clears the counts and latencies of the fill and measurement.
func (s *soaker) resetOps() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.res.Ops = map[string]int64{}
	s.lat = map[string][]time.Duration{}
	s.res.Missed = 0
}

func (s *soaker) report(w io.Writer) {
	r := s.res
	fmt.Fprintf(w, "\n# pushrelay-bench --soak, %s\n  %s\n", r.Started.Format("2006-01-02 15:04:05"), r.Command)
	fmt.Fprintf(w, "\n%d groups, %d clients; measured capacity %.0f requests/s, target %.0f/s; paced load %.0fs; tokens missed %d\n",
		r.Groups, s.c.clients, r.CapacityOps, r.TargetOps, r.Seconds, r.Missed)
	fmt.Fprintln(w, "\n## Acknowledged requests of the paced load (latency ms: p50 p99 max)")
	for _, k := range sortedKeysOf(r.Ops) {
		rate := 0.0
		if r.Seconds > 0 {
			rate = float64(r.Ops[k]) / r.Seconds
		}
		fmt.Fprintf(w, "  %-7s %9d  %7.1f/s  %v\n", k, r.Ops[k], rate, r.Latency[k])
	}
	fmt.Fprintln(w, "\n## Errors")
	fmt.Fprintf(w, "  during the kill/restart window (expected): %s\n", tally(r.ExpectedErrors))
	fmt.Fprintf(w, "  outside it (unexpected):                    %s\n", tally(r.Errors))
	for _, k := range sortedKeysOf(r.FirstErrors) {
		fmt.Fprintf(w, "    first %s: %s\n", k, r.FirstErrors[k])
	}
	fmt.Fprintln(w, "\n## Restarts")
	for _, m := range r.Restarts {
		fmt.Fprintln(w, "  "+m)
	}
	fmt.Fprintln(w, "\n## Samples (VmRSS, go_goroutines, pushrelay_groups, file size; acknowledged requests/s and errors since the previous sample)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "t s\tpid\tRSS MB\tgoroutines\tgroups\tfile MB\tok/s\terrors\tnote\t")
	for _, m := range r.Samples {
		fmt.Fprintf(tw, "%.0f\t%d\t%.1f\t%.0f\t%.0f\t%.1f\t%.0f\t%d\t%s\t\n", m.At, m.PID, float64(m.RSSBytes)/(1<<20), m.Goroutines, m.Groups, m.FileBytes/(1<<20), m.OpsPerSec, m.Errors, m.Note)
	}
	tw.Flush()
	fmt.Fprintln(w, "\n## Checks of acknowledged pushes")
	for _, c := range r.Checks {
		fmt.Fprintf(w, "  %-28s groups %d, present %d, absent after acked delete %d, absent after unacked delete %d, LOST %d, anomalies %d %s\n",
			c.When, c.Groups, c.Present, c.Absent, c.Maybe, c.Lost, c.Bad, c.Err)
		for _, d := range c.Details {
			fmt.Fprintln(w, "    "+d)
		}
	}
	fmt.Fprintf(w, "\nlost acknowledged pushes: %d\n", r.Lost)
	if len(r.Failures) > 0 {
		fmt.Fprintln(w, "FAILURES:")
		for _, f := range r.Failures {
			fmt.Fprintln(w, "  "+f)
		}
	} else if len(r.Errors) == 0 && r.Lost == 0 {
		fmt.Fprintln(w, "PASS")
	}
}

func sortedKeysOf[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func tally(m map[string]int64) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range sortedKeysOf(m) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
