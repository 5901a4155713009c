package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// prometheusAccept is the Accept header Prometheus 2.x/3.x sends when it
// scrapes.
const prometheusAccept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"

// textAccept asks for the text format 0.0.4.
const textAccept = "text/plain;version=0.0.4"

// pushContentType is what text-format push clients send.
const pushContentType = "text/plain; version=0.0.4; charset=utf-8"

// bodyVariants is how many different push bodies are cycled through.
const bodyVariants = 16

// target is one server under test.
type target struct {
	name string
	url  string
	// pid is the server's process id, 0 when unknown (RSS and CPU are then
	// not reported).
	pid  int
	proc *proc
	// isPushrelay marks a pushrelay, whose store metrics are read.
	isPushrelay bool
	// warmed is set once warmUp ran for the server.
	warmed bool
}

// loader sends the load. Its client keeps connections alive and never
// decompresses by itself, so that wire bytes can be measured.
type loader struct {
	cl      *http.Client
	timeout time.Duration
	clients int
	job     string
	bodies  [][]byte
	// maxRequests bounds the requests of one phase.
	maxRequests int64
	// settle waits for a quiet machine before a push phase or scrapes.
	settle func() (waited time.Duration, quiet bool)
	// repushes counts the repushes made, each with bodies of its own.
	repushes int
}

func newLoader(clients int, job string, maxRequests int64, timeout time.Duration) *loader {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * clients,
		MaxIdleConnsPerHost: 4 * clients,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	l := &loader{
		cl:          &http.Client{Transport: tr, Timeout: timeout},
		timeout:     timeout,
		clients:     clients,
		job:         job,
		maxRequests: maxRequests,
		settle: func() (time.Duration, bool) {
			return settle(busyCPU, settleWindow, settleQuietShare, settleLimit)
		},
	}
	for v := range bodyVariants {
		l.bodies = append(l.bodies, pushBody(v))
	}
	return l
}

func (l *loader) groupURL(base string, i int) string {
	return base + l.groupPath(i)
}

// groupPath is the push path of group i below the base URL.
func (l *loader) groupPath(i int) string {
	return fmt.Sprintf("/metrics/job/%s/instance/g%06d", l.job, i)
}

// errorKey classifies a failed request for the error table.
func errorKey(status int, err error) string {
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "timeout"
		}
		return "transport"
	}
	return fmt.Sprintf("HTTP %d", status)
}

// errorTally counts failures by kind and keeps the first message of each.
type errorTally struct {
	mu    sync.Mutex
	Count map[string]int    `json:"count,omitempty"`
	First map[string]string `json:"first,omitempty"`
}

func (e *errorTally) add(key, msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.Count == nil {
		e.Count, e.First = map[string]int{}, map[string]string{}
	}
	e.Count[key]++
	if _, ok := e.First[key]; !ok {
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		e.First[key] = msg
	}
}

func (e *errorTally) total() int {
	n := 0
	for _, c := range e.Count {
		n += c
	}
	return n
}

func (e *errorTally) String() string {
	if e.total() == 0 {
		return "0"
	}
	keys := make([]string, 0, len(e.Count))
	for k := range e.Count {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, e.Count[k])
	}
	return strings.Join(parts, " ")
}

// put pushes body to url with PUT and reports the status; a non-2xx answer
// or a transport error is returned as an error key and message.
func (l *loader) put(url string, body []byte) (ok bool, key, msg string) {
	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return false, "request", err.Error()
	}
	req.Header.Set("Content-Type", pushContentType)
	resp, err := l.cl.Do(req)
	if err != nil {
		return false, errorKey(0, err), err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		_, _ = io.Copy(io.Discard, resp.Body)
		return true, "", ""
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_, _ = io.Copy(io.Discard, resp.Body)
	return false, errorKey(resp.StatusCode, nil), strings.TrimSpace(string(b))
}

// fillResult is the outcome of pushing groups [From, To) once each.
type fillResult struct {
	Target   string      `json:"target"`
	From     int         `json:"from"`
	To       int         `json:"to"`
	Done     int         `json:"done"`
	Seconds  float64     `json:"seconds"`
	Rate     float64     `json:"pushes_per_second"`
	TimedOut bool        `json:"timed_out"`
	Errors   *errorTally `json:"errors"`
}

// fill pushes every group in [from, to) once with the configured number of
// clients, stopping at timeout.
func (l *loader) fill(t *target, from, to int, timeout time.Duration) fillResult {
	return l.putGroups(t, from, to, l.bodies, timeout)
}

