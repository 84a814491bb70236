package e2e

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// TestHTTP2: over TLS, curl --http2 negotiates h2 (ALPN) and its requests,
// multiplexed on one connection, are scheduled across the real servers,
// which get HTTP/1.1 with X-Forwarded-Proto https; a request body goes
// through; the access log says HTTP/2.0. curl --http1.1 on the same address
// still speaks HTTP/1.1.
func TestHTTP2(t *testing.T) {
	needCurl(t)
	ca := testpki.NewCA(t, "h2")
	cert, key := issue(t, ca, "www.example.com", false, "www.example.com")
	backend := func(name string) *httpBackend {
		return newHTTPBackend(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s %s %q", name, r.Proto, r.Header.Get("X-Forwarded-Proto"), body)
		}))
	}
	a, b := backend("a"), backend("b")
	vip := freeAddr(t)
	_, port, _ := net.SplitHostPort(vip)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   tlsTable("", [2]string{cert, key}), // alpn left out: the default offers h2
		real:   []real{a.real(""), b.real("")},
	}}})
	base := []string{"--cacert", ca.File, "--resolve", "www.example.com:" + port + ":127.0.0.1"}
	url := "https://www.example.com:" + port + "/h2"

	// Four requests in one curl run share one connection (num_connects is
	// 1, then 0).
	r := curl(t, append(base, "--http2", "-w", "|%{http_version}|%{num_connects}\n", url, url, url, url)...)
	if r.code != 0 {
		t.Fatalf("curl --http2: exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	got := map[string]int{}
	for i, line := range lines {
		wantConnects := "0"
		if i == 0 {
			wantConnects = "1"
		}
		body, info, _ := strings.Cut(line, "|")
		if info != "2|"+wantConnects {
			t.Errorf("request %d: http_version|num_connects = %q, want 2|%s", i, info, wantConnects)
		}
		name, rest, _ := strings.Cut(body, " ")
		if rest != `HTTP/1.1 https ""` {
			t.Errorf("request %d: the real server saw %q, want an HTTP/1.1 request with X-Forwarded-Proto https", i, body)
		}
		got[name]++
	}
	if len(lines) != 4 || got["a"] != 2 || got["b"] != 2 {
		t.Errorf("answers %q, want a and b twice each", lines)
	}

	r = curl(t, append(base, "--http2", "-d", "hello", "-w", "|%{http_version}", url)...)
	if r.code != 0 || !strings.HasSuffix(r.stdout, ` HTTP/1.1 https "hello"|2`) {
		t.Errorf("POST over HTTP/2: exit %d, %q %s", r.code, r.stdout, r.stderr)
	}
	r = curl(t, append(base, "--http1.1", "-w", "|%{http_version}", url)...)
	if r.code != 0 || !strings.HasSuffix(r.stdout, "|1.1") {
		t.Errorf("curl --http1.1: exit %d, %q %s", r.code, r.stdout, r.stderr)
	}

	waitFor(t, 5*time.Second, "six access-log lines", func() bool { return len(f.accessLogs()) == 6 })
	protos := map[string]int{}
	for _, l := range f.accessLogs() {
		protos[l.str("proto")]++
		if l.num("status") != 200 || l.str("target") != "/h2" {
			t.Errorf("access log line %v", l)
		}
	}
	if protos["HTTP/2.0"] != 5 || protos["HTTP/1.1"] != 1 {
		t.Errorf("access log protocols %v, want 5 HTTP/2.0 and 1 HTTP/1.1", protos)
	}
}

// h2specInstall is how to get h2spec, for the skip message and CI.
const h2specInstall = "go install github.com/summerwind/h2spec/cmd/h2spec@latest"

// h2specKnown are h2spec cases known to fail, each with why. None is left:
// proxy/h2guard.go puts right the three that golang.org/x/net's server
// failed (6.5.3/1, 8.1.2.2/1 and /2). Any failure fails the test, and so
// does a known one that passes (take it off the list).
var h2specKnown = map[string]string{}

// TestH2Spec runs the h2spec conformance suite against fulcrum over TLS.
func TestH2Spec(t *testing.T) {
	bin := h2specPath()
	if bin == "" {
		t.Skip("h2spec not found in PATH or $(go env GOPATH)/bin: " + h2specInstall)
	}
	ca := testpki.NewCA(t, "h2spec")
	cert, key := issue(t, ca, "localhost", false, "localhost", "127.0.0.1")
	// h2spec needs a response body of at least 5 bytes for one of its cases.
	backend := newHTTPBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "hello from a\n")
	}))
	vip := freeAddr(t)
	host, port, _ := net.SplitHostPort(vip)
	startFulcrum(t, config{
		global:   "log_level = \"info\"\nlog_format = \"json\"\naccess_log = false\ngrace = \"5s\"\n",
		services: []service{{listen: []string{vip}, opts: tlsTable("", [2]string{cert, key}), real: []real{backend.real("")}}},
	})
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-t", "-k", "-h", host, "-p", port, "-j", report).CombinedOutput()
	results, perr := readJUnit(report)
	if perr != nil || len(results) == 0 {
		t.Fatalf("h2spec: %v, report: %v\n%s", err, perr, out)
	}
	failed := 0
	for _, res := range results {
		reason, known := h2specKnown[res.id]
		switch {
		case res.failed && known:
			t.Logf("h2spec %s (%s) fails because of x/net/http2: %s", res.id, res.desc, reason)
		case res.failed:
			failed++
			t.Errorf("h2spec %s failed: %s\n%s", res.id, res.desc, res.detail)
		case known:
			t.Errorf("h2spec %s (%s) passes now: remove it from h2specKnown", res.id, res.desc)
		}
	}
	if failed > 0 {
		t.Logf("h2spec output:\n%s", out)
	}
	t.Logf("h2spec: %d cases, %d failures besides the %d known ones of x/net/http2", len(results), failed, len(h2specKnown))
}

// h2specPath returns the h2spec binary in PATH or in $(go env GOPATH)/bin,
// or "".
func h2specPath() string {
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return ""
	}
	for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
		p := filepath.Join(dir, "bin", "h2spec")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// h2specResult is one h2spec case; id is its package and number, as
// h2spec's own arguments name it ("http2/6.5.3/1").
type h2specResult struct {
	id, desc, detail string
	failed           bool
}

// readJUnit reads h2spec's JUnit report (-j).
func readJUnit(path string) ([]h2specResult, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Suites []struct {
			Package string `xml:"package,attr"`
			Cases   []struct {
				Desc    string  `xml:"classname,attr"`
				Error   *string `xml:"error"`
				Failure *string `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	var results []h2specResult
	for _, s := range doc.Suites {
		for i, c := range s.Cases {
			r := h2specResult{id: fmt.Sprintf("%s/%d", s.Package, i+1), desc: c.Desc}
			for _, d := range []*string{c.Error, c.Failure} {
				if d != nil {
					r.failed, r.detail = true, *d
				}
			}
			results = append(results, r)
		}
	}
	return results, nil
}
