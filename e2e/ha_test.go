package e2e

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The HA tests run a real pair: two fulcrum processes, each in its own
// network namespace, a client and two real servers, all on one bridge (in a
// "lan" namespace of its own), made by the test and deleted when it ends:
//
//	client 10.232.0.2-5   node1 10.232.0.11   node2 10.232.0.12
//	rs1 10.232.0.31:8080  rs2 10.232.0.32:8080   VIP 10.232.0.100:80
//
// Every namespace calls its interface eth0, as the [ha] sections say. The
// nodes advertise every 100ms, so Master_Down_Interval is 3 x 100ms +
// Skew_Time: about 361ms for the Backup at priority 100 (RFC 5798 §6.1).
// They need root, ip (iproute2) and the HA wiring of `fulcrum run`; until
// that wiring is in the binary they skip, saying so.

const (
	haNet      = "10.232.0."
	haVIP      = haNet + "100"
	haAdvert   = 100 * time.Millisecond
	haTick     = 20 * time.Millisecond // the client's request period
	haPassword = "change-me"           // of the admin user below
)

// haLab is the namespaces of one HA test.
type haLab struct {
	*netnsLab
	id    string
	ns    map[string]string // role (client, node1, ...) → namespace
	ports map[string]string // role → its veth's end on the bridge, in lan
	lan   string
}

var haAddrs = map[string]string{"node1": haNet + "11", "node2": haNet + "12", "rs1": haNet + "31", "rs2": haNet + "32"}

// haClientAddrs are the client's addresses: several source IPs, for
// source_ip persistence.
var haClientAddrs = []string{haNet + "2", haNet + "3", haNet + "4", haNet + "5"}

