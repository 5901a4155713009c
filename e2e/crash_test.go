package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// interval is when a client sent a request and when it got the answer.
type interval struct{ from, to time.Time }

func (iv interval) contains(t *testing.T, v float64, what string) {
	t.Helper()
	requireBetween(t, v, iv.from, iv.to, what)
}

// crashGroup is what the test expects of one group after every
// acknowledged request.
type crashGroup struct {
	idx     int
	deleted bool
	// lines are the exposition lines of the group without the push times.
	lines []string
	// push is the last successful push, failure the last rejected one.
	push, failure *interval
	// familyTimes are the pushes that last wrote each family.
	familyTimes map[string]interval
}

const crashGroups = 300

func crashPath(i int) string { return fmt.Sprintf("/metrics/job/crash/idx/%d", i) }

func crashSel(i int, extra string) string {
	return fmt.Sprintf(`idx="%d",instance="",job="crash"%s`, i, extra)
}

// runCrashGroup sends the requests of one group in order and returns what
// the acknowledged ones leave behind: a PUT, for some groups a POST that
// replaces one family and adds another, a push rejected for its timestamp, a
// DELETE.
func runCrashGroup(gw *process, i int) (*crashGroup, error) {
	g := &crashGroup{idx: i, familyTimes: map[string]interval{}}
	send := func(method, body string, want int) (interval, error) {
		from := time.Now()
		r, err := doErr(method, gw.url+crashPath(i), nil, []byte(body))
		iv := interval{from, time.Now()}
		if err != nil {
			return iv, err
		}
		if r.status != want {
			return iv, fmt.Errorf("%s %s: status %d, want %d: %s", method, crashPath(i), r.status, want, r.body)
		}
		return iv, nil
	}

	put := fmt.Sprintf("# TYPE crash_value gauge\ncrash_value{kind=\"a\"} %v\ncrash_value{kind=\"b\"} %v\n# TYPE crash_events_total counter\ncrash_events_total %d\n",
		float64(i)*1.5, float64(i)+0.25, i*7)
	iv, err := send(http.MethodPut, put, http.StatusOK)
	if err != nil {
		return nil, err
	}
	g.push = &iv
	g.familyTimes["crash_value"] = iv
	g.familyTimes["crash_events_total"] = iv
	g.familyTimes["push_time_seconds"] = iv
	g.familyTimes["push_failure_time_seconds"] = iv
	g.lines = []string{
		fmt.Sprintf("crash_value{%s} %v", crashSel(i, `,kind="a"`), float64(i)*1.5),
		fmt.Sprintf("crash_value{%s} %v", crashSel(i, `,kind="b"`), float64(i)+0.25),
		fmt.Sprintf("crash_events_total{%s} %d", crashSel(i, ""), i*7),
	}

	if i%7 == 0 {
		post := fmt.Sprintf("# TYPE crash_value gauge\ncrash_value{kind=\"c\"} %d\n# TYPE crash_post_only untyped\ncrash_post_only 1\n", i*100)
		iv, err := send(http.MethodPost, post, http.StatusOK)
		if err != nil {
			return nil, err
		}
		g.push = &iv
		g.familyTimes["crash_value"] = iv
		g.familyTimes["crash_post_only"] = iv
		g.familyTimes["push_time_seconds"] = iv
		g.lines = []string{
			fmt.Sprintf("crash_value{%s} %d", crashSel(i, `,kind="c"`), i*100),
			fmt.Sprintf("crash_events_total{%s} %d", crashSel(i, ""), i*7),
			fmt.Sprintf("crash_post_only{%s} 1", crashSel(i, "")),
		}
	}
	if i%50 == 10 {
		iv, err := send(http.MethodPut, "crash_value{kind=\"a\"} 1 1700000000000\n", http.StatusBadRequest)
		if err != nil {
			return nil, err
		}
		g.failure = &iv
		g.familyTimes["push_failure_time_seconds"] = iv
	}
	if i%25 == 3 {
		if _, err := send(http.MethodDelete, "", http.StatusAccepted); err != nil {
			return nil, err
		}
		g.deleted = true
	}
	sort.Strings(g.lines)
	return g, nil
}

