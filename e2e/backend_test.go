package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Real servers started by the tests.

// httpBackend is a Go net/http real server on 127.0.0.1 that counts the
// connections it accepts.
type httpBackend struct {
	name  string
	addr  string
	conns atomic.Int64 // TCP connections accepted
	reqs  atomic.Int64 // requests served
}

// newHTTPBackend starts a real server; h nil answers with the server's name
// and a newline.
func newHTTPBackend(t testing.TB, name string, h http.Handler) *httpBackend {
	t.Helper()
	b := &httpBackend{name: name}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			fmt.Fprintln(w, name)
		})
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = l.Addr().String()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.reqs.Add(1)
			h.ServeHTTP(w, r)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				b.conns.Add(1)
			}
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return b
}

// real returns the backend as a real server of a configuration.
func (b *httpBackend) real(opts string) real {
	return real{name: b.name, address: b.addr, opts: opts}
}

// rawBackend is a hand-written HTTP/1.1 real server for exact control of the
// bytes: it records each request head as received and answers with the bytes
// respond returns for it, keeping the connection open for the next request.
// It handles requests without a body only.
type rawBackend struct {
	addr string

	mu    sync.Mutex
	heads []string
}

func newRawBackend(t testing.TB, respond func(head string) string) *rawBackend {
	t.Helper()
	b := &rawBackend{}
	b.addr = serveTCP(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			head, err := readHead(br)
			if err != nil {
				return
			}
			b.mu.Lock()
			b.heads = append(b.heads, head)
			b.mu.Unlock()
			if _, err := io.WriteString(c, respond(head)); err != nil {
				return
			}
		}
	})
	return b
}

// serveTCP listens on a fresh loopback address and serves each accepted
// connection with handle in its own goroutine. At the end of the test it
// stops listening, closes the connections still open and waits for every
// handler.
func serveTCP(t testing.TB, handle func(c *net.TCPConn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return l.Addr().String()
}

func (b *rawBackend) received() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.heads...)
}

// readHead reads one message head, through its empty line.
func readHead(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		sb.WriteString(line)
		if err != nil {
			return sb.String(), err
		}
		if line == "\r\n" || line == "\n" {
			return sb.String(), nil
		}
	}
}

// field is one header field line of a head, as sent.
type field struct{ name, value string }

// fields returns the field lines of a head in order, duplicates kept.
func fields(head string) []field {
	lines := strings.Split(strings.TrimRight(head, "\r\n"), "\n")
	var out []field
	for _, l := range lines[1:] {
		l = strings.TrimRight(l, "\r")
		name, value, _ := strings.Cut(l, ":")
		out = append(out, field{name, strings.TrimSpace(value)})
	}
	return out
}

// values returns the values of the fields named name (case-insensitive).
func values(fs []field, name string) []string {
	var out []string
	for _, f := range fs {
		if strings.EqualFold(f.name, name) {
			out = append(out, f.value)
		}
	}
	return out
}

// okResponse is a minimal keep-alive answer for rawBackend.
func okResponse(body string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// tcpBackend is a raw TCP real server that runs serve for each connection.
type tcpBackend struct {
	name  string
	addr  string
	conns atomic.Int64
}

func newTCPBackend(t testing.TB, name string, serve func(c *net.TCPConn)) *tcpBackend {
	t.Helper()
	b := &tcpBackend{name: name}
	b.addr = serveTCP(t, func(c *net.TCPConn) {
		b.conns.Add(1)
		c.SetDeadline(time.Now().Add(60 * time.Second))
		serve(c)
	})
	return b
}

func (b *tcpBackend) real() real { return real{name: b.name, address: b.addr} }
