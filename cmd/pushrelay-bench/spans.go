package main

// The spans mode (--spans) measures pushrelay's trace ingestion: OTLP gRPC
// export requests of pre-encoded ExportTraceServiceRequest batches, sent by
// concurrent senders over loopback.
//
//  1. max rate: for each batch size (--spans-batch-sizes, 100 and 1000
//     spans) the senders send as fast as pushrelay answers, in
//     --spans-rounds rounds of --spans-duration; spans/s, spans per
//     CPU-second of the pushrelay process (/proc/<pid>/stat utime+stime,
//     summed over the rounds) and request latency. With
//     --spans-otelcol-bin every round is followed by one against an
//     OpenTelemetry Collector (otelcol.go);
//  2. half load: the same batches paced (open loop, evenly spread over the
//     senders) at half the measured maximum, or at --spans-paced-rate, for
//     --spans-paced-duration; request latency, p99 foremost. A fixed rate
//     compares the latency of two builds at the same load;
//  3. series: batches of spans with unique names until
//     pushrelay_spanmetrics_series reaches --spans-series, then pushrelay's
//     VmRSS and one scrape of /metrics.
//
// The batches model Windmill: ~20 services, 50 span names (server, RPC and
// database client, internal job spans), traces of ~10 spans with
// client→server pairs across services, and the worker's job attributes.
// Dimensions are bounded attributes (workspace_id, language, tag,
// job_kind) that are functions of service and span name, so phases 1 and 2
// stay below ~2,500 series. The ingestion window is switched off
// (--spanmetrics.ingestion-slack=0) because the batches are encoded once
// with fixed timestamps and re-sent for minutes; the window check itself is
// two comparisons per span.
//
// Example:
//
//	go build -o /tmp/sb/pushrelay ./cmd/pushrelay
//	go run ./cmd/pushrelay-bench --spans --pushrelay-bin=/tmp/sb/pushrelay

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Targets from the issue.
const (
	targetSpansPerCPUSecond = 400_000
	targetHalfLoadP99ms     = 10.0
)

// exportMethod is the OTLP trace export RPC.
const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// spanDimensions are the span metric dimensions pushrelay is started with.
const spanDimensions = "workspace_id,language,tag,job_kind"

// spanConfig holds the flags of the spans mode.
type spanConfig struct {
	enabled      bool
	grpcAddress  string
	senders      int
	conns        int
	duration     time.Duration
	pacedDur     time.Duration
	pacedRate    float64
	warmup       time.Duration
	batchSizes   string
	variants     int
	seriesTarget int
	pdataClient  bool
	minimal      bool
	seed         uint64
	otelcolBin   string
	rounds       int
}

// registerSpanFlags adds the flags of the spans mode to app.
func registerSpanFlags(app *kingpin.Application) *spanConfig {
	s := &spanConfig{}
	app.Flag("spans", "Run the span ingestion benchmark (OTLP gRPC) instead of the push/scrape one.").BoolVar(&s.enabled)
	app.Flag("spans-otlp-grpc-address", "OTLP gRPC address of the running pushrelay given by --pushrelay-url (loopback); ignored when pushrelay is started.").StringVar(&s.grpcAddress)
	app.Flag("spans-senders", "Concurrent span senders.").Default("8").IntVar(&s.senders)
	app.Flag("spans-conns", "gRPC connections the senders share.").Default("4").IntVar(&s.conns)
	app.Flag("spans-duration", "Length of each max-rate phase; there are --spans-rounds of them per batch size.").Default("5s").DurationVar(&s.duration)
	app.Flag("spans-rounds", "Max-rate phases per batch size; with --spans-otelcol-bin each is followed by one against the collector, so that both see the same machine.").Default("3").IntVar(&s.rounds)
	app.Flag("spans-paced-duration", "Length of each half-load phase.").Default("15s").DurationVar(&s.pacedDur)
	app.Flag("spans-paced-rate", "Spans/s of the paced phases; 0 paces at half the rate measured in the max-rate phase.").Default("0").Float64Var(&s.pacedRate)
	app.Flag("spans-warmup", "Warm-up before the first phase.").Default("3s").DurationVar(&s.warmup)
	app.Flag("spans-batch-sizes", "Comma-separated spans per export request.").Default("100,1000").StringVar(&s.batchSizes)
	app.Flag("spans-variants", "Different pre-encoded batches per size.").Default("32").IntVar(&s.variants)
	app.Flag("spans-series", "Series count (pushrelay_spanmetrics_series) at which pushrelay's RSS is read; at most its --spanmetrics.max-series.").Default("10000").IntVar(&s.seriesTarget)
	app.Flag("spans-pdata-client", "Send with ptraceotlp.NewGRPCClient (marshalling every request) instead of writing the pre-encoded bytes.").BoolVar(&s.pdataClient)
	app.Flag("spans-minimal-attributes", "Give spans only the four dimension attributes instead of Windmill's thirteen job attributes (shows how decoding cost scales with span size).").BoolVar(&s.minimal)
	app.Flag("spans-seed", "Seed of the generated spans.").Default("1").Uint64Var(&s.seed)
	app.Flag("spans-otelcol-bin", "Also measure this OpenTelemetry Collector build (bench/otelcol: OTLP receiver, spanmetrics connector, nop exporter) with the same batches, and report pushrelay's ratios to it.").StringVar(&s.otelcolBin)
	return s
}

