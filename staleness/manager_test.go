package staleness_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/pushrelay/pushrelay/gateway"
	"github.com/pushrelay/pushrelay/persistence"
	"github.com/pushrelay/pushrelay/staleness"
)

// relay is a store and its expiry manager running in a synctest bubble.
type relay struct {
	t       *testing.T
	store   *gateway.Store
	handler http.Handler
	expiry  *staleness.Manager
	stop    func()
}

func startRelay(t *testing.T, p *staleness.Policy, db gateway.Persister) *relay {
	t.Helper()
	m := staleness.NewManager(p, nil)
	st, err := gateway.NewStore(gateway.StoreOptions{Persister: db, Expiry: m})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		m.Run(ctx, st)
		close(done)
	}()
	r := &relay{t: t, store: st, expiry: m, handler: gateway.NewHandler(st, gateway.HandlerOptions{})}
	r.stop = func() {
		cancel()
		<-done
		st.Close()
	}
	return r
}

func (r *relay) push(job, body string, ttlHeader string) {
	r.t.Helper()
	mfs, err := gateway.ParseBody(strings.NewReader(body), "")
	require.NoError(r.t, err)
	g := gateway.Grouping{"job": job}
	if ttlHeader == "" {
		require.NoError(r.t, r.store.Push(g, mfs, true, true))
		return
	}
	req := httptest.NewRequest(http.MethodPut, "/metrics/job/"+job, strings.NewReader(body))
	req.Header.Set(gateway.TTLHeader, ttlHeader)
	rec := httptest.NewRecorder()
	r.handler.ServeHTTP(rec, req)
	require.Equal(r.t, http.StatusOK, rec.Code, rec.Body.String())
}

func parseRules(doc string) ([]staleness.Rule, error) {
	var rules []staleness.Rule
	err := yaml.Unmarshal([]byte(doc), &rules)
	return rules, err
}

// values returns "family{labels}=value" lines of a group's pushed families
// and whether it is stale.
func (r *relay) values(job string) (map[string]float64, bool, bool) {
	r.t.Helper()
	for _, g := range r.store.Groups() {
		if g.Grouping["job"] != job {
			continue
		}
		out := map[string]float64{}
		for _, f := range g.Families {
			for _, m := range f.Family.Metric {
				key := f.Family.GetName()
				switch {
				case m.Gauge != nil:
					out[key] = m.Gauge.GetValue()
				case m.Counter != nil:
					out[key] = m.Counter.GetValue()
				case m.Untyped != nil:
					out[key] = m.Untyped.GetValue()
				case m.Summary != nil:
					out[key+"_count"] = float64(m.Summary.GetSampleCount())
					out[key+"_sum"] = m.Summary.GetSampleSum()
					for _, q := range m.Summary.Quantile {
						out[fmt.Sprintf("%s{quantile=%g}", key, q.GetQuantile())] = q.GetValue()
					}
				case m.Histogram != nil:
					out[key+"_count"] = float64(m.Histogram.GetSampleCount())
					out[key+"_sum"] = m.Histogram.GetSampleSum()
					for _, b := range m.Histogram.Bucket {
						out[fmt.Sprintf("%s_bucket{le=%g}", key, b.GetUpperBound())] = float64(b.GetCumulativeCount())
					}
				}
			}
		}
		return out, g.Stale, true
	}
	return nil, false, false
}

const allTypes = `# TYPE c counter
c 5
# TYPE g gauge
g -3
u 7
# TYPE s summary
s{quantile="0.5"} 2
s_sum 10
s_count 4
# TYPE h histogram
h_bucket{le="1"} 3
h_bucket{le="+Inf"} 4
h_sum 2.5
h_count 4
`

func TestZeroAction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRelay(t, staleness.NewPolicy(90*time.Second, staleness.ActionZero, nil), nil)
		defer r.stop()
		r.push("wm_job", allTypes, "")
		pushed, _, _ := r.values("wm_job")
		pushTime := pushed["push_time_seconds"]
		require.Equal(t, 5.0, pushed["c"])
		require.Equal(t, 0.0, pushed["push_stale"])

		time.Sleep(90*time.Second - time.Millisecond)
		synctest.Wait()
		v, stale, _ := r.values("wm_job")
		require.False(t, stale, "not expired before the deadline")
		require.Equal(t, 5.0, v["c"])

		time.Sleep(time.Millisecond)
		synctest.Wait()
		v, stale, ok := r.values("wm_job")
		require.True(t, ok, "zero keeps the group")
		require.True(t, stale)
		for name, value := range v {
			switch name {
			case "push_time_seconds":
				require.Equal(t, pushTime, value, "push time is unchanged")
			case "push_stale":
				require.Equal(t, 1.0, value)
			default:
				require.Zero(t, value, "%s must be zeroed", name)
			}
		}
		require.Len(t, v, len(pushed), "every family and bucket is kept")

		// The next push revives the group.
		r.push("wm_job", "# TYPE c counter\nc 6\n", "")
		v, stale, _ = r.values("wm_job")
		require.False(t, stale)
		require.Equal(t, 6.0, v["c"])
		require.Equal(t, 0.0, v["push_stale"])
		_, hasG := v["g"]
		require.False(t, hasG, "a PUT replaces the zeroed families")
	})
}