// repush pushes every group in [0, groups) again, each with values that no
// earlier push had: every repush takes bodyVariants new bodies, cycled over
// the groups as a fill cycles its own, so that the exposition stays as
// varied (and as compressible) as after a fill.
func (l *loader) repush(t *target, groups int, timeout time.Duration) fillResult {
	l.repushes++
	bodies := make([][]byte, bodyVariants)
	for v := range bodies {
		bodies[v] = pushBody(l.repushes*bodyVariants + v)
	}
	return l.putGroups(t, 0, groups, bodies, timeout)
}

// putGroups PUTs every group i in [from, to) with bodies[i%len(bodies)].
func (l *loader) putGroups(t *target, from, to int, bodies [][]byte, timeout time.Duration) fillResult {
	res := fillResult{Target: t.name, From: from, To: to, Errors: &errorTally{}}
	var next, done atomic.Int64
	next.Store(int64(from))
	start := time.Now()
	deadline := start.Add(timeout)
	var timedOut atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < l.clients; w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				if time.Now().After(deadline) {
					timedOut.Store(true)
					return
				}
				ok, key, msg := l.put(l.groupURL(t.url, i), bodies[i%len(bodies)])
				if ok {
					done.Add(1)
				} else {
					res.Errors.add(key, msg)
				}
			}
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.Done = int(done.Load())
	res.TimedOut = timedOut.Load()
	if res.Seconds > 0 {
		res.Rate = float64(res.Done) / res.Seconds
	}
	return res
}

// pushResult is the outcome of a timed push phase.
type pushResult struct {
	Target   string      `json:"target"`
	Groups   int         `json:"groups"`
	Clients  int         `json:"clients"`
	Seconds  float64     `json:"seconds"`
	Requests int         `json:"requests"`
	OK       int         `json:"ok"`
	Rate     float64     `json:"pushes_per_second"`
	P50ms    float64     `json:"p50_ms"`
	P90ms    float64     `json:"p90_ms"`
	P99ms    float64     `json:"p99_ms"`
	MaxMs    float64     `json:"max_ms"`
	Errors   *errorTally `json:"errors"`
	// ServerCPUus is the server's CPU time per successful push, in µs, and
	// ServerCPUPct its CPU use in percent of one core; both 0 when the
	// process is unknown.
	ServerCPUus  float64 `json:"server_cpu_us_per_push"`
	ServerCPUPct float64 `json:"server_cpu_percent"`
	ClientCPUPct float64 `json:"client_cpu_percent"`
	// OtherCPUPct is the CPU that neither the server nor this tool used
	// during the phase, in percent of one core: other processes on a
	// shared machine. Only meaningful when the server's pid is known.
	OtherCPUPct float64 `json:"other_cpu_percent"`
	// StealCPUPct is the part of OtherCPUPct that the hypervisor gave to
	// other guests (steal time in /proc/stat).
	StealCPUPct float64 `json:"steal_cpu_percent"`
	// SettleSeconds is how long the phase waited for a quiet machine
	// before it started (see settle); Unsettled is set when it started
	// after the limit without one.
	SettleSeconds float64 `json:"settle_seconds"`
	Unsettled     bool    `json:"unsettled,omitempty"`
	Profile       string  `json:"cpu_profile,omitempty"`
	// Batches, MeanBatch, MeanWriteMs and MeanCommitMs come from
	// pushrelay's own store metrics, read before and after the phase.
	Batches      float64 `json:"batches,omitempty"`
	MeanBatch    float64 `json:"mean_batch,omitempty"`
	MeanWriteMs  float64 `json:"mean_write_ms,omitempty"`
	MeanCommitMs float64 `json:"mean_commit_ms,omitempty"`
	// RoundRates are the pushes/s of each round the phase was run in.
	RoundRates []float64 `json:"round_pushes_per_second,omitempty"`

	// What the summary figures are computed from, kept to merge rounds.
	latencies                                []time.Duration // sorted
	serverCPU, clientCPU, otherCPU, stealCPU time.Duration
	serverKnown                              bool
	store                                    storeDeltas
}

// storeDeltas are the changes of pushrelay's store summaries over a phase.
type storeDeltas struct {
	batchSum, batches, writeSum, writes, commitSum, commits float64
}

