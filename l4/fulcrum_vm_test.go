package l4

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"
	"golang.org/x/crypto/bcrypt"
)

// The fulcrum binary end to end in the VM: `fulcrum run` programs IPVS from
// its configuration and drives it with its health checks and admin API, in
// the namespaces of netns_vm_test.go (the VM's own namespace is the
// director, where fulcrum runs). TestInVM builds ./cmd/fulcrum (static) into
// the VM at fulcrumGuestPath.

const fulcrumGuestPath = "/usr/bin/fulcrum"

// The binary's real servers listen on their own port, so that the test can
// stop and start them without disturbing the other tests' echo servers.
const (
	e2ePort     = 9090
	e2eNATPort  = 90 // the NAT VIP's port: translated to e2ePort
	e2eAdmin    = "127.0.0.1:9900"
	e2eUser     = "vmtest"
	e2ePassword = "s3cret-vm"
)

// e2eConfig is the configuration fulcrum runs: a dr service (wrr, weights 2
// and 3) and a nat service with port translation (rr), tcp checks every
// 100 ms that take a server down at the first failure; and a udp nat
// service on the nat service's VIP:port (rr) without health check: Fulcrum
// has no UDP probe (a datagram left unanswered proves nothing in general),
// so a udp service checks none, or a TCP port of its servers with
// health_check.port.
func e2eConfig(t *testing.T) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(e2ePassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	const check = `
  [virtual_service.health_check]
  type = "tcp"
  interval = "100ms"
  timeout = "100ms"
  rise = 1
  fall = 1
`
	return fmt.Sprintf(`[global]
log_level = "debug"
log_format = "json"

[admin]
listen = %q

[[admin.user]]
name = %q
password_hash = %q

[[virtual_service]]
name = "e2e-dr"
listen = "%s:%d"
mode = "dr"
protocol = "tcp"
scheduler = "weighted_round_robin"
%s
  [[virtual_service.real_server]]
  name = "rs1"
  address = "192.0.2.11:%d"
  weight = 2

  [[virtual_service.real_server]]
  name = "rs2"
  address = "192.0.2.12:%d"
  weight = 3

[[virtual_service]]
name = "e2e-nat"
listen = "%s:%d"
mode = "nat"
scheduler = "rr"
%s
  [[virtual_service.real_server]]
  name = "rs1"
  address = "192.0.2.11:%d"

  [[virtual_service.real_server]]
  name = "rs2"
  address = "192.0.2.12:%d"

[[virtual_service]]
name = "e2e-udp"
listen = "%s:%d"
mode = "nat"
protocol = "udp"
scheduler = "rr"
  [virtual_service.health_check]
  type = "none"

  [[virtual_service.real_server]]
  name = "rs1"
  address = "192.0.2.11:%d"

  [[virtual_service.real_server]]
  name = "rs2"
  address = "192.0.2.12:%d"
`, e2eAdmin, e2eUser, hash, drVIP, e2ePort, check, e2ePort, e2ePort, natVIP, e2eNATPort, check, e2ePort, e2ePort,
		natVIP, e2eNATPort, e2ePort, e2ePort)
}

// e2eUDPIPVS is what ipvsadm -Ln shows for e2eConfig's udp service.
func e2eUDPIPVS() map[string][]string {
	key := fmt.Sprintf("UDP %s:%d", natVIP, e2eNATPort)
	return map[string][]string{key: {key + " rr",
		fmt.Sprintf("-> 192.0.2.11:%d Masq 1", e2ePort), fmt.Sprintf("-> 192.0.2.12:%d Masq 1", e2ePort)}}
}

// e2eIPVS is what ipvsadm -Ln shows for e2eConfig with rs2 of each service
// at the given weights (-1: absent).
func e2eIPVS(drRS2, natRS2 int) map[string][]string {
	dr := []string{fmt.Sprintf("TCP %s:%d wrr", drVIP, e2ePort), fmt.Sprintf("-> 192.0.2.11:%d Route 2", e2ePort)}
	if drRS2 >= 0 {
		dr = append(dr, fmt.Sprintf("-> 192.0.2.12:%d Route %d", e2ePort, drRS2))
	}
	nat := []string{fmt.Sprintf("TCP %s:%d rr", natVIP, e2eNATPort), fmt.Sprintf("-> 192.0.2.11:%d Masq 1", e2ePort)}
	if natRS2 >= 0 {
		nat = append(nat, fmt.Sprintf("-> 192.0.2.12:%d Masq %d", e2ePort, natRS2))
	}
	return map[string][]string{dr[0][:strings.LastIndexByte(dr[0], ' ')]: dr, nat[0][:strings.LastIndexByte(nat[0], ' ')]: nat}
}

