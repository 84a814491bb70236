package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// echoSHA answers with the request body's length, SHA-256 and framing.
func echoSHA(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	fmt.Fprintf(w, "%d %x te=%v", n, h.Sum(nil), r.TransferEncoding)
}

// TestChunked passes chunked bodies both ways; the proxy keeps the framing.
func TestChunked(t *testing.T) {
	needCurl(t)
	b := newHTTPBackend(t, "web1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			for i := range 5 {
				fmt.Fprintf(w, "part %d\n", i)
				w.(http.Flusher).Flush()
			}
			return
		}
		echoSHA(w, r)
	}))
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real("")}}}})

	t.Run("request", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "body")
		body := strings.Repeat("0123456789abcdef", 10000) // 160000 bytes
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(body))
		status, got := curlStatus(t, "-H", "Transfer-Encoding: chunked", "--data-binary", "@"+path, "http://"+vip+"/echo")
		want := fmt.Sprintf("%d %s te=[chunked]", len(body), hex.EncodeToString(sum[:]))
		if status != 200 || got != want {
			t.Errorf("got %d %q, want 200 %q", status, got, want)
		}
	})

	t.Run("response", func(t *testing.T) {
		r := curl(t, "-D", "/dev/stderr", "http://"+vip+"/stream")
		if r.code != 0 {
			t.Fatalf("curl: exit %d: %s", r.code, r.stderr)
		}
		if !strings.Contains(strings.ToLower(r.stderr), "transfer-encoding: chunked") {
			t.Errorf("response not chunked; head:\n%s", r.stderr)
		}
		if want := "part 0\npart 1\npart 2\npart 3\npart 4\n"; r.stdout != want {
			t.Errorf("body %q, want %q", r.stdout, want)
		}
	})
}

// TestTrailers sends a chunked request with a trailer and gets a chunked
// response with a trailer: both are passed through (RFC 9112 §7.1.2).
func TestTrailers(t *testing.T) {
	b := newHTTPBackend(t, "web1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Echo-Trailer")
		fmt.Fprintf(w, "body=%s", body)
		w.(http.Flusher).Flush()
		w.Header().Set("X-Echo-Trailer", "got "+r.Trailer.Get("X-Checksum"))
	}))
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real("")}}}})

	c := dialRaw(t, vip)
	c.send("POST /trailers HTTP/1.1\r\nHost: fulcrum\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" +
		"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc123\r\n\r\n")
	resp := c.response("POST")
	body := c.body(resp)
	if resp.StatusCode != 200 || body != "body=hello world" {
		t.Errorf("got %d %q, want 200 \"body=hello world\"", resp.StatusCode, body)
	}
	if got := resp.Trailer.Get("X-Echo-Trailer"); got != "got abc123" {
		// "got " alone: the request trailer was lost; "": the response one.
		t.Errorf("response trailer X-Echo-Trailer = %q, want \"got abc123\"", got)
	}
}

// TestBodilessResponses checks responses that have no body whatever their
// Content-Length says (RFC 9112 §6.3): the proxy must neither wait for a body
// nor pass one, and the connection must serve the next request cleanly.
func TestBodilessResponses(t *testing.T) {
	rb := newRawBackend(t, func(head string) string {
		switch {
		case strings.HasPrefix(head, "HEAD /head "):
			return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n"
		case strings.HasPrefix(head, "GET /204 "):
			return "HTTP/1.1 204 No Content\r\nX-Case: 204\r\n\r\n"
		case strings.HasPrefix(head, "GET /304 "):
			return "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n"
		}
		return okResponse("after")
	})
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{
		listen:   []string{vip},
		timeouts: "server = \"5s\"\n",
		real:     []real{{name: "raw", address: rb.addr}},
	}}})
	tests := []struct {
		name, method, path string
		status             int
		header             string // a field the client must see, "Name: value"
	}{
		{"HEAD with Content-Length", "HEAD", "/head", 200, "Content-Length: 1234"},
		{"204", "GET", "/204", 204, "X-Case: 204"},
		{"304 with Content-Length", "GET", "/304", 304, "Etag: \"v1\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, vip)
			c.c.SetDeadline(time.Now().Add(3 * time.Second)) // less than timeouts.server
			c.send(tt.method + " " + tt.path + " HTTP/1.1\r\nHost: fulcrum\r\n\r\n")
			resp := c.response(tt.method)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			name, value, _ := strings.Cut(tt.header, ": ")
			if got := resp.Header.Get(name); got != value {
				t.Errorf("%s = %q, want %q", name, got, value)
			}
			if body := c.body(resp); body != "" {
				t.Errorf("body %q, want none", body)
			}
			// The next response on the connection must be the next
			// request's: no stray body bytes in between.
			c.send("GET /after HTTP/1.1\r\nHost: fulcrum\r\n\r\n")
			next := c.response("GET")
			if body := c.body(next); next.StatusCode != 200 || body != "after" {
				t.Errorf("next request on the connection: %d %q, want 200 \"after\"", next.StatusCode, body)
			}
		})
	}
}

