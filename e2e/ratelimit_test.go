package e2e

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// rateLimitTable is a [virtual_service.rate_limit] table, for the end of a
// service's opts.
func rateLimitTable(requests int, per string, burst int) string {
	return "\n[virtual_service.rate_limit]\nrequests = " + strconv.Itoa(requests) + "\nper = \"" + per + "\"\nburst = " + strconv.Itoa(burst) + "\n"
}

// curlCodes runs one curl with args for urls (one connection, kept alive)
// and returns each answer's "STATUS RETRY-AFTER".
func curlCodes(t *testing.T, args []string, urls ...string) []string {
	t.Helper()
	args = append(args, "-w", "%{http_code} %header{retry-after}\\n")
	for _, u := range urls {
		args = append(args, "-o", "/dev/null", u)
	}
	r := curl(t, args...)
	if r.code != 0 {
		t.Fatalf("curl %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
}

// TestRateLimit: with requests = 2 per second, a burst beyond the limit
// gets 429 with Retry-After, logged as such; the client gets through again
// once a token has come back.
func TestRateLimit(t *testing.T) {
	needCurl(t)
	backend := newHTTPBackend(t, "a", nil)
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   rateLimitTable(2, "1s", 0),
		real:   []real{backend.real("")},
	}}})
	url := "http://" + vip + "/limited"

	// Six requests on one connection, within a few milliseconds: the
	// first two take the bucket's tokens, the rest find none (a token
	// comes back every 500ms).
	codes := curlCodes(t, nil, url, url, url, url, url, url)
	if len(codes) != 6 || codes[0] != "200 " || codes[1] != "200 " {
		t.Fatalf("answers %q, want the first two 200", codes)
	}
	limited := 0
	for _, c := range codes[2:] {
		switch c {
		case "429 1":
			limited++
		case "200 ": // a token came back meanwhile: only on a very slow machine
		default:
			t.Errorf("answer %q, want 429 with Retry-After: 1", c)
		}
	}
	if limited == 0 {
		t.Fatalf("answers %q: no 429", codes)
	}
	if got := backend.reqs.Load(); got != int64(6-limited) {
		t.Errorf("the real server got %d requests, want %d (refused ones go no further)", got, 6-limited)
	}

	// Recovery: within the refill time the client gets through again.
	start := time.Now()
	waitFor(t, 3*time.Second, "a request let through again", func() bool {
		status, _ := curlStatus(t, url)
		return status == 200
	})
	t.Logf("let through again after %s", time.Since(start).Round(time.Millisecond))

	waitFor(t, 5*time.Second, "access-log lines of the 429s", func() bool {
		n := 0
		for _, l := range f.accessLogs() {
			if l.num("status") == 429 {
				n++
			}
		}
		return n >= limited
	})
	for _, l := range f.accessLogs() {
		if l.num("status") == 429 && (l.str("error") != "rate limit exceeded" || l.str("real_server") != "-") {
			t.Errorf("access log of a 429: %v", l)
		}
	}
}

// TestRateLimitHTTP2: HTTP/1.1 and HTTP/2 requests of one client count
// against the same bucket, and HTTP/2 gets 429 with Retry-After too.
func TestRateLimitHTTP2(t *testing.T) {
	needCurl(t)
	ca := testpki.NewCA(t, "ratelimit")
	cert, key := issue(t, ca, "www.example.com", false, "www.example.com")
	backend := newHTTPBackend(t, "a", nil)
	vip := freeAddr(t)
	_, port, _ := net.SplitHostPort(vip)
	// A token every 5s: the test's curl runs are well within one.
	startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   tlsTable("", [2]string{cert, key}) + rateLimitTable(2, "10s", 1),
		real:   []real{backend.real("")},
	}}})
	base := []string{"--cacert", ca.File, "--resolve", "www.example.com:" + port + ":127.0.0.1"}
	url := "https://www.example.com:" + port + "/shared"

	// Capacity 3 (requests + burst): two over HTTP/1.1, one over HTTP/2...
	if got := curlCodes(t, append(base, "--http1.1"), url, url); strings.Join(got, "|") != "200 |200 " {
		t.Fatalf("HTTP/1.1: %q, want two 200", got)
	}
	if got := curlCodes(t, append(base, "--http2"), url); strings.Join(got, "|") != "200 " {
		t.Fatalf("HTTP/2: %q, want 200", got)
	}
	// ... and the bucket is empty for both.
	for _, proto := range []string{"--http2", "--http1.1"} {
		got := curlCodes(t, append(base, proto), url)
		if len(got) != 1 || !strings.HasPrefix(got[0], "429 ") {
			t.Fatalf("%s: %q, want 429", proto, got)
		}
		if s, err := strconv.Atoi(strings.TrimPrefix(got[0], "429 ")); err != nil || s < 1 || s > 5 {
			t.Errorf("%s: Retry-After %q, want 1 to 5 seconds", proto, strings.TrimPrefix(got[0], "429 "))
		}
	}
	if got := backend.reqs.Load(); got != 3 {
		t.Errorf("the real server got %d requests, want 3", got)
	}
}