func newHALab(t *testing.T) *haLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip not found: install iproute2 to run this end-to-end test")
	}
	id := fmt.Sprintf("%d%03d", os.Getpid()%100000, rand.IntN(1000))
	lab := &haLab{netnsLab: &netnsLab{t: t}, id: id, ns: map[string]string{}, ports: map[string]string{}, lan: "fhl" + id}
	add := func(ns string) {
		lab.run("ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		lab.in(ns, "ip", "link", "set", "lo", "up")
	}
	add(lab.lan)
	// Snooping off: the VRRP group 224.0.0.18 and the neighbour
	// discovery multicast must reach every port.
	lab.in(lab.lan, "ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	lab.in(lab.lan, "ip", "link", "set", "br0", "up")
	for i, role := range []string{"client", "node1", "node2", "rs1", "rs2"} {
		ns := fmt.Sprintf("fh%d%s", i, id)
		add(ns)
		lab.ns[role] = ns
		port := fmt.Sprintf("fhp%d%s", i, id) // at most 15 bytes
		lab.ports[role] = port
		lab.run("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", lab.lan)
		lab.in(lab.lan, "ip", "link", "set", port, "master", "br0", "up")
		addrs := haClientAddrs
		if role != "client" {
			addrs = []string{haAddrs[role]}
		}
		for _, a := range addrs {
			lab.in(ns, "ip", "addr", "add", a+"/24", "dev", "eth0")
		}
		lab.in(ns, "ip", "link", "set", "eth0", "up")
	}
	return lab
}

// haConfig is one node's configuration: the web service on the VIP in
// front of rs1 and rs2, an [admin] table on the node's own address, and
// [ha] with ha's lines (priority, preempt, ...) after the common ones.
func haConfig(node, ha, persistence string) string {
	cfg := config{global: strings.Replace(defaultGlobal, `log_level = "info"`, `log_level = "debug"`, 1), // sync's batches are logged at debug
		services: []service{{
			listen: []string{haVIP + ":80"},
			opts:   "scheduler = \"round_robin\"\n" + persistence,
			real:   []real{{name: "rs1", address: haAddrs["rs1"] + ":8080"}, {name: "rs2", address: haAddrs["rs2"] + ":8080"}},
		}}}
	return cfg.String() + fmt.Sprintf(`
[admin]
listen = "%s:9080"
metrics_auth = false

[[admin.user]]
name = "admin"
password_hash = "$2a$10$NfeWewPVXxcLNko9c8K9Fu.nT5LoKsTq6V1giBA1lO0tf4FQy.vXK" # change-me

[ha]
interface = "eth0"
vrid = 51
advert_interval = "100ms"
floating_ips = ["%s/24"]
%s`, haAddrs[node], haVIP, ha)
}

// needHA skips the test unless `fulcrum check` accepts cfg: the [ha]
// section (or the key the test needs) is not wired yet.
func needHA(t *testing.T, what, cfg string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "probe.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(fulcrumBin, "check", "-c", path).CombinedOutput()
	if err != nil {
		t.Skipf("HA wiring not available yet: `fulcrum check` refuses %s: %s", what, strings.TrimSpace(string(out)))
	}
}

// haNode is one running fulcrum of the pair.
type haNode struct {
	*fulcrum
	lab  *haLab
	name string
}

// startNode runs fulcrum with cfg in the node's namespace.
func (lab *haLab) startNode(name, cfg string) *haNode {
	lab.t.Helper()
	path := filepath.Join(lab.t.TempDir(), name+".toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		lab.t.Fatal(err)
	}
	f := startProcessVia(lab.t, []string{"ip", "netns", "exec", lab.ns[name]}, "run", "-c", path)
	f.path = path
	n := &haNode{fulcrum: f, lab: lab, name: name}
	// The VRRP group logs its first transition (to Backup, or Master for
	// the address owner) at once; a binary without the wiring never does.
	deadline := time.Now().Add(10 * time.Second)
	for len(n.haStates()) == 0 {
		if f.exited() {
			if strings.Contains(f.stderr.String(), "cannot assign requested address") {
				lab.t.Skipf("HA wiring not available yet: %s cannot bind the floating IP before it holds it (IP_FREEBIND)", name)
			}
			lab.t.Fatalf("%s exited with code %d; stderr:\n%s", name, f.exit, tail(f.stderr.String(), 8<<10))
		}
		if time.Now().After(deadline) {
			if len(f.logsWhere(func(e logEntry) bool { return e.str("msg") == "fulcrum started" })) > 0 {
				lab.t.Skipf("HA wiring not available yet: %s started without a VRRP state in its log", name)
			}
			lab.t.Fatalf("%s: no VRRP state after 10s; stderr:\n%s", name, tail(f.stderr.String(), 8<<10))
		}
		time.Sleep(5 * time.Millisecond) // polling a condition
	}
	return n
}

// haStates returns the states the node went through, as logged ("HA
// state" by the wiring, "vrrp: state change" by the VRRP engine), in
// lower case: "backup", "master", "initialize", "fault".
func (n *haNode) haStates() []string {
	var states []string
	for _, e := range n.logs() {
		if msg := e.str("msg"); msg == "HA state" || msg == "vrrp: state change" {
			s := strings.ToLower(e.str("to"))
			if len(states) == 0 || states[len(states)-1] != s {
				states = append(states, s)
			}
		}
	}
	return states
}

// state is the node's last logged state.
func (n *haNode) state() string {
	s := n.haStates()
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

// await waits up to d for the node to be in state want, and returns when it
// saw it.
func (n *haNode) await(want string, d time.Duration) time.Time {
	n.lab.t.Helper()
	deadline := time.Now().Add(d)
	for n.state() != want {
		if time.Now().After(deadline) {
			n.lab.t.Fatalf("%s not %s after %s (states %v); stderr:\n%s", n.name, want, d, n.haStates(), tail(n.stderr.String(), 8<<10))
		}
		time.Sleep(2 * time.Millisecond) // polling a condition
	}
	return time.Now()
}

// stays checks that the node stays in state want for d.
func (n *haNode) stays(want string, d time.Duration) {
	n.lab.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if s := n.state(); s != want {
			n.lab.t.Fatalf("%s went %s (states %v), want it to stay %s", n.name, s, n.haStates(), want)
		}
	}
}

// listensIn reports whether a socket listens on addr (IPv4) in the node's
// namespace: /proc/PID/net/tcp is the table of the process's namespace.
func (n *haNode) listensIn(addr string) bool {
	host, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	want := procAddr(net.ParseIP(host).To4()) + fmt.Sprintf(":%04X", p)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", n.pid()))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			return true
		}
	}
	return false
}

