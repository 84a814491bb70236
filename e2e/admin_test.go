package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

const (
	adminUser     = "admin"
	adminPassword = "s3cret-e2e"
)

// adminTable returns an [admin] table on a free address with one user, and
// the API's base URL.
func adminTable(t testing.TB) (table, base string) {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(adminPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	table = fmt.Sprintf("\n[admin]\nlisten = %q\n\n[[admin.user]]\nname = %q\npassword_hash = %q\n", addr, adminUser, hash)
	return table, "http://" + addr
}

// api calls the admin API with Basic auth and returns the status and body.
func api(t testing.TB, method, url, body string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(adminUser, adminPassword)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// ctl runs `fulcrum ctl -url base args...` with the admin password in the
// environment.
func ctl(t testing.TB, base string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(fulcrumBin, append([]string{"ctl", "-url", base}, args...)...)
	cmd.Env = append(os.Environ(), "FULCRUM_USER="+adminUser, "FULCRUM_PASSWORD="+adminPassword)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// mustCtl runs ctl and fails the test unless it exits 0.
func mustCtl(t testing.TB, base string, args ...string) string {
	t.Helper()
	out, errOut, code := ctl(t, base, args...)
	if code != 0 {
		t.Fatalf("fulcrum ctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// statusOf returns the API's view of one real server.
func statusOf(t testing.TB, base, service, server string) map[string]any {
	t.Helper()
	code, body := api(t, "GET", base+"/api/v1/services/"+service+"/servers/"+server, "")
	if code != 200 {
		t.Fatalf("GET server %s/%s: %d %s", service, server, code, body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("server status: %v: %s", err, body)
	}
	return m
}

// nameServer is a tcp-mode real server: it sends its name on connect, then
// echoes lines.
func nameServer(t *testing.T, name string) *tcpBackend {
	return newTCPBackend(t, name, func(c *net.TCPConn) {
		fmt.Fprintf(c, "%s\n", name)
		io.Copy(c, c)
	})
}

// tcpClient connects through the VIP and returns the connection and the
// name of the real server that answered.
func tcpClient(t *testing.T, vip string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, err := net.Dial("tcp", vip)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	name, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read the real server's name: %v", err)
	}
	return c, br, strings.TrimSpace(name)
}

// TestDrainVersusMaintenance: a drained real server keeps its established
// connections but gets no new clients; maintenance cuts its connections too.
func TestDrainVersusMaintenance(t *testing.T) {
	a, b := nameServer(t, "a"), nameServer(t, "b")
	vip := freeAddr(t)
	table, base := adminTable(t)
	startFulcrum(t, config{
		services: []service{{listen: []string{vip}, opts: "mode = \"tcp\"\n", real: []real{a.real(), b.real()}}},
		extra:    table,
	})
	conn, br, first := tcpClient(t, vip)
	other := map[string]string{"a": "b", "b": "a"}[first]
	echo := func() error {
		if _, err := io.WriteString(conn, "ping\n"); err != nil {
			return err
		}
		line, err := br.ReadString('\n')
		if err == nil && line != "ping\n" {
			err = fmt.Errorf("echo %q", line)
		}
		return err
	}
	newClients := func() map[string]int {
		got := map[string]int{}
		for range 4 {
			c, _, name := tcpClient(t, vip)
			got[name]++
			c.Close()
		}
		return got
	}

	if out := mustCtl(t, base, "drain", "web/"+first); !strings.Contains(out, "drain") {
		t.Errorf("ctl drain printed %q", out)
	}
	if err := echo(); err != nil {
		t.Fatalf("established connection to the drained server: %v", err)
	}
	if got := newClients(); got[other] != 4 {
		t.Errorf("new clients while %s drains: %v, want all on %s", first, got, other)
	}
	if st := statusOf(t, base, "web", first); st["state"] != "drain" || st["color"] != "blue" {
		t.Errorf("status of the drained server: state %v, color %v", st["state"], st["color"])
	}
	if err := echo(); err != nil {
		t.Fatalf("established connection to the drained server, later: %v", err)
	}

	mustCtl(t, base, "maint", "web/"+first)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("the connection to a server in maintenance is still open")
	} else if isTimeout(err) {
		t.Error("the connection to a server in maintenance was not closed within 5s")
	}
	if got := newClients(); got[other] != 4 {
		t.Errorf("new clients while %s is in maintenance: %v", first, got)
	}

	mustCtl(t, base, "ready", "web/"+first)
	if got := newClients(); got["a"] != 2 || got["b"] != 2 {
		t.Errorf("new clients after ready: %v, want 2 and 2", got)
	}
}

// TestAdminAPIAndCtl drives the admin API and `fulcrum ctl` through the
// binary: status, weights, adding and removing real servers, reloads (a
// broken file is refused with its problems), events, metrics, and bad input.
func TestAdminAPIAndCtl(t *testing.T) {
	a, b, c := newHTTPBackend(t, "a", nil), newHTTPBackend(t, "b", nil), newHTTPBackend(t, "c", nil)
	vip := freeAddr(t)
	table, base := adminTable(t)
	cfg := config{
		services: []service{{listen: []string{vip}, opts: "scheduler = \"weighted_round_robin\"\n", real: []real{a.real(""), b.real("")}}},
		extra:    table,
	}
	f := startFulcrum(t, cfg)

	// Bad input is refused with the right status and a JSON error.
	bad := []struct {
		name, method, path, body string
		want                     int
	}{
		{"unknown service", "GET", "/api/v1/services/nope", "", 404},
		{"unknown server", "PUT", "/api/v1/services/web/servers/zz/state", `{"state":"drain"}`, 404},
		{"bad state", "PUT", "/api/v1/services/web/servers/a/state", `{"state":"offline"}`, 400},
		{"bad weight", "PUT", "/api/v1/services/web/servers/a/weight", `{"weight":-3}`, 400},
		{"not JSON", "PUT", "/api/v1/services/web/servers/a/weight", `weight=3`, 400},
		{"bad address", "POST", "/api/v1/services/web/servers", `{"name":"x","address":"example.com:80"}`, 400},
		{"duplicate name", "POST", "/api/v1/services/web/servers", fmt.Sprintf(`{"name":"a","address":%q}`, c.addr), 409},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			code, body := api(t, tt.method, base+tt.path, tt.body)
			var e struct{ Error string }
			if code != tt.want || json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
				t.Errorf("%s %s: %d %s; want %d with a JSON error", tt.method, tt.path, code, body, tt.want)
			}
		})
	}
	// Without credentials, or with wrong ones: 401.
	for _, auth := range []bool{false, true} {
		req, _ := http.NewRequest("GET", base+"/api/v1/status", nil)
		if auth {
			req.SetBasicAuth(adminUser, "wrong")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != "" {
			t.Errorf("status with auth=%v: %d (WWW-Authenticate %q), want 401 without a Basic challenge", auth, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}

	// Weight through ctl: 3:1.
	mustCtl(t, base, "weight", "web/a", "3")
	if got := tally(t, vip, 8); got["a\n"] != 6 || got["b\n"] != 2 {
		t.Errorf("after weight 3: %v", got)
	}
	// Add c through ctl; it takes traffic; remove a.
	mustCtl(t, base, "add", "web", "c", c.addr)
	if got := tally(t, vip, 10); got["c\n"] == 0 {
		t.Errorf("after adding c: %v", got)
	}
	mustCtl(t, base, "remove", "web/a")
	if got := tally(t, vip, 6); got["a\n"] != 0 {
		t.Errorf("after removing a: %v", got)
	}
	out := mustCtl(t, base, "status")
	for _, want := range []string{"web", "b", "c", b.addr, c.addr} {
		if !strings.Contains(out, want) {
			t.Errorf("ctl status lacks %q:\n%s", want, out)
		}
	}

	// A broken file: reload refused with its problems, over the API and ctl.
	broken := cfg
	broken.services = []service{{listen: []string{vip}, opts: "scheduler = \"fastest\"\n", real: []real{a.real("")}}}
	f.rewrite(broken)
	code, body := api(t, "POST", base+"/api/v1/reload", "")
	if code != 422 || !strings.Contains(body, "virtual_service.scheduler") {
		t.Errorf("reload of a broken file: %d %s; want 422 naming virtual_service.scheduler", code, body)
	}
	out, errOut, exit := ctl(t, base, "reload")
	if exit != 1 || !strings.Contains(out+errOut, `unknown scheduler "fastest"`) {
		t.Errorf("ctl reload of a broken file: exit %d\n%s%s", exit, out, errOut)
	}
	if got := tally(t, vip, 4); got["b\n"]+got["c\n"] != 4 {
		t.Errorf("after a refused reload: %v (the running configuration must stay)", got)
	}
	// A good file: the file is the truth again (a back, c gone) while b
	// keeps its counters.
	before := statusOf(t, base, "web", "b")["requests"].(float64)
	f.rewrite(cfg)
	if out := mustCtl(t, base, "reload"); out == "" {
		t.Error("ctl reload printed nothing")
	}
	if got := tally(t, vip, 4); got["a\n"] != 2 || got["b\n"] != 2 {
		t.Errorf("after reload: %v", got)
	}
	if after := statusOf(t, base, "web", "b")["requests"].(float64); after < before+2 {
		t.Errorf("b's request counter went from %v to %v across the reload; want it kept", before, after)
	}

	// Events record it all.
	code, body = api(t, "GET", base+"/api/v1/events", "")
	for _, want := range []string{"weight set to 3", "added", "removed", "reload refused", "configuration reloaded"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("events lack %q: %d %s", want, code, body)
		}
	}
	// Metrics.
	code, body = api(t, "GET", base+"/metrics", "")
	for _, want := range []string{
		`fulcrum_real_server_requests_total{real_server="b",service="web"}`,
		`fulcrum_real_server_responses_total{class="2xx",real_server="b",service="web"}`,
		`fulcrum_real_server_up{real_server="a",service="web"} 1`,
		`fulcrum_service_queue_length{service="web"} 0`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics lack %s (status %d)", want, code)
		}
	}
	// The default starts event loops, which served the GETs above (once
	// the pool held a connection to each real server).
	for _, re := range []string{`(?m)^fulcrum_event_loops [1-9]`, `(?m)^fulcrum_event_loop_exchanges_total\{path="loop"\} [1-9]`} {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("metrics lack %s", re)
		}
	}
	if req, _ := http.NewRequest("GET", base+"/metrics", nil); req != nil {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("metrics without credentials: %d, want 401 (metrics_auth defaults to true)", resp.StatusCode)
			}
		}
	}
}
