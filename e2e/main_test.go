package e2e

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fulcrumBin is the binary built once by TestMain.
var fulcrumBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if runtime.GOOS != "linux" {
		// The tests read /proc (listening sockets, VmRSS).
		fmt.Println("e2e: skipped: the end-to-end tests run on Linux only")
		return 0
	}
	dir, err := os.MkdirTemp("", "fulcrum-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	fulcrumBin = filepath.Join(dir, "fulcrum")
	args := []string{"build", "-o", fulcrumBin}
	if raceBuild || os.Getenv("FULCRUM_E2E_RACE") == "1" {
		// The binary under the race detector: slower and bigger (memory
		// checks may then fail), but every data race it meets is reported
		// on its standard error and fails the test that started it.
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./cmd/fulcrum")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/fulcrum: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// repoRoot returns the directory of the module's go.mod.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a module")
	}
	return filepath.Dir(gomod), nil
}

// Configuration files, rendered from a small description so that each test
// shows only what it sets.

// config is one fulcrum configuration file.
type config struct {
	// global is the body of [global]; if empty, defaultGlobal.
	global   string
	services []service
	// extra is appended as it is (an [admin] table, say).
	extra string
}

// defaultGlobal logs JSON, so that tests can parse the log lines.
const defaultGlobal = `log_level = "info"
log_format = "json"
access_log = true
grace = "10s"
`

// service is one [[virtual_service]].
type service struct {
	name     string   // if empty, "web"
	listen   []string // VIP:port addresses
	opts     string   // further key = value lines of the table
	timeouts string   // lines of [virtual_service.timeouts], if any
	// health holds the lines of [virtual_service.health_check]. If empty,
	// type = "none": most tests count the connections real servers accept,
	// which health checks would disturb.
	health string
	real   []real
}

// real is one [[virtual_service.real_server]].
type real struct {
	name, address string
	opts          string // further key = value lines (weight, max_conns)
}

func (c config) String() string {
	var b strings.Builder
	b.WriteString("[global]\n")
	if c.global == "" {
		b.WriteString(defaultGlobal)
	} else {
		b.WriteString(c.global)
	}
	for _, s := range c.services {
		name := s.name
		if name == "" {
			name = "web"
		}
		fmt.Fprintf(&b, "\n[[virtual_service]]\nname = %q\n", name)
		// Without listen addresses the service is a pool (no listen key:
		// an empty list is refused).
		if len(s.listen) > 0 {
			b.WriteString("listen = [")
			for i, l := range s.listen {
				if i > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "%q", l)
			}
			b.WriteString("]\n")
		}
		b.WriteString(s.opts)
		if s.timeouts != "" {
			b.WriteString("\n[virtual_service.timeouts]\n")
			b.WriteString(s.timeouts)
		}
		b.WriteString("\n[virtual_service.health_check]\n")
		if s.health == "" {
			b.WriteString("type = \"none\"\n")
		} else {
			b.WriteString(s.health)
		}
		for _, r := range s.real {
			fmt.Fprintf(&b, "\n[[virtual_service.real_server]]\nname = %q\naddress = %q\n", r.name, r.address)
			b.WriteString(r.opts)
		}
	}
	b.WriteString(c.extra)
	return b.String()
}

// listens returns every listen address of the configuration.
func (c config) listens() []string {
	var l []string
	for _, s := range c.services {
		l = append(l, s.listen...)
	}
	return l
}

// freeAddr returns a loopback address with a port nothing listens on, for a
// VIP or for a real server that must refuse connections.
func freeAddr(t testing.TB) string {
	t.Helper()
	return freeAddrOn(t, "127.0.0.1")
}

func freeAddrOn(t testing.TB, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("find a free port on %s: %v", ip, err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A running fulcrum process.

type fulcrum struct {
	t      testing.TB
	path   string // configuration file (startFulcrum)
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{} // closed when the process has exited
	exit   int           // exit code, valid once done is closed
}

// startFulcrum writes cfg into a temporary directory, runs `fulcrum run -c`
// on it and waits until every listen address is listening.
func startFulcrum(t testing.TB, cfg config) *fulcrum {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fulcrum.toml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	f := startProcess(t, "run", "-c", path)
	f.path = path
	f.waitListening(cfg.listens()...)
	return f
}

// rewrite replaces the process's configuration file (for a reload).
func (f *fulcrum) rewrite(cfg config) {
	f.t.Helper()
	if err := os.WriteFile(f.path, []byte(cfg.String()), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// startProcess runs the fulcrum binary with args; it is stopped (SIGTERM,
// then SIGKILL) when the test ends if it is still running.
func startProcess(t testing.TB, args ...string) *fulcrum {
	t.Helper()
	return startProcessVia(t, nil, args...)
}

// startProcessVia is startProcess with the binary run through a command
// that execs it (e.g. "ip netns exec NAME", so that the pid is fulcrum's).
func startProcessVia(t testing.TB, via []string, args ...string) *fulcrum {
	t.Helper()
	f := &fulcrum{t: t, stdout: new(syncBuffer), stderr: new(syncBuffer), done: make(chan struct{})}
	f.cmd = exec.Command(fulcrumBin, args...)
	if len(via) > 0 {
		f.cmd = exec.Command(via[0], append(append(via[1:len(via):len(via)], fulcrumBin), args...)...)
	}
	f.cmd.Stdout = f.stdout
	f.cmd.Stderr = f.stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("start fulcrum: %v", err)
	}
	go func() {
		err := f.cmd.Wait()
		f.exit = 0
		if err != nil {
			f.exit = -1
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				f.exit = ee.ExitCode()
			}
		}
		close(f.done)
	}()
	t.Cleanup(func() {
		if !f.exited() {
			f.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-f.done:
			case <-time.After(5 * time.Second):
				f.cmd.Process.Kill()
				<-f.done
				t.Errorf("fulcrum did not exit within 5s of SIGTERM at the end of the test")
			}
		}
		if strings.Contains(f.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector reported a data race in fulcrum")
		}
		if t.Failed() {
			t.Logf("fulcrum %s stderr (last 8 KiB):\n%s", strings.Join(args, " "), tail(f.stderr.String(), 8<<10))
		}
	})
	return f
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (f *fulcrum) pid() int { return f.cmd.Process.Pid }

func (f *fulcrum) exited() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// waitListening waits until the fulcrum process has a listening socket on
// each address.
//
// It reads /proc rather than dialling: in tcp mode a probe connection would
// be proxied to a real server and counted by the scheduler. Checking that
// the socket is fulcrum's own also catches another program that took the
// port first.
func (f *fulcrum) waitListening(addrs ...string) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range addrs {
		for !f.ownsListener(a) {
			if f.exited() {
				f.t.Fatalf("fulcrum exited with code %d before listening on %s; stderr:\n%s", f.exit, a, f.stderr)
			}
			if time.Now().After(deadline) {
				f.t.Fatalf("fulcrum not listening on %s after 10s; stderr:\n%s", a, f.stderr)
			}
			time.Sleep(5 * time.Millisecond) // polling a condition
		}
	}
}

// ownsListener reports whether one of the process's descriptors is a socket
// listening on addr.
func (f *fulcrum) ownsListener(addr string) bool {
	inodes := listeningInodes(f.t, addr)
	if len(inodes) == 0 {
		return false
	}
	dir := fmt.Sprintf("/proc/%d/fd", f.pid())
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false // exited, or not yet started
	}
	for _, e := range ents {
		if link, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && inodes[link] {
			return true
		}
	}
	return false
}

