package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// chromiumBin is Debian's Chromium.
const chromiumBin = "/usr/bin/chromium"

var updateScreenshots = flag.Bool("update-screenshots", false, "write the web UI screenshots to docs/screenshots")

// screenshotDir is where the browser test saves its screenshots: the
// committed docs/screenshots with -update-screenshots, else an artifact
// directory ($PUSHRELAY_ARTIFACTS or .build/artifacts in the module).
func screenshotDir(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot()
	require.NoError(t, err)
	dir := filepath.Join(root, ".build", "artifacts")
	if d := os.Getenv("PUSHRELAY_ARTIFACTS"); d != "" {
		dir = d
	}
	if *updateScreenshots {
		dir = filepath.Join(root, "docs", "screenshots")
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// browser starts a headless Chromium for the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	requireDep(t, "Chromium (Debian package chromium)", executable(chromiumBin))
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumBin),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

// TestWebUI drives the web UI in a real headless Chromium: the group list,
// expanding a group, deleting it through the confirmation dialog, the span
// metrics and status pages, and a phone-sized viewport.
func TestWebUI(t *testing.T) {
	e2eTest(t)
	p, zipkinAddr := startPushrelayReceiver(t, "--traces.zipkin.listen-address", "--web.enable-admin-api", "--staleness.ttl=1h")
	send(t, p, "PUT", "/metrics/job/wm_nightly_import/instance/worker-1", "# HELP job_records_processed Records processed by the last run.\n# TYPE job_records_processed gauge\njob_records_processed 1234\n# TYPE job_duration_seconds histogram\njob_duration_seconds_bucket{le=\"1\"} 2\njob_duration_seconds_bucket{le=\"+Inf\"} 3\njob_duration_seconds_sum 4.5\njob_duration_seconds_count 3\n", 200)
	send(t, p, "PUT", "/metrics/job/backup", "backup_last_size_bytes 123456\n", 200)
	now := time.Now().UnixMicro()
	zipkin := `[{"traceId":"5af7183fb1d4cf5f","id":"6b221d5bc9e6496c","name":"GET /api/jobs","kind":"SERVER","timestamp":` + strconv.FormatInt(now-5000, 10) + `,"duration":4000,"localEndpoint":{"serviceName":"windmill-server"}},
		{"traceId":"5af7183fb1d4cf5f","id":"6b221d5bc9e6496d","name":"job","timestamp":` + strconv.FormatInt(now-3000, 10) + `,"duration":2000,"localEndpoint":{"serviceName":"windmill-worker"},"tags":{"error":"true"}}]`
	r := do(t, "POST", "http://"+zipkinAddr+"/api/v2/spans", map[string][]string{"Content-Type": {"application/json"}}, []byte(zipkin))
	require.Equal(t, 202, r.status, string(r.body))

	ctx := browser(t)
	// The delete buttons ask for confirmation: accept it.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	dir := screenshotDir(t)
	save := func(name string) {
		t.Helper()
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(90))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), shot, 0o644))
	}
	count := func(sel string) int {
		t.Helper()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("`+sel+`").length`))
		require.NoError(t, err)
		return n
	}
	const windmill = `//section[contains(., "wm_nightly_import")]`

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(p.url+"/"),
		chromedp.WaitVisible(chromedp.CSS(`section.group`)),
	))
	require.Equal(t, 2, count("section.group"))

	// Expand the Windmill group and read its metrics.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.Search(windmill+`//summary`)),
		chromedp.WaitVisible(chromedp.Search(windmill+`//pre`)),
	))
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.Search(windmill+`//details`)))
	require.NoError(t, err)
	require.Contains(t, text, `job_records_processed{instance="worker-1",job="wm_nightly_import"} 1234`)
	require.Contains(t, text, "Records processed by the last run.")
	require.Contains(t, text, "TTL 1h0m0s")
	save("groups.png")

	// Delete it: the confirmation is accepted and the page comes back
	// without the group.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.Search(windmill+`//button[contains(., "Delete group")]`)),
		chromedp.WaitNotPresent(chromedp.Search(windmill)),
	))
	require.Equal(t, 1, count("section.group"))
	var api struct {
		Data []struct {
			Labels map[string]string `json:"labels"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(do(t, "GET", p.url+"/api/v1/metrics", nil, nil).body, &api))
	require.Len(t, api.Data, 1)
	require.Equal(t, "backup", api.Data[0].Labels["job"], "the deletion reached the store")

	// Span metrics and status pages.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(p.url+"/spans"),
		chromedp.WaitVisible(chromedp.CSS(`table.services`)),
	))
	spans, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`table.services`)))
	require.NoError(t, err)
	require.Contains(t, spans, "windmill-server")
	require.Contains(t, spans, "windmill-worker")
	require.Contains(t, spans, "100.0 %", "the worker's only span failed")
	save("spans.png")

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(p.url+"/status"),
		chromedp.WaitVisible(chromedp.CSS(`main table`)),
	))
	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`main`)))
	require.NoError(t, err)
	require.Contains(t, status, "web.enable-admin-api")
	require.Contains(t, status, "start time")
	save("status.png")

	// A phone: the page fits the viewport without horizontal scrolling.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)),
		chromedp.Navigate(p.url+"/"),
		chromedp.WaitVisible(chromedp.CSS(`section.group`)),
	))
	scrollWidth, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
	require.NoError(t, err)
	innerWidth, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.innerWidth`))
	require.NoError(t, err)
	require.LessOrEqual(t, scrollWidth, innerWidth, "no horizontal scrolling on a phone")
	save("phone.png")
	t.Logf("screenshots in %s", dir)
}
