package gateway

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pushrelay/pushrelay/persistence"
)

// faultyDB is a real bbolt file whose writes can be made to fail, as on a
// full disk.
type faultyDB struct {
	*persistence.DB
	full atomic.Bool
	// unsynced makes commits reach the file and then fail as when the
	// disk sync after bbolt's meta page write fails.
	unsynced atomic.Bool
}

func (f *faultyDB) Commit(ops []persistence.Op) error {
	if f.full.Load() {
		return syscall.ENOSPC
	}
	err := f.DB.Commit(ops)
	if err == nil && f.unsynced.Load() {
		err = fmt.Errorf("cannot commit to persistence file: %w: %w", persistence.ErrUnsynced, syscall.EIO)
	}
	return err
}

func (f *faultyDB) Probe() error {
	if f.full.Load() {
		return syscall.ENOSPC
	}
	return f.DB.Probe()
}

// serveFaultyDB opens the file at path as a faultyDB and returns it with a
// function serving requests to a handler of a store on it; both are closed
// when t ends.
func serveFaultyDB(t *testing.T, path string) (*faultyDB, func(method, path, body string) *httptest.ResponseRecorder) {
	db, err := persistence.Open(path, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	fdb := &faultyDB{DB: db}
	st, err := NewStore(StoreOptions{Persister: fdb})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	h := NewHandler(st, HandlerOptions{})
	return fdb, func(method, path, body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		return rec
	}
}

// TestDiskFull checks that a push that cannot be committed is answered 503
// and undone, that scrapes go on, that health reflects the failure and that
// everything recovers once the disk has room again.
func TestDiskFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pr.db")
	synctest.Test(t, func(t *testing.T) {
		fdb, serve := serveFaultyDB(t, path)

		require.Equal(t, http.StatusOK, serve(http.MethodPut, "/metrics/job/kept", "m 1\n").Code)
		fdb.full.Store(true)
		rec := serve(http.MethodPut, "/metrics/job/lost", "m 2\n")
		require.Equal(t, http.StatusServiceUnavailable, rec.Code)
		require.Contains(t, rec.Body.String(), "push not stored")
		require.Contains(t, rec.Body.String(), syscall.ENOSPC.Error())
		rec = serve(http.MethodPut, "/metrics/job/kept", "m 3\n")
		require.Equal(t, http.StatusServiceUnavailable, rec.Code)

		scrape := serve(http.MethodGet, "/metrics", "")
		require.Equal(t, http.StatusOK, scrape.Code, "scrapes go on")
		require.Contains(t, scrape.Body.String(), `m{instance="",job="kept"} 1`, "the failed push was undone")
		require.NotContains(t, scrape.Body.String(), `job="lost"`)
		for _, p := range []string{"/-/healthy", "/-/ready"} {
			rec := serve(http.MethodGet, p, "")
			require.Equal(t, http.StatusInternalServerError, rec.Code, p)
			require.Contains(t, rec.Body.String(), "the persistence file cannot be written")
		}

		fdb.full.Store(false)
		time.Sleep(probeInterval)
		synctest.Wait()
		require.Equal(t, http.StatusOK, serve(http.MethodGet, "/-/healthy", "").Code, "health recovers without a push")
		require.Equal(t, http.StatusOK, serve(http.MethodPut, "/metrics/job/kept", "m 4\n").Code)
		require.Contains(t, serve(http.MethodGet, "/metrics", "").Body.String(), `m{instance="",job="kept"} 4`)
	})

	// Only acknowledged pushes are in the file.
	db, err := persistence.Open(path, nil)
	require.NoError(t, err)
	defer db.Close()
	var jobs []string
	require.NoError(t, db.Load(func(g *persistence.Group) error {
		for _, l := range g.Labels {
			if l.Name == "job" {
				jobs = append(jobs, l.Value)
			}
		}
		require.Len(t, g.Families, 1)
		return nil
	}))
	require.Equal(t, []string{"kept"}, jobs)
}

