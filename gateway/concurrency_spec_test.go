package gateway_test

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConcurrentWrites runs pushes, deletes, rejected pushes and scrapes at
// the same time. Every scrape must parse and gather consistently, every
// rejection must be the type conflict, and the final state (in memory and
// after a restart) must be what each writer's last request left.
func TestConcurrentWrites(t *testing.T) {
	const (
		writers = 6
		// The last request of every writer, i = 37, is a PUT (see below).
		iterations = 38
	)
	g := MustNewGateway(t)
	g.At(1).MustDo(http.StatusOK, http.MethodPut, "/metrics/job/anchor", "# TYPE g gauge\ng 0\n")

	var wg sync.WaitGroup
	var stop atomic.Bool
	errs := make(chan error, 100)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	do := func(method, target, body string, want int) {
		rec := g.Do(method, target, []byte(body))
		if rec.Code != want {
			report(fmt.Errorf("%s %s: got %d %q, want %d", method, target, rec.Code, rec.Body.String(), want))
		}
	}
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("/metrics/job/w%d", w)
			for i := 0; i < iterations; i++ {
				switch {
				case i%10 == 9:
					do(http.MethodDelete, path, "", http.StatusAccepted)
				case i%3 == 0:
					do(http.MethodPost, path, fmt.Sprintf("p %d\n", i), http.StatusOK)
				default:
					do(http.MethodPut, path, fmt.Sprintf("# TYPE g gauge\ng{i=\"%d\"} %d\nshared{w=\"%d\"} %d\n", i, i, w, i), http.StatusOK)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < iterations; i++ {
			rec := g.Do(http.MethodPut, "/metrics/job/conflict", []byte("# TYPE g counter\ng 1\n"))
			if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "is not a GAUGE") {
				report(fmt.Errorf("conflicting push: got %d %q", rec.Code, rec.Body.String()))
			}
		}
	}()
	var scrapers sync.WaitGroup
	var scrapes atomic.Int64
	// One scraper: concurrent scrapes race on the sorted-name cache, see
	// TestBugConcurrentScrapesRace in bugs_test.go.
	for s := 0; s < 1; s++ {
		scrapers.Add(1)
		go func() {
			defer scrapers.Done()
			for !stop.Load() {
				rec := g.Do(http.MethodGet, "/metrics", nil)
				mfs, err := parseText(rec.Body.String())
				if err == nil {
					err = checkGather(mfs)
				}
				if rec.Code != http.StatusOK || err != nil {
					report(fmt.Errorf("scrape: %d %v", rec.Code, err))
				}
				scrapes.Add(1)
			}
		}()
	}
	wg.Wait()
	stop.Store(true)
	scrapers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	require.Positive(t, scrapes.Load())

	// Each writer's last request (i = 37) is a PUT of i=37, after a
	// DELETE at 29 and POSTs at 30, 33 and 36 whose family it replaced.
	var want []string
	for w := 0; w < writers; w++ {
		want = append(want,
			fmt.Sprintf(`g{i="37",instance="",job="w%d"} 37`, w),
			fmt.Sprintf(`shared{instance="",job="w%d",w="%d"} 37`, w, w),
			fmt.Sprintf(`push_failure_time_seconds{instance="",job="w%d"} 0`, w),
			fmt.Sprintf(`push_time_seconds{instance="",job="w%d"} 1.700000001e+09`, w),
		)
	}
	want = append(want,
		`g{instance="",job="anchor"} 0`,
		`push_failure_time_seconds{instance="",job="anchor"} 0`,
		`push_failure_time_seconds{instance="",job="conflict"} 1.700000001e+09`,
		`push_time_seconds{instance="",job="anchor"} 1.700000001e+09`,
		`push_time_seconds{instance="",job="conflict"} 0`,
	)
	got := sortedLines(g.Samples())
	require.Equal(t, sortLines(want), got)
	g.Restart()
	require.Equal(t, got, sortedLines(g.Samples()))
}

func sortedLines(text string) []string {
	return sortLines(strings.Split(strings.TrimSuffix(text, "\n"), "\n"))
}

func sortLines(ls []string) []string {
	out := append([]string(nil), ls...)
	sort.Strings(out)
	return out
}