// Own metrics of pushrelay's store that describe its group commit.
const (
	metricBatchSize = "pushrelay_store_write_batch_size"
	metricWrite     = "pushrelay_store_write_duration_seconds"
	metricCommit    = "pushrelay_persistence_commit_duration_seconds"
)

// ownSummaries scrapes the target's text exposition of the families names
// (name[] parameters, so that the scrape neither renders nor caches the
// pushed groups) and returns their _sum and _count samples without labels,
// keyed by sample name.
func (l *loader) ownSummaries(t *target, names ...string) map[string]float64 {
	req, err := http.NewRequest(http.MethodGet, t.url+"/metrics?"+url.Values{"name[]": names}.Encode(), nil)
	if err != nil {
		return nil
	}
	req.Header.Set("Accept", textAccept)
	resp, err := l.cl.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	out := map[string]float64{}
	for line := range bytes.Lines(b) {
		if !bytes.HasPrefix(line, []byte("pushrelay_")) {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimSpace(string(line)), " ")
		if !ok {
			continue
		}
		for _, n := range names {
			if name == n+"_sum" || name == n+"_count" {
				if v, err := strconv.ParseFloat(value, 64); err == nil {
					out[name] = v
				}
			}
		}
	}
	return out
}

// add adds the deltas of o to d.
func (d *storeDeltas) add(o storeDeltas) {
	d.batchSum += o.batchSum
	d.batches += o.batches
	d.writeSum += o.writeSum
	d.writes += o.writes
	d.commitSum += o.commitSum
	d.commits += o.commits
}

// storeStats returns the group-commit deltas between two readings of
// ownSummaries.
func storeStats(before, after map[string]float64) storeDeltas {
	delta := func(n string) (sum, count float64) {
		return after[n+"_sum"] - before[n+"_sum"], after[n+"_count"] - before[n+"_count"]
	}
	var d storeDeltas
	d.batchSum, d.batches = delta(metricBatchSize)
	d.writeSum, d.writes = delta(metricWrite)
	d.commitSum, d.commits = delta(metricCommit)
	return d
}

// summarize computes the summary figures of res from its raw data.
func (res *pushResult) summarize() {
	res.Requests = len(res.latencies)
	res.Rate = float64(res.OK) / res.Seconds
	res.P50ms = ms(percentile(res.latencies, 0.50))
	res.P90ms = ms(percentile(res.latencies, 0.90))
	res.P99ms = ms(percentile(res.latencies, 0.99))
	res.MaxMs = 0
	if len(res.latencies) > 0 {
		res.MaxMs = ms(res.latencies[len(res.latencies)-1])
	}
	if res.serverKnown {
		res.ServerCPUPct = 100 * res.serverCPU.Seconds() / res.Seconds
		if res.OK > 0 {
			res.ServerCPUus = float64(res.serverCPU.Microseconds()) / float64(res.OK)
		}
	}
	res.ClientCPUPct = 100 * res.clientCPU.Seconds() / res.Seconds
	res.OtherCPUPct = max(0, 100*res.otherCPU.Seconds()/res.Seconds)
	res.StealCPUPct = 100 * res.stealCPU.Seconds() / res.Seconds
	// Steal time is part of the other CPU; the clock ticks of /proc/stat
	// can make the difference of the others smaller.
	res.OtherCPUPct = max(res.OtherCPUPct, res.StealCPUPct)
	d := res.store
	if d.batches > 0 {
		res.Batches, res.MeanBatch = d.batches, d.batchSum/d.batches
	}
	if d.writes > 0 {
		res.MeanWriteMs = 1000 * d.writeSum / d.writes
	}
	if d.commits > 0 {
		res.MeanCommitMs = 1000 * d.commitSum / d.commits
	}
}

// mergeRounds joins the rounds of one push phase into one result whose
// figures are those of all their pushes together.
func mergeRounds(rounds []pushResult) pushResult {
	res := pushResult{Target: rounds[0].Target, Groups: rounds[0].Groups, Clients: rounds[0].Clients, Errors: &errorTally{}, serverKnown: true}
	for _, r := range rounds {
		res.Seconds += r.Seconds
		res.OK += r.OK
		res.latencies = append(res.latencies, r.latencies...)
		res.serverCPU += r.serverCPU
		res.clientCPU += r.clientCPU
		res.otherCPU += r.otherCPU
		res.stealCPU += r.stealCPU
		res.SettleSeconds += r.SettleSeconds
		res.Unsettled = res.Unsettled || r.Unsettled
		res.serverKnown = res.serverKnown && r.serverKnown
		res.store.add(r.store)
		if res.Profile == "" {
			res.Profile = r.Profile
		}
		res.RoundRates = append(res.RoundRates, r.Rate)
		for key, n := range r.Errors.Count {
			res.Errors.add(key, r.Errors.First[key])
			res.Errors.Count[key] += n - 1
		}
	}
	slices.Sort(res.latencies)
	res.summarize()
	return res
}