func TestVMFulcrumBinary(t *testing.T) {
	lab(t)
	if _, err := os.Stat(fulcrumGuestPath); err != nil {
		t.Fatalf("no fulcrum binary in the VM (TestInVM builds it into %s): %v", fulcrumGuestPath, err)
	}
	rs := map[string]*stoppable{}
	for i, name := range []string{"rs1", "rs2"} {
		rs[name] = &stoppable{netns: name, addr: fmt.Sprintf("192.0.2.1%d:%d", i+1, e2ePort)}
		rs[name].start(t)
		t.Cleanup(rs[name].stop)
		pcs, err := udpEcho(name, rs[name].addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for _, pc := range pcs {
				pc.Close()
			}
		})
	}
	cfg := filepath.Join(t.TempDir(), "fulcrum.toml")
	if err := os.WriteFile(cfg, []byte(e2eConfig(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Stopping fulcrum leaves its services in the kernel: remove them
		// for the other tests.
		exec.Command("ipvsadm", "-D", "-t", fmt.Sprintf("%s:%d", drVIP, e2ePort)).Run()
		exec.Command("ipvsadm", "-D", "-t", fmt.Sprintf("%s:%d", natVIP, e2eNATPort)).Run()
		exec.Command("ipvsadm", "-D", "-u", fmt.Sprintf("%s:%d", natVIP, e2eNATPort)).Run()
	})
	f := startFulcrumBin(t, cfg)
	api := &adminClient{t: t, base: "http://" + e2eAdmin}

	// The services and destinations as configured.
	waitIPVS(t, "the services as configured", e2eIPVS(3, 1))
	waitIPVS(t, "the udp service as configured", e2eUDPIPVS())
	api.waitUp(t, "e2e-dr", "e2e-nat")
	api.waitStatus(t, "modes dr and nat", func(st statusAnswer) bool {
		modes := map[string]string{}
		for _, s := range st.Services {
			modes[s.Name] = s.Mode
		}
		return modes["e2e-dr"] == "dr" && modes["e2e-nat"] == "nat"
	})

	// Both real servers take connections through each VIP, and see the
	// client's own address.
	drVIPPort := fmt.Sprintf("%s:%d", drVIP, e2ePort)
	natVIPPort := fmt.Sprintf("%s:%d", natVIP, e2eNATPort)
	spread := func(vip string, n int, clientIP string) map[string]int {
		t.Helper()
		seen := map[string]int{}
		for range n {
			c := dialAddr(t, vip)
			if clientIP != "" && c.seen != clientIP {
				t.Errorf("%s via %s saw the client as %s, want %s", c.server, vip, c.seen, clientIP)
			}
			seen[c.server]++
			c.Close()
		}
		return seen
	}
	if got := spread(natVIPPort, 4, "198.51.100.2"); got["rs1"] != 2 || got["rs2"] != 2 {
		t.Errorf("nat rr over 4 connections: %v, want 2 each", got)
	}
	if got := spread(drVIPPort, 5, "192.0.2.2"); got["rs1"] != 2 || got["rs2"] != 3 {
		t.Errorf("dr wrr 2:3 over 5 connections: %v, want rs1 2, rs2 3", got)
	}
	// The udp service, on the same VIP:port as the nat one: two flows
	// (source ports) reach both real servers, which see the client's
	// address, and their answers come back through the director from the
	// VIP (udpFlow takes no other).
	udpSeen := map[string]int{}
	udpFlows := map[*udpFlow]string{} // the real server of each
	for range 2 {
		f := dialUDP(t, natVIPPort)
		server, seen := f.ask(t)
		if seen != "198.51.100.2" {
			t.Errorf("%s via udp %s saw the client as %s, want 198.51.100.2", server, natVIPPort, seen)
		}
		udpSeen[server]++
		udpFlows[f] = server
	}
	if udpSeen["rs1"] != 1 || udpSeen["rs2"] != 1 {
		t.Errorf("udp rr over 2 flows: %v, want 1 each", udpSeen)
	}

	// rs2's listener stops: its check fails, IPVS gives it weight 0 (its
	// established connection carries on), no new connection reaches it.
	var onRS2 *conn
	for i := 0; onRS2 == nil && i < 4; i++ {
		if c := dialAddr(t, natVIPPort); c.server == "rs2" {
			onRS2 = c
		}
	}
	if onRS2 == nil {
		t.Fatal("no nat connection reached rs2")
	}
	rs["rs2"].stop()
	waitIPVS(t, "rs2 at weight 0 after its check failed", e2eIPVS(0, 0))
	api.waitServer(t, "e2e-nat", "rs2", func(s serverStatus) bool { return s.Health == "down" })
	for _, vip := range []string{natVIPPort, drVIPPort} {
		if got := spread(vip, 4, ""); got["rs1"] != 4 {
			t.Errorf("%s with rs2 down: %v, want all on rs1", vip, got)
		}
	}
	onRS2.echo(t)
	onRS2.Close()
	rs["rs2"].start(t)
	waitIPVS(t, "rs2 back at its weight after its check passed", e2eIPVS(3, 1))

	// Maintenance through the admin API removes rs2 from the nat service;
	// ready puts it back.
	api.setState(t, "e2e-nat", "rs2", "maintenance")
	waitIPVS(t, "rs2 removed from e2e-nat in maintenance", e2eIPVS(3, -1))
	if got := spread(natVIPPort, 3, ""); got["rs1"] != 3 {
		t.Errorf("nat with rs2 in maintenance: %v, want all on rs1", got)
	}
	api.setState(t, "e2e-nat", "rs2", "ready")
	waitIPVS(t, "rs2 back in e2e-nat when ready", e2eIPVS(3, 1))

	// A restart (SIGTERM, run again) leaves the kernel's table as it was at
	// every moment, and an open connection working.
	natConn, drConn := dialAddr(t, natVIPPort), dialAddr(t, drVIPPort)
	before := ipvsadm(t)
	sampler := sampleIPVS(t)
	if code := f.stop(); code != 0 {
		t.Fatalf("fulcrum exited with status %d on SIGTERM", code)
	}
	if after := ipvsadm(t); !equalIPVS(before, after) {
		t.Errorf("ipvsadm -Ln after fulcrum stopped:\n%v\nbefore:\n%v", after, before)
	}
	natConn.echo(t)
	startFulcrumBin(t, cfg) // stopped when the test ends
	api.waitUp(t, "e2e-dr", "e2e-nat")
	api.waitChecked(t, "e2e-dr", "e2e-nat") // any change of state is signalled by now
	seen, runs := sampler.stop()
	if len(seen) != 1 {
		t.Errorf("IPVS changed during the restart: %d different tables in %d reads:\n%s", len(seen), runs, strings.Join(seen, "\n\n"))
	} else {
		t.Logf("restart: IPVS the same in all %d reads", runs)
	}
	if after := ipvsadm(t); !equalIPVS(before, after) {
		t.Errorf("ipvsadm -Ln after the restart:\n%v\nbefore:\n%v", after, before)
	}
	natConn.echo(t)
	drConn.echo(t)
	for f, server := range udpFlows {
		if got, _ := f.ask(t); got != server {
			t.Errorf("a udp flow on %s went to %s after the restart", server, got)
		}
	}
	// A service or real server deleted and created again, between two of
	// the sampler's runs, would have lost its established connections
	// (the kernel's own count, not the 2 s estimator's).
	for _, vip := range []string{natVIPPort, drVIPPort} {
		if n := activeConns(t, vip); n < 1 {
			t.Errorf("%s: %d active connections after the restart, want the open one", vip, n)
		}
	}
	// The restarted fulcrum drives the kernel: a drain is weight 0.
	api.setState(t, "e2e-dr", "rs1", "drain")
	want := e2eIPVS(3, 1)
	want[fmt.Sprintf("TCP %s:%d", drVIP, e2ePort)][1] = fmt.Sprintf("-> 192.0.2.11:%d Route 0", e2ePort)
	waitIPVS(t, "rs1 of e2e-dr at weight 0 when draining, after the restart", want)
	drConn.echo(t)

	// fulcrum check refuses a dr real server on another port, with its
	// file and line.
	bad := filepath.Join(t.TempDir(), "bad.toml")
	badCfg := strings.Replace(e2eConfig(t), fmt.Sprintf("address = \"192.0.2.12:%d\"", e2ePort), "address = \"192.0.2.12:9091\"", 1)
	if err := os.WriteFile(bad, []byte(badCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	line := 1 + strings.Count(badCfg[:strings.Index(badCfg, "192.0.2.12:9091")], "\n")
	out, err := exec.Command(fulcrumGuestPath, "check", "-c", bad).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("fulcrum check of a dr real server on port 9091: %v, want exit status 1\n%s", err, out)
	}
	for _, want := range []string{fmt.Sprintf("%s:%d:", bad, line), "9091", fmt.Sprint(e2ePort)} {
		if !strings.Contains(string(out), want) {
			t.Errorf("fulcrum check: %q lacks %q", out, want)
		}
	}
}

// fulcrumProc is a running `fulcrum run`.
type fulcrumProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
	err    error
}