// spanPhase is the result of one timed phase.
type spanPhase struct {
	Phase          string  `json:"phase"`
	Round          int     `json:"round,omitempty"`
	BatchSpans     int     `json:"batch_spans"`
	TargetRate     float64 `json:"target_spans_per_s,omitempty"`
	Seconds        float64 `json:"seconds"`
	Requests       int     `json:"requests"`
	Errors         int     `json:"errors"`
	FirstError     string  `json:"first_error,omitempty"`
	Spans          int64   `json:"spans"`
	Rate           float64 `json:"spans_per_s"`
	ServerCPUSec   float64 `json:"server_cpu_s"`
	SpansPerCPUSec float64 `json:"spans_per_cpu_s"`
	ServerCPUPct   float64 `json:"server_cpu_pct"`
	ClientCPUPct   float64 `json:"client_cpu_pct"`
	OtherCPUPct    float64 `json:"other_cpu_pct"`
	P50ms          float64 `json:"p50_ms"`
	P90ms          float64 `json:"p90_ms"`
	P99ms          float64 `json:"p99_ms"`
	MaxMs          float64 `json:"max_ms"`
	// LagP99ms is the p99 of how late requests left against the pace
	// schedule (paced phases only); large values mean the senders could
	// not keep the pace.
	LagP99ms float64 `json:"schedule_lag_p99_ms,omitempty"`
}

// spanResults is everything the spans mode measured.
type spanResults struct {
	Started         time.Time          `json:"started"`
	Commands        []string           `json:"commands"`
	Senders         int                `json:"senders"`
	Conns           int                `json:"conns"`
	Client          string             `json:"client"`
	BatchBytes      map[int]int        `json:"mean_batch_bytes"`
	Phases          []spanPhase        `json:"phases"`
	Received        float64            `json:"server_spans_received"`
	Sent            int64              `json:"spans_sent_ok"`
	Dropped         map[string]float64 `json:"server_spans_dropped,omitempty"`
	SeriesBefore    float64            `json:"series_before_series_phase"`
	RSSBefore       int64              `json:"rss_bytes_before_series_phase"`
	Series          float64            `json:"series"`
	SeriesRefused   float64            `json:"series_refused"`
	SeriesSeconds   float64            `json:"series_phase_seconds"`
	RSSNoScrape     int64              `json:"rss_bytes_before_scrape"`
	PeakRSSNoScrape int64              `json:"peak_rss_bytes_before_scrape"`
	RSS             int64              `json:"rss_bytes"`
	PeakRSS         int64              `json:"peak_rss_bytes"`
	Profiles        []string           `json:"profiles,omitempty"`
	ScrapeSeconds   float64            `json:"scrape_seconds"`
	ScrapeBytes     int                `json:"scrape_bytes"`
	TotalSeconds    float64            `json:"total_seconds"`
	Notes           []string           `json:"notes,omitempty"`
	TargetPerCPU    float64            `json:"target_spans_per_cpu_s"`
	TargetHalfP99   float64            `json:"target_half_load_p99_ms"`
	PassPerCPU      bool               `json:"pass_spans_per_cpu_s"`
	PassHalfLoadMs  bool               `json:"pass_half_load_p99"`
	// Reference holds the phases of the collector run
	// (--spans-otelcol-bin), ReferenceRSS its VmRSS after them.
	Reference    []spanPhase `json:"reference_phases,omitempty"`
	ReferenceRSS int64       `json:"reference_rss_bytes,omitempty"`
	// PassVsReference is true when pushrelay's spans per CPU-second are at
	// least the collector's at every batch size.
	PassVsReference bool `json:"pass_vs_reference,omitempty"`
}

func (r *spanResults) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.Notes = append(r.Notes, msg)
	fmt.Fprintln(os.Stderr, "  note: "+msg)
}

