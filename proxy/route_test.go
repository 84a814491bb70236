package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fulcrumlb/fulcrum/config"
)

// parsed fills a route's parsed fields as config validation does
// (config.Route's doc comments): the regexp compiled, the header split
// into its canonical name and anchored value.
func parsed(r *config.Route) *config.Route {
	if r.PathRegex != "" {
		r.PathRE = regexp.MustCompile(r.PathRegex)
	}
	if r.Header != "" {
		name, value, _ := strings.Cut(r.Header, ":")
		r.HeaderName = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name))
		if v := strings.TrimSpace(value); v != "" {
			r.HeaderValue = regexp.MustCompile("^(?:" + v + ")$")
		}
	}
	if r.RedirectCode == 0 {
		r.RedirectCode = config.DefaultRedirectCode
	}
	return r
}

// fakeView is a request's header fields for routeView.
type fakeView http.Header

func (v fakeView) hasRouteField(r *route) bool {
	for _, s := range v[r.hdrCanon] {
		if r.hdrValue == nil || r.hdrValue.MatchString(s) {
			return true
		}
	}
	return false
}

// testTable compiles routes (each to the pool "api" unless it redirects).
func testTable(t testing.TB, routes ...*config.Route) *routeTable {
	t.Helper()
	vs := &config.VirtualService{Name: "site", Mode: config.ModeHTTP}
	for _, r := range routes {
		if r.To == "" && r.Redirect == "" {
			r.To = "api"
		}
		vs.Routes = append(vs.Routes, parsed(r))
	}
	pool := &Service{Name: "api"}
	tbl, err := buildRoutes(vs, map[string]*Service{"api": pool}, map[string]bool{"api": true, "site": true})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func TestRouteMatch(t *testing.T) {
	routes := []*config.Route{
		{Name: "exact", Host: "API.example.com"},
		{Name: "wild", Host: "*.example.org"},
		{Name: "prefix", PathPrefix: "/v1/"},
		{Name: "regexp", PathRegex: `^/v[0-9]+/`},
		{Name: "methods", Host: "m.test", Methods: []string{"POST", "PUT"}},
		{Name: "presence", Host: "h.test", Header: "X-Canary"},
		{Name: "value", Host: "v.test", Header: "X-Canary: 1|yes"},
		{Name: "all", Host: "all.test", PathPrefix: "/a/", Methods: []string{"GET"}, Header: "X-A: b"},
	}
	tbl := testTable(t, routes...)
	tests := []struct {
		name, host, method, target string
		header                     http.Header
		want                       string // the route's name; "" for none
	}{
		{name: "exact host", host: "api.example.com", want: "exact"},
		{name: "host case", host: "Api.EXAMPLE.com", want: "exact"},
		{name: "host port stripped", host: "api.example.com:8080", want: "exact"},
		{name: "host trailing dot", host: "api.example.com.", want: "exact"},
		{name: "other host", host: "www.example.com", want: ""},
		{name: "longer host", host: "xapi.example.com", want: ""},
		{name: "wildcard", host: "www.example.org", want: "wild"},
		{name: "wildcard deep", host: "a.b.EXAMPLE.org:443", want: "wild"},
		{name: "wildcard not apex", host: "example.org", want: ""},
		{name: "wildcard not suffix", host: "badexample.org", want: ""},
		{name: "prefix", target: "/v1/users", want: "prefix"},
		{name: "prefix whole", target: "/v1/", want: "prefix"},
		{name: "prefix needs slash", target: "/v1", want: ""},
		{name: "prefix before query only", target: "/x?/v1/", want: ""},
		{name: "prefix absolute form", target: "http://other/v1/users?q", want: "prefix"},
		{name: "prefix is case-sensitive", target: "/V1/users", want: ""},
		{name: "regexp", target: "/v2/users", want: "regexp"},
		{name: "regexp not query", target: "/x?p=/v2/", want: ""},
		{name: "method", host: "m.test", method: "PUT", want: "methods"},
		{name: "method not listed", host: "m.test", method: "GET", want: ""},
		{name: "method case-sensitive", host: "m.test", method: "post", want: ""},
		{name: "header present", host: "h.test", header: http.Header{"X-Canary": {""}}, want: "presence"},
		{name: "header absent", host: "h.test", want: ""},
		{name: "header value", host: "v.test", header: http.Header{"X-Canary": {"yes"}}, want: "value"},
		{name: "header value whole", host: "v.test", header: http.Header{"X-Canary": {"yess"}}, want: ""},
		{name: "header any field", host: "v.test", header: http.Header{"X-Canary": {"no", "1"}}, want: "value"},
		{name: "all conditions", host: "all.test", target: "/a/b", method: "GET", header: http.Header{"X-A": {"b"}}, want: "all"},
		{name: "all but one", host: "all.test", target: "/a/b", method: "GET", header: http.Header{"X-A": {"c"}}, want: ""},
		// First match in file order: "exact" comes before "prefix".
		{name: "first match", host: "api.example.com", target: "/v1/x", want: "exact"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.host == "" {
				tt.host = "www.test"
			}
			if tt.method == "" {
				tt.method = "GET"
			}
			if tt.target == "" {
				tt.target = "/"
			}
			authority, path, _ := splitTarget([]byte(tt.target))
			host := []byte(tt.host)
			if authority != nil {
				host = authority
			}
			got := ""
			if r := tbl.match(routeHost(host), []byte(tt.method), path, fakeView(tt.header)); r != nil {
				got = r.name
			}
			if got != tt.want {
				t.Errorf("matched %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRouteMatchHTTP1Fields matches header routes on a parsed HTTP/1.1
// head (clientConn's routeView).
func TestRouteMatchHTTP1Fields(t *testing.T) {
	tbl := testTable(t, &config.Route{Name: "canary", Header: "X-Canary: 1"}, &config.Route{Name: "any", Header: "X-Any:"})
	tests := []struct{ head, want string }{
		{"X-Canary: 1\r\n", "canary"},
		{"x-canary:   1  \r\n", "canary"},
		{"X-Canary: 2\r\nX-Canary: 1\r\n", "canary"},
		{"X-Canary: 10\r\n", ""},
		{"X-Any:\r\n", "any"},
		{"X-Other: 1\r\n", ""},
	}
	for _, tt := range tests {
		cc := requestFrom(t, "192.0.2.1", nil, tt.head)
		got := ""
		if r := tbl.match([]byte("x"), cc.req.method, []byte("/"), cc); r != nil {
			got = r.name
		}
		if got != tt.want {
			t.Errorf("%q: matched %q, want %q", tt.head, got, tt.want)
		}
	}
}

func TestRouteNames(t *testing.T) {
	tbl := testTable(t, &config.Route{Name: "named"}, &config.Route{PathPrefix: "/x"}, &config.Route{Redirect: "https://e/"})
	for i, want := range []string{"named", "#2", "#3"} {
		if got := tbl.routes[i].name; got != want {
			t.Errorf("route %d: name %q, want %q", i, got, want)
		}
	}
}

func TestBuildRoutesErrors(t *testing.T) {
	pools := map[string]*Service{"api": {Name: "api"}}
	known := map[string]bool{"api": true, "site": true, "other": true}
	tests := []struct {
		route *config.Route
		want  string
	}{
		{&config.Route{To: "nope"}, `virtual service "site": route #1: to "nope": no such virtual service`},
		{&config.Route{Name: "r", To: "other"}, `route r: to "other": not a pool`},
		{&config.Route{To: "api", PathRegex: "^/x"}, "path_regex \"^/x\" was not compiled"},
	}
	for _, tt := range tests {
		vs := &config.VirtualService{Name: "site", Mode: config.ModeHTTP, Routes: []*config.Route{tt.route}}
		_, err := buildRoutes(vs, pools, known)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("error %v, want one containing %q", err, tt.want)
		}
	}
}

func TestSplitTarget(t *testing.T) {
	tests := []struct{ target, authority, path, query string }{
		{"/", "", "/", ""},
		{"/a/b?x=1&y", "", "/a/b", "x=1&y"},
		{"/a?", "", "/a", ""},
		{"http://h.test/p?q", "h.test", "/p", "q"},
		{"http://h.test:81", "h.test:81", "/", ""},
		{"http://h.test?q", "h.test", "/", "q"},
		{"https://user@h.test/p", "h.test", "/p", ""},
		{"*", "", "*", ""},
	}
	for _, tt := range tests {
		a, p, q := splitTarget([]byte(tt.target))
		if string(a) != tt.authority || string(p) != tt.path || string(q) != tt.query {
			t.Errorf("%q: got %q %q %q, want %q %q %q", tt.target, a, p, q, tt.authority, tt.path, tt.query)
		}
	}
}

func TestRouteHost(t *testing.T) {
	for in, want := range map[string]string{
		"example.com": "example.com", "example.com:8080": "example.com", "example.com.": "example.com",
		"[2001:db8::1]:443": "[2001:db8::1]", "[::1]": "[::1]", "192.0.2.1:80": "192.0.2.1", "": "",
	} {
		if got := string(routeHost([]byte(in))); got != want {
			t.Errorf("routeHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedirectLocation(t *testing.T) {
	tests := []struct {
		redirect, prefix, target, want string
	}{
		{"https://www.example.com/new/", "/old/", "/old/a/b?x=1", "https://www.example.com/new/a/b?x=1"},
		{"https://www.example.com/new/", "/old", "/old/a", "https://www.example.com/new/a"}, // no double slash
		{"https://www.example.com/new", "/old", "/old/a", "https://www.example.com/new/a"},
		{"https://www.example.com/new/", "/old/", "/old/", "https://www.example.com/new/"},
		{"https://www.example.com/new/", "/old", "/old?q", "https://www.example.com/new/?q"},
		{"https://www.example.com", "", "/a/b?c", "https://www.example.com/a/b?c"}, // whole path without a prefix
		{"https://www.example.com/", "", "/a", "https://www.example.com/a"},
		{"https://www.example.com/", "", "/a?", "https://www.example.com/a"},
	}
	for _, tt := range tests {
		r := &route{redirect: tt.redirect, prefix: []byte(tt.prefix)}
		if tt.prefix == "" {
			r.prefix = nil
		}
		_, path, query := splitTarget([]byte(tt.target))
		if got := r.location(path, query); got != tt.want {
			t.Errorf("%s + %q on %q: %q, want %q", tt.redirect, tt.prefix, tt.target, got, tt.want)
		}
	}
}

func TestWriteRequestLineStrip(t *testing.T) {
	tests := []struct{ prefix, line, want string }{
		{"/v1/", "GET /v1/users HTTP/1.1", "GET /users HTTP/1.1"},
		{"/v1/", "GET /v1/ HTTP/1.1", "GET / HTTP/1.1"},
		{"/v1", "GET /v1/users?a=b HTTP/1.1", "GET /users?a=b HTTP/1.1"},
		{"/v1", "GET /v1 HTTP/1.0", "GET / HTTP/1.0"},
		{"/v1", "GET /v1x?q HTTP/1.1", "GET /x?q HTTP/1.1"},
		{"/v1/", "GET http://h.test/v1/a?q HTTP/1.1", "GET /a?q HTTP/1.1"},
	}
	for _, tt := range tests {
		cc := &clientConn{}
		if err := cc.req.parse([]byte(tt.line + "\r\nHost: h.test\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		cc.rt = &route{prefix: []byte(tt.prefix), strip: true}
		var out bytes.Buffer
		var w writer
		w.reset(captureConn{out: &out}, nil)
		cc.writeRequestLine(&w)
		w.flush()
		if out.String() != tt.want {
			t.Errorf("%q with %q stripped: %q, want %q", tt.line, tt.prefix, out.String(), tt.want)
		}
	}
}

func TestAdmits(t *testing.T) {
	nets := func(s ...string) []netip.Prefix {
		var p []netip.Prefix
		for _, x := range s {
			p = append(p, netip.MustParsePrefix(x))
		}
		return p
	}
	tests := []struct {
		allow, deny []netip.Prefix
		client      string
		want        bool
	}{
		{nil, nil, "192.0.2.1", true},
		{nets("192.0.2.0/24"), nil, "192.0.2.1", true},
		{nets("192.0.2.0/24"), nil, "198.51.100.1", false},
		{nil, nets("192.0.2.0/24"), "192.0.2.1", false},
		{nil, nets("192.0.2.0/24"), "::ffff:192.0.2.1", false}, // mapped: the IPv4 address
		{nets("192.0.2.0/24"), nets("192.0.2.7/32"), "192.0.2.7", false},
		{nets("192.0.2.0/24"), nets("192.0.2.7/32"), "192.0.2.8", true},
		{nets("2001:db8::/32"), nil, "2001:db8::1", true},
	}
	for _, tt := range tests {
		vs := &config.VirtualService{AllowNets: tt.allow, DenyNets: tt.deny}
		if got := admits(vs, netip.MustParseAddr(tt.client)); got != tt.want {
			t.Errorf("allow %v deny %v, client %s: %v, want %v", tt.allow, tt.deny, tt.client, got, tt.want)
		}
	}
}

// BenchmarkRouteMatch20 is the cost of testing a request against 20 routes
// (half host, half path prefix) none of which matches.
func BenchmarkRouteMatch20(b *testing.B) {
	tbl := testTable(b, routes20()...)
	cc := &clientConn{}
	if err := cc.req.parse([]byte("GET /index.html HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		authority, path, _ := splitTarget(cc.req.target)
		host := cc.req.host
		if authority != nil {
			host = authority
		}
		if tbl.match(routeHost(host), cc.req.method, path, cc) != nil {
			b.Fatal("matched")
		}
	}
}

// routes20 are 20 routes the benchmark's requests ("GET /index.html",
// Host: bench) do not match: 10 by host, 10 by path prefix.
func routes20() []*config.Route {
	var rs []*config.Route
	for i := range 10 {
		rs = append(rs, &config.Route{Host: fmt.Sprintf("app%d.example.com", i), To: "api"},
			&config.Route{PathPrefix: fmt.Sprintf("/app%d/", i), To: "api"})
	}
	return rs
}

// Routing through a running proxy.

// echoBackend is a real server that answers with its name, the request
// target and the header fields it got (one "Name: value" line each, sorted),
// and sets X-Backend and Server in the response.
func echoBackend(t testing.TB, name string) string {
	return httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		w.Header().Set("Server", "echo")
		w.Header().Set("X-Debug", "on")
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s\n", name, r.RequestURI)
		for _, k := range sortedKeys(r.Header) {
			for _, v := range r.Header[k] {
				fmt.Fprintf(&b, "%s: %s\n", k, v)
			}
		}
		fmt.Fprintf(&b, "Host: %s\n", r.Host)
		io.WriteString(w, b.String())
	})
}

func sortedKeys(h http.Header) []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	for i := range keys { // small: insertion sort
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

// routedEnv is a running proxy with a listening service "site" (plain HTTP,
// or HTTPS offering h2) and pools "api" and "static", each with one echo
// backend named after it; site's own real server is "default".
type routedEnv struct {
	p    *Proxy
	url  string
	logs *observer.ObservedLogs
	pki  *testPKI
}

func routedService(name string, listen bool, backends ...string) *config.VirtualService {
	vs := &config.VirtualService{
		Name: name, Mode: config.ModeHTTP, Scheduler: "round_robin", Retries: 1, QueueTimeout: time.Second,
		Timeouts: config.Timeouts{Connect: time.Second, Client: 10 * time.Second, ClientHeader: 5 * time.Second, Server: 10 * time.Second},
	}
	if listen {
		vs.Listen = []string{"127.0.0.1:0"}
	}
	for i, b := range backends {
		vs.RealServers = append(vs.RealServers, &config.RealServer{Name: fmt.Sprintf("%s%d", name, i+1), Address: b, Weight: 1})
	}
	return vs
}

func routedConfig(t testing.TB, adjust func(site, api, static *config.VirtualService)) *config.Config {
	site := routedService("site", true, echoBackend(t, "default"))
	api := routedService("api", false, echoBackend(t, "api"))
	static := routedService("static", false, echoBackend(t, "static"))
	site.Routes = []*config.Route{
		parsed(&config.Route{Name: "api", Host: "api.example.com", To: "api"}),
		parsed(&config.Route{Name: "static", PathPrefix: "/static/", To: "static", StripPrefix: true}),
		parsed(&config.Route{PathPrefix: "/old/", Redirect: "https://www.example.com/new/", RedirectCode: 301}),
		parsed(&config.Route{Name: "canary", Header: "X-Canary: 1", To: "api"}),
	}
	if adjust != nil {
		adjust(site, api, static)
	}
	return &config.Config{Global: config.Global{Grace: time.Second, AccessLog: true},
		VirtualServices: []*config.VirtualService{site, api, static}}
}

func startRouted(t *testing.T, tlsFront bool, adjust func(site, api, static *config.VirtualService)) *routedEnv {
	t.Helper()
	cfg := routedConfig(t, adjust)
	e := &routedEnv{}
	scheme := "http"
	if tlsFront {
		e.pki = newTestPKI(t)
		cfg.VirtualServices[0].TLS = config.TLS{Certificates: []*config.Certificate{{Cert: e.pki.serverCert, Key: e.pki.serverKey}},
			ALPN: []string{config.ProtoH2, config.ProtoHTTP1}}
		scheme = "https"
	}
	core, logs := observer.New(zapcore.DebugLevel)
	p, err := New(cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(timeoutCtx(t, time.Second)) })
	e.p, e.logs = p, logs
	e.url = scheme + "://" + p.Services()[0].Addrs()[0].String()
	return e
}

// client returns an HTTP/1.1 client (plain HTTP: clientConn), or an
// HTTP/2 one for the TLS front.
func (e *routedEnv) client(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	if e.pki != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: e.pki.Pool()}
		tr.ForceAttemptHTTP2 = true
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (e *routedEnv) do(t *testing.T, c *http.Client, method, path, host string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// stringFields returns the string fields of a log line. (ContextMap would
// also read its byte-string fields, the method and target, which alias the
// HTTP/1.1 connection's buffers: zap's encoders copy them at once, but the
// observer keeps them, and the next request on the connection reuses them.)
func stringFields(e observer.LoggedEntry) map[string]string {
	m := map[string]string{}
	for _, f := range e.Context {
		if f.Type == zapcore.StringType {
			m[f.Key] = f.String
		}
	}
	return m
}

func (e *routedEnv) accessLines() []observer.LoggedEntry {
	return e.logs.FilterLoggerName("access").FilterMessage("request").AllUntimed()
}

// TestRouting sends requests through HTTP/1.1 (clientConn) and HTTP/2
// (h2exchange) and checks the pool each reached, what it got, the
// redirects, and the access log's route and pool.
func TestRouting(t *testing.T) {
	for _, tlsFront := range []bool{false, true} {
		name := "HTTP/1.1"
		if tlsFront {
			name = "HTTP/2"
		}
		t.Run(name, func(t *testing.T) {
			e := startRouted(t, tlsFront, nil)
			c := e.client(t)
			tests := []struct {
				name, path, host string
				hdr              []string
				status           int
				first            string // the body's first line: backend and target
				location         string
				route, pool      string
			}{
				{name: "default", path: "/x?y=1", status: 200, first: "default /x?y=1", route: "-", pool: "site"},
				{name: "host", path: "/v1/x", host: "API.example.com:80", status: 200, first: "api /v1/x", route: "api", pool: "api"},
				{name: "strip", path: "/static/css/a.css?v=2", status: 200, first: "static /css/a.css?v=2", route: "static", pool: "static"},
				{name: "strip to slash", path: "/static/", status: 200, first: "static /", route: "static", pool: "static"},
				{name: "header other value", path: "/h", hdr: []string{"X-Canary", "2"}, status: 200, first: "default /h", route: "-", pool: "site"},
				{name: "header", path: "/h", hdr: []string{"X-Canary", "1"}, status: 200, first: "api /h", route: "canary", pool: "api"},
				{name: "redirect", path: "/old/a/b?q=1", status: 301, location: "https://www.example.com/new/a/b?q=1", route: "#3", pool: "-"},
			}
			for i, tt := range tests {
				resp, body := e.do(t, c, "GET", tt.path, tt.host, tt.hdr...)
				if resp.StatusCode != tt.status {
					t.Fatalf("%s: status %d, want %d: %s", tt.name, resp.StatusCode, tt.status, body)
				}
				if first, _, _ := strings.Cut(body, "\n"); tt.first != "" && first != tt.first {
					t.Errorf("%s: got %q, want %q", tt.name, first, tt.first)
				}
				if got := resp.Header.Get("Location"); got != tt.location {
					t.Errorf("%s: Location %q, want %q", tt.name, got, tt.location)
				}
				lines := e.accessLines()
				if len(lines) != i+1 {
					waitFor(t, func() bool { return len(e.accessLines()) >= i+1 })
					lines = e.accessLines()
				}
				f := stringFields(lines[i])
				if f["route"] != tt.route || f["pool"] != tt.pool {
					t.Errorf("%s: log route %v pool %v, want %s %s", tt.name, f["route"], f["pool"], tt.route, tt.pool)
				}
			}
			if resp, _ := e.do(t, c, "HEAD", "/old/x", ""); resp.StatusCode != 301 || resp.Header.Get("Location") != "https://www.example.com/new/x" {
				t.Errorf("HEAD redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			// The pools count what routes sent them (once the answer is
			// out: the count may lag the last answer a little).
			waitFor(t, func() bool { return e.p.Status().Services[0].Requests >= uint64(len(tests)+1) })
			st := e.p.Status()
			if got := st.Services[1].Requests; got != 2 {
				t.Errorf("pool api counted %d requests, want 2", got)
			}
			if got := st.Services[0].Requests; got != uint64(len(tests)+1) {
				t.Errorf("site counted %d requests, want %d", got, len(tests)+1)
			}
		})
	}
}

// TestRoutingKeepAlive: a redirect keeps the connection as any answer; the
// next request on it is routed afresh.
func TestRoutingKeepAlive(t *testing.T) {
	e := startRouted(t, false, nil)
	c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /old/z?a HTTP/1.1\r\nHost: x\r\n\r\nGET /static/q HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "https://www.example.com/new/z?a" || resp.Close {
		t.Errorf("redirect: %d %q close=%v", resp.StatusCode, resp.Header.Get("Location"), resp.Close)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.HasPrefix(string(body), "static /q\n") {
		t.Errorf("second request: %q", body)
	}
}

// TestRoutingNoDefault: a service with routes and no real servers answers
// 404 to a request no route matches.
func TestRoutingNoDefault(t *testing.T) {
	for _, tlsFront := range []bool{false, true} {
		e := startRouted(t, tlsFront, func(site, _, _ *config.VirtualService) { site.RealServers = nil })
		c := e.client(t)
		if resp, body := e.do(t, c, "GET", "/nothing", ""); resp.StatusCode != 404 {
			t.Errorf("tls %v: status %d, want 404: %s", tlsFront, resp.StatusCode, body)
		}
		if resp, body := e.do(t, c, "GET", "/static/x", ""); resp.StatusCode != 200 || !strings.HasPrefix(body, "static /x") {
			t.Errorf("tls %v: routed request: %d %q", tlsFront, resp.StatusCode, body)
		}
		// The 404 closes its connection, so the routed request may come
		// on another one and be logged first.
		waitFor(t, func() bool { return len(e.accessLines()) >= 2 })
		var f map[string]string
		for _, line := range e.accessLines() {
			if g := stringFields(line); g["real_server"] == "-" { // not the routed one
				f = g
			}
		}
		if f["route"] != "-" || f["pool"] != "-" || f["error"] != "no route matched" {
			t.Errorf("tls %v: 404's log line: %v", tlsFront, f)
		}
	}
}

// TestRoutingFallbackDefault: a service with routes, no real servers and
// a fallback sends the requests no route matched to the fallback.
func TestRoutingFallbackDefault(t *testing.T) {
	sorry := echoBackend(t, "sorry")
	e := startRouted(t, false, func(site, _, _ *config.VirtualService) {
		site.RealServers, site.Fallback = nil, sorry
	})
	c := e.client(t)
	if resp, body := e.do(t, c, "GET", "/nothing", ""); resp.StatusCode != 200 || !strings.HasPrefix(body, "sorry /nothing") {
		t.Errorf("unrouted request: %d %q, want the fallback's answer", resp.StatusCode, body)
	}
	if resp, body := e.do(t, c, "GET", "/static/x", ""); resp.StatusCode != 200 || !strings.HasPrefix(body, "static /x") {
		t.Errorf("routed request: %d %q", resp.StatusCode, body)
	}
}

// TestHeaderRulesRouted: request and response rules of the listening
// service, then of the pool, both ways, on both front ends.
func TestHeaderRulesRouted(t *testing.T) {
	for _, tlsFront := range []bool{false, true} {
		e := startRouted(t, tlsFront, func(site, api, _ *config.VirtualService) {
			site.RequestHeaders = config.HeaderRules{Set: map[string]string{"X-Env": "prod", "X-Front": "1", "Host": "internal.test"}, Remove: []string{"X-Debug"}}
			site.ResponseHeaders = config.HeaderRules{Set: map[string]string{"Strict-Transport-Security": "max-age=31536000"}, Remove: []string{"Server", "x-debug"}}
			api.RequestHeaders = config.HeaderRules{Set: map[string]string{"X-Env": "api"}, Remove: []string{"X-Front"}}
			api.ResponseHeaders = config.HeaderRules{Set: map[string]string{"Server": "api-pool"}}
		})
		c := e.client(t)
		// The default pool: the site's rules only.
		resp, body := e.do(t, c, "GET", "/", "", "X-Debug", "1", "X-Env", "client")
		for _, want := range []string{"X-Env: prod\n", "X-Front: 1\n", "Host: internal.test\n"} {
			if !strings.Contains(body, want) {
				t.Errorf("tls %v: default pool's request lacks %q:\n%s", tlsFront, want, body)
			}
		}
		if strings.Contains(body, "X-Debug") || strings.Contains(body, "X-Env: client") {
			t.Errorf("tls %v: removed or replaced fields reached the real server:\n%s", tlsFront, body)
		}
		if resp.Header.Get("Server") != "" || resp.Header.Get("X-Debug") != "" || resp.Header.Get("Strict-Transport-Security") != "max-age=31536000" {
			t.Errorf("tls %v: response fields: %v", tlsFront, resp.Header)
		}
		// The api pool: the site's rules, then the pool's.
		resp, body = e.do(t, c, "GET", "/", "api.example.com", "X-Debug", "1")
		if !strings.Contains(body, "X-Env: api\n") || strings.Contains(body, "X-Front") || strings.Contains(body, "X-Env: prod") {
			t.Errorf("tls %v: api pool's request:\n%s", tlsFront, body)
		}
		if resp.Header.Get("Server") != "api-pool" || resp.Header.Get("X-Debug") != "" || resp.Header.Get("Strict-Transport-Security") == "" {
			t.Errorf("tls %v: api pool's response fields: %v", tlsFront, resp.Header)
		}
		// The proxy's own answers get none.
		resp, _ = e.do(t, c, "GET", "/old/", "")
		if resp.Header.Get("Strict-Transport-Security") != "" {
			t.Errorf("tls %v: the redirect got response_headers", tlsFront)
		}
	}
}

// TestAllowDeny: a client outside allow, or in deny, gets 403, judged on
// the request's client (X-Forwarded-For from a trusted proxy).
func TestAllowDeny(t *testing.T) {
	tests := []struct {
		name        string
		allow, deny []string
		trusted     bool
		xff         string
		status      int
	}{
		{name: "allowed", allow: []string{"127.0.0.0/8"}, status: 200},
		{name: "not allowed", allow: []string{"192.0.2.0/24"}, status: 403},
		{name: "denied", deny: []string{"127.0.0.1/32"}, status: 403},
		{name: "forwarded client denied", deny: []string{"192.0.2.0/24"}, trusted: true, xff: "192.0.2.9", status: 403},
		{name: "forwarded client allowed", deny: []string{"192.0.2.0/24"}, trusted: true, xff: "198.51.100.9", status: 200},
		{name: "untrusted forwarded ignored", deny: []string{"192.0.2.0/24"}, xff: "192.0.2.9", status: 200},
	}
	for _, tlsFront := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/tls=%v", tt.name, tlsFront), func(t *testing.T) {
				e := startRouted(t, tlsFront, func(site, _, _ *config.VirtualService) {
					for _, s := range tt.allow {
						site.AllowNets = append(site.AllowNets, netip.MustParsePrefix(s))
					}
					for _, s := range tt.deny {
						site.DenyNets = append(site.DenyNets, netip.MustParsePrefix(s))
					}
					if tt.trusted {
						site.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
					}
				})
				var hdr []string
				if tt.xff != "" {
					hdr = []string{"X-Forwarded-For", tt.xff}
				}
				resp, body := e.do(t, e.client(t), "GET", "/static/a", "", hdr...)
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
				}
				if tt.status == 403 {
					waitFor(t, func() bool { return len(e.accessLines()) >= 1 })
					if f := stringFields(e.accessLines()[0]); f["error"] != "client address not allowed" || f["pool"] != "-" {
						t.Errorf("log line: %v", f)
					}
				}
			})
		}
	}
}

// TestRoutesReload: a reload adds a pool and a route to it, and removes a
// route; the requests in between follow each table.
func TestRoutesReload(t *testing.T) {
	e := startRouted(t, false, nil)
	c := e.client(t)
	if _, body := e.do(t, c, "GET", "/shop/x", ""); !strings.HasPrefix(body, "default /shop/x") {
		t.Fatalf("before reload: %q", body)
	}
	cfg := routedConfig(t, func(site, _, _ *config.VirtualService) {
		site.Routes = append(site.Routes[:1], parsed(&config.Route{Name: "shop", PathPrefix: "/shop/", To: "shop"}))
	})
	cfg.VirtualServices = append(cfg.VirtualServices, routedService("shop", false, echoBackend(t, "shop")))
	if err := e.p.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if _, body := e.do(t, c, "GET", "/shop/x", ""); !strings.HasPrefix(body, "shop /shop/x") {
		t.Errorf("after reload: %q", body)
	}
	if _, body := e.do(t, c, "GET", "/static/x", ""); !strings.HasPrefix(body, "default /static/x") {
		t.Errorf("removed route still used: %q", body)
	}
	// A route to an unknown pool fails the reload, which changes nothing.
	bad := routedConfig(t, func(site, _, _ *config.VirtualService) {
		site.Routes = append(site.Routes, parsed(&config.Route{PathPrefix: "/x/", To: "nope"}))
	})
	if err := e.p.Apply(bad); err == nil || !strings.Contains(err.Error(), `to "nope"`) {
		t.Errorf("reload with a route to nowhere: %v", err)
	}
	if _, body := e.do(t, c, "GET", "/shop/x", ""); !strings.HasPrefix(body, "shop /shop/x") {
		t.Errorf("after a failed reload: %q", body)
	}
}

// TestPoolMaintenanceCuts: putting a pool's real server in maintenance
// ends the exchanges the listening service's clients have with it.
func TestPoolMaintenanceCuts(t *testing.T) {
	slow, release, started := slowBackend(t)
	defer close(release)
	e := startRouted(t, false, func(_, api, _ *config.VirtualService) {
		api.RealServers[0].Address = slow
	})
	answer := make(chan int, 1)
	c := e.client(t)
	go func() {
		req, _ := http.NewRequest("GET", e.url+"/", nil)
		req.Host = "api.example.com"
		resp, err := c.Do(req)
		if err != nil {
			answer <- 0
			return
		}
		resp.Body.Close()
		answer <- resp.StatusCode
	}()
	waitFor(t, func() bool { return started.Load() > 0 })
	expectCut(t, answer, func() error { return e.p.SetState("api", "api1", "maintenance") },
		"the exchange with the real server in maintenance was not cut")
}

// TestRouteToH2Pool: a route to a pool whose real server speaks only HTTP/2
// serves the listening service's HTTP/1.1 clients through net/http
// (h1handler.go), which reaches it; the default pool is still HTTP/1.1.
func TestRouteToH2Pool(t *testing.T) {
	h2 := h2cBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "h2 %s %s", r.Proto, r.RequestURI)
	})
	e := startRouted(t, false, func(_, api, _ *config.VirtualService) {
		api.RealServers[0].Address = h2
		api.RealServers[0].Protocol = config.ProtoH2
	})
	c := e.client(t)
	if resp, body := e.do(t, c, "GET", "/x?y", "api.example.com"); resp.StatusCode != 200 || body != "h2 HTTP/2.0 /x?y" {
		t.Errorf("routed to the h2 pool: %d %q", resp.StatusCode, body)
	}
	if resp, body := e.do(t, c, "GET", "/static/a", ""); resp.StatusCode != 200 || !strings.HasPrefix(body, "static /a\n") {
		t.Errorf("routed to the HTTP/1.1 pool: %d %q", resp.StatusCode, body)
	}
}