// TestUnsyncedCommitKept fails commits after they reached the file, as when
// the disk sync after bbolt's meta page write fails: bbolt reads the file
// with them from then on, so the store keeps the writes too, answers them
// 503 saying so, reports unhealthy until a probe syncs, and what a restart
// restores is what was exposed.
func TestUnsyncedCommitKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pr.db")
	var exposed string
	synctest.Test(t, func(t *testing.T) {
		fdb, serve := serveFaultyDB(t, path)

		require.Equal(t, http.StatusOK, serve(http.MethodPut, "/metrics/job/kept", "m 1\n").Code)
		require.Equal(t, http.StatusOK, serve(http.MethodPut, "/metrics/job/gone", "m 1\n").Code)
		fdb.unsynced.Store(true)
		rec := serve(http.MethodPut, "/metrics/job/kept", "m 2\n")
		require.Equal(t, http.StatusServiceUnavailable, rec.Code)
		require.Contains(t, rec.Body.String(), "push kept but not synced to disk: ")
		require.Contains(t, rec.Body.String(), syscall.EIO.Error())
		rec = serve(http.MethodDelete, "/metrics/job/gone", "")
		require.Equal(t, http.StatusServiceUnavailable, rec.Code)
		require.Contains(t, rec.Body.String(), "delete kept but not synced to disk: ")

		exposed = serve(http.MethodGet, "/metrics", "").Body.String()
		require.Contains(t, exposed, `m{instance="",job="kept"} 2`, "the push the file holds is kept")
		require.NotContains(t, exposed, `job="gone"`, "the delete the file holds is kept")
		require.Equal(t, http.StatusInternalServerError, serve(http.MethodGet, "/-/healthy", "").Code)

		fdb.unsynced.Store(false)
		time.Sleep(probeInterval)
		synctest.Wait()
		require.Equal(t, http.StatusOK, serve(http.MethodGet, "/-/healthy", "").Code, "a synced probe ends the failure")
	})

	db, err := persistence.Open(path, nil)
	require.NoError(t, err)
	defer db.Close()
	st, err := NewStore(StoreOptions{Persister: db})
	require.NoError(t, err)
	defer st.Close()
	rec := httptest.NewRecorder()
	NewHandler(st, HandlerOptions{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, storedSeries(exposed), storedSeries(rec.Body.String()), "a restart restores what was exposed")
}

// storedSeries returns the lines of an exposition for pushed series and
// their push times.
func storedSeries(exposition string) []string {
	var lines []string
	for line := range strings.Lines(exposition) {
		if strings.HasPrefix(line, "m{") || strings.HasPrefix(line, "push_time_seconds{") {
			lines = append(lines, line)
		}
	}
	return lines
}

// gatedPersister holds every commit until the test answers it, and
// records the keys of the commits answered with success.
type gatedPersister struct {
	entered chan struct{}
	answer  chan error
	mu      sync.Mutex
	keys    []string
}

func (p *gatedPersister) Commit(ops []persistence.Op) error {
	p.entered <- struct{}{}
	err := <-p.answer
	if err == nil {
		p.mu.Lock()
		for _, op := range ops {
			p.keys = append(p.keys, op.Key)
		}
		p.mu.Unlock()
	}
	return err
}

func (p *gatedPersister) Load(func(*persistence.Group) error) error { return nil }
func (p *gatedPersister) Probe() error                              { return nil }

// newGatedStore returns a store whose commits wait for the test's answers.
// Once the test ends, every commit left is answered, so that a failing
// test does not hang in Close.
func newGatedStore(t *testing.T) (*Store, *gatedPersister) {
	t.Helper()
	p := &gatedPersister{entered: make(chan struct{}), answer: make(chan error)}
	st, err := NewStore(StoreOptions{Persister: p})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	t.Cleanup(func() {
		go func() {
			for range p.entered {
				p.answer <- nil
			}
		}()
	})
	return st, p
}

