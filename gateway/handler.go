package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/promslog"

	"github.com/pushrelay/pushrelay/persistence"
)

// HandlerOptions configures the HTTP API of the gateway.
type HandlerOptions struct {
	// RoutePrefix is prepended to every route; "" or "/" means none.
	RoutePrefix string
	// TelemetryPath is where the exposition is served, "/metrics" by
	// default.
	TelemetryPath string
	// EnableLifecycle enables PUT/POST /-/quit.
	EnableLifecycle bool
	// EnableAdminAPI enables PUT /api/v1/admin/wipe.
	EnableAdminAPI bool
	// DisableConsistencyCheck answers pushes with 202 as soon as they are
	// queued.
	DisableConsistencyCheck bool
	// MaxBodyBytes limits a push body, on the wire and decompressed;
	// DefaultMaxBodyBytes when zero.
	MaxBodyBytes int64
	// Flags and BuildInfo are shown by /api/v1/status.
	Flags     map[string]string
	BuildInfo map[string]string
	StartTime time.Time
	// Quit is called by /-/quit after the answer is sent.
	Quit func()
	// Reload is called by POST /-/reload (with EnableLifecycle) and
	// reloads the configuration file.
	Reload func() error
	// Registry holds the own metrics: it is exposed beside the groups and
	// receives the HTTP metrics.
	Registry *prometheus.Registry
	// Exposed are further gatherers exposed beside the groups, such as
	// span metrics.
	Exposed []prometheus.Gatherer
	// Services feeds the span metrics page; nil shows it as unavailable.
	Services func() []ServiceStats
	// Auth sets separate credentials for pushing, reading and
	// administration.
	Auth   Auth
	Logger *slog.Logger
}

type api struct {
	store   *Store
	opts    HandlerOptions
	logger  *slog.Logger
	metrics *httpMetrics
}

