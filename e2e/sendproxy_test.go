package e2e

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// haproxy is a running HAProxy, an independent implementation of the PROXY
// protocol, used here as the real server behind fulcrum (accept-proxy).
type haproxy struct {
	t   *testing.T
	out *syncBuffer
}

// startHAProxy runs haproxy in the foreground on cfg (its log goes to
// stdout) and waits until every address of addrs listens.
func startHAProxy(t *testing.T, cfg string, addrs ...string) *haproxy {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not found: install the Debian package haproxy to run this end-to-end test")
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &haproxy{t: t, out: new(syncBuffer)}
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = h.out, h.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-done
		if t.Failed() {
			t.Logf("haproxy output:\n%s", tail(h.out.String(), 8<<10))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range addrs {
		for !isListening(t, a) {
			select {
			case <-done:
				t.Fatalf("haproxy exited:\n%s", h.out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("haproxy does not listen on %s:\n%s", a, h.out.String())
			}
			time.Sleep(10 * time.Millisecond) // polling a condition
		}
	}
	return h
}

// waitLine waits for a line of HAProxy's log containing s.
func (h *haproxy) waitLine(s string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(h.out.String(), s) {
		if time.Now().After(deadline) {
			h.t.Fatalf("no haproxy log line with %q in:\n%s", s, h.out.String())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
}

// haproxyConfig is HAProxy as a real server that takes a PROXY header (v1
// or v2, accept-proxy detects which): in http mode it answers every request
// itself with the client address and port it learnt from the header, the
// frontend's connection count and the PP2_TYPE_AUTHORITY TLV; in tcp mode
// it logs the client and relays to an echo server.
func haproxyConfig(httpAddr, tcpAddr, echo string) string {
	return fmt.Sprintf(`global
    log stdout format raw local0 info
defaults
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend http
    mode http
    bind %s accept-proxy
    log-format "http client=%%ci:%%cp uri=%%HU status=%%ST"
    http-request return status 200 content-type text/plain lf-string "%%[src]:%%[src_port] conns=%%[fe_conn] authority=%%[fc_pp_authority]"
frontend tcp
    mode tcp
    bind %s accept-proxy
    log-format "tcp client=%%ci:%%cp"
    default_backend echo
backend echo
    mode tcp
    server echo %s
`, httpAddr, tcpAddr, echo)
}

// keepAliveClient sends GETs over one HTTP/1.1 connection (TLS if conf).
type keepAliveClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string, conf *tls.Config) *keepAliveClient {
	t.Helper()
	var c net.Conn
	var err error
	if conf != nil {
		c, err = tls.Dial("tcp", addr, conf)
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAliveClient{t: t, c: c, br: bufio.NewReader(c)}
}

func (k *keepAliveClient) get() string {
	k.t.Helper()
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(k.c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		k.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		k.t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

// localAddr is the client's own address as HAProxy prints %[src]:%[src_port].
func (k *keepAliveClient) localAddr() string { return k.c.LocalAddr().String() }

// TestSendProxyHAProxy: fulcrum's PROXY v1 and v2 headers, read by HAProxy
// (accept-proxy) as the real server: it sees the client's address and port
// for HTTP (plain and TLS-terminated, with the SNI as PP2_TYPE_AUTHORITY)
// and TCP virtual services; each client gets its own connection to the real
// server, reused by its keep-alive requests; health checks send a header
// (v1 UNKNOWN, v2 LOCAL) that HAProxy accepts.
func TestSendProxyHAProxy(t *testing.T) {
	echo := startEcho(t)
	hpHTTP, hpTCP := freeAddr(t), freeAddr(t)
	hp := startHAProxy(t, haproxyConfig(hpHTTP, hpTCP, echo), hpHTTP, hpTCP)

	ca := testpki.NewCA(t, "sendproxy")
	cert, key := issue(t, ca, "www.example.test", false, "www.example.test")
	vips := map[string]string{}
	var services []service
	for _, v := range []string{"v1", "v2"} {
		vips["http-"+v], vips["tcp-"+v] = freeAddr(t), freeAddr(t)
		services = append(services,
			service{name: "http-" + v, listen: []string{vips["http-"+v]},
				health: "type = \"http\"\npath = \"/check-" + v + "\"\ninterval = \"200ms\"\n",
				real:   []real{{name: "hp", address: hpHTTP, opts: fmt.Sprintf("send_proxy = %q\n", v)}}},
			service{name: "tcp-" + v, listen: []string{vips["tcp-"+v]}, opts: "mode = \"tcp\"\n",
				real: []real{{name: "hp", address: hpTCP, opts: fmt.Sprintf("send_proxy = %q\n", v)}}})
	}
	vips["https-v2"] = freeAddr(t)
	services = append(services, service{name: "https-v2", listen: []string{vips["https-v2"]},
		opts: tlsTable("", [2]string{cert, key}),
		real: []real{{name: "hp", address: hpHTTP, opts: "send_proxy = \"v2\"\n"}}})
	startFulcrum(t, config{services: services})

	for _, v := range []string{"v1", "v2"} {
		t.Run("http "+v, func(t *testing.T) {
			c1, c2 := dialKeepAlive(t, vips["http-"+v], nil), dialKeepAlive(t, vips["http-"+v], nil)
			for i := range 3 {
				for _, c := range []*keepAliveClient{c1, c2} {
					body := c.get()
					// With one pooled connection, c2's request would
					// arrive as c1's, under c1's header.
					if !strings.HasPrefix(body, c.localAddr()+" ") {
						t.Fatalf("request %d: HAProxy saw %q, want client %s", i, body, c.localAddr())
					}
					if i > 0 && !strings.Contains(body, "conns=2 ") {
						t.Fatalf("request %d: %q: want 2 connections at the real server, one per client", i, body)
					}
				}
			}
			// The check reached HAProxy's HTTP layer: its header was taken.
			hp.waitLine("uri=/check-" + v + " status=200")
		})
		t.Run("tcp "+v, func(t *testing.T) {
			c, err := net.Dial("tcp", vips["tcp-"+v])
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "hello\n")
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || line != "hello\n" {
				t.Fatalf("echo through HAProxy: %q, %v", line, err)
			}
			c.Close()
			hp.waitLine("tcp client=" + c.LocalAddr().String())
		})
	}
	t.Run("https v2 TLVs", func(t *testing.T) {
		c := dialKeepAlive(t, vips["https-v2"], &tls.Config{ServerName: "www.example.test", RootCAs: ca.Pool()})
		body := c.get()
		if !strings.HasPrefix(body, c.localAddr()+" ") || !strings.HasSuffix(body, "authority=www.example.test") {
			t.Fatalf("HAProxy saw %q, want client %s and authority www.example.test", body, c.localAddr())
		}
	})
}

// startEcho is a TCP server that sends back what it gets.
func startEcho(t *testing.T) string {
	t.Helper()
	return newTCPBackend(t, "echo", func(c *net.TCPConn) { io.Copy(c, c) }).addr
}
