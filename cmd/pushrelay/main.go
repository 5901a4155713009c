// Command pushrelay is a drop-in replacement for the Prometheus Pushgateway
// whose every acknowledged push is durable.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	webflag "github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/pushrelay/pushrelay/config"
	"github.com/pushrelay/pushrelay/forward"
	"github.com/pushrelay/pushrelay/gateway"
	"github.com/pushrelay/pushrelay/internal/gctune"
	"github.com/pushrelay/pushrelay/persistence"
	"github.com/pushrelay/pushrelay/spanmetrics"
	"github.com/pushrelay/pushrelay/staleness"
	"github.com/pushrelay/pushrelay/traces"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Timeouts of the HTTP servers: slow clients cannot hold connections open.
const (
	// shutdownTimeout bounds how long in-flight requests may take at
	// shutdown.
	shutdownTimeout   = 30 * time.Second
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 5 * time.Minute
	idleTimeout       = 2 * time.Minute
)

func main() {
	if version.Version == "" {
		version.Version = "dev"
	}
	os.Exit(runMain(os.Args[1:]))
}

func runMain(args []string) int {
	var namingSet, maxSeriesSet, staleAfterSet, slackSet bool
	app := kingpin.New("pushrelay", "A Prometheus Pushgateway replacement whose acknowledged pushes are durable.")
	var (
		webConfig               = webflag.AddFlags(app, ":9091")
		metricsPath             = app.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").String()
		externalURL             = app.Flag("web.external-url", "The URL under which pushrelay is externally reachable.").Default("").URL()
		routePrefix             = app.Flag("web.route-prefix", "Prefix for the internal routes of web endpoints. Defaults to the path of --web.external-url.").Default("").String()
		enableLifeCycle         = app.Flag("web.enable-lifecycle", "Enable shutdown via HTTP request.").Default("false").Bool()
		enableAdminAPI          = app.Flag("web.enable-admin-api", "Enable API endpoints for admin control actions.").Default("false").Bool()
		persistenceFile         = app.Flag("persistence.file", "bbolt file that every acknowledged push is committed to. Empty keeps metrics in memory only.").Default("data/pushrelay.db").String()
		_                       = app.Flag("persistence.interval", "Accepted for compatibility with the Pushgateway; has no effect, every push is committed before it is acknowledged.").Default("5m").Duration()
		disableConsistencyCheck = app.Flag("push.disable-consistency-check", "Answer pushes with 202 as soon as they are queued instead of waiting for the consistency check and the commit.").Default("false").Bool()
		maxBodyBytes            = app.Flag("push.max-body-bytes", "Largest push body accepted, on the wire and decompressed; larger pushes are answered 413.").Default("16MiB").Bytes()
		maxGroups               = app.Flag("push.max-groups", "Most groups held; a push creating one more is answered 507. 0 means no limit.").Default("0").Int()
		maxSeriesPerGroup       = app.Flag("push.max-series-per-group", "Most series one group may hold; a push exceeding it is answered 413. 0 means no limit.").Default("0").Int()
		maxLabelNameLength      = app.Flag("push.max-label-name-length", "Longest label name accepted in a push, in bytes; 0 means no limit.").Default("0").Int()
		maxLabelValueLength     = app.Flag("push.max-label-value-length", "Longest label value accepted in a push, in bytes; 0 means no limit.").Default("0").Int()
		configFile              = app.Flag("config.file", "YAML configuration file: staleness rules. Reloaded on SIGHUP and POST /-/reload.").Default("").String()
		stalenessTTL            = app.Flag("staleness.ttl", "Default time to live of a group after its last successful push; 0 disables expiry.").Default("0").Duration()
		stalenessAction         = app.Flag("staleness.action", "What happens to an expired group: zero (every sample value set to 0) or delete.").Default("zero").Enum("zero", "delete")
		otlpGRPCAddress         = app.Flag("traces.otlp-grpc.listen-address", "Address of the OTLP gRPC trace receiver; empty disables it.").Default(":4317").String()
		otlpHTTPAddress         = app.Flag("traces.otlp-http.listen-address", "Address of the OTLP HTTP trace receiver (POST /v1/traces); empty disables it.").Default(":4318").String()
		zipkinAddress           = app.Flag("traces.zipkin.listen-address", "Address of the Zipkin v2 JSON receiver (POST /api/v2/spans); empty disables it.").Default(":9411").String()
		tracesMaxBody           = app.Flag("traces.max-body-bytes", "Largest trace request body accepted, after decompression.").Default("16MiB").Bytes()
		tracesMaxSpans          = app.Flag("traces.max-spans-per-request", "Most spans accepted in one trace request; 0 means no limit.").Default("100000").Int()
		spanNaming              = app.Flag("spanmetrics.naming", "Span metric names: tempo (traces_spanmetrics_*, seconds) or otel (traces_span_metrics_*, milliseconds).").Default("tempo").IsSetByUser(&namingSet).Enum("tempo", "otel")
		spanDimensions          = app.Flag("spanmetrics.dimensions", "Comma-separated span or resource attributes that become span metric labels.").Default("").String()
		spanMaxSeries           = app.Flag("spanmetrics.max-series", "Most label sets of span metrics and service graphs kept at once.").Default("10000").IsSetByUser(&maxSeriesSet).Int()
		spanStaleAfter          = app.Flag("spanmetrics.stale-after", "Span metric series not updated for this long are removed.").Default("15m").IsSetByUser(&staleAfterSet).Duration()
		forwardEndpoint         = app.Flag("forward.otlp.endpoint", "OTLP gRPC collector (host:port or URL) that every group and all span metrics are forwarded to; empty disables forwarding unless OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT is set.").Default("").String()
		forwardInterval         = app.Flag("forward.otlp.interval", "Interval between forwarding rounds.").Default("15s").Duration()
		forwardInsecure         = app.Flag("forward.otlp.insecure", "Forward over plaintext gRPC.").Default("false").Bool()
		forwardHeaders          = app.Flag("forward.otlp.headers", "Headers sent with every forwarding request, as k=v,k2=v2.").Default("").String()
		forwardCAFile           = app.Flag("forward.otlp.ca-file", "CA certificate file to verify the collector's TLS certificate.").Default("").String()
		forwardTimeout          = app.Flag("forward.otlp.timeout", "Timeout of one forwarding request.").Default("10s").Duration()
		spanSlack               = app.Flag("spanmetrics.ingestion-slack", "Spans ending further than this in the past or future are not counted; 0 disables the window.").Default("30s").IsSetByUser(&slackSet).Duration()
		gcHeadroom              = app.Flag("runtime.gc-headroom", "Heap growth always allowed between two garbage collections, however small the live heap; 0 leaves GOGC alone. GOGC or GOMEMLIMIT in the environment win.").Default("64MiB").Bytes()
	)
	promslogConfig := &promslog.Config{}
	promslogflag.AddFlags(app, promslogConfig)
	app.Version(version.Print("pushrelay"))
	app.HelpFlag.Short('h')
	if _, err := app.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "pushrelay: %v\n", err)
		return 2
	}
	logger := promslog.New(promslogConfig)

	prefix := *routePrefix
	if prefix == "" && *externalURL != nil {
		prefix = (*externalURL).Path
	}
	prefix = gateway.NormalizeRoutePrefix(prefix)
	logger.Info("starting pushrelay", "version", version.Info(), "build_context", version.BuildContext())
	if tuner := gctune.Tune(uint64(*gcHeadroom)); tuner != nil {
		defer tuner.Stop()
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		versioncollector.NewCollector("pushrelay"),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	loadConfig := func() (*config.Config, error) {
		if *configFile == "" {
			return config.Parse(nil)
		}
		return config.Load(*configFile)
	}
	loadPolicy := func() (*staleness.Policy, error) {
		cfg, err := loadConfig()
		if err != nil {
			return nil, err
		}
		return staleness.NewPolicy(*stalenessTTL, staleness.Action(*stalenessAction), cfg.Staleness.Rules), nil
	}
	cfg, err := loadConfig()
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	policy := staleness.NewPolicy(*stalenessTTL, staleness.Action(*stalenessAction), cfg.Staleness.Rules)
	expiry := staleness.NewManager(policy, logger)
	reload := func() error {
		p, err := loadPolicy()
		if err != nil {
			logger.Error("cannot reload configuration; keeping the old one", "err", err)
			return err
		}
		expiry.SetPolicy(p)
		logger.Info("configuration reloaded", "file", *configFile)
		return nil
	}

	var persister gateway.Persister
	var db *persistence.DB
	if *persistenceFile != "" {
		var err error
		if db, err = persistence.Open(*persistenceFile, &persistence.Options{Logger: logger}); err != nil {
			logger.Error("cannot start", "err", err)
			return 1
		}
		defer db.Close()
		persister = db
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushrelay_persistence_file_size_bytes",
			Help: "Size of the persistence file on disk.",
		}, func() float64 { return float64(db.Size()) }))
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushrelay_persistence_log_bytes",
			Help: "Size of the commits in the persistence file not yet compacted into their groups.",
		}, func() float64 { return float64(db.LogBytes()) }))
	}
	spanCfg := cfg.Spanmetrics
	if namingSet {
		spanCfg.Naming = spanmetrics.Naming(*spanNaming)
	}
	if *spanDimensions != "" {
		spanCfg.Dimensions = nil
		for _, d := range strings.Split(*spanDimensions, ",") {
			if d = strings.TrimSpace(d); d != "" {
				spanCfg.Dimensions = append(spanCfg.Dimensions, d)
			}
		}
	}
	if maxSeriesSet {
		spanCfg.MaxSeries = *spanMaxSeries
	}
	if staleAfterSet {
		spanCfg.StaleAfter = *spanStaleAfter
	}
	if slackSet {
		spanCfg.IngestionSlack = *spanSlack
	}
	spanReg := prometheus.NewRegistry()
	processor, err := spanmetrics.New(spanCfg, spanmetrics.Options{Registerer: reg, Logger: logger})
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	spanReg.MustRegister(processor)

	store, err := gateway.NewStore(gateway.StoreOptions{
		Persister:  persister,
		Own:        reg,
		Registerer: reg,
		Reserved:   processor.FamilyTypes(),
		Expiry:     expiry,
		Limits: gateway.Limits{
			MaxGroups: *maxGroups, MaxSeriesPerGroup: *maxSeriesPerGroup,
			MaxLabelNameLength: *maxLabelNameLength, MaxLabelValueLength: *maxLabelValueLength,
		},
		Logger: logger,
	})
	if err != nil {
		logger.Error("cannot restore groups", "err", err)
		return 1
	}
	logger.Info("groups restored", "groups", len(store.Groups()), "file", *persistenceFile)

	quit := make(chan struct{})
	var quitOnce sync.Once
	handler := gateway.NewHandler(store, gateway.HandlerOptions{
		RoutePrefix:             prefix,
		TelemetryPath:           *metricsPath,
		EnableLifecycle:         *enableLifeCycle,
		EnableAdminAPI:          *enableAdminAPI,
		DisableConsistencyCheck: *disableConsistencyCheck,
		MaxBodyBytes:            int64(*maxBodyBytes),
		Auth: gateway.Auth{
			Push: cfg.Auth.Push.BasicAuthUsers, Scrape: cfg.Auth.Scrape.BasicAuthUsers, Admin: cfg.Auth.Admin.BasicAuthUsers,
		},
		Flags:     flagValues(app),
		BuildInfo: buildInfo(),
		StartTime: time.Now(),
		Quit:      func() { quitOnce.Do(func() { close(quit) }) },
		Reload:    reload,
		Registry:  reg,
		Exposed:   []prometheus.Gatherer{spanReg},
		Services: func() []gateway.ServiceStats {
			var out []gateway.ServiceStats
			for _, st := range processor.Services() {
				out = append(out, gateway.ServiceStats(st))
			}
			return out
		},
		Logger: logger,
	})
	server := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelError),
	}

	stop := newShutdown(shutdownTimeout)
	defer stop.release()
	var g run.Group
	g.Add(func() error {
		err := web.ListenAndServe(server, webConfig, logger)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}, func(error) { stop.http(server) })
	{
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			expiry.Run(ctx, store)
			return nil
		}, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			processor.Run(ctx)
			return nil
		}, func(error) { cancel() })
	}
	if exporter, err := forward.NewExporter(forward.ExporterConfig{
		Endpoint: *forwardEndpoint, Interval: *forwardInterval, Insecure: *forwardInsecure,
		Headers: *forwardHeaders, CAFile: *forwardCAFile, Timeout: *forwardTimeout,
	}); err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	} else if exporter != nil {
		fwd := forward.New(forward.Options{
			Groups:     store.Groups,
			Gatherer:   spanReg,
			Exporter:   exporter,
			Interval:   *forwardInterval,
			Resource:   pushrelayResource(),
			Registerer: reg,
			Logger:     logger,
		})
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			fwd.Run(ctx)
			return nil
		}, func(error) { cancel() })
		logger.Info("forwarding metrics over OTLP", "endpoint", *forwardEndpoint, "interval", *forwardInterval)
	}
	traceMetrics := traces.NewMetrics(reg)
	traceLimits := traces.Limits{MaxBodyBytes: int64(*tracesMaxBody), MaxSpans: *tracesMaxSpans}
	if *otlpGRPCAddress != "" {
		lis, err := net.Listen("tcp", *otlpGRPCAddress)
		if err != nil {
			logger.Error("cannot listen for OTLP gRPC", "address", *otlpGRPCAddress, "err", err)
			return 1
		}
		tlsConfig, err := traces.GRPCTLSConfig(*webConfig.WebConfigFile)
		if err != nil {
			logger.Error("cannot start", "err", err)
			return 1
		}
		opts := traces.GRPCServerOptions(int(traceLimits.MaxBodyBytes))
		if tlsConfig != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
		}
		srv := grpc.NewServer(opts...)
		traces.RegisterGRPC(srv, processor, traceMetrics, traceLimits)
		logger.Info("OTLP gRPC trace receiver listening", "address", lis.Addr().String())
		g.Add(func() error { return srv.Serve(lis) }, func(error) { stop.grpc(srv) })
	}
	addTraceServer := func(name, address, path string, h http.Handler) error {
		if address == "" {
			return nil
		}
		mux := http.NewServeMux()
		mux.Handle(path, h)
		srv := &http.Server{Addr: address, Handler: mux, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout, IdleTimeout: idleTimeout}
		lis, err := net.Listen("tcp", address)
		if err != nil {
			return fmt.Errorf("cannot listen for %s: %w", name, err)
		}
		logger.Info(name+" receiver listening", "address", lis.Addr().String())
		// The web config file (TLS, basic auth) applies here as on :9091.
		noSystemd := false
		flags := &web.FlagConfig{WebListenAddresses: &[]string{address}, WebSystemdSocket: &noSystemd, WebConfigFile: webConfig.WebConfigFile}
		g.Add(func() error {
			if err := web.ServeMultiple([]net.Listener{lis}, srv, flags, logger); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func(error) { stop.http(srv) })
		return nil
	}
	if err := addTraceServer("OTLP HTTP trace", *otlpHTTPAddress, traces.OTLPPath, traces.OTLPHandler(processor, traceMetrics, traceLimits)); err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	if err := addTraceServer("Zipkin", *zipkinAddress, traces.ZipkinPath, traces.ZipkinHandler(processor, traceMetrics, traceLimits)); err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	{
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		cancel := make(chan struct{})
		g.Add(func() error {
			for {
				select {
				case <-hup:
					_ = reload()
				case <-cancel:
					return nil
				}
			}
		}, func(error) { close(cancel) })
	}
	{
		term := make(chan os.Signal, 1)
		signal.Notify(term, os.Interrupt, syscall.SIGTERM)
		cancel := make(chan struct{})
		g.Add(func() error {
			select {
			case sig := <-term:
				logger.Info("received signal, exiting gracefully", "signal", sig.String())
			case <-quit:
				logger.Info("received termination request via web service, exiting gracefully")
			case <-cancel:
			}
			return nil
		}, func(error) { close(cancel) })
	}
	runErr := g.Run()
	store.Close()
	if db != nil {
		// Every acknowledged write is synced already; a failure here
		// leaves at most the log unfolded, which the next start folds.
		if err := db.Close(); err != nil {
			logger.Error("cannot close the persistence file cleanly", "err", err)
		}
	}
	if runErr != nil {
		logger.Error("pushrelay stopped with an error", "err", runErr)
		return 1
	}
	logger.Info("pushrelay stopped")
	return 0
}

// flagValues returns every flag but help and version with its value, for
// /api/v1/status.
func flagValues(app *kingpin.Application) map[string]string {
	flags := map[string]string{}
	for _, f := range app.Model().Flags {
		if f.Name == "help" || f.Name == "version" || f.Name == "help-long" || f.Name == "help-man" || f.Name == "completion-bash" || f.Name == "completion-script-bash" || f.Name == "completion-script-zsh" {
			continue
		}
		flags[f.Name] = f.Value.String()
	}
	return flags
}

func buildInfo() map[string]string {
	return map[string]string{
		"version":   version.Version,
		"revision":  version.Revision,
		"branch":    version.Branch,
		"buildUser": version.BuildUser,
		"buildDate": version.BuildDate,
		"goVersion": runtime.Version(),
	}
}