// startRealServers runs rs1 and rs2: HTTP servers in their namespaces that
// answer with their name.
func (lab *haLab) startRealServers() {
	lab.t.Helper()
	for _, name := range []string{"rs1", "rs2"} {
		var l net.Listener
		lab.inNetns(lab.ns[name], func() {
			var err error
			if l, err = net.Listen("tcp", haAddrs[name]+":8080"); err != nil {
				lab.t.Fatal(err)
			}
		})
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name)
		})}
		go srv.Serve(l)
		lab.t.Cleanup(func() { srv.Close() })
	}
}

// haAnswer is one request of the client to the VIP.
type haAnswer struct {
	start, end time.Time
	server     string // the body: rs1 or rs2
	setCookie  string
	err        error
}

// get sends one GET / to the VIP from the client's namespace, from the
// source address src (if not empty) with the cookie (if not empty).
func (lab *haLab) get(src, cookie string, limit time.Duration) haAnswer {
	return haRequest(func() (c net.Conn, err error) {
		lab.inNetns(lab.ns["client"], func() {
			d := net.Dialer{Timeout: limit}
			if src != "" {
				d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
			}
			c, err = d.Dial("tcp", haVIP+":80")
		})
		return c, err
	}, cookie, limit)
}

// haRequest sends one GET / on a new connection made by dial. The whole
// exchange must end within limit: on a LAN it takes a millisecond, and a
// SYN to a node that lost the VIP is not answered.
func haRequest(dial func() (net.Conn, error), cookie string, limit time.Duration) haAnswer {
	a := haAnswer{start: time.Now()}
	c, err := dial()
	if err != nil {
		a.err, a.end = err, time.Now()
		return a
	}
	defer c.Close()
	c.SetDeadline(a.start.Add(limit))
	req := "GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n"
	if cookie != "" {
		req += "Cookie: " + cookie + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		a.err, a.end = err, time.Now()
		return a
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		a.err, a.end = err, time.Now()
		return a
	}
	body, err := io.ReadAll(resp.Body)
	a.end = time.Now()
	if err != nil || resp.StatusCode != http.StatusOK {
		a.err = fmt.Errorf("status %d, body %q, error %v", resp.StatusCode, body, err)
		return a
	}
	a.server = string(body)
	if set := resp.Header.Get("Set-Cookie"); set != "" {
		a.setCookie, _, _ = strings.Cut(set, ";")
	}
	return a
}

// haProber is the client sending a request to the VIP every 20ms, each on
// a new connection and without waiting for the previous one (a request to
// a VIP nobody holds yet takes its whole time limit), recording the
// answers.
type haProber struct {
	mu       sync.Mutex
	answers  []haAnswer
	stop     chan struct{}
	done     chan struct{}
	inflight sync.WaitGroup
}

func (lab *haLab) startProber() *haProber {
	p := &haProber{stop: make(chan struct{}), done: make(chan struct{})}
	ns := lab.ns["client"]
	dial := func() (c net.Conn, err error) {
		if nerr := haInNetns(ns, func() { c, err = net.DialTimeout("tcp", haVIP+":80", 200*time.Millisecond) }); nerr != nil {
			return nil, nerr
		}
		return c, err
	}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(haTick)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				p.inflight.Wait()
				return
			case <-tick.C:
			}
			p.inflight.Add(1)
			go func() {
				defer p.inflight.Done()
				p.record(haRequest(dial, "", 200*time.Millisecond))
			}()
		}
	}()
	lab.t.Cleanup(p.halt)
	return p
}

