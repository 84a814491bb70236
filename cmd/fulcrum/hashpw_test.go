package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
)

func TestHashPassword(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantCode   int
		wantPw     string // the password the printed hash must accept
		wantCost   int
		wantStderr string
	}{
		{"line", []string{"-cost", "4"}, "s3cret\n", 0, "s3cret", 4, ""},
		{"no newline", []string{"-cost", "4"}, "s3cret", 0, "s3cret", 4, ""},
		{"first line only, CRLF", []string{"-cost", "4"}, "s3cret\r\nsecond line\n", 0, "s3cret", 4, ""},
		{"spaces kept", []string{"-cost", "4"}, " pass word \n", 0, " pass word ", 4, ""},
		{"72 bytes", []string{"-cost", "4"}, strings.Repeat("x", 72) + "\n", 0, strings.Repeat("x", 72), 4, ""},
		{"default cost", nil, "s3cret\n", 0, "s3cret", bcrypt.DefaultCost, ""},
		{"73 bytes", []string{"-cost", "4"}, strings.Repeat("x", 73) + "\n", 1, "", 0, "password is 73 bytes; bcrypt uses only the first 72"},
		{"empty input", nil, "", 1, "", 0, "standard input: empty"},
		{"empty line", nil, "\n", 1, "", 0, "standard input: empty password"},
		{"huge line", nil, strings.Repeat("x", 10000), 1, "", 0, "first line longer than 4096 bytes"},
		{"cost too low", []string{"-cost", "3"}, "s3cret\n", 2, "", 0, "-cost 3: must be between 4 and 31"},
		{"cost too high", []string{"-cost", "32"}, "s3cret\n", 2, "", 0, "-cost 32: must be between 4 and 31"},
		{"cost not a number", []string{"-cost", "ten"}, "s3cret\n", 2, "", 0, `invalid value "ten" for flag -cost`},
		{"stray argument", []string{"s3cret"}, "", 2, "", 0, `unexpected argument "s3cret"`},
		{"-h", []string{"-h"}, "", 0, "", 0, "Usage: fulcrum hash-password [-cost N]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cmdHashPassword(tt.args, strings.NewReader(tt.stdin), &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d (stdout %q, stderr %q)", code, tt.wantCode, stdout.String(), stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
			if tt.wantPw == "" {
				if stdout.Len() != 0 {
					t.Errorf("stdout %q, want nothing", stdout.String())
				}
				return
			}
			checkHash(t, stdout.String(), tt.wantPw, tt.wantCost)
			if stderr.Len() != 0 {
				t.Errorf("stderr %q, want nothing", stderr.String())
			}
		})
	}
}

// checkHash checks that out is one bcrypt hash of pw with cost and a
// newline, and nothing else.
func checkHash(t *testing.T, out, pw string, cost int) {
	t.Helper()
	hash, ok := strings.CutSuffix(out, "\n")
	if !ok || strings.ContainsAny(hash, "\r\n ") {
		t.Fatalf("output %q: want the hash and a newline only", out)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)); err != nil {
		t.Errorf("hash %q does not accept %q: %v", hash, pw, err)
	}
	if got, err := bcrypt.Cost([]byte(hash)); err != nil || got != cost {
		t.Errorf("cost %d (%v), want %d", got, err, cost)
	}
}

