package l4

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Real traffic through IPVS inside the VM. The VM's own network namespace
// is the director; network namespaces made here are the client and two
// real servers, each real server running an echo server that first says its
// name and the client address it sees (and a UDP one: udp_vm_test.go):
//
//	client ns                    director (VM's ns)                 rs1, rs2 ns
//	c0 198.51.100.2/24 ──veth── dc0 198.51.100.1/24
//	                                + 198.51.100.10 (NAT VIP)
//	c1 192.0.2.2/24 ─────veth── br0 192.0.2.1/24 ─────veth── eth0 192.0.2.11/24, .12/24
//	                                + 192.0.2.100 (DR VIP)          lo: 192.0.2.100/32 (DR)
//	                                + 192.0.2.101 (TUN VIP)         tunl0: 192.0.2.101/32 (TUN)
//	  2001:db8:2::2/64              2001:db8:2::1/64                 2001:db8:2::11/64, ::12/64
//	                                + 2001:db8:2::100 (DR VIP, v6)  lo: 2001:db8:2::100/128 (DR)
//
// NAT: the client reaches the VIP on its own network; the real servers'
// default route is the director, which rewrites the replies back. DR and
// TUN: the client is on the real servers' link (192.0.2.0/24), so their
// replies, sent from the VIP, go straight to it without the director.

const (
	natVIP = "198.51.100.10"
	drVIP  = "192.0.2.100"
	tunVIP = "192.0.2.101"
	drVIP6 = "2001:db8:2::100"
	rsPort = 8080
)

var (
	labOnce sync.Once
	labErr  error
)

// lab builds the namespaces and starts the echo servers, once per VM.
func lab(t *testing.T) {
	t.Helper()
	needVM(t)
	labOnce.Do(func() { labErr = buildLab() })
	if labErr != nil {
		t.Fatal(labErr)
	}
}

func buildLab() error {
	cmds := []string{
		"sysctl -qw net.ipv4.ip_forward=1",
		"ip netns add client",
		"ip link add c0 netns client type veth peer name dc0",
		"ip link add c1 netns client type veth peer name vc1",
		"ip addr add 198.51.100.1/24 dev dc0",
		"ip addr add " + natVIP + "/32 dev dc0",
		"ip link set dc0 up",
		"ip link add br0 type bridge",
		"ip addr add 192.0.2.1/24 dev br0",
		"ip addr add " + drVIP + "/32 dev br0",
		"ip addr add " + tunVIP + "/32 dev br0",
		// nodad: usable at once, without duplicate address detection's
		// second.
		"ip addr add 2001:db8:2::1/64 dev br0 nodad",
		"ip addr add " + drVIP6 + "/128 dev br0 nodad",
		"ip link set br0 up",
		"ip link set vc1 master br0 up",
		"ip -n client addr add 198.51.100.2/24 dev c0",
		"ip -n client addr add 192.0.2.2/24 dev c1",
		"ip -n client addr add 2001:db8:2::2/64 dev c1 nodad",
		"ip -n client link set lo up",
		"ip -n client link set c0 up",
		"ip -n client link set c1 up",
	}
	for i, rs := range []string{"rs1", "rs2"} {
		addr := fmt.Sprintf("192.0.2.1%d", i+1)
		cmds = append(cmds,
			"ip netns add "+rs,
			"ip link add eth0 netns "+rs+" type veth peer name v"+rs,
			"ip link set v"+rs+" master br0 up",
			"ip -n "+rs+" addr add "+addr+"/24 dev eth0",
			fmt.Sprintf("ip -n %s addr add 2001:db8:2::1%d/64 dev eth0 nodad", rs, i+1),
			"ip -n "+rs+" link set lo up",
			"ip -n "+rs+" link set eth0 up",
			// NAT: replies must go back through the director.
			"ip -n "+rs+" route add default via 192.0.2.1",
		)
		// DR and TUN: exactly what `fulcrum realserver` prints. The VM
		// loaded ipip (for tunl0) at boot.
		for _, setup := range []struct {
			vip  string
			mode Forwarding
		}{{drVIP, DirectRouting}, {tunVIP, Tunnel}, {drVIP6, DirectRouting}} {
			setupCmds, err := RealServerCommands(netip.MustParseAddr(setup.vip), setup.mode)
			if err != nil {
				return err
			}
			for _, c := range setupCmds {
				if c.Argv[0] != "modprobe" {
					cmds = append(cmds, "ip netns exec "+rs+" "+c.String())
				}
			}
		}
	}
	for _, c := range cmds {
		f := strings.Fields(c)
		if out, err := exec.Command(f[0], f[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", c, err, out)
		}
	}
	for i, rs := range []string{"rs1", "rs2"} {
		var ln net.Listener
		err := inNetns(rs, func() (err error) {
			ln, err = net.Listen("tcp", fmt.Sprintf(":%d", rsPort))
			return err
		})
		if err != nil {
			return fmt.Errorf("echo server in %s: %w", rs, err)
		}
		go echoServer(ln, rs)
		// UDP (udp_vm_test.go): the real server's address for nat, the
		// VIPs for dr and tun.
		var addrs []string
		for _, ip := range []string{fmt.Sprintf("192.0.2.1%d", i+1), drVIP, tunVIP} {
			addrs = append(addrs, fmt.Sprintf("%s:%d", ip, rsPort))
		}
		if _, err := udpEcho(rs, addrs...); err != nil {
			return err
		}
	}
	return nil
}

// echoServer says "NAME CLIENT-ADDRESS" and then echoes lines.
func echoServer(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s %s\n", name, host)
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := c.Write([]byte(line)); err != nil {
					return
				}
			}
		}()
	}
}