// isListening reports whether any socket listens on addr (an IP:port) in
// this network namespace.
func isListening(t testing.TB, addr string) bool {
	return len(listeningInodes(t, addr)) > 0
}

// listeningInodes returns the sockets listening on addr, as the
// "socket:[inode]" names their descriptors link to.
func listeningInodes(t testing.TB, addr string) map[string]bool {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP(host)
	var p int
	fmt.Sscan(port, &p)
	file, want := "/proc/net/tcp6", procAddr(ip.To16())
	if ip4 := ip.To4(); ip4 != nil {
		file, want = "/proc/net/tcp", procAddr(ip4)
	}
	want += fmt.Sprintf(":%04X", p)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read %s: %v", file, err)
	}
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		fields := strings.Fields(line)
		if len(fields) > 9 && fields[1] == want && fields[3] == "0A" { // 0A: TCP_LISTEN
			inodes["socket:["+fields[9]+"]"] = true
		}
	}
	return inodes
}

// procAddr renders an IP as /proc/net/tcp does: each 32-bit word in host
// (little-endian) byte order.
func procAddr(ip net.IP) string {
	b := make([]byte, len(ip))
	for i := 0; i < len(ip); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = ip[i+3], ip[i+2], ip[i+1], ip[i]
	}
	return strings.ToUpper(hex.EncodeToString(b))
}

// signal sends sig to the process.
func (f *fulcrum) signal(sig os.Signal) {
	f.t.Helper()
	if err := f.cmd.Process.Signal(sig); err != nil {
		f.t.Fatalf("signal fulcrum: %v", err)
	}
}

// wait waits up to d for the process to exit and returns its exit code.
func (f *fulcrum) wait(d time.Duration) int {
	f.t.Helper()
	select {
	case <-f.done:
		return f.exit
	case <-time.After(d):
		f.t.Fatalf("fulcrum did not exit within %s; stderr:\n%s", d, tail(f.stderr.String(), 8<<10))
		return -1
	}
}

// stop sends SIGTERM and returns the exit code; after it every log line is
// in f.stderr.
func (f *fulcrum) stop() int {
	f.t.Helper()
	f.signal(syscall.SIGTERM)
	return f.wait(15 * time.Second)
}

// logEntry is one JSON log line.
type logEntry map[string]any

func (e logEntry) str(key string) string {
	s, _ := e[key].(string)
	return s
}

func (e logEntry) num(key string) int {
	n, _ := e[key].(float64)
	return int(n)
}

func (e logEntry) String() string {
	b, _ := json.Marshal(e)
	return string(b)
}

// logs returns the JSON log lines written so far; other lines are skipped.
func (f *fulcrum) logs() []logEntry {
	var out []logEntry
	for _, line := range strings.Split(f.stderr.String(), "\n") {
		var e logEntry
		if json.Unmarshal([]byte(line), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// logsWhere returns the log lines for which match is true.
func (f *fulcrum) logsWhere(match func(logEntry) bool) []logEntry {
	var out []logEntry
	for _, e := range f.logs() {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}

// accessLogs returns the access-log lines of HTTP requests.
func (f *fulcrum) accessLogs() []logEntry {
	return f.logsWhere(func(e logEntry) bool { return e.str("logger") == "access" && e.str("msg") == "request" })
}

// waitLog waits up to d for a log line matching match.
func (f *fulcrum) waitLog(d time.Duration, what string, match func(logEntry) bool) logEntry {
	f.t.Helper()
	deadline := time.Now().Add(d)
	for {
		if l := f.logsWhere(match); len(l) > 0 {
			return l[0]
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("no log line %s within %s; stderr:\n%s", what, d, tail(f.stderr.String(), 8<<10))
		}
		time.Sleep(5 * time.Millisecond) // polling a condition
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
