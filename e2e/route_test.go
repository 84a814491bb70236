package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// Content switching (issue 8): routes to pools, redirects, strip_prefix,
// header rules and allow/deny, through the binary with curl.

// echoBackend is a real server that answers "NAME TARGET" and, one per
// line, the request fields the tests look at; its response carries
// X-Backend, Server and X-Internal.
func echoBackend(t *testing.T, name string) *httpBackend {
	return newHTTPBackend(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Backend", name)
		w.Header().Set("Server", "echo/1")
		w.Header().Set("X-Internal", "secret")
		var lines []string
		for _, k := range []string{"X-Env", "X-Pool", "X-Debug", "X-Canary"} {
			for _, v := range r.Header[k] {
				lines = append(lines, k+": "+v)
			}
		}
		sort.Strings(lines)
		fmt.Fprintf(w, "%s %s\n%s", name, r.RequestURI, strings.Join(lines, "\n"))
	}))
}

// route renders a [[virtual_service.route]] table from key = value lines.
func route(lines ...string) string {
	return "\n[[virtual_service.route]]\n" + strings.Join(lines, "\n") + "\n"
}

// curlHead runs curl for one request and returns the status, the response
// header and the body. No redirect is followed.
func curlHead(t *testing.T, args ...string) (int, http.Header, string) {
	t.Helper()
	r := curl(t, append([]string{"-D", "/dev/stderr", "-o", "-"}, args...)...)
	if r.code != 0 {
		t.Fatalf("curl %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	// The header dump may hold interim answers (none here): the last head.
	heads := strings.Split(strings.TrimSpace(r.stderr), "\r\n\r\n")
	tp := textproto.NewReader(bufio.NewReader(strings.NewReader(heads[len(heads)-1] + "\r\n\r\n")))
	line, err := tp.ReadLine()
	if err != nil {
		t.Fatalf("curl %s: no status line in %q", strings.Join(args, " "), r.stderr)
	}
	var proto string
	var status int
	fmt.Sscanf(line, "%s %d", &proto, &status)
	h, err := tp.ReadMIMEHeader()
	if err != nil && err != io.EOF {
		t.Fatalf("curl %s: header %q: %v", strings.Join(args, " "), r.stderr, err)
	}
	return status, http.Header(h), r.stdout
}

// routedSite is a listening service "site" with routes to the pools "api",
// "static" and "canary", redirects, header rules and a deny list, each pool
// with one echo real server named after it; the site's own is "default".
func routedSite(t *testing.T, vip string, extra string) config {
	b := map[string]*httpBackend{}
	for _, n := range []string{"default", "api", "static", "canary"} {
		b[n] = echoBackend(t, n)
	}
	opts := `trusted_proxies = ["127.0.0.1/32"]
deny = ["192.0.2.0/24"]
` + extra +
		route(`name = "api-host"`, `host = "api.example.com"`, `to = "api"`) +
		route(`name = "wild"`, `host = "*.static.example.com"`, `to = "static"`) +
		route(`name = "versioned"`, `path_regex = "^/v[0-9]+/"`, `to = "api"`) +
		route(`name = "assets"`, `path_prefix = "/assets/"`, `to = "static"`, `strip_prefix = true`) +
		route(`name = "writes"`, `path_prefix = "/form"`, `methods = ["POST", "PUT"]`, `to = "api"`) +
		route(`name = "canary"`, `header = "X-Canary: 1|yes"`, `to = "canary"`) +
		route(`path_prefix = "/old/"`, `redirect = "https://www.example.com/new/"`) + // #7, 302
		route(`name = "r301"`, `path_prefix = "/r301"`, `redirect = "https://www.example.com/new/"`, `redirect_code = 301`) +
		route(`name = "r307"`, `path_prefix = "/r307"`, `redirect = "https://www.example.com/new"`, `redirect_code = 307`) +
		route(`name = "r308"`, `path_regex = "^/r308"`, `redirect = "https://www.example.com/"`, `redirect_code = 308`) +
		`
[virtual_service.request_headers]
set = { "X-Env" = "prod" }
remove = ["X-Debug"]
[virtual_service.response_headers]
set = { "Strict-Transport-Security" = "max-age=31536000" }
remove = ["Server"]
`
	cfg := config{services: []service{
		{name: "site", listen: []string{vip}, opts: opts, real: []real{b["default"].real("")}},
		{name: "api", opts: `
[virtual_service.request_headers]
set = { "X-Pool" = "api", "X-Env" = "api" }
[virtual_service.response_headers]
remove = ["X-Internal"]
`, real: []real{b["api"].real("")}},
		{name: "static", real: []real{b["static"].real("")}},
		{name: "canary", real: []real{b["canary"].real("")}},
	}}
	return cfg
}

// TestRouting: host, wildcard host, prefix, regexp, method and header
// routes pick their pools, and the default pool gets the rest; redirects
// (each code) keep the path and query; strip_prefix; header rules both
// ways; the access log names route and pool.
func TestRouting(t *testing.T) {
	needCurl(t)
	vip := freeAddr(t)
	cfg := routedSite(t, vip, "")
	f := startFulcrum(t, cfg)
	base := "http://" + vip

	tests := []struct {
		name  string
		args  []string
		first string // the body's first line: real server and the target it got
		route string
		pool  string
	}{
		{"default", []string{base + "/page?q=1"}, "default /page?q=1", "-", "site"},
		{"host", []string{"-H", "Host: API.example.com:8080", base + "/page"}, "api /page", "api-host", "api"},
		{"wildcard host", []string{"-H", "Host: img.static.example.com", base + "/a.png"}, "static /a.png", "wild", "static"},
		{"wildcard not apex", []string{"-H", "Host: static.example.com", base + "/a.png"}, "default /a.png", "-", "site"},
		{"regexp", []string{base + "/v2/users?id=7"}, "api /v2/users?id=7", "versioned", "api"},
		{"regexp no match", []string{base + "/vx/users"}, "default /vx/users", "-", "site"},
		{"strip_prefix", []string{base + "/assets/css/site.css?v=3"}, "static /css/site.css?v=3", "assets", "static"},
		{"strip_prefix to /", []string{base + "/assets/"}, "static /", "assets", "static"},
		{"method", []string{"-X", "POST", "-d", "x=1", base + "/form"}, "api /form", "writes", "api"},
		{"method not listed", []string{base + "/form"}, "default /form", "-", "site"},
		{"header", []string{"-H", "X-Canary: yes", base + "/"}, "canary /", "canary", "canary"},
		{"header other value", []string{"-H", "X-Canary: no", base + "/"}, "default /", "-", "site"},
	}
	for i, tt := range tests {
		status, h, body := curlHead(t, append([]string{"-H", "X-Debug: 1"}, tt.args...)...)
		first, rest, _ := strings.Cut(body, "\n")
		if status != 200 || first != tt.first {
			t.Errorf("%s: %d %q, want 200 %q", tt.name, status, first, tt.first)
		}
		// Request rules: the site's, then the pool's.
		wantEnv := "X-Env: prod"
		if tt.pool == "api" {
			wantEnv = "X-Env: api\nX-Pool: api"
		}
		if strings.Contains(rest, "X-Debug") || !strings.Contains(rest, wantEnv) {
			t.Errorf("%s: the real server got %q, want %q and no X-Debug", tt.name, rest, wantEnv)
		}
		// Response rules: the site's, then the pool's.
		if h.Get("Server") != "" || h.Get("Strict-Transport-Security") != "max-age=31536000" {
			t.Errorf("%s: response header %v: want no Server, and Strict-Transport-Security", tt.name, h)
		}
		if (h.Get("X-Internal") == "") != (tt.pool == "api") {
			t.Errorf("%s: X-Internal %q: the api pool removes it, the others keep it", tt.name, h.Get("X-Internal"))
		}
		waitFor(t, 5*time.Second, "access log line", func() bool { return len(f.accessLogs()) > i })
		l := f.accessLogs()[i]
		if l.str("route") != tt.route || l.str("pool") != tt.pool || l.str("real_server") != strings.Fields(tt.first)[0] {
			t.Errorf("%s: access log route %q pool %q real_server %q, want %q %q", tt.name, l.str("route"), l.str("pool"),
				l.str("real_server"), tt.route, tt.pool)
		}
	}
	n := len(tests)

	redirects := []struct {
		path, route string
		status      int
		location    string
	}{
		{"/old/a/b?x=1&y=2", "#7", 302, "https://www.example.com/new/a/b?x=1&y=2"},
		{"/old/", "#7", 302, "https://www.example.com/new/"},
		{"/r301/a?q", "r301", 301, "https://www.example.com/new/a?q"}, // one slash, not two
		{"/r307/a", "r307", 307, "https://www.example.com/new/a"},
		{"/r308/x?y=z", "r308", 308, "https://www.example.com/r308/x?y=z"}, // the whole path without a prefix
	}
	for _, tt := range redirects {
		status, h, body := curlHead(t, base+tt.path)
		if status != tt.status || h.Get("Location") != tt.location {
			t.Errorf("%s: %d Location %q, want %d %q", tt.path, status, h.Get("Location"), tt.status, tt.location)
		}
		if h.Get("Strict-Transport-Security") != "" || h.Get("Content-Length") != fmt.Sprint(len(body)) {
			t.Errorf("%s: the redirect's header %v (body %q): want no response rules, a Content-Length", tt.path, h, body)
		}
		n++
		waitFor(t, 5*time.Second, "access log line", func() bool { return len(f.accessLogs()) >= n })
		if l := f.accessLogs()[n-1]; l.str("route") != tt.route || l.str("pool") != "-" || l.num("status") != tt.status {
			t.Errorf("%s: access log %v", tt.path, l)
		}
	}
	// Redirects keep the connection: two on one curl run, one connect.
	r := curl(t, "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code}:%{num_connects} ", base+"/old/1", base+"/old/2")
	if r.code != 0 || r.stdout != "302:1 302:0 " {
		t.Errorf("two redirects on one connection: %q %s", r.stdout, r.stderr)
	}
}

// TestRouteAllowDeny: deny gives 403 on the request's client, read from a
// trusted X-Forwarded-For, and on the connection's address.
func TestRouteAllowDeny(t *testing.T) {
	needCurl(t)
	vip, vip2, vip3 := freeAddr(t), freeAddr(t), freeAddr(t)
	cfg := routedSite(t, vip, "")
	other := echoBackend(t, "other")
	cfg.services = append(cfg.services,
		service{name: "closed", listen: []string{vip2}, opts: "deny = [\"127.0.0.1/32\"]\n", real: []real{other.real("")}},
		service{name: "members", listen: []string{vip3}, opts: "allow = [\"10.0.0.0/8\", \"::1\"]\n", real: []real{other.real("")}})
	f := startFulcrum(t, cfg)
	tests := []struct {
		name, url, xff string
		status         int
	}{
		{"trusted proxy's client denied", "http://" + vip + "/assets/x", "192.0.2.9", 403},
		{"trusted proxy's client allowed", "http://" + vip + "/assets/x", "198.51.100.9", 200},
		{"direct deny", "http://" + vip2 + "/", "", 403},
		{"direct deny, X-Forwarded-For not trusted", "http://" + vip2 + "/", "198.51.100.9", 403},
		{"not in allow", "http://" + vip3 + "/", "", 403},
	}
	for _, tt := range tests {
		args := []string{tt.url}
		if tt.xff != "" {
			args = append([]string{"-H", "X-Forwarded-For: " + tt.xff}, args...)
		}
		status, body := curlStatus(t, args...)
		if status != tt.status {
			t.Errorf("%s: %d %q, want %d", tt.name, status, body, tt.status)
		}
		if tt.status == 403 && body != "403 Forbidden\n" {
			t.Errorf("%s: body %q", tt.name, body)
		}
	}
	// A line is written once its answer has gone: wait for the last.
	is403 := func(e logEntry) bool { return e.num("status") == 403 }
	waitFor(t, 5*time.Second, "four 403 log lines", func() bool { return len(f.logsWhere(is403)) == 4 })
	viaProxy := f.waitLog(time.Second, "the trusted proxy's client's 403", func(e logEntry) bool {
		return is403(e) && e.str("client") == "192.0.2.9"
	})
	if viaProxy.str("error") != "client address not allowed" || viaProxy.str("pool") != "-" {
		t.Errorf("403 log line: %v", viaProxy)
	}
}

// TestRouteHTTP2: routes, strip_prefix, redirects and rules over HTTP/2
// (TLS, curl --http2) and HTTP/1.1 on the same TLS service.
func TestRouteHTTP2(t *testing.T) {
	needCurl(t)
	ca := testpki.NewCA(t, "routes")
	cert, key := issue(t, ca, "www.example.com", false, "www.example.com", "api.example.com")
	vip := freeAddr(t)
	_, port, _ := net.SplitHostPort(vip)
	cfg := routedSite(t, vip, tlsTable("", [2]string{cert, key}))
	f := startFulcrum(t, cfg)
	resolve := []string{"--cacert", ca.File, "--resolve", "www.example.com:" + port + ":127.0.0.1",
		"--resolve", "api.example.com:" + port + ":127.0.0.1"}
	for _, proto := range []string{"--http2", "--http1.1"} {
		tests := []struct {
			url, first string
			status     int
			location   string
		}{
			{"https://www.example.com:" + port + "/p?q", "default /p?q", 200, ""},
			{"https://api.example.com:" + port + "/p", "api /p", 200, ""},
			{"https://www.example.com:" + port + "/assets/img/a.png", "static /img/a.png", 200, ""},
			{"https://www.example.com:" + port + "/old/x?y", "", 302, "https://www.example.com/new/x?y"},
		}
		for _, tt := range tests {
			status, h, body := curlHead(t, append(append([]string{proto, "-H", "X-Debug: 1"}, resolve...), tt.url)...)
			first, rest, _ := strings.Cut(body, "\n")
			if status != tt.status || (tt.first != "" && first != tt.first) || h.Get("Location") != tt.location {
				t.Errorf("%s %s: %d %q Location %q, want %d %q %q", proto, tt.url, status, first, h.Get("Location"),
					tt.status, tt.first, tt.location)
			}
			if tt.status == 200 && (strings.Contains(rest, "X-Debug") || h.Get("Server") != "" || h.Get("Strict-Transport-Security") == "") {
				t.Errorf("%s %s: header rules not applied: request %q, response %v", proto, tt.url, rest, h)
			}
		}
	}
	waitFor(t, 5*time.Second, "eight access-log lines", func() bool { return len(f.accessLogs()) == 8 })
	for _, l := range f.accessLogs()[:4] {
		if l.str("proto") != "HTTP/2.0" {
			t.Errorf("access log %v: want HTTP/2.0", l)
		}
	}
	if l := f.accessLogs()[1]; l.str("route") != "api-host" || l.str("pool") != "api" {
		t.Errorf("HTTP/2 host route's log line: %v", l)
	}
}

// TestRouteReload: a reload adds a pool and a route to it; the next
// requests follow the new table.
func TestRouteReload(t *testing.T) {
	needCurl(t)
	vip := freeAddr(t)
	cfg := routedSite(t, vip, "")
	f := startFulcrum(t, cfg)
	url := "http://" + vip + "/shop/cart"
	if status, body := curlStatus(t, url); status != 200 || !strings.HasPrefix(body, "default /shop/cart\n") {
		t.Fatalf("before the reload: %d %q", status, body)
	}
	shop := echoBackend(t, "shop")
	cfg.services[0].opts += route(`name = "shop"`, `path_prefix = "/shop/"`, `to = "shop"`)
	cfg.services = append(cfg.services, service{name: "shop", real: []real{shop.real("")}})
	f.rewrite(cfg)
	reloaded := func() int {
		return len(f.logsWhere(func(e logEntry) bool { return e.str("msg") == "configuration reloaded" }))
	}
	f.signal(syscall.SIGHUP)
	waitFor(t, 5*time.Second, "reload", func() bool { return reloaded() == 1 })
	if status, body := curlStatus(t, url); status != 200 || !strings.HasPrefix(body, "shop /shop/cart\n") {
		t.Errorf("after the reload: %d %q", status, body)
	}
	waitFor(t, 5*time.Second, "the access-log line after the reload", func() bool { return len(f.accessLogs()) >= 2 })
	if l := f.accessLogs()[1]; l.str("route") != "shop" || l.str("pool") != "shop" {
		t.Errorf("access log after the reload: %v", l)
	}
}
