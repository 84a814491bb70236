package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/persistence"
)

// get sends one request and returns the response and its whole body.
func get(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
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
	if resp.ProtoMajor != 2 {
		t.Fatalf("response over %s, want HTTP/2", resp.Proto)
	}
	return resp, string(b)
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestH2Distribution: requests multiplexed on one HTTP/2 connection are
// scheduled one by one, as HTTP/1.1 requests are, and logged alike.
func TestH2Distribution(t *testing.T) {
	e := startH2(t, nil, namedBackend(t, "a"), namedBackend(t, "b"))
	c := e.client()
	got := map[string]int{}
	for range 10 {
		_, body := get(t, c, newRequest(t, "GET", e.url+"/x?y=1", nil))
		got[body]++
	}
	if got["a"] != 5 || got["b"] != 5 {
		t.Errorf("tally %v, want a 5, b 5", got)
	}
	lines := e.waitAccess(10)
	f := lines[0].ContextMap()
	if f["proto"] != "HTTP/2.0" || f["method"] != "GET" || f["target"] != "/x?y=1" || f["status"] != int64(200) ||
		f["client"] != "127.0.0.1" || f["bytes_out"] != int64(1) {
		t.Errorf("access log line %v", f)
	}
	st := e.p.Status().Services[0]
	if st.Requests != 10 || st.RealServers[0].Requests != 5 || st.RealServers[0].Responses.C2xx != 5 {
		t.Errorf("counters: %+v", st)
	}
	// HTTP/1.1 over the same TLS service still works, and says so in the log.
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.pki.Pool()}}}
	resp, err := h1.Get(e.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 1 {
		t.Errorf("HTTP/1.1 client got %s", resp.Proto)
	}
	if f := e.waitAccess(11)[10].ContextMap(); f["proto"] != "HTTP/1.1" {
		t.Errorf("HTTP/1.1 access log line %v", f)
	}
}

// TestH2ForwardedHeaders: the real server gets an HTTP/1.1 request with the
// client's target as sent, X-Forwarded-* set as for HTTP/1.1 (the client's
// X-Forwarded-For kept in front), the client's other X-Forwarded-* dropped.
func TestH2ForwardedHeaders(t *testing.T) {
	seen := make(chan *http.Request, 1)
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		io.WriteString(w, "ok")
	})
	e := startH2(t, nil, backend)
	_, port, _ := net.SplitHostPort(e.addr)
	req := newRequest(t, "GET", e.url+"/a%2Fb/../c?q=%20x", nil)
	req.Header.Set("X-Forwarded-For", "192.0.2.1")
	req.Header.Set("X-Forwarded-Proto", "http")
	req.Header.Set("X-Forwarded-Host", "forged")
	req.Header.Set("X-Custom", "kept")
	get(t, e.client(), req)
	r := <-seen
	want := map[string]string{
		"X-Forwarded-For":   "192.0.2.1, 127.0.0.1",
		"X-Forwarded-Proto": "https",
		"X-Forwarded-Host":  e.addr,
		"X-Forwarded-Port":  port,
		"X-Custom":          "kept",
		"User-Agent":        "Go-http-client/2.0", // the client's, not net/http's own
	}
	for k, v := range want {
		if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if r.Proto != "HTTP/1.1" || r.RequestURI != "/a%2Fb/../c?q=%20x" || r.Host != e.addr {
		t.Errorf("real server got %s %s Host %s", r.Proto, r.RequestURI, r.Host)
	}
	if r.Header.Get("Accept-Encoding") != "" {
		t.Errorf("Accept-Encoding %q added", r.Header.Get("Accept-Encoding"))
	}
}

