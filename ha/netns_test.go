package ha

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The netns tests run two real Nodes, each in its own network namespace,
// joined by a veth pair: the raw sockets, the multicast group, TTL 255, the
// checksums and the timers of RFC 5798 for real. They need root.

type link struct {
	nsA, nsB     string
	ifA, ifB     string
	addrA, addrB netip.Addr // IPv4
	llA, llB     netip.Addr // IPv6 link-local
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newLink(t *testing.T) *link {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and raw sockets")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2) to create network namespaces")
	}
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	l := &link{
		nsA: "fulcrum-ha-" + id + "-a", nsB: "fulcrum-ha-" + id + "-b",
		ifA: "fha" + id + "a", ifB: "fha" + id + "b",
		addrA: netip.MustParseAddr("192.0.2.1"), addrB: netip.MustParseAddr("192.0.2.2"),
		llA: netip.MustParseAddr("fe80::a"), llB: netip.MustParseAddr("fe80::b"),
	}
	if out, err := exec.Command("ip", "netns", "add", l.nsA).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.nsA).Run() })
	run(t, "ip", "netns", "add", l.nsB)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.nsB).Run() })
	run(t, "ip", "link", "add", l.ifA, "netns", l.nsA, "type", "veth", "peer", "name", l.ifB, "netns", l.nsB)
	for _, side := range []struct {
		ns, ifname string
		addr, ll   netip.Addr
	}{{l.nsA, l.ifA, l.addrA, l.llA}, {l.nsB, l.ifB, l.addrB, l.llB}} {
		// A fixed link-local address, usable at once (no DAD), and no
		// generated one beside it.
		run(t, "ip", "-n", side.ns, "link", "set", side.ifname, "addrgenmode", "none")
		run(t, "ip", "-n", side.ns, "addr", "add", side.addr.String()+"/24", "dev", side.ifname)
		run(t, "ip", "-n", side.ns, "addr", "add", side.ll.String()+"/64", "dev", side.ifname, "nodad")
		run(t, "ip", "-n", side.ns, "link", "set", side.ifname, "up")
		run(t, "ip", "-n", side.ns, "link", "set", "lo", "up")
	}
	return l
}

// inNetns runs f on an OS thread switched into the named namespace; the
// sockets f creates stay in it.
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine
			// rather than serve others in the wrong namespace.
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

type liveNode struct {
	node   *Node
	addrs  *FakeAddresses
	states chan State
	cancel context.CancelFunc
	done   chan error
}

func startIn(t *testing.T, ns string, cc ConnConfig, s Settings, vips []netip.Prefix) *liveNode {
	t.Helper()
	var conn Conn
	if err := inNetns(ns, func() (err error) { conn, err = Listen(cc); return err }); err != nil {
		t.Fatalf("Listen in %s: %v", ns, err)
	}
	ln := &liveNode{addrs: &FakeAddresses{}, states: make(chan State, 100), done: make(chan error, 1)}
	var err error
	ln.node, err = NewNode(NodeConfig{VRID: 51, Settings: s, VIPs: vips,
		OnStateChange: func(_, to State) { ln.states <- to }}, conn, ln.addrs, nil)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ln.cancel = cancel
	go func() { ln.done <- ln.node.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ln.node.done })
	return ln
}

// await waits for the node to enter want, failing on any other
// transition, and returns how long that took.
func (ln *liveNode) await(t *testing.T, name string, want State, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	timeout := time.After(limit)
	for {
		select {
		case got := <-ln.states:
			if got == want {
				return time.Since(start)
			}
			t.Fatalf("%s went %s while waiting for %s", name, got, want)
		case <-timeout:
			t.Fatalf("%s not %s after %s (state %s)", name, want, limit, ln.node.State())
		}
	}
}

// expectQuiet checks that the node made no transition.
func (ln *liveNode) expectQuiet(t *testing.T, name string) {
	t.Helper()
	select {
	case got := <-ln.states:
		t.Fatalf("%s went %s", name, got)
	default:
	}
}

