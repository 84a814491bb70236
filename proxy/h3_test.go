package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
)

// withH3 turns tls.http3 on.
func withH3(adjust func(*config.VirtualService)) func(*config.VirtualService) {
	return func(vs *config.VirtualService) {
		vs.TLS.HTTP3 = true
		if adjust != nil {
			adjust(vs)
		}
	}
}

// h3client returns an HTTP/3 client of e, trusting roots (e's CA if nil).
func (e *h2env) h3client(roots *x509.CertPool) *http.Client {
	if roots == nil {
		roots = e.pki.Pool()
	}
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableCompression: true}
	e.t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// get3 sends one request over HTTP/3 and returns the response and its
// whole body.
func get3(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 3 {
		t.Fatalf("response over %s, want HTTP/3", resp.Proto)
	}
	return resp, string(b)
}

// TestH3Distribution: requests over one QUIC connection are scheduled one
// by one, reach the real servers with X-Forwarded-*, and are logged as
// HTTP/3.0.
func TestH3Distribution(t *testing.T) {
	e := startH2(t, withH3(nil), namedBackend(t, "a"), namedBackend(t, "b"))
	c := e.h3client(nil)
	got := map[string]int{}
	for range 10 {
		_, body := get3(t, c, newRequest(t, "GET", e.url+"/x?y=1", nil))
		got[body]++
	}
	if got["a"] != 5 || got["b"] != 5 {
		t.Errorf("tally %v, want a 5, b 5", got)
	}
	lines := e.waitAccess(10)
	f := lines[0].ContextMap()
	if f["proto"] != "HTTP/3.0" || f["method"] != "GET" || f["target"] != "/x?y=1" || f["status"] != int64(200) ||
		f["client"] != "127.0.0.1" || f["bytes_out"] != int64(1) {
		t.Errorf("access log line %v", f)
	}
	st := e.p.Status().Services[0]
	if st.Requests != 10 || st.RealServers[0].Requests != 5 {
		t.Errorf("counters: %+v", st)
	}
}

func TestH3ForwardedHeaders(t *testing.T) {
	seen := make(chan *http.Request, 1)
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- r
		w.Write(b)
	})
	e := startH2(t, withH3(nil), backend)
	_, port, _ := net.SplitHostPort(e.addr)
	c := e.h3client(nil)
	req := newRequest(t, "POST", e.url+"/up?q=1", strings.NewReader("a body of sorts"))
	req.Header.Set("X-Forwarded-For", "192.0.2.1")
	req.Header.Set("X-Forwarded-Proto", "http")
	if _, body := get3(t, c, req); body != "a body of sorts" {
		t.Errorf("echoed body %q", body)
	}
	r := <-seen
	want := map[string]string{
		"X-Forwarded-For":   "192.0.2.1, 127.0.0.1",
		"X-Forwarded-Proto": "https",
		"X-Forwarded-Host":  e.addr,
		"X-Forwarded-Port":  port,
	}
	for k, v := range want {
		if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if r.Method != "POST" || r.RequestURI != "/up?q=1" || r.Host != e.addr {
		t.Errorf("real server got %s %s Host %s", r.Method, r.RequestURI, r.Host)
	}
	if f := e.waitAccess(1)[0].ContextMap(); f["bytes_in"] != int64(15) || f["proto"] != "HTTP/3.0" {
		t.Errorf("access log line %v", f)
	}
}

// TestH3Persistence: the persistence cookie works over HTTP/3 (and is
// Secure).
func TestH3Persistence(t *testing.T) {
	e := startH2(t, withH3(func(vs *config.VirtualService) {
		vs.Persistence = config.Persistence{Method: config.PersistCookie, CookieName: "FULCRUM", Timeout: time.Hour, MaxEntries: 100}
	}), namedBackend(t, "a"), namedBackend(t, "b"))
	c := e.h3client(nil)
	resp, first := get3(t, c, newRequest(t, "GET", e.url+"/", nil))
	set := resp.Header.Values("Set-Cookie")
	if len(set) != 1 || !strings.HasSuffix(set[0], "; Secure") {
		t.Fatalf("Set-Cookie %q", set)
	}
	for range 6 {
		req := newRequest(t, "GET", e.url+"/", nil)
		req.Header.Set("Cookie", strings.Split(set[0], ";")[0])
		if _, body := get3(t, c, req); body != first {
			t.Fatalf("with the cookie: %q, want %q", body, first)
		}
	}
}

