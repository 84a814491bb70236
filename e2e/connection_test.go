package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRetries: a real server that refuses connections is skipped for
// another one when retries allow, so no request fails; with retries = 0 the
// requests it was picked for get 502.
func TestRetries(t *testing.T) {
	needCurl(t)
	tests := []struct {
		retries  int
		want200  int
		want502  int
		upServed int
	}{
		{retries: 2, want200: 10, want502: 0, upServed: 10},
		{retries: 0, want200: 5, want502: 5, upServed: 5},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("retries=%d", tt.retries), func(t *testing.T) {
			up := newHTTPBackend(t, "up", nil)
			vip := freeAddr(t)
			startFulcrum(t, config{services: []service{{
				listen: []string{vip},
				opts:   fmt.Sprintf("retries = %d\n", tt.retries),
				real:   []real{{name: "down", address: freeAddr(t)}, up.real("")},
			}}})
			count := map[int]int{}
			for range 10 {
				status, _ := curlStatus(t, "http://"+vip+"/")
				count[status]++
			}
			if count[200] != tt.want200 || count[502] != tt.want502 {
				t.Errorf("statuses %v, want %d×200 and %d×502", count, tt.want200, tt.want502)
			}
			if got := up.reqs.Load(); got != int64(tt.upServed) {
				t.Errorf("live real server served %d requests, want %d", got, tt.upServed)
			}
		})
	}
}

// TestPipelining sends three requests in one write; the answers come back
// whole and in order (RFC 9112 §9.3.2).
func TestPipelining(t *testing.T) {
	b := newHTTPBackend(t, "web1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "answer to "+r.URL.Path)
	}))
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real("")}}}})

	c := dialRaw(t, vip)
	c.send("GET /one HTTP/1.1\r\nHost: fulcrum\r\n\r\n" +
		"POST /two HTTP/1.1\r\nHost: fulcrum\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /three HTTP/1.1\r\nHost: fulcrum\r\n\r\n")
	for _, p := range []string{"/one", "/two", "/three"} {
		resp := c.response("GET")
		if body := c.body(resp); resp.StatusCode != 200 || body != "answer to "+p {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "answer to "+p)
		}
	}
}

// TestHTTP10Client: an HTTP/1.0 client cannot read chunked framing, so a
// chunked response reaches it as a plain body ended by closing the
// connection (RFC 9112 §6.3, §7).
func TestHTTP10Client(t *testing.T) {
	needCurl(t)
	b := newHTTPBackend(t, "web1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "part %d\n", i)
			w.(http.Flusher).Flush()
		}
	}))
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real("")}}}})

	r := curl(t, "--http1.0", "-D", "/dev/stderr", "http://"+vip+"/")
	if r.code != 0 {
		t.Fatalf("curl: exit %d: %s", r.code, r.stderr)
	}
	if want := "part 0\npart 1\npart 2\n"; r.stdout != want {
		t.Errorf("body %q, want %q", r.stdout, want)
	}
	if strings.Contains(strings.ToLower(r.stderr), "transfer-encoding") {
		t.Errorf("Transfer-Encoding sent to an HTTP/1.0 client; head:\n%s", r.stderr)
	}
}

// TestClientConnectionClose: "Connection: close" from the client ends the
// connection after the answer (RFC 9112 §9.6).
func TestClientConnectionClose(t *testing.T) {
	b := newHTTPBackend(t, "web1", nil)
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real("")}}}})
	c := dialRaw(t, vip)
	c.send("GET / HTTP/1.1\r\nHost: fulcrum\r\nConnection: close\r\n\r\n")
	resp := c.response("GET")
	if body := c.body(resp); resp.StatusCode != 200 || body != "web1\n" || !resp.Close {
		t.Errorf("got %d %q close=%v, want 200 \"web1\\n\" with Connection: close", resp.StatusCode, body, resp.Close)
	}
	c.expectClosed(2 * time.Second)
}