func startFulcrumBin(t *testing.T, cfg string) *fulcrumProc {
	t.Helper()
	f := &fulcrumProc{t: t, stderr: &lockedBuffer{}, done: make(chan struct{})}
	f.cmd = exec.Command(fulcrumGuestPath, "run", "-c", cfg)
	f.cmd.Stdout, f.cmd.Stderr = f.stderr, f.stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { f.err = f.cmd.Wait(); close(f.done) }()
	t.Cleanup(func() {
		f.stop()
		if t.Failed() {
			t.Logf("fulcrum's log (pid %d):\n%s", f.cmd.Process.Pid, f.stderr.String())
		}
	})
	return f
}

// stop sends SIGTERM and returns the exit status.
func (f *fulcrumProc) stop() int {
	select {
	case <-f.done:
	default:
		f.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-f.done:
		case <-time.After(10 * time.Second):
			f.cmd.Process.Kill()
			<-f.done
			f.t.Errorf("fulcrum did not exit within 10 s of SIGTERM")
		}
	}
	if ee := (*exec.ExitError)(nil); errors.As(f.err, &ee) {
		return ee.ExitCode()
	}
	if f.err != nil {
		return -1
	}
	return 0
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stoppable is an echo server in a real server's namespace that the test
// stops (its health check then fails) and starts again.
type stoppable struct {
	netns, addr string
	mu          sync.Mutex
	ln          net.Listener
}

