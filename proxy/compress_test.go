package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

func TestCodingPrefs(t *testing.T) {
	tests := []struct {
		fields []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZIP"}, true},
		{[]string{"x-gzip"}, true},
		{[]string{"gzip, deflate, br"}, true},
		{[]string{"br, gzip;q=0.5"}, true},
		{[]string{"gzip; q=1.000"}, true},
		{[]string{"gzip;Q=0.001"}, true},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip;q=0.000"}, false},
		{[]string{"gzip;q=0., br"}, false},
		{[]string{"gzip;q=2"}, false},        // not a qvalue: not taken on a guess
		{[]string{"gzip;q=1.5"}, false},      // likewise
		{[]string{"gzip;q=abc"}, false},      // likewise
		{[]string{"gzip;level=1"}, true},     // another parameter: q is 1
		{[]string{"*"}, true},                // any coding
		{[]string{"*;q=0"}, false},           // none but identity
		{[]string{"gzip;q=0, *"}, false},     // gzip named: "*" is for the others
		{[]string{"*, gzip;q=0"}, false},     // in either order
		{[]string{"*;q=0, gzip"}, true},      // gzip named and accepted
		{[]string{"br", "gzip"}, true},       // two fields are one list
		{[]string{"deflate, br"}, false},     // gzip not among them
		{[]string{"identity"}, false},        // only identity
		{[]string{"gzipx, xgzip"}, false},    // other codings
		{[]string{" , gzip ,"}, true},        // empty elements
		{[]string{"gzip;q=0", "gzip"}, true}, // the last word wins
	}
	for _, tt := range tests {
		p := newCodingPrefs()
		for _, f := range tt.fields {
			p.add(f)
		}
		if got := p.accepts(); got != tt.want {
			t.Errorf("Accept-Encoding %q: accepts gzip = %v, want %v", tt.fields, got, tt.want)
		}
	}
}

func TestCompressibleType(t *testing.T) {
	tests := []struct {
		ct   string
		want bool
	}{
		{"text/html", true},
		{"text/html; charset=utf-8", true},
		{"TEXT/CSS", true},
		{"text/plain;charset=us-ascii", true},
		{"text/event-stream", true},
		{"application/json", true},
		{"Application/JSON; charset=utf-8", true},
		{"application/javascript", true},
		{"application/xml", true},
		{"application/problem+json", true},
		{"application/atom+xml", true},
		{"application/vnd.api+json", true},
		{"image/svg+xml", true},
		{"", false},
		{"text", false},
		{"text/", false},
		{"image/png", false},
		{"image/jpeg", false},
		{"application/octet-stream", false},
		{"application/gzip", false},
		{"application/zip", false},
		{"application/grpc", false},
		{"application/+json", false},
		{"application/json-seq", false},
		{"video/mp4", false},
		{"font/woff2", false},
		{"application/x-protobuf", false},
	}
	for _, tt := range tests {
		if got := compressibleType(tt.ct); got != tt.want {
			t.Errorf("compressibleType(%q) = %v, want %v", tt.ct, got, tt.want)
		}
	}
}

