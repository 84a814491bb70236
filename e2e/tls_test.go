package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// issue writes a certificate of ca for names (DNS names or IPs) and its
// key; client makes it a client certificate.
func issue(t *testing.T, ca *testpki.CA, cn string, client bool, names ...string) (certFile, keyFile string) {
	t.Helper()
	l := testpki.Leaf{CN: cn, Org: "Fulcrum e2e", Client: client, NotAfter: time.Now().Add(24 * time.Hour), NoChain: true}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			l.IPs = append(l.IPs, ip)
		} else {
			l.DNS = append(l.DNS, n)
		}
	}
	return ca.Files(t, l)
}

// servedCN connects with SNI name and returns the common name of the
// certificate fulcrum served.
func servedCN(t *testing.T, vip, name string) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not found: install openssl to run this end-to-end test")
	}
	cmd := exec.Command("openssl", "s_client", "-connect", vip, "-servername", name, "-brief")
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Peer certificate:") {
			if i := strings.Index(line, "CN = "); i >= 0 {
				return strings.TrimSpace(line[i+5:])
			}
			if i := strings.Index(line, "CN="); i >= 0 {
				return strings.TrimSpace(line[i+3:])
			}
		}
	}
	t.Fatalf("openssl s_client -servername %s: no peer certificate in\n%s", name, out)
	return ""
}

// tlsTable renders a [virtual_service.tls] table.
func tlsTable(extra string, pairs ...[2]string) string {
	var b strings.Builder
	b.WriteString("\n[virtual_service.tls]\ncertificates = [")
	for i, p := range pairs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "{ cert = %q, key = %q }", p[0], p[1])
	}
	b.WriteString("]\n")
	b.WriteString(extra)
	return b.String()
}

// TestTLSTermination: SNI picks the certificate (exact, wildcard, default);
// HTTPS requests reach the real servers with X-Forwarded-Proto https; the
// persistence cookie is Secure; a certificate renewed on disk is served
// after a reload while wrk keeps running over HTTPS without an error.
func TestTLSTermination(t *testing.T) {
	needCurl(t)
	ca := testpki.NewCA(t, "e2e")
	www, wwwKey := issue(t, ca, "www.example.com", false, "www.example.com")
	api, apiKey := issue(t, ca, "api.example.com", false, "api.example.com")
	wild, wildKey := issue(t, ca, "wild.example.net", false, "*.example.net")
	proto := make(chan string, 100)
	backend := newHTTPBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case proto <- r.Header.Get("X-Forwarded-Proto"):
		default:
		}
		io.WriteString(w, "a")
	}))
	vip := freeAddr(t)
	_, port, _ := net.SplitHostPort(vip)
	plain := freeAddr(t)
	cfg := config{services: []service{{
		listen: []string{vip},
		opts: tlsTable(fmt.Sprintf("redirect_http = %q\n", plain), [2]string{www, wwwKey}, [2]string{api, apiKey}, [2]string{wild, wildKey}) +
			"\n[virtual_service.persistence]\nmethod = \"cookie\"\n",
		real: []real{backend.real("")},
	}}}
	f := startFulcrum(t, cfg)

	for _, tt := range []struct{ sni, want string }{
		{"www.example.com", "www.example.com"},
		{"API.example.com", "api.example.com"},
		{"shop.example.net", "wild.example.net"},
		{"a.b.example.net", "www.example.com"}, // a wildcard covers one label only: the default
		{"unknown.test", "www.example.com"},
	} {
		if got := servedCN(t, vip, tt.sni); got != tt.want {
			t.Errorf("SNI %s: served %s, want %s", tt.sni, got, tt.want)
		}
	}

	r := curl(t, "--cacert", ca.File, "--resolve", "api.example.com:"+port+":127.0.0.1", "-D", "/dev/stderr",
		"https://api.example.com:"+port+"/")
	if r.code != 0 || r.stdout != "a" {
		t.Fatalf("curl https: exit %d, body %q\n%s", r.code, r.stdout, r.stderr)
	}
	if got := <-proto; got != "https" {
		t.Errorf("X-Forwarded-Proto = %q, want https", got)
	}
	if !strings.Contains(r.stderr, "Secure") {
		t.Errorf("the persistence cookie over HTTPS lacks Secure:\n%s", r.stderr)
	}
	// redirect_http: plain HTTP is sent to https, path and query kept.
	r = curl(t, "-D", "/dev/stderr", "-H", "Host: www.example.com", "http://"+plain+"/shop/cart?id=7")
	if !strings.HasPrefix(r.stderr, "HTTP/1.1 308 ") || !strings.Contains(r.stderr, "Location: https://www.example.com:"+port+"/shop/cart?id=7\r\n") {
		t.Errorf("redirect_http answer:\n%s", r.stderr)
	}

	// Renew the www certificate in place and reload, under HTTPS load.
	wrk := needWrk(t)
	done := make(chan wrkResult, 1)
	go func() {
		out, _ := exec.Command(wrk, "-t1", "-c8", "-d3s", "https://127.0.0.1:"+port+"/").CombinedOutput()
		done <- parseWrk(string(out))
	}()
	renewed, renewedKey := issue(t, ca, "www2.example.com", false, "www.example.com")
	for _, p := range [][2]string{{renewed, www}, {renewedKey, wwwKey}} {
		b, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	reloaded := func() int {
		return len(f.logsWhere(func(e logEntry) bool { return e.str("msg") == "configuration reloaded" }))
	}
	n := reloaded()
	f.signal(syscall.SIGHUP)
	waitFor(t, 5*time.Second, "reload", func() bool { return reloaded() > n })
	if got := servedCN(t, vip, "www.example.com"); got != "www2.example.com" {
		t.Errorf("after the reload the renewed certificate is not served: %s", got)
	}
	res := <-done
	if res.requests == 0 || res.socketErrors != 0 || res.non2xx != 0 {
		t.Errorf("wrk over HTTPS during the certificate reload: %d requests, %d socket errors, %d non-2xx\n%s",
			res.requests, res.socketErrors, res.non2xx, res.out)
	}
}

