// Command pushrelay-bench measures push throughput and scrape cost of
// pushrelay and of the Prometheus Pushgateway in one run, on loopback, and
// prints the ratios that pushrelay's performance targets are stated in.
//
// It either starts the servers itself, each on a free 127.0.0.1 port with a
// fresh temporary data directory:
//
//   - pushrelay (--pushrelay-bin) with its bbolt file, consistency check on;
//   - the Pushgateway (--pushgateway-bin) with --persistence.file and
//     --push.disable-consistency-check ("pushgateway-unchecked");
//   - the Pushgateway with --persistence.file and its consistency check
//     ("pushgateway-checked"). Because a checked Pushgateway takes
//     O(groups) per push, its groups are filled by an unchecked instance on
//     the same file, which is then restarted with the check on;
//
// or targets already running servers (--pushrelay-url, --pushgateway-url,
// --pushgateway-checked-url), whose bench groups it deletes afterwards.
// An in-process HTTP server that discards every body ("null") shows what
// the load tool and loopback can do on the machine.
//
// With --memory, a started pushrelay is also started without its bbolt file
// ("pushrelay-memory", push phases only): not durable, like the unchecked
// Pushgateway, it shows what the durable commit costs. Before the push
// phases of a started pushrelay, the fsync latency of a 16 KiB write in the
// work directory, where its file is, is measured: a bbolt commit syncs
// twice, so it bounds the durable push rate on the machine's disk.
//
// For every target:
//
//  1. fill: PUT a ~40-sample text body (counters, gauges, a 10-bucket
//     histogram) once to each new group job=<--job>,instance=gNNNNNN;
//  2. push (at each --push-groups level): --clients keep-alive clients PUT
//     the body to uniformly random groups, in --push-rounds rounds of
//     --duration; pushes/s, p50/p90/p99/max latency, errors by status,
//     server and client CPU, over all rounds and per round;
//  3. scrape (at each --scrape-groups level): GET /metrics with
//     Prometheus' Accept header and Accept-Encoding: gzip, as text with
//     gzip (to tell the format's cost from gzip's) and as plain text;
//     seconds per scrape, wire and decompressed bytes, samples
//     (non-comment lines), µs per sample and the server's peak RSS (VmHWM,
//     reset before each scrape through /proc/<pid>/clear_refs). Every
//     server is scraped once in each compressed mode after its first fill
//     (before it, for a process started only to be scraped), results
//     discarded, as a scraper does from its start, so that the first
//     scrape after pushes does not count what a process builds once.
//
// A server the tool starts gets one process per push level, each filled to
// its level first; the push rounds of all of them then alternate (round 1
// of every process, then round 2 in reverse order, ...), so that the ratios
// compare pushes made in the same minutes: the speed of a shared machine
// drifts by tens of percent over minutes. The report gives the ratios over
// all rounds and per round. Scrapes follow the rounds, each level on the
// process filled to it or on the largest one below it, filled further. A
// server given by URL is one process, so its levels run one after the
// other.
//
// With --profile-dir, CPU profiles of pushrelay are taken through its
// /debug/pprof/profile endpoint during every push phase and during repeated
// scrapes at the largest scrape level; read them with go tool pprof -top.
//
// Every phase is bounded in time and in requests. Boolean flags are negated
// with --no-, e.g. --no-cleanup.
//
// Example, as run for issue 2:
//
//	go build -o /tmp/pr-bench/pushrelay ./cmd/pushrelay
//	go run ./cmd/pushrelay-bench --pushrelay-bin=/tmp/pr-bench/pushrelay \
//	    --duration=10s --checked-duration=10s --profile-dir=/tmp/pr-bench/profiles
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
)

type config struct {
	pushrelayBin   string
	pushrelayURL   string
	pushrelayPID   int
	pushrelayArgs  []string
	compareBin     string
	memory         bool
	pushgatewayBin string
	pgURL          string
	pgCheckedURL   string
	pgArgs         []string

	skipPushrelay bool
	skipUnchecked bool
	skipChecked   bool
	skipNull      bool

	clients         int
	duration        time.Duration
	pushRounds      int
	checkedDuration time.Duration
	pushGroups      []int
	checkedGroups   []int
	scrapeGroups    []int
	pgScrapeMax     int
	scrapeCount     int
	bigScrapeCount  int
	scrapeFirsts    int
	bigScrapeGroups int
	fillTimeout     time.Duration
	maxRequests     int64
	requestTimeout  time.Duration
	job             string
	seed            uint64
	workDir         string
	keep            bool
	profileDir      string
	jsonOut         string
	cleanup         bool
}