// A push phase, and the scrapes of one mode at one level, start once the
// machine used less than settleQuietShare of one core over settleWindow,
// or after settleLimit.
const (
	settleWindow     = 250 * time.Millisecond
	settleQuietShare = 0.1
	settleLimit      = 10 * time.Second
)

// pushPhase waits for a quiet machine (settle), then PUTs bodies to
// uniformly random groups among [0, groups) from every client until dur
// has passed (or maxRequests were sent) and waits for
// the requests in flight. When profileURL is set, a CPU profile of the
// target is fetched from it during the phase and written to profilePath.
func (l *loader) pushPhase(t *target, groups int, dur time.Duration, seed uint64, profileURL, profilePath string) pushResult {
	res := pushResult{Target: t.name, Groups: groups, Clients: l.clients, Errors: &errorTally{}}
	paths := make([]string, groups)
	for i := range paths {
		paths[i] = l.groupPath(i)
	}
	lat := make([][]time.Duration, l.clients)
	var sent, ok atomic.Int64

	waited, quiet := l.settle()
	res.SettleSeconds, res.Unsettled = waited.Seconds(), !quiet
	var profWG sync.WaitGroup
	if profileURL != "" {
		profWG.Go(func() {
			time.Sleep(time.Second)
			if err := fetchToFile(l.cl, profileURL, profilePath); err != nil {
				fmt.Fprintf(os.Stderr, "  cpu profile: %v\n", err)
				return
			}
			res.Profile = profilePath
		})
	}

	var stats0 map[string]float64
	if t.isPushrelay {
		stats0 = l.ownSummaries(t, metricBatchSize, metricWrite, metricCommit)
	}
	cpu0, self0 := cpuTime(t.pid), selfCPU()
	all0, steal0 := machineCPU()
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	for w := 0; w < l.clients; w++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			mine := make([]time.Duration, 0, 4096)
			client, err := newRawClient(t.url, l.timeout)
			if err != nil {
				res.Errors.add("request", err.Error())
				return
			}
			defer client.close()
			for n := 0; ; n++ {
				if time.Now().After(deadline) || sent.Add(1) > l.maxRequests {
					break
				}
				p := paths[rng.IntN(groups)]
				t0 := time.Now()
				good, key, msg := client.put(p, l.bodies[n%bodyVariants])
				mine = append(mine, time.Since(t0))
				if good {
					ok.Add(1)
				} else {
					res.Errors.add(key, msg)
				}
			}
			lat[w] = mine
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, self1 := cpuTime(t.pid), selfCPU()
	all1, steal1 := machineCPU()
	profWG.Wait()
	if stats0 != nil {
		res.store = storeStats(stats0, l.ownSummaries(t, metricBatchSize, metricWrite, metricCommit))
	}
	for _, m := range lat {
		res.latencies = append(res.latencies, m...)
	}
	slices.Sort(res.latencies)
	res.Seconds = elapsed.Seconds()
	res.OK = int(ok.Load())
	res.serverKnown = t.pid > 0
	if res.serverKnown {
		res.serverCPU = cpu1 - cpu0
	}
	res.clientCPU = self1 - self0
	res.otherCPU = (all1 - all0) - (self1 - self0)
	res.stealCPU = steal1 - steal0
	if t.pid > 0 && t.pid != os.Getpid() {
		res.otherCPU -= cpu1 - cpu0
	}
	res.summarize()
	return res
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// scrapeMode is one way of scraping /metrics.
type scrapeMode struct {
	Name   string
	Accept string
	Gzip   bool
}

var scrapeModes = []scrapeMode{
	{Name: "prometheus+gzip", Accept: prometheusAccept, Gzip: true},
	{Name: "text+gzip", Accept: textAccept, Gzip: true},
	{Name: "text", Accept: textAccept, Gzip: false},
}

// scrapeResult is the outcome of repeated scrapes of one mode.
type scrapeResult struct {
	Target  string `json:"target"`
	Groups  int    `json:"groups"`
	Mode    string `json:"mode"`
	Scrapes int    `json:"scrapes"`
	// FirstSeconds is the median of FirstsSeconds (of an even count the
	// upper of the middle two, as MedianSeconds).
	FirstSeconds float64 `json:"first_seconds"`
	// FirstsSeconds are the times of the scrapes that each followed a
	// change of every group: the first of the level, after its push phase,
	// fill or a repush of the groups a fill to it did not push, and each one
	// after a repush.
	FirstsSeconds []float64 `json:"firsts_seconds"`
	MedianSeconds float64   `json:"median_seconds"`
	WireBytes     int64     `json:"wire_bytes"`
	RawBytes      int64     `json:"raw_bytes"`
	Samples       int       `json:"samples"`
	USPerSample   float64   `json:"us_per_sample"`
	// FirstUSPerSample is FirstSeconds per sample: nothing cached per
	// series survives a change of every group, the case Prometheus meets
	// when groups are pushed between its scrapes.
	FirstUSPerSample float64 `json:"first_us_per_sample"`
	ContentType      string  `json:"content_type"`
	ContentEncoding  string  `json:"content_encoding,omitempty"`
	// PeakRSS is the largest VmHWM seen after a scrape that followed the
	// push phase or fill, as every server's is; PeakReset tells whether
	// VmHWM was reset before each scrape (otherwise it is the peak of the
	// process's whole life).
	PeakRSS   int64 `json:"peak_rss_bytes"`
	PeakReset bool  `json:"peak_rss_reset"`
	RSSAfter  int64 `json:"rss_after_bytes"`
	// RepushPeakRSS is the largest VmHWM seen after a scrape that followed
	// pushing every group again, whose replaced groups are garbage then.
	RepushPeakRSS int64  `json:"repush_peak_rss_bytes,omitempty"`
	Err           string `json:"error,omitempty"`
}

// warmUp scrapes t, filled to groups, once in every compressed mode and
// discards the results, as a scraper does from the server's start, unless
// t was warmed up before. A process's first scrape builds what later
// scrapes reuse (pushrelay's deflate writers and buffers), which the first
// scrape after a push phase, what Prometheus sees when groups are pushed
// between its scrapes, should not count. The plain mode builds nothing the
// compressed ones do not, and its cache would hold a copy of the whole text
// exposition through the push rounds.
func (l *loader) warmUp(t *target, groups int) error {
	if t.warmed {
		return nil
	}
	t.warmed = true
	for _, m := range scrapeModes {
		if !m.Gzip {
			continue
		}
		if sr := l.scrape(t, groups, m, 1, 0); sr.Err != "" {
			return fmt.Errorf("%s: warm-up scrape %s: %s", t.name, m.Name, sr.Err)
		}
	}
	fmt.Fprintf(os.Stderr, "  warm-up: %s scraped once in every compressed mode at %d groups\n", t.name, groups)
	return nil
}

// scrape fetches /metrics n times in mode and measures the time until the
// whole body is read. plainSize is the size of the exposition in plain text
// from an earlier scrape of the same store, or 0 when there is none.
func (l *loader) scrape(t *target, groups int, mode scrapeMode, n, plainSize int) scrapeResult {
	res := scrapeResult{Target: t.name, Groups: groups, Mode: mode.Name}
	var times []time.Duration
	// One buffer for all scrapes, for a plain body grown beforehand to a
	// little more than plainSize (ReadFrom grows a buffer with less than
	// MinRead bytes free, and own metrics change size): the body is read
	// into memory that is already there, so the times measure the server
	// and the transfer rather than the growth of the load tool's buffer,
	// which for a first scrape of 177 MB of text takes longer than the
	// server's rendering.
	var buf bytes.Buffer
	if !mode.Gzip && plainSize > 0 {
		buf.Grow(plainSize + plainSize/16 + bytes.MinRead)
	}
	for i := 0; i < n; i++ {
		buf.Reset()
		reset := resetPeakRSS(t.pid)
		req, err := http.NewRequest(http.MethodGet, t.url+"/metrics", nil)
		if err != nil {
			res.Err = err.Error()
			return res
		}
		req.Header.Set("Accept", mode.Accept)
		if mode.Gzip {
			req.Header.Set("Accept-Encoding", "gzip")
		} else {
			req.Header.Set("Accept-Encoding", "identity")
		}
		start := time.Now()
		resp, err := l.cl.Do(req)
		if err == nil {
			_, err = buf.ReadFrom(resp.Body)
			resp.Body.Close()
		}
		d := time.Since(start)
		if err != nil {
			res.Err = err.Error()
			return res
		}
		if resp.StatusCode != http.StatusOK {
			res.Err = fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, buf.String())
			return res
		}
		times = append(times, d)
		hwm, rss := memStatus(t.pid)
		res.PeakRSS = max(res.PeakRSS, hwm)
		res.PeakReset = reset
		res.RSSAfter = rss
		if i > 0 {
			continue
		}
		res.FirstSeconds = d.Seconds()
		res.FirstsSeconds = []float64{d.Seconds()}
		res.WireBytes = int64(buf.Len())
		res.ContentType = resp.Header.Get("Content-Type")
		res.ContentEncoding = resp.Header.Get("Content-Encoding")
		raw := buf.Bytes()
		if strings.EqualFold(res.ContentEncoding, "gzip") {
			zr, err := gzip.NewReader(bytes.NewReader(raw))
			if err != nil {
				res.Err = "gunzip: " + err.Error()
				return res
			}
			if raw, err = io.ReadAll(zr); err != nil {
				res.Err = "gunzip: " + err.Error()
				return res
			}
		}
		res.RawBytes = int64(len(raw))
		res.Samples = countSamples(raw)
	}
	res.Scrapes = len(times)
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	res.MedianSeconds = times[len(times)/2].Seconds()
	res.perSample()
	return res
}

