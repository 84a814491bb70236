//lint:file-ignore SA1019 the tests drive the server with x/net/http2 client pieces on purpose (exact frames, no net/http fallback).

package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/http2"

	"github.com/fulcrumlb/fulcrum/config"
)

// testPKI is a certificate authority made for one test, with a server
// certificate for 127.0.0.1 in files (as a configuration names them).
type testPKI struct {
	t                     testing.TB
	dir                   string
	ca                    *x509.Certificate
	caKey                 *ecdsa.PrivateKey
	caFile                string
	pool                  *x509.CertPool
	serverCert, serverKey string
}

var pkiSerial atomic.Int64

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(pkiSerial.Add(1)),
		Subject:               pkix.Name{CommonName: "test CA"},
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
	ca, _ := x509.ParseCertificate(der)
	pki := &testPKI{t: t, dir: t.TempDir(), ca: ca, caKey: key, pool: x509.NewCertPool()}
	pki.pool.AddCert(ca)
	pki.caFile = filepath.Join(pki.dir, "ca.pem")
	writePEMFile(t, pki.caFile, "CERTIFICATE", der)
	pki.serverCert, pki.serverKey = pki.issueFiles("localhost", false)
	return pki
}

// issue makes a certificate signed by the CA: a server one for 127.0.0.1
// and localhost, or a client one.
func (pki *testPKI) issue(cn string, client bool) (certDER []byte, key *ecdsa.PrivateKey) {
	t := pki.t
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(pkiSerial.Add(1)),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Fulcrum test"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if client {
		tmpl.ExtKeyUsage, tmpl.DNSNames, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pki.ca, &key.PublicKey, pki.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func (pki *testPKI) issueFiles(cn string, client bool) (certFile, keyFile string) {
	der, key := pki.issue(cn, client)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		pki.t.Fatal(err)
	}
	n := pkiSerial.Add(1)
	certFile = filepath.Join(pki.dir, cn+"-"+big.NewInt(n).String()+".pem")
	keyFile = strings.TrimSuffix(certFile, ".pem") + ".key"
	writePEMFile(pki.t, certFile, "CERTIFICATE", der)
	writePEMFile(pki.t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

// clientCert is a client certificate for tls.Config.Certificates.
func (pki *testPKI) clientCert(cn string) tls.Certificate {
	der, key := pki.issue(cn, true)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEMFile(t testing.TB, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// h2env is a running HTTPS service offering h2, with its log.
type h2env struct {
	t    *testing.T
	p    *Proxy
	addr string
	url  string
	pki  *testPKI
	logs *observer.ObservedLogs
}

// startH2 runs an HTTPS virtual service offering ["h2", "http/1.1"] in
// front of backends (real servers a, b, …); adjust may change it first.
func startH2(t *testing.T, adjust func(*config.VirtualService), backends ...string) *h2env {
	t.Helper()
	return startH2With(t, newTestPKI(t), adjust, backends...)
}

// startH2With is startH2 with the service's certificate from pki.
func startH2With(t *testing.T, pki *testPKI, adjust func(*config.VirtualService), backends ...string) *h2env {
	t.Helper()
	vs := &config.VirtualService{
		Name: "web", Listen: []string{"127.0.0.1:0"}, Mode: config.ModeHTTP, Scheduler: "round_robin",
		ForwardedFor: true, Retries: 2, QueueTimeout: time.Second,
		Timeouts: config.Timeouts{Connect: time.Second, Client: 10 * time.Second, ClientHeader: 5 * time.Second, Server: 10 * time.Second},
		TLS: config.TLS{Certificates: []*config.Certificate{{Cert: pki.serverCert, Key: pki.serverKey}},
			ALPN: []string{config.ProtoH2, config.ProtoHTTP1}},
	}
	for i, b := range backends {
		vs.RealServers = append(vs.RealServers, &config.RealServer{Name: string(rune('a' + i)), Address: b, Weight: 1})
	}
	if adjust != nil {
		adjust(vs)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	p, err := New(&config.Config{Global: config.Global{Grace: time.Second, AccessLog: true}, VirtualServices: []*config.VirtualService{vs}}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(timeoutCtx(t, time.Second)) })
	addr := p.Services()[0].Addrs()[0].String()
	return &h2env{t: t, p: p, addr: addr, url: "https://" + addr, pki: pki, logs: logs}
}

// client returns an HTTP/2-only client (it fails unless the server
// negotiates h2), which keeps one connection for all its requests.
func (e *h2env) client(certs ...tls.Certificate) *http.Client {
	// DisableCompression: no Accept-Encoding, to see the proxy adds none.
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: e.pki.pool, Certificates: certs}, DisableCompression: true}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// accessLines returns the access-log lines written so far.
func (e *h2env) accessLines() []observer.LoggedEntry {
	return e.logs.FilterLoggerName("access").FilterMessage("request").AllUntimed()
}

// waitAccess waits for n access-log lines and returns them.
func (e *h2env) waitAccess(n int) []observer.LoggedEntry {
	e.t.Helper()
	waitFor(e.t, func() bool { return len(e.accessLines()) >= n })
	return e.accessLines()
}

// httpBackend is a net/http real server; it returns its address.
func httpBackend(t testing.TB, h http.HandlerFunc) string {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = nil
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
