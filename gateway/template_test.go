package gateway

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/persistence"
)

// parsedFamilies builds body into families the way a push without a
// template does.
func parsedFamilies(t *testing.T, g Grouping, body []byte, now time.Time) map[string]*family {
	t.Helper()
	parsed, ok := parseTextFast(body)
	require.True(t, ok, "the fast parser takes %q", body)
	s := &Store{}
	req := s.newPushRequest(g, g.Key(), true, nil, now, nil)
	require.NoError(t, s.addParsed(req, parsed))
	return req.families
}

// requireSameFamilies fails unless want and got hold the same families with
// the same series, byte for byte.
func requireSameFamilies(t *testing.T, want, got map[string]*family) {
	t.Helper()
	require.Len(t, got, len(want))
	for name, w := range want {
		g := got[name]
		require.NotNil(t, g, name)
		require.Equal(t, [4]any{w.name, w.help, w.hasHelp, w.typ}, [4]any{g.name, g.help, g.hasHelp, g.typ}, name)
		require.True(t, w.time.Equal(g.time), name)
		require.Equal(t, w.invalid, g.invalid, name)
		require.Len(t, g.series, len(w.series), name)
		for i, ws := range w.series {
			gs := g.series[i]
			require.Equal(t, ws.key, gs.key, name)
			require.Equal(t, ws.groupKey, gs.groupKey, name)
			require.Equal(t, ws.id, gs.id, name)
			require.Equal(t, [4]bool{ws.simple, ws.integral, ws.classic, ws.floatCounts}, [4]bool{gs.simple, gs.integral, gs.classic, gs.floatCounts}, name)
			require.Equal(t, string(ws.text()), string(gs.text()), name)
			require.Equal(t, ws.metric(), gs.metric(), name)
		}
	}
}

// templated prepares body for a group whose template was made from first,
// and returns the families submitText would push, whether the template was
// used and the names of the families that were parsed again.
func templated(t *testing.T, g Grouping, first, body []byte, now time.Time) (families map[string]*family, used bool, parsed []string) {
	t.Helper()
	s, err := NewStore(StoreOptions{Now: func() time.Time { return now }})
	require.NoError(t, err)
	defer s.Close()
	tb, ok := s.prepareText(g.Key(), first)
	require.True(t, ok)
	if err := s.submitText(g, tb, true, true, nil); err != nil {
		var rejected *RejectedError
		require.ErrorAs(t, err, &rejected, "only the consistency check may refuse the first body")
	}
	tb, ok = s.prepareText(g.Key(), body)
	require.True(t, ok)
	req := s.newPushRequest(g, g.Key(), true, nil, now, nil)
	for _, f := range tb.families {
		req.families[f.name] = f
	}
	require.NoError(t, s.addParsed(req, tb.parsed))
	return req.families, tb.template != nil, slices.Sorted(maps.Keys(tb.parsed))
}

// withValues rewrites every sample value of body with values from next.
func withValues(t *testing.T, body []byte, next func() string) []byte {
	t.Helper()
	var lines []textLine
	_, ok := parseTextLines(body, &lines)
	require.True(t, ok)
	var out []byte
	start := 0
	for _, l := range lines {
		if l.value < 0 {
			out = append(out, body[start:l.end+1]...)
		} else {
			out = append(out, body[start:l.value]...)
			out = append(out, next()...)
			out = append(out, '\n')
		}
		start = l.end + 1
	}
	return out
}

