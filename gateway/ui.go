package gateway

import (
	"bytes"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
)

//go:embed web/templates/*.html web/static/*
var webAssets embed.FS

// uiPages holds one template set per page, each the layout plus the page's
// "content" block.
var uiPages = map[string]*template.Template{
	"index":  template.Must(template.ParseFS(webAssets, "web/templates/layout.html", "web/templates/index.html")),
	"status": template.Must(template.ParseFS(webAssets, "web/templates/layout.html", "web/templates/status.html")),
	"spans":  template.Must(template.ParseFS(webAssets, "web/templates/layout.html", "web/templates/spans.html")),
}

// uiLabel is one name/value pair shown by the UI.
type uiLabel struct{ Name, Value string }

type uiFamily struct {
	Name, Type, Help, TimeISO, Text string
}

type uiGroup struct {
	ID, DeletePath       string
	Labels               []uiLabel
	PushTimeISO, PushAgo string
	Failed               bool
	FailureAgo           string
	TTL                  string
	Stale                bool
	Families             []uiFamily
}

// ServiceStats is what the span metrics page shows of one service.
type ServiceStats struct {
	Service string
	// Calls is the total of spans; CallsPerSecond and ErrorRatio cover the
	// recent past.
	Calls, CallsPerSecond, ErrorRatio float64
	// P50 and P95 are latency quantiles in seconds; NaN when unknown.
	P50, P95 float64
}

type uiService struct {
	Service, Rate, Errors, P50, P95, Calls string
	Failing                                bool
}

// sortedLabels returns m as name-sorted pairs.
func sortedLabels(m map[string]string) []uiLabel {
	out := make([]uiLabel, 0, len(m))
	for n, v := range m {
		out = append(out, uiLabel{n, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// groupPath returns the push URL path of a grouping, every value
// base64url-encoded so that any value round-trips.
func groupPath(g Grouping) string {
	var sb strings.Builder
	sb.WriteString("/metrics/job" + Base64Suffix + "/")
	sb.WriteString(encodeBase64(g["job"]))
	for _, l := range sortedLabels(g) {
		if l.Name == "job" {
			continue
		}
		fmt.Fprintf(&sb, "/%s%s/%s", l.Name, Base64Suffix, encodeBase64(l.Value))
	}
	return sb.String()
}

func encodeBase64(s string) string {
	if s == "" {
		return "="
	}
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// ago renders the time since t, rounded for people.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

func (a *api) render(w http.ResponseWriter, name string, data map[string]any) {
	data["Prefix"] = a.opts.RoutePrefix
	var page bytes.Buffer
	if err := uiPages[name].ExecuteTemplate(&page, "layout", data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(page.Bytes())
}

func (a *api) uiIndex(w http.ResponseWriter, _ *http.Request) {
	now := a.store.now()
	var groups []uiGroup
	for i, g := range a.store.Groups() {
		ug := uiGroup{
			ID:          fmt.Sprintf("group-%d", i),
			DeletePath:  groupPath(g.Grouping),
			Labels:      sortedLabels(g.Grouping),
			PushTimeISO: g.PushTime.UTC().Format(time.RFC3339),
			PushAgo:     ago(now, g.PushTime),
			Failed:      !g.LastPushSuccessful(),
			FailureAgo:  ago(now, g.FailureTime),
			Stale:       g.Stale,
		}
		if g.TTL > 0 {
			ug.TTL = g.TTL.String()
		}
		for _, f := range g.Families {
			var text bytes.Buffer
			if len(f.Family.Metric) > 0 {
				help := f.Family.Help
				f.Family.Help = nil
				_, _ = expfmt.MetricFamilyToText(&text, f.Family)
				f.Family.Help = help
			}
			ug.Families = append(ug.Families, uiFamily{
				Name:    f.Family.GetName(),
				Type:    strings.ToLower(f.Family.GetType().String()),
				Help:    f.Family.GetHelp(),
				TimeISO: f.Time.UTC().Format(time.RFC3339),
				Text:    text.String(),
			})
		}
		groups = append(groups, ug)
	}
	a.render(w, "index", map[string]any{"Title": "", "Groups": groups, "AdminEnabled": a.opts.EnableAdminAPI})
}

func (a *api) uiStatus(w http.ResponseWriter, _ *http.Request) {
	a.render(w, "status", map[string]any{
		"Title":     "Status",
		"Build":     sortedLabels(a.opts.BuildInfo),
		"Flags":     sortedLabels(a.opts.Flags),
		"StartTime": a.opts.StartTime.UTC().Format(time.RFC3339),
	})
}

func (a *api) uiSpans(w http.ResponseWriter, _ *http.Request) {
	var services []uiService
	if a.opts.Services != nil {
		for _, st := range a.opts.Services() {
			services = append(services, uiService{
				Service: st.Service,
				Rate:    strconv.FormatFloat(st.CallsPerSecond, 'f', 2, 64),
				Errors:  strconv.FormatFloat(100*st.ErrorRatio, 'f', 1, 64) + " %",
				P50:     formatSeconds(st.P50),
				P95:     formatSeconds(st.P95),
				Calls:   strconv.FormatFloat(st.Calls, 'f', -1, 64),
				Failing: st.ErrorRatio > 0,
			})
		}
	}
	a.render(w, "spans", map[string]any{"Title": "Span metrics", "Enabled": a.opts.Services != nil, "Services": services})
}

// formatSeconds renders a latency for people.
func formatSeconds(s float64) string {
	switch {
	case math.IsNaN(s):
		return "–"
	case s < 1:
		return strconv.FormatFloat(s*1000, 'f', 1, 64) + " ms"
	default:
		return strconv.FormatFloat(s, 'f', 2, 64) + " s"
	}
}

// uiDelete deletes the group named by the form's path and returns to the
// index page.
func (a *api) uiDelete(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.PostFormValue("path"), "/metrics/job")
	if !ok {
		http.Error(w, "path must start with /metrics/job", http.StatusBadRequest)
		return
	}
	g, err := ParseGrouping(rest)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := a.store.Delete(g); err != nil {
		http.Error(w, notStored("delete", err), http.StatusServiceUnavailable)
		return
	}
	http.Redirect(w, r, a.opts.RoutePrefix+"/", http.StatusSeeOther)
}

// uiWipe deletes every group and returns to the index page.
func (a *api) uiWipe(w http.ResponseWriter, r *http.Request) {
	if err := a.store.Wipe(); err != nil {
		http.Error(w, notStored("wipe", err), http.StatusServiceUnavailable)
		return
	}
	http.Redirect(w, r, a.opts.RoutePrefix+"/", http.StatusSeeOther)
}

// staticHandler serves the embedded CSS.
func staticHandler(prefix string) http.Handler {
	sub, err := fs.Sub(webAssets, "web/static")
	if err != nil {
		panic(err)
	}
	return http.StripPrefix(prefix+"/static/", http.FileServer(http.FS(sub)))
}
