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