// TestH3NoServer: the proxy's own answers are HTTP/2's.
func TestH3NoServer(t *testing.T) {
	e := startH2(t, withH3(nil))
	c := e.h3client(nil)
	resp, body := get3(t, c, newRequest(t, "GET", e.url+"/", nil))
	if resp.StatusCode != 503 || body != cannedBodies[503] {
		t.Errorf("%d %q, want 503 %q", resp.StatusCode, body, cannedBodies[503])
	}
	if f := e.waitAccess(1)[0].ContextMap(); f["error"] != "no real server available" || f["proto"] != "HTTP/3.0" {
		t.Errorf("access log line %v", f)
	}
}

// TestH3AltSvc: with http3 on, responses over HTTP/1.1 and HTTP/2 carry the
// proxy's Alt-Svc in place of the real server's; with it off, the real
// server's passes.
func TestH3AltSvc(t *testing.T) {
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Alt-Svc", `h2="backend.internal:8443"`)
		io.WriteString(w, "ok")
	})
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprint("http3=", on), func(t *testing.T) {
			e := startH2(t, func(vs *config.VirtualService) { vs.TLS.HTTP3 = on }, backend)
			_, port, _ := net.SplitHostPort(e.addr)
			want := `h2="backend.internal:8443"`
			if on {
				want = `h3=":` + port + `"; ma=86400`
			}
			h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.pki.Pool()}}}
			t.Cleanup(h1.CloseIdleConnections)
			clients := map[string]*http.Client{"HTTP/1.1": h1, "HTTP/2.0": e.client()}
			if on {
				clients["HTTP/3.0"] = e.h3client(nil)
			}
			for proto, c := range clients {
				resp, err := c.Get(e.url + "/")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.Proto != proto {
					t.Fatalf("%s, want %s", resp.Proto, proto)
				}
				if got := resp.Header.Values("Alt-Svc"); len(got) != 1 || got[0] != want {
					t.Errorf("%s: Alt-Svc %q, want %q", proto, got, want)
				}
			}
		})
	}
}

// TestH3Reload: a reload keeps the UDP socket, so a client's QUIC
// connection carries on, and renewed certificates serve the next handshake;
// a reload that turns http3 off closes the socket once its connections
// went, and Alt-Svc goes with it.
func TestH3Reload(t *testing.T) {
	var vs *config.VirtualService
	e := startH2(t, withH3(func(v *config.VirtualService) { vs = v }), namedBackend(t, "a"))
	c := e.h3client(nil)
	get3(t, c, newRequest(t, "GET", e.url+"/", nil))
	l := e.p.h3.byKey[listenKey(vs.Listen[0])]
	if l == nil {
		t.Fatal("no HTTP/3 listener")
	}

	renewed := newTestPKI(t)
	next := *vs
	next.TLS.Certificates = []*config.Certificate{{Cert: renewed.serverCert, Key: renewed.serverKey}}
	apply := func(v *config.VirtualService) {
		t.Helper()
		if err := e.p.Apply(&config.Config{Global: config.Global{Grace: time.Second, AccessLog: true}, VirtualServices: []*config.VirtualService{v}}); err != nil {
			t.Fatal(err)
		}
	}
	apply(&next)
	if e.p.h3.byKey[listenKey(vs.Listen[0])] != l {
		t.Fatal("the reload re-bound the UDP socket")
	}
	// The connection made before the reload still serves.
	if _, body := get3(t, c, newRequest(t, "GET", e.url+"/", nil)); body != "a" {
		t.Errorf("after the reload: %q", body)
	}
	// A new connection gets the renewed certificate.
	renewedClient := e.h3client(renewed.Pool())
	if _, body := get3(t, renewedClient, newRequest(t, "GET", e.url+"/", nil)); body != "a" {
		t.Errorf("with the renewed certificate: %q", body)
	}
	oldClient := e.h3client(nil)
	if _, err := oldClient.Get(e.url + "/"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a new connection trusting the old CA only: %v, want a certificate error", err)
	}

	// http3 off: the socket closes (the client's connection is told to go
	// away and closes), and Alt-Svc is no longer sent.
	off := next
	off.TLS.HTTP3 = false
	apply(&off)
	if len(e.p.h3.byKey) != 0 {
		t.Fatal("the HTTP/3 listener is still there")
	}
	waitFor(t, func() bool {
		pc, err := net.ListenPacket("udp", l.pc.LocalAddr().String())
		if err == nil {
			pc.Close()
		}
		return err == nil
	})
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: renewed.Pool()}}}
	t.Cleanup(h1.CloseIdleConnections)
	resp, err := h1.Get(e.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Values("Alt-Svc"); len(got) != 0 {
		t.Errorf("Alt-Svc %q with http3 off", got)
	}
}