func TestTemplateMatchesParsing(t *testing.T) {
	g := Grouping{"job": "j", "instance": "i-1"}
	now := time.Unix(1700000000, 0)
	scenarios := map[string]struct {
		body   string
		values []string
		// parsed are the families the template leaves to the parser.
		parsed []string
	}{
		"bench body": {string(benchBody(1)), nil, nil},
		"counters and gauges": {
			"# HELP c_total A \\\\ help\\nline.\n# TYPE c_total counter\nc_total{a=\"x\\\"y\"} 1\nc_total{a=\"\\\\\"} 2\n# comment\n\ng 3\nu{job=\"pushed\",instance=\"kept\"} 4\n",
			[]string{"1e300", "-0", "NaN", "+Inf"}, nil,
		},
		"values in every form": {
			"# TYPE g gauge\ng{k=\"1\"} 1\ng{k=\"2\"} 2\ng{k=\"3\"} 3\ng{k=\"4\"} 4\ng{k=\"5\"} 5\n",
			[]string{"-Inf", "0.1", "1.000", "12345678901234567890", "5e-324"}, nil,
		},
		"summary and histogram between simple families": {
			"# TYPE a gauge\na 1\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n# TYPE h histogram\nh_bucket{le=\"1\",x=\"y\"} 1\nh_bucket{le=\"+Inf\",x=\"y\"} 2\nh_sum{x=\"y\"} 3\nh_count{x=\"y\"} 2\nb 2\n",
			[]string{"4", "5", "6", "9", "1", "1", "2.5", "1", "7"}, nil,
		},
		"histograms and summaries of several series, interleaved": {
			"# HELP h Help.\n# TYPE h histogram\nh_bucket{a=\"1\",le=\"0.5\"} 1\nh_bucket{a=\"2\",le=\"0.5\"} 3\nh_bucket{le=\"+Inf\",a=\"1\"} 2\nh_sum{a=\"1\"} 3\nh_count{a=\"1\"} 2\nh_bucket{a=\"2\",le=\"+Inf\"} 4\nh_count{a=\"2\"} 4\nh_sum{a=\"2\"} -1.5\n" +
				"# TYPE s summary\ns{b=\"x\",quantile=\"0.99\"} 7\ns_sum{b=\"x\"} 1e-3\ns_count{b=\"x\"} 12\ns{b=\"y\",quantile=\"0.5\"} 1\ns{b=\"y\",quantile=\"0.9\"} 2\ns_sum{b=\"y\"} 3\ns_count{b=\"y\"} 4\n",
			[]string{"0", "-0", "1e3", "NaN", "5", "128", "2097152", "+Inf", "NaN", "-Inf", "0", "0", "-0", "1e300", "300"}, nil,
		},
		"histogram without +Inf bucket": {
			"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 1\nh_sum 3\nh_count 2\n",
			[]string{"5", "6", "7.5", "9"}, nil,
		},
		"summaries as the Python client pushes them": {
			"# HELP s Help.\n# TYPE s summary\ns_count 3\ns_sum 2.5\n# HELP s_created Help.\n# TYPE s_created gauge\ns_created 1.7e+09\n",
			nil, nil,
		},
		"count of 2^53 - 1": {
			"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
			[]string{"9007199254740991", "0", "9007199254740991"}, nil,
		},
		"histogram without sum": {
			"# TYPE g gauge\ng 1\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",
			nil, []string{"h"},
		},
		"summary with a quantile twice": {
			"# TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"0.5\"} 2\ns_sum 2\ns_count 3\n",
			nil, nil,
		},
		"summary with its sum twice": {
			"# TYPE s summary\ns_sum 2\ns_sum 3\ns_count 3\n",
			nil, []string{"s"},
		},
		"histogram with its count twice": {
			"# TYPE g gauge\ng 1\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 1\nh_count 2\n",
			[]string{"5", "2", "3", "1.5", "2"}, []string{"h"},
		},
		"histogram count twice, interleaved with another series": {
			"# TYPE h histogram\nh_count{a=\"1\"} 1\nh_bucket{a=\"2\",le=\"+Inf\"} 2\nh_sum{a=\"2\"} 3\nh_count{a=\"2\"} 2\nh_bucket{a=\"1\",le=\"+Inf\"} 2\nh_sum{a=\"1\"} 3\nh_count{a=\"1\"} 2\n",
			[]string{"0.25"}, []string{"h"},
		},
		"histogram and summary with grouping labels and labels in any order": {
			"# TYPE h histogram\nh_bucket{job=\"x\",b=\"2\",a=\"1\",le=\"1\"} 1\nh_bucket{a=\"1\",job=\"x\",b=\"2\",le=\"+Inf\"} 1\nh_sum{b=\"2\",a=\"1\",job=\"x\"} 3\nh_count{a=\"1\",b=\"2\",job=\"x\"} 2\n" +
				"# TYPE s summary\ns{instance=\"other\",quantile=\"-0\"} 1\ns_sum{instance=\"other\"} 1\ns_count{instance=\"other\"} 1\n",
			[]string{"4", "5", "-0", "6", "-0", "1e308", "9007199254740991"}, nil,
		},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			first := []byte(sc.body)
			n := 0
			next := withValues(t, first, func() string {
				if n < len(sc.values) {
					n++
					return sc.values[n-1]
				}
				n++
				return strconv.Itoa(1000 + n)
			})
			later := now.Add(time.Minute)
			got, used, parsed := templated(t, g, first, next, later)
			require.True(t, used, "the template takes a body that only changed its values")
			require.Equal(t, sc.parsed, parsed)
			requireSameFamilies(t, parsedFamilies(t, g, next, later), got)
		})
	}
}