// TestH2Streaming: bodies stream both ways: the real server gets the first
// piece of the request body before the client has sent the rest, and the
// client gets the first piece of the response before the real server has
// written the rest. Trailers pass through.
func TestH2Streaming(t *testing.T) {
	gotFirst := make(chan string, 1)
	sentFirst := make(chan struct{})
	clientGotFirst := make(chan struct{})
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			t.Error(err)
			return
		}
		gotFirst <- string(buf)
		rest, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "first:"+string(buf)+"|")
		w.(http.Flusher).Flush()
		close(sentFirst)
		<-clientGotFirst
		io.WriteString(w, "rest:"+string(rest))
		w.Header().Set("X-Sum", "42")
	})
	e := startH2(t, nil, backend)
	pr, pw := io.Pipe()
	req := newRequest(t, "POST", e.url+"/upload", pr)
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := e.client().Do(req)
		done <- result{resp, err}
	}()
	pw.Write([]byte("hello"))
	select {
	case got := <-gotFirst:
		if got != "hello" {
			t.Fatalf("real server got %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first piece of the request body did not reach the real server before the body ended")
	}
	pw.Write([]byte(" world"))
	pw.Close()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	defer res.resp.Body.Close()
	<-sentFirst
	br := bufio.NewReader(res.resp.Body)
	first, err := br.ReadString('|')
	if err != nil || first != "first:hello|" {
		t.Fatalf("first piece %q, %v", first, err)
	}
	close(clientGotFirst)
	rest, _ := io.ReadAll(br)
	if string(rest) != "rest: world" {
		t.Errorf("rest %q", rest)
	}
	if got := res.resp.Trailer.Get("X-Sum"); got != "42" {
		t.Errorf("trailer X-Sum = %q, want 42 (trailers %v)", got, res.resp.Trailer)
	}
	if f := e.waitAccess(1)[0].ContextMap(); f["bytes_in"] != int64(11) || f["bytes_out"] != int64(len("first:hello|rest: world")) {
		t.Errorf("access log %v", f)
	}
}

// TestH2Persistence: cookie persistence inserts a Secure cookie and honours
// it; app_cookie learns the application's cookie from a response.
func TestH2Persistence(t *testing.T) {
	t.Run("cookie", func(t *testing.T) {
		e := startH2(t, func(vs *config.VirtualService) {
			vs.Persistence = config.Persistence{Method: config.PersistCookie, CookieName: "FULCRUM", Timeout: time.Hour, MaxEntries: 100}
		}, namedBackend(t, "a"), namedBackend(t, "b"))
		c := e.client()
		resp, first := get(t, c, newRequest(t, "GET", e.url+"/", nil))
		set := resp.Header.Values("Set-Cookie")
		if len(set) != 1 {
			t.Fatalf("Set-Cookie %q", set)
		}
		set0 := e.p.Services()[0].reals.Load()
		token := set0.tokens.ofServer[set0.byName[first]]
		if want := persistence.SetCookieValue("FULCRUM", token, true); set[0] != want || !strings.HasSuffix(set[0], "; Secure") {
			t.Errorf("Set-Cookie %q, want %q", set[0], want)
		}
		for range 6 {
			req := newRequest(t, "GET", e.url+"/", nil)
			req.Header.Set("Cookie", "other=1; "+strings.Split(set[0], ";")[0])
			resp, body := get(t, c, req)
			if body != first || len(resp.Header.Values("Set-Cookie")) != 0 {
				t.Fatalf("with the cookie: %q (Set-Cookie %q), want %q and no new cookie", body, resp.Header.Values("Set-Cookie"), first)
			}
		}
	})
	t.Run("app_cookie", func(t *testing.T) {
		sessions := func(name string) string {
			return httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
				if _, err := r.Cookie("SID"); err != nil {
					w.Header().Add("Set-Cookie", "theme=dark")
					w.Header().Add("Set-Cookie", "SID=session-"+name+"; Path=/")
				}
				io.WriteString(w, name)
			})
		}
		e := startH2(t, func(vs *config.VirtualService) {
			vs.Persistence = config.Persistence{Method: config.PersistAppCookie, CookieName: "SID", Timeout: time.Hour, MaxEntries: 100}
		}, sessions("a"), sessions("b"))
		c := e.client()
		_, first := get(t, c, newRequest(t, "GET", e.url+"/login", nil))
		for range 6 {
			req := newRequest(t, "GET", e.url+"/", nil)
			req.Header.Set("Cookie", "SID=session-"+first)
			if _, body := get(t, c, req); body != first {
				t.Fatalf("with the application's session cookie: %q, want %q", body, first)
			}
		}
	})
}