// inNetns runs fn on a thread switched to the named network namespace:
// sockets fn opens stay in that namespace afterwards, whichever thread uses
// them.
func inNetns(name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", name, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, so it ends with this goroutine instead of
		// running others in the wrong namespace.
		return fmt.Errorf("setns back from %s: %w", name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// conn is a client connection through a VIP.
type conn struct {
	net.Conn
	r      *bufio.Reader
	server string // the real server's name
	seen   string // the client address the real server saw
}

// dial connects from the client namespace to vip and reads the real
// server's greeting.
func dial(t *testing.T, vip string, port int) *conn {
	t.Helper()
	var c net.Conn
	err := inNetns("client", func() (err error) {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(vip, fmt.Sprint(port)), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s:%d from the client: %v", vip, port, err)
	}
	t.Cleanup(func() { c.Close() })
	cc := &conn{Conn: c, r: bufio.NewReader(c)}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := cc.r.ReadString('\n')
	if err != nil {
		t.Fatalf("%s:%d: greeting: %v", vip, port, err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		t.Fatalf("%s:%d: greeting %q", vip, port, line)
	}
	cc.server, cc.seen = f[0], f[1]
	cc.echo(t)
	return cc
}

// echo checks that the connection still carries data both ways.
func (c *conn) echo(t *testing.T) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "ping %p\n", c); err != nil {
		t.Fatalf("write to %s: %v", c.server, err)
	}
	line, err := c.r.ReadString('\n')
	if want := fmt.Sprintf("ping %p\n", c); err != nil || line != want {
		t.Fatalf("echo from %s: %q, %v; want %q", c.server, line, err, want)
	}
}

func rsAt(name, addr string, port, weight int) RealServer {
	return RealServer{Name: name, Address: ap(net.JoinHostPort(addr, fmt.Sprint(port))), Weight: weight}
}

func TestVMDelivery(t *testing.T) {
	lab(t)
	tests := []struct {
		name     string
		svc      Service
		clientIP string // the client address the real servers see
		// replies: whether they pass the director (its out-packet counter).
		replies bool
	}{
		{"nat", Service{Name: "nat", VIP: ap(natVIP + ":80"), Forwarding: NAT, Scheduler: "rr",
			RealServers: []RealServer{rsAt("rs1", "192.0.2.11", rsPort, 1), rsAt("rs2", "192.0.2.12", rsPort, 1)}},
			"198.51.100.2", true},
		{"dr", Service{Name: "dr", VIP: ap(fmt.Sprintf("%s:%d", drVIP, rsPort)), Forwarding: DirectRouting, Scheduler: "rr",
			RealServers: []RealServer{rsAt("rs1", "192.0.2.11", rsPort, 1), rsAt("rs2", "192.0.2.12", rsPort, 1)}},
			"192.0.2.2", false},
		{"tun", Service{Name: "tun", VIP: ap(fmt.Sprintf("%s:%d", tunVIP, rsPort)), Forwarding: Tunnel, Scheduler: "rr",
			RealServers: []RealServer{rsAt("rs1", "192.0.2.11", rsPort, 1), rsAt("rs2", "192.0.2.12", rsPort, 1)}},
			"192.0.2.2", false},
		// IPv6 real servers set up as `fulcrum realserver` prints: the VIP
		// on lo, and no neighbor advertisement for it from them.
		{"dr IPv6", Service{Name: "dr6", VIP: ap(fmt.Sprintf("[%s]:%d", drVIP6, rsPort)), Forwarding: DirectRouting, Scheduler: "rr",
			RealServers: []RealServer{rsAt("rs1", "2001:db8:2::11", rsPort, 1), rsAt("rs2", "2001:db8:2::12", rsPort, 1)}},
			"2001:db8:2::2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t)
			if _, err := m.Reconcile([]Service{tt.svc}); err != nil {
				t.Fatal(err)
			}
			defer m.Reconcile(nil)
			servers := map[string]int{}
			for range 4 {
				c := dial(t, tt.svc.VIP.Addr().String(), int(tt.svc.VIP.Port()))
				if c.seen != tt.clientIP {
					t.Errorf("%s saw the client as %s, want %s (IPVS keeps the client's address)", c.server, c.seen, tt.clientIP)
				}
				servers[c.server]++
				c.Close()
			}
			if servers["rs1"] != 2 || servers["rs2"] != 2 {
				t.Errorf("round robin over 4 connections: %v, want 2 each", servers)
			}
			st := waitStats(t, m, func(s ServiceStats) bool { return s.Connections == 4 })
			if out := st.OutPackets; tt.replies != (out > 0) {
				t.Errorf("the director forwarded %d reply packets: want replies through it %v", out, tt.replies)
			}
		})
	}
}

// Weight 0 (a real server down, or draining) gets no new connections while
// its established ones carry on; removed (maintenance), it gets none.
func TestVMWeightZeroQuiescent(t *testing.T) {
	lab(t)
	m := newManager(t)
	svc := Service{Name: "q", VIP: ap(natVIP + ":81"), Forwarding: NAT, Scheduler: "wrr",
		RealServers: []RealServer{rsAt("rs1", "192.0.2.11", rsPort, 1), rsAt("rs2", "192.0.2.12", rsPort, 1)}}
	if _, err := m.Reconcile([]Service{svc}); err != nil {
		t.Fatal(err)
	}
	defer m.Reconcile(nil)
	var onRS2 *conn
	for i := 0; onRS2 == nil && i < 4; i++ {
		if c := dial(t, natVIP, 81); c.server == "rs2" {
			onRS2 = c
		}
	}
	if onRS2 == nil {
		t.Fatal("no connection reached rs2")
	}
	if _, err := m.SetWeight(svc.Key(), ap("192.0.2.12:8080"), 0); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		if c := dial(t, natVIP, 81); c.server != "rs1" {
			t.Fatalf("a new connection reached %s at weight 0", c.server)
		}
	}
	onRS2.echo(t) // quiescent: the established connection still works
	if _, err := m.RemoveRealServer(svc.Key(), ap("192.0.2.12:8080")); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if c := dial(t, natVIP, 81); c.server != "rs1" {
			t.Fatalf("a new connection reached %s after its removal", c.server)
		}
	}
}