// results collects everything measured.
type results struct {
	Started  time.Time      `json:"started"`
	Clients  int            `json:"clients"`
	Samples  int            `json:"samples_per_push"`
	Fills    []fillResult   `json:"fills"`
	Pushes   []pushResult   `json:"pushes"`
	DiskSync *syncResult    `json:"disk_sync,omitempty"`
	Scrapes  []scrapeResult `json:"scrapes"`
	Profiles []string       `json:"profiles,omitempty"`
	Notes    []string       `json:"notes,omitempty"`
	Commands []string       `json:"commands,omitempty"`
}

func (r *results) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.Notes = append(r.Notes, msg)
	fmt.Fprintln(os.Stderr, "  note: "+msg)
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var c config
	var pushGroups, checkedGroups, scrapeGroups string
	app := kingpin.New("pushrelay-bench", "Load tool comparing pushrelay with the Prometheus Pushgateway: push throughput and latency, scrape time, bytes and memory.")
	app.HelpFlag.Short('h')
	app.Flag("pushrelay-bin", "Path to a built pushrelay binary to start. Ignored with --pushrelay-url.").StringVar(&c.pushrelayBin)
	app.Flag("pushrelay-url", "URL of a running pushrelay instead of starting one.").StringVar(&c.pushrelayURL)
	app.Flag("pushrelay-pid", "Process id of the running pushrelay at --pushrelay-url, for CPU and RSS.").IntVar(&c.pushrelayPID)
	app.Flag("compare-bin", "Path to a second pushrelay build, measured as pushrelay-b in the same push rounds, to compare two builds.").StringVar(&c.compareBin)
	app.Flag("memory", "Also measure pushrelay without its bbolt file (push phases only), as pushrelay-memory in the same push rounds.").BoolVar(&c.memory)
	app.Flag("pushrelay-arg", "Extra argument for the started pushrelay (repeatable).").StringsVar(&c.pushrelayArgs)
	app.Flag("pushgateway-bin", "Path to the Pushgateway binary to start.").Default("/usr/bin/prometheus-pushgateway").StringVar(&c.pushgatewayBin)
	app.Flag("pushgateway-url", "URL of a running Pushgateway started with --push.disable-consistency-check, instead of starting one.").StringVar(&c.pgURL)
	app.Flag("pushgateway-checked-url", "URL of a running Pushgateway with its consistency check, instead of starting one.").StringVar(&c.pgCheckedURL)
	app.Flag("pushgateway-arg", "Extra argument for every started Pushgateway (repeatable).").StringsVar(&c.pgArgs)
	app.Flag("skip-pushrelay", "Do not measure pushrelay.").BoolVar(&c.skipPushrelay)
	app.Flag("skip-unchecked", "Do not measure the Pushgateway without its consistency check.").BoolVar(&c.skipUnchecked)
	app.Flag("skip-checked", "Do not measure the Pushgateway with its consistency check.").BoolVar(&c.skipChecked)
	app.Flag("skip-null", "Do not measure the in-process do-nothing HTTP server.").BoolVar(&c.skipNull)
	app.Flag("clients", "Concurrent keep-alive clients.").Default("32").IntVar(&c.clients)
	app.Flag("duration", "Length of each timed push round.").Default("10s").DurationVar(&c.duration)
	app.Flag("push-rounds", "Rounds of --duration in every push phase; the rounds of all started servers and levels alternate.").Default("3").IntVar(&c.pushRounds)
	app.Flag("checked-duration", "Length of each push phase against the checked Pushgateway (about 12 pushes/s at 1k groups).").Default("10s").DurationVar(&c.checkedDuration)
	app.Flag("push-groups", "Comma-separated group counts to run push phases at.").Default("1000,10000").StringVar(&pushGroups)
	app.Flag("checked-groups", "Comma-separated group counts for the checked Pushgateway's push phases (each costs O(groups) per push).").Default("1000").StringVar(&checkedGroups)
	app.Flag("scrape-groups", "Comma-separated group counts to scrape at.").Default("1000,10000,50000").StringVar(&scrapeGroups)
	app.Flag("pushgateway-scrape-max-groups", "Skip Pushgateway scrapes (and the fill for them) above this many groups; 0 means no limit. At 50k groups one Pushgateway scrape takes ~15 s and GBs.").Default("50000").IntVar(&c.pgScrapeMax)
	app.Flag("scrape-count", "Scrapes per mode and level; the median is reported.").Default("3").IntVar(&c.scrapeCount)
	app.Flag("scrape-firsts", "Scrapes of pushrelay per mode and level that each follow a change of every group (the first after the push phase or fill, each other after pushing every group again); their median is reported as the first scrape.").Default("3").IntVar(&c.scrapeFirsts)
	app.Flag("big-scrape-count", "Scrapes per mode of the Pushgateway at or above --big-scrape-groups.").Default("1").IntVar(&c.bigScrapeCount)
	app.Flag("big-scrape-groups", "Group count from which the Pushgateway is scraped only --big-scrape-count times.").Default("50000").IntVar(&c.bigScrapeGroups)
	app.Flag("fill-timeout", "Upper bound for filling one level of groups.").Default("5m").DurationVar(&c.fillTimeout)
	app.Flag("max-requests", "Upper bound for the requests of one push phase.").Default("5000000").Int64Var(&c.maxRequests)
	app.Flag("request-timeout", "Timeout of one HTTP request (a 50k-group Pushgateway scrape takes ~15 s).").Default("180s").DurationVar(&c.requestTimeout)
	app.Flag("job", "Job label of the bench groups.").Default("pushrelay_bench").StringVar(&c.job)
	app.Flag("seed", "Seed of the random group choice.").Default("1").Uint64Var(&c.seed)
	app.Flag("work-dir", "Directory for the data directories and logs of started servers; a new temporary directory by default.").StringVar(&c.workDir)
	app.Flag("keep", "Keep the work directory (data files, logs) after the run.").BoolVar(&c.keep)
	app.Flag("profile-dir", "Write CPU profiles of pushrelay (push phases, largest scrape) here; needs --duration of at least 7s.").StringVar(&c.profileDir)
	app.Flag("json", "Also write all results as JSON to this file.").StringVar(&c.jsonOut)
	app.Flag("cleanup", "Delete the bench groups from servers given by URL at the end.").Default("true").BoolVar(&c.cleanup)
	soak := addSoakFlags(app)
	spans := registerSpanFlags(app)
	if _, err := app.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "pushrelay-bench: %v\n", err)
		return 2
	}
	var err error
	if c.pushGroups, err = parseInts(pushGroups); err == nil {
		if c.checkedGroups, err = parseInts(checkedGroups); err == nil {
			c.scrapeGroups, err = parseInts(scrapeGroups)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pushrelay-bench: %v\n", err)
		return 2
	}
	if c.clients < 1 || c.scrapeCount < 1 || c.bigScrapeCount < 1 || c.scrapeFirsts < 1 || c.pushRounds < 1 {
		fmt.Fprintln(os.Stderr, "pushrelay-bench: --clients, --scrape-count, --big-scrape-count, --scrape-firsts and --push-rounds must be at least 1")
		return 2
	}
	if !c.skipPushrelay && c.pushrelayBin == "" && c.pushrelayURL == "" {
		fmt.Fprintln(os.Stderr, "pushrelay-bench: give --pushrelay-bin or --pushrelay-url (or --skip-pushrelay)")
		return 2
	}
	for _, u := range []string{c.pushrelayURL, c.pgURL, c.pgCheckedURL} {
		if u != "" && !isLoopbackURL(u) {
			fmt.Fprintf(os.Stderr, "pushrelay-bench: %s is not a loopback URL; this tool only loads loopback servers\n", u)
			return 2
		}
	}
	if c.workDir == "" {
		if c.workDir, err = os.MkdirTemp("", "pushrelay-bench-"); err != nil {
			fmt.Fprintf(os.Stderr, "pushrelay-bench: %v\n", err)
			return 1
		}
		if !c.keep {
			defer os.RemoveAll(c.workDir)
		}
	} else if err := os.MkdirAll(c.workDir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "pushrelay-bench: %v\n", err)
		return 1
	}
	if c.profileDir != "" {
		if c.profileDir, err = filepath.Abs(c.profileDir); err != nil {
			fmt.Fprintf(os.Stderr, "pushrelay-bench: %v\n", err)
			return 1
		}
	}

	if soak.enabled {
		return runSoak(&c, soak, args)
	}
	if spans.enabled {
		return runSpans(&c, spans, args)
	}
	res := &results{Started: time.Now(), Clients: c.clients, Samples: samplesPerBody}
	res.Commands = append(res.Commands, "pushrelay-bench "+strings.Join(args, " "))
	fmt.Fprintf(os.Stderr, "work dir %s; body %d bytes, %d samples; %d clients\n", c.workDir, len(pushBody(0)), samplesPerBody, c.clients)
	l := newLoader(c.clients, c.job, c.maxRequests, c.requestTimeout)

	failed := false
	if !c.skipNull {
		if err := runNull(&c, l, res); err != nil {
			res.note("null server: %v", err)
		}
	}
	var started []kind
	switch {
	case !c.skipPushrelay && c.pushrelayURL == "":
		// The started pushrelay keeps its file in the work directory.
		if sr, err := probeSync(c.workDir); err != nil {
			res.note("disk sync probe: %v", err)
		} else {
			res.DiskSync = sr
		}
		started = append(started, pushrelayKind("pushrelay", c.pushrelayBin, true))
		if c.memory {
			memory := pushrelayKind("pushrelay-memory", c.pushrelayBin, false)
			memory.pushOnly = true
			started = append(started, memory)
		}
	case c.memory:
		res.note("--memory needs a started pushrelay (--pushrelay-bin); pushrelay-memory not measured")
	}
	if !c.skipPushrelay && c.pushrelayURL != "" {
		if err := runURL(&c, l, res, "pushrelay", c.pushrelayURL, c.pushrelayPID, 0, true); err != nil {
			res.note("pushrelay: %v", err)
			failed = true
		}
	}
	if !c.skipUnchecked {
		if c.pgURL == "" {
			started = append(started, uncheckedKind(&c))
		} else if err := runURL(&c, l, res, "pushgateway-unchecked", c.pgURL, 0, c.pgScrapeMax, false); err != nil {
			res.note("pushgateway-unchecked: %v", err)
			failed = true
		}
	}
	if c.compareBin != "" {
		started = append(started, pushrelayKind("pushrelay-b", c.compareBin, true))
	}
	if len(started) > 0 {
		if err := runStarted(&c, l, res, started); err != nil {
			failed = true // runStarted noted every failure
		}
	}
	if !c.skipChecked {
		if err := runChecked(&c, l, res); err != nil {
			res.note("pushgateway-checked: %v", err)
			failed = true
		}
	}

	printReport(os.Stdout, res)
	if c.jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(c.jsonOut, b, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "pushrelay-bench: %v\n", err)
			failed = true
		}
	}
	if c.keep {
		fmt.Fprintf(os.Stderr, "kept %s\n", c.workDir)
	}
	if failed {
		return 1
	}
	return 0
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		mult := 1
		if num, ok := strings.CutSuffix(strings.ToLower(f), "k"); ok {
			f, mult = num, 1000
		}
		n, err := strconv.Atoi(f)
		n *= mult
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("invalid group count %q", f)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func isLoopbackURL(u string) bool {
	for _, p := range []string{"http://127.", "http://localhost:", "http://localhost/", "http://[::1]"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

// runNull measures the in-process do-nothing server at the first push level.
func runNull(c *config, l *loader, res *results) error {
	fmt.Fprintln(os.Stderr, "== null (in-process do-nothing HTTP server)")
	n, err := startNullServer()
	if err != nil {
		return err
	}
	defer n.stop()
	t := &target{name: "null", url: n.url, pid: os.Getpid()}
	groups := 1000
	if len(c.pushGroups) > 0 {
		groups = c.pushGroups[0]
	}
	pr := l.pushPhase(t, groups, c.duration, c.seed, "", "")
	pr.ServerCPUus, pr.ServerCPUPct = 0, 0 // the server is this process
	res.Pushes = append(res.Pushes, pr)
	logPush(pr)
	return nil
}

// kind is a server the tool starts itself, one process per push level.
type kind struct {
	name string
	// scrapeMax (0: none) skips scrapes and fills above it.
	scrapeMax int
	// pushOnly skips every scrape.
	pushOnly bool
	start    func(c *config, res *results, dir string) (*target, func(), error)
}

// scrapedAt reports whether k is scraped at level groups.
func (k kind) scrapedAt(level int) bool {
	return !k.pushOnly && scrapedAt(k.scrapeMax, level)
}

// pushrelayKind starts the pushrelay binary bin as target name, with a
// bbolt file when persist, else in memory only, and the trace receivers
// off: they play no part here, and their fixed default ports may be taken.
func pushrelayKind(name, bin string, persist bool) kind {
	return kind{name: name, start: func(c *config, res *results, dir string) (*target, func(), error) {
		file := ""
		if persist {
			file = filepath.Join(dir, "pushrelay.db")
		}
		args := append([]string{"--persistence.file=" + file, "--log.level=warn",
			"--traces.otlp-grpc.listen-address=", "--traces.otlp-http.listen-address=", "--traces.zipkin.listen-address="}, c.pushrelayArgs...)
		p, err := startProc(name, bin, dir, args, 30*time.Second)
		if err != nil {
			return nil, nil, err
		}
		res.Commands = append(res.Commands, strings.Join(p.cmd.Args, " "))
		stop := func() {
			if err := p.stop(time.Minute); err != nil {
				res.note("%v", err)
			}
		}
		return &target{name: name, url: p.url, pid: p.pid(), proc: p, isPushrelay: true}, stop, nil
	}}
}

// uncheckedKind starts the Pushgateway with --push.disable-consistency-check.
// It writes its whole file on shutdown; nothing needs it here, so it is
// killed.
func uncheckedKind(c *config) kind {
	return kind{name: "pushgateway-unchecked", scrapeMax: c.pgScrapeMax, start: func(c *config, res *results, dir string) (*target, func(), error) {
		args := append([]string{"--persistence.file=" + filepath.Join(dir, "pushgateway.db"), "--push.disable-consistency-check", "--log.level=warn"}, c.pgArgs...)
		p, err := startProc("pushgateway-unchecked", c.pushgatewayBin, dir, args, 30*time.Second)
		if err != nil {
			return nil, nil, err
		}
		res.Commands = append(res.Commands, strings.Join(p.cmd.Args, " "))
		return &target{name: "pushgateway-unchecked", url: p.url, pid: p.pid(), proc: p}, p.kill, nil
	}}
}

// instance is one started server of a kind.
type instance struct {
	kind   kind
	t      *target
	filled int
	rounds []pushResult
}

// runStarted measures the kinds the tool starts. Every kind gets one
// process per push level, filled to it; then the push rounds of all of them
// alternate, so that every ratio compares phases run in the same minutes of
// a machine whose speed drifts. Scrapes follow, each level on the process
// filled to it or on the largest one filled further. A kind that fails to
// start or fill, or a process that dies, is noted and left out; what the
// others measured is kept. The error lists every failure.
func runStarted(c *config, l *loader, res *results, kinds []kind) error {
	var insts []*instance
	var stops []func()
	defer func() {
		for _, stop := range slices.Backward(stops) {
			stop()
		}
	}()
	var failures []error
	fail := func(err error) {
		res.note("%v", err)
		failures = append(failures, err)
	}
	start := func(k kind) (*instance, error) {
		dir := filepath.Join(c.workDir, fmt.Sprintf("%s-%d", k.name, len(stops)))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		t, stop, err := k.start(c, res, dir)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.name, err)
		}
		stops = append(stops, stop)
		return &instance{kind: k, t: t}, nil
	}
	fill := func(in *instance, level int) error {
		fr := l.fill(in.t, in.filled, level, c.fillTimeout)
		res.Fills = append(res.Fills, fr)
		fmt.Fprintf(os.Stderr, "  fill %s %d→%d: %d ok in %.1fs (%.0f/s), errors %s\n", in.kind.name, fr.From, fr.To, fr.Done, fr.Seconds, fr.Rate, fr.Errors)
		in.filled = level
		if fr.TimedOut {
			return fmt.Errorf("%s: fill to %d groups timed out after %s", in.kind.name, level, c.fillTimeout)
		}
		return nil
	}
	pushLevels := slices.Compact(slices.Sorted(slices.Values(c.pushGroups)))
	scrapeLevels := slices.Compact(slices.Sorted(slices.Values(c.scrapeGroups)))
	var measured []kind
	for _, k := range kinds {
		fmt.Fprintf(os.Stderr, "== %s\n", k.name)
		var mine []*instance
		err := func() error {
			for _, level := range pushLevels {
				in, err := start(k)
				if err != nil {
					return err
				}
				mine = append(mine, in)
				if err := fill(in, level); err != nil {
					return err
				}
				if len(scrapeLevels) > 0 && k.scrapedAt(level) {
					if err := l.warmUp(in.t, level); err != nil {
						return err
					}
				}
			}
			return nil
		}()
		if err != nil {
			fail(err)
			continue
		}
		insts = append(insts, mine...)
		measured = append(measured, k)
	}
	// dead marks the processes that stopped answering.
	dead := map[*instance]bool{}
	for r := range c.pushRounds {
		fmt.Fprintf(os.Stderr, "== push round %d of %d\n", r+1, c.pushRounds)
		// Every other round runs in reverse order, so that a steady drift
		// of the machine's speed favours no process over a pair of
		// rounds.
		order := slices.Clone(insts)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, in := range order {
			if dead[in] {
				continue
			}
			if err := in.t.proc.alive(); err != nil {
				dead[in] = true
				fail(fmt.Errorf("%s @%d groups: %w", in.kind.name, in.filled, err))
				continue
			}
			profURL, profPath := pushProfile(c, in.t, r, in.filled)
			pr := l.pushPhase(in.t, in.filled, c.duration, c.seed+uint64(r), profURL, profPath)
			in.rounds = append(in.rounds, pr)
			logPush(pr)
		}
	}
	for _, in := range insts {
		if len(in.rounds) == 0 {
			continue
		}
		pr := mergeRounds(in.rounds)
		res.Pushes = append(res.Pushes, pr)
		if pr.Profile != "" {
			res.Profiles = append(res.Profiles, pr.Profile)
		}
	}
	for _, k := range measured {
		if err := scrapeKind(c, l, res, k, scrapeLevels, &insts, dead, start, fill); err != nil {
			fail(err)
		}
	}
	return errors.Join(failures...)
}