// TestFailedCommitUndoesQueuedWrites checks that when a commit fails, the
// writes queued behind it, applied on top of its changes, are undone and
// failed with it, and that the store goes on from the last committed state.
func TestFailedCommitUndoesQueuedWrites(t *testing.T) {
	st, p := newGatedStore(t)
	h := NewHandler(st, HandlerOptions{})
	put := func(body string) <-chan int {
		code := make(chan int, 1)
		go func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/metrics/job/j", strings.NewReader(body)))
			code <- rec.Code
		}()
		return code
	}
	// within waits for a result of the test's goroutines, so that a
	// commit nobody answers fails the test instead of hanging it.
	within := func(c <-chan int, what string) int {
		select {
		case v := <-c:
			return v
		case <-p.entered:
			t.Fatalf("%s: unexpected commit", what)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no answer", what)
		}
		return 0
	}
	value := func() string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		for line := range strings.Lines(rec.Body.String()) {
			if v, ok := strings.CutPrefix(line, `m{instance="",job="j"} `); ok {
				return strings.TrimSpace(v)
			}
		}
		return ""
	}

	first := put("m 1\n")
	<-p.entered
	p.answer <- nil
	require.Equal(t, http.StatusOK, within(first, "first push"))

	committing := put("m 2\n")
	<-p.entered
	queued := put("m 3\n")
	require.Eventually(t, func() bool {
		st.writeMu.Lock()
		defer st.writeMu.Unlock()
		return st.queuedWrites == 1
	}, 10*time.Second, time.Millisecond, "the second push waits behind the commit")
	require.Equal(t, "3", value(), "applied writes are visible while committed")

	p.answer <- syscall.ENOSPC
	require.Equal(t, http.StatusServiceUnavailable, within(committing, "failed push"))
	require.Equal(t, http.StatusServiceUnavailable, within(queued, "push queued behind it"),
		"the queued write was applied on top of the failed one")
	require.Equal(t, "1", value(), "both writes are undone")

	last := put("m 4\n")
	<-p.entered
	p.answer <- nil
	require.Equal(t, http.StatusOK, within(last, "push after the failure"))
	require.Equal(t, "4", value())
}

// storeState describes everything a write changes in memory: the groups
// with their families and times, and the index entries with their series
// and holders.
func storeState(st *Store) string {
	var sb strings.Builder
	for _, g := range st.Groups() {
		fmt.Fprintln(&sb, g.Grouping, g.PushTime.UnixNano(), g.FailureTime.UnixNano())
		for _, f := range g.Families {
			fmt.Fprintln(&sb, " ", f.Time.UnixNano(), f.Family)
		}
	}
	st.mu.RLock()
	defer st.mu.RUnlock()
	for _, name := range slices.Sorted(maps.Keys(st.names)) {
		e := st.names[name]
		fmt.Fprintln(&sb, name, e.typ, e.len(), e.holders)
	}
	fmt.Fprintln(&sb, "float series", st.floatSeries)
	return sb.String()
}

// TestFailedCommitRestoresState fails the commit of a batch while several
// batches of mixed writes, some changing the same group several times, are
// queued behind it: every waited write fails, and the memory state is the
// one before the failed batch.
func TestFailedCommitRestoresState(t *testing.T) {
	st, p := newGatedStore(t)
	gauge := func(name string, v float64) map[string]*dto.MetricFamily {
		return map[string]*dto.MetricFamily{name: {Name: proto.String(name), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(v)}}}}}
	}
	committed := func(write func() error) {
		done := make(chan error, 1)
		go func() { done <- write() }()
		<-p.entered
		p.answer <- nil
		require.NoError(t, <-done)
	}
	for i := range 5 {
		committed(func() error { return st.Push(Grouping{"job": fmt.Sprint("j", i)}, gauge("m", float64(i)), true, true) })
	}
	committed(func() error { return st.Push(Grouping{"job": "j1"}, gauge("n0", 7), false, true) })
	before := storeState(st)

	failing := make(chan error, 1)
	go func() { failing <- st.Push(Grouping{"job": "j0"}, gauge("m", 100), true, true) }()
	<-p.entered
	const queued = 2*maxBatch + 100
	waited := make(chan error, queued)
	var wg sync.WaitGroup
	for i := range queued {
		job := Grouping{"job": fmt.Sprint("j", i%7)}
		wg.Go(func() {
			switch i % 5 {
			case 0:
				waited <- st.Push(job, gauge("m", float64(i)), i%2 == 0, true)
			case 1:
				waited <- st.Push(job, gauge(fmt.Sprint("n", i%3), float64(i)), false, true)
			case 2:
				waited <- st.Delete(job)
			case 3:
				if i%40 == 3 {
					waited <- st.Wipe()
				} else {
					waited <- st.Push(job, gauge("m", 1), true, true)
				}
			case 4:
				require.NoError(t, st.Push(job, gauge("m", float64(i)), true, false), "a queued write is only queued")
			}
		})
	}
	require.Eventually(t, func() bool {
		st.writeMu.Lock()
		defer st.writeMu.Unlock()
		return st.queuedWrites == queued && len(st.queued) == 3
	}, 10*time.Second, time.Millisecond, "every write is applied, in three batches")
	require.NotEqual(t, before, storeState(st))

	p.answer <- syscall.ENOSPC
	wg.Wait()
	close(waited)
	var persistErr *PersistError
	require.ErrorAs(t, <-failing, &persistErr)
	n := 0
	for err := range waited {
		require.ErrorAs(t, err, &persistErr)
		n++
	}
	require.Equal(t, queued-queued/5, n)
	require.Equal(t, before, storeState(st), "the failed batch and all behind it are undone")
}

