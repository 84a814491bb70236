package e2e

import (
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// TestNghttp2Clients drives the HTTP/2 front end with nghttp2's own clients
// (Debian's nghttp2-client): nghttp sends several requests as concurrent
// streams of one connection, and h2load sends 2000 requests over 4
// connections with up to 10 streams each. Every request succeeds and the
// real servers share them evenly.
func TestNghttp2Clients(t *testing.T) {
	for _, tool := range []string{"nghttp", "h2load"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: install Debian's nghttp2-client to run this end-to-end test", tool)
		}
	}
	ca := testpki.NewCA(t, "nghttp2")
	cert, key := issue(t, ca, "www.example.com", false, "www.example.com", "127.0.0.1")
	var mu sync.Mutex
	served := map[string]int{}
	backend := func(name string) *httpBackend {
		return newHTTPBackend(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			served[name]++
			mu.Unlock()
			fmt.Fprintf(w, "%s saw %s %s proto=%s", name, r.Method, r.URL.Path, r.Header.Get("X-Forwarded-Proto"))
		}))
	}
	a, b := backend("a"), backend("b")
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   tlsTable("", [2]string{cert, key}),
		real:   []real{a.real(""), b.real("")},
	}}})
	total := 0 // requests served, all of which the access log must show
	reset := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		got := served
		for _, n := range got {
			total += n
		}
		served = map[string]int{}
		return got
	}

	t.Run("nghttp", func(t *testing.T) {
		reset()
		// -n: no bodies printed; -s: statistics per stream, which show
		// the status of each; -v would print every frame.
		var urls []string
		for i := range 6 {
			urls = append(urls, "https://"+vip+"/n"+strconv.Itoa(i))
		}
		out, err := exec.Command("nghttp", append([]string{"-ns", "--no-verify-peer"}, urls...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("nghttp: %v\n%s", err, out)
		}
		// The statistics table has one row per stream:
		// "13  +2.70ms  +151us  2.54ms  200  25 /n0".
		rows := regexp.MustCompile(`(?m)^\s*\d+\s+\S+\s+\S+\s+\S+\s+200\s+\d+\s+/n\d$`).FindAllString(string(out), -1)
		if len(rows) != len(urls) {
			t.Errorf("nghttp: %d of %d streams answered 200:\n%s", len(rows), len(urls), out)
		}
		if got := reset(); got["a"] != 3 || got["b"] != 3 {
			t.Errorf("real servers served %v, want a and b 3 each", got)
		}
	})

	t.Run("h2load", func(t *testing.T) {
		reset()
		const n = 2000
		out, err := exec.Command("h2load", "-n", strconv.Itoa(n), "-c", "4", "-m", "10", "https://"+vip+"/load").CombinedOutput()
		if err != nil {
			t.Fatalf("h2load: %v\n%s", err, out)
		}
		// "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout"
		// "status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx"
		want := fmt.Sprintf("requests: %d total, %d started, %d done, %d succeeded, 0 failed, 0 errored, 0 timeout", n, n, n, n)
		if !strings.Contains(string(out), want) || !strings.Contains(string(out), fmt.Sprintf("status codes: %d 2xx", n)) {
			t.Errorf("h2load: want %q and all 2xx, got\n%s", want, out)
		}
		if !strings.Contains(string(out), "Application protocol: h2") {
			t.Errorf("h2load did not negotiate h2:\n%s", out)
		}
		if got := reset(); got["a"] != n/2 || got["b"] != n/2 {
			t.Errorf("real servers served %v, want a and b %d each", got, n/2)
		}
	})

	// Every request above is logged as HTTP/2 (the line is written once
	// the response has gone, so the last ones may trail h2load's exit).
	h2 := func() int {
		n := 0
		for _, e := range f.accessLogs() {
			if e.str("proto") == "HTTP/2.0" {
				n++
			}
		}
		return n
	}
	if total == 0 {
		t.Fatal("no request was served")
	}
	waitFor(t, 5*time.Second, fmt.Sprintf("%d HTTP/2.0 access log lines", total), func() bool { return h2() == total })
}
