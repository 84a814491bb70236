package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// quicClientInstall is how to get quic-go's example HTTP/3 client, for the
// skip message and CI.
const quicClientInstall = "go install github.com/quic-go/quic-go/example/client@v0.65.0"

// TestHTTP3: with tls.http3 on, HTTP/3 clients (quic-go's example client,
// and ngtcp2's gtlsclient) reach the real servers through the binary over
// QUIC on the service's port, scheduled round robin, and the access log
// says HTTP/3.0; curl over TCP (HTTP/1.1 and HTTP/2) sees the Alt-Svc that
// announces it.
func TestHTTP3(t *testing.T) {
	quicClient := goBin("client")
	_, gtlsErr := exec.LookPath("gtlsclient")
	if quicClient == "" && gtlsErr != nil {
		t.Skip("no HTTP/3 client: " + quicClientInstall + ", or install ngtcp2-client (gtlsclient)")
	}
	ca := testpki.NewCA(t, "h3")
	cert, key := issue(t, ca, "localhost", false, "localhost", "127.0.0.1")
	backend := func(name string) *httpBackend {
		return newHTTPBackend(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Alt-Svc", `h2="backend.internal:443"`) // replaced by the proxy's
			fmt.Fprintf(w, "backend=%s proto=%s xfp=%s\n", name, r.Proto, r.Header.Get("X-Forwarded-Proto"))
		}))
	}
	a, b := backend("a"), backend("b")
	vip := freeAddr(t)
	_, port, _ := net.SplitHostPort(vip)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   tlsTable("http3 = true\n", [2]string{cert, key}),
		real:   []real{a.real(""), b.real("")},
	}}})
	url := "https://" + vip + "/h3"
	wantLogs, wantH3 := 0, 0

	// tally counts the answers of each real server in out, checking each
	// came as HTTP/1.1 with X-Forwarded-Proto https.
	tally := func(out string) map[string]int {
		got := map[string]int{}
		for _, line := range strings.Split(out, "\n") {
			_, answer, ok := strings.Cut(line, "backend=")
			if !ok {
				continue
			}
			name, rest, _ := strings.Cut(answer, " ")
			if rest != "proto=HTTP/1.1 xfp=https" {
				t.Errorf("the real server saw %q, want HTTP/1.1 with X-Forwarded-Proto https", answer)
			}
			got[name]++
		}
		return got
	}

	t.Run("quic-go client", func(t *testing.T) {
		if quicClient == "" {
			t.Skip("quic-go's example client not in $(go env GOPATH)/bin: " + quicClientInstall)
		}
		// Four requests on one QUIC connection.
		out, err := runTool(quicClient, "-insecure", url, url, url, url)
		if err != nil {
			t.Fatalf("client: %v\n%s", err, out)
		}
		if got := tally(out); got["a"] != 2 || got["b"] != 2 {
			t.Errorf("answers %v, want a and b twice each:\n%s", got, out)
		}
		if n := strings.Count(out, `Proto:"HTTP/3.0"`); n != 4 {
			t.Errorf("%d responses over HTTP/3, want 4:\n%s", n, out)
		}
		if want := `"Alt-Svc":[]string{"h3=\":` + port + `\"; ma=86400"}`; !strings.Contains(out, want) {
			t.Errorf("no %s in the responses:\n%s", want, out)
		}
		wantLogs += 4
		wantH3 += 4
	})

	t.Run("gtlsclient", func(t *testing.T) {
		if gtlsErr != nil {
			t.Skip("gtlsclient not in PATH: install ngtcp2-client")
		}
		// Two requests on one connection; each body is saved under its
		// path's name.
		dir := t.TempDir()
		host, _, _ := net.SplitHostPort(vip)
		out, err := runTool("gtlsclient", "--quiet", "--exit-on-all-streams-close", "--download="+dir,
			host, port, "https://"+vip+"/g1", "https://"+vip+"/g2")
		if err != nil {
			t.Fatalf("gtlsclient: %v\n%s", err, out)
		}
		var bodies strings.Builder
		for _, name := range []string{"g1", "g2"} {
			body, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatalf("gtlsclient saved no %s: %v\n%s", name, err, out)
			}
			bodies.Write(body)
		}
		if got := tally(bodies.String()); got["a"] != 1 || got["b"] != 1 {
			t.Errorf("answers %v, want a and b once each: %q", got, bodies.String())
		}
		wantLogs += 2
		wantH3 += 2
	})

	t.Run("Alt-Svc over TCP", func(t *testing.T) {
		needCurl(t)
		for _, proto := range []string{"--http1.1", "--http2"} {
			r := curl(t, "--cacert", ca.File, proto, "-D", "-", "-o", "/dev/null", url)
			if r.code != 0 {
				t.Fatalf("curl %s: exit %d: %s", proto, r.code, r.stderr)
			}
			var alt []string
			for _, line := range strings.Split(r.stdout, "\n") {
				if name, value, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && strings.EqualFold(name, "alt-svc") {
					alt = append(alt, strings.TrimSpace(value))
				}
			}
			if want := `h3=":` + port + `"; ma=86400`; len(alt) != 1 || alt[0] != want {
				t.Errorf("curl %s: Alt-Svc %q, want %q", proto, alt, want)
			}
			wantLogs++
		}
	})

	waitFor(t, 5*time.Second, "the access-log lines", func() bool { return len(f.accessLogs()) == wantLogs })
	h3 := 0
	for _, l := range f.accessLogs() {
		if l.num("status") != 200 {
			t.Errorf("access log line %v", l)
		}
		if l.str("proto") == "HTTP/3.0" {
			h3++
		}
	}
	if h3 != wantH3 {
		t.Errorf("%d access-log lines say HTTP/3.0, want %d", h3, wantH3)
	}
}

// TestHTTP3GracefulStop: SIGTERM lets an HTTP/3 request in flight finish
// (within global.grace), then fulcrum exits cleanly.
func TestHTTP3GracefulStop(t *testing.T) {
	quicClient := goBin("client")
	if quicClient == "" {
		t.Skip("quic-go's example client not in $(go env GOPATH)/bin: " + quicClientInstall)
	}
	ca := testpki.NewCA(t, "h3stop")
	cert, key := issue(t, ca, "localhost", false, "localhost", "127.0.0.1")
	started, release := make(chan struct{}, 1), make(chan struct{})
	slow := newHTTPBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		io.WriteString(w, "backend=slow finished\n")
	}))
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   tlsTable("http3 = true\n", [2]string{cert, key}),
		real:   []real{slow.real("")},
	}}})
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := runTool(quicClient, "-insecure", "https://"+vip+"/slow")
		done <- result{out, err}
	}()
	select {
	case <-started:
	case r := <-done:
		t.Fatalf("client ended before the request reached the real server: %v\n%s", r.err, r.out)
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the real server")
	}
	f.signal(syscall.SIGTERM)
	f.waitLog(5*time.Second, "the stop begins", func(e logEntry) bool { return strings.HasPrefix(e.str("msg"), "stopping") })
	if f.exited() {
		t.Fatal("fulcrum exited with an HTTP/3 request in flight")
	}
	close(release)
	r := <-done
	if r.err != nil || !strings.Contains(r.out, "backend=slow finished") {
		t.Errorf("the request in flight: %v\n%s", r.err, r.out)
	}
	if code := f.wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// runTool runs an external client with a 60s limit and returns its output,
// stdout and stderr together.
func runTool(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// goBin returns the path of a binary `go install` put in $(go env
// GOPATH)/bin, or "".
func goBin(name string) string {
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return ""
	}
	for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
		p := filepath.Join(dir, "bin", name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}
