package e2e

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runCLI runs the fulcrum binary to completion.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(fulcrumBin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("fulcrum %s did not exit within 10s", strings.Join(args, " "))
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestCheck runs `fulcrum check` on good and bad files.
func TestCheck(t *testing.T) {
	// A problem line: PATH:LINE: key.path: message
	problem := regexp.MustCompile(`^(testdata/[a-z-]+\.toml):(\d+): ([a-z_]+(?:\.[a-z_]+)*): (.+)$`)
	tests := []struct {
		name string
		file string
		code int
		// want: for a bad file, the "LINE key.path" of every problem, in
		// order; nil for a good file.
		want []string
	}{
		{name: "good", file: "testdata/good.toml", code: 0},
		{
			name: "every problem reported",
			file: "testdata/bad.toml",
			code: 1,
			want: []string{
				"3 global.log_level",
				"4 global.grace",
				"8 virtual_service.listen",
				"9 virtual_service.scheduler",
				"10 virtual_service.retries",
				"13 virtual_service.timeouts.server",
				"17 virtual_service.real_server.address",
				"18 virtual_service.real_server.weight",
			},
		},
		{
			name: "syntax error",
			file: "testdata/bad-syntax.toml",
			code: 1,
			want: []string{"6 syntax"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, "check", "-c", tt.file)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			if tt.want == nil {
				if want := tt.file + ": OK\n"; stdout != want {
					t.Errorf("stdout %q, want %q", stdout, want)
				}
				return
			}
			var got []string
			for _, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
				m := problem.FindStringSubmatch(line)
				if m == nil || m[1] != tt.file {
					t.Errorf("problem line %q is not %q", line, tt.file+":LINE: key.path: message")
					continue
				}
				got = append(got, m[2]+" "+m[3])
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems at\n%s\nwant\n%s\nstdout:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"), stdout)
			}
		})
	}
}

// TestCheckMissingFile: a file that cannot be read is an error naming it.
func TestCheckMissingFile(t *testing.T) {
	stdout, stderr, code := runCLI(t, "check", "-c", "testdata/no-such-file.toml")
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(stdout+stderr, "testdata/no-such-file.toml") {
		t.Errorf("output does not name the file: stdout %q stderr %q", stdout, stderr)
	}
}

// TestRunBadConfig: run refuses a bad file, reporting its problems, and
// does not start.
func TestRunBadConfig(t *testing.T) {
	stdout, stderr, code := runCLI(t, "run", "-c", "testdata/bad.toml")
	if code == 0 {
		t.Errorf("exit code 0, want non-zero")
	}
	if !strings.Contains(stdout+stderr, "testdata/bad.toml:3: global.log_level:") {
		t.Errorf("problems not reported: stdout %q stderr %q", stdout, stderr)
	}
}

// TestUsage runs the help and version commands, and bad command lines.
func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		ok   bool   // exit 0
		want string // in stdout or stderr
	}{
		{[]string{"-h"}, true, "fulcrum run -c PATH"},
		{[]string{"run", "-h"}, true, "-c"},
		{[]string{"check", "-h"}, true, "-c"},
		{[]string{"demo", "-h"}, true, "demo"},
		{[]string{"version", "-h"}, true, "version"},
		{[]string{"version"}, true, "fulcrum "},
		{nil, false, "Usage"},
		{[]string{"frobnicate"}, false, "frobnicate"},
		{[]string{"check"}, false, "-c"},
		{[]string{"run"}, false, "-c"},
		{[]string{"run", "-c", "testdata/good.toml", "extra"}, false, "extra"},
		{[]string{"check", "-no-such-flag"}, false, "no-such-flag"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			stdout, stderr, code := runCLI(t, tt.args...)
			if (code == 0) != tt.ok {
				t.Errorf("exit code %d, want success %v", code, tt.ok)
			}
			if !strings.Contains(stdout+stderr, tt.want) {
				t.Errorf("output does not contain %q: stdout %q stderr %q", tt.want, stdout, stderr)
			}
		})
	}
}

// TestDemo runs `fulcrum demo` and asks its virtual service three times:
// three different demo real servers answer.
func TestDemo(t *testing.T) {
	needCurl(t)
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.1:8443", "127.0.0.1:9080", "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("fulcrum demo needs %s, which is busy: %v", addr, err)
		}
		l.Close()
	}
	f := startProcess(t, "demo")
	f.waitListening("127.0.0.1:8080", "127.0.0.1:8443", "127.0.0.1:9080")

	line := regexp.MustCompile(`^(demo[123]): Fulcrum demo real server at 127\.0\.0\.1:(900[123]) \(client 127\.0\.0\.1, GET /x\)$`)
	seen := map[string]bool{}
	for i := range 3 {
		status, body := curlStatus(t, "http://127.0.0.1:8080/x")
		m := line.FindStringSubmatch(strings.TrimSuffix(body, "\n"))
		if status != 200 || m == nil {
			t.Fatalf("request %d: %d %q, want 200 and a demo real server's line", i, status, body)
		}
		if n, _ := strconv.Atoi(m[1][4:]); fmt.Sprint(9000+n) != m[2] {
			t.Errorf("%s claims address port %s", m[1], m[2])
		}
		seen[m[1]] = true
	}
	if len(seen) != 3 {
		t.Errorf("answered by %v, want three different demo real servers", seen)
	}
	// The same farm over HTTPS, with the certificate made at start.
	if r := curl(t, "-k", "https://127.0.0.1:8443/x"); r.code != 0 || !line.MatchString(strings.TrimSuffix(r.stdout, "\n")) {
		t.Errorf("demo over HTTPS: exit %d, %q %s", r.code, r.stdout, r.stderr)
	}
	if code := f.stop(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}