func TestTemplateFallsBack(t *testing.T) {
	g := Grouping{"job": "j"}
	now := time.Unix(1700000000, 0)
	first := "# HELP m Help.\n# TYPE m counter\nm{a=\"1\"} 1\nm{a=\"2\"} 2\n"
	scenarios := map[string]string{
		"other label value": "# HELP m Help.\n# TYPE m counter\nm{a=\"1\"} 1\nm{a=\"3\"} 2\n",
		"other help":        "# HELP m Other.\n# TYPE m counter\nm{a=\"1\"} 1\nm{a=\"2\"} 2\n",
		"one more line":     "# HELP m Help.\n# TYPE m counter\nm{a=\"1\"} 1\nm{a=\"2\"} 2\nm{a=\"4\"} 4\n",
		"one line less":     "# HELP m Help.\n# TYPE m counter\nm{a=\"1\"} 1\n",
		"empty":             "",
	}
	for name, body := range scenarios {
		t.Run(name, func(t *testing.T) {
			got, used, _ := templated(t, g, []byte(first), []byte(body), now)
			require.False(t, used)
			requireSameFamilies(t, parsedFamilies(t, g, []byte(body), now), got)
		})
	}
	// Counts a histogram template cannot write make the whole body parsed.
	histogram := "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n# TYPE s summary\ns_sum 1\ns_count 1\n"
	for name, body := range map[string]string{
		"fractional bucket":   "# TYPE h histogram\nh_bucket{le=\"1\"} 0.5\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n# TYPE s summary\ns_sum 1\ns_count 1\n",
		"fractional count":    "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 1.5\n# TYPE s summary\ns_sum 1\ns_count 1\n",
		"count of 2^53":       "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 9007199254740992\n# TYPE s summary\ns_sum 1\ns_count 1\n",
		"bucket of 2^53":      "# TYPE h histogram\nh_bucket{le=\"1\"} 9007199254740992\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n# TYPE s summary\ns_sum 1\ns_count 1\n",
		"large summary count": "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n# TYPE s summary\ns_sum 1\ns_count 1e16\n",
	} {
		t.Run(name, func(t *testing.T) {
			got, used, _ := templated(t, g, []byte(histogram), []byte(body), now)
			require.False(t, used)
			requireSameFamilies(t, parsedFamilies(t, g, []byte(body), now), got)
		})
	}
	for name, sc := range map[string]struct {
		body, err string
	}{
		"value that is not a number": {"# HELP m Help.\n# TYPE m counter\nm{a=\"1\"} 1\nm{a=\"2\"} x\n", `text format parsing error in line 4: expected float as value, got "x"`},
		"value after two spaces":     {"# HELP m Help.\n# TYPE m counter\nm{a=\"1\"} 1\nm{a=\"2\"}  2\n", ""},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := NewStore(StoreOptions{})
			require.NoError(t, err)
			defer s.Close()
			tb, ok := s.prepareText(g.Key(), []byte(first))
			require.True(t, ok)
			require.NoError(t, s.submitText(g, tb, true, true, nil))
			_, ok = s.prepareText(g.Key(), []byte(sc.body))
			require.False(t, ok, "neither the template nor the fast parser takes it")
			tb, mfs, err := s.prepareTextOrParse(g, []byte(sc.body))
			require.Nil(t, tb)
			if sc.err != "" {
				require.EqualError(t, err, sc.err)
				return
			}
			require.NoError(t, err, "expfmt takes it")
			require.Len(t, mfs, 1)
		})
	}
	t.Run("negative count on a repeated count line", func(t *testing.T) {
		s, err := NewStore(StoreOptions{})
		require.NoError(t, err)
		defer s.Close()
		first := "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 1\nh_count 2\n"
		tb, ok := s.prepareText(g.Key(), []byte(first))
		require.True(t, ok)
		require.NoError(t, s.submitText(g, tb, true, true, nil))
		body := []byte(strings.Replace(first, "h_count 1\n", "h_count -1\n", 1))
		_, ok = s.prepareText(g.Key(), body)
		require.False(t, ok, "neither the template nor the fast parser takes it")
		_, _, err = s.prepareTextOrParse(g, body)
		require.ErrorContains(t, err, "negative count")
	})
	t.Run("template of another group", func(t *testing.T) {
		other := Grouping{"job": "k"}
		s, err := NewStore(StoreOptions{Now: func() time.Time { return now }})
		require.NoError(t, err)
		defer s.Close()
		tb, ok := s.prepareText(g.Key(), []byte(first))
		require.True(t, ok)
		require.NoError(t, s.submitText(g, tb, true, true, nil))
		tb, ok = s.prepareText(other.Key(), []byte(first))
		require.True(t, ok)
		require.Nil(t, tb.template)
	})
	t.Run("delete drops the template", func(t *testing.T) {
		s, err := NewStore(StoreOptions{})
		require.NoError(t, err)
		defer s.Close()
		tb, _ := s.prepareText(g.Key(), []byte(first))
		require.NoError(t, s.submitText(g, tb, true, true, nil))
		_, found := s.templates.Load(g.Key())
		require.True(t, found)
		require.NoError(t, s.Delete(g))
		_, found = s.templates.Load(g.Key())
		require.False(t, found)
	})
}