// NewHandler returns the gateway's HTTP API: push, delete, exposition, JSON
// API, health, lifecycle and admin endpoints, with the Pushgateway's paths,
// status codes and messages.
func NewHandler(store *Store, opts HandlerOptions) http.Handler {
	if opts.Logger == nil {
		opts.Logger = promslog.NewNopLogger()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.TelemetryPath == "" {
		opts.TelemetryPath = "/metrics"
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	opts.RoutePrefix = NormalizeRoutePrefix(opts.RoutePrefix)
	a := &api{store: store, opts: opts, logger: opts.Logger, metrics: newHTTPMetrics(opts.Registry)}
	p := opts.RoutePrefix

	r := mux.NewRouter()
	r.SkipClean(true)
	// templates holds the path templates of the routes, once registered.
	var templates []string
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if to, code := redirectTarget(r, req, p, templates); to != "" {
			http.Redirect(w, req, withPath(req.URL, to).String(), code)
			return
		}
		http.NotFound(w, req)
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		methodNotAllowed(w, req, allowedMethods(r, req))
	})

	m := a.metrics
	auth := newAuthenticator(opts.Auth)
	push, read, admin := func(h http.Handler) http.Handler { return auth.require(classPush, h) },
		func(h http.Handler) http.Handler { return auth.require(classScrape, h) },
		func(h http.Handler) http.Handler { return auth.require(classAdmin, h) }
	r.Handle(p+"/-/healthy", m.counted("healthy", http.HandlerFunc(a.health))).Methods(http.MethodGet)
	r.Handle(p+"/-/ready", m.counted("ready", http.HandlerFunc(a.health))).Methods(http.MethodGet)

	exposition := promhttp.InstrumentMetricHandler(opts.Registry, store.ExpositionHandler(append(prometheus.Gatherers{opts.Registry}, opts.Exposed...)))
	r.Handle(path.Join(p+"/", opts.TelemetryPath), read(exposition)).Methods(http.MethodGet)

	pushPrefix := p + "/metrics/job"
	put := push(m.push("push", a.pushHandler(true)))
	post := push(m.push("push", a.pushHandler(false)))
	del := push(m.counted("delete", http.HandlerFunc(a.delete)))
	r.MatcherFunc(func(req *http.Request, _ *mux.RouteMatch) bool {
		rest, ok := strings.CutPrefix(req.URL.Path, pushPrefix)
		return ok && (strings.HasPrefix(rest, "/") || strings.HasPrefix(rest, Base64Suffix+"/"))
	}).HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rest := strings.TrimPrefix(req.URL.Path, pushPrefix)
		pushMethod := req.Method == http.MethodPut || req.Method == http.MethodPost || req.Method == http.MethodDelete
		switch {
		case rest == "/" && pushMethod:
			// An empty job: redirect as the Pushgateway's router drops a
			// trailing slash, to a path that does not exist.
			http.Redirect(w, req, withPath(req.URL, strings.TrimSuffix(req.URL.Path, "/")).String(), http.StatusTemporaryRedirect)
			return
		case rest == "/" || rest == Base64Suffix+"/":
			http.NotFound(w, req)
			return
		}
		switch req.Method {
		case http.MethodPut:
			put.ServeHTTP(w, req)
		case http.MethodPost:
			post.ServeHTTP(w, req)
		case http.MethodDelete:
			del.ServeHTTP(w, req)
		default:
			methodNotAllowed(w, req, "DELETE, OPTIONS, POST, PUT")
		}
	})

	apiPrefix := p + "/api/v1"
	r.Handle(apiPrefix+"/metrics", read(m.counted("api/v1/metrics", cors(http.HandlerFunc(a.apiMetrics))))).Methods(http.MethodGet)
	r.Handle(apiPrefix+"/status", read(m.counted("api/v1/status", cors(http.HandlerFunc(a.apiStatus))))).Methods(http.MethodGet)
	if opts.EnableAdminAPI {
		r.Handle(apiPrefix+"/admin/wipe", admin(m.counted("wipe", http.HandlerFunc(a.wipe)))).Methods(http.MethodPut)
	}
	// A matcher, not Methods: other methods on unknown /api/v1 paths must
	// stay 404 rather than become 405.
	r.MatcherFunc(func(req *http.Request, _ *mux.RouteMatch) bool {
		return req.Method == http.MethodOptions && strings.HasPrefix(req.URL.Path, apiPrefix+"/")
	}).Handler(m.counted("api/v1/options", cors(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))))

	if opts.EnableLifecycle {
		r.Handle(p+"/-/quit", admin(http.HandlerFunc(a.quit))).Methods(http.MethodPut, http.MethodPost)
		r.Handle(p+"/-/reload", admin(http.HandlerFunc(a.reload))).Methods(http.MethodPut, http.MethodPost)
	} else {
		lifecycleDisabled := func(w http.ResponseWriter, _ *http.Request) {
			plainText(w, http.StatusForbidden, "Lifecycle API is not enabled.")
		}
		r.HandleFunc(p+"/-/quit", lifecycleDisabled).Methods(http.MethodPut, http.MethodPost)
		r.HandleFunc(p+"/-/reload", lifecycleDisabled).Methods(http.MethodPut, http.MethodPost)
	}
	r.HandleFunc("/-/quit", func(w http.ResponseWriter, _ *http.Request) {
		plainText(w, http.StatusMethodNotAllowed, "Only POST or PUT requests allowed.")
	}).Methods(http.MethodGet)

	r.Handle(p+"/", read(m.counted("status", http.HandlerFunc(a.uiIndex)))).Methods(http.MethodGet)
	r.Handle(p+"/status", read(m.counted("status", http.HandlerFunc(a.uiStatus)))).Methods(http.MethodGet)
	r.Handle(p+"/spans", read(m.counted("status", http.HandlerFunc(a.uiSpans)))).Methods(http.MethodGet)
	r.PathPrefix(p + "/static/").Handler(m.counted("static", staticHandler(p))).Methods(http.MethodGet)
	if opts.EnableAdminAPI {
		r.Handle(p+"/delete", admin(http.HandlerFunc(a.uiDelete))).Methods(http.MethodPost)
		r.Handle(p+"/wipe", admin(http.HandlerFunc(a.uiWipe))).Methods(http.MethodPost)
	}

	// The specific profiles first: mux matches routes in order.
	for name, h := range map[string]http.HandlerFunc{"cmdline": pprof.Cmdline, "profile": pprof.Profile, "symbol": pprof.Symbol, "trace": pprof.Trace} {
		r.Handle(p+"/debug/pprof/"+name, admin(h)).Methods(http.MethodGet)
	}
	r.PathPrefix(p + "/debug/pprof/").Handler(admin(http.HandlerFunc(pprof.Index))).Methods(http.MethodGet)
	_ = r.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		if t, err := route.GetPathTemplate(); err == nil {
			templates = append(templates, t)
		}
		return nil
	})
	return cleanPaths(r)
}

