package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// newH2CBackend starts a real server that speaks only HTTP/2 with prior
// knowledge (h2c, as a gRPC server without TLS): an HTTP/1.1 request gets
// nothing it could read.
func newH2CBackend(t *testing.T, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// TestH2RealServerHTTP1Clients: a service whose real server speaks only
// h2c answers HTTP/1.1 clients (plain and over TLS) and HTTP/2 clients; the
// real server sees HTTP/2 requests with X-Forwarded-For; its response
// trailers reach the client; the access log names each client's protocol; a
// WebSocket upgrade is answered 501.
func TestH2RealServerHTTP1Clients(t *testing.T) {
	needCurl(t)
	rs := newH2CBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Checksum")
		fmt.Fprintf(w, "%s %s xff=%s xfp=%s body=%q\n", r.Proto, r.URL.Path, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"), body)
		w.Header().Set("X-Checksum", "c0ffee")
	}))
	ca := testpki.NewCA(t, "h2rs")
	cert, key := issue(t, ca, "www.example.com", false, "www.example.com")
	plain, secure := freeAddr(t), freeAddr(t)
	_, port, _ := net.SplitHostPort(secure)
	h2 := real{name: "h2c", address: rs, opts: `protocol = "h2"` + "\n"}
	f := startFulcrum(t, config{services: []service{
		{name: "plain", listen: []string{plain}, real: []real{h2}},
		{name: "secure", listen: []string{secure}, opts: tlsTable("", [2]string{cert, key}), real: []real{h2}},
	}})
	tlsArgs := []string{"--cacert", ca.File, "--resolve", "www.example.com:" + port + ":127.0.0.1"}
	secureURL := "https://www.example.com:" + port

	tests := []struct {
		name      string
		args      []string
		wantProto string // the access log's
		wantXFP   string
	}{
		{"HTTP/1.1", []string{"--http1.1", "http://" + plain + "/one"}, "HTTP/1.1", "http"},
		{"HTTP/1.0", []string{"--http1.0", "http://" + plain + "/one"}, "HTTP/1.0", "http"},
		{"HTTP/1.1 over TLS", append([]string{"--http1.1", secureURL + "/one"}, tlsArgs...), "HTTP/1.1", "https"},
		{"HTTP/2 over TLS", append([]string{"--http2", secureURL + "/one"}, tlsArgs...), "HTTP/2.0", "https"},
		{"HTTP/1.1 POST", []string{"--http1.1", "-d", "hello", "http://" + plain + "/one"}, "HTTP/1.1", "http"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := curl(t, append([]string{"-D", "-", "-H", fmt.Sprintf("X-Test: %d", i)}, tt.args...)...)
			if r.code != 0 {
				t.Fatalf("curl: exit %d: %s", r.code, r.stderr)
			}
			wantBody := `body=""`
			if strings.Contains(tt.name, "POST") {
				wantBody = `body="hello"`
			}
			want := fmt.Sprintf("HTTP/2.0 /one xff=127.0.0.1 xfp=%s %s\n", tt.wantXFP, wantBody)
			if !strings.Contains(r.stdout, want) {
				t.Errorf("response %q, want the real server's %q", r.stdout, want)
			}
			// HTTP/1.0 has no chunked encoding to carry trailers.
			if tt.wantProto != "HTTP/1.0" && !strings.Contains(strings.ToLower(r.stdout), "x-checksum: c0ffee") {
				t.Errorf("response %q: no trailer X-Checksum", r.stdout)
			}
			e := f.waitLog(5*time.Second, "for the request", func(e logEntry) bool {
				return e.str("logger") == "access" && e.str("service") != "" && e.num("status") == 200 &&
					e.str("proto") == tt.wantProto && e.str("target") == "/one"
			})
			if e.str("real_server") != "h2c" {
				t.Errorf("access log %v: want real_server h2c", e)
			}
		})
	}

	t.Run("WebSocket", func(t *testing.T) {
		status, body := curlStatus(t, "--http1.1", "-H", "Connection: Upgrade", "-H", "Upgrade: websocket",
			"-H", "Sec-WebSocket-Version: 13", "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "http://"+plain+"/ws")
		if status != 501 {
			t.Errorf("upgrade: status %d %q, want 501", status, body)
		}
		f.waitLog(5*time.Second, "for the refused upgrade", func(e logEntry) bool {
			return e.str("logger") == "access" && e.num("status") == 501 && strings.Contains(e.str("error"), "WebSocket")
		})
	})
}

// TestH2RealServerHealthCheck: an http health check of a real server that
// speaks only h2c (as gRPC servers do) passes, and keeps passing: the check
// speaks HTTP/2 (over HTTP/1.1 the first check would fail, and fall = 1 mark
// the server down).
func TestH2RealServerHealthCheck(t *testing.T) {
	var checks, bad atomic.Int64
	rs := newH2CBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/app" {
			io.WriteString(w, "app")
			return
		}
		if r.URL.Path != "/healthz" || r.ProtoMajor != 2 || r.Header.Get("User-Agent") != "fulcrum-health-check" {
			bad.Add(1)
			http.Error(w, "unexpected "+r.Proto+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		checks.Add(1)
		io.WriteString(w, "ok")
	}))
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		health: "type = \"http\"\npath = \"/healthz\"\nexpect_body = \"^ok$\"\ninterval = \"100ms\"\nrise = 1\nfall = 1\n",
		real:   []real{{name: "grpc", address: rs, opts: `protocol = "h2"` + "\n"}},
	}}})
	waitFor(t, 5*time.Second, "three checks", func() bool { return checks.Load() >= 3 })
	if down := f.logsWhere(func(e logEntry) bool { return e.str("msg") == "real server is down" }); len(down) > 0 || bad.Load() > 0 {
		t.Errorf("%d unexpected requests; down: %v", bad.Load(), down)
	}
	if status, body := curlStatus(t, "http://"+vip+"/app"); status != 200 || body != "app" {
		t.Errorf("through fulcrum: %d %q", status, body)
	}
}
