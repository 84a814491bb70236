package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Clients: curl and python3 as real external clients, raw TCP for exact
// bytes.

// needCurl skips the test when curl is not installed.
func needCurl(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not found in PATH: install curl to run this end-to-end test")
	}
}

// curlResult is what one curl run produced.
type curlResult struct {
	stdout, stderr string
	code           int // curl's exit code; -1 if it could not run
	elapsed        time.Duration
}

// curl runs curl with args (after -sS) and a 120s limit. It may be called
// from any goroutine.
func curl(t testing.TB, args ...string) curlResult {
	return curlIO(t, nil, nil, args...)
}

// curlIO runs curl with stdin and, if stdout is not nil, its output going
// there instead of into the result.
func curlIO(t testing.TB, stdin io.Reader, stdout io.Writer, args ...string) curlResult {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "curl", append([]string{"-sS"}, args...)...)
	var out, errb strings.Builder
	cmd.Stdin = stdin
	cmd.Stdout = &out
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.Stderr = &errb
	start := time.Now()
	err := cmd.Run()
	r := curlResult{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		r.code, r.stderr = -1, err.Error()
	}
	return r
}

// statusMarker follows the body in the output of curlStatus.
const statusMarker = "\n--status:"

// curlStatus runs one curl request and returns the HTTP status and body.
func curlStatus(t testing.TB, args ...string) (int, string) {
	t.Helper()
	status, body, err := curlStatusErr(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return status, body
}

// curlStatusErr is curlStatus for any goroutine.
func curlStatusErr(t testing.TB, args ...string) (int, string, error) {
	r := curl(t, append([]string{"-w", statusMarker + "%{http_code}"}, args...)...)
	if r.code != 0 {
		return 0, "", fmt.Errorf("curl %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	i := strings.LastIndex(r.stdout, statusMarker)
	if i < 0 {
		return 0, "", fmt.Errorf("curl output without status: %q", r.stdout)
	}
	status, _ := strconv.Atoi(r.stdout[i+len(statusMarker):])
	return status, r.stdout[:i], nil
}

// concurrentCurl runs n curl requests at once and returns their statuses and
// bodies in start order.
func concurrentCurl(t testing.TB, n int, args ...string) (statuses []int, bodies []string) {
	t.Helper()
	statuses, bodies = make([]int, n), make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], bodies[i], errs[i] = curlStatusErr(t, args...)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	return statuses, bodies
}

// python3WithWebsockets returns a python3 that can import websockets, or
// skips the test. The first python3 in PATH may be a separate installation
// (pyenv) without the Debian package, so /usr/bin/python3 is tried too.
func python3WithWebsockets(t testing.TB) string {
	t.Helper()
	var candidates []string
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	candidates = append(candidates, "/usr/bin/python3")
	for _, p := range candidates {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if exec.Command(p, "-c", "import websockets").Run() == nil {
			return p
		}
	}
	t.Skip("no python3 with the websockets library (tried PATH and /usr/bin/python3): apt-get install python3-websockets")
	return ""
}

// rawConn is a client connection for exact protocol bytes.
type rawConn struct {
	t  testing.TB
	c  *net.TCPConn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawConn{t: t, c: c.(*net.TCPConn), br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// response reads one response to a request with the given method.
func (r *rawConn) response(method string) *http.Response {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		r.t.Fatalf("read response to %s: %v", method, err)
	}
	return resp
}

// body reads a response's whole body.
func (r *rawConn) body(resp *http.Response) string {
	r.t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("read body: %v", err)
	}
	return string(b)
}

// expectClosed checks that the server closes the connection within d with
// no further bytes.
func (r *rawConn) expectClosed(d time.Duration) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(d))
	b, err := r.br.ReadByte()
	switch {
	case err == nil:
		rest, _ := r.br.Peek(r.br.Buffered())
		r.t.Errorf("connection not closed: got more bytes %q", append([]byte{b}, rest...))
	case isTimeout(err):
		r.t.Errorf("connection still open %s later", d)
	case errors.Is(err, io.EOF), isReset(err):
		// closed
	default:
		r.t.Errorf("reading for close: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}
