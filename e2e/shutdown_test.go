package e2e

import (
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGracefulStop sends SIGTERM or SIGINT while a slow request is in
// flight: the request completes, idle keep-alive connections are closed at
// once, new connections are refused, and the process exits 0.
func TestGracefulStop(t *testing.T) {
	needCurl(t)
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			slow := newSlowBackend(t, time.Second)
			vip := freeAddr(t)
			f := startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{slow.real("")}}}})

			// An idle keep-alive client: one request answered, then
			// nothing.
			idle := dialRaw(t, vip)
			idle.send("GET /fast HTTP/1.1\r\nHost: fulcrum\r\n\r\n")
			if resp := idle.response("GET"); resp.StatusCode != 200 || resp.Close {
				t.Fatalf("idle client's request: %d, close %v; want 200 keep-alive", resp.StatusCode, resp.Close)
			} else {
				idle.body(resp)
			}

			inflight := make(chan curlResult, 1)
			go func() {
				inflight <- curl(t, "-D", "/dev/stderr", "http://"+vip+"/slow")
			}()
			<-slow.entered // the slow request is at the real server

			stopped := time.Now()
			f.signal(sig)

			// Closed at once, not after the in-flight request.
			idle.expectClosed(500 * time.Millisecond)
			if d := time.Since(stopped); d > 500*time.Millisecond {
				t.Errorf("idle keep-alive connection closed %s after the signal, want at once", d)
			}
			// The listener was closed before the idle connections.
			if c, err := net.DialTimeout("tcp", vip, time.Second); err == nil {
				c.Close()
				t.Errorf("new connection accepted after %s", sig)
			}

			r := <-inflight
			if r.code != 0 || r.stdout != "done" || !strings.HasPrefix(r.stderr, "HTTP/1.1 200 ") {
				t.Errorf("in-flight request: curl exit %d, body %q, head:\n%s\nwant 200 \"done\"", r.code, r.stdout, r.stderr)
			}
			// A stopping proxy tells the client the connection ends
			// (RFC 9112 §9.6).
			if !strings.Contains(strings.ToLower(r.stderr), "\nconnection: close\r\n") {
				t.Errorf("in-flight response during shutdown without Connection: close; head:\n%s", r.stderr)
			}
			if code := f.wait(10 * time.Second); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
		})
	}
}

// TestGraceExpires: a request still running when global.grace ends is cut,
// and the process still exits 0, soon after the grace period, even though
// the real server has not answered (timeouts.server is the default 60s).
func TestGraceExpires(t *testing.T) {
	needCurl(t)
	slow := newSlowBackend(t, 30*time.Second)
	vip := freeAddr(t)
	f := startFulcrum(t, config{
		global:   "log_format = \"json\"\ngrace = \"300ms\"\n",
		services: []service{{listen: []string{vip}, real: []real{slow.real("")}}},
	})
	inflight := make(chan curlResult, 1)
	go func() {
		inflight <- curl(t, "http://"+vip+"/slow")
	}()
	<-slow.entered
	start := time.Now()
	f.signal(syscall.SIGTERM)
	code := f.wait(5 * time.Second)
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("exited %s after SIGTERM, want just after grace 300ms", d)
	}
	r := <-inflight
	if r.code == 0 {
		t.Errorf("in-flight request longer than grace completed: %q", r.stdout)
	}
}

// TestStopIdle: with nothing in flight, SIGTERM stops at once.
func TestStopIdle(t *testing.T) {
	b := newHTTPBackend(t, "web1", http.NotFoundHandler())
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real("")}}}})
	start := time.Now()
	if code := f.stop(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("idle fulcrum took %s to stop", d)
	}
	if got := f.logsWhere(func(e logEntry) bool { return e.str("msg") == "fulcrum stopped" }); len(got) != 1 {
		t.Errorf("no \"fulcrum stopped\" log line; stderr:\n%s", f.stderr)
	}
}