// runSpans runs the spans mode and returns the exit code.
func runSpans(c *config, s *spanConfig, args []string) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "pushrelay-bench --spans: %v\n", err)
		return 1
	}
	sizes, err := parseInts(s.batchSizes)
	if err != nil || len(sizes) == 0 {
		fmt.Fprintf(os.Stderr, "pushrelay-bench: invalid --spans-batch-sizes %q\n", s.batchSizes)
		return 2
	}
	if s.senders < 1 || s.conns < 1 || s.variants < 1 || s.rounds < 1 || s.seriesTarget < 0 {
		fmt.Fprintln(os.Stderr, "pushrelay-bench: --spans-senders, --spans-conns, --spans-variants and --spans-rounds must be at least 1")
		return 2
	}
	if s.pacedRate < 0 {
		fmt.Fprintln(os.Stderr, "pushrelay-bench: --spans-paced-rate must not be negative")
		return 2
	}
	begin := time.Now()
	res := &spanResults{
		Started: begin, Senders: s.senders, Conns: s.conns, BatchBytes: map[int]int{}, Client: "raw pre-encoded bytes",
		TargetPerCPU: targetSpansPerCPUSecond, TargetHalfP99: targetHalfLoadP99ms,
	}
	if s.pdataClient {
		res.Client = "ptraceotlp.NewGRPCClient"
	}
	res.Commands = append(res.Commands, "pushrelay-bench "+strings.Join(args, " "))

	// The server: started here, or given by URL, pid and gRPC address.
	var pid int
	var url, grpcAddr string
	if c.pushrelayURL != "" {
		url, pid, grpcAddr = strings.TrimRight(c.pushrelayURL, "/"), c.pushrelayPID, s.grpcAddress
		if grpcAddr == "" || !isLoopbackURL("http://"+grpcAddr) || !isLoopbackURL(url) {
			fmt.Fprintln(os.Stderr, "pushrelay-bench: with --pushrelay-url give a loopback URL and --spans-otlp-grpc-address")
			return 2
		}
		if pid == 0 {
			res.note("no --pushrelay-pid: CPU and RSS of pushrelay are not measured")
		}
	} else {
		if c.pushrelayBin == "" {
			fmt.Fprintln(os.Stderr, "pushrelay-bench: give --pushrelay-bin or --pushrelay-url")
			return 2
		}
		dir := c.workDir // created by run
		port, err := freePort()
		if err != nil {
			return fail(err)
		}
		grpcAddr = fmt.Sprintf("127.0.0.1:%d", port)
		args := append([]string{
			"--persistence.file=", "--log.level=warn",
			"--traces.otlp-grpc.listen-address=" + grpcAddr,
			"--traces.otlp-http.listen-address=", "--traces.zipkin.listen-address=",
			"--spanmetrics.ingestion-slack=0s",
			"--spanmetrics.dimensions=" + spanDimensions,
		}, c.pushrelayArgs...)
		p, err := startProc("pushrelay", c.pushrelayBin, dir, args, 30*time.Second)
		if err != nil {
			return fail(err)
		}
		defer func() {
			if err := p.stop(30 * time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "  %v\n", err)
			}
			if c.keep {
				fmt.Fprintf(os.Stderr, "kept %s\n", dir)
			}
		}()
		res.Commands = append(res.Commands, strings.Join(p.cmd.Args, " "))
		url, pid = p.url, p.pid()
	}

	fmt.Fprintf(os.Stderr, "encoding %d batches of each of %v spans\n", s.variants, sizes)
	gen := newSpanGen(s.seed)
	gen.minimal = s.minimal
	if s.minimal {
		res.note("--spans-minimal-attributes: spans carry only workspace_id, language, tag and job_kind")
	}
	batches := map[int][][]byte{}
	for _, size := range sizes {
		total := 0
		for range s.variants {
			b := gen.batch(size)
			batches[size] = append(batches[size], b)
			total += len(b)
		}
		res.BatchBytes[size] = total / s.variants
		fmt.Fprintf(os.Stderr, "  %d spans: %d bytes per request (%.0f per span)\n", size, total/s.variants, float64(total)/float64(s.variants*size))
	}

	conns, err := dialSpanConns(grpcAddr, s.conns)
	if err != nil {
		return fail(err)
	}
	defer closeConns(conns)
	// The first request goes through the pdata client: a check that the
	// receiver answers a regular OTLP client before the raw bytes flow.
	if err := waitExport(conns[0], batches[sizes[0]][0], 15*time.Second); err != nil {
		return fail(fmt.Errorf("OTLP gRPC receiver at %s: %w", grpcAddr, err))
	}
	snd := newSpanSender(conns, s.pdataClient, batches)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	if s.warmup > 0 {
		fmt.Fprintf(os.Stderr, "warm-up %s\n", s.warmup)
		snd.maxRate(s.senders, sizes[len(sizes)-1], s.warmup, pid)
	}
	var ref *reference
	if s.otelcolBin != "" {
		fmt.Fprintln(os.Stderr, "reference: OpenTelemetry Collector")
		if ref, err = startReference(c, s, sizes, batches, res); err != nil {
			return fail(fmt.Errorf("collector: %w", err))
		}
		defer ref.close(res)
	}
	recv0, err := scrapeSelf(hc, url)
	if err != nil {
		return fail(err)
	}
	for _, size := range sizes {
		for round := 1; round <= s.rounds; round++ {
			var prof sync.WaitGroup
			if round == 1 && c.profileDir != "" && s.duration >= 5*time.Second {
				path := filepath.Join(c.profileDir, fmt.Sprintf("pushrelay-spans-%d.pprof", size))
				prof.Go(func() {
					time.Sleep(time.Second)
					if err := fetchToFile(hc, url+"/debug/pprof/profile?seconds=3", path); err != nil {
						res.note("cpu profile: %v", err)
						return
					}
					res.Profiles = append(res.Profiles, path)
				})
			}
			ph := snd.maxRate(s.senders, size, s.duration, pid)
			prof.Wait()
			ph.Phase, ph.Round = "max rate", round
			res.Phases = append(res.Phases, ph)
			res.Sent += ph.Spans
			logSpanPhase(ph)
			if ref != nil {
				ph := ref.snd.maxRate(s.senders, size, s.duration, ref.p.pid())
				ph.Phase, ph.Round = "max rate", round
				res.Reference = append(res.Reference, ph)
				logSpanPhase(ph)
			}
		}
	}
	if s.pacedRate > 0 {
		res.note("paced phases at %.0f spans/s (--spans-paced-rate), not at half the measured maximum", s.pacedRate)
	}
	for _, size := range sizes {
		ph, ok := pacedPhase(snd, s, size, res.Phases, pid)
		if !ok {
			res.note("no half-load phase for %d-span batches: the max-rate phases sent nothing", size)
			continue
		}
		res.Phases = append(res.Phases, ph)
		res.Sent += ph.Spans
		logSpanPhase(ph)
		if ref != nil {
			if ph, ok := pacedPhase(ref.snd, s, size, res.Reference, ref.p.pid()); ok {
				res.Reference = append(res.Reference, ph)
				logSpanPhase(ph)
			}
		}
	}
	if ref != nil {
		_, res.ReferenceRSS = memStatus(ref.p.pid())
		ref.close(res)
	}
	if recv1, err := scrapeSelf(hc, url); err == nil {
		res.Received = recv1.received - recv0.received
		res.Dropped = map[string]float64{}
		for k, v := range recv1.dropped {
			if d := v - recv0.dropped[k]; d != 0 {
				res.Dropped[k] = d
			}
		}
		res.SeriesBefore = recv1.series
		_, res.RSSBefore = memStatus(pid)
		if res.Received != float64(res.Sent) {
			res.note("pushrelay counted %.0f received spans, the senders %d (warm-up excluded)", res.Received, res.Sent)
		}
	} else {
		res.note("scrape: %v", err)
	}

	if s.seriesTarget > 0 {
		if err := seriesPhase(snd, gen, hc, url, pid, s.seriesTarget, res); err != nil {
			res.note("series phase: %v", err)
		}
	}
	res.TotalSeconds = time.Since(begin).Seconds()
	judgeSpans(res)
	printSpanReport(os.Stdout, res)
	if c.jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(c.jsonOut, b, 0o644); err != nil {
			return fail(err)
		}
	}
	return 0
}

