package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// compressBody is a 4 KiB text body that compresses well.
func compressBody() string {
	var b strings.Builder
	for i := 0; b.Len() < 4096; i++ {
		fmt.Fprintf(&b, "<p>paragraph %d of a page worth compressing</p>\n", i)
	}
	return b.String()[:4096]
}

// compressBackend serves the same text as a page (text/html), an image
// (image/png), a small page (100 bytes), and a page sent in pieces
// (chunked, no length).
func compressBackend(t *testing.T, body string) *httpBackend {
	return newHTTPBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/page":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			fmt.Fprint(w, body)
		case "/image":
			w.Header().Set("Content-Type", "image/png")
			fmt.Fprint(w, body)
		case "/small":
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, body[:100])
		case "/chunked":
			w.Header().Set("Content-Type", "application/json")
			for i := 0; i < len(body); i += 1000 {
				fmt.Fprint(w, body[i:min(i+1000, len(body))])
				w.(http.Flusher).Flush()
			}
		}
	}))
}

// curlGet runs curl on url and returns the response's head (lowercase
// field names), its body as curl wrote it (decompressed with
// --compressed), and the body's bytes on the wire.
func curlGet(t *testing.T, args ...string) (head, body string, wire int) {
	t.Helper()
	r := curl(t, append([]string{"-D", "/dev/stderr", "-w", "\n--wire:%{size_download}"}, args...)...)
	if r.code != 0 {
		t.Fatalf("curl %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	i := strings.LastIndex(r.stdout, "\n--wire:")
	fmt.Sscan(r.stdout[i+len("\n--wire:"):], &wire)
	return strings.ToLower(r.stderr), r.stdout[:i], wire
}

// TestCompress: with compress on, curl --compressed gets text gzipped
// (and decompresses it to the real server's body), while a client that
// does not ask for it, an image and a small page go as they are; a body of
// unknown length is compressed as it streams; HTTP/2 too.
func TestCompress(t *testing.T) {
	needCurl(t)
	body := compressBody()
	backend := compressBackend(t, body)
	ca := testpki.NewCA(t, "compress")
	cert, key := issue(t, ca, "www.example.com", false, "www.example.com")
	plain, secure := freeAddr(t), freeAddr(t)
	_, port, _ := net.SplitHostPort(secure)
	startFulcrum(t, config{services: []service{
		{name: "plain", listen: []string{plain}, opts: "compress = true\n", real: []real{backend.real("")}},
		{name: "secure", listen: []string{secure}, opts: "compress = true\n" + tlsTable("", [2]string{cert, key}),
			real: []real{backend.real("")}},
	}})
	h2 := []string{"--http2", "--cacert", ca.File, "--resolve", "www.example.com:" + port + ":127.0.0.1"}

	tests := []struct {
		name string
		args []string
		gzip bool
		body string
	}{
		{"page, accepted", []string{"--compressed", "http://" + plain + "/page"}, true, body},
		{"page, not asked", []string{"http://" + plain + "/page"}, false, body},
		{"page, refused", []string{"-H", "Accept-Encoding: gzip;q=0, identity", "http://" + plain + "/page"}, false, body},
		{"image", []string{"--compressed", "http://" + plain + "/image"}, false, body},
		{"small page", []string{"--compressed", "http://" + plain + "/small"}, false, body[:100]},
		{"chunked page", []string{"--compressed", "http://" + plain + "/chunked"}, true, body},
		{"HTTP/1.0", []string{"--http1.0", "--compressed", "http://" + plain + "/page"}, true, body},
		{"HTTP/2 page, accepted", append(h2, "--compressed", "https://www.example.com:"+port+"/page"), true, body},
		{"HTTP/2 page, not asked", append(h2, "https://www.example.com:"+port+"/page"), false, body},
		{"HTTP/2 image", append(h2, "--compressed", "https://www.example.com:"+port+"/image"), false, body},
		{"HTTP/2 chunked page", append(h2, "--compressed", "https://www.example.com:"+port+"/chunked"), true, body},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head, got, wire := curlGet(t, tt.args...)
			if gz := strings.Contains(head, "\ncontent-encoding: gzip\r\n"); gz != tt.gzip {
				t.Errorf("gzip %v, want %v; head:\n%s", gz, tt.gzip, head)
			}
			if got != tt.body {
				t.Errorf("body of %d bytes, want the real server's %d", len(got), len(tt.body))
			}
			if tt.gzip {
				if wire >= len(tt.body)/2 {
					t.Errorf("%d bytes on the wire for a body of %d: not compressed much", wire, len(tt.body))
				}
				if !strings.Contains(head, "\nvary: accept-encoding\r\n") || strings.Contains(head, "\ncontent-length:") {
					t.Errorf("head of a compressed response: want Vary: Accept-Encoding and no Content-Length:\n%s", head)
				}
			} else if wire != len(tt.body) {
				t.Errorf("%d bytes on the wire, want %d", wire, len(tt.body))
			}
		})
	}
}