func TestGzipResponseCompressible(t *testing.T) {
	ok := gzipResponse{status: 200, length: 4096, contentType: "text/html"}
	tests := []struct {
		name   string
		change func(r *gzipResponse)
		want   bool
	}{
		{"text 4 KiB", func(r *gzipResponse) {}, true},
		{"unknown length", func(r *gzipResponse) { r.length = -1 }, true},
		{"exactly the minimum", func(r *gzipResponse) { r.length = config.MinCompressSize }, true},
		{"below the minimum", func(r *gzipResponse) { r.length = config.MinCompressSize - 1 }, false},
		{"empty", func(r *gzipResponse) { r.length = 0 }, false},
		{"201", func(r *gzipResponse) { r.status = 201 }, true},
		{"203", func(r *gzipResponse) { r.status = 203 }, true},
		{"204", func(r *gzipResponse) { r.status = 204 }, false},
		{"205", func(r *gzipResponse) { r.status = 205 }, false},
		{"206", func(r *gzipResponse) { r.status = 206 }, false},
		{"301", func(r *gzipResponse) { r.status = 301 }, false},
		{"304", func(r *gzipResponse) { r.status = 304 }, false},
		{"404", func(r *gzipResponse) { r.status = 404 }, false},
		{"500", func(r *gzipResponse) { r.status = 500 }, false},
		{"HEAD", func(r *gzipResponse) { r.head = true }, false},
		{"already encoded", func(r *gzipResponse) { r.encoded = true }, false},
		{"no-transform", func(r *gzipResponse) { r.noTransform = true }, false},
		{"image/png", func(r *gzipResponse) { r.contentType = "image/png" }, false},
		{"no type", func(r *gzipResponse) { r.contentType = "" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			tt.change(&r)
			if got := r.compressible(); got != tt.want {
				t.Errorf("compressible(%+v) = %v, want %v", r, got, tt.want)
			}
		})
	}
}

func TestWeakETag(t *testing.T) {
	for in, want := range map[string]string{`"abc"`: `W/"abc"`, `W/"abc"`: `W/"abc"`, `""`: `W/""`, `abc`: `abc`} {
		if got := weakETag(in); got != want {
			t.Errorf("weakETag(%q) = %q, want %q", in, got, want)
		}
	}
}

// textBody is a compressible body of n bytes.
func textBody(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %d of a text that compresses well\n", i)
	}
	return b.String()[:n]
}

// chunkedBody frames body in chunks of at most size bytes, with trailer
// lines (each "Name: value\r\n") after the last chunk.
func chunkedBody(body string, size int, trailer string) string {
	var b strings.Builder
	for len(body) > 0 {
		n := min(size, len(body))
		fmt.Fprintf(&b, "%x\r\n%s\r\n", n, body[:n])
		body = body[n:]
	}
	b.WriteString("0\r\n" + trailer + "\r\n")
	return b.String()
}

// pathBackend is a real server that answers each request with the raw
// response given for its path, then closes the connection when the
// response says so (a body delimited by the close).
func pathBackend(t testing.TB, responses map[string]string) string {
	return listenTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			resp, ok := responses[req.URL.Path]
			if !ok {
				resp = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
			}
			if req.Method == http.MethodHead {
				resp = resp[:strings.Index(resp, "\r\n\r\n")+4]
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
			if strings.Contains(resp, "Connection: close\r\n") {
				return
			}
		}
	})
}