// pacedPhase runs the half-load phase of size-span batches: at
// --spans-paced-rate, or at half the rate of the max-rate phases in done.
func pacedPhase(snd *spanSender, s *spanConfig, size int, done []spanPhase, pid int) (spanPhase, bool) {
	rate := s.pacedRate
	if rate == 0 {
		rate = maxRateTotals(done, size).Rate / 2
	}
	if rate <= 0 {
		return spanPhase{}, false
	}
	ph := snd.paced(s.senders, size, rate, s.pacedDur, pid)
	ph.Phase = "half load"
	return ph, true
}

// maxRateTotals sums the max-rate rounds of size-span batches in phases:
// spans, seconds and server CPU, and the rates that follow from them.
func maxRateTotals(phases []spanPhase, size int) spanPhase {
	t := spanPhase{Phase: "max rate", BatchSpans: size}
	for _, p := range phasesOf(phases, "max rate", size) {
		t.Spans += p.Spans
		t.Requests += p.Requests
		t.Seconds += p.Seconds
		t.ServerCPUSec += p.ServerCPUSec
	}
	if t.Seconds > 0 {
		t.Rate = float64(t.Spans) / t.Seconds
	}
	if t.ServerCPUSec > 0 {
		t.SpansPerCPUSec = float64(t.Spans) / t.ServerCPUSec
	}
	return t
}

// dialSpanConns opens n plaintext gRPC connections to addr for the span
// senders.
func dialSpanConns(addr string, n int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, 0, n)
	for range n {
		cc, err := grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			closeConns(conns)
			return nil, err
		}
		conns = append(conns, cc)
	}
	return conns, nil
}

func closeConns(conns []*grpc.ClientConn) {
	for _, cc := range conns {
		_ = cc.Close()
	}
}

// waitExport sends body through ptraceotlp's gRPC client until it succeeds
// or timeout passes.
func waitExport(cc *grpc.ClientConn, body []byte, timeout time.Duration) error {
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		return err
	}
	client := ptraceotlp.NewGRPCClient(cc)
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := client.Export(ctx, req)
		cancel()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rawCodec writes pre-encoded protobuf bytes as they are and discards the
// (empty) answer. Its name keeps the content type application/grpc+proto.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal([]byte, any) error { return nil }
func (rawCodec) Name() string                { return "proto" }

// spanSender sends the pre-encoded batches.
type spanSender struct {
	conns   []*grpc.ClientConn
	batches map[int][][]byte
	// reqs are the decoded batches, for the pdata client.
	reqs map[int][]ptraceotlp.ExportRequest
}

func newSpanSender(conns []*grpc.ClientConn, pdata bool, batches map[int][][]byte) *spanSender {
	s := &spanSender{conns: conns, batches: batches}
	if pdata {
		s.reqs = map[int][]ptraceotlp.ExportRequest{}
		for size, bs := range batches {
			for _, b := range bs {
				req := ptraceotlp.NewExportRequest()
				if err := req.UnmarshalProto(b); err != nil {
					panic(err)
				}
				s.reqs[size] = append(s.reqs[size], req)
			}
		}
	}
	return s
}

// send sends batch n of size through the connection of sender w.
func (s *spanSender) send(w, size, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc := s.conns[w%len(s.conns)]
	if s.reqs != nil {
		reqs := s.reqs[size]
		_, err := ptraceotlp.NewGRPCClient(cc).Export(ctx, reqs[n%len(reqs)])
		return err
	}
	bs := s.batches[size]
	b := bs[n%len(bs)]
	var out []byte
	return cc.Invoke(ctx, exportMethod, &b, &out, grpc.ForceCodec(rawCodec{}))
}

// phaseMeter collects the latencies and errors of one phase.
type phaseMeter struct {
	mu       sync.Mutex
	lat, lag []time.Duration
	errors   int
	first    string
	spans    atomic.Int64
}

func (m *phaseMeter) record(size int, lat, lag time.Duration, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lat = append(m.lat, lat)
	if lag >= 0 {
		m.lag = append(m.lag, lag)
	}
	if err != nil {
		m.errors++
		if m.first == "" {
			m.first = status.Convert(err).String()
		}
		return
	}
	m.spans.Add(int64(size))
}

// measure runs load, which must return when the phase is over, and
// returns its result with the CPU of pid, this process and the machine.
func measure(pid, size int, load func(m *phaseMeter)) spanPhase {
	m := &phaseMeter{}
	cpu0, self0 := cpuTime(pid), selfCPU()
	all0, _ := machineCPU()
	start := time.Now()
	load(m)
	elapsed := time.Since(start)
	cpu1, self1 := cpuTime(pid), selfCPU()
	all1, _ := machineCPU()
	ph := spanPhase{BatchSpans: size, Seconds: elapsed.Seconds(), Requests: len(m.lat), Errors: m.errors, FirstError: m.first, Spans: m.spans.Load()}
	ph.Rate = float64(ph.Spans) / ph.Seconds
	sort.Slice(m.lat, func(i, j int) bool { return m.lat[i] < m.lat[j] })
	ph.P50ms, ph.P90ms, ph.P99ms = ms(percentile(m.lat, 0.5)), ms(percentile(m.lat, 0.9)), ms(percentile(m.lat, 0.99))
	if len(m.lat) > 0 {
		ph.MaxMs = ms(m.lat[len(m.lat)-1])
	}
	if len(m.lag) > 0 {
		sort.Slice(m.lag, func(i, j int) bool { return m.lag[i] < m.lag[j] })
		ph.LagP99ms = ms(percentile(m.lag, 0.99))
	}
	if pid > 0 {
		srv := cpu1 - cpu0
		ph.ServerCPUSec = srv.Seconds()
		ph.ServerCPUPct = 100 * srv.Seconds() / ph.Seconds
		if srv > 0 {
			ph.SpansPerCPUSec = float64(ph.Spans) / srv.Seconds()
		}
		other := (all1 - all0) - (self1 - self0) - srv
		ph.OtherCPUPct = max(0, 100*other.Seconds()/ph.Seconds)
	}
	ph.ClientCPUPct = 100 * (self1 - self0).Seconds() / ph.Seconds
	return ph
}

