package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// Client transparency, inbound: fulcrum behind another load balancer that
// sends a PROXY header (accept_proxy), X-Forwarded-For trust
// (trusted_proxies) and the Forwarded field (forwarded_header).

// acceptProxyOpts are a service's keys for taking PROXY headers from
// loopback.
const acceptProxyOpts = "accept_proxy = true\ntrusted_proxies = [\"127.0.0.0/8\"]\n"

// accessClients waits for n access-log lines (HTTP requests and tcp
// connections: a line is written once the exchange is over, which may be
// just after the client got its answer) and returns their clients.
func accessClients(f *fulcrum, n int) []string {
	f.waitLog(5*time.Second, fmt.Sprintf("number %d of the access log", n), func(logEntry) bool {
		return len(f.logsWhere(func(e logEntry) bool { return e.str("logger") == "access" })) >= n
	})
	var out []string
	for _, e := range f.logsWhere(func(e logEntry) bool { return e.str("logger") == "access" }) {
		out = append(out, e.str("client"))
	}
	return out
}

// TestAcceptProxyCurl: curl --haproxy-protocol (PROXY v1 with curl's own
// addresses) into an accept_proxy listener is served; without the header
// the connection is refused and logged.
func TestAcceptProxyCurl(t *testing.T) {
	needCurl(t)
	rb := newRawBackend(t, func(string) string { return okResponse("ok") })
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip}, opts: acceptProxyOpts,
		real: []real{{name: "raw", address: rb.addr}},
	}}})
	if status, body := curlStatus(t, "--haproxy-protocol", "http://"+vip+"/"); status != 200 || body != "ok" {
		t.Fatalf("curl --haproxy-protocol: %d %q", status, body)
	}
	heads := rb.received()
	if len(heads) != 1 || !strings.Contains(heads[0], "\r\nX-Forwarded-For: 127.0.0.1\r\n") {
		t.Fatalf("real server got %q", heads)
	}
	if r := curl(t, "http://"+vip+"/"); r.code == 0 {
		t.Errorf("a request without a PROXY header was served: %q", r.stdout)
	}
	f.waitLog(5*time.Second, "refusing the request without a PROXY header", func(e logEntry) bool {
		return e.str("msg") == "PROXY header refused, connection closed" && e.str("service") == "web" &&
			e.str("client") == "127.0.0.1" && strings.Contains(e.str("error"), "no PROXY protocol header")
	})
	if n := len(rb.received()); n != 1 {
		t.Errorf("real server got %d requests, want 1", n)
	}
}