// scrapeKind scrapes the processes of kind k at every level: the process
// filled to the level, else the fullest live one below it, filled further,
// else a new one.
func scrapeKind(c *config, l *loader, res *results, k kind, levels []int, insts *[]*instance, dead map[*instance]bool,
	start func(kind) (*instance, error), fill func(*instance, int) error) error {
	if k.pushOnly {
		return nil
	}
	for _, level := range levels {
		if !k.scrapedAt(level) {
			res.note("%s: skipping %d groups (over --pushgateway-scrape-max-groups)", k.name, level)
			continue
		}
		var in *instance
		for _, cand := range *insts {
			if cand.kind.name == k.name && !dead[cand] && cand.filled <= level && (in == nil || cand.filled > in.filled) {
				in = cand
			}
		}
		if in == nil {
			var err error
			if in, err = start(k); err != nil {
				return err
			}
			*insts = append(*insts, in)
			// No push phase follows: warm it up before the fill that
			// the first scrape then follows.
			if err := l.warmUp(in.t, 0); err != nil {
				return err
			}
		}
		unchanged := 0
		if in.filled < level {
			unchanged = in.filled
			if err := fill(in, level); err != nil {
				return err
			}
		}
		if err := scrapeLevel(c, l, res, in.t, level, unchanged); err != nil {
			return fmt.Errorf("%s: %w", k.name, err)
		}
	}
	return nil
}

