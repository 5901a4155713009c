package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// obj is a JSON object as encoding/json decodes it into an any.
type obj = map[string]any

// apiGroup is one element of the data array of /api/v1/metrics.
type apiGroup struct {
	Labels             map[string]string
	LastPushSuccessful bool
	// Families maps a metric name to its entry, push_time_seconds and
	// push_failure_time_seconds included.
	Families map[string]apiFamily
	// Extra holds keys whose value is not a family object; the Pushgateway
	// has none.
	Extra map[string]string
}

// apiFamily is the entry of one metric name in an apiGroup.
type apiFamily struct {
	TimeStamp time.Time `json:"time_stamp"`
	Type      string    `json:"type"`
	Help      string    `json:"help"`
	// Metrics are kept as decoded JSON so that tests see the exact shape.
	Metrics []obj `json:"metrics"`
}

func (g *apiGroup) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	g.Families = map[string]apiFamily{}
	for k, v := range raw {
		var err error
		switch k {
		case "labels":
			err = json.Unmarshal(v, &g.Labels)
		case "last_push_successful":
			err = json.Unmarshal(v, &g.LastPushSuccessful)
		default:
			if !bytes.HasPrefix(bytes.TrimSpace(v), []byte("{")) {
				if g.Extra == nil {
					g.Extra = map[string]string{}
				}
				g.Extra[k] = string(v)
				continue
			}
			var f apiFamily
			err = json.Unmarshal(v, &f)
			g.Families[k] = f
		}
		if err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
	}
	return nil
}

// getGroups returns the data of GET /api/v1/metrics.
func getGroups(t *testing.T, p *process) []apiGroup {
	t.Helper()
	r := do(t, http.MethodGet, p.url+"/api/v1/metrics", nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var env struct {
		Status string     `json:"status"`
		Data   []apiGroup `json:"data"`
	}
	require.NoError(t, json.Unmarshal(r.body, &env), "%s", r.body)
	require.Equal(t, "success", env.Status)
	require.NotNil(t, env.Data, "data must be an array, never null")
	return env.Data
}

// findGroup returns the group with exactly the grouping labels, or nil.
func findGroup(groups []apiGroup, labels map[string]string) *apiGroup {
	for i := range groups {
		if equalLabels(groups[i].Labels, labels) {
			return &groups[i]
		}
	}
	return nil
}

func equalLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// requireGroup returns the group with the grouping labels or fails.
func requireGroup(t *testing.T, groups []apiGroup, labels map[string]string) *apiGroup {
	t.Helper()
	g := findGroup(groups, labels)
	require.NotNil(t, g, "no group %v among %d groups", labels, len(groups))
	return g
}

// pushTime returns the push_time_seconds (or push_failure_time_seconds) of
// a group as a float, checking that the family has the one expected series.
func (g *apiGroup) timeValue(t *testing.T, name string) float64 {
	t.Helper()
	f, ok := g.Families[name]
	require.True(t, ok, "group %v has no %s", g.Labels, name)
	require.Equal(t, "GAUGE", f.Type)
	require.Len(t, f.Metrics, 1)
	var v float64
	_, err := fmt.Sscan(f.Metrics[0]["value"].(string), &v)
	require.NoError(t, err)
	return v
}

// seriesLabels returns the labels every series of a group carries: the
// grouping labels plus instance="" when the grouping has no instance.
func seriesLabels(grouping map[string]string, extra ...string) obj {
	l := obj{"instance": ""}
	for k, v := range grouping {
		l[k] = v
	}
	for i := 0; i+1 < len(extra); i += 2 {
		l[extra[i]] = extra[i+1]
	}
	return l
}

// requireBetween checks that a Unix time in seconds lies within the
// interval a client observed around the request.
func requireBetween(t *testing.T, v float64, from, to time.Time, msgAndArgs ...any) {
	t.Helper()
	const slack = 2e-3 // float seconds lose sub-microsecond precision
	require.GreaterOrEqual(t, v, float64(from.UnixNano())/1e9-slack, msgAndArgs...)
	require.LessOrEqual(t, v, float64(to.UnixNano())/1e9+slack, msgAndArgs...)
}

// scrape returns GET /metrics as text and parsed.
func scrape(t *testing.T, p *process) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	r := do(t, http.MethodGet, p.url+"/metrics", nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	return string(r.body), parseText(t, r.body)
}

func parseText(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	require.NoError(t, err, "%s", b)
	return mfs
}

// requireLines checks that every line of want occurs in the exposition.
func requireLines(t *testing.T, exposition string, want ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, l := range strings.Split(exposition, "\n") {
		have[l] = true
	}
	var missing []string
	for _, l := range want {
		if !have[l] {
			missing = append(missing, l)
		}
	}
	require.Empty(t, missing, "lines missing from the exposition:\n%s", exposition)
}

// linesContaining returns the exposition lines containing s, sorted.
func linesContaining(exposition, s string) []string {
	var out []string
	for _, l := range strings.Split(exposition, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// sortedKeys returns the keys of m, sorted.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