// TestAcceptProxyHAProxy puts HAProxy in front of fulcrum, sending PROXY v2
// (send-proxy-v2, with health checks: LOCAL headers) and v1 (send-proxy)
// headers whose source HAProxy rewrote (set-src): fulcrum's real servers and
// access log see that client, in http and tcp mode.
func TestAcceptProxyHAProxy(t *testing.T) {
	needCurl(t)
	rb := newRawBackend(t, func(string) string { return okResponse("ok") })
	var mu sync.Mutex
	var tcpGot []string
	echo := serveTCP(t, func(c *net.TCPConn) {
		b, _ := io.ReadAll(c)
		mu.Lock()
		tcpGot = append(tcpGot, string(b))
		mu.Unlock()
		c.Write(b)
	})
	web, tcpVIP := freeAddr(t), freeAddr(t)
	f := startFulcrum(t, config{services: []service{
		{listen: []string{web}, opts: acceptProxyOpts, real: []real{{name: "raw", address: rb.addr}}},
		{name: "tcp", listen: []string{tcpVIP}, opts: "mode = \"tcp\"\n" + acceptProxyOpts, real: []real{{name: "echo", address: echo}}},
	}})
	v2Front, v1Front, v6Front, tcpFront := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	startHAProxy(t, fmt.Sprintf(`global
    log stdout format raw local0 info
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend v2
    bind %s
    tcp-request connection set-src ipv4(198.51.100.7)
    default_backend fulcrum_v2
frontend v1
    bind %s
    tcp-request connection set-src ipv4(198.51.100.8)
    default_backend fulcrum_v1
frontend v6
    bind %s
    tcp-request connection set-src ipv6(2001:db8::9)
    default_backend fulcrum_v2
frontend tcp
    bind %s
    tcp-request connection set-src ipv4(198.51.100.10)
    default_backend fulcrum_tcp
backend fulcrum_v2
    server fulcrum %s send-proxy-v2 check inter 100ms check-send-proxy
backend fulcrum_v1
    server fulcrum %s send-proxy
backend fulcrum_tcp
    server fulcrum %s send-proxy-v2
`, v2Front, v1Front, v6Front, tcpFront, web, web, tcpVIP), v2Front, v1Front, v6Front, tcpFront)

	for _, tt := range []struct{ front, client string }{
		{v2Front, "198.51.100.7"},
		{v1Front, "198.51.100.8"},
		{v6Front, "2001:db8::9"},
	} {
		if status, body := curlStatus(t, "http://"+tt.front+"/"); status != 200 || body != "ok" {
			t.Fatalf("through HAProxy %s: %d %q", tt.front, status, body)
		}
		heads := rb.received()
		if got := values(fields(heads[len(heads)-1]), "X-Forwarded-For"); len(got) != 1 || got[0] != tt.client {
			t.Errorf("through %s: X-Forwarded-For = %q, want %q", tt.front, got, tt.client)
		}
	}
	// tcp mode: exactly the bytes after the header reach the real server.
	c := dialRaw(t, tcpFront)
	c.send("hello\x00PROXY \r\n")
	c.c.CloseWrite()
	if b, err := io.ReadAll(c.br); err != nil || string(b) != "hello\x00PROXY \r\n" {
		t.Errorf("echo through HAProxy and fulcrum: %q, %v", b, err)
	}
	f.waitLog(5*time.Second, "of the tcp connection", func(e logEntry) bool {
		return e.str("msg") == "connection" && e.str("service") == "tcp"
	})
	mu.Lock()
	if len(tcpGot) != 1 || tcpGot[0] != "hello\x00PROXY \r\n" {
		t.Errorf("tcp real server got %q", tcpGot)
	}
	mu.Unlock()
	want := []string{"198.51.100.7", "198.51.100.8", "2001:db8::9", "198.51.100.10"}
	if got := accessClients(f, len(want)); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("access log clients = %q, want %q", got, want)
	}
	// HAProxy's health checks (LOCAL headers) were taken without a fuss.
	if l := f.logsWhere(func(e logEntry) bool { return strings.HasPrefix(e.str("msg"), "PROXY header refused") }); len(l) > 0 {
		t.Errorf("refused: %v", l)
	}
}