// redirectTarget returns the path and status code the Pushgateway
// redirects an unrouted request with, or "" for none; templates are those
// of r's routes. Its ServeMux sends the JSON API's root to its subtree
// with 301 for any method; its router, with 301 for a GET and 307 for
// other methods, takes the path without a trailing slash, or with one,
// when that has a route for the request's method, and else the path with
// the fixed parts of a route in the route's case (ASCII), slash or not.
// The JSON API's subtree is matched in exact case, as ServeMux matches it.
func redirectTarget(r *mux.Router, req *http.Request, prefix string, templates []string) (string, int) {
	p, api, pushPrefix := req.URL.Path, prefix+"/api/v1", prefix+"/metrics/job"
	if p == api {
		return p + "/", http.StatusMovedPermanently
	}
	code := http.StatusMovedPermanently
	if req.Method != http.MethodGet {
		code = http.StatusTemporaryRedirect
	}
	routed := func(path string) bool {
		probe := *req
		probe.URL = withPath(req.URL, path)
		var match mux.RouteMatch
		return r.Match(&probe, &match) && match.MatchErr == nil
	}
	if trimmed := strings.TrimSuffix(p, "/"); trimmed != p && trimmed != "" && routed(trimmed) {
		return trimmed, code
	}
	if !strings.HasSuffix(p, "/") && p != pushPrefix && p != pushPrefix+Base64Suffix && routed(p+"/") {
		return p + "/", code
	}
	// Templates ending in a slash are prefixes too (the UI root p+"/" is
	// one), and so are the push routes, with a job.
	var prefixes []string
	if req.Method == http.MethodPut || req.Method == http.MethodPost || req.Method == http.MethodDelete {
		prefixes = append(prefixes, pushPrefix+"/", pushPrefix+Base64Suffix+"/")
	}
	inAPI := strings.HasPrefix(p, api+"/")
	for _, t := range templates {
		if strings.HasPrefix(t, api+"/") != inAPI {
			continue
		}
		if t != p && equalFoldASCII(strings.TrimSuffix(p, "/"), strings.TrimSuffix(t, "/")) && routed(t) {
			return t, code
		}
		if strings.HasSuffix(t, "/") {
			prefixes = append(prefixes, t)
		}
	}
	for _, f := range prefixes {
		if len(p) > len(f) && equalFoldASCII(p[:len(f)], f) {
			if to := f + p[len(f):]; to != p && routed(to) {
				return to, code
			}
		}
	}
	return "", 0
}

// withPath returns a copy of u with path as its path.
func withPath(u *url.URL, path string) *url.URL {
	c := *u
	c.Path, c.RawPath = path, ""
	return &c
}

// equalFoldASCII reports whether a and b are equal but for the case of
// ASCII letters.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// NormalizeRoutePrefix returns prefix with a leading and without a trailing
// slash; "" and "/" become "".
func NormalizeRoutePrefix(prefix string) string {
	prefix = strings.TrimRight(prefix, "/")
	if prefix != "" && !strings.HasPrefix(prefix, "/") {
		prefix = "/" + prefix
	}
	return prefix
}

// cleanPaths redirects a path with empty or dot segments to its clean form,
// keeping a trailing slash, as the Pushgateway's router does.
func cleanPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p == "" || p[0] != '/' {
			p = "/" + p
		}
		cleaned := path.Clean(p)
		if strings.HasSuffix(p, "/") && cleaned != "/" {
			cleaned += "/"
		}
		if cleaned != p {
			u := *r.URL
			u.Path = cleaned
			u.RawPath = ""
			http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// plainText answers with msg as it is, without the newline http.Error adds,
// as the Pushgateway's lifecycle handlers do.
func plainText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg)
}

// methodNotAllowed answers a request whose method the path does not take,
// as the Pushgateway's router does: OPTIONS gets 200 and any other method
// 405, both with the Allow header allow.
func methodNotAllowed(w http.ResponseWriter, req *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	if req.Method == http.MethodOptions {
		return
	}
	http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
}

// probedMethods are the methods allowedMethods tries.
var probedMethods = []string{http.MethodDelete, http.MethodGet, http.MethodHead, http.MethodPatch, http.MethodPost, http.MethodPut}

// allowedMethods returns the Allow header for req's path: the methods r
// routes there, and OPTIONS.
func allowedMethods(r *mux.Router, req *http.Request) string {
	var allowed []string
	for _, m := range probedMethods {
		probe := *req
		probe.Method = m
		var match mux.RouteMatch
		if r.Match(&probe, &match) && match.MatchErr == nil {
			allowed = append(allowed, m)
		}
	}
	allowed = append(allowed, http.MethodOptions)
	slices.Sort(allowed)
	return strings.Join(allowed, ", ")
}

func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setCORS(w)
		next.ServeHTTP(w, r)
	})
}

// grouping parses the grouping labels of a push or delete URL.
func (a *api) grouping(r *http.Request) (Grouping, error) {
	return ParseGrouping(strings.TrimPrefix(r.URL.Path, a.opts.RoutePrefix+"/metrics/job"))
}