func TestHashPasswordTerminal(t *testing.T) {
	tests := []struct {
		name       string
		typed      []string // one line per prompt
		wantCode   int
		wantStderr string
	}{
		{"typed twice", []string{"s3cret-Pw", "s3cret-Pw"}, 0, "Password: \nAgain: \n"},
		{"mismatch", []string{"s3cret-Pw", "s3cret-Px"}, 1, "the passwords do not match"},
		{"empty", []string{""}, 1, "empty password"},
		{"too long", []string{strings.Repeat("s", 73)}, 1, "password is 73 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pty := openPTY(t)
			before := pty.termios(t)
			stderr := newPromptWriter()
			var stdout bytes.Buffer
			done := make(chan int)
			go func() { done <- cmdHashPassword([]string{"-cost", "4"}, pty.slave, &stdout, stderr) }()
			for _, line := range tt.typed {
				stderr.waitPrompt(t)
				pty.write(t, line+"\n")
			}
			code := <-done
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
			if code == 0 {
				checkHash(t, stdout.String(), tt.typed[0], 4)
			}
			if after := pty.termios(t); after.Lflag != before.Lflag || after.Iflag != before.Iflag {
				t.Fatalf("terminal not restored: lflag %#x iflag %#x, was %#x %#x", after.Lflag, after.Iflag, before.Lflag, before.Iflag)
			}
			if echoed := pty.echoed(t); strings.Contains(echoed, "s3cret") || strings.Contains(echoed, "sss") {
				t.Errorf("the password was echoed: %q", echoed)
			}
		})
	}
}

// An interrupt while the password is being typed restores the terminal.
func TestHashPasswordTerminalInterrupt(t *testing.T) {
	pty := openPTY(t)
	before := pty.termios(t)
	stderr := newPromptWriter()
	done := make(chan int)
	go func() { done <- cmdHashPassword([]string{"-cost", "4"}, pty.slave, io.Discard, stderr) }()
	stderr.waitPrompt(t) // the signal is caught from before the prompt
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr %q does not say interrupted", stderr.String())
	}
	if after := pty.termios(t); after.Lflag != before.Lflag {
		t.Errorf("terminal not restored: lflag %#x, was %#x", after.Lflag, before.Lflag)
	}
	pty.write(t, "\n") // ends the abandoned read
}

// testPTY is a pseudo-terminal: the command reads slave as its stdin, the
// test types on master.
type testPTY struct {
	master, slave *os.File
}

func openPTY(t *testing.T) *testPTY {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	var n int
	rc, err := m.SyscallConn() // not Fd(), which would make m blocking and ignore deadlines
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		if err = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); err == nil {
			n, err = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	})
	if err != nil {
		t.Skipf("cannot unlock the pseudo-terminal: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("cannot open the pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return &testPTY{master: m, slave: s}
}

func (p *testPTY) termios(t *testing.T) unix.Termios {
	t.Helper()
	var tio *unix.Termios
	var err error
	rc, _ := p.slave.SyscallConn()
	rc.Control(func(fd uintptr) { tio, err = unix.IoctlGetTermios(int(fd), unix.TCGETS) })
	if err != nil {
		t.Fatal(err)
	}
	return *tio
}

func (p *testPTY) write(t *testing.T, s string) {
	t.Helper()
	if _, err := p.master.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// echoed types a marker line, which the restored terminal echoes, and
// returns everything the terminal echoed up to it.
func (p *testPTY) echoed(t *testing.T) string {
	t.Helper()
	p.write(t, "MARKER\n")
	p.master.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []byte
	buf := make([]byte, 512)
	for !bytes.Contains(out, []byte("MARKER")) {
		n, err := p.master.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			t.Fatalf("reading the terminal's echo: %v (so far %q)", err, out)
		}
	}
	return string(out)
}

// promptWriter is a command's stderr that lets a test wait for each
// password prompt, which is written once echo is off.
type promptWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	prompts chan struct{}
}

func newPromptWriter() *promptWriter { return &promptWriter{prompts: make(chan struct{}, 10)} }

func (w *promptWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.HasSuffix(p, []byte(": ")) {
		w.prompts <- struct{}{}
	}
	return w.buf.Write(p)
}

func (w *promptWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *promptWriter) waitPrompt(t *testing.T) {
	t.Helper()
	select {
	case <-w.prompts:
	case <-time.After(10 * time.Second):
		t.Fatalf("no prompt; stderr so far %q", w.String())
	}
}