// TestCompressHTTP1 runs the HTTP/1.1 front end's compression through
// responses of every framing, and the cases left alone.
func TestCompressHTTP1(t *testing.T) {
	big := textBody(4096)
	small := textBody(100)
	sized := func(ct, extra, body string) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s", ct, len(body), extra, body)
	}
	backend := pathBackend(t, map[string]string{
		"/text":        sized("text/html; charset=utf-8", "", big),
		"/small":       sized("text/plain", "", small),
		"/png":         sized("image/png", "", big),
		"/encoded":     sized("text/plain", "Content-Encoding: br\r\n", big),
		"/notransform": sized("text/plain", "Cache-Control: public, no-transform\r\n", big),
		"/partial": fmt.Sprintf("HTTP/1.1 206 Partial Content\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-%d/9999\r\nContent-Length: %d\r\n\r\n%s",
			len(big)-1, len(big), big),
		"/validators": sized("application/problem+json", "Vary: Origin\r\nETag: \"v1\"\r\nAccept-Ranges: bytes\r\n", big),
		"/varied":     sized("text/plain", "Vary: accept-encoding\r\nETag: W/\"v2\"\r\n", big),
		"/notmod":     "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
		"/chunked": "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			chunkedBody(big, 1000, "X-Sum: 42\r\n"),
		"/chunked-small": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedBody(small, 30, ""),
		"/close":         "HTTP/1.1 200 OK\r\nContent-Type: text/css\r\nConnection: close\r\n\r\n" + big,
	})
	p := startTestServiceWith(t, config.ModeHTTP, func(vs *config.VirtualService) { vs.Compress = true }, backend)
	vip := p.Services()[0].Addrs()[0].String()

	tests := []struct {
		name    string
		request string // the head; Host is added
		path    string
		gzip    bool
		body    string
		check   func(t *testing.T, resp *http.Response)
	}{
		{name: "text", request: "GET /text HTTP/1.1\r\nAccept-Encoding: gzip, deflate", gzip: true, body: big,
			check: func(t *testing.T, resp *http.Response) {
				if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || resp.Header.Get("Content-Length") != "" {
					t.Errorf("framing: Transfer-Encoding %v, Content-Length %q; want chunked only", resp.TransferEncoding, resp.Header.Get("Content-Length"))
				}
				if v := resp.Header.Values("Vary"); len(v) != 1 || v[0] != "Accept-Encoding" {
					t.Errorf("Vary %q, want [Accept-Encoding]", v)
				}
			}},
		{name: "not accepted", request: "GET /text HTTP/1.1", body: big,
			check: func(t *testing.T, resp *http.Response) {
				if resp.ContentLength != int64(len(big)) || resp.Header.Get("Vary") != "" {
					t.Errorf("Content-Length %d, Vary %q: want the real server's response unchanged", resp.ContentLength, resp.Header.Get("Vary"))
				}
			}},
		{name: "refused", request: "GET /text HTTP/1.1\r\nAccept-Encoding: br, gzip;q=0", body: big},
		{name: "any coding", request: "GET /text HTTP/1.1\r\nAccept-Encoding: *", gzip: true, body: big},
		{name: "small", request: "GET /small HTTP/1.1\r\nAccept-Encoding: gzip", body: small},
		{name: "image", request: "GET /png HTTP/1.1\r\nAccept-Encoding: gzip", body: big},
		{name: "already encoded", request: "GET /encoded HTTP/1.1\r\nAccept-Encoding: gzip", body: big},
		{name: "no-transform", request: "GET /notransform HTTP/1.1\r\nAccept-Encoding: gzip", body: big},
		{name: "partial", request: "GET /partial HTTP/1.1\r\nAccept-Encoding: gzip", body: big},
		{name: "HEAD", request: "HEAD /text HTTP/1.1\r\nAccept-Encoding: gzip", body: "",
			check: func(t *testing.T, resp *http.Response) {
				if resp.ContentLength != int64(len(big)) {
					t.Errorf("Content-Length %d, want the real server's %d", resp.ContentLength, len(big))
				}
			}},
		{name: "not modified", request: "GET /notmod HTTP/1.1\r\nAccept-Encoding: gzip", body: ""},
		{name: "validators", request: "GET /validators HTTP/1.1\r\nAccept-Encoding: gzip", gzip: true, body: big,
			check: func(t *testing.T, resp *http.Response) {
				if v := resp.Header.Values("Vary"); len(v) != 1 || v[0] != "Origin, Accept-Encoding" {
					t.Errorf("Vary %q, want [Origin, Accept-Encoding]", v)
				}
				if et := resp.Header.Get("Etag"); et != `W/"v1"` {
					t.Errorf("ETag %q, want W/\"v1\"", et)
				}
				if ar := resp.Header.Get("Accept-Ranges"); ar != "" {
					t.Errorf("Accept-Ranges %q kept: ranges would not count in the bytes sent", ar)
				}
			}},
		{name: "vary covers", request: "GET /varied HTTP/1.1\r\nAccept-Encoding: gzip", gzip: true, body: big,
			check: func(t *testing.T, resp *http.Response) {
				if v := resp.Header.Values("Vary"); len(v) != 1 || v[0] != "accept-encoding" {
					t.Errorf("Vary %q, want [accept-encoding] as it was", v)
				}
				if et := resp.Header.Get("Etag"); et != `W/"v2"` {
					t.Errorf("ETag %q, want W/\"v2\" as it was", et)
				}
			}},
		{name: "chunked", request: "GET /chunked HTTP/1.1\r\nAccept-Encoding: gzip", gzip: true, body: big,
			check: func(t *testing.T, resp *http.Response) {
				if resp.Trailer.Get("X-Sum") != "42" {
					t.Errorf("trailer %v, want X-Sum: 42 passed on", resp.Trailer)
				}
			}},
		// Unknown length: compressed however small.
		{name: "chunked small", request: "GET /chunked-small HTTP/1.1\r\nAccept-Encoding: gzip", gzip: true, body: small},
		{name: "until close", request: "GET /close HTTP/1.1\r\nAccept-Encoding: gzip", gzip: true, body: big,
			check: func(t *testing.T, resp *http.Response) {
				if resp.Close {
					t.Errorf("the client connection closes: want it kept, the body being chunked")
				}
			}},
		{name: "HTTP/1.0 client", request: "GET /text HTTP/1.0\r\nConnection: keep-alive\r\nAccept-Encoding: gzip", gzip: true, body: big,
			check: func(t *testing.T, resp *http.Response) {
				if !resp.Close || len(resp.TransferEncoding) != 0 || resp.ContentLength != -1 {
					t.Errorf("close %v, Transfer-Encoding %v, length %d: want the body delimited by the close",
						resp.Close, resp.TransferEncoding, resp.ContentLength)
				}
			}},
		{name: "HTTP/1.0 client, chunked", request: "GET /chunked HTTP/1.0\r\nAccept-Encoding: gzip", gzip: true, body: big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", vip)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			method, _, _ := strings.Cut(tt.request, " ")
			io.WriteString(c, tt.request+"\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				t.Fatal(err)
			}
			var body io.Reader = resp.Body
			if enc := resp.Header.Get("Content-Encoding"); (enc == "gzip") != tt.gzip {
				t.Fatalf("Content-Encoding %q; want gzip: %v", enc, tt.gzip)
			} else if tt.gzip {
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				body = zr
			}
			got, err := io.ReadAll(body)
			if err != nil {
				t.Fatalf("read the body: %v", err)
			}
			io.Copy(io.Discard, resp.Body) // the chunked framing's end, and trailers
			if string(got) != tt.body {
				t.Errorf("body of %d bytes, want the real server's %d", len(got), len(tt.body))
			}
			if tt.check != nil {
				tt.check(t, resp)
			}
			if resp.Close {
				return
			}
			// The connection is in step: the next request is answered.
			io.WriteString(c, "GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
			next, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("next request on the connection: %v", err)
			}
			if b, _ := io.ReadAll(next.Body); string(b) != small {
				t.Errorf("next request on the connection: %d %q", next.StatusCode, b)
			}
		})
	}
}