// TestCrashRecovery pushes to a file-backed pushrelay from several clients,
// kills it with SIGKILL right after the last acknowledgement and checks that
// the restarted process has every acknowledged change: values, push times,
// failure times, deletions.
func TestCrashRecovery(t *testing.T) {
	e2eTest(t)
	db := filepath.Join(t.TempDir(), "pr.db")
	gw := startPushrelay(t, "--persistence.file="+db)

	// While the groups are written, another client keeps pushing, so that
	// the kill also hits requests in flight: an acknowledged one must
	// survive, an unacknowledged one must be all there or not at all.
	var (
		stopNoise  atomic.Bool
		noiseAcked sync.Map // int -> true
		noiseWG    sync.WaitGroup
		noiseSent  atomic.Int64
	)
	noiseWG.Add(1)
	go func() {
		defer noiseWG.Done()
		for n := 0; !stopNoise.Load(); n++ {
			noiseSent.Store(int64(n + 1))
			body := fmt.Sprintf("# TYPE noise_a gauge\nnoise_a %d\n# TYPE noise_b gauge\nnoise_b %d\n", n, -n)
			r, err := doErr(http.MethodPut, fmt.Sprintf("%s/metrics/job/noise/n/%d", gw.url, n), nil, []byte(body))
			if err != nil {
				return
			}
			if r.status == http.StatusOK {
				noiseAcked.Store(n, true)
			}
		}
	}()

	const workers = 8
	groups := make([]*crashGroup, crashGroups)
	work := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				g, err := runCrashGroup(gw, i)
				if err != nil {
					errs <- err
					for range work { // let the sender finish
					}
					return
				}
				groups[i] = g
			}
		}()
	}
	for i := 0; i < crashGroups; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	gw.kill() // kill -9 right after the last acknowledgement
	stopNoise.Store(true)
	noiseWG.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	restarted := startPushrelay(t, "--persistence.file="+db)
	text, _ := scrape(t, restarted)
	apiGroups := getGroups(t, restarted)

	isPushTime := func(l string) bool {
		return strings.HasPrefix(l, "push_time_seconds{") || strings.HasPrefix(l, "push_failure_time_seconds{")
	}
	for _, g := range groups {
		sel := fmt.Sprintf(`idx="%d"`, g.idx)
		labels := map[string]string{"job": "crash", "idx": fmt.Sprint(g.idx)}
		var lines []string
		for _, l := range linesContaining(text, sel) {
			if !isPushTime(l) {
				lines = append(lines, l)
			}
		}
		ag := findGroup(apiGroups, labels)
		if g.deleted {
			require.Nil(t, ag, "deleted group %v is back", labels)
			require.Empty(t, linesContaining(text, sel), "deleted group %v is back", labels)
			continue
		}
		require.NotNil(t, ag, "acknowledged group %v is lost", labels)
		require.Equal(t, g.lines, lines, "group %v", labels)
		g.push.contains(t, ag.timeValue(t, "push_time_seconds"), fmt.Sprintf("push_time_seconds of %v", labels))
		if g.failure != nil {
			g.failure.contains(t, ag.timeValue(t, "push_failure_time_seconds"), fmt.Sprintf("push_failure_time_seconds of %v", labels))
			require.False(t, ag.LastPushSuccessful, "group %v", labels)
		} else {
			require.Zero(t, ag.timeValue(t, "push_failure_time_seconds"), "group %v", labels)
			require.True(t, ag.LastPushSuccessful, "group %v", labels)
		}
		require.ElementsMatch(t, sortedKeys(g.familyTimes), sortedKeys(ag.Families), "families of %v", labels)
	}
	// The JSON API shows for each family the time of the push that last
	// wrote it; a restart must not change it.
	t.Run("family time stamps", func(t *testing.T) {
		for _, g := range groups {
			if g.deleted {
				continue
			}
			labels := map[string]string{"job": "crash", "idx": fmt.Sprint(g.idx)}
			ag := findGroup(apiGroups, labels)
			for name, iv := range g.familyTimes {
				iv.contains(t, float64(ag.Families[name].TimeStamp.UnixNano())/1e9, fmt.Sprintf("time_stamp of %s in %v", name, labels))
			}
		}
	})

	// Noise groups: every acknowledged one is there; an unacknowledged
	// one is either absent or complete.
	acked, seen := 0, 0
	for n := 0; n < int(noiseSent.Load()); n++ {
		ag := findGroup(apiGroups, map[string]string{"job": "noise", "n": fmt.Sprint(n)})
		if _, ok := noiseAcked.Load(n); ok {
			acked++
			require.NotNil(t, ag, "acknowledged noise group %d is lost", n)
		}
		if ag == nil {
			continue
		}
		seen++
		require.Equal(t, []obj{{"labels": obj{"instance": "", "job": "noise", "n": fmt.Sprint(n)}, "value": fmt.Sprint(n)}}, ag.Families["noise_a"].Metrics)
		require.Equal(t, []obj{{"labels": obj{"instance": "", "job": "noise", "n": fmt.Sprint(n)}, "value": fmt.Sprint(-n)}}, ag.Families["noise_b"].Metrics)
	}
	want := seen
	for _, g := range groups {
		if !g.deleted {
			want++
		}
	}
	require.Len(t, apiGroups, want, "groups after the restart")
	t.Logf("%d groups checked after kill -9; %d noise pushes acknowledged, %d restored", crashGroups, acked, seen)

	// A graceful stop of the restarted process exits 0.
	require.NoError(t, restarted.stop(t))
}