// TestClientIdleTimeout: a keep-alive client silent for timeouts.client is
// closed.
func TestClientIdleTimeout(t *testing.T) {
	b := newHTTPBackend(t, "web1", nil)
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{
		listen:   []string{vip},
		timeouts: "client = \"300ms\"\n",
		real:     []real{b.real("")},
	}}})
	c := dialRaw(t, vip)
	c.send("GET / HTTP/1.1\r\nHost: fulcrum\r\n\r\n")
	c.body(c.response("GET"))
	start := time.Now()
	c.expectClosed(3 * time.Second)
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("closed after %s idle, before timeouts.client 300ms", d)
	}
}

// TestBackendClosesAfterEachResponse: a real server that closes every
// connection right after answering, without saying so, must not make the
// next request fail: a request without a body is sent again on a new
// connection.
func TestBackendClosesAfterEachResponse(t *testing.T) {
	needCurl(t)
	// Answers keep-alive but closes after each response.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Read(buf); err != nil {
					return
				}
				c.Write([]byte(okResponse("fresh")))
			}()
		}
	}()
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		real:   []real{{name: "closer", address: l.Addr().String()}},
	}}})
	args := []string{"-w", "\n%{http_code}\n"}
	for range 5 {
		args = append(args, "http://"+vip+"/")
	}
	r := curl(t, args...)
	if want := strings.Repeat("fresh\n200\n", 5); r.code != 0 || r.stdout != want {
		t.Errorf("curl exit %d, output %q, want %q; stderr %s", r.code, r.stdout, want, r.stderr)
	}
}

// TestVirtualServiceMaxConns: with the service's max_conns = 1 a second
// client is not served while the first keeps its connection, and is served
// once the first leaves.
func TestVirtualServiceMaxConns(t *testing.T) {
	b := newHTTPBackend(t, "web1", nil)
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   "max_conns = 1\n",
		real:   []real{b.real("")},
	}}})
	first := dialRaw(t, vip)
	first.send("GET / HTTP/1.1\r\nHost: fulcrum\r\n\r\n")
	first.body(first.response("GET"))

	second := dialRaw(t, vip)
	second.send("GET / HTTP/1.1\r\nHost: fulcrum\r\n\r\n")
	second.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := second.br.Peek(1); !isTimeout(err) {
		t.Fatalf("second client answered (err %v) while the first holds the only connection slot", err)
	}
	first.c.Close()
	second.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp := second.response("GET")
	if body := second.body(resp); resp.StatusCode != 200 || body != "web1\n" {
		t.Errorf("second client: %d %q after the first left, want 200", resp.StatusCode, body)
	}
}

// TestStaleBackendConnection: a real server closed an idle keep-alive
// connection (its keep-alive timeout, here 100ms, like any server's); the
// next request, with or without a body, must still succeed: the proxy has
// to notice the connection is gone (the FIN is already there to see) and
// open another.
func TestStaleBackendConnection(t *testing.T) {
	needCurl(t)
	tests := []struct {
		name string
		args []string
	}{
		{"GET", nil},
		{"POST", []string{"--data-binary", "hello"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			closed := make(chan struct{}, 10)
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					w.Write([]byte("ok"))
				}),
				IdleTimeout: 100 * time.Millisecond,
				ConnState: func(_ net.Conn, s http.ConnState) {
					if s == http.StateClosed {
						closed <- struct{}{}
					}
				},
			}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })
			vip := freeAddr(t)
			startFulcrum(t, config{services: []service{{
				listen: []string{vip},
				real:   []real{{name: "idle100ms", address: l.Addr().String()}},
			}}})

			if status, body := curlStatus(t, append(tt.args, "http://"+vip+"/first")...); status != 200 || body != "ok" {
				t.Fatalf("first request: %d %q", status, body)
			}
			select {
			case <-closed: // the real server closed the pooled connection
			case <-time.After(5 * time.Second):
				t.Fatal("real server did not close its idle connection")
			}
			if status, body := curlStatus(t, append(tt.args, "http://"+vip+"/second")...); status != 200 || body != "ok" {
				t.Errorf("request after the real server closed the idle connection: %d %q, want 200 \"ok\"", status, body)
			}
		})
	}
}