func TestNetnsFailover(t *testing.T) {
	l := newLink(t)
	const interval = 100 * time.Millisecond
	// Master_Down_Interval: 3 x 100ms + Skew_Time, Skew_Time =
	// (256 - priority) x 100ms / 256: 21.9ms for 200, 60.9ms for 100.
	const (
		downA = 321875 * time.Microsecond
		skewB = 60937500 * time.Nanosecond
		downB = 3*interval + skewB
	)
	vip4 := []netip.Prefix{netip.MustParsePrefix("192.0.2.100/24")}
	vip6 := []netip.Prefix{netip.MustParsePrefix("fd00::100/64")}
	tests := []struct {
		name     string
		ccA, ccB ConnConfig
		vips     []netip.Prefix
	}{
		{"IPv4 multicast", ConnConfig{Interface: l.ifA}, ConnConfig{Interface: l.ifB}, vip4},
		{"IPv4 unicast", ConnConfig{Interface: l.ifA, Peers: []netip.Addr{l.addrB}}, ConnConfig{Interface: l.ifB, Peers: []netip.Addr{l.addrA}}, vip4},
		{"IPv6 multicast", ConnConfig{Interface: l.ifA, IPv6: true}, ConnConfig{Interface: l.ifB, IPv6: true}, vip6},
		{"IPv6 unicast", ConnConfig{Interface: l.ifA, IPv6: true, Peers: []netip.Addr{l.llB}}, ConnConfig{Interface: l.ifB, IPv6: true, Peers: []netip.Addr{l.llA}}, vip6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sA := Settings{Priority: 200, AdvertInterval: interval, Preempt: true}
			sB := Settings{Priority: 100, AdvertInterval: interval, Preempt: true}
			b := startIn(t, l.nsB, tt.ccB, sB, tt.vips)
			a := startIn(t, l.nsA, tt.ccA, sA, tt.vips)
			b.await(t, "B", Backup, time.Second)
			a.await(t, "A", Backup, time.Second)

			// The higher priority wins after its Master_Down_Interval;
			// B, hearing A, never takes over.
			d := a.await(t, "A", Master, 3*downA)
			t.Logf("A master after %s (Master_Down_Interval %s)", d, downA)
			if !a.addrs.Held(tt.vips...) || b.addrs.Held(tt.vips...) {
				t.Fatalf("after the election A holds %v, B %v", a.addrs.Calls(), b.addrs.Calls())
			}
			// Several advertisement intervals: B stays Backup.
			time.Sleep(5 * interval) // a real-time protocol: let it run
			b.expectQuiet(t, "B")

			// Graceful stop: B takes over after its Skew_Time, well
			// before Master_Down_Interval.
			start := time.Now()
			a.node.Stop()
			b.await(t, "B", Master, 3*downB)
			d = time.Since(start)
			t.Logf("B master %s after A's graceful stop (Skew_Time %s, Master_Down_Interval %s)", d, skewB, downB)
			if d >= 3*interval {
				t.Errorf("graceful handover took %s, want about Skew_Time %s (< %s)", d, skewB, 3*interval)
			}

			// A comes back and preempts B.
			a = startIn(t, l.nsA, tt.ccA, sA, tt.vips)
			a.await(t, "A", Backup, time.Second)
			a.await(t, "A", Master, 3*downA)
			b.await(t, "B", Backup, 3*downA)
			if b.addrs.Held(tt.vips...) {
				t.Fatal("B still holds the VIPs after A's return")
			}

			// A dies without a word: B waits Master_Down_Interval.
			start = time.Now()
			a.cancel()
			b.await(t, "B", Master, 3*downB)
			d = time.Since(start)
			t.Logf("B master %s after A died (Master_Down_Interval %s)", d, downB)
			if d < 3*interval-interval/2 {
				t.Errorf("takeover after a crash took %s, want about Master_Down_Interval %s", d, downB)
			}
		})
	}
}
