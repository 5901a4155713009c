package gateway_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/gateway"
	"github.com/pushrelay/pushrelay/persistence"
)

// normalizeTimes rewrites every time_stamp of /api/v1/metrics data to UTC so
// that data read before and after a restart compare equal whatever the
// local time zone.
func normalizeTimes(t *testing.T, groups []map[string]any) []map[string]any {
	t.Helper()
	for _, g := range groups {
		for _, v := range g {
			fam, ok := v.(map[string]any)
			if !ok {
				continue
			}
			if ts, ok := fam["time_stamp"].(string); ok {
				parsed, err := time.Parse(time.RFC3339Nano, ts)
				require.NoError(t, err)
				fam["time_stamp"] = parsed.UTC().Format(time.RFC3339Nano)
			}
		}
	}
	return groups
}

// TestRestartRestoresGroups stores groups, closes the store and the bbolt
// file, reopens both and expects the same exposition and JSON.
func TestRestartRestoresGroups(t *testing.T) {
	g := MustNewGateway(t)
	pushFixture(t, g)
	before := g.Metrics()
	beforeAPI := normalizeTimes(t, g.APIMetrics())

	g.Restart()
	require.Equal(t, before, g.Metrics())
	require.Equal(t, beforeAPI, normalizeTimes(t, g.APIMetrics()))

	t.Run("index is rebuilt", func(t *testing.T) {
		g.At(10)
		g.MustDo(http.StatusBadRequest, http.MethodPut, "/metrics/job/x", "# TYPE jobs_total gauge\njobs_total 1\n")
		g.MustDo(http.StatusBadRequest, http.MethodPut, "/metrics/job/batch/queue/a", "jobs_total 1\n")
		g.MustDo(http.StatusBadRequest, http.MethodPut, "/metrics/job/x", "rpc_duration_seconds_count 1\n")
		g.MustDo(http.StatusOK, http.MethodPost, "/metrics/job/batch", "extra 1\n")
	})
	t.Run("a second restart keeps the later writes", func(t *testing.T) {
		want := g.Metrics()
		require.Contains(t, want, `push_failure_time_seconds{instance="",job="x"} 1.70000001e+09`)
		require.Contains(t, want, `extra{instance="",job="batch"} 1`)
		require.Contains(t, want, `rpc_duration_seconds_sum{instance="",job="batch"} 42.5`)
		g.Restart()
		require.Equal(t, want, g.Metrics())
	})
}

// TestRestartAfterDelete checks that a deleted group stays deleted and a
// failure-only group keeps push_time_seconds 0.
func TestRestartAfterDelete(t *testing.T) {
	g := MustNewGateway(t)
	g.At(1).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/a", "m 1\n")
	g.At(2).MustDo(http.StatusAccepted, http.MethodDelete, "/metrics/job/a", "")
	g.At(3).MustDo(http.StatusBadRequest, http.MethodPut, "/metrics/job/b", "m 1 1\n")
	g.Restart()
	require.Equal(t, lines(
		`push_failure_time_seconds{instance="",job="b"} 1.700000003e+09`,
		`push_time_seconds{instance="",job="b"} 0`,
	), g.Samples())
}

// TestRestartOnCorruptFile checks that a group record that cannot be decoded
// stops NewStore with an error naming the file, and that the file is left
// as it was.
func TestRestartOnCorruptFile(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/p.db"
	db, err := persistence.Open(path, nil)
	require.NoError(t, err)
	require.NoError(t, db.Commit([]persistence.Op{{Key: "k", Group: &persistence.Group{Labels: []persistence.Label{{Name: "job", Value: "j"}}, Families: []persistence.Family{{Name: "m", Type: 3, Metrics: [][]byte{{0xff, 0xff}}}}}}}))
	_, err = gateway.NewStore(gateway.StoreOptions{Persister: db})
	require.Error(t, err)
	require.Contains(t, err.Error(), path)
	require.NoError(t, db.Close())
}

// TestRestoreOfGroupsEarlierVersionsStored checks the groups that earlier
// versions could store and this one refuses to create: one whose label
// value is not UTF-8 (no push URL names it any more, and it exposes
// nothing) is logged and removed from the file; two that share their
// timestamp series ({job="a"} and {job="a",instance=""}) are both restored,
// with a warning.
func TestRestoreOfGroupsEarlierVersionsStored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	record := func(labels ...string) persistence.Op {
		g := gateway.Grouping{}
		pg := &persistence.Group{PushTime: 1, FailureTime: 2}
		for i := 0; i+1 < len(labels); i += 2 {
			g[labels[i]] = labels[i+1]
			pg.Labels = append(pg.Labels, persistence.Label{Name: labels[i], Value: labels[i+1]})
		}
		return persistence.Op{Key: g.Key(), Group: pg}
	}
	db, err := persistence.Open(path, nil)
	require.NoError(t, err)
	require.NoError(t, db.Commit([]persistence.Op{
		record("job", "a"),
		record("instance", "", "job", "a"),
		record("job", "u", "path", "\xff\xef"),
	}))

	var log bytes.Buffer
	s, err := gateway.NewStore(gateway.StoreOptions{Persister: db, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	require.NoError(t, err)
	var restored []string
	for _, v := range s.Groups() {
		restored = append(restored, v.Grouping.String())
	}
	s.Close()
	require.ElementsMatch(t, []string{`{job="a"}`, `{instance="",job="a"}`}, restored)
	require.Contains(t, log.String(), `msg="removing a stored group that no push URL can name" group="{job=\"u\",path=\"\\xff\\xef\"}"`)
	require.Contains(t, log.String(), "same push_time_seconds and push_failure_time_seconds series as another group")

	var stored []string
	require.NoError(t, db.Load(func(pg *persistence.Group) error {
		stored = append(stored, fmt.Sprint(pg.Labels))
		return nil
	}))
	require.Len(t, stored, 2, "the unusable group is gone from the file: %v", stored)
	require.NoError(t, db.Close())
}