func (a *api) pushHandler(replace bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g, err := a.grouping(r)
		if err != nil {
			a.logger.Debug("invalid push URL", "url", r.URL.Path, "err", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body, err := decodeBody(w, r, a.opts.MaxBodyBytes)
		var mfs map[string]*parsedFamily
		var text *textBody
		if err == nil {
			contentType := r.Header.Get("Content-Type")
			if isDelimitedProtobuf(contentType) {
				mfs, err = parseBody(body, contentType)
			} else {
				var buf *bytes.Buffer
				buf, err = readBody(body)
				defer putBody(buf)
				if err == nil {
					text, mfs, err = a.store.prepareTextOrParse(g, buf.Bytes())
				}
			}
		}
		if err != nil {
			a.logger.Debug("cannot parse push body", "source", r.RemoteAddr, "err", err)
			code := http.StatusBadRequest
			var tooLarge *BodyTooLargeError
			if errors.As(err, &tooLarge) {
				code, err = http.StatusRequestEntityTooLarge, tooLarge
			}
			http.Error(w, err.Error(), code)
			return
		}
		ttl, err := ttlHeader(r)
		if err != nil {
			a.logger.Debug("invalid TTL header", "source", r.RemoteAddr, "err", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		check := !a.opts.DisableConsistencyCheck
		if text != nil {
			err = a.store.submitText(g, text, replace, check, ttl)
		} else {
			err = a.store.push(g, mfs, replace, check, ttl)
		}
		var rejected *RejectedError
		var persistErr *PersistError
		var limitErr *LimitError
		switch {
		case err == nil && !check:
			w.WriteHeader(http.StatusAccepted)
		case err == nil:
			// 200 with an empty body, as the Pushgateway answers.
		case errors.As(err, &rejected):
			a.logger.Error("pushed metrics are invalid or inconsistent with existing metrics", "method", r.Method, "source", r.RemoteAddr, "group", g, "err", err)
			http.Error(w, fmt.Sprintf("pushed metrics are invalid or inconsistent with existing metrics: %v", err), http.StatusBadRequest)
		case errors.As(err, &limitErr):
			a.logger.Debug("push over a limit", "source", r.RemoteAddr, "group", g, "err", err)
			http.Error(w, err.Error(), limitErr.Status)
		case errors.As(err, &persistErr):
			http.Error(w, notStored("push", err), http.StatusServiceUnavailable)
		default:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
}

// TTLHeader is the request header that sets the TTL of the pushed group.
const TTLHeader = "X-Pushrelay-TTL"

// ttlHeader returns the TTL a push asks for, nil when it names none.
func ttlHeader(r *http.Request) (*time.Duration, error) {
	values := r.Header.Values(TTLHeader)
	if len(values) == 0 {
		return nil, nil
	}
	v := strings.TrimSpace(values[0])
	if v == "0" {
		var zero time.Duration
		return &zero, nil
	}
	d, err := time.ParseDuration(v)
	if err == nil && d < 0 {
		err = errors.New("must not be negative")
	}
	if err != nil {
		return nil, fmt.Errorf("invalid %s header %q: %v", TTLHeader, values[0], err)
	}
	return &d, nil
}

// notStored is the answer to a write that failed with err: not stored, or
// kept but not synced when the file holds it (persistence.ErrUnsynced).
func notStored(write string, err error) string {
	if errors.Is(err, persistence.ErrUnsynced) {
		return fmt.Sprintf("%s kept but not synced to disk: %v", write, err)
	}
	return fmt.Sprintf("%s not stored: %v", write, err)
}

func (a *api) delete(w http.ResponseWriter, r *http.Request) {
	g, err := a.grouping(r)
	if err != nil {
		a.logger.Debug("invalid delete URL", "url", r.URL.Path, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := a.store.Delete(g); err != nil {
		http.Error(w, notStored("delete", err), http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (a *api) wipe(w http.ResponseWriter, _ *http.Request) {
	if err := a.store.Wipe(); err != nil {
		http.Error(w, notStored("wipe", err), http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (a *api) health(w http.ResponseWriter, _ *http.Request) {
	if err := a.store.Healthy(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write([]byte("OK"))
}

func (a *api) quit(w http.ResponseWriter, _ *http.Request) {
	_, _ = fmt.Fprint(w, "Requesting termination... Goodbye!")
	if a.opts.Quit != nil {
		go a.opts.Quit()
	}
}

func (a *api) reload(w http.ResponseWriter, _ *http.Request) {
	if a.opts.Reload == nil {
		return
	}
	if err := a.opts.Reload(); err != nil {
		http.Error(w, fmt.Sprintf("failed to reload config: %v", err), http.StatusInternalServerError)
	}
}

func (a *api) apiMetrics(w http.ResponseWriter, _ *http.Request) {
	respondJSON(w, apiGroups(a.store.Groups()))
}

func (a *api) apiStatus(w http.ResponseWriter, _ *http.Request) {
	respondJSON(w, map[string]any{
		"flags":             a.opts.Flags,
		"start_time":        a.opts.StartTime,
		"build_information": a.opts.BuildInfo,
	})
}
