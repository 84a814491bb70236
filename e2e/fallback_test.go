package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// serviceStatus is the API's view of one virtual service, the fields the
// fallback tests read.
type serviceStatus struct {
	Name             string   `json:"name"`
	Color            string   `json:"color"`
	Listen           []string `json:"listen"`
	Pool             bool     `json:"pool"`
	Fallback         string   `json:"fallback"`
	FallbackActive   bool     `json:"fallback_active"`
	FallbackRequests int      `json:"fallback_requests"`
}

func serviceOf(t testing.TB, base, service string) serviceStatus {
	t.Helper()
	code, body := api(t, "GET", base+"/api/v1/services/"+service, "")
	if code != 200 {
		t.Fatalf("GET service %s: %d %s", service, code, body)
	}
	var st serviceStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("service status: %v: %s", err, body)
	}
	return st
}

// TestFallback: the fallback answers while every real server is down or in
// maintenance, and stops as soon as one is back; the API, the metrics and
// `fulcrum ctl status` show when it is active; the access log names it.
func TestFallback(t *testing.T) {
	needCurl(t)
	a := newSwitchableBackend(t, "a")
	sorry := newHTTPBackend(t, "sorry", nil)
	table, base := adminTable(t)
	vip := freeAddr(t)
	f := startFulcrum(t, config{
		services: []service{{
			listen: []string{vip},
			opts:   fmt.Sprintf("fallback = %q\n", sorry.addr),
			health: "type = \"http\"\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n",
			real:   []real{a.real("")},
		}},
		extra: table,
	})
	url := "http://" + vip + "/page?q=1"
	expect := func(step, want string, active bool) {
		t.Helper()
		if status, body := curlStatus(t, url); status != 200 || body != want {
			t.Fatalf("%s: got %d %q, want 200 %q", step, status, body, want)
		}
		st := serviceOf(t, base, "web")
		if st.Fallback != sorry.addr || st.FallbackActive != active {
			t.Errorf("%s: API fallback %q active %t, want %q %t", step, st.Fallback, st.FallbackActive, sorry.addr, active)
		}
	}
	isHealth := func(msg string, after int) func(logEntry) bool {
		n := 0
		return func(e logEntry) bool {
			if e.str("msg") == msg && e.str("real_server") == "a" {
				n++
			}
			return n > after
		}
	}

	expect("a real server up", "a", false)

	a.stop()
	f.waitLog(5*time.Second, "a down", isHealth("real server is down", 0))
	expect("every real server down", "sorry\n", true)
	if sorry.reqs.Load() != 1 {
		t.Errorf("the fallback served %d requests, want 1", sorry.reqs.Load())
	}
	code, metrics := api(t, "GET", base+"/metrics", "")
	if code != 200 || !strings.Contains(metrics, `fulcrum_service_fallback_active{service="web"} 1`) {
		t.Errorf("metrics (status %d) lack fulcrum_service_fallback_active 1", code)
	}
	if out := mustCtl(t, base, "status"); !strings.Contains(out, "fallback "+sorry.addr+" [ACTIVE]") {
		t.Errorf("fulcrum ctl status does not show the fallback active:\n%s", out)
	}

	a.start()
	f.waitLog(5*time.Second, "a up", isHealth("real server is up", 0))
	expect("the real server back", "a", false)

	// Maintenance, an operator's choice, is no different.
	if code, body := api(t, "PUT", base+"/api/v1/services/web/servers/a/state", `{"state":"maintenance"}`); code != 200 {
		t.Fatalf("set maintenance: %d %s", code, body)
	}
	expect("the real server in maintenance", "sorry\n", true)
	if code, body := api(t, "PUT", base+"/api/v1/services/web/servers/a/state", `{"state":"ready"}`); code != 200 {
		t.Fatalf("set ready: %d %s", code, body)
	}
	expect("the real server ready", "a", false)

	fallbackLines := func() (lines []logEntry) {
		for _, e := range f.accessLogs() {
			if e.str("real_server") == "fallback" {
				lines = append(lines, e)
			}
		}
		return lines
	}
	waitFor(t, 5*time.Second, "the fallback's access-log lines", func() bool { return len(fallbackLines()) >= 2 })
	fromFallback := fallbackLines()
	if len(fromFallback) != 2 || fromFallback[0].num("status") != 200 || fromFallback[0].str("target") != "/page?q=1" {
		t.Errorf("access-log lines naming the fallback: %v, want 2 with status 200", fromFallback)
	}
	if st := serviceOf(t, base, "web"); st.FallbackRequests != 2 {
		t.Errorf("API fallback_requests = %d, want 2", st.FallbackRequests)
	}
}

// TestFallbackPool: a pool (a virtual service without listen) has its own
// fallback, which answers the requests a route sends it while the pool has
// no real server available; the API shows the pool as such.
func TestFallbackPool(t *testing.T) {
	needCurl(t)
	app := newHTTPBackend(t, "app", nil)
	site := newHTTPBackend(t, "site", nil)
	sorry := newHTTPBackend(t, "sorry", nil)
	table, base := adminTable(t)
	vip := freeAddr(t)
	startFulcrum(t, config{
		services: []service{
			{
				listen: []string{vip},
				opts:   "[[virtual_service.route]]\npath_prefix = \"/app/\"\nto = \"app\"\n",
				real:   []real{site.real("")},
			},
			{
				name: "app",
				opts: fmt.Sprintf("fallback = %q\n", sorry.addr),
				real: []real{app.real("state = \"maintenance\"\n")},
			},
		},
		extra: table,
	})
	if status, body := curlStatus(t, "http://"+vip+"/app/x"); status != 200 || body != "sorry\n" {
		t.Errorf("routed to the pool: got %d %q, want the pool's fallback", status, body)
	}
	if status, body := curlStatus(t, "http://"+vip+"/other"); status != 200 || body != "site\n" {
		t.Errorf("not routed: got %d %q, want the listening service's own real server", status, body)
	}
	st := serviceOf(t, base, "app")
	if !st.Pool || len(st.Listen) != 0 || !st.FallbackActive || st.Color != "red" {
		t.Errorf("API pool status = %+v, want a pool with its fallback active", st)
	}
	if web := serviceOf(t, base, "web"); web.Pool || web.FallbackActive || web.Fallback != "" {
		t.Errorf("API listening service status = %+v", web)
	}
	if code, body := api(t, "PUT", base+"/api/v1/services/app/servers/app/state", `{"state":"ready"}`); code != 200 {
		t.Fatalf("set ready: %d %s", code, body)
	}
	if status, body := curlStatus(t, "http://"+vip+"/app/x"); status != 200 || body != "app\n" {
		t.Errorf("routed to the pool, its server ready: got %d %q", status, body)
	}
}
