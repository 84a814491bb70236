package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// h2cBackend is a real server that speaks only HTTP/2 with prior knowledge.
func h2cBackend(t testing.TB, h http.HandlerFunc) string {
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

// h2TLSBackend is a real server that speaks HTTP/2 over TLS (ALPN h2 only);
// with h1, HTTP/1.1 only.
func h2TLSBackend(t testing.TB, h1 bool, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	if !h1 {
		srv.EnableHTTP2 = true
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP2(true)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// asH2 makes the service's real servers h2 ones; those named in tlsNames
// re-encrypt (without verification: httptest's certificate).
func asH2(tlsNames ...string) func(*config.VirtualService) {
	return func(vs *config.VirtualService) {
		for _, rs := range vs.RealServers {
			rs.Protocol = config.ProtoH2
			for _, n := range tlsNames {
				if rs.Name == n {
					rs.TLS = true
				}
			}
		}
	}
}

// h1client returns an HTTP/1.1-only client of e.
func (e *h2env) h1client() *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.pki.Pool(), NextProtos: []string{"http/1.1"}}, DisableCompression: true}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestH1HandlerToH2: HTTP/1.1 clients of a service with h2 real servers (h2c
// and over TLS) are served through net/http: requests reach both real
// servers over HTTP/2 with the forwarding fields, bodies go both ways,
// trailers come back, the access log names the client's protocol.
func TestH1HandlerToH2(t *testing.T) {
	handler := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Trailer", "X-Sum")
			fmt.Fprintf(w, "%s %s %s %s te=%q %q", name, r.Proto, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"), r.Header.Get("Te"), body)
			w.Header().Set("X-Sum", name+"-sum")
		}
	}
	e := startH2(t, asH2("b"), h2cBackend(t, handler("a")), h2TLSBackend(t, false, handler("b")))
	c := e.h1client()
	seen := map[string]bool{}
	for i := range 4 {
		req, _ := http.NewRequest("POST", e.url+"/x", strings.NewReader("hi"))
		req.Header.Set("TE", "trailers")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		name, rest, _ := strings.Cut(string(body), " ")
		if want := `HTTP/2.0 127.0.0.1 https te="trailers" "hi"`; resp.ProtoMajor != 1 || rest != want {
			t.Errorf("request %d: %s %q, want HTTP/1.1 and %q", i, resp.Proto, body, want)
		}
		if got := resp.Trailer.Get("X-Sum"); got != name+"-sum" {
			t.Errorf("request %d: trailer X-Sum %q, want %q", i, got, name+"-sum")
		}
		seen[name] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("real servers used: %v, want a and b", seen)
	}
	for _, l := range e.waitAccess(4) {
		if got := l.ContextMap()["proto"]; got != protoHTTP11 {
			t.Errorf("access log proto %v, want %s", got, protoHTTP11)
		}
	}

	// HTTP/1.0: the log says so; the response ends with the connection.
	conn, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: e.pki.Pool(), NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), " HTTP/2.0 ") {
		t.Errorf("HTTP/1.0 request: %q", body)
	}
	if got := e.waitAccess(5)[4].ContextMap()["proto"]; got != protoHTTP10 {
		t.Errorf("HTTP/1.0 request logged as %v", got)
	}
}

// TestH1HandlerErrors: an upgrade is refused with 501 (h2c's is ignored); a
// TLS real server that does not negotiate h2 cannot be connected to (502);
// an h2 real server slower than timeouts.server gets 504.
func TestH1HandlerErrors(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(500 * time.Millisecond) // beyond timeouts.server, on purpose
		}
		io.WriteString(w, "ok")
	}
	t.Run("upgrade and timeout", func(t *testing.T) {
		e := startH2(t, func(vs *config.VirtualService) {
			asH2()(vs)
			vs.Timeouts.Server = 100 * time.Millisecond
		}, h2cBackend(t, slow))
		c := e.h1client()
		tests := []struct {
			name    string
			path    string
			upgrade string
			want    int
		}{
			{"websocket", "/", "websocket", 501},
			{"h2c upgrade ignored", "/", "h2c", 200},
			{"plain", "/", "", 200},
			{"slow real server", "/slow", "", 504},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				req, _ := http.NewRequest("GET", e.url+tt.path, nil)
				if tt.upgrade != "" {
					req.Header.Set("Connection", "Upgrade")
					req.Header.Set("Upgrade", tt.upgrade)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
				}
			})
		}
	})
	t.Run("no ALPN h2", func(t *testing.T) {
		e := startH2(t, asH2("a"), h2TLSBackend(t, true, slow))
		resp, err := e.h1client().Get(e.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 502 {
			t.Errorf("status %d, want 502", resp.StatusCode)
		}
		l := e.waitAccess(1)[0].ContextMap()
		// Go's TLS server refuses a handshake without a protocol in
		// common; one that ignores ALPN is refused by checkALPN.
		if cause, _ := l["cause"].(string); !strings.Contains(cause, "no application protocol") {
			t.Errorf("access log %v: want the ALPN failure as cause", l)
		}
	})
}

