package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium is Debian's headless-capable browser, which .ci/run installs.
const chromium = "/usr/bin/chromium"

// TestWebUITakeOffline logs in to the web UI of the real binary in headless
// Chromium, presses "Take offline" on a real server, and checks that the
// real server then receives no traffic. The screenshot is saved in the
// test's artifact directory (go test -artifacts keeps it) and, if set, in
// $FULCRUM_SCREENSHOT_DIR.
func TestWebUITakeOffline(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("the browser test needs %s (Debian package chromium): %v", chromium, err)
	}
	a, b := newHTTPBackend(t, "a", nil), newHTTPBackend(t, "b", nil)
	vip := freeAddr(t)
	table, base := adminTable(t)
	startFulcrum(t, config{
		services: []service{{listen: []string{vip}, real: []real{a.real(""), b.real("")}}},
		extra:    table,
	})
	if got := tally(t, vip, 10); got["a\n"] != 5 || got["b\n"] != 5 {
		t.Fatalf("before: %v", got)
	}

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 800))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(browser, 60*time.Second)
	defer cancel()

	const (
		rowA    = `tr[data-service="web"][data-server="a"]`
		offline = rowA + ` button[data-action="maintenance"]`
	)
	screenshot := func(name string) {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 gives a PNG (below: JPEG)
		if err != nil {
			t.Errorf("screenshot: %v", err)
			return
		}
		dirs := []string{t.ArtifactDir()}
		if d := os.Getenv("FULCRUM_SCREENSHOT_DIR"); d != "" {
			dirs = append(dirs, d)
		}
		for _, d := range dirs {
			if err := os.WriteFile(filepath.Join(d, name), png, 0o644); err != nil {
				t.Errorf("save screenshot: %v", err)
			}
		}
		t.Logf("screenshot %s saved in %v", name, dirs)
	}
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			screenshot("webui-failure.png")
			t.Fatalf("%s: %v", what, err)
		}
	}
	do("log in",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.ID("login-user")),
		chromedp.SendKeys(chromedp.ID("login-user"), adminUser),
		chromedp.SendKeys(chromedp.ID("login-password"), adminPassword),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.CSS(rowA+`[data-color="green"][data-state="ready"]`)),
	)
	do("take a offline",
		chromedp.Click(chromedp.CSS(offline)),
		chromedp.WaitVisible(chromedp.CSS(rowA+`[data-state="maintenance"][data-color="blue"]`)),
		chromedp.WaitVisible(chromedp.CSS(`section[data-service="web"][data-color="blue"]`)),
	)
	before := a.reqs.Load()
	if got := tally(t, vip, 20); got["b\n"] != 20 {
		t.Errorf("after Take offline: %v, want every request on b", got)
	}
	if n := a.reqs.Load() - before; n != 0 {
		t.Errorf("a received %d requests after it was taken offline", n)
	}
	screenshot("webui-offline.png")
	if st := statusOf(t, base, "web", "a"); st["state"] != "maintenance" {
		t.Errorf("API state of a = %v", st["state"])
	}
	do("bring it online",
		chromedp.Click(chromedp.CSS(rowA+` button[data-action="ready"]`)),
		chromedp.WaitVisible(chromedp.CSS(rowA+`[data-state="ready"][data-color="green"]`)),
	)
	if got := tally(t, vip, 10); got["a\n"] != 5 {
		t.Errorf("after Bring online: %v", got)
	}
}