// TestH2Errors: the proxy's own answers are those of HTTP/1.1, with the same
// short bodies, one log line each, and passive observation.
func TestH2Errors(t *testing.T) {
	garbage := listenTCP(t, func(c net.Conn) {
		c.Read(make([]byte, 4096))
		c.Write([]byte("NOT HTTP\r\n\r\n"))
	})
	silent := listenTCP(t, func(c net.Conn) {
		c.Read(make([]byte, 4096))
		time.Sleep(2 * time.Second)
	})
	stalls := listenTCP(t, func(c net.Conn) {
		c.Read(make([]byte, 4096))
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"))
		time.Sleep(2 * time.Second)
	})
	tests := []struct {
		name     string
		backends []string
		adjust   func(*config.VirtualService)
		status   int // 0: the stream is reset
		logged   string
	}{
		{"no real server", []string{namedBackend(t, "a")}, func(vs *config.VirtualService) { vs.RealServers[0].State = config.StateMaintenance }, 503, "no real server available"},
		{"connect failure", []string{closedAddr(t)}, nil, 502, "connect to real server failed"},
		{"bad response", []string{garbage}, nil, 502, "invalid response from real server"},
		{"no response", []string{silent}, func(vs *config.VirtualService) { vs.Timeouts.Server = 200 * time.Millisecond }, 504, "no response from real server within timeouts.server"},
		{"body stalls", []string{stalls}, func(vs *config.VirtualService) { vs.Timeouts.Server = 200 * time.Millisecond }, 0, "response body from real server ended early"},
		{"missing authority", []string{namedBackend(t, "a")}, nil, 400, "missing :authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startH2(t, func(vs *config.VirtualService) {
				vs.Retries = 0
				if tt.adjust != nil {
					tt.adjust(vs)
				}
			}, tt.backends...)
			req := newRequest(t, "GET", e.url+"/", nil)
			if tt.name == "missing authority" {
				// net/http always sends :authority; the framer does not.
				status := rawH2Status(t, e)
				if status != tt.status {
					t.Errorf("status %d, want %d", status, tt.status)
				}
			} else {
				resp, err := e.client().Do(req)
				if tt.status == 0 {
					if err == nil {
						_, err = io.ReadAll(resp.Body)
						resp.Body.Close()
					}
					if err == nil || !strings.Contains(err.Error(), "INTERNAL_ERROR") {
						t.Errorf("want the stream reset, got %v", err)
					}
				} else {
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					want := cannedBodies[tt.status]
					if resp.StatusCode != tt.status || string(body) != want || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
						t.Errorf("got %d %q (%v), want %d %q", resp.StatusCode, body, resp.Header, tt.status, want)
					}
				}
			}
			e.waitAccess(1)
			time.Sleep(50 * time.Millisecond) // a second line would come now
			lines := e.accessLines()
			if len(lines) != 1 {
				t.Fatalf("%d log lines, want 1: %v", len(lines), lines)
			}
			if f := lines[0].ContextMap(); f["error"] != tt.logged {
				t.Errorf("logged %v, want error %q", f, tt.logged)
			}
			if st := e.p.Status().Services[0]; st.Errors != 1 || st.Requests != 1 {
				t.Errorf("service counters: %d requests, %d errors", st.Requests, st.Errors)
			}
		})
	}
}