// maxRate sends size-span batches from senders closed-loop for dur.
func (s *spanSender) maxRate(senders, size int, dur time.Duration, pid int) spanPhase {
	return measure(pid, size, func(m *phaseMeter) {
		deadline := time.Now().Add(dur)
		var wg sync.WaitGroup
		for w := range senders {
			wg.Go(func() {
				for n := w; time.Now().Before(deadline); n += senders {
					t0 := time.Now()
					err := s.send(w, size, n)
					m.record(size, time.Since(t0), -1, err)
				}
			})
		}
		wg.Wait()
	})
}

// paced sends size-span batches at rate spans/s for dur: request k leaves
// at start + k·size/rate, from sender k mod senders; a sender that falls
// behind sends at once (the lag is recorded).
func (s *spanSender) paced(senders, size int, rate float64, dur time.Duration, pid int) spanPhase {
	ph := measure(pid, size, func(m *phaseMeter) {
		interval := time.Duration(float64(size) / rate * float64(time.Second))
		start := time.Now().Add(10 * time.Millisecond)
		total := int(dur / interval)
		var wg sync.WaitGroup
		for w := range senders {
			wg.Go(func() {
				for k := w; k < total; k += senders {
					at := start.Add(time.Duration(k) * interval)
					if d := time.Until(at); d > 0 {
						time.Sleep(d)
					}
					t0 := time.Now()
					err := s.send(w, size, k)
					m.record(size, time.Since(t0), t0.Sub(at), err)
				}
			})
		}
		wg.Wait()
	})
	ph.TargetRate = rate
	return ph
}

// seriesPhase sends batches of spans with unique names until the series
// gauge reaches target, then reads pushrelay's memory and scrapes once.
func seriesPhase(snd *spanSender, gen *spanGen, hc *http.Client, url string, pid, target int, res *spanResults) error {
	fmt.Fprintf(os.Stderr, "series: filling to %d series\n", target)
	start := time.Now()
	st, err := scrapeSelf(hc, url)
	if err != nil {
		return err
	}
	refused0 := st.refused
	cc := snd.conns[0]
	for round := 0; st.series < float64(target) && round < 20; round++ {
		need := target - int(st.series)
		for need > 0 {
			n := min(need, 1000)
			b := gen.uniqueBatch(n)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			var out []byte
			err := cc.Invoke(ctx, exportMethod, &b, &out, grpc.ForceCodec(rawCodec{}))
			cancel()
			if err != nil {
				return err
			}
			need -= n
		}
		if round == 0 {
			// The RSS before /metrics renders the new series: a scrape
			// of 10k series allocates tens of MB that the Go runtime
			// keeps for a while.
			time.Sleep(time.Second)
			res.PeakRSSNoScrape, res.RSSNoScrape = memStatus(pid)
		}
		if st, err = scrapeSelf(hc, url); err != nil {
			return err
		}
	}
	res.Series = st.series
	res.SeriesRefused = st.refused - refused0
	res.SeriesSeconds = time.Since(start).Seconds()
	if st.series < float64(target) {
		res.note("reached only %.0f series of %d", st.series, target)
	}
	time.Sleep(time.Second)
	res.PeakRSS, res.RSS = memStatus(pid)
	t0 := time.Now()
	resp, err := hc.Get(url + "/metrics")
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	res.ScrapeSeconds, res.ScrapeBytes = time.Since(t0).Seconds(), int(n)
	return nil
}

// selfStats are pushrelay's span self-metrics.
type selfStats struct {
	received, series, refused float64
	dropped                   map[string]float64
}

var (
	reReceived = regexp.MustCompile(`(?m)^pushrelay_spans_received_total\{receiver="otlp_grpc"\} (\S+)$`)
	reSeries   = regexp.MustCompile(`(?m)^pushrelay_spanmetrics_series (\S+)$`)
	reRefused  = regexp.MustCompile(`(?m)^pushrelay_spanmetrics_series_refused_total (\S+)$`)
	reDropped  = regexp.MustCompile(`(?m)^pushrelay_spans_dropped_total\{reason="([^"]+)"\} (\S+)$`)
)

func scrapeSelf(hc *http.Client, url string) (selfStats, error) {
	st := selfStats{dropped: map[string]float64{}}
	req, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	req.Header.Set("Accept", textAccept)
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	get := func(re *regexp.Regexp) float64 {
		if m := re.FindSubmatch(b); m != nil {
			v, _ := strconv.ParseFloat(string(m[1]), 64)
			return v
		}
		return math.NaN()
	}
	st.received, st.series, st.refused = get(reReceived), get(reSeries), get(reRefused)
	for _, m := range reDropped.FindAllSubmatch(b, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		st.dropped[string(m[1])] = v
	}
	if math.IsNaN(st.received) || math.IsNaN(st.series) {
		return st, errors.New("pushrelay_spans_received_total or pushrelay_spanmetrics_series missing from /metrics")
	}
	return st, nil
}

func logSpanPhase(p spanPhase) {
	fmt.Fprintf(os.Stderr, "  %s %d spans/req: %.0f spans/s, %.0f spans/CPU-s (server %.0f%% CPU), p50 %.2fms p99 %.2fms, %d errors\n",
		p.Phase, p.BatchSpans, p.Rate, p.SpansPerCPUSec, p.ServerCPUPct, p.P50ms, p.P99ms, p.Errors)
}