// scrapedAt reports whether a server whose scrapes stop above scrapeMax
// groups (0: none) is scraped at level groups.
func scrapedAt(scrapeMax, level int) bool {
	return scrapeMax == 0 || level <= scrapeMax
}

// runURL measures a server given by URL: one process, so its levels run one
// after the other.
func runURL(c *config, l *loader, res *results, name, url string, pid, scrapeMax int, isPushrelay bool) error {
	fmt.Fprintf(os.Stderr, "== %s at %s\n", name, url)
	t := &target{name: name, url: strings.TrimRight(url, "/"), pid: pid, isPushrelay: isPushrelay}
	return runLevels(c, l, res, t, scrapeMax)
}

// runLevels fills, pushes and scrapes t at every level in increasing order.
// scrapeMax (0: none) skips scrapes and fills above it. Only pushrelay is
// profiled and always scraped --scrape-count times.
func runLevels(c *config, l *loader, res *results, t *target, scrapeMax int) error {
	levels := slices.Concat(c.pushGroups, c.scrapeGroups)
	slices.Sort(levels)
	levels = slices.Compact(levels)
	filled := 0
	defer func() {
		if c.cleanup && filled > 0 {
			n, errs := l.deleteGroups(t, filled, 5*time.Minute)
			fmt.Fprintf(os.Stderr, "  cleanup: deleted %d of %d groups, errors %s\n", n, filled, errs)
		}
	}()
	for _, level := range levels {
		doPush := slices.Contains(c.pushGroups, level)
		doScrape := slices.Contains(c.scrapeGroups, level) && scrapedAt(scrapeMax, level)
		if !doPush && !doScrape {
			res.note("%s: skipping %d groups (over --pushgateway-scrape-max-groups)", t.name, level)
			continue
		}
		// Groups filled before a level without a push phase are as
		// unchanged as its last scrape left them.
		unchanged := 0
		if level > filled {
			if !doPush {
				unchanged = filled
			}
			fr := l.fill(t, filled, level, c.fillTimeout)
			res.Fills = append(res.Fills, fr)
			fmt.Fprintf(os.Stderr, "  fill %d→%d: %d ok in %.1fs (%.0f/s), errors %s\n", fr.From, fr.To, fr.Done, fr.Seconds, fr.Rate, fr.Errors)
			filled = level
			if fr.TimedOut {
				return fmt.Errorf("fill to %d groups timed out after %s", level, c.fillTimeout)
			}
			if doPush && len(c.scrapeGroups) > 0 && scrapedAt(scrapeMax, level) {
				if err := l.warmUp(t, level); err != nil {
					return err
				}
			}
		}
		if doPush {
			var rounds []pushResult
			for r := range c.pushRounds {
				profURL, profPath := pushProfile(c, t, r, level)
				pr := l.pushPhase(t, level, c.duration, c.seed+uint64(r), profURL, profPath)
				rounds = append(rounds, pr)
				logPush(pr)
			}
			pr := mergeRounds(rounds)
			res.Pushes = append(res.Pushes, pr)
			if pr.Profile != "" {
				res.Profiles = append(res.Profiles, pr.Profile)
			}
		}
		if doScrape {
			if err := scrapeLevel(c, l, res, t, level, unchanged); err != nil {
				return err
			}
		}
	}
	return nil
}