// FuzzTemplate makes a template from a body, gives the body new values and
// checks that the template encodes it exactly as parsing does.
func FuzzTemplate(f *testing.F) {
	for _, s := range textParseSeeds {
		f.Add([]byte(s), uint64(1))
	}
	f.Add(benchBody(0), uint64(2))
	f.Add([]byte("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 1\nh_count 2\n# TYPE s summary\ns_count 1\ns_sum 2\ns_count 3\n"), uint64(3))
	f.Fuzz(func(t *testing.T, body []byte, seed uint64) {
		if len(body) > 1<<14 {
			return
		}
		if _, ok := parseTextFast(body); !ok || bytes.Contains(body, []byte(pushTimeName)) || bytes.Contains(body, []byte(pushFailureTimeName)) {
			return
		}
		g := Grouping{"job": "j", "instance": "x"}
		now := time.Unix(1700000000, 0)
		if fams := parsedFamilies(t, g, body, now); len(fams) == 0 {
			return
		}
		rng := rand.New(rand.NewPCG(seed, 7))
		next := withValues(t, body, func() string {
			switch rng.IntN(5) {
			case 0:
				return strconv.Itoa(rng.IntN(1000))
			case 1:
				return fmt.Sprint(rng.Float64() * 1e6)
			case 2:
				return "-" + strconv.Itoa(rng.IntN(10))
			case 3:
				return []string{"NaN", "+Inf", "-Inf", "0", "1e-9"}[rng.IntN(5)]
			default:
				return strconv.FormatFloat(rng.NormFloat64(), 'e', -1, 64)
			}
		})
		if _, ok := parseTextFast(next); !ok {
			return
		}
		got, _, _ := templated(t, g, body, next, now)
		requireSameFamilies(t, parsedFamilies(t, g, next, now), got)
	})
}

// TestTemplateLinesShared checks that groups pushing the same body share
// the description of its lines.
func TestTemplateLinesShared(t *testing.T) {
	s, err := NewStore(StoreOptions{})
	require.NoError(t, err)
	defer s.Close()
	body := benchBody(3)
	var lines []*templateLines
	for i := range 2 {
		g := benchGrouping(i)
		tb, ok := s.prepareText(g.Key(), body)
		require.True(t, ok)
		require.NoError(t, s.submitText(g, tb, true, true, nil))
		v, found := s.templates.Load(g.Key())
		require.True(t, found)
		lines = append(lines, v.(*bodyTemplate).lines)
	}
	require.Len(t, lines[0].lines, strings.Count(string(body), "\n"))
	require.Same(t, lines[0], lines[1])
}

