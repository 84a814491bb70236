package healthcheck

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// httpServer answers each request head with reply (raw bytes, so that tests
// control every byte of the response) and sends the heads it read on the
// returned channel. With cfg it speaks TLS.
func httpServer(t *testing.T, cfg *tls.Config, reply string) (string, <-chan string) {
	heads := make(chan string, 16)
	addr := serve(t, func(c net.Conn) {
		if cfg != nil {
			c = tls.Server(c, cfg)
		}
		br := bufio.NewReader(c)
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			head.WriteString(line)
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		heads <- head.String()
		if reply == "" { // never answer
			hold(c)
			return
		}
		c.Write([]byte(reply))
	})
	return addr, heads
}

func TestHTTP(t *testing.T) {
	big := strings.Repeat("x", maxRead)
	tests := []struct {
		name  string
		hc    config.HealthCheck
		reply string
		ok    bool
		want  string
	}{
		{name: "200 passes by default", reply: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", ok: true, want: "status 200"},
		{name: "302 passes by default", reply: "HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", ok: true, want: "status 302"},
		{name: "399 passes by default", reply: "HTTP/1.1 399 Odd\r\n\r\n", ok: true, want: "status 399"},
		{name: "404 fails by default", reply: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", want: "status 404, want 200-399"},
		{name: "503 fails by default", reply: "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", want: "status 503, want 200-399"},
		{name: "199 fails by default", reply: "HTTP/1.1 199 Odd\r\n\r\nHTTP/1.1 199 Odd\r\n\r\nHTTP/1.1 199 Odd\r\n\r\nHTTP/1.1 199 Odd\r\n\r\nHTTP/1.1 199 Odd\r\n\r\nHTTP/1.1 199 Odd\r\n\r\nHTTP/1.1 199 Odd\r\n\r\nHTTP/1.1 199 Odd\r\n\r\nHTTP/1.1 199 Odd\r\n\r\n",
			want: "status 199, want 200-399"},
		{name: "expected 503", hc: config.HealthCheck{ExpectStatus: config.StatusRanges{{Lo: 503, Hi: 503}}},
			reply: "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", ok: true, want: "status 503"},
		{name: "in the second range", hc: config.HealthCheck{ExpectStatus: config.StatusRanges{{Lo: 200, Hi: 200}, {Lo: 300, Hi: 399}}},
			reply: "HTTP/1.1 301 Moved Permanently\r\nContent-Length: 0\r\n\r\n", ok: true, want: "status 301"},
		{name: "between the ranges", hc: config.HealthCheck{ExpectStatus: config.StatusRanges{{Lo: 200, Hi: 200}, {Lo: 300, Hi: 399}}},
			reply: "HTTP/1.1 204 No Content\r\n\r\n", want: "status 204, want 200, 300-399"},
		{name: "interim 103 skipped", reply: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ok: true, want: "status 200"},
		{name: "body matches", hc: config.HealthCheck{ExpectBody: `"status":\s*"ok"`},
			reply: "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"status\": \"ok\"}", ok: true, want: "status 200"},
		{name: "body does not match", hc: config.HealthCheck{ExpectBody: "OK"},
			reply: "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nFAIL", want: `body does not match "OK" (got "FAIL")`},
		{name: "empty body does not match", hc: config.HealthCheck{ExpectBody: "OK"},
			reply: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", want: `body does not match "OK" (got nothing)`},
		{name: "status checked before body", hc: config.HealthCheck{ExpectBody: "OK"},
			reply: "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\nOK", want: "status 500, want 200-399"},
		{name: "chunked body matches", hc: config.HealthCheck{ExpectBody: "^healthy$"},
			reply: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nheal\r\n3\r\nthy\r\n0\r\n\r\n", ok: true, want: "status 200"},
		{name: "body until close matches", hc: config.HealthCheck{ExpectBody: "OK"},
			reply: "HTTP/1.1 200 OK\r\n\r\nall OK", ok: true, want: "status 200"},
		{name: "match within 64 KiB", hc: config.HealthCheck{ExpectBody: "OK"},
			reply: "HTTP/1.1 200 OK\r\n\r\n" + big[:len(big)-2] + "OK" + big, ok: true, want: "status 200"},
		{name: "match beyond 64 KiB", hc: config.HealthCheck{ExpectBody: "OK"},
			reply: "HTTP/1.1 200 OK\r\n\r\n" + big + "OK", want: `body does not match "OK" (got "` + big[:64] + `"...)`},
		{name: "short body", hc: config.HealthCheck{ExpectBody: "OK"},
			reply: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nOK", want: "read body: connection closed by the server"},
		{name: "HEAD reads no body", hc: config.HealthCheck{Method: "HEAD"},
			reply: "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", ok: true, want: "status 200"},
		{name: "malformed", reply: "SSH-2.0-OpenSSH_9.6\r\n\r\n", want: `read response: malformed HTTP response "SSH-2.0-OpenSSH_9.6"`},
		{name: "empty line", reply: "\r\n", want: `read response: malformed HTTP response ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := httpServer(t, nil, tt.reply)
			tt.hc.Type = config.CheckHTTP
			p, err := New(&tt.hc)
			if err != nil {
				t.Fatal(err)
			}
			r := p.Check(timeoutCtx(t, 5*time.Second), addr)
			if r.OK != tt.ok || r.Detail != tt.want {
				t.Errorf("Check = %+v, want OK %v, Detail %q", r, tt.ok, tt.want)
			}
		})
	}
}

func TestHTTPRequest(t *testing.T) {
	const reply = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	tests := []struct {
		name string
		hc   config.HealthCheck
		want string // the head, with ADDR for the server's address
	}{
		{name: "defaults", want: "GET / HTTP/1.1\r\nHost: ADDR\r\nUser-Agent: fulcrum-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"},
		{name: "method, path and host", hc: config.HealthCheck{Method: "HEAD", Path: "/health?deep=1", Host: "www.example.com"},
			want: "HEAD /health?deep=1 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: fulcrum-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, heads := httpServer(t, nil, reply)
			tt.hc.Type = config.CheckHTTP
			p, err := New(&tt.hc)
			if err != nil {
				t.Fatal(err)
			}
			if r := p.Check(timeoutCtx(t, 5*time.Second), addr); !r.OK {
				t.Fatalf("Check = %+v", r)
			}
			if got, want := <-heads, strings.ReplaceAll(tt.want, "ADDR", addr); got != want {
				t.Errorf("request head\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestHTTPFailures(t *testing.T) {
	silent, _ := httpServer(t, nil, "")
	refused := refusedAddr(t)
	cert, _ := testCert(t)
	tlsServer, _ := httpServer(t, &tls.Config{Certificates: []tls.Certificate{cert}}, "HTTP/1.1 200 OK\r\n\r\n")
	plain, _ := httpServer(t, nil, "HTTP/1.1 200 OK\r\n\r\n")
	eager := serve(t, func(c net.Conn) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) })
	closes := serve(t, func(c net.Conn) { c.(*net.TCPConn).CloseWrite(); hold(c) })
	tests := []struct {
		name string
		typ  string
		addr string
		want string
	}{
		{name: "refused", typ: "http", addr: refused, want: "connect " + refused + ": connection refused"},
		{name: "no answer", typ: "http", addr: silent, want: "timeout after 100ms waiting for the response"},
		{name: "closed without reply", typ: "http", addr: closes, want: "read response: connection closed by the server"},
		{name: "http to a TLS server", typ: "http", addr: tlsServer, want: "read response: connection closed by the server"},
		{name: "https to a silent plain server", typ: "https", addr: plain, want: "timeout after 100ms in the TLS handshake"},
		{name: "https to a plain server", typ: "https", addr: eager, want: "tls: first record does not look like a TLS handshake"},
		{name: "https closed", typ: "https", addr: closes, want: "tls: connection closed by the server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(&config.HealthCheck{Type: tt.typ})
			if err != nil {
				t.Fatal(err)
			}
			r := p.Check(timeoutCtx(t, 100*time.Millisecond), tt.addr)
			if r.OK || r.Detail != tt.want {
				t.Errorf("Check = %+v, want a failure %q", r, tt.want)
			}
		})
	}
}

func TestHTTPS(t *testing.T) {
	cert, pool := testCert(t)
	sni := make(chan string, 16)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni <- h.ServerName
			return nil, nil
		},
	}
	addr, heads := httpServer(t, cfg, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
	tests := []struct {
		name    string
		hc      config.HealthCheck
		roots   *x509.CertPool
		ok      bool
		want    string
		wantSNI string
	}{
		{name: "self-signed, verify off", ok: true, want: "status 200"},
		{name: "self-signed, verify on", hc: config.HealthCheck{TLSVerify: true},
			want: "tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{name: "trusted, verify on, IP", hc: config.HealthCheck{TLSVerify: true}, roots: pool, ok: true, want: "status 200"},
		{name: "trusted, verify on, host", hc: config.HealthCheck{TLSVerify: true, Host: "health.test:8443", ExpectBody: "OK"},
			roots: pool, ok: true, want: "status 200", wantSNI: "health.test"},
		{name: "trusted, verify on, wrong host", hc: config.HealthCheck{TLSVerify: true, Host: "other.test"}, roots: pool,
			want: "tls: failed to verify certificate: x509: certificate is valid for health.test, not other.test", wantSNI: "other.test"},
		{name: "wrong host, verify off", hc: config.HealthCheck{Host: "other.test"}, ok: true, want: "status 200", wantSNI: "other.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.hc.Type = config.CheckHTTPS
			p, err := New(&tt.hc)
			if err != nil {
				t.Fatal(err)
			}
			p.(*httpProbe).rootCAs = tt.roots
			r := p.Check(timeoutCtx(t, 5*time.Second), addr)
			if r.OK != tt.ok || r.Detail != tt.want {
				t.Errorf("Check = %+v, want OK %v, Detail %q", r, tt.ok, tt.want)
			}
			// No SNI for an IP address (RFC 6066 §3).
			if got := <-sni; got != tt.wantSNI {
				t.Errorf("SNI = %q, want %q", got, tt.wantSNI)
			}
			if tt.ok {
				head := <-heads
				host := tt.hc.Host
				if host == "" {
					host = addr
				}
				if !strings.Contains(head, "\r\nHost: "+host+"\r\n") {
					t.Errorf("head %q lacks Host %s", head, host)
				}
			}
		})
	}
}
