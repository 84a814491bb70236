package proxy

import (
	"strings"
	"testing"
)

func TestHeadEnd(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int
	}{
		{"crlf", "GET / HTTP/1.1\r\nHost: a\r\n\r\nrest", 27},
		{"bare lf", "GET / HTTP/1.1\nHost: a\n\nrest", 24},
		{"incomplete", "GET / HTTP/1.1\r\nHost: a\r\n", -1},
		{"no line end", "GET / HTTP/1.1", -1},
		{"cr only at end", "GET / HTTP/1.1\r\nHost: a\r\n\r", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := headEnd([]byte(tt.in)); got != tt.want {
				t.Errorf("headEnd(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error
		check   func(t *testing.T, r *request)
	}{
		{name: "simple", in: "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
			check: func(t *testing.T, r *request) {
				eq(t, "method", string(r.method), "GET")
				eq(t, "target", string(r.target), "/a?b=c")
				eq(t, "host", string(r.host), "example.com")
				eqi(t, "minor", r.minor, 1)
				eqi(t, "headers", len(r.headers), 2)
				eqi(t, "contentLength", int(r.contentLength), -1)
			}},
		{name: "http/1.0 without host", in: "GET / HTTP/1.0\r\n\r\n",
			check: func(t *testing.T, r *request) { eqi(t, "minor", r.minor, 0) }},
		{name: "content-length", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n",
			check: func(t *testing.T, r *request) { eqi(t, "contentLength", int(r.contentLength), 42) }},
		{name: "repeated equal content-length", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
			check: func(t *testing.T, r *request) { eqi(t, "contentLength", int(r.contentLength), 7) }},
		{name: "chunked", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
			check: func(t *testing.T, r *request) {
				if !r.chunked {
					t.Error("chunked not seen")
				}
			}},
		{name: "connection tokens", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade, X-Secret\r\nUpgrade: websocket\r\nX-Secret: 1\r\nTE: trailers, deflate\r\n\r\n",
			check: func(t *testing.T, r *request) {
				if !r.connKeepAlive || !r.connUpgrade || r.connClose {
					t.Errorf("connection flags: keepalive=%v upgrade=%v close=%v", r.connKeepAlive, r.connUpgrade, r.connClose)
				}
				eq(t, "upgrade", string(r.upgrade), "websocket")
				if !r.dropField([]byte("x-secret")) || r.dropField([]byte("X-Other")) {
					t.Error("Connection-listed field not dropped, or another dropped")
				}
				if !r.trailersTE {
					t.Error("TE: trailers not seen")
				}
			}},
		{name: "expect", in: "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
			check: func(t *testing.T, r *request) {
				if !r.expectContinue {
					t.Error("expect not seen")
				}
			}},
		{name: "ows trimmed", in: "GET / HTTP/1.1\r\nHost: \t a \t\r\n\r\n",
			check: func(t *testing.T, r *request) { eq(t, "host", string(r.host), "a") }},
		{name: "bare lf", in: "GET / HTTP/1.1\nHost: a\n\n",
			check: func(t *testing.T, r *request) { eq(t, "host", string(r.host), "a") }},
		{name: "missing host", in: "GET / HTTP/1.1\r\n\r\n", wantErr: errNoHost},
		{name: "two hosts", in: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", wantErr: errNoHost},
		{name: "no target", in: "GET HTTP/1.1\r\nHost: a\r\n\r\n", wantErr: errBadLine},
		{name: "space in target", in: "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", wantErr: errBadLine},
		{name: "bad method", in: "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", wantErr: errBadLine},
		{name: "http/2 line", in: "PRI * HTTP/2.0\r\n\r\n", wantErr: errBadVersion},
		{name: "garbage version", in: "GET / HTXP/1.1\r\nHost: a\r\n\r\n", wantErr: errBadVersion},
		{name: "space before colon", in: "GET / HTTP/1.1\r\nHost : a\r\n\r\n", wantErr: errBadHeader},
		{name: "obs-fold", in: "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  2\r\n\r\n", wantErr: errBadHeader},
		{name: "no colon", in: "GET / HTTP/1.1\r\nHost a\r\n\r\n", wantErr: errBadHeader},
		{name: "nul in value", in: "GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", wantErr: errBadHeader},
		{name: "bad content-length", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", wantErr: errBadLength},
		{name: "negative content-length", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", wantErr: errBadLength},
		{name: "differing content-lengths", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", wantErr: errBadLength},
		{name: "huge content-length", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", wantErr: errBadLength},
		{name: "gzip transfer-encoding", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", wantErr: errBadEncoding},
		{name: "chunked twice", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", wantErr: errBadEncoding},
		{name: "smuggling", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", wantErr: errSmuggle},
		{name: "too many headers", in: "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: y\r\n", maxHeaders) + "\r\n", wantErr: errTooMany},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r request
			err := r.parse([]byte(tt.in))
			if err != tt.wantErr {
				t.Fatalf("parse: error %v, want %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, &r)
			}
		})
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantErr    error
		wantStatus int
		wantLen    int64
	}{
		{"ok", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", nil, 200, 5},
		{"no reason", "HTTP/1.1 204\r\n\r\n", nil, 204, -1},
		{"empty reason", "HTTP/1.1 404 \r\n\r\n", nil, 404, -1},
		{"1.0", "HTTP/1.0 200 OK\r\n\r\n", nil, 200, -1},
		{"100", "HTTP/1.1 100 Continue\r\n\r\n", nil, 100, -1},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", errBadLine, 0, 0},
		{"status too small", "HTTP/1.1 099 Odd\r\n\r\n", errBadLine, 0, 0},
		{"no space", "HTTP/1.1 200OK\r\n\r\n", errBadLine, 0, 0},
		{"bad version", "HTTP/2 200 OK\r\n\r\n", errBadLine, 0, 0},
		{"bad header", "HTTP/1.1 200 OK\r\nX Y: z\r\n\r\n", errBadHeader, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r response
			err := r.parse([]byte(tt.in))
			if err != tt.wantErr {
				t.Fatalf("parse: error %v, want %v", err, tt.wantErr)
			}
			if err == nil && (r.status != tt.wantStatus || r.contentLength != tt.wantLen) {
				t.Errorf("status %d length %d, want %d %d", r.status, r.contentLength, tt.wantStatus, tt.wantLen)
			}
		})
	}
}

func TestParseChunkSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0\r\n", 0, true},
		{"1a\r\n", 26, true},
		{"FF;name=value\r\n", 255, true},
		{"10 \r\n", 16, true},
		{"\r\n", 0, false},
		{"xyz\r\n", 0, false},
		{"-1\r\n", 0, false},
		{"1000000000000000\r\n", 0, false}, // 16 hex digits: could overflow
	}
	for _, tt := range tests {
		got, ok := parseChunkSize([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseChunkSize(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseRequestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	in := []byte("GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n")
	var r request
	r.parse(in) // grow the header slice once
	if n := testing.AllocsPerRun(100, func() { r.parse(in) }); n != 0 {
		t.Errorf("parse allocates %v times per request, want 0", n)
	}
}

// FuzzParseRequest: parsing untrusted bytes never panics, and what parses
// has consistent framing.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close, X\r\n\r\n",
		"GET / HTTP/1.0\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n := headEnd(b)
		if n < 0 {
			n = len(b)
		}
		var r request
		if err := r.parse(b[:n]); err != nil {
			return
		}
		if r.chunked && r.contentLength >= 0 {
			t.Fatalf("accepted both chunked and Content-Length: %q", b)
		}
		if len(r.method) == 0 || len(r.target) == 0 {
			t.Fatalf("accepted empty method or target: %q", b)
		}
		var resp response
		resp.parse(b[:n])
	})
}

func FuzzParseChunked(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("3;x=y\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		src, dst := newMemReader(b), &writer{conn: discardConn{}}
		fl := flow{src: src, dst: dst, readTimeout: 1, writeTimeout: 1}
		fl.copyChunked(false)
		fl.copyChunked(true)
	})
}

func eq(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func eqi(t *testing.T, what string, got, want int) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %d, want %d", what, got, want)
	}
}