// TestTemplateLinesForgotten checks that shared line lists do not outlive
// the templates using them.
func TestTemplateLinesForgotten(t *testing.T) {
	ll := &lineLists{m: map[uint64]weak.Pointer[templateLines]{}}
	lines := []templateLine{{hash: 1, length: 3}, {hash: 2, length: 5, sample: true}}
	kept := ll.share(lines, []string{"a"})
	require.Same(t, kept, ll.share(slices.Clone(lines), []string{"a"}), "an equal list is shared")
	other := ll.share([]templateLine{{hash: 3, length: 1}}, nil)
	require.NotSame(t, kept, other)
	ll.Lock()
	require.Len(t, ll.m, 2)
	ll.Unlock()
	runtime.KeepAlive(kept)
	runtime.KeepAlive(other)
	require.Eventually(t, func() bool {
		runtime.GC()
		ll.Lock()
		defer ll.Unlock()
		return len(ll.m) == 0
	}, 10*time.Second, 10*time.Millisecond, "lists no template refers to are dropped")
}

// TestTemplateOnlyForAppliedPushes checks that a group has a body template
// only while it exists: not after a queued push the writer refused, and
// not after the group was deleted.
func TestTemplateOnlyForAppliedPushes(t *testing.T) {
	s, err := NewStore(StoreOptions{Limits: Limits{MaxGroups: 1}})
	require.NoError(t, err)
	defer s.Close()
	body := benchBody(1)
	push := func(i int, wait bool) error {
		g := benchGrouping(i)
		tb, ok := s.prepareText(g.Key(), body)
		require.True(t, ok)
		return s.submitText(g, tb, true, wait, nil)
	}
	hasTemplate := func(i int) bool {
		_, ok := s.templates.Load(benchGrouping(i).Key())
		return ok
	}
	require.NoError(t, push(0, true))
	require.True(t, hasTemplate(0))

	// Queued without waiting, as with --push.disable-consistency-check;
	// the writer refuses it: one group is the limit.
	require.NoError(t, push(1, false))
	require.NoError(t, push(0, true), "a waited write after it flushes the queue")
	require.False(t, hasTemplate(1), "a refused push leaves no template")

	require.NoError(t, s.Delete(benchGrouping(0)))
	require.False(t, hasTemplate(0), "a deleted group has no template")
}

// TestPushTimeFromTemplate checks that push_time_seconds written from the
// previous push's family, as a templated push does, has the bytes
// timestampFamily builds, for groupings and times whose values format to
// different lengths.
func TestPushTimeFromTemplate(t *testing.T) {
	groupings := map[string]Grouping{
		"job only":      {"job": "j"},
		"instance":      {"job": "batch", "instance": "host:9100"},
		"empty value":   {"job": "j", "x": ""},
		"quoted values": {"job": "a\"b\\c\nd", "unicode": "vàlue ✓"},
	}
	times := []time.Time{
		time.Unix(1_700_000_000, 0),
		time.Unix(1_700_000_001, 123_456_789),
		time.Unix(1, 1),
		time.Unix(9_999_999_999, 999_999_999),
		time.Unix(0, 0).Add(time.Millisecond),
	}
	for name, g := range groupings {
		t.Run(name, func(t *testing.T) {
			key := g.Key()
			prev := timestampFamily(pushTimeName, pushTimeHelp, g, key, times[0], times[0])
			for _, now := range times[1:] {
				got := prev.withTimestamp(now, now)
				want := timestampFamily(pushTimeName, pushTimeHelp, g, key, now, now)
				requireSameFamilies(t, map[string]*family{pushTimeName: want}, map[string]*family{pushTimeName: got})
				prev = got
			}
		})
	}

	// Through the store: the second push of a body takes the template
	// path and writes its push time from the first push's.
	g := Grouping{"job": "j", "instance": "i"}
	now := times[0]
	s, err := NewStore(StoreOptions{Now: func() time.Time { return now }})
	require.NoError(t, err)
	defer s.Close()
	for i, at := range times[1:3] {
		now = at
		tb, ok := s.prepareText(g.Key(), []byte(fmt.Sprintf("m %d\n", i)))
		require.True(t, ok)
		require.Equal(t, i > 0, tb.template != nil, "push %d uses the template", i)
		require.NoError(t, s.submitText(g, tb, true, true, nil))
		s.mu.RLock()
		got := s.groups[g.Key()].families[pushTimeName]
		s.mu.RUnlock()
		requireSameFamilies(t, map[string]*family{pushTimeName: timestampFamily(pushTimeName, pushTimeHelp, g, g.Key(), at, at)},
			map[string]*family{pushTimeName: got})
	}
}

// familyNamesPersister records the family names of the last committed
// record of every group.
type familyNamesPersister struct {
	mu    sync.Mutex
	names map[string][]string
}