// pushProfile returns where to fetch a CPU profile of t during push round
// round at level groups and the file to write it to, or empty strings when
// none is taken: only of pushrelay, in the first round, with --profile-dir
// and rounds long enough for a 5 s profile.
func pushProfile(c *config, t *target, round, level int) (url, path string) {
	if !t.isPushrelay || round > 0 || c.profileDir == "" || c.duration < 7*time.Second {
		return "", ""
	}
	return t.url + "/debug/pprof/profile?seconds=5", filepath.Join(c.profileDir, fmt.Sprintf("%s-push-%d.pprof", t.name, level))
}

// scrapeLevel scrapes t, filled to level groups, in every mode, each once
// the machine is quiet (settle), and profiles pushrelay's scrapes at the
// largest scrape level. unchanged is how many groups, from the first on,
// have not been pushed since t was last scraped (the level was reached by
// a fill); pushrelay pushes them again first, so that its first scrapes
// follow a change of every group. pushrelay is then pushed every group
// again, and scraped once in every mode after it, until each mode has
// --scrape-firsts scrapes after a change of every group.
func scrapeLevel(c *config, l *loader, res *results, t *target, level, unchanged int) error {
	if err := t.proc.alive(); err != nil {
		return err
	}
	n := c.scrapeCount
	if !t.isPushrelay && level >= c.bigScrapeGroups {
		n = c.bigScrapeCount
	}
	if t.isPushrelay && unchanged > 0 {
		if err := repushed(l.repush(t, unchanged, c.fillTimeout), c.fillTimeout); err != nil {
			return fmt.Errorf("scrape at %d groups: %w", level, err)
		}
	}
	plainSize := 0
	srs := make([]scrapeResult, 0, len(scrapeModes))
	for _, m := range scrapeModes {
		if _, quiet := l.settle(); !quiet {
			res.note("%s: the %s scrapes at %d groups started on a busy machine (after %s)", t.name, m.Name, level, settleLimit)
		}
		sr := l.scrape(t, level, m, n, plainSize)
		plainSize = max(plainSize, int(sr.RawBytes))
		srs = append(srs, sr)
		if sr.Err != "" {
			addScrapes(res, srs)
			return fmt.Errorf("scrape at %d groups: %s", level, sr.Err)
		}
	}
	firsts := 1
	if t.isPushrelay {
		firsts = c.scrapeFirsts
	}
	for range firsts - 1 {
		if err := repushed(l.repush(t, level, c.fillTimeout), c.fillTimeout); err != nil {
			addScrapes(res, srs)
			return fmt.Errorf("scrape at %d groups: %w", level, err)
		}
		for i, m := range scrapeModes {
			if _, quiet := l.settle(); !quiet {
				res.note("%s: a %s scrape after pushing every group at %d groups started on a busy machine (after %s)", t.name, m.Name, level, settleLimit)
			}
			again := l.scrape(t, level, m, 1, plainSize)
			if again.Err != "" {
				addScrapes(res, srs)
				return fmt.Errorf("scrape %s at %d groups after pushing every group again: %s", m.Name, level, again.Err)
			}
			srs[i].addFirst(again.FirstSeconds)
			srs[i].RepushPeakRSS = max(srs[i].RepushPeakRSS, again.PeakRSS)
		}
	}
	addScrapes(res, srs)
	if t.isPushrelay && c.profileDir != "" && level == slices.Max(c.scrapeGroups) {
		path := filepath.Join(c.profileDir, fmt.Sprintf("%s-scrape-%d.pprof", t.name, level))
		n, err := l.profileScrapes(t, scrapeModes[0], t.url+"/debug/pprof/profile?seconds=5", path, 200)
		if err != nil {
			res.note("%s: scrape profile: %v", t.name, err)
		} else {
			res.Profiles = append(res.Profiles, path)
			fmt.Fprintf(os.Stderr, "  scrape profile: %d scrapes during 5s → %s\n", n, path)
		}
	}
	return nil
}