func (s *stoppable) start(t *testing.T) {
	t.Helper()
	err := inNetns(s.netns, func() (err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", e2ePort))
		return err
	})
	if err != nil {
		t.Fatalf("echo server in %s: %v", s.netns, err)
	}
	go echoServer(s.ln, s.netns)
}

func (s *stoppable) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
}

// dialAddr is dial for a "VIP:PORT".
func dialAddr(t *testing.T, vipPort string) *conn {
	t.Helper()
	host, port, err := net.SplitHostPort(vipPort)
	if err != nil {
		t.Fatal(err)
	}
	var p int
	fmt.Sscan(port, &p)
	return dial(t, host, p)
}

// waitIPVS waits until ipvsadm -Ln shows want (other tests' services
// aside: want's keys only).
func waitIPVS(t *testing.T, what string, want map[string][]string) {
	t.Helper()
	start := time.Now()
	var got map[string][]string
	for time.Since(start) < 10*time.Second {
		got = ipvsadm(t)
		ok := true
		for k, lines := range want {
			sorted := slices.Clone(lines)
			slices.Sort(sorted[1:])
			ok = ok && slices.Equal(got[k], sorted)
		}
		if ok {
			t.Logf("%s: after %v", what, time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: ipvsadm -Ln shows\n%v\nwant\n%v", what, got, want)
}

func equalIPVS(a, b map[string][]string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// activeConns sums the ActiveConn column of a TCP service's real servers in
// ipvsadm -Ln.
func activeConns(t *testing.T, vipPort string) int {
	t.Helper()
	out, err := exec.Command("ipvsadm", "-Ln", "-t", vipPort).CombinedOutput()
	if err != nil {
		t.Fatalf("ipvsadm -Ln -t %s: %v\n%s", vipPort, err, out)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 6 && f[0] == "->" && f[1] != "RemoteAddress:Port" {
			var a int
			fmt.Sscan(f[4], &a)
			n += a
		}
	}
	return n
}

// ipvsSampler reads the kernel's IPVS table over and over (over netlink:
// ipvsadm, a process each time, is too slow under TCG to see a short
// change) and keeps each distinct one.
type ipvsSampler struct {
	quit chan struct{}
	done chan []string
	runs int
}

func sampleIPVS(t *testing.T) *ipvsSampler {
	t.Helper()
	c, err := ipvs.New()
	if err != nil {
		t.Fatal(err)
	}
	s := &ipvsSampler{quit: make(chan struct{}), done: make(chan []string, 1)}
	go func() {
		defer c.(io.Closer).Close()
		var seen []string
		for {
			if tbl, err := ipvsTable(c); err != nil {
				seen = append(seen, err.Error())
			} else if !slices.Contains(seen, tbl) {
				seen = append(seen, tbl)
			}
			s.runs++
			select {
			case <-s.quit:
				s.done <- seen
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return s
}

// ipvsTable returns every service and destination's settings, sorted (no
// counters).
func ipvsTable(c ipvs.Client) (string, error) {
	svcs, err := c.Services()
	if err != nil {
		return "", err
	}
	var lines []string
	for _, svc := range svcs {
		lines = append(lines, fmt.Sprintf("%+v", svc.Service))
		dests, err := c.Destinations(svc.Service)
		if err != nil {
			return "", err
		}
		for _, d := range dests {
			lines = append(lines, fmt.Sprintf("%+v -> %+v", svc.Service, d.Destination))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n"), nil
}

// stop returns the distinct tables seen and the number of reads.
func (s *ipvsSampler) stop() ([]string, int) {
	close(s.quit)
	seen := <-s.done
	return seen, s.runs
}

// adminClient calls fulcrum's admin API with Basic auth.
type adminClient struct {
	t    *testing.T
	base string
}

type serverStatus struct {
	Name   string `json:"name"`
	Health string `json:"health"`
	State  string `json:"state"`
	Check  struct {
		Time time.Time `json:"time"`
	} `json:"check"`
}

type serviceStatus struct {
	Name        string         `json:"name"`
	Mode        string         `json:"mode"`
	RealServers []serverStatus `json:"real_servers"`
}

type statusAnswer struct {
	Services []serviceStatus `json:"services"`
}

func (a *adminClient) do(method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.SetBasicAuth(e2eUser, e2ePassword)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (a *adminClient) setState(t *testing.T, svc, rs, state string) {
	t.Helper()
	code, b, err := a.do(http.MethodPut, "/api/v1/services/"+svc+"/servers/"+rs+"/state", map[string]string{"state": state})
	if err != nil || code != http.StatusOK {
		t.Fatalf("PUT %s/%s state %s: %d %v\n%s", svc, rs, state, code, err, b)
	}
}

// waitStatus polls GET /api/v1/status (the admin listener may not be up
// yet) until ok.
func (a *adminClient) waitStatus(t *testing.T, what string, ok func(statusAnswer) bool) {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < 10*time.Second {
		code, b, err := a.do(http.MethodGet, "/api/v1/status", nil)
		var st statusAnswer
		if err == nil && code == http.StatusOK && json.Unmarshal(b, &st) == nil && ok(st) {
			return
		}
		last = fmt.Sprintf("%d %v %s", code, err, b)
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("admin API: %s: never; last answer %s", what, last)
}

func (a *adminClient) servers(st statusAnswer, svcs ...string) (all []serverStatus, ok bool) {
	for _, name := range svcs {
		i := slices.IndexFunc(st.Services, func(s serviceStatus) bool { return s.Name == name })
		if i < 0 {
			return nil, false
		}
		all = append(all, st.Services[i].RealServers...)
	}
	return all, true
}

// waitUp waits until the services' real servers are all up and ready.
func (a *adminClient) waitUp(t *testing.T, svcs ...string) {
	t.Helper()
	a.waitStatus(t, fmt.Sprintf("%v up", svcs), func(st statusAnswer) bool {
		all, ok := a.servers(st, svcs...)
		return ok && !slices.ContainsFunc(all, func(s serverStatus) bool { return s.Health != "up" || s.State != "ready" })
	})
}

// waitChecked waits until every real server of the services has a check
// result newer than now.
func (a *adminClient) waitChecked(t *testing.T, svcs ...string) {
	t.Helper()
	since := time.Now()
	a.waitStatus(t, fmt.Sprintf("%v checked", svcs), func(st statusAnswer) bool {
		all, ok := a.servers(st, svcs...)
		return ok && !slices.ContainsFunc(all, func(s serverStatus) bool { return !s.Check.Time.After(since) })
	})
}

func (a *adminClient) waitServer(t *testing.T, svc, rs string, ok func(serverStatus) bool) {
	t.Helper()
	a.waitStatus(t, svc+"/"+rs, func(st statusAnswer) bool {
		all, found := a.servers(st, svc)
		i := slices.IndexFunc(all, func(s serverStatus) bool { return s.Name == rs })
		return found && i >= 0 && ok(all[i])
	})
}