// judgeSpans compares the results with the targets: spans per CPU-second
// at max rate (the lowest over the batch sizes) and p99 at half load (the
// highest).
func judgeSpans(r *spanResults) {
	minPerCPU, maxP99 := math.Inf(1), 0.0
	var haveMax, haveHalf bool
	r.PassVsReference = len(r.Reference) > 0
	for _, size := range r.batchSizes() {
		t := maxRateTotals(r.Phases, size)
		if len(phasesOf(r.Phases, "max rate", size)) > 0 {
			haveMax = true
			minPerCPU = min(minPerCPU, t.SpansPerCPUSec)
		}
		if len(r.Reference) > 0 {
			ref := maxRateTotals(r.Reference, size).SpansPerCPUSec
			r.PassVsReference = r.PassVsReference && ref > 0 && t.SpansPerCPUSec >= ref
		}
	}
	for _, p := range r.Phases {
		if p.Phase == "half load" {
			haveHalf = true
			maxP99 = max(maxP99, p.P99ms)
		}
	}
	r.PassPerCPU = haveMax && minPerCPU >= targetSpansPerCPUSecond
	r.PassHalfLoadMs = haveHalf && maxP99 < targetHalfLoadP99ms
}

// batchSizes returns the batch sizes of the run, ascending.
func (r *spanResults) batchSizes() []int {
	return slices.Sorted(maps.Keys(r.BatchBytes))
}

// phasesOf returns the phases named name of size-span batches, in order.
func phasesOf(phases []spanPhase, name string, size int) []spanPhase {
	var out []spanPhase
	for _, p := range phases {
		if p.Phase == name && p.BatchSpans == size {
			out = append(out, p)
		}
	}
	return out
}

// halfLoadPhase returns the half-load phase of size-span batches in phases.
func halfLoadPhase(phases []spanPhase, size int) (spanPhase, bool) {
	if hl := phasesOf(phases, "half load", size); len(hl) > 0 {
		return hl[0], true
	}
	return spanPhase{}, false
}

// printPhases prints phases as a table.
func printPhases(w io.Writer, phases []spanPhase) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tround\tspans/req\tseconds\trequests\tspans/s\ttarget/s\tsrv CPU%\tspans/CPU-s\tp50 ms\tp90 ms\tp99 ms\tmax ms\tlag p99 ms\tclient CPU%\tother CPU%\terrors\t")
	noisy := false
	for _, p := range phases {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%d\t%.0f\t%s\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.1f\t%s\t%.0f\t%.0f\t%d\t\n",
			p.Phase, orDash(float64(p.Round), "%.0f"), p.BatchSpans, p.Seconds, p.Requests, p.Rate, orDash(p.TargetRate, "%.0f"), p.ServerCPUPct, p.SpansPerCPUSec,
			p.P50ms, p.P90ms, p.P99ms, p.MaxMs, orDash(p.LagP99ms, "%.2f"), p.ClientCPUPct, p.OtherCPUPct, p.Errors)
		noisy = noisy || p.OtherCPUPct > 20
	}
	tw.Flush()
	if noisy {
		fmt.Fprintln(w, "  WARNING: other processes used more than 20% of a core during some phases; their numbers are not trustworthy.")
	}
	for _, p := range phases {
		if p.FirstError != "" {
			fmt.Fprintf(w, "  %s %d first error: %s\n", p.Phase, p.BatchSpans, p.FirstError)
		}
	}
}

func printSpanReport(w io.Writer, r *spanResults) {
	fmt.Fprintf(w, "\n# pushrelay-bench --spans, %s, %d senders over %d gRPC connections, client: %s\n", r.Started.Format("2006-01-02 15:04:05"), r.Senders, r.Conns, r.Client)
	fmt.Fprintln(w, "\n## Commands")
	for _, c := range r.Commands {
		fmt.Fprintln(w, "  "+c)
	}
	fmt.Fprintln(w, "\n## OTLP gRPC export phases")
	printPhases(w, r.Phases)
	for _, s := range r.batchSizes() {
		fmt.Fprintf(w, "  %d-span requests: %d bytes (%.0f bytes/span)\n", s, r.BatchBytes[s], float64(r.BatchBytes[s])/float64(s))
	}
	fmt.Fprintf(w, "  spans sent ok %d, counted by pushrelay %.0f, dropped by pushrelay %v\n", r.Sent, r.Received, r.Dropped)

	fmt.Fprintln(w, "\n## Series and memory")
	fmt.Fprintf(w, "  after the load phases: %.0f series, VmRSS %.1f MiB\n", r.SeriesBefore, float64(r.RSSBefore)/(1<<20))
	fmt.Fprintf(w, "  after the series phase (%.1fs): %.0f series (%.0f refused)\n", r.SeriesSeconds, r.Series, r.SeriesRefused)
	fmt.Fprintf(w, "    before /metrics rendered them: VmRSS %.1f MiB, VmHWM %.1f MiB\n", float64(r.RSSNoScrape)/(1<<20), float64(r.PeakRSSNoScrape)/(1<<20))
	fmt.Fprintf(w, "    after a full scrape:           VmRSS %.1f MiB, VmHWM %.1f MiB\n", float64(r.RSS)/(1<<20), float64(r.PeakRSS)/(1<<20))
	fmt.Fprintf(w, "  one text scrape of /metrics then: %.3fs, %.1f MB\n", r.ScrapeSeconds, float64(r.ScrapeBytes)/1e6)
	if len(r.Reference) > 0 {
		fmt.Fprintln(w, "\n## Reference: OpenTelemetry Collector (OTLP receiver, spanmetrics connector, nop exporter), same batches")
		printPhases(w, r.Reference)
		fmt.Fprintf(w, "  collector VmRSS after its phases: %.1f MiB\n", float64(r.ReferenceRSS)/(1<<20))
	}

	fmt.Fprintln(w, "\n## Targets")
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "FAIL"
	}
	for _, size := range r.batchSizes() {
		t := maxRateTotals(r.Phases, size)
		fmt.Fprintf(w, "  spans per CPU-second, %d-span batches, %d rounds: %.0f (target ≥ %d)\n", size, len(phasesOf(r.Phases, "max rate", size)), t.SpansPerCPUSec, targetSpansPerCPUSecond)
		if p, ok := halfLoadPhase(r.Phases, size); ok {
			fmt.Fprintf(w, "  p99 at half load (%.0f spans/s), %d-span batches: %.2f ms (target < %.0f ms)\n", p.TargetRate, size, p.P99ms, targetHalfLoadP99ms)
		}
	}
	fmt.Fprintf(w, "  spans/CPU-s: %s; half-load p99: %s; total run %.0fs\n", verdict(r.PassPerCPU), verdict(r.PassHalfLoadMs), r.TotalSeconds)
	if len(r.Reference) > 0 {
		for _, size := range r.batchSizes() {
			t, ref := maxRateTotals(r.Phases, size), maxRateTotals(r.Reference, size)
			// Rounds are appended in order, a collector round after each
			// pushrelay round.
			var perRound []string
			ps, qs := phasesOf(r.Phases, "max rate", size), phasesOf(r.Reference, "max rate", size)
			for i := range min(len(ps), len(qs)) {
				if qs[i].SpansPerCPUSec > 0 {
					perRound = append(perRound, fmt.Sprintf("%.2f", ps[i].SpansPerCPUSec/qs[i].SpansPerCPUSec))
				}
			}
			total := "-"
			if ref.SpansPerCPUSec > 0 {
				total = fmt.Sprintf("%.2f", t.SpansPerCPUSec/ref.SpansPerCPUSec)
			}
			fmt.Fprintf(w, "  pushrelay / collector spans per CPU-second, %d-span batches: %s× (%.0f / %.0f; rounds %s) (target ≥ 1×)\n",
				size, total, t.SpansPerCPUSec, ref.SpansPerCPUSec, strings.Join(perRound, " "))
			p, ok1 := halfLoadPhase(r.Phases, size)
			q, ok2 := halfLoadPhase(r.Reference, size)
			if ok1 && ok2 {
				fmt.Fprintf(w, "  p99 at half load, %d-span batches: pushrelay %.2f ms at %.0f spans/s, collector %.2f ms at %.0f spans/s\n",
					size, p.P99ms, p.TargetRate, q.P99ms, q.TargetRate)
			}
		}
		fmt.Fprintf(w, "  spans/CPU-s against the collector: %s\n", verdict(r.PassVsReference))
	}
	for _, p := range r.Profiles {
		fmt.Fprintf(w, "  cpu profile of pushrelay: %s (go tool pprof -top)\n", p)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "  note: "+n)
	}
}

