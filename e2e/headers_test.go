package e2e

import (
	"net"
	"slices"
	"strings"
	"testing"
)

// TestForwardedHeaders checks the X-Forwarded-* fields the real server
// receives, read from the exact request head it got.
func TestForwardedHeaders(t *testing.T) {
	needCurl(t)
	tests := []struct {
		name         string
		forwardedFor bool
		send         []string // extra curl -H fields
		wantXFF      []string // X-Forwarded-For field values at the real server
		wantOthers   bool     // X-Forwarded-Proto, -Host and -Port set by the proxy
	}{
		{
			name:         "appended to the client's",
			forwardedFor: true,
			send:         []string{"X-Forwarded-For: 1.2.3.4"},
			wantXFF:      []string{"1.2.3.4, 127.0.0.1"},
			wantOthers:   true,
		},
		{
			name:         "added when absent",
			forwardedFor: true,
			wantXFF:      []string{"127.0.0.1"},
			wantOthers:   true,
		},
		{
			name:         "client values of proto host and port replaced",
			forwardedFor: true,
			send:         []string{"X-Forwarded-Proto: https", "X-Forwarded-Host: evil.example", "X-Forwarded-Port: 1"},
			wantXFF:      []string{"127.0.0.1"},
			wantOthers:   true,
		},
		{
			name:         "forwarded_for off adds nothing",
			forwardedFor: false,
			wantXFF:      nil,
		},
		{
			name:         "forwarded_for off passes the client's unchanged",
			forwardedFor: false,
			send:         []string{"X-Forwarded-For: 1.2.3.4"},
			wantXFF:      []string{"1.2.3.4"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb := newRawBackend(t, func(string) string { return okResponse("ok") })
			vip := freeAddr(t)
			opts := "forwarded_for = false\n"
			if tt.forwardedFor {
				opts = "forwarded_for = true\n"
			}
			startFulcrum(t, config{services: []service{{
				listen: []string{vip}, opts: opts,
				real: []real{{name: "raw", address: rb.addr}},
			}}})
			args := []string{"http://" + vip + "/ff"}
			for _, h := range tt.send {
				args = append(args, "-H", h)
			}
			if status, body := curlStatus(t, args...); status != 200 || body != "ok" {
				t.Fatalf("got %d %q, want 200 \"ok\"", status, body)
			}
			heads := rb.received()
			if len(heads) != 1 {
				t.Fatalf("real server got %d requests, want 1", len(heads))
			}
			fs := fields(heads[0])
			if got := values(fs, "X-Forwarded-For"); !slices.Equal(got, tt.wantXFF) {
				t.Errorf("X-Forwarded-For = %q, want %q\nhead:\n%s", got, tt.wantXFF, heads[0])
			}
			_, port, _ := net.SplitHostPort(vip)
			others := map[string][]string{
				"X-Forwarded-Proto": {"http"},
				"X-Forwarded-Host":  {vip}, // curl's Host field
				"X-Forwarded-Port":  {port},
			}
			for name, want := range others {
				got := values(fs, name)
				if !tt.wantOthers {
					// Only what the client sent may be there.
					want = nil
					for _, h := range tt.send {
						if n, v, _ := strings.Cut(h, ": "); strings.EqualFold(n, name) {
							want = append(want, v)
						}
					}
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s = %q, want %q\nhead:\n%s", name, got, want, heads[0])
				}
			}
		})
	}
}

// TestHopByHopHeaders checks that hop-by-hop fields (RFC 9110 §7.6.1) do not
// cross the proxy in either direction while end-to-end fields do.
func TestHopByHopHeaders(t *testing.T) {
	needCurl(t)
	const backendResponse = "HTTP/1.1 200 OK\r\n" +
		"Content-Length: 2\r\n" +
		"Connection: X-Internal-Hop\r\n" +
		"X-Internal-Hop: secret\r\n" +
		"Keep-Alive: timeout=5, max=100\r\n" +
		"X-End-To-End: kept\r\n" +
		"\r\nok"
	rb := newRawBackend(t, func(string) string { return backendResponse })
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		real:   []real{{name: "raw", address: rb.addr}},
	}}})
	r := curl(t, "-D", "-", "-o", "/dev/null", "http://"+vip+"/hop",
		"-H", "Connection: keep-alive, X-Client-Hop",
		"-H", "X-Client-Hop: secret",
		"-H", "Keep-Alive: timeout=5",
		"-H", "TE: deflate",
		"-H", "Proxy-Connection: keep-alive",
		"-H", "X-Client-End: kept",
	)
	if r.code != 0 {
		t.Fatalf("curl: exit %d: %s", r.code, r.stderr)
	}

	t.Run("request", func(t *testing.T) {
		heads := rb.received()
		if len(heads) != 1 {
			t.Fatalf("real server got %d requests, want 1", len(heads))
		}
		fs := fields(heads[0])
		for _, name := range []string{"X-Client-Hop", "Keep-Alive", "TE", "Proxy-Connection"} {
			if v := values(fs, name); len(v) > 0 {
				t.Errorf("hop-by-hop %s reached the real server: %q", name, v)
			}
		}
		for _, v := range values(fs, "Connection") {
			if strings.Contains(strings.ToLower(v), "x-client-hop") {
				t.Errorf("client's Connection tokens reached the real server: Connection: %s", v)
			}
		}
		if v := values(fs, "X-Client-End"); !slices.Equal(v, []string{"kept"}) {
			t.Errorf("end-to-end X-Client-End = %q, want [kept]", v)
		}
		if t.Failed() {
			t.Logf("head at the real server:\n%s", heads[0])
		}
	})

	t.Run("response", func(t *testing.T) {
		fs := fields(r.stdout)
		for _, name := range []string{"X-Internal-Hop", "Keep-Alive"} {
			if v := values(fs, name); len(v) > 0 {
				t.Errorf("hop-by-hop %s reached the client: %q", name, v)
			}
		}
		for _, v := range values(fs, "Connection") {
			if strings.Contains(strings.ToLower(v), "x-internal-hop") {
				t.Errorf("real server's Connection tokens reached the client: Connection: %s", v)
			}
		}
		if v := values(fs, "X-End-To-End"); !slices.Equal(v, []string{"kept"}) {
			t.Errorf("end-to-end X-End-To-End = %q, want [kept]", v)
		}
		if t.Failed() {
			t.Logf("head at the client:\n%s", r.stdout)
		}
	})
}