// TestH3Shutdown: a stopping proxy lets the HTTP/3 request in flight
// finish, then returns.
func TestH3Shutdown(t *testing.T) {
	backend, release, started := slowBackend(t)
	e := startH2(t, withH3(nil), backend)
	c := e.h3client(nil)
	answer := getAsync(c, e.url+"/slow")
	waitFor(t, func() bool { return started.Load() == 1 })
	stopped := make(chan struct{})
	go func() {
		e.p.Shutdown(timeoutCtx(t, 10*time.Second))
		close(stopped)
	}()
	checkShutdownWaits(t, stopped, release, answer)
}

// TestH3ShutdownGrace: a request still running when global.grace ends is
// cut, and Shutdown returns.
func TestH3ShutdownGrace(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var started atomic.Int32
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		<-release
	})
	e := startH2(t, withH3(nil), backend)
	c := e.h3client(nil)
	failed := make(chan error, 1)
	go func() {
		resp, err := c.Get(e.url + "/stuck")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		failed <- err
	}()
	waitFor(t, func() bool { return started.Load() == 1 })
	start := time.Now()
	e.p.Shutdown(timeoutCtx(t, 300*time.Millisecond))
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if err := <-failed; err == nil {
		t.Error("the stuck request succeeded")
	}
}

// TestH3Maintenance: putting a real server in maintenance ends the HTTP/3
// requests in flight to it.
func TestH3Maintenance(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-release
	})
	e := startH2(t, withH3(nil), backend)
	c := e.h3client(nil)
	resp, err := c.Get(e.url + "/long") // the head: the body is in flight
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		done <- err
	}()
	if err := e.p.SetState("web", "a", "maintenance"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("the response to a server in maintenance completed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request to a server in maintenance went on")
	}
}

// TestH3BindFailure: a UDP port that is taken fails the start, as a TCP one
// does, and leaves nothing listening.
func TestH3BindFailure(t *testing.T) {
	addr := closedAddr(t) // a free TCP port
	taken, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Skipf("cannot take UDP %s: %v", addr, err)
	}
	defer taken.Close()
	pki := newTestPKI(t)
	vs := &config.VirtualService{
		Name: "web", Listen: []string{addr}, Mode: config.ModeHTTP, Scheduler: "round_robin",
		Timeouts: config.Timeouts{Connect: time.Second, Client: time.Second, ClientHeader: time.Second, Server: time.Second},
		TLS:      config.TLS{Certificates: []*config.Certificate{{Cert: pki.serverCert, Key: pki.serverKey}}, HTTP3: true},
	}
	p, err := New(&config.Config{Global: config.Global{Grace: time.Second}, VirtualServices: []*config.VirtualService{vs}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	err = p.Start()
	if err == nil {
		p.Shutdown(timeoutCtx(t, time.Second))
		t.Fatal("started with its UDP port taken")
	}
	if want := `virtual service "web": tls.http3: listen udp ` + addr + `: bind: address already in use`; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the TCP listener was left open: %v", err)
	}
	l.Close()
}