// addFirst records the time of a further scrape that followed a change of
// every group.
func (s *scrapeResult) addFirst(seconds float64) {
	s.FirstsSeconds = append(s.FirstsSeconds, seconds)
	sorted := slices.Sorted(slices.Values(s.FirstsSeconds))
	s.FirstSeconds = sorted[len(sorted)/2]
	s.perSample()
}

// perSample sets the per-sample times from the scrape times.
func (s *scrapeResult) perSample() {
	if s.Samples > 0 {
		s.USPerSample = s.MedianSeconds * 1e6 / float64(s.Samples)
		s.FirstUSPerSample = s.FirstSeconds * 1e6 / float64(s.Samples)
	}
}

// profileScrapes scrapes in mode repeatedly (at most maxScrapes, bounded by
// the profile's duration) while fetching a CPU profile into path.
func (l *loader) profileScrapes(t *target, mode scrapeMode, profileURL, path string, maxScrapes int) (int, error) {
	var wg sync.WaitGroup
	var profErr error
	var stop atomic.Bool
	wg.Go(func() {
		profErr = fetchToFile(l.cl, profileURL, path)
		stop.Store(true)
	})
	n := 0
	for ; n < maxScrapes && !stop.Load(); n++ {
		if r := l.scrape(t, 0, mode, 1, 0); r.Err != "" {
			stop.Store(true)
			wg.Wait()
			return n, errors.New(r.Err)
		}
	}
	wg.Wait()
	return n, profErr
}

