package staleness_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/gateway"
	"github.com/pushrelay/pushrelay/staleness"
)

// recordingExpirer notes when each key was handed over for expiry.
type recordingExpirer struct {
	next staleness.Expirer
	mu   sync.Mutex
	at   map[string]time.Time
}

func (r *recordingExpirer) Expire(keys []string) error {
	now := time.Now()
	r.mu.Lock()
	for _, k := range keys {
		r.at[k] = now
	}
	r.mu.Unlock()
	return r.next.Expire(keys)
}

func (r *recordingExpirer) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.at)
}

// TestExpiryAccuracyManyGroups checks, on the real clock, that with 100k
// groups stored every group expires within max(1s, 5% of its TTL) after its
// deadline: the manager never scans the stored groups.
func TestExpiryAccuracyManyGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("real-clock accuracy test")
	}
	const stored, short = 100_000, 200
	m := staleness.NewManager(staleness.NewPolicy(time.Hour, staleness.ActionZero, nil), nil)
	st, err := gateway.NewStore(gateway.StoreOptions{Expiry: m})
	require.NoError(t, err)
	defer st.Close()

	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < stored; i += 4 {
				mfs, err := gateway.ParseBody(strings.NewReader("m 1\n"), "")
				if err == nil {
					err = st.Push(gateway.Grouping{"job": "long", "instance": fmt.Sprint(i)}, mfs, true, false)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Writes are applied in order: once this one is committed, all are.
	require.NoError(t, st.Expire(nil))
	require.Equal(t, stored, m.Pending())

	rec := &recordingExpirer{next: st, at: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx, rec)

	h := gateway.NewHandler(st, gateway.HandlerOptions{})
	deadlines := map[string]time.Time{}
	ttls := map[string]time.Duration{}
	for i := 0; i < short; i++ {
		ttl := time.Second + rand.N(2*time.Second)
		req := httptest.NewRequest(http.MethodPut, fmt.Sprintf("/metrics/job/short/instance/%d", i), strings.NewReader("m 1\n"))
		req.Header.Set(gateway.TTLHeader, ttl.String())
		before := time.Now()
		resp := httptest.NewRecorder()
		h.ServeHTTP(resp, req)
		require.Equal(t, http.StatusOK, resp.Code)
		key := gateway.Grouping{"job": "short", "instance": fmt.Sprint(i)}.Key()
		deadlines[key], ttls[key] = before.Add(ttl), ttl
	}
	require.Eventually(t, func() bool { return rec.count() == short }, 10*time.Second, 10*time.Millisecond)
	var worst time.Duration
	for key, deadline := range deadlines {
		late := rec.at[key].Sub(deadline)
		allowed := max(time.Second, ttls[key]/20)
		require.LessOrEqual(t, late, allowed, "group %q expired %v after its deadline", key, late)
		worst = max(worst, late)
	}
	t.Logf("worst lateness with %d groups stored: %v", stored, worst)
	require.Equal(t, stored, m.Pending(), "the long-TTL groups are still scheduled")
}