// TestExpectContinue checks "Expect: 100-continue" (RFC 9110 §10.1.1): the
// real server's 100 reaches curl, which then sends the body; a real server
// that answers at once gets its answer to curl, which sends no body.
func TestExpectContinue(t *testing.T) {
	needCurl(t)
	b := newHTTPBackend(t, "web1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reject" {
			http.Error(w, "no thanks", http.StatusUnauthorized) // body not read: no 100
			return
		}
		echoSHA(w, r) // reading the body makes net/http send 100 Continue
	}))
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real("")}}}})
	path := filepath.Join(t.TempDir(), "body")
	body := strings.Repeat("x", 2<<20)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(body))

	tests := []struct {
		name        string
		path        string
		status      int
		body        string
		continue100 bool
	}{
		{"continue", "/echo", 200, fmt.Sprintf("%d %x te=[]", len(body), sum), true},
		{"final answer instead", "/reject", 401, "no thanks\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// curl waits up to --expect100-timeout for the 100 before
			// sending the body anyway; a long one shows whether the
			// proxy passed the 100 on.
			r := curl(t, "-v", "-H", "Expect: 100-continue", "--expect100-timeout", "20",
				"-w", "\n--status:%{http_code}", "--data-binary", "@"+path, "http://"+vip+tt.path)
			if r.code != 0 {
				t.Fatalf("curl: exit %d: %s", r.code, r.stderr)
			}
			if r.elapsed > 10*time.Second {
				t.Errorf("took %s: curl waited for its expect timeout, so no 100 or final answer reached it", r.elapsed)
			}
			want := fmt.Sprintf("%s\n--status:%d", tt.body, tt.status)
			if r.stdout != want {
				t.Errorf("got %q, want %q", r.stdout, want)
			}
			if got := strings.Contains(r.stderr, "< HTTP/1.1 100 Continue"); got != tt.continue100 {
				t.Errorf("client saw 100 Continue = %v, want %v; curl -v:\n%s", got, tt.continue100, r.stderr)
			}
		})
	}
}

// TestEarlyHints checks that an informational 103 (RFC 8297) from the real
// server reaches the client before the final response.
func TestEarlyHints(t *testing.T) {
	needCurl(t)
	b := newHTTPBackend(t, "web1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		fmt.Fprint(w, "final")
	}))
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real("")}}}})

	r := curl(t, "-D", "/dev/stderr", "http://"+vip+"/hints")
	if r.code != 0 {
		t.Fatalf("curl: exit %d: %s", r.code, r.stderr)
	}
	if r.stdout != "final" {
		t.Errorf("body %q, want \"final\"", r.stdout)
	}
	i103 := strings.Index(r.stderr, "HTTP/1.1 103")
	i200 := strings.Index(r.stderr, "HTTP/1.1 200")
	switch {
	case i103 < 0:
		t.Errorf("no 103 Early Hints reached the client; heads:\n%s", r.stderr)
	case i200 < i103:
		t.Errorf("103 after the final response; heads:\n%s", r.stderr)
	case !strings.Contains(r.stderr[i103:i200], "Link: </style.css>; rel=preload; as=style"):
		t.Errorf("103 without its Link field; heads:\n%s", r.stderr)
	}
}

// TestCloseDelimitedResponse: a response with neither Content-Length nor
// chunked framing (an HTTP/1.0 real server) ends when the real server closes;
// the client gets it whole and is told the connection ends.
func TestCloseDelimitedResponse(t *testing.T) {
	needCurl(t)
	b := newTCPBackend(t, "http10", func(c *net.TCPConn) {
		readHead(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
		io.WriteString(c, strings.Repeat("until close\n", 10000))
	})
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real()}}}})
	r := curl(t, "-D", "/dev/stderr", "http://"+vip+"/")
	if r.code != 0 {
		t.Fatalf("curl: exit %d: %s", r.code, r.stderr)
	}
	if want := strings.Repeat("until close\n", 10000); r.stdout != want {
		t.Errorf("body of %d bytes, want %d", len(r.stdout), len(want))
	}
	if !strings.Contains(strings.ToLower(r.stderr), "connection: close") {
		t.Errorf("close-delimited response without Connection: close; head:\n%s", r.stderr)
	}
}
