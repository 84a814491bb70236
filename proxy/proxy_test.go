package proxy

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// TestConcurrentKeepAlive drives the proxy from many keep-alive clients at
// once (under -race this checks the proxy's own synchronisation) and checks
// every response arrives whole and the backend connections are reused.
func TestConcurrentKeepAlive(t *testing.T) {
	var accepted countingAccepts
	b1 := rawBackendCounting(t, benchResponse, &accepted)
	b2 := rawBackendCounting(t, benchResponse, &accepted)
	p := startTestService(t, config.ModeHTTP, b1, b2)
	addr := p.Services()[0].Addrs()[0].String()
	const clients, requests = 8, 200
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			resp := make([]byte, len(benchResponse))
			for range requests {
				if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(resp, benchResponse) {
					errs <- io.ErrUnexpectedEOF
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := accepted.n.Load(); n > 2*clients {
		t.Errorf("backends accepted %d connections for %d clients: pooled connections not reused", n, clients)
	}
}

// TestShutdownFinishesInFlight: a request in flight when shutdown begins is
// answered; idle clients are closed at once.
func TestShutdownFinishesInFlight(t *testing.T) {
	release := make(chan struct{})
	backend := listenTCP(t, func(c net.Conn) {
		c.Read(make([]byte, 4096))
		<-release
		c.Write(benchResponse)
	})
	p := startTestService(t, config.ModeHTTP, backend)
	addr := p.Services()[0].Addrs()[0].String()

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busy.Write([]byte("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
	waitFor(t, func() bool { return p.Services()[0].Pool.Servers()[0].Active() == 1 })

	done := make(chan struct{})
	go func() {
		p.Shutdown(timeoutCtx(t, 5*time.Second))
		close(done)
	}()
	// The idle client is closed at once.
	idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle client: read %d, %v; want EOF", n, err)
	}
	close(release)
	resp, err := io.ReadAll(busy)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 200 OK\r\n")) || !bytes.Contains(resp, []byte("Connection: close\r\n")) {
		t.Fatalf("in-flight response: %q", resp)
	}
	<-done
}

// TestTCPHalfClose: a client that shuts its write side still gets the
// real server's answer.
func TestTCPHalfClose(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		c.Write(append([]byte("got:"), b...))
	})
	p := startTestService(t, config.ModeTCP, backend)
	c, err := net.Dial("tcp", p.Services()[0].Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got:hello" {
		t.Fatalf("got %q, %v", got, err)
	}
}

type countingAccepts struct{ n atomicInt }

func rawBackendCounting(tb testing.TB, resp []byte, n *countingAccepts) string {
	addr := rawBackend(tb, resp)
	// A relay in front of the raw backend counts the connections made to it.
	return listenTCP(tb, func(c net.Conn) {
		n.n.Add(1)
		b, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		go func() { io.Copy(b, c); b.Close() }()
		io.Copy(c, b)
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSlowUploadLongerThanServerTimeout: timeouts.server bounds the wait
// for the response once the request is sent, not the upload before it.
func TestSlowUploadLongerThanServerTimeout(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) {
		// Read the head and the 5-byte body, then answer at once.
		var got []byte
		buf := make([]byte, 4096)
		for !bytes.HasSuffix(got, []byte("hello")) {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			got = append(got, buf[:n]...)
		}
		c.Write(benchResponse)
	})
	p := startTestServiceWith(t, config.ModeHTTP, func(vs *config.VirtualService) {
		vs.Timeouts.Server = 300 * time.Millisecond
	}, backend)
	c, err := net.Dial("tcp", p.Services()[0].Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"))
	for _, b := range []byte("hello") { // 5 × 150ms: longer than timeouts.server
		time.Sleep(150 * time.Millisecond)
		c.Write([]byte{b})
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp := make([]byte, len(benchResponse))
	n, err := io.ReadFull(c, resp)
	if err != nil || !bytes.Equal(resp, benchResponse) {
		t.Fatalf("response %q, %v; want the real server's 200", resp[:n], err)
	}
}

// TestStreamedResponseNotHeldBack: a response body the real server sends in
// pieces, waiting for the client to see each one (server-sent events,
// long polling), reaches the client piece by piece, whatever its framing,
// instead of waiting for a buffer to fill.
func TestStreamedResponseNotHeldBack(t *testing.T) {
	pieces := []string{"data: one\n\n", "data: two\n\n", "data: three\n\n"}
	for _, tc := range []struct {
		name  string
		head  string
		frame func(string) string
		end   string
	}{
		{"chunked", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
			func(p string) string { return strconv.FormatInt(int64(len(p)), 16) + "\r\n" + p + "\r\n" }, "0\r\n\r\n"},
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 36\r\n\r\n",
			func(p string) string { return p }, ""},
		{"until-close", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
			func(p string) string { return p }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := make(chan struct{})
			backend := listenTCP(t, func(c net.Conn) {
				defer c.Close()
				buf := make([]byte, 4096)
				var got []byte
				for !bytes.Contains(got, []byte("\r\n\r\n")) {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					got = append(got, buf[:n]...)
				}
				c.Write([]byte(tc.head))
				for _, p := range pieces {
					c.Write([]byte(tc.frame(p)))
					select { // the next piece only once the client has this one
					case <-seen:
					case <-time.After(5 * time.Second):
						return
					}
				}
				c.Write([]byte(tc.end))
			})
			p := startTestService(t, config.ModeHTTP, backend)
			c, err := net.Dial("tcp", p.Services()[0].Addrs()[0].String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("GET /events HTTP/1.1\r\nHost: x\r\n\r\n"))
			c.SetReadDeadline(time.Now().Add(4 * time.Second))
			var got []byte
			buf := make([]byte, 4096)
			for _, p := range pieces {
				for !bytes.Contains(got, []byte(p)) {
					n, err := c.Read(buf)
					if err != nil {
						t.Fatalf("waiting for %q: %v (got %q)", p, err, got)
					}
					got = append(got, buf[:n]...)
				}
				seen <- struct{}{}
			}
		})
	}
}