// haInNetns runs f on a thread switched into namespace ns, for the sockets
// f creates; safe from any goroutine.
func haInNetns(ns string, f func()) error {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer unix.Close(orig)
	target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	err = unix.Setns(target, unix.CLONE_NEWNET)
	unix.Close(target)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	f()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and dies with the goroutine.
		return fmt.Errorf("back to the test's namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return nil
}

func (p *haProber) record(a haAnswer) {
	p.mu.Lock()
	p.answers = append(p.answers, a)
	p.mu.Unlock()
}

func (p *haProber) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// waitAnswered waits until the last n requests started after since (in
// the order they started) were all answered: the service is back.
func (p *haProber) waitAnswered(t *testing.T, n int, since time.Time, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		p.mu.Lock()
		var after []haAnswer
		for _, a := range p.answers {
			if !a.start.Before(since) {
				after = append(after, a)
			}
		}
		p.mu.Unlock()
		slices.SortFunc(after, func(a, b haAnswer) int { return a.start.Compare(b.start) })
		ok := len(after) >= n
		for i := max(0, len(after)-n); i < len(after); i++ {
			ok = ok && after[i].err == nil
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var last haAnswer
			if len(after) > 0 {
				last = after[len(after)-1]
			}
			t.Fatalf("the client has not had %d answers in a row after %s (last: %v, %v)", n, d, last.server, last.err)
		}
		time.Sleep(haTick)
	}
}

// outage is the longest time without an answer from a second before
// since: the longest gap between the starts of two answered requests that
// follow each other, less the request period. With no failure it is about
// zero; its resolution is the period, 20ms.
func (p *haProber) outage(since time.Time) (time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ok []time.Time
	failed := 0
	for _, a := range p.answers {
		if a.start.Before(since.Add(-time.Second)) {
			continue
		}
		if a.err != nil {
			failed++
			continue
		}
		ok = append(ok, a.start)
	}
	slices.SortFunc(ok, func(a, b time.Time) int { return a.Compare(b) })
	var longest time.Duration
	for i := 1; i < len(ok); i++ {
		longest = max(longest, ok[i].Sub(ok[i-1])-haTick)
	}
	return longest, failed
}

// startPair starts node1 (priority 200) and node2 (priority 100) with the
// [ha] lines ha1 and ha2 and the real servers, and waits for node1 to be
// Master, node2 Backup and the client answered.
func (lab *haLab) startPair(ha1, ha2, persistence string) (n1, n2 *haNode) {
	lab.t.Helper()
	lab.startRealServers()
	// node1 first: with preempt = false a node2 that won the first
	// election would rightly keep the VIP.
	n1 = lab.startNode("node1", haConfig("node1", "priority = 200\n"+ha1, persistence))
	n1.await("master", 5*time.Second)
	n2 = lab.startNode("node2", haConfig("node2", "priority = 100\n"+ha2, persistence))
	n2.await("backup", 5*time.Second)
	return n1, n2
}

func haProbeConfig(t *testing.T) {
	t.Helper()
	needHA(t, "an [ha] section", haConfig("node1", "priority = 200\n", ""))
}

// TestHAFailover: the client sends a request every 20ms to the VIP. When
// the Master is killed (-9) the Backup answers after at most
// Master_Down_Interval plus the time to announce the VIP: 400ms. When the
// Master stops gracefully (SIGTERM: priority 0, RFC 5798 §6.4.3), the
// Backup takes over after its Skew_Time: 100ms.
func TestHAFailover(t *testing.T) {
	haProbeConfig(t)
	tests := []struct {
		name  string
		sig   syscall.Signal
		limit time.Duration
	}{
		{"kill -9", syscall.SIGKILL, 3*haAdvert + haAdvert}, // 3 x advert + skew
		{"SIGTERM", syscall.SIGTERM, haAdvert},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lab := newHALab(t)
			n1, n2 := lab.startPair("", "", "")
			p := lab.startProber()
			p.waitAnswered(t, 10, time.Now(), 5*time.Second)

			start := time.Now()
			n1.signal(tt.sig)
			n2.await("master", 3*time.Second)
			t.Logf("node2 master %s after node1's %s", time.Since(start), tt.name)
			p.waitAnswered(t, 10, start, 5*time.Second)
			p.halt()
			out, failed := p.outage(start)
			t.Logf("outage %s, %d requests failed", out, failed)
			if out > tt.limit {
				t.Errorf("outage %s after %s of the Master, want <= %s", out, tt.name, tt.limit)
			}
			if st := n2.state(); st != "master" {
				t.Errorf("node2 is %s", st)
			}
		})
	}
}

