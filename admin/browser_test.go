package admin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/proxy"
)

// chromiumPath is Debian's chromium, which CI installs.
const chromiumPath = "/usr/bin/chromium"

// TestBrowser drives the web UI in headless Chromium: log in, see the
// overview with colored rows, take a real server offline, see the row
// follow, see a refused action in the error banner, read the events page
// (text escaped), and save a screenshot (to $FULCRUM_SCREENSHOT_DIR if set).
func TestBrowser(t *testing.T) {
	needBrowser(t)
	f := newFixture(t)
	f.s.now = time.Now
	f.rt.changed = make(chan string, 16)
	f.rt.refuse = map[string]error{"web2": fmt.Errorf("set state: %w: real server is being removed", proxy.ErrInvalid)}
	richStatus(f)

	outDir := os.Getenv("FULCRUM_SCREENSHOT_DIR")
	if outDir == "" {
		outDir = t.TempDir()
	} else if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx := startBrowser(t)

	const (
		row1    = `tr[data-service="web"][data-server="web1"]`
		row2    = `tr[data-service="web"][data-server="web2"]`
		offline = row1 + ` button[data-action="maintenance"]`
	)
	step := func(name string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			shot(t, ctx, filepath.Join(outDir, "admin-ui-failure.png"))
			t.Fatalf("%s: %v", name, err)
		}
	}
	attr := func(sel, name string) string {
		t.Helper()
		r, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
		if err != nil {
			t.Fatalf("attribute %s of %s: %v", name, sel, err)
		}
		return r.Value
	}

	step("log in",
		chromedp.Navigate(f.ts.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("login-user")),
		chromedp.SendKeys(chromedp.ID("login-user"), testUser),
		chromedp.SendKeys(chromedp.ID("login-password"), testPassword),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.CSS(row1)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-service="db"][data-server="db1"][data-color="red"]`)),
	)
	for _, tt := range []struct{ sel, name, want string }{
		{row1, "data-color", "green"},
		{row1, "data-state", "ready"},
		{`section[data-service="web"]`, "data-color", "green"},
		{`section[data-service="api"]`, "data-color", "yellow"},
		{`section[data-service="db"]`, "data-color", "red"},
		{`tr[data-service="api"][data-server="api3"]`, "data-color", "blue"},
		// The fallback has a badge of its own; the color keeps its rules.
		{`section[data-service="shop"]`, "data-color", "red"},
		{`section[data-service="shop"]`, "data-fallback-active", "true"},
		{`section[data-service="web"]`, "data-fallback-active", "false"},
		// An L4 service has the same colors.
		{`section[data-service="rdp-dr"]`, "data-color", "yellow"},
		{`tr[data-service="rdp-dr"][data-server="ts1"]`, "data-color", "green"},
		{`tr[data-service="rdp-dr"][data-server="ts2"]`, "data-color", "red"},
	} {
		if got := attr(tt.sel, tt.name); got != tt.want {
			t.Errorf("%s %s = %q, want %q", tt.sel, tt.name, got, tt.want)
		}
	}
	step("fallback badge and pool chip",
		chromedp.WaitVisible(chromedp.CSS(`section[data-service="shop"] .badge[data-v="fallback"]`)),
		chromedp.WaitVisible(chromedp.CSS(`section[data-service="shop"] .chip[data-v="pool"]`)),
		chromedp.WaitNotVisible(chromedp.CSS(`section[data-service="web"] .badge[data-v="fallback"]`)),
	)
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('section[data-service="shop"] .chip.mono:not([data-v])').length`)); err != nil || n != 0 {
		t.Errorf("the pool shows %d listen address chips, %v; want none", n, err)
	}
	badge, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`section[data-service="shop"] .badge[data-v="fallback"]`)))
	if err != nil || badge != "Fallback active" {
		t.Errorf("fallback badge = %q, %v", badge, err)
	}
	mode, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`section[data-service="rdp-dr"] .chip`)))
	if err != nil || mode != "DR/TCP" {
		t.Errorf("the L4 service's mode chip = %q, %v; want DR/TCP", mode, err)
	}
	shot(t, ctx, filepath.Join(outDir, "admin-ui-overview.png"))

	step("take web1 offline", chromedp.Click(chromedp.CSS(offline)))
	select {
	case call := <-f.rt.changed:
		if call != "SetState web web1 "+config.StateMaintenance {
			t.Fatalf("runtime call = %q, want SetState web web1 maintenance", call)
		}
	case <-ctx.Done():
		t.Fatal("the runtime never received SetState")
	}
	step("row follows", chromedp.WaitVisible(chromedp.CSS(row1+`[data-state="maintenance"][data-color="blue"]`)),
		chromedp.WaitVisible(chromedp.CSS(`section[data-service="web"][data-color="blue"]`)))
	if _, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(offline), "disabled")); err != nil {
		t.Fatal(err)
	}

	step("refused action shows the error banner",
		chromedp.Click(chromedp.CSS(row2+` button[data-action="drain"]`)),
		chromedp.WaitVisible(chromedp.ID("error")),
	)
	banner, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("error-text")))
	if err != nil || !strings.Contains(banner, "real server is being removed") {
		t.Errorf("error banner = %q, %v", banner, err)
	}
	if got := attr(row2, "data-state"); got != "ready" {
		t.Errorf("web2 data-state after the refused drain = %q", got)
	}
	shot(t, ctx, filepath.Join(outDir, "admin-ui-offline.png"))

	step("events page",
		chromedp.Click(chromedp.ID("nav-events")),
		chromedp.WaitVisible(chromedp.CSS(`#events-body tr[data-event="3"]`)),
	)
	first, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(`#events-body tr`), "data-event"))
	if err != nil || first.Value != "3" {
		t.Errorf("first event row = %q, %v; want the newest (3)", first.Value, err)
	}
	// The message "<b>drain</b> by admin" is text, not markup.
	bolds, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#events-body b').length`))
	if err != nil || bolds != 0 {
		t.Errorf("event message became markup: %d <b> elements, %v", bolds, err)
	}
	msg, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#events-body tr[data-event="3"]`)))
	if err != nil || !strings.Contains(msg, "<b>drain</b> by admin") {
		t.Errorf("event 3 text = %q, %v", msg, err)
	}
	shot(t, ctx, filepath.Join(outDir, "admin-ui-events.png"))

	step("log out",
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("login-submit")),
	)
	shot(t, ctx, filepath.Join(outDir, "admin-ui-login.png"))
	t.Logf("screenshots in %s", outDir)
}