func TestDeleteActionAndRules(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rules, err := parseRules(`
- match: {job: "wm_.*"}
  ttl: 1m
  action: delete
- match: {job: backup}
  ttl: 0
`)
		require.NoError(t, err)
		r := startRelay(t, staleness.NewPolicy(10*time.Minute, staleness.ActionZero, rules), nil)
		defer r.stop()
		r.push("wm_a", "m 1\n", "")
		r.push("backup", "m 2\n", "")
		r.push("other", "m 3\n", "")

		time.Sleep(61 * time.Second)
		synctest.Wait()
		_, _, ok := r.values("wm_a")
		require.False(t, ok, "delete removes the group")
		_, stale, ok := r.values("other")
		require.True(t, ok)
		require.False(t, stale)

		time.Sleep(10 * time.Minute)
		synctest.Wait()
		_, stale, _ = r.values("other")
		require.True(t, stale, "the flag default applies where no rule matches")
		v, stale, _ := r.values("backup")
		require.False(t, stale, "ttl 0 never expires")
		require.Equal(t, 2.0, v["m"])
		require.Zero(t, r.expiry.Pending())
	})
}

func TestRepushPostponesExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRelay(t, staleness.NewPolicy(time.Minute, staleness.ActionZero, nil), nil)
		defer r.stop()
		for i := 0; i < 5; i++ {
			r.push("cron", fmt.Sprintf("m %d\n", i+1), "")
			time.Sleep(50 * time.Second)
			synctest.Wait()
		}
		v, stale, _ := r.values("cron")
		require.False(t, stale)
		require.Equal(t, 5.0, v["m"])
		time.Sleep(10 * time.Second)
		synctest.Wait()
		_, stale, _ = r.values("cron")
		require.True(t, stale)
	})
}

func TestExpiredGroupSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pr.db")
	synctest.Test(t, func(t *testing.T) {
		db, err := persistence.Open(path, nil)
		require.NoError(t, err)
		r := startRelay(t, staleness.NewPolicy(time.Minute, staleness.ActionZero, nil), db)
		r.push("expired_before", "m 1\n", "")
		time.Sleep(30 * time.Second)
		r.push("expires_while_down", "m 2\n", "")
		time.Sleep(31 * time.Second)
		synctest.Wait()
		_, stale, _ := r.values("expired_before")
		require.True(t, stale)
		r.stop()
		require.NoError(t, db.Close())

		// Down for a while: the second group's deadline passes.
		time.Sleep(time.Minute)

		db, err = persistence.Open(path, nil)
		require.NoError(t, err)
		defer db.Close()
		r = startRelay(t, staleness.NewPolicy(time.Minute, staleness.ActionZero, nil), db)
		defer r.stop()
		synctest.Wait()
		for _, job := range []string{"expired_before", "expires_while_down"} {
			v, stale, ok := r.values(job)
			require.True(t, ok, job)
			require.True(t, stale, "%s is expired after the restart", job)
			require.Zero(t, v["m"], job)
			require.Equal(t, 1.0, v["push_stale"], job)
		}
	})
}

func TestHeaderTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRelay(t, staleness.NewPolicy(time.Minute, staleness.ActionDelete, nil), nil)
		defer r.stop()
		r.push("disabled", "m 1\n", "0")
		r.push("short", "m 2\n", "10s")
		time.Sleep(11 * time.Second)
		synctest.Wait()
		_, _, ok := r.values("short")
		require.False(t, ok, "the header TTL with the default action applies")
		time.Sleep(time.Hour)
		synctest.Wait()
		v, _, ok := r.values("disabled")
		require.True(t, ok, "X-Pushrelay-TTL: 0 disables expiry")
		require.Equal(t, 1.0, v["m"])
		_, hasStale := v["push_stale"]
		require.False(t, hasStale, "a group without TTL has no push_stale")
	})
}
