package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
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
)

// testCA is a certificate authority made for one test, which issues
// certificates into the test's temporary directory.
type testCA struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key}
	ca.file = filepath.Join(ca.dir, name+"-ca.pem")
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

var serial int64 = 100

// issue writes a certificate for names (DNS names or IPs) and its key;
// client makes it a client certificate.
func (ca *testCA) issue(cn string, client bool, names ...string) (certFile, keyFile string) {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Fulcrum e2e"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	certFile = filepath.Join(ca.dir, fmt.Sprintf("%s-%d.pem", cn, serial))
	keyFile = filepath.Join(ca.dir, fmt.Sprintf("%s-%d.key", cn, serial))
	writePEM(ca.t, certFile, "CERTIFICATE", der)
	writePEM(ca.t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
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
	ca := newTestCA(t, "e2e")
	www, wwwKey := ca.issue("www.example.com", false, "www.example.com")
	api, apiKey := ca.issue("api.example.com", false, "api.example.com")
	wild, wildKey := ca.issue("wild.example.net", false, "*.example.net")
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

	r := curl(t, "--cacert", ca.file, "--resolve", "api.example.com:"+port+":127.0.0.1", "-D", "/dev/stderr",
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
	renewed, renewedKey := ca.issue("www2.example.com", false, "www.example.com")
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
	ca := newTestCA(t, "backend")
	other := newTestCA(t, "other")
	certFile, keyFile := ca.issue("backend.internal", false, "backend.internal")
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
		{"verified", fmt.Sprintf("tls = true\ntls_server_name = \"backend.internal\"\ntls_ca = %q\n", ca.file), 200},
		{"not verified", "tls = true\ntls_verify = false\n", 200},
		{"wrong CA", fmt.Sprintf("tls = true\ntls_server_name = \"backend.internal\"\ntls_ca = %q\n", other.file), 502},
		{"wrong name", fmt.Sprintf("tls = true\ntls_server_name = \"other.internal\"\ntls_ca = %q\n", ca.file), 502},
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
	ca := newTestCA(t, "server")
	clients := newTestCA(t, "clients")
	strangers := newTestCA(t, "strangers")
	cert, key := ca.issue("www.example.com", false, "www.example.com")
	alice, aliceKey := clients.issue("alice", true)
	mallory, malloryKey := strangers.issue("mallory", true)
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
		opts:   tlsTable(fmt.Sprintf("client_auth = \"require\"\nclient_ca = %q\n", clients.file), [2]string{cert, key}),
		real:   []real{backend.real("")},
	}}})
	base := []string{"--cacert", ca.file, "--resolve", "www.example.com:" + port + ":127.0.0.1"}
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
	ca := newTestCA(t, "testssl")
	cert, key := ca.issue("www.example.com", false, "www.example.com", "127.0.0.1")
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
