package gateway

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/persistence"
)

// faultyDB is a real bbolt file whose writes can be made to fail, as on a
// full disk.
type faultyDB struct {
	*persistence.DB
	full atomic.Bool
}

func (f *faultyDB) Commit(ops []persistence.Op) error {
	if f.full.Load() {
		return syscall.ENOSPC
	}
	return f.DB.Commit(ops)
}

func (f *faultyDB) Probe() error {
	if f.full.Load() {
		return syscall.ENOSPC
	}
	return f.DB.Probe()
}

// TestDiskFull checks that a push that cannot be committed is answered 503
// and undone, that scrapes go on, that health reflects the failure and that
// everything recovers once the disk has room again.
func TestDiskFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pr.db")
	synctest.Test(t, func(t *testing.T) {
		db, err := persistence.Open(path, nil)
		require.NoError(t, err)
		defer db.Close()
		fdb := &faultyDB{DB: db}
		st, err := NewStore(StoreOptions{Persister: fdb})
		require.NoError(t, err)
		defer st.Close()
		h := NewHandler(st, HandlerOptions{})
		serve := func(method, path, body string) *httptest.ResponseRecorder {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
			return rec
		}

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

// gatedPersister holds every commit until the test answers it.
type gatedPersister struct {
	entered chan struct{}
	answer  chan error
}

func (p *gatedPersister) Commit([]persistence.Op) error {
	p.entered <- struct{}{}
	return <-p.answer
}

func (p *gatedPersister) Load(func(*persistence.Group) error) error { return nil }
func (p *gatedPersister) Probe() error                              { return nil }

// TestFailedCommitUndoesQueuedWrites checks that when a commit fails, the
// writes queued behind it, applied on top of its changes, are undone and
// failed with it, and that the store goes on from the last committed state.
func TestFailedCommitUndoesQueuedWrites(t *testing.T) {
	p := &gatedPersister{entered: make(chan struct{}), answer: make(chan error)}
	st, err := NewStore(StoreOptions{Persister: p})
	require.NoError(t, err)
	defer st.Close()
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