// fetchToFile GETs url into path.
func fetchToFile(cl *http.Client, url, path string) error {
	resp, err := cl.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: HTTP %d: %s", url, resp.StatusCode, b)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// countGroups scrapes the text format and counts push_time_seconds series of
// the bench job.
func (l *loader) countGroups(t *target) (int, error) {
	req, err := http.NewRequest(http.MethodGet, t.url+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", textAccept)
	resp, err := l.cl.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	n := 0
	job := []byte(fmt.Sprintf("job=%q", l.job))
	for line := range bytes.Lines(b) {
		if bytes.HasPrefix(line, []byte("push_time_seconds{")) && bytes.Contains(line, job) {
			n++
		}
	}
	return n, nil
}

// deleteGroups deletes groups [0, n) of the bench job, for targets that the
// tool did not start.
func (l *loader) deleteGroups(t *target, n int, timeout time.Duration) (int, *errorTally) {
	errs := &errorTally{}
	var next, done atomic.Int64
	deadline := time.Now().Add(timeout)
	var wg sync.WaitGroup
	for w := 0; w < l.clients; w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || time.Now().After(deadline) {
					return
				}
				req, _ := http.NewRequest(http.MethodDelete, l.groupURL(t.url, i), nil)
				resp, err := l.cl.Do(req)
				if err != nil {
					errs.add(errorKey(0, err), err.Error())
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					done.Add(1)
				} else {
					errs.add(errorKey(resp.StatusCode, nil), "")
				}
			}
		})
	}
	wg.Wait()
	return int(done.Load()), errs
}