// rawH2Status sends a GET without :authority over a raw HTTP/2 connection
// and returns the response status.
func rawH2Status(t *testing.T, e *h2env) int {
	t.Helper()
	c, fr := rawH2Conn(t, e)
	defer c.Close()
	var hb strings.Builder
	enc := newHPACK(&hb)
	enc(":method", "GET")
	enc(":scheme", "https")
	enc(":path", "/")
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte(hb.String()), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok {
			for _, hf := range mh.Fields {
				if hf.Name == ":status" {
					var n int
					fmt.Sscan(hf.Value, &n)
					return n
				}
			}
		}
	}
}

// TestH2Retries: a real server that refuses the connection is skipped for
// the next, and the failure is counted on it.
func TestH2Retries(t *testing.T) {
	e := startH2(t, nil, closedAddr(t), namedBackend(t, "b"))
	c := e.client()
	for range 4 {
		if _, body := get(t, c, newRequest(t, "GET", e.url+"/", nil)); body != "b" {
			t.Fatalf("body %q, want b", body)
		}
	}
	st := e.p.Status().Services[0]
	if st.RealServers[0].ConnectErrors == 0 || st.RealServers[1].Retries == 0 || st.Errors != 0 {
		t.Errorf("counters: a %+v, b %+v, service errors %d", st.RealServers[0], st.RealServers[1], st.Errors)
	}
}

// TestH2QueueTimeout: a real server at max_conns queues the next request
// for queue_timeout, then 503.
func TestH2QueueTimeout(t *testing.T) {
	release := make(chan struct{})
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "ok")
	})
	e := startH2(t, func(vs *config.VirtualService) {
		vs.RealServers[0].MaxConns = 1
		vs.QueueTimeout = 200 * time.Millisecond
	}, backend)
	c := e.client()
	slow := make(chan string, 1)
	go func() {
		resp, err := c.Get(e.url + "/slow")
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- string(b)
	}()
	waitFor(t, func() bool { return e.p.Services()[0].Pool.Servers()[0].Active() == 1 })
	resp, body := get(t, c, newRequest(t, "GET", e.url+"/", nil))
	if resp.StatusCode != 503 || body != cannedBodies[503] {
		t.Errorf("queued request: %d %q, want 503", resp.StatusCode, body)
	}
	close(release)
	if got := <-slow; got != "ok" {
		t.Errorf("request at max_conns: %q", got)
	}
}

// TestH2ClientCert: with client certificates verified, the real server gets
// X-SSL-Client-* from the certificate, never the client's own.
func TestH2ClientCert(t *testing.T) {
	seen := make(chan http.Header, 1)
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header
	})
	pki := newTestPKI(t)
	e := startH2With(t, pki, func(vs *config.VirtualService) {
		vs.TLS.ClientAuth = config.ClientAuthRequire
		vs.TLS.ClientCA = pki.File // the test CA issues the client certificates too
	}, backend)
	req := newRequest(t, "GET", e.url+"/", nil)
	req.Header.Set("X-SSL-Client-DN", "CN=forged")
	get(t, e.client(e.pki.clientCert("alice")), req)
	h := <-seen
	if got := h.Values("X-Ssl-Client-Dn"); len(got) != 1 || got[0] != "CN=alice,O=Fulcrum test" {
		t.Errorf("X-SSL-Client-DN %q", got)
	}
	if h.Get("X-Ssl-Client-Verify") != "SUCCESS" || h.Get("X-Ssl-Client-Sha256") == "" || h.Get("X-Ssl-Client-Issuer") != "CN=test CA" {
		t.Errorf("client certificate fields %v", h)
	}
}

// TestH2InterimResponse: a 103 Early Hints from the real server reaches
// the client before the final response.
func TestH2InterimResponse(t *testing.T) {
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(103)
		w.Header().Del("Link")
		io.WriteString(w, "ok")
	})
	e := startH2(t, nil, backend)
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
		return nil
	}}
	req := newRequest(t, "GET", e.url+"/", nil).WithContext(httptrace.WithClientTrace(context.Background(), trace))
	if _, body := get(t, e.client(), req); body != "ok" {
		t.Errorf("body %q", body)
	}
	if len(hints) != 1 || hints[0] != "103 </style.css>; rel=preload" {
		t.Errorf("interim responses %q", hints)
	}
}