// TestH1HandlerShutdown: an idle HTTP/1.1 connection of the net/http path
// is closed when the service stops.
func TestH1HandlerShutdown(t *testing.T) {
	e := startH2(t, asH2(), h2cBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	conn, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: e.pki.Pool(), NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if err := e.p.Shutdown(timeoutCtx(t, 5*time.Second)); err != nil {
		t.Fatalf("shutdown: %v (the idle connection held it)", err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle connection after shutdown: read %v, want EOF", err)
	}
}

func TestWantsUpgrade(t *testing.T) {
	tests := []struct {
		name             string
		connection, upgr []string
		want             bool
	}{
		{"none", nil, nil, false},
		{"websocket", []string{"keep-alive, Upgrade"}, []string{"websocket"}, true},
		{"without Connection: upgrade", []string{"keep-alive"}, []string{"websocket"}, false},
		{"h2c", []string{"Upgrade, HTTP2-Settings"}, []string{"h2c"}, false},
		{"h2c or websocket", []string{"upgrade"}, []string{"h2c, websocket"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{Header: http.Header{}}
			if tt.connection != nil {
				r.Header["Connection"] = tt.connection
			}
			if tt.upgr != nil {
				r.Header["Upgrade"] = tt.upgr
			}
			if got := wantsUpgrade(r); got != tt.want {
				t.Errorf("wantsUpgrade = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAcceptsTrailers(t *testing.T) {
	tests := []struct {
		te   []string
		want bool
	}{
		{nil, false},
		{[]string{"trailers"}, true},
		{[]string{"gzip, Trailers"}, true},
		{[]string{"gzip;q=0.5", "trailers;q=1"}, true},
		{[]string{"gzip"}, false},
	}
	for _, tt := range tests {
		if got := acceptsTrailers(tt.te); got != tt.want {
			t.Errorf("acceptsTrailers(%q) = %v, want %v", tt.te, got, tt.want)
		}
	}
}

// TestCheckALPN: a TLS connection to an h2 real server that chose no
// protocol (ALPN ignored) is refused; one that chose h2 passes.
func TestCheckALPN(t *testing.T) {
	pki := newTestPKI(t)
	cert, err := tls.LoadX509KeyPair(pki.serverCert, pki.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		server []string // the server's ALPN protocols
		ok     bool
	}{
		{"h2", []string{"h2"}, true},
		{"ALPN ignored", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c1, c2 := net.Pipe()
			defer c1.Close()
			defer c2.Close()
			go tls.Server(c2, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: tt.server}).Handshake()
			tc := tls.Client(c1, &tls.Config{RootCAs: pki.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}})
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			err := checkALPN(tc)
			if (err == nil) != tt.ok {
				t.Errorf("checkALPN: %v, want ok %v", err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "did not negotiate HTTP/2") {
				t.Errorf("checkALPN: %v", err)
			}
		})
	}
}

// TestH2RealServerMaintenance: maintenance of an h2 real server ends the
// requests in flight on it, and closes its HTTP/2 connection (which the
// real server sees end), for HTTP/1.1 and HTTP/2 clients alike.
func TestH2RealServerMaintenance(t *testing.T) {
	connClosed := make(chan struct{}, 4)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}), Protocols: new(http.Protocols), ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			connClosed <- struct{}{}
		}
	}}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	e := startH2(t, asH2(), l.Addr().String())
	answers := make(chan int, 2)
	for _, c := range []*http.Client{e.h1client(), e.client()} {
		go func() {
			resp, err := c.Get(e.url + "/")
			if err != nil {
				answers <- -1
				return
			}
			resp.Body.Close()
			answers <- resp.StatusCode
		}()
	}
	waitFor(t, func() bool { return e.p.Services()[0].Pool.Servers()[0].Active() == 2 })
	if err := e.p.SetState("web", "a", "maintenance"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case got := <-answers:
			if got != 502 {
				t.Errorf("status %d, want 502", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a request to the server in maintenance goes on")
		}
	}
	select {
	case <-connClosed:
	case <-time.After(5 * time.Second):
		t.Error("the HTTP/2 connection to the server in maintenance stays open")
	}
}