// TestHAPreempt: node1 (priority 200) dies and node2 takes over; when node1
// returns it takes the VIP back with preempt = true, and leaves node2
// Master with preempt = false (RFC 5798 §6.1 Preempt_Mode).
func TestHAPreempt(t *testing.T) {
	haProbeConfig(t)
	for _, preempt := range []bool{true, false} {
		t.Run(fmt.Sprintf("preempt=%v", preempt), func(t *testing.T) {
			lab := newHALab(t)
			line := fmt.Sprintf("preempt = %v\n", preempt)
			n1, n2 := lab.startPair(line, line, "")
			n1.signal(syscall.SIGKILL)
			n1.wait(5 * time.Second)
			n2.await("master", 3*time.Second)

			n1 = lab.startNode("node1", haConfig("node1", "priority = 200\n"+line, ""))
			if preempt {
				n1.await("master", 3*time.Second)
				n2.await("backup", time.Second)
			} else {
				n1.await("backup", 3*time.Second)
				n2.stays("master", 10*haAdvert)
				n1.stays("backup", haAdvert)
			}
			p := lab.startProber()
			p.waitAnswered(t, 5, time.Now(), 5*time.Second)
		})
	}
}

// TestHASplitBrainHeals: cut node1's link (its port on the bridge down):
// node2 no longer hears it and becomes Master too. When the link comes
// back, node2 hears the higher priority and steps down at node1's next
// advertisement: one Master, and only one, within an interval or two.
func TestHASplitBrainHeals(t *testing.T) {
	haProbeConfig(t)
	lab := newHALab(t)
	n1, n2 := lab.startPair("", "", "")
	lab.in(lab.lan, "ip", "link", "set", lab.ports["node1"], "down")
	n2.await("master", 3*time.Second)
	lab.in(lab.lan, "ip", "link", "set", lab.ports["node1"], "up")
	healed := time.Now()
	back := n2.await("backup", 3*time.Second)
	t.Logf("node2 Backup %s after the link came back", back.Sub(healed))
	if d := back.Sub(healed); d > 3*haAdvert {
		t.Errorf("two Masters for %s after the link healed, want <= %s", d, 3*haAdvert)
	}
	n1.stays("master", 10*haAdvert)
	n2.stays("backup", haAdvert)
	p := lab.startProber()
	p.waitAnswered(t, 5, time.Now(), 5*time.Second)
}

// TestHATrackPing: node1 pings rs1; when rs1 stops answering (its link
// down), node1 goes to FAULT and node2 takes over.
func TestHATrackPing(t *testing.T) {
	track := fmt.Sprintf("track_ping = [%q]\n", haAddrs["rs1"])
	needHA(t, "track_ping", haConfig("node1", "priority = 200\n"+track, ""))
	lab := newHALab(t)
	n1, n2 := lab.startPair(track, "", "")
	lab.in(lab.lan, "ip", "link", "set", lab.ports["rs1"], "down")
	n1.await("fault", 3*time.Second)
	n2.await("master", 3*time.Second)
	lab.in(lab.lan, "ip", "link", "set", lab.ports["rs1"], "up")
	n1.await("master", 5*time.Second) // preempts again once out of FAULT
	n2.await("backup", time.Second)
}

// haSync is the [ha] lines that make a node push to the other, as its
// admin user (whose password testdata/ha-sync-password holds).
func haSync(peer string) string {
	pw, err := filepath.Abs("testdata/ha-sync-password")
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf("sync_peer = %q\nsync_user = \"admin\"\nsync_password_file = %q\n", haAddrs[peer]+":9080", pw)
}