// TestTLSReencryption: fulcrum connects to TLS real servers, verifying them
// against a CA, or not at all.
func TestTLSReencryption(t *testing.T) {
	ca := testpki.NewCA(t, "backend")
	other := testpki.NewCA(t, "other")
	certFile, keyFile := issue(t, ca, "backend.internal", false, "backend.internal")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v", r.TLS != nil)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	for _, tt := range []struct {
		name, opts string
		want       int
	}{
		{"verified", fmt.Sprintf("tls = true\ntls_server_name = \"backend.internal\"\ntls_ca = %q\n", ca.File), 200},
		{"not verified", "tls = true\ntls_verify = false\n", 200},
		{"wrong CA", fmt.Sprintf("tls = true\ntls_server_name = \"backend.internal\"\ntls_ca = %q\n", other.File), 502},
		{"wrong name", fmt.Sprintf("tls = true\ntls_server_name = \"other.internal\"\ntls_ca = %q\n", ca.File), 502},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vip := freeAddr(t)
			startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{{name: "b", address: addr, opts: tt.opts}}}}})
			resp, err := http.Get("http://" + vip + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || (tt.want == 200 && string(body) != "tls=true") {
				t.Errorf("status %d body %q, want %d", resp.StatusCode, body, tt.want)
			}
		})
	}
}

// TestTLSClientAuth: with client_auth = "require", a client certificate from
// the configured CA is accepted and described to the real server; no
// certificate, or one from another CA, is refused.
func TestTLSClientAuth(t *testing.T) {
	needCurl(t)
	ca := testpki.NewCA(t, "server")
	clients := testpki.NewCA(t, "clients")
	strangers := testpki.NewCA(t, "strangers")
	cert, key := issue(t, ca, "www.example.com", false, "www.example.com")
	alice, aliceKey := issue(t, clients, "alice", true)
	mallory, malloryKey := issue(t, strangers, "mallory", true)
	dn := make(chan string, 4)
	backend := newHTTPBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case dn <- r.Header.Get("X-SSL-Client-Verify") + " " + r.Header.Get("X-SSL-Client-DN"):
		default:
		}
		io.WriteString(w, "a")
	}))
	vip := freeAddr(t)
	_, port, _ := net.SplitHostPort(vip)
	startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   tlsTable(fmt.Sprintf("client_auth = \"require\"\nclient_ca = %q\n", clients.File), [2]string{cert, key}),
		real:   []real{backend.real("")},
	}}})
	base := []string{"--cacert", ca.File, "--resolve", "www.example.com:" + port + ":127.0.0.1"}
	url := "https://www.example.com:" + port + "/"
	r := curl(t, append(base, "--cert", alice, "--key", aliceKey, "-H", "X-SSL-Client-DN: CN=forged", url)...)
	if r.code != 0 || r.stdout != "a" {
		t.Fatalf("alice: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if got := <-dn; !strings.HasPrefix(got, "SUCCESS ") || !strings.Contains(got, "CN=alice") || strings.Contains(got, "forged") {
		t.Errorf("the real server saw %q, want SUCCESS and alice's DN (not the forged one)", got)
	}
	for _, who := range [][]string{nil, {"--cert", mallory, "--key", malloryKey}} {
		if r := curl(t, append(append(base, who...), url)...); r.code == 0 {
			t.Errorf("client %v was let in: %q", who, r.stdout)
		}
	}
}

// TestTestSSL runs testssl.sh against a TLS service: no HIGH or CRITICAL
// finding is allowed except those about the test certificate itself
// (self-signed chain, short validity, no revocation URI).
func TestTestSSL(t *testing.T) {
	bin, err := exec.LookPath("testssl")
	if err != nil {
		t.Skip("testssl not found: install testssl.sh (Debian package) to run the TLS conformance test")
	}
	ca := testpki.NewCA(t, "testssl")
	cert, key := issue(t, ca, "www.example.com", false, "www.example.com", "127.0.0.1")
	backend := newHTTPBackend(t, "a", nil)
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{listen: []string{vip}, opts: tlsTable("", [2]string{cert, key}), real: []real{backend.real("")}}}})
	report := filepath.Join(t.TempDir(), "testssl.json")
	out, err := exec.Command(bin, "--quiet", "--color", "0", "--warnings", "batch", "--severity", "HIGH",
		"--jsonfile", report, vip).CombinedOutput()
	if err != nil && len(out) == 0 {
		t.Fatalf("testssl: %v", err)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("testssl wrote no report: %v\n%s", err, out)
	}
	var findings []struct{ ID, Severity, Finding string }
	if err := json.Unmarshal(b, &findings); err != nil {
		t.Fatalf("testssl report: %v", err)
	}
	if len(findings) == 0 {
		t.Fatalf("testssl reported nothing:\n%s", out)
	}
	for _, f := range findings {
		if f.Severity != "HIGH" && f.Severity != "CRITICAL" {
			continue
		}
		if strings.HasPrefix(f.ID, "cert_") { // the self-signed, short-lived test certificate
			t.Logf("allowed (test certificate): %s %s: %s", f.Severity, f.ID, f.Finding)
			continue
		}
		t.Errorf("testssl: %s %s: %s", f.Severity, f.ID, f.Finding)
	}
}