// shot saves a PNG of the whole page.
func shot(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("save screenshot: %v", err)
	}
}

// richStatus gives the fake runtime a third, yellow service with a server
// offline, a pool whose fallback answers, recent checks and non-zero rates,
// as an operator would see.
func richStatus(f *fixture) {
	now := time.Now()
	f.rt.mu.Lock()
	for i := range f.rt.status.Services {
		for j := range f.rt.status.Services[i].RealServers {
			f.rt.status.Services[i].RealServers[j].Check.Time = now.Add(-time.Duration(j+1) * 700 * time.Millisecond)
		}
	}
	db := &f.rt.status.Services[1].RealServers[0]
	db.Check.Detail = "connect: connection refused"
	db.Check.Type = "tcp"
	db.Check.Latency = 300 * time.Microsecond
	db.Active, db.Requests = 0, 0
	api := proxy.ServiceStatus{
		Name: "api", Mode: "http", Scheduler: "least_conn", Listen: []string{"10.0.0.10:443", "[2001:db8::10]:443"},
		Color: proxy.ColorYellow, ActiveConns: 42, Requests: 90000,
	}
	for i, h := range []string{"up", "down", "up"} {
		rs := proxy.RealServerStatus{
			Name: fmt.Sprintf("api%d", i+1), Address: fmt.Sprintf("10.0.2.%d:8443", i+1), Color: proxy.ColorGreen,
			Health: h, State: config.StateReady, Weight: 10, EffectiveWeight: 10, Active: int64(14 + i),
			Requests: 30000,
			Check: proxy.CheckStatus{Type: "https", OK: true, Detail: "HTTP 200 OK", Latency: 4200 * time.Microsecond,
				Time: now.Add(-1500 * time.Millisecond)},
		}
		if h == "down" {
			rs.Color, rs.Active = proxy.ColorRed, 0
			rs.Check.OK, rs.Check.Detail = false, "HTTP 503 Service Unavailable (want 200)"
		}
		if i == 2 {
			rs.Color, rs.State, rs.Active = proxy.ColorBlue, config.StateDrain, 2
			rs.EffectiveWeight = 5
			rs.Check.Agent = "50%"
		}
		api.RealServers = append(api.RealServers, rs)
	}
	// A pool (no listen) whose only real server is in maintenance: its
	// fallback answers.
	shop := proxy.ServiceStatus{
		Name: "shop", Mode: "http", Scheduler: "round_robin", Pool: true, Color: proxy.ColorRed,
		Fallback: "127.0.0.1:8099", FallbackActive: true, FallbackRequests: 7,
		RealServers: []proxy.RealServerStatus{{
			Name: "shop1", Address: "10.0.3.1:80", Color: proxy.ColorBlue, Health: "up", State: config.StateMaintenance,
			Weight: 1, EffectiveWeight: 1, Check: proxy.CheckStatus{Type: "tcp", OK: true, Time: now.Add(-time.Second)},
		}},
	}
	// An L4 (IPVS) service, one real server up and one down: yellow, by
	// the same rules as the L7 services.
	dr := proxy.ServiceStatus{
		Name: "rdp-dr", Mode: "dr", Protocol: "tcp", Scheduler: "weighted_least_conn", Listen: []string{"10.0.0.30:3389"},
		Color: proxy.ColorYellow,
		RealServers: []proxy.RealServerStatus{{
			Name: "ts1", Address: "10.0.0.41:3389", Color: proxy.ColorGreen, Health: "up", State: config.StateReady,
			Weight: 1, EffectiveWeight: 1, Check: proxy.CheckStatus{Type: "tcp", OK: true, Time: now.Add(-time.Second)},
		}, {
			Name: "ts2", Address: "10.0.0.42:3389", Color: proxy.ColorRed, Health: "down", State: config.StateReady,
			Weight: 1, EffectiveWeight: 1, Check: proxy.CheckStatus{Type: "tcp", Detail: "connection refused", Time: now.Add(-time.Second)},
		}},
	}
	f.rt.status.Services = []proxy.ServiceStatus{f.rt.status.Services[0], api, shop, dr, f.rt.status.Services[1]}
	f.rt.mu.Unlock()

	// Two samples five seconds apart give every service a rate.
	t0 := now.Add(-5 * time.Second)
	f.s.rates.observe(t0, f.rt.Status())
	st := f.rt.Status()
	for i := range st.Services {
		if st.Services[i].Color == proxy.ColorRed {
			continue
		}
		st.Services[i].Requests += uint64(250 * (i + 1))
		st.Services[i].Errors += uint64(i)
		for j := range st.Services[i].RealServers {
			if st.Services[i].RealServers[j].Health == "up" {
				st.Services[i].RealServers[j].Requests += uint64(100 + 30*j)
			}
		}
	}
	f.s.rates.observe(now, st)
}

// needBrowser skips a test without the headless browser.
func needBrowser(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("headless browser test needs %s (Debian package chromium): %v", chromiumPath, err)
	}
	if testing.Short() {
		t.Skip("headless browser test skipped in -short mode")
	}
}

// startBrowser starts headless Chromium and returns a context for it that
// ends within 60s, and with the test.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.WindowSize(1440, 1000),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(browserCtx); err != nil { // starts the browser, without a timeout (see chromedp.Run)
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	ctx, cancel := context.WithTimeout(browserCtx, 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