// addScrapes records and logs srs.
func addScrapes(res *results, srs []scrapeResult) {
	for _, sr := range srs {
		res.Scrapes = append(res.Scrapes, sr)
		logScrape(sr)
	}
}

// repushed returns an error when fr, a push of every group before a
// scrape, did not push every group.
func repushed(fr fillResult, timeout time.Duration) error {
	switch {
	case fr.TimedOut:
		return fmt.Errorf("push of every group again timed out after %s: %d of %d ok, errors %s", timeout, fr.Done, fr.To-fr.From, fr.Errors)
	case fr.Done != fr.To-fr.From:
		return fmt.Errorf("push of every group again: %d of %d ok, errors %s", fr.Done, fr.To-fr.From, fr.Errors)
	}
	return nil
}

// runChecked measures the Pushgateway with its consistency check. Its groups
// are filled by an unchecked Pushgateway on the same persistence file,
// which then restarts with the check: filling 1k groups through the check
// alone would take minutes.
func runChecked(c *config, l *loader, res *results) error {
	fmt.Fprintln(os.Stderr, "== pushgateway-checked")
	if c.pgCheckedURL != "" {
		t := &target{name: "pushgateway-checked", url: strings.TrimRight(c.pgCheckedURL, "/")}
		filled := 0
		defer func() {
			if c.cleanup && filled > 0 {
				n, errs := l.deleteGroups(t, filled, 5*time.Minute)
				fmt.Fprintf(os.Stderr, "  cleanup: deleted %d of %d groups, errors %s\n", n, filled, errs)
			}
		}()
		for _, level := range c.checkedGroups {
			fr := l.fill(t, filled, level, c.fillTimeout)
			res.Fills = append(res.Fills, fr)
			filled = level
			if fr.TimedOut {
				return fmt.Errorf("fill to %d groups timed out", level)
			}
			pr := l.pushPhase(t, level, c.checkedDuration, c.seed, "", "")
			res.Pushes = append(res.Pushes, pr)
			logPush(pr)
		}
		return nil
	}
	dir := filepath.Join(c.workDir, "pushgateway-checked")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	file := filepath.Join(dir, "pushgateway.db")
	filled := 0
	for _, level := range c.checkedGroups {
		// Fill through an unchecked instance, which persists on SIGTERM.
		args := append([]string{"--persistence.file=" + file, "--push.disable-consistency-check", "--log.level=warn"}, c.pgArgs...)
		p, err := startProc("pushgateway-checked-filler", c.pushgatewayBin, dir, args, time.Minute)
		if err != nil {
			return err
		}
		filler := &target{name: "pushgateway-checked", url: p.url, pid: p.pid(), proc: p}
		fr := l.fill(filler, filled, level, c.fillTimeout)
		res.Fills = append(res.Fills, fr)
		fmt.Fprintf(os.Stderr, "  fill %d→%d (unchecked filler): %d ok in %.1fs, errors %s\n", fr.From, fr.To, fr.Done, fr.Seconds, fr.Errors)
		if err := p.stop(2 * time.Minute); err != nil {
			return err
		}
		filled = level
		if fr.TimedOut {
			return fmt.Errorf("fill to %d groups timed out", level)
		}

		args = append([]string{"--persistence.file=" + file, "--log.level=warn"}, c.pgArgs...)
		p, err = startProc("pushgateway-checked", c.pushgatewayBin, dir, args, 2*time.Minute)
		if err != nil {
			return err
		}
		res.Commands = append(res.Commands, strings.Join(p.cmd.Args, " "))
		t := &target{name: "pushgateway-checked", url: p.url, pid: p.pid(), proc: p}
		if n, err := l.countGroups(t); err != nil || n != level {
			res.note("pushgateway-checked: after restart %d groups are exposed, want %d (err %v)", n, level, err)
		}
		pr := l.pushPhase(t, level, c.checkedDuration, c.seed, "", "")
		res.Pushes = append(res.Pushes, pr)
		logPush(pr)
		// Persist for the next level's filler.
		if err := p.stop(2 * time.Minute); err != nil {
			return err
		}
	}
	return nil
}

