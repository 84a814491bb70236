package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
)

// loopBackend is a real server whose paths answer in the ways the event
// loop passes on itself or hands to a goroutine.
func loopBackend(t *testing.T) string {
	t.Helper()
	big := strings.Repeat("b", 64<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small":
			io.WriteString(w, "small")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/big":
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			io.WriteString(w, big)
		case "/chunked":
			io.WriteString(w, "chunk-")
			w.(http.Flusher).Flush()
			io.WriteString(w, "ed")
		case "/early":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "after hints")
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		case "/status":
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, "missing")
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// loopProxy starts a proxy in front of loopBackend and returns its
// address; the test is skipped when this run has no event loops.
func loopProxy(t *testing.T) string {
	t.Helper()
	if loops.force == 0 {
		t.Skip("event loops are off in this run")
	}
	p := startProxy(t, testConfig(testService("web", "127.0.0.1:0", &config.RealServer{Name: "a", Address: loopBackend(t), Weight: 1})))
	return p.Services()[0].Addrs()[0].String()
}

// roundTrip sends raw on cl's connection and reads one response.
func (cl *client) roundTrip(raw, method string) (int, string) {
	cl.t.Helper()
	cl.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(cl.c, raw); err != nil {
		cl.t.Fatal(err)
	}
	resp, err := http.ReadResponse(cl.br, &http.Request{Method: method})
	for err == nil && resp.StatusCode < 200 { // 1xx: the final answer follows
		resp, err = http.ReadResponse(cl.br, &http.Request{Method: method})
	}
	if err != nil {
		cl.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

func small(cl *client) (int, string) {
	return cl.roundTrip("GET /small HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
}

// TestLoopServesOrHandsOff checks each kind of exchange on one keep-alive
// connection: the loop serves the simple ones whole, hands the others to a
// goroutine, and serves the next simple request itself again.
func TestLoopServesOrHandsOff(t *testing.T) {
	addr := loopProxy(t)
	big := strings.Repeat("b", 64<<10)
	tests := []struct {
		name   string
		raw    string
		method string
		status int
		body   string
		inLoop bool
	}{
		{"small", "GET /small HTTP/1.1\r\nHost: x\r\n\r\n", "GET", 200, "small", true},
		{"HEAD", "HEAD /small HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD", 200, "", true},
		{"204", "GET /empty HTTP/1.1\r\nHost: x\r\n\r\n", "GET", 204, "", true},
		{"404 from the server", "GET /status HTTP/1.1\r\nHost: x\r\n\r\n", "GET", 404, "missing", true},
		{"body larger than a buffer", "GET /big HTTP/1.1\r\nHost: x\r\n\r\n", "GET", 200, big, false},
		{"chunked answer", "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n", "GET", 200, "chunk-ed", false},
		{"103 Early Hints first", "GET /early HTTP/1.1\r\nHost: x\r\n\r\n", "GET", 200, "after hints", false},
		{"request body with its head", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "POST", 200, "hello", true},
		{"request body larger than a buffer", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n" + strings.Repeat("u", 20000), "POST", 200, strings.Repeat("u", 20000), false},
		{"Expect: 100-continue", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello", "POST", 200, "hello", false},
		{"chunked request body", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "POST", 200, "abc", false},
		{"malformed request", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "GET", 400, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := dialClient(t, addr)
			s0, h0 := loops.served.Load(), loops.handed.Load()
			if status, body := small(cl); status != 200 || body != "small" { // warms the pool
				t.Fatalf("first GET: %d %q", status, body)
			}
			settle(s0, h0)
			served, handed := loops.served.Load(), loops.handed.Load()
			status, body := cl.roundTrip(tt.raw, tt.method)
			if status != tt.status || (tt.body != "" && body != tt.body) {
				t.Fatalf("got %d %.40q, want %d %.40q", status, body, tt.status, tt.body)
			}
			if got := loops.handed.Load() > handed; got == tt.inLoop {
				t.Errorf("handed to a goroutine: %v, want %v (served %d)", got, !tt.inLoop, loops.served.Load()-served)
			}
			if status == 400 {
				return // the connection ends after a malformed request
			}
			settle(served, handed)
			served, handed = loops.served.Load(), loops.handed.Load()
			if status, body := small(cl); status != 200 || body != "small" {
				t.Fatalf("GET after it: %d %q", status, body)
			}
			settle(served, handed)
			if loops.handed.Load() != handed || loops.served.Load() != served+1 {
				t.Errorf("the GET after it was not served by the loop (served +%d, handed +%d)",
					loops.served.Load()-served, loops.handed.Load()-handed)
			}
		})
	}
}

// settle waits until the exchange that began when the loops' counters
// stood at served and handed is counted: one handed to a goroutine is
// counted before its answer, one the loop serves just after its answer
// went out, so the client may read it first.
func settle(served, handed uint64) {
	for deadline := time.Now().Add(2 * time.Second); loops.handed.Load() == handed && loops.served.Load() == served &&
		time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// TestLoopPipelinedSlowReader pipelines many requests without reading the
// answers, so that the socket fills and the loop must hold the rest until
// the client reads; every answer must then arrive, in order.
func TestLoopPipelinedSlowReader(t *testing.T) {
	body := strings.Repeat("x", 12<<10) // fits the loop's buffer with its head
	backend := rawBackend(t, []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)))
	p := startProxy(t, testConfig(testService("web", "127.0.0.1:0", &config.RealServer{Name: "a", Address: backend, Weight: 1})))
	c, err := net.Dial("tcp", p.Services()[0].Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 1500 // 18 MiB of answers: more than the socket buffers hold
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	// One request first, so that the pool has a connection and the loop
	// serves the pipelined ones itself.
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	served := loops.served.Load()
	reqs := bytes.Repeat([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), n)
	go c.Write(reqs)
	time.Sleep(200 * time.Millisecond) // let the answers back up
	for i := range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != body {
			t.Fatalf("answer %d: %d, %d bytes", i, resp.StatusCode, len(b))
		}
	}
	if loops.force != 0 && loops.served.Load()-served < n/2 {
		t.Errorf("the loop served %d of the %d pipelined requests", loops.served.Load()-served, n)
	}
}

// TestLoopTimeouts checks the loop's own timers: an idle client is closed
// after timeouts.client, a slow head gets 408, a silent real server 504.
func TestLoopTimeouts(t *testing.T) {
	// The real server answers the first request of a connection, then
	// goes silent: the second request meets the loop's own wait.
	silent := listenTCP(t, func(c net.Conn) {
		if !readRequestHead(c) {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		io.Copy(io.Discard, c)
	})
	tests := []struct {
		name   string
		adjust func(vs *config.VirtualService)
		send   string
		status int // 0: the connection just closes
	}{
		{"idle client", func(vs *config.VirtualService) { vs.Timeouts.Client = 300 * time.Millisecond }, "", 0},
		{"slow head", func(vs *config.VirtualService) { vs.Timeouts.ClientHeader = 300 * time.Millisecond }, "GET / HTTP/1.1\r\nHo", 408},
		{"silent real server", func(vs *config.VirtualService) { vs.Timeouts.Server = 300 * time.Millisecond }, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 504},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs := testService("web", "127.0.0.1:0", &config.RealServer{Name: "a", Address: silent, Weight: 1})
			tt.adjust(vs)
			p := startProxy(t, testConfig(vs))
			c, err := net.Dial("tcp", p.Services()[0].Addrs()[0].String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			if tt.status == 504 {
				io.WriteString(c, tt.send)
				if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
					t.Fatalf("first request: %v %v", resp, err)
				}
			}
			if tt.send != "" {
				io.WriteString(c, tt.send)
			}
			start := time.Now()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if tt.status == 0 {
				if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
					t.Fatalf("got %q, %v; want a quiet close", b, err)
				}
			} else {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != tt.status {
					t.Fatalf("got %d, want %d", resp.StatusCode, tt.status)
				}
			}
			if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
				t.Errorf("ended after %v, want about 300ms", d)
			}
		})
	}
}

