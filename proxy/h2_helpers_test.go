//lint:file-ignore SA1019 the tests drive the server with x/net/http2 client pieces on purpose (exact frames, no net/http fallback).

package proxy

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/http2"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// testPKI is a certificate authority made for one test, with a server
// certificate for 127.0.0.1 and localhost in files (as a configuration
// names them).
type testPKI struct {
	*testpki.CA
	t                     testing.TB
	serverCert, serverKey string
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	pki := &testPKI{CA: testpki.NewCAFor(t, pkix.Name{CommonName: "test CA"}), t: t}
	pki.serverCert, pki.serverKey = pki.Files(t, testpki.Leaf{CN: "localhost", Org: "Fulcrum test",
		DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, NotAfter: time.Now().Add(24 * time.Hour), NoChain: true})
	return pki
}

// clientCert is a client certificate for tls.Config.Certificates.
func (pki *testPKI) clientCert(cn string) tls.Certificate {
	return pki.TLSCert(pki.t, testpki.Leaf{CN: cn, Org: "Fulcrum test", Client: true, NotAfter: time.Now().Add(24 * time.Hour), NoChain: true})
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
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: e.pki.Pool(), Certificates: certs}, DisableCompression: true}
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

// checkShutdownWaits checks that a Shutdown (which closes stopped when it
// returns) waits for the request in flight, whose handler waits for
// release, and returns once its answer ("200 finished <nil>") has gone.
func checkShutdownWaits(t *testing.T, stopped <-chan struct{}, release chan struct{}, answer <-chan string) {
	t.Helper()
	select {
	case <-stopped:
		t.Fatal("Shutdown returned with a request in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if got := <-answer; got != "200 finished <nil>" {
		t.Errorf("in-flight request: %s", got)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the request finished")
	}
}

// slowBackend answers "finished" once release is closed; started counts
// the requests it has begun.
func slowBackend(t testing.TB) (addr string, release chan struct{}, started *atomic.Int32) {
	release, started = make(chan struct{}), new(atomic.Int32)
	addr = httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		<-release
		io.WriteString(w, "finished")
	})
	return addr, release, started
}

// getAsync GETs url with c in the background; the channel gets "STATUS
// BODY READERR", or the request's error.
func getAsync(c *http.Client, url string) <-chan string {
	answer := make(chan string, 1)
	go func() {
		resp, err := c.Get(url)
		if err != nil {
			answer <- err.Error()
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		answer <- fmt.Sprint(resp.StatusCode, " ", string(b), " ", err)
	}()
	return answer
}