// Windmill-like span model.

const (
	genServices  = 20
	serverNames  = 10
	rpcNames     = 5
	dbNames      = 5
	internalName = 30 // 10+5+5+30 = 50 span names
)

var (
	genWorkspaces = []string{"admins", "demo", "ops"}
	genLanguages  = []string{"python3", "deno", "bun", "go", "bash", "postgresql"}
	genTags       = []string{"default", "python", "deno", "heavy"}
	genJobKinds   = []string{"script", "flow", "preview"}
	genTriggers   = []string{"schedule", "webhook", "http", "manual"}
)

// spanGen generates Windmill-like traces.
type spanGen struct {
	rng      *rand.Rand
	services []string
	names    []string // server, rpc, db, internal
	unique   int
	// minimal leaves out every attribute but the dimensions.
	minimal bool
}

func newSpanGen(seed uint64) *spanGen {
	g := &spanGen{rng: rand.New(rand.NewPCG(seed, 0x5ba7))}
	g.services = append(g.services, "windmill-api", "windmill-worker")
	for i := 2; i < genServices; i++ {
		g.services = append(g.services, fmt.Sprintf("windmill-worker-%02d", i))
	}
	for i := range serverNames {
		g.names = append(g.names, []string{
			"POST /api/w/{workspace}/jobs/run/p/{path}", "GET /api/w/{workspace}/jobs_u/completed/get_result/{id}",
			"POST /api/w/{workspace}/jobs/run/f/{path}", "GET /api/w/{workspace}/jobs/list", "pull_job",
			"POST /api/w/{workspace}/jobs/run_wait_result/p/{path}", "GET /api/version", "POST /api/w/{workspace}/flows/resume",
			"webhook", "schedule tick",
		}[i])
	}
	for i := range rpcNames {
		g.names = append(g.names, fmt.Sprintf("rpc %s", []string{"push_job", "get_result", "cancel_job", "resume_flow", "update_flow_status"}[i]))
	}
	for i := range dbNames {
		g.names = append(g.names, []string{"SELECT v2_job_queue", "UPDATE v2_job_queue", "INSERT v2_job_completed", "SELECT resource", "SELECT variable"}[i])
	}
	for i := range internalName {
		switch {
		case i == 0:
			g.names = append(g.names, "job")
		case i == 1:
			g.names = append(g.names, "job_postprocessing")
		case i < 16:
			g.names = append(g.names, fmt.Sprintf("job f/step_%c", 'a'+i-2))
		default:
			g.names = append(g.names, fmt.Sprintf("job_postprocessing f/step_%c", 'a'+i-16))
		}
	}
	return g
}

func (g *spanGen) id8() pcommon.SpanID {
	var b [8]byte
	for i := range b {
		b[i] = byte(g.rng.Uint32())
	}
	if b == [8]byte{} {
		b[0] = 1
	}
	return b
}

func (g *spanGen) id16() pcommon.TraceID {
	var b [16]byte
	for i := range b {
		b[i] = byte(g.rng.Uint32())
	}
	b[0] |= 1
	return b
}