// TestLoopReplaysOnClosedPooledConn: a real server that closes each
// connection after answering (without saying so) leaves closed connections
// in the pool; the loop's request on one is sent again on a fresh one.
func TestLoopReplaysOnClosedPooledConn(t *testing.T) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	backend := listenTCP(t, func(c net.Conn) {
		if readRequestHead(c) {
			c.Write(resp)
		}
	})
	p := startProxy(t, testConfig(testService("web", "127.0.0.1:0", &config.RealServer{Name: "a", Address: backend, Weight: 1})))
	cl := dialClient(t, p.Services()[0].Addrs()[0].String())
	for i := range 20 {
		if status, body := cl.get(); status != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, status, body)
		}
	}
}

// TestLoopNoReplayAfterBody: a real server that closes without answering
// gets a bodiless request again on a fresh connection, but never one whose
// body the loop sent (RFC 9110 §9.2.2: a proxy does not retry what may not
// be idempotent); that client gets a 502.
func TestLoopNoReplayAfterBody(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		status int
		heads  int32 // request heads the real server read in all
	}{
		// The first request, the second on the same connection, and
		// the second again on a fresh connection.
		{"GET is sent again", "GET /x HTTP/1.1\r\nHost: x\r\n\r\n", 200, 3},
		{"POST is not", "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 502, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The first request of each connection is answered; the
			// next one is read, and the connection closed without an
			// answer.
			var heads atomic.Int32
			backend := listenTCP(t, func(c net.Conn) {
				for i := 0; readRequestHead(c); i++ {
					heads.Add(1)
					if i > 0 {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			p := startProxy(t, testConfig(testService("web", "127.0.0.1:0", &config.RealServer{Name: "a", Address: backend, Weight: 1})))
			cl := dialClient(t, p.Services()[0].Addrs()[0].String())
			if status, _ := cl.roundTrip("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET"); status != 200 {
				t.Fatalf("first request: %d", status)
			}
			if status, _ := cl.roundTrip(tt.raw, "GET"); status != tt.status {
				t.Fatalf("second request: %d, want %d", status, tt.status)
			}
			if got := heads.Load(); got != tt.heads {
				t.Fatalf("the real server read %d request heads, want %d", got, tt.heads)
			}
		})
	}
}

// TestLoopShutdownClosesIdle: shutdown ends the loop's idle clients at once
// and waits for none of them.
func TestLoopShutdownClosesIdle(t *testing.T) {
	p, err := New(testConfig(testService("web", "127.0.0.1:0", &config.RealServer{Name: "a", Address: namedBackend(t, "a"), Weight: 1})), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	var cls []*client
	for range 5 {
		cl := dialClient(t, p.Services()[0].Addrs()[0].String())
		if status, _ := cl.get(); status != 200 {
			t.Fatal(status)
		}
		cls = append(cls, cl)
	}
	start := time.Now()
	if err := p.Shutdown(timeoutCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("shutdown took %v with only idle clients", d)
	}
	for i, cl := range cls {
		cl.c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := cl.br.ReadByte(); err != io.EOF {
			t.Errorf("client %d: %v, want EOF", i, err)
		}
	}
}

// TestLoopCountFollowsReload: global.event_loops applies to the connections
// that come after a start or a reload.
func TestLoopCountFollowsReload(t *testing.T) {
	force := loops.force
	loops.force = -1 // the configuration decides here
	t.Cleanup(func() {
		loops.force = force
		SetEventLoops(force)
	})
	backend := namedBackend(t, "a")
	vs := testService("web", "127.0.0.1:0", &config.RealServer{Name: "a", Address: backend, Weight: 1})
	cfg := testConfig(vs)
	cfg.Global.EventLoops = 1
	p := startProxy(t, cfg)
	addr := p.Services()[0].Addrs()[0].String()
	servedBy := func() uint64 {
		cl := dialClient(t, addr)
		s0, h0 := loops.served.Load(), loops.handed.Load()
		cl.get() // the pool's first connection
		settle(s0, h0)
		served, handed := loops.served.Load(), loops.handed.Load()
		if status, body := cl.get(); status != 200 || body != "a" {
			t.Fatalf("got %d %q", status, body)
		}
		settle(served, handed)
		return loops.served.Load() - served
	}
	if n := servedBy(); n != 1 {
		t.Fatalf("event_loops = 1: the loop served %d requests, want 1", n)
	}
	next := *vs
	cfg2 := testConfig(&next)
	cfg2.Global.EventLoops = 0
	if err := p.Apply(cfg2); err != nil {
		t.Fatal(err)
	}
	if l := pickLoop(); l != nil {
		t.Fatal("after a reload to event_loops = 0, new connections still go to a loop")
	}
	if status, body := dialClient(t, addr).get(); status != 200 || body != "a" {
		t.Fatalf("after the reload: got %d %q", status, body)
	}
}

// readRequestHead reads from c until a whole request head (of a request
// without a body) came; it reports false if c ended first.
func readRequestHead(c net.Conn) bool {
	buf := make([]byte, 4096)
	n := 0
	for !bytes.Contains(buf[:n], []byte("\r\n\r\n")) {
		m, err := c.Read(buf[n:])
		if err != nil {
			return false
		}
		n += m
	}
	return true
}

// TestPoolPrefersItsLoop: a loop takes the idle connections its own epoll
// set holds first (a move to another set costs two epoll_ctl calls and a
// message to the other loop), then those no loop holds, then another
// loop's; each set LIFO.
func TestPoolPrefersItsLoop(t *testing.T) {
	l1, l2 := &evloop{id: 1}, &evloop{id: 2}
	rs := &realServer{}
	mk := func(lp *evloop) *backendConn {
		bc := &backendConn{rs: rs, lp: lp, fd: -1}
		rs.put(bc, time.Now())
		return bc
	}
	free1, free2 := mk(nil), mk(nil)
	a1, a2 := mk(l1), mk(l1)
	b1 := mk(l2)
	tests := []struct {
		l    *evloop
		want *backendConn
	}{
		{l1, a2}, {l1, a1}, // its own, newest first
		{l1, free2},  // then one no loop holds
		{nil, free1}, // a goroutine takes those first too
		{nil, b1},    // then another loop's
		{l2, nil},    // empty
	}
	for i, tt := range tests {
		if got := rs.get(false, tt.l); got != tt.want {
			t.Fatalf("get %d: got %p, want %p", i, got, tt.want)
		}
	}
	if rs.nidle != 0 {
		t.Fatalf("nidle = %d after taking all, want 0", rs.nidle)
	}
}

// TestLoopHeadEdges: heads the loop must answer from its own reads, without
// stalling other clients: one larger than the buffer arriving at once
// (431 at once, not 408 at timeouts.client_header), and a pipelined head
// whose end comes later (the loop waits for it, serving others meanwhile).
func TestLoopHeadEdges(t *testing.T) {
	addr := loopProxy(t)

	t.Run("head larger than the buffer", func(t *testing.T) {
		cl := dialClient(t, addr)
		start := time.Now()
		status, _ := cl.roundTrip("GET /small HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", bufSize+1024), "GET")
		if status != 431 {
			t.Fatalf("got %d, want 431", status)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("answered after %v: the loop waited for more instead of meeting the full buffer", d)
		}
	})

	t.Run("pipelined head in two parts", func(t *testing.T) {
		cl := dialClient(t, addr)
		small(cl) // a pooled connection, so that the loop serves the rest itself
		cl.c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(cl.c, "GET /small HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHo")
		for i := range 2 {
			if i == 1 {
				// The second head is in the loop's buffer, half of it: other
				// clients of the (single) loop are served meanwhile.
				if status, body := small(dialClient(t, addr)); status != 200 || body != "small" {
					t.Fatalf("another client: %d %q", status, body)
				}
				io.WriteString(cl.c, "st: x\r\n\r\n")
			}
			resp, err := http.ReadResponse(cl.br, nil)
			if err != nil {
				t.Fatalf("answer %d: %v", i, err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(b) != "small" {
				t.Fatalf("answer %d: %d %q", i, resp.StatusCode, b)
			}
		}
	})
}

// TestLoopSocketsOutOfGoPoller: a socket an event loop holds is in the
// loop's epoll set only, never in the Go runtime's as well (whose poller
// thread every readiness edge would wake for nothing: fdconn.go); after a
// goroutine served an exchange on it, too.
func TestLoopSocketsOutOfGoPoller(t *testing.T) {
	cl := dialClient(t, loopProxy(t))
	for _, path := range []string{"/small", "/chunked", "/small"} { // the loop's, a goroutine's, the loop's
		if status, _ := cl.roundTrip("GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n", "GET"); status != 200 {
			t.Fatalf("%s: %d", path, status)
		}
	}
	loopEps := map[int]bool{}
	loops.mu.Lock()
	for _, l := range loops.all {
		loopEps[l.ep] = true
	}
	loops.mu.Unlock()
	// Each epoll set's sockets, by inode (/proc/self/fdinfo lists the
	// descriptors a set watches).
	inLoop, inOther := map[string]bool{}, map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	for _, e := range fds {
		link, _ := os.Readlink("/proc/self/fd/" + e.Name())
		if link != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		ep, _ := strconv.Atoi(e.Name())
		for _, line := range strings.Split(string(info), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "tfd:" {
				continue
			}
			target, _ := os.Readlink("/proc/self/fd/" + f[1])
			if !strings.HasPrefix(target, "socket:") {
				continue
			}
			if loopEps[ep] {
				inLoop[target] = true
			} else {
				inOther[target] = true
			}
		}
	}
	if len(inLoop) < 2 {
		t.Fatalf("the loops watch %d sockets; want the client's and the real server's", len(inLoop))
	}
	for s := range inLoop {
		if inOther[s] {
			t.Errorf("%s is in an event loop's epoll set and in another (Go's poller)", s)
		}
	}
}