// A persistent service sends one client to one real server.
func TestVMPersistence(t *testing.T) {
	lab(t)
	m := newManager(t)
	svc := Service{Name: "p", VIP: ap(natVIP + ":82"), Forwarding: NAT, Scheduler: "rr", Persistence: time.Minute,
		RealServers: []RealServer{rsAt("rs1", "192.0.2.11", rsPort, 1), rsAt("rs2", "192.0.2.12", rsPort, 1)}}
	if _, err := m.Reconcile([]Service{svc}); err != nil {
		t.Fatal(err)
	}
	defer m.Reconcile(nil)
	first := dial(t, natVIP, 82).server
	for range 4 {
		if c := dial(t, natVIP, 82); c.server != first {
			t.Fatalf("persistent service: %s then %s", first, c.server)
		}
	}
}

// A restarted Fulcrum (a new Manager) reconciling the same configuration
// sends the kernel no change: an established connection carries on and the
// counters keep counting.
func TestVMRestartKeepsTraffic(t *testing.T) {
	lab(t)
	svc := Service{Name: "r", VIP: ap(natVIP + ":83"), Forwarding: NAT, Scheduler: "wlc",
		RealServers: []RealServer{rsAt("rs1", "192.0.2.11", rsPort, 1), rsAt("rs2", "192.0.2.12", rsPort, 1)}}
	m := newManager(t)
	if _, err := m.Reconcile([]Service{svc}); err != nil {
		t.Fatal(err)
	}
	c := dial(t, natVIP, 83)
	before := waitStats(t, m, func(s ServiceStats) bool { return s.Connections == 1 })
	m.Close()

	restarted, rec := newRecordingManager(t)
	changes, err := restarted.Reconcile([]Service{svc})
	if err != nil || len(changes) != 0 || len(rec.ops) != 0 {
		t.Fatalf("Reconcile after a restart: changes %v, kernel operations %v, err %v", changes, rec.ops, err)
	}
	defer restarted.Reconcile(nil)
	c.echo(t)
	// Recreated, the service would count from zero.
	waitStats(t, restarted, func(s ServiceStats) bool {
		return s.Connections == 1 && s.InPackets > before.InPackets
	})
}

// waitStats waits for the one service of m to satisfy ok and returns its
// stats. The kernel (6.1) sums its per-CPU counters into the ones it
// reports every 2 seconds (the rate estimator's timer), so they lag.
func waitStats(t *testing.T, m *Manager, ok func(ServiceStats) bool) ServiceStats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := m.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if len(st) != 1 {
			t.Fatalf("stats: %d services, want 1: %+v", len(st), st)
		}
		if ok(st[0]) {
			return st[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats never as expected: %+v", st[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
}