// TestH2Shutdown: at shutdown an idle HTTP/2 connection gets GOAWAY and
// closes; a stream in flight is answered in full, then its connection
// closes and Shutdown returns.
func TestH2Shutdown(t *testing.T) {
	backend, release, started := slowBackend(t)
	e := startH2(t, nil, backend)
	idle, fr := rawH2Conn(t, e)
	defer idle.Close()
	busy := e.client()
	answer := getAsync(busy, e.url+"/slow")
	waitFor(t, func() bool { return started.Load() == 1 })

	stopped := make(chan struct{})
	go func() {
		e.p.Shutdown(timeoutCtx(t, 10*time.Second))
		close(stopped)
	}()
	// The idle connection is told to go away, then closed.
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	var goAway *http2.GoAwayFrame
	for goAway == nil {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("idle connection: %v before GOAWAY", err)
		}
		goAway, _ = f.(*http2.GoAwayFrame)
	}
	if goAway.ErrCode != http2.ErrCodeNo {
		t.Errorf("GOAWAY %v, want NO_ERROR", goAway.ErrCode)
	}
	if _, err := io.ReadAll(idle); err != nil {
		t.Errorf("idle connection after GOAWAY: %v, want closed", err)
	}
	checkShutdownWaits(t, stopped, release, answer)
}

// TestH2Maintenance: putting a real server in maintenance ends the HTTP/2
// requests in flight to it, as it closes HTTP/1.1 ones.
func TestH2Maintenance(t *testing.T) {
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	e := startH2(t, nil, backend)
	answer := make(chan int, 1)
	go func() {
		resp, err := e.client().Get(e.url + "/")
		if err != nil {
			answer <- -1
			return
		}
		resp.Body.Close()
		answer <- resp.StatusCode
	}()
	waitFor(t, func() bool { return e.p.Services()[0].Pool.Servers()[0].Active() == 1 })
	expectCut(t, answer, func() error { return e.p.SetState("web", "a", "maintenance") },
		"the request to the server in maintenance goes on")
}

// expectCut puts a real server into maintenance (cut) while a request to it
// is in flight, and checks that the request ends with 502 (its status on
// answer) within 5s; stuck says what failed otherwise.
func expectCut(t *testing.T, answer <-chan int, cut func() error, stuck string) {
	t.Helper()
	if err := cut(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-answer:
		if got != 502 {
			t.Errorf("status %d, want 502", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal(stuck)
	}
}

// rawH2Conn opens an HTTP/2 connection and exchanges the prefaces and
// SETTINGS, for tests that need frames the net/http client does not send.
func rawH2Conn(t *testing.T, e *h2env, settings ...http2.Setting) (*tls.Conn, *http2.Framer) {
	t.Helper()
	c, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: e.pki.Pool(), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q", p)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpackDecoder()
	if err := fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			fr.WriteSettingsAck()
			return c, fr
		}
	}
}

// newHPACK returns a function that appends one encoded header field to b.
func newHPACK(b *strings.Builder) func(name, value string) {
	enc := hpack.NewEncoder(b)
	return func(name, value string) { enc.WriteField(hpack.HeaderField{Name: name, Value: value}) }
}

func hpackDecoder() *hpack.Decoder { return hpack.NewDecoder(4096, nil) }