// TestHAPersistenceAcrossFailover: clients stuck to a real server stay with
// it on the Backup after a failover: cookie persistence by the cookie
// itself (both nodes share cookie_secret), source_ip persistence by the
// stick table the Master streams to the Backup (sync_peer).
func TestHAPersistenceAcrossFailover(t *testing.T) {
	needHA(t, "sync_peer", haConfig("node1", "priority = 200\n"+haSync("node2"), ""))
	tests := []struct {
		name, persistence string
	}{
		{"cookie", "\n[virtual_service.persistence]\nmethod = \"cookie\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n"},
		{"source_ip", "\n[virtual_service.persistence]\nmethod = \"source_ip\"\ntimeout = \"10m\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lab := newHALab(t)
			n1, n2 := lab.startPair(haSync("node2"), haSync("node1"), tt.persistence)
			// Four clients (source addresses, or cookies), spread over
			// both real servers by round robin.
			stuck := map[string]string{} // client → server
			cookies := map[string]string{}
			for _, src := range haClientAddrs {
				a := lab.get(src, "", time.Second)
				if a.err != nil {
					t.Fatalf("client %s: %v", src, a.err)
				}
				stuck[src], cookies[src] = a.server, a.setCookie
				if tt.name == "cookie" && a.setCookie == "" {
					t.Fatalf("client %s: no cookie from %s", src, a.server)
				}
			}
			servers := map[string]bool{}
			for _, s := range stuck {
				servers[s] = true
			}
			if len(servers) < 2 {
				t.Fatalf("the clients all went to %v: round robin should spread them", stuck)
			}
			// Let the stick table reach the Backup (streamed every
			// 100ms) before the Master dies.
			if tt.name == "source_ip" {
				waitFor(t, 10*time.Second, "node1 streams the 4 stick entries to node2", func() bool {
					applied := 0
					for _, e := range n1.logs() {
						if e.str("msg") == "sync: stick entries sent" {
							applied += e.num("applied")
						}
					}
					return applied >= len(haClientAddrs)
				})
			}
			n1.signal(syscall.SIGKILL)
			n2.await("master", 3*time.Second)
			deadline := time.Now().Add(5 * time.Second)
			// In the reverse order: a Backup that had no stick table
			// would deal the clients out by round robin as node1 did,
			// and could agree with it by chance in the same order.
			var lost []string
			for _, src := range slices.Backward(haClientAddrs) {
				var a haAnswer
				for a = lab.get(src, cookies[src], time.Second); a.err != nil && time.Now().Before(deadline); a = lab.get(src, cookies[src], time.Second) {
					time.Sleep(haTick) // until the client's ARP cache follows the VIP
				}
				if a.err != nil {
					t.Fatalf("client %s after the failover: %v", src, a.err)
				}
				if a.server != stuck[src] {
					lost = append(lost, fmt.Sprintf("client %s: %s after the failover, was stuck to %s", src, a.server, stuck[src]))
				}
			}
			for _, l := range lost {
				t.Error(l)
			}
		})
	}
}

// TestHAConfigPushed: a configuration reloaded on the Master (a new virtual
// service on the VIP, port 81) is pushed to the Backup, which runs it too
// (keeping its own [ha]).
func TestHAConfigPushed(t *testing.T) {
	needHA(t, "sync_peer", haConfig("node1", "priority = 200\n"+haSync("node2"), ""))
	lab := newHALab(t)
	n1, n2 := lab.startPair(haSync("node2"), haSync("node1"), "")
	if n2.listensIn(haVIP + ":81") {
		t.Fatal("node2 listens on :81 before the push")
	}
	cfg := haConfig("node1", "priority = 200\n"+haSync("node2"), "")
	cfg = strings.Replace(cfg, "\n[admin]", "\n[[virtual_service]]\nname = \"pushed\"\nlisten = [\""+haVIP+":81\"]\n"+
		"[virtual_service.health_check]\ntype = \"none\"\n[[virtual_service.real_server]]\nname = \"rs1\"\naddress = \""+haAddrs["rs1"]+":8080\"\n\n[admin]", 1)
	if err := os.WriteFile(n1.path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	n1.signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !n2.listensIn(haVIP + ":81") {
		if time.Now().After(deadline) {
			t.Fatalf("node2 does not run the pushed configuration after 10s; node1 stderr:\n%s\nnode2 stderr:\n%s",
				tail(n1.stderr.String(), 4<<10), tail(n2.stderr.String(), 4<<10))
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	// The Backup kept its own [ha]: still Backup, at priority 100, while
	// node1 stays Master.
	n2.stays("backup", 5*haAdvert)
	n1.stays("master", haAdvert)
}