func (p *familyNamesPersister) Commit(ops []persistence.Op) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, op := range ops {
		if op.Group == nil {
			delete(p.names, op.Key)
			continue
		}
		var names []string
		for _, f := range op.Group.Families {
			names = append(names, f.Name)
		}
		p.names[op.Key] = names
	}
	return nil
}

func (p *familyNamesPersister) Load(func(*persistence.Group) error) error { return nil }
func (p *familyNamesPersister) Probe() error                              { return nil }

// TestRecordFamiliesFollowTemplate checks that a group put through a body
// template is persisted with exactly its pushed families in name order,
// whether the commit takes the template's sorted names or sorts them
// again because a later write changed the families.
func TestRecordFamiliesFollowTemplate(t *testing.T) {
	const (
		bodyA = "# TYPE c_total counter\nc_total 1\n# TYPE b gauge\nb 2\n# TYPE a gauge\na{x=\"1\"} 3\n"
		bodyB = "# TYPE z gauge\nz 1\n"
		extra = "# TYPE d gauge\nd 4\n"
	)
	minute := time.Minute
	type write struct {
		body string
		post bool
		ttl  *time.Duration
	}
	scenarios := map[string]struct {
		writes []write
		want   []string
		// fromTemplate is whether the group's last version carries the
		// template's names.
		fromTemplate bool
	}{
		"templated put": {
			writes:       []write{{body: bodyA}, {body: strings.ReplaceAll(bodyA, " 2\n", " 5\n")}},
			want:         []string{"a", "b", "c_total"},
			fromTemplate: true,
		},
		"templated put with a TTL, which adds push_stale": {
			writes:       []write{{body: bodyA, ttl: &minute}, {body: strings.ReplaceAll(bodyA, " 2\n", " 5\n"), ttl: &minute}},
			want:         []string{"a", "b", "c_total"},
			fromTemplate: true,
		},
		"post of another family after a templated put": {
			writes: []write{{body: bodyA}, {body: bodyA}, {body: extra, post: true}},
			want:   []string{"a", "b", "c_total", "d"},
		},
		"post through the template keeps the families of earlier pushes": {
			writes: []write{{body: bodyB}, {body: bodyA, post: true}, {body: bodyA, post: true}},
			want:   []string{"a", "b", "c_total", "z"},
		},
		"put of another body": {
			writes:       []write{{body: bodyA}, {body: bodyA}, {body: bodyB}, {body: bodyB}},
			want:         []string{"z"},
			fromTemplate: true,
		},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			p := &familyNamesPersister{names: map[string][]string{}}
			s, err := NewStore(StoreOptions{Persister: p})
			require.NoError(t, err)
			defer s.Close()
			g := Grouping{"job": "j", "instance": "i"}
			for _, w := range sc.writes {
				tb, mfs, err := s.prepareTextOrParse(g, []byte(w.body))
				require.NoError(t, err)
				if tb == nil {
					require.NoError(t, s.push(g, mfs, !w.post, true, w.ttl))
				} else {
					require.NoError(t, s.submitText(g, tb, !w.post, true, w.ttl))
				}
			}
			p.mu.Lock()
			require.Equal(t, sc.want, p.names[g.Key()])
			p.mu.Unlock()
			s.mu.RLock()
			defer s.mu.RUnlock()
			require.Equal(t, sc.fromTemplate, s.groups[g.Key()].recordFamilies != nil)
		})
	}
}

func TestPushesExactly(t *testing.T) {
	f := &family{}
	families := func(names ...string) map[string]*family {
		m := map[string]*family{pushTimeName: f, pushFailureTimeName: f}
		for _, n := range names {
			m[n] = f
		}
		return m
	}
	cases := map[string]struct {
		families map[string]*family
		names    []string
		want     bool
	}{
		"same families":                 {families("a", "b"), []string{"a", "b"}, true},
		"with push_stale":               {families("a", "b", pushStaleName), []string{"a", "b"}, true},
		"no pushed families":            {families(), []string{}, true},
		"nil names":                     {families(), nil, false},
		"a family more in the group":    {families("a", "b", "c"), []string{"a", "b"}, false},
		"a family less in the group":    {families("a"), []string{"a", "b"}, false},
		"another family of same count":  {families("a", "c"), []string{"a", "b"}, false},
		"a gateway family among names":  {families("a", pushStaleName), []string{"a", pushStaleName}, false},
		"push_time_seconds among names": {families("a"), []string{pushTimeName}, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			g := &group{families: c.families}
			require.Equal(t, c.want, g.pushesExactly(c.names))
		})
	}
}