// runToExit runs pushrelay with args and returns its exit code and output;
// it fails t if pushrelay is still running after timeout.
func runToExit(t *testing.T, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, pushrelayBin, append(append([]string{}, defaultPushrelayFlags...), args...)...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, ctx.Err(), "pushrelay %v was still running after %v:\n%s", args, timeout, out)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), string(out)
	}
	require.NoError(t, err)
	return 0, string(out)
}

// dirSnapshot returns every file of dir with its mode and contents.
func dirSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	snap := map[string]string{}
	for _, e := range entries {
		info, err := e.Info()
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		snap[e.Name()] = fmt.Sprintf("%v %x", info.Mode(), b)
	}
	return snap
}

// TestUnusablePersistenceFile starts pushrelay on files it must refuse: it
// must exit non-zero with an error naming the file and leave the file as it
// was, never emptying or rewriting it.
func TestUnusablePersistenceFile(t *testing.T) {
	e2eTest(t)
	random := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.UintN(256))
	}
	scenarios := map[string]func(t *testing.T, path string){
		"random bytes": func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, random, 0o600))
		},
		"text file": func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, []byte("global:\n  scrape_interval: 15s\n"), 0o644))
		},
		"bbolt file of a newer schema": func(t *testing.T, path string) {
			db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
			require.NoError(t, err)
			require.NoError(t, db.Update(func(tx *bolt.Tx) error {
				meta, err := tx.CreateBucket([]byte("meta"))
				if err != nil {
					return err
				}
				if err := meta.Put([]byte("schema"), []byte("99")); err != nil {
					return err
				}
				_, err = tx.CreateBucket([]byte("groups"))
				return err
			}))
			require.NoError(t, db.Close())
		},
	}
	for name, write := range scenarios {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "pr.db")
			write(t, path)
			before := dirSnapshot(t, dir)

			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			code, out := runToExit(t, 20*time.Second, "--web.listen-address="+addr, "--persistence.file="+path)
			require.NotZero(t, code, "pushrelay started on an unusable file:\n%s", out)
			require.Contains(t, out, path, "the error must name the file")
			require.Equal(t, before, dirSnapshot(t, dir), "the file (or its directory) was changed")
		})
	}

	t.Run("file held by a running pushrelay", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "pr.db")
		gw := startPushrelay(t, "--persistence.file="+path)
		send(t, gw, http.MethodPut, "/metrics/job/held", "held 1\n", http.StatusOK)

		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		code, out := runToExit(t, 20*time.Second, "--web.listen-address="+addr, "--persistence.file="+path)
		require.NotZero(t, code, "a second pushrelay started on a file in use:\n%s", out)
		require.Contains(t, out, path, "the error must name the file")

		text, _ := scrape(t, gw)
		requireLines(t, text, `held{instance="",job="held"} 1`)
		send(t, gw, http.MethodPut, "/metrics/job/held", "held 2\n", http.StatusOK)
		require.NoError(t, gw.stop(t))
		restarted := startPushrelay(t, "--persistence.file="+path)
		text, _ = scrape(t, restarted)
		requireLines(t, text, `held{instance="",job="held"} 2`)
	})
}