// TestH2Timeouts: timeouts.client bounds a client's silences while it
// uploads (408, as HTTP/1.1) and while it does not read the response (the
// stream is reset); timeouts.server the real server's.
func TestH2Timeouts(t *testing.T) {
	t.Run("upload stalls", func(t *testing.T) {
		backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
		})
		e := startH2(t, func(vs *config.VirtualService) { vs.Timeouts.Client = 300 * time.Millisecond }, backend)
		pr, pw := io.Pipe()
		defer pw.Close()
		go pw.Write([]byte("part")) // and then nothing
		resp, err := e.client().Do(newRequest(t, "POST", e.url+"/", pr))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 408 || string(body) != cannedBodies[408] {
			t.Errorf("got %d %q, want 408", resp.StatusCode, body)
		}
		if f := e.waitAccess(1)[0].ContextMap(); f["error"] != "request body not received within timeouts.client" || f["bytes_in"] != int64(4) {
			t.Errorf("logged %v", f)
		}
	})
	// A client that opens no flow-control window gets the stream reset
	// after timeouts.client. A small response's body is handed to x/net
	// as the handler ends (logged as sent); a big one's blocks while the
	// exchange runs (logged as failed).
	for _, tt := range []struct {
		name    string
		size    int
		wantErr string
	}{
		{"client does not read", 3, ""},
		{"client does not read a big body", 1 << 20, "write to client failed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Repeat("a", tt.size)
			backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
			e := startH2(t, func(vs *config.VirtualService) { vs.Timeouts.Client = 300 * time.Millisecond }, backend)
			// A receive window of 0: no DATA can be sent.
			c, fr := rawH2Conn(t, e, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			defer c.Close()
			var hb strings.Builder
			enc := newHPACK(&hb)
			for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", e.addr}, {":path", "/"}} {
				enc(f[0], f[1])
			}
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte(hb.String()), EndStream: true, EndHeaders: true}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatal(err)
				}
				if rst, ok := f.(*http2.RSTStreamFrame); ok {
					if rst.StreamID != 1 || time.Since(start) < 250*time.Millisecond {
						t.Errorf("RST_STREAM %v after %s, want stream 1 after timeouts.client", rst, time.Since(start))
					}
					break
				}
			}
			if f := e.waitAccess(1)[0].ContextMap(); f["status"] != int64(200) || (tt.wantErr != "" && f["error"] != tt.wantErr) ||
				(tt.wantErr == "" && (f["error"] != nil || f["bytes_out"] != int64(tt.size))) {
				t.Errorf("logged %v, want status 200 and error %q", f, tt.wantErr)
			}
		})
	}
}

// TestH2Reencryption: HTTP/2 clients reach a TLS real server through the
// same connect as HTTP/1.1 (re-encrypted).
func TestH2Reencryption(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v %s", r.TLS != nil, r.Proto)
	}))
	t.Cleanup(srv.Close)
	e := startH2(t, func(vs *config.VirtualService) {
		vs.RealServers[0].TLS = true // httptest's certificate: not verified
	}, srv.Listener.Addr().String())
	if _, body := get(t, e.client(), newRequest(t, "GET", e.url+"/", nil)); body != "tls=true HTTP/1.1" {
		t.Errorf("body %q", body)
	}
}

// TestH2Reload: a reload's timeouts.server applies to the next HTTP/2
// request, as to HTTP/1.1 ones (the real server's transport is replaced).
func TestH2Reload(t *testing.T) {
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "slow")
	})
	var vs *config.VirtualService
	e := startH2(t, func(v *config.VirtualService) { vs = v }, backend)
	c := e.client()
	if resp, body := get(t, c, newRequest(t, "GET", e.url+"/", nil)); resp.StatusCode != 200 || body != "slow" {
		t.Fatalf("before the reload: %d %q", resp.StatusCode, body)
	}
	next := *vs
	next.Timeouts.Server = 100 * time.Millisecond
	if err := e.p.Apply(&config.Config{Global: config.Global{Grace: time.Second, AccessLog: true}, VirtualServices: []*config.VirtualService{&next}}); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, c, newRequest(t, "GET", e.url+"/", nil)); resp.StatusCode != 504 {
		t.Errorf("after timeouts.server went down to 100ms: %d, want 504", resp.StatusCode)
	}
}