// TestTemplatedFamiliesPartlyReplaced checks the families of a templated
// push, built from shared allocations, when a POST of another body then
// replaces one of them: the others keep the templated values, the replaced
// one shows the POST's, and a later templated PUT replaces them all.
func TestTemplatedFamiliesPartlyReplaced(t *testing.T) {
	s, err := NewStore(StoreOptions{})
	require.NoError(t, err)
	defer s.Close()
	h := s.ExpositionHandler(prometheus.NewRegistry())
	g := Grouping{"job": "j"}
	body := func(a, b, c int) string {
		return fmt.Sprintf("# TYPE a counter\na{x=\"1\"} %d\na{x=\"2\"} %d\n# TYPE b gauge\nb %d\n# TYPE c gauge\nc{y=\"z\"} %d\n", a, a+1, b, c)
	}
	push := func(text string, replace, wantTemplate bool) {
		t.Helper()
		tb, ok := s.prepareText(g.Key(), []byte(text))
		require.True(t, ok)
		require.Equal(t, wantTemplate, tb.template != nil, "encoded through the template")
		require.NoError(t, s.submitText(g, tb, replace, true, nil))
	}
	samples := func() []string {
		t.Helper()
		var out []string
		for line := range strings.Lines(scrape(t, h, "text/plain;version=0.0.4", false)) {
			if !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "push_") {
				out = append(out, strings.TrimSuffix(line, "\n"))
			}
		}
		return out
	}
	push(body(1, 2, 3), true, false)
	push(body(10, 20, 30), true, true)
	require.Equal(t, []string{`a{instance="",job="j",x="1"} 10`, `a{instance="",job="j",x="2"} 11`, `b{instance="",job="j"} 20`, `c{instance="",job="j",y="z"} 30`}, samples())

	push("# TYPE b gauge\nb{w=\"v\"} 7\n", false, false)
	require.Equal(t, []string{`a{instance="",job="j",x="1"} 10`, `a{instance="",job="j",x="2"} 11`, `b{instance="",job="j",w="v"} 7`, `c{instance="",job="j",y="z"} 30`}, samples())

	push(body(100, 200, 300), true, false)
	push(body(101, 201, 301), true, true)
	require.Equal(t, []string{`a{instance="",job="j",x="1"} 101`, `a{instance="",job="j",x="2"} 102`, `b{instance="",job="j"} 201`, `c{instance="",job="j",y="z"} 301`}, samples())
}

// TestDroppedSeriesFreeTheirPush checks that a templated push whose
// families are all replaced is freed even when one of its series'
// identities was dropped from the index meanwhile: the families of one
// templated push share their structs (familyAlloc), and a replaced series
// that another push's live family keeps points to its slot, so a dropped
// slot must not keep its last series.
func TestDroppedSeriesFreeTheirPush(t *testing.T) {
	s, err := NewStore(StoreOptions{})
	require.NoError(t, err)
	defer s.Close()
	g := Grouping{"job": "j"}
	push := func(text string, replace bool) {
		t.Helper()
		tb, ok := s.prepareText(g.Key(), []byte(text))
		require.True(t, ok)
		require.NoError(t, s.submitText(g, tb, replace, true, nil))
	}
	ab := "# TYPE a gauge\na 1\n# TYPE b gauge\nb{v=\"1\"} 2\n"
	bc := "# TYPE b gauge\nb{v=\"1\"} 3\n# TYPE c gauge\nc 4\n"
	push(ab, true)
	push(ab, true) // templated: a and b share their structs
	push(bc, false)
	push(bc, false) // templated: b and c share theirs; the first push's b is replaced, kept with its a
	s.mu.RLock()
	c := weak.Make(s.groups[g.Key()].families["c"].series[0])
	s.mu.RUnlock()
	push("# TYPE b gauge\nb{v=\"2\"} 5\n", false) // drops the identity b{v="1"}
	push("# TYPE c gauge\nc{w=\"x\"} 6\n", false) // replaces the last family of the second push
	require.Eventually(t, func() bool {
		runtime.GC()
		return c.Value() == nil
	}, 5*time.Second, 10*time.Millisecond, "the second push's series are freed once none of its families is stored")
}