// TestCompressStreams: each piece the real server sends reaches the client
// compressed at once, not when the body ends (server-sent events).
func TestCompressStreams(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	backend := listenTCP(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+
			"d\r\ndata: first\n\n\r\n")
		<-release
		io.WriteString(c, "e\r\ndata: second\n\n\r\n0\r\n\r\n")
	})
	p := startTestServiceWith(t, config.ModeHTTP, func(vs *config.VirtualService) { vs.Compress = true }, backend)
	c, err := net.Dial("tcp", p.Services()[0].Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /events HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q, want gzip", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, len("data: first\n\n"))
	if _, err := io.ReadFull(zr, first); err != nil || string(first) != "data: first\n\n" {
		t.Fatalf("first event %q, %v: held back?", first, err)
	}
	close(release)
	rest, err := io.ReadAll(zr)
	if err != nil || string(rest) != "data: second\n\n" {
		t.Fatalf("second event %q, %v", rest, err)
	}
}

// TestCompressHTTP2: over HTTP/2 a response is compressed for a client that
// accepts gzip (length dropped, Vary and a weak ETag), streamed piece by
// piece, and left alone for one that does not; over HTTP/3 likewise.
func TestCompressHTTP2(t *testing.T) {
	big := textBody(8192)
	release := make(chan struct{})
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/text":
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("ETag", `"e1"`)
			w.Header().Set("Accept-Ranges", "bytes")
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			io.WriteString(w, big)
		case "/png":
			w.Header().Set("Content-Type", "image/png")
			io.WriteString(w, big)
		case "/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, "data: second\n\n")
		}
	})
	e := startH2(t, withH3(func(vs *config.VirtualService) { vs.Compress = true }), backend)
	c := e.client() // asks for no compression itself: Accept-Encoding is the test's
	get := func(path, accept string) (*http.Response, io.Reader) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.url+path, nil)
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.ProtoMajor < 2 {
			t.Fatalf("protocol %s", resp.Proto)
		}
		if resp.Header.Get("Content-Encoding") != "gzip" {
			return resp, resp.Body
		}
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, zr
	}

	resp, body := get("/text", "gzip")
	b, err := io.ReadAll(body)
	if resp.Header.Get("Content-Encoding") != "gzip" || err != nil || string(b) != big {
		t.Errorf("/text: Content-Encoding %q, %d bytes, %v; want gzip of the real server's %d", resp.Header.Get("Content-Encoding"), len(b), err, len(big))
	}
	if resp.ContentLength != -1 || resp.Header.Get("Vary") != "Accept-Encoding" || resp.Header.Get("Etag") != `W/"e1"` ||
		resp.Header.Get("Accept-Ranges") != "" {
		t.Errorf("/text: length %d, Vary %q, ETag %q, Accept-Ranges %q; want -1, Accept-Encoding, W/\"e1\", none",
			resp.ContentLength, resp.Header.Get("Vary"), resp.Header.Get("Etag"), resp.Header.Get("Accept-Ranges"))
	}
	for _, tc := range []struct{ path, accept string }{{"/text", ""}, {"/text", "gzip;q=0"}, {"/png", "gzip"}} {
		resp, body := get(tc.path, tc.accept)
		b, err := io.ReadAll(body)
		if resp.Header.Get("Content-Encoding") != "" || err != nil || string(b) != big {
			t.Errorf("%s with Accept-Encoding %q: Content-Encoding %q, %d bytes, %v; want the body as it was",
				tc.path, tc.accept, resp.Header.Get("Content-Encoding"), len(b), err)
		}
	}

	resp, body = get("/stream", "gzip")
	first := make([]byte, len("data: first\n\n"))
	if _, err := io.ReadFull(body, first); err != nil || string(first) != "data: first\n\n" {
		t.Fatalf("first event %q, %v: held back?", first, err)
	}
	close(release)
	rest, err := io.ReadAll(body)
	if resp.Header.Get("Content-Encoding") != "gzip" || err != nil || string(rest) != "data: second\n\n" {
		t.Errorf("stream: Content-Encoding %q, rest %q, %v", resp.Header.Get("Content-Encoding"), rest, err)
	}

	c = e.h3client(nil)
	resp, body = get("/text", "gzip")
	b, err = io.ReadAll(body)
	if resp.ProtoMajor != 3 || resp.Header.Get("Content-Encoding") != "gzip" || err != nil || string(b) != big {
		t.Errorf("/text over %s: Content-Encoding %q, %d bytes, %v; want gzip of the real server's %d over HTTP/3",
			resp.Proto, resp.Header.Get("Content-Encoding"), len(b), err, len(big))
	}
}

// TestCompressOff: without compress, a client that accepts gzip gets the
// response as the real server sent it.
func TestCompressOff(t *testing.T) {
	big := textBody(4096)
	backend := pathBackend(t, map[string]string{
		"/text": fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(big), big),
	})
	p := startTestService(t, config.ModeHTTP, backend)
	c, err := net.Dial("tcp", p.Services()[0].Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /text HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(b, []byte(big)) {
		t.Errorf("Content-Encoding %q, %d bytes; want the body as it was", resp.Header.Get("Content-Encoding"), len(b))
	}
}