// TestAcceptProxyRefused: a PROXY header from an untrusted peer, a
// malformed one and one that does not arrive whole within
// timeouts.client_header close the connection with a log line.
func TestAcceptProxyRefused(t *testing.T) {
	rb := newRawBackend(t, func(string) string { return okResponse("ok") })
	trusted, untrusted := freeAddr(t), freeAddr(t)
	f := startFulcrum(t, config{services: []service{
		{name: "trusting", listen: []string{trusted}, opts: acceptProxyOpts, timeouts: "client_header = \"300ms\"\n",
			real: []real{{name: "raw", address: rb.addr}}},
		{name: "untrusting", listen: []string{untrusted}, opts: "accept_proxy = true\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
			real: []real{{name: "raw", address: rb.addr}}},
	}})
	const request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	tests := []struct {
		name, vip, send, why string
	}{
		{"untrusted", untrusted, "PROXY TCP4 198.51.100.7 192.0.2.1 1 80\r\n" + request,
			"peer 127.0.0.1 is not in trusted_proxies"},
		{"malformed v1", trusted, "PROXY TCP4 198.51.100.777 192.0.2.1 1 80\r\n" + request, "invalid address"},
		{"v1 without CRLF", trusted, "PROXY TCP4 198.51.100.7 192.0.2.1 1 80 " + strings.Repeat("x", 100), "no CRLF within 107 bytes"},
		{"v2 bad command", trusted, "\r\n\r\n\x00\r\nQUIT\n\x23\x11\x00\x0c" + strings.Repeat("\x01", 12) + request,
			"unsupported proxy protocol version and command"},
		{"missing", trusted, request, "no PROXY protocol header"},
		{"incomplete", trusted, "PROXY TCP4 198.51.100.7 ", "not received within timeouts.client_header"},
		{"silent", trusted, "", "not received within timeouts.client_header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, tt.vip)
			if tt.send != "" {
				c.send(tt.send)
			}
			c.expectClosed(5 * time.Second)
			f.waitLog(5*time.Second, "saying why", func(e logEntry) bool {
				return e.str("msg") == "PROXY header refused, connection closed" && e.str("level") == "warn" &&
					e.str("client") == "127.0.0.1" && strings.Contains(e.str("error"), tt.why)
			})
		})
	}
	if n := len(rb.received()); n != 0 {
		t.Errorf("real server got %d requests, want none", n)
	}
}

// TestAcceptProxyTLS: the PROXY header precedes the TLS handshake; an
// HTTP/2 client's requests (through the handler path) and an HTTP/1.1
// client's carry the header's client to the real server, in
// X-Forwarded-For and Forwarded, and to the access log.
func TestAcceptProxyTLS(t *testing.T) {
	ca := testpki.NewCA(t, "e2e")
	cert, key := issue(t, ca, "www.example.com", false, "www.example.com")
	type seen struct{ xff, fwd, proto string }
	got := make(chan seen, 10)
	backend := newHTTPBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Header.Get("X-Forwarded-For"), strings.Join(r.Header.Values("Forwarded"), " | "), r.Header.Get("X-Forwarded-Proto")}
		io.WriteString(w, "a")
	}))
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   acceptProxyOpts + "forwarded_header = true\n" + tlsTable("alpn = [\"h2\", \"http/1.1\"]\n", [2]string{cert, key}),
		real:   []real{backend.real("")},
	}}})
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	for _, tt := range []struct {
		proto, header, client, fwd string
	}{
		{"HTTP/2.0", "PROXY TCP4 198.51.100.9 192.0.2.1 4000 443\r\n", "198.51.100.9", "for=198.51.100.9;proto=https;host=www.example.com"},
		{"HTTP/1.1", "\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24" + string(net.ParseIP("2001:db8::5").To16()) + string(net.ParseIP("2001:db8::1").To16()) + "\x10\x00\x01\xbb",
			"2001:db8::5", `for="[2001:db8::5]";proto=https;host=www.example.com`},
	} {
		tr := &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "www.example.com"},
			ForceAttemptHTTP2: tt.proto == "HTTP/2.0",
			DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", vip)
				if err != nil {
					return nil, err
				}
				io.WriteString(c, tt.header)
				conf := &tls.Config{RootCAs: pool, ServerName: "www.example.com", NextProtos: []string{"http/1.1"}}
				if tt.proto == "HTTP/2.0" {
					conf.NextProtos = []string{"h2", "http/1.1"}
				}
				tc := tls.Client(c, conf)
				return tc, tc.HandshakeContext(ctx)
			},
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://www.example.com/")
		if err != nil {
			t.Fatalf("%s: %v", tt.proto, err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		if resp.Proto != tt.proto {
			t.Errorf("spoke %s, want %s", resp.Proto, tt.proto)
		}
		s := <-got
		if s.xff != tt.client || s.fwd != tt.fwd || s.proto != "https" {
			t.Errorf("%s: real server saw X-Forwarded-For %q, Forwarded %q, proto %q; want %q, %q, https",
				tt.proto, s.xff, s.fwd, s.proto, tt.client, tt.fwd)
		}
		f.waitLog(5*time.Second, "naming the client", func(e logEntry) bool {
			return e.str("msg") == "request" && e.str("client") == tt.client && e.str("proto") == tt.proto
		})
	}
}