func logPush(p pushResult) {
	settled := fmt.Sprintf("quiet after %.1fs", p.SettleSeconds)
	if p.Unsettled {
		settled = fmt.Sprintf("not quiet after %.1fs", p.SettleSeconds)
	}
	fmt.Fprintf(os.Stderr, "  push %s @%d groups: %.0f pushes/s, p50 %.2fms p99 %.2fms, errors %s; machine %s, other CPU %.0f%% (steal %.0f%%)\n",
		p.Target, p.Groups, p.Rate, p.P50ms, p.P99ms, p.Errors, settled, p.OtherCPUPct, p.StealCPUPct)
}

func logScrape(s scrapeResult) {
	if s.Err != "" {
		fmt.Fprintf(os.Stderr, "  scrape %s @%d %s: error %s\n", s.Target, s.Groups, s.Mode, s.Err)
		return
	}
	afterRepush := ""
	if s.RepushPeakRSS > 0 {
		afterRepush = fmt.Sprintf(" (%.0f MB in the scrapes after pushing every group again)", float64(s.RepushPeakRSS)/(1<<20))
	}
	fmt.Fprintf(os.Stderr, "  scrape %s @%d %s: %.3fs (after every group changed %s s), %d samples, %.3f µs/sample, %.1f MB wire, peak RSS %.0f MB%s\n",
		s.Target, s.Groups, s.Mode, s.MedianSeconds, joinRates(s.FirstsSeconds, 3), s.Samples, s.USPerSample, float64(s.WireBytes)/1e6, float64(s.PeakRSS)/(1<<20), afterRepush)
}