// TestCloseCommitsQueuedWrites checks that Close commits every queued
// write before it returns, and that writes waiting for room in the full
// queue, and writes after Close, fail with ErrStoreClosed.
func TestCloseCommitsQueuedWrites(t *testing.T) {
	st, p := newGatedStore(t)
	job := func(i int) Grouping { return Grouping{"job": fmt.Sprint("j", i)} }
	first := make(chan error, 1)
	go func() { first <- st.Push(job(0), nil, true, true) }()
	<-p.entered
	for i := 1; i <= queueCapacity; i++ {
		require.NoError(t, st.Push(job(i), nil, true, false))
	}
	require.Equal(t, "write queue is full", st.Healthy().Error())
	waiting := make(chan error, 1)
	go func() { waiting <- st.Push(job(queueCapacity+1), nil, true, true) }()

	closed := make(chan struct{})
	go func() {
		st.Close()
		close(closed)
	}()
	require.ErrorIs(t, <-waiting, ErrStoreClosed)
	commits := 0
	for done := false; !done; {
		select {
		case <-p.entered:
			p.answer <- nil
			commits++
		case p.answer <- nil:
			// The commit in flight when the test started.
			commits++
		case <-closed:
			done = true
		}
	}
	require.NoError(t, <-first)
	require.Equal(t, 1+(queueCapacity+maxBatch-1)/maxBatch, commits, "the write in flight, then the queued batches")
	p.mu.Lock()
	require.Len(t, p.keys, 1+queueCapacity, "every queued write is committed")
	p.mu.Unlock()
	require.ErrorIs(t, st.Push(job(0), nil, true, true), ErrStoreClosed)
	require.ErrorIs(t, st.Delete(job(0)), ErrStoreClosed)
	require.ErrorIs(t, st.Wipe(), ErrStoreClosed)
}

// panickingExpiry is an Expiry whose ResolveTTL panics, as a bug while
// applying a write would.
type panickingExpiry struct{}

func (panickingExpiry) ResolveTTL(map[string]string) (time.Duration, string, string) {
	panic("resolving the TTL")
}
func (panickingExpiry) DefaultAction() string      { return actionZero }
func (panickingExpiry) Schedule(string, time.Time) {}
func (panickingExpiry) Cancel(string)              {}

// TestPanicInApplyCrashes checks that a panic while a push is applied,
// which may leave the memory state half changed, ends the process even
// though net/http recovers the panics of its handlers.
func TestPanicInApplyCrashes(t *testing.T) {
	if os.Getenv("PUSHRELAY_TEST_APPLY_PANIC") == "1" {
		st, err := NewStore(StoreOptions{Expiry: panickingExpiry{}})
		require.NoError(t, err)
		srv := httptest.NewServer(NewHandler(st, HandlerOptions{}))
		req, err := http.NewRequest(http.MethodPut, srv.URL+"/metrics/job/j", strings.NewReader("m 1\n"))
		require.NoError(t, err)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
		}
		fmt.Println("still running after the panic")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanicInApplyCrashes$")
	cmd.Env = append(os.Environ(), "PUSHRELAY_TEST_APPLY_PANIC=1")
	out, err := cmd.CombinedOutput()
	var exited *exec.ExitError
	require.ErrorAs(t, err, &exited, "the process goes on after the panic:\n%s", out)
	require.Contains(t, string(out), "applying a write: resolving the TTL")
	require.NotContains(t, string(out), "still running")
}