// TestXForwardedForTrust: from a trusted peer, the right-most untrusted
// X-Forwarded-For address is the client of the access log and of source-IP
// persistence; from an untrusted peer the field is not believed.
func TestXForwardedForTrust(t *testing.T) {
	needCurl(t)
	a := newRawBackend(t, func(string) string { return okResponse("a") })
	b := newRawBackend(t, func(string) string { return okResponse("b") })
	trusting, untrusting := freeAddr(t), freeAddr(t)
	persist := "\n[virtual_service.persistence]\nmethod = \"source_ip\"\n"
	f := startFulcrum(t, config{services: []service{
		{name: "trusting", listen: []string{trusting}, opts: "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\nforwarded_header = true\n" + persist,
			real: []real{{name: "a", address: a.addr}, {name: "b", address: b.addr}}},
		{name: "untrusting", listen: []string{untrusting}, opts: "trusted_proxies = [\"10.0.0.0/8\"]\nforwarded_header = true\n" + persist,
			real: []real{{name: "a", address: a.addr}, {name: "b", address: b.addr}}},
	}})
	get := func(vip, xff string) string {
		t.Helper()
		status, body := curlStatus(t, "-H", "X-Forwarded-For: "+xff, "-H", "Forwarded: for=192.0.2.66", "http://"+vip+"/")
		if status != 200 {
			t.Fatalf("status %d", status)
		}
		return body
	}
	// Round robin sends two new clients to different real servers; each
	// then sticks to its own, keyed on the X-Forwarded-For client.
	first := get(trusting, "203.0.113.9, 10.0.0.1")
	second := get(trusting, "198.51.100.3")
	if first == second {
		t.Fatalf("two clients both went to %s: persistence keyed on the peer?", first)
	}
	for range 3 {
		if got := get(trusting, "1.1.1.1, 203.0.113.9, 10.0.0.7"); got != first {
			t.Errorf("client 203.0.113.9 went to %s, then %s", first, got)
		}
		if got := get(trusting, "198.51.100.3"); got != second {
			t.Errorf("client 198.51.100.3 went to %s, then %s", second, got)
		}
	}
	heads := append(a.received(), b.received()...)
	for _, h := range heads {
		fwd := values(fields(h), "Forwarded")
		if xff := values(fields(h), "X-Forwarded-For"); len(xff) != 1 || !strings.HasSuffix(xff[0], ", 127.0.0.1") {
			t.Errorf("X-Forwarded-For = %q: not the client's list and the peer", xff)
		}
		if len(fwd) != 1 || !strings.HasPrefix(fwd[0], "for=192.0.2.66, for=") {
			t.Errorf("Forwarded from a trusted peer = %q, want its element kept and ours appended", fwd)
		}
	}
	// Untrusted peer: the client is the peer, the client's Forwarded goes.
	get(untrusting, "203.0.113.9")
	var last string
	for _, h := range append(a.received(), b.received()...) {
		if strings.Contains(h, "X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n") {
			last = h
		}
	}
	_, port, _ := net.SplitHostPort(untrusting)
	if want := `Forwarded: for=127.0.0.1;proto=http;host="127.0.0.1:` + port + `"` + "\r\n"; !strings.Contains(last, want) {
		t.Errorf("head from an untrusted peer:\n%s\nwant %q", last, want)
	}
	want := []string{"203.0.113.9", "198.51.100.3", "203.0.113.9", "198.51.100.3", "203.0.113.9", "198.51.100.3",
		"203.0.113.9", "198.51.100.3", "127.0.0.1"}
	clients := accessClients(f, len(want))
	if strings.Join(clients, " ") != strings.Join(want, " ") {
		t.Errorf("access log clients = %q, want %q", clients, want)
	}
}