func (g *spanGen) uuid() string {
	var b [16]byte
	for i := range b {
		b[i] = byte(g.rng.Uint32())
	}
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// batchBuilder groups spans into one resource per service.
type batchBuilder struct {
	td     ptrace.Traces
	scopes map[string]ptrace.SpanSlice
}

func newBatchBuilder() *batchBuilder {
	return &batchBuilder{td: ptrace.NewTraces(), scopes: map[string]ptrace.SpanSlice{}}
}

func (b *batchBuilder) span(service string) ptrace.Span {
	spans, ok := b.scopes[service]
	if !ok {
		rs := b.td.ResourceSpans().AppendEmpty()
		res := rs.Resource().Attributes()
		res.PutStr("service.name", service)
		res.PutStr("service.version", "1.520.0")
		res.PutStr("host.name", service+"-7d9f8b6c5-x2k4q")
		res.PutStr("telemetry.sdk.language", "rust")
		res.PutStr("telemetry.sdk.name", "opentelemetry")
		ss := rs.ScopeSpans().AppendEmpty()
		ss.Scope().SetName("windmill")
		spans = ss.Spans()
		b.scopes[service] = spans
	}
	return spans.AppendEmpty()
}

func (b *batchBuilder) encode() []byte {
	out, err := ptraceotlp.NewExportRequestFromTraces(b.td).MarshalProto()
	if err != nil {
		panic(err)
	}
	return out
}

// fill sets the common fields and Windmill's job attributes of a span.
func (g *spanGen) fill(s ptrace.Span, tid pcommon.TraceID, parent pcommon.SpanID, svc, name int, kind ptrace.SpanKind, start time.Time, dur time.Duration, rootJob string) pcommon.SpanID {
	sid := g.id8()
	s.SetTraceID(tid)
	s.SetSpanID(sid)
	if !parent.IsEmpty() {
		s.SetParentSpanID(parent)
	}
	s.SetName(g.names[name])
	s.SetKind(kind)
	s.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
	s.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(dur)))
	ok := g.rng.IntN(100) >= 3
	if !ok {
		s.Status().SetCode(ptrace.StatusCodeError)
		s.Status().SetMessage("ExecutionErr: exit code 1")
	}
	a := s.Attributes()
	// Bounded attributes are functions of service and span name, so the
	// dimensions do not multiply the series.
	a.PutStr("workspace_id", genWorkspaces[svc%len(genWorkspaces)])
	a.PutStr("language", genLanguages[name%len(genLanguages)])
	a.PutStr("tag", genTags[name%len(genTags)])
	a.PutStr("job_kind", genJobKinds[(svc+name)%len(genJobKinds)])
	if g.minimal {
		return sid
	}
	a.PutStr("script_path", fmt.Sprintf("f/team_%d/script_%d", svc, name))
	a.PutStr("job_id", g.uuid())
	a.PutStr("root_job", rootJob)
	a.PutStr("worker", fmt.Sprintf("wk-default-%d", g.rng.IntN(16)))
	a.PutStr("hostname", fmt.Sprintf("windmill-worker-%d", g.rng.IntN(16)))
	a.PutStr("created_by", "u/admin")
	a.PutStr("trigger_kind", genTriggers[g.rng.IntN(len(genTriggers))])
	a.PutBool("success", ok)
	return sid
}

// duration draws a span duration, log-uniform between 0.5 ms and 2 s.
func (g *spanGen) duration() time.Duration {
	return time.Duration(0.5e6 * math.Pow(4000, g.rng.Float64()))
}

// batch returns an encoded ExportTraceServiceRequest of size spans, made
// of traces of about ten spans: a root server span, client→server pairs
// into other services, database client spans and internal job spans.
func (g *spanGen) batch(size int) []byte {
	b := newBatchBuilder()
	base := time.Now().Add(-2 * time.Second)
	n := 0
	for n < size {
		tid := g.id16()
		rootJob := g.uuid()
		svc := g.rng.IntN(genServices)
		start := base.Add(-time.Duration(g.rng.IntN(1000)) * time.Millisecond)
		parent := g.fill(b.span(g.services[svc]), tid, pcommon.SpanID{}, svc, g.rng.IntN(serverNames), ptrace.SpanKindServer, start, 3*time.Second, rootJob)
		n++
		for spans := 1; spans < 10 && n < size; spans++ {
			r := g.rng.IntN(100)
			switch {
			case r < 20 && n+1 < size:
				other := (svc + 1 + g.rng.IntN(genServices-1)) % genServices
				d := g.duration()
				client := g.fill(b.span(g.services[svc]), tid, parent, svc, serverNames+g.rng.IntN(rpcNames), ptrace.SpanKindClient, start, d, rootJob)
				parent = g.fill(b.span(g.services[other]), tid, client, other, g.rng.IntN(serverNames), ptrace.SpanKindServer, start.Add(d/10), d*8/10, rootJob)
				svc = other
				n += 2
				spans++
			case r < 35:
				s := b.span(g.services[svc])
				g.fill(s, tid, parent, svc, serverNames+rpcNames+g.rng.IntN(dbNames), ptrace.SpanKindClient, start, g.duration()/10, rootJob)
				// The database attributes stay: they make the edge.
				s.Attributes().PutStr("db.system", "postgresql")
				s.Attributes().PutStr("db.name", "windmill")
				s.Attributes().PutStr("server.address", "postgres.windmill.svc")
				n++
			default:
				g.fill(b.span(g.services[svc]), tid, parent, svc, serverNames+rpcNames+dbNames+g.rng.IntN(internalName), ptrace.SpanKindInternal, start, g.duration(), rootJob)
				n++
			}
		}
	}
	return b.encode()
}

// uniqueBatch returns n internal spans of one service, each with a span
// name never used before: n new series.
func (g *spanGen) uniqueBatch(n int) []byte {
	b := newBatchBuilder()
	start := time.Now().Add(-time.Second)
	for range n {
		g.unique++
		s := b.span("windmill-series")
		g.fill(s, g.id16(), pcommon.SpanID{}, 0, 0, ptrace.SpanKindInternal, start, g.duration(), g.uuid())
		s.SetName(fmt.Sprintf("job u/bench/script_%06d", g.unique))
		s.Status().SetCode(ptrace.StatusCodeUnset)
		s.Status().SetMessage("")
	}
	return b.encode()
}
