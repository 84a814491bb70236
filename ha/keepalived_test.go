package ha

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The keepalived interop test pairs a Node with keepalived (2.2.7, the
// Debian one, run as `keepalived -P -n -l`) on a veth link: the same VRID,
// vrrp_version 3, 100ms adverts. Each must take over from the other, both
// when the other dies and when it stops gracefully (priority 0), and the
// two must never stay Master together longer than an advertisement
// interval. keepalived's state is read from its console log (it logs
// "(VI) Entering MASTER STATE" as it acts), timestamped on arrival, and
// checked against `ip addr`. It needs root and keepalived.

// kaState is one state keepalived entered, and when we read it.
type kaState struct {
	state string // MASTER, BACKUP or FAULT
	at    time.Time
}

type keepalived struct {
	t      *testing.T
	ns     string
	dir    string
	cmd    *exec.Cmd
	states chan kaState
	done   chan struct{}

	mu  sync.Mutex
	log strings.Builder
}

// kaConfig is keepalived's side of the pair.
type kaConfig struct {
	ifname   string
	priority int
	vips     []netip.Prefix
	src      netip.Addr   // unicast_src_ip, with peers
	peers    []netip.Addr // unicast_peer; none: multicast
}

func (c kaConfig) String() string {
	var b strings.Builder
	// vrrp_version 3 for every instance; advert_int in seconds, with
	// decimals allowed for version 3 only; no vrrp_strict, as deployed
	// pairs usually run (it would also refuse our unicast checksums of
	// old).
	fmt.Fprintf(&b, "global_defs {\n  router_id fulcrum_interop\n  vrrp_version 3\n}\n")
	fmt.Fprintf(&b, "vrrp_instance VI {\n  state BACKUP\n  interface %s\n  virtual_router_id 51\n  priority %d\n  advert_int 0.1\n",
		c.ifname, c.priority)
	if len(c.peers) > 0 {
		fmt.Fprintf(&b, "  unicast_src_ip %s\n  unicast_peer {\n", c.src)
		for _, p := range c.peers {
			fmt.Fprintf(&b, "    %s\n", p)
		}
		b.WriteString("  }\n")
	}
	b.WriteString("  virtual_ipaddress {\n")
	for _, v := range c.vips {
		fmt.Fprintf(&b, "    %s\n", v)
	}
	b.WriteString("  }\n}\n")
	return b.String()
}

func needKeepalived(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and run keepalived")
	}
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Skip("keepalived not found: apt-get install keepalived to run the interop test")
	}
}

// startKeepalived runs keepalived in the foreground in namespace ns, with
// its own pid files; it is stopped when the test ends.
func startKeepalived(t *testing.T, ns string, c kaConfig) *keepalived {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(conf, []byte(c.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &keepalived{t: t, ns: ns, dir: dir, states: make(chan kaState, 100), done: make(chan struct{})}
	// -P VRRP only, -n foreground, -l log to the console, -D details,
	// -R no respawn (a killed VRRP child stays dead), -G no syslog.
	k.cmd = exec.Command("ip", "netns", "exec", ns, "keepalived", "-P", "-n", "-l", "-D", "-R", "-G",
		"-f", conf, "-p", filepath.Join(dir, "keepalived.pid"), "-r", filepath.Join(dir, "vrrp.pid"))
	k.cmd.Dir = dir
	stderr, err := k.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	k.cmd.Stdout = k.cmd.Stderr
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("start keepalived: %v", err)
	}
	go func() {
		defer close(k.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			now := time.Now()
			k.mu.Lock()
			k.log.WriteString(line + "\n")
			k.mu.Unlock()
			for _, s := range []string{"MASTER", "BACKUP", "FAULT"} {
				if strings.Contains(line, "(VI) Entering "+s+" STATE") || strings.Contains(line, "(VI) entering "+s+" state") {
					k.states <- kaState{s, now}
				}
			}
		}
		k.cmd.Wait()
	}()
	t.Cleanup(func() {
		k.stop()
		if t.Failed() {
			t.Logf("keepalived log:\n%s", k.output())
		}
	})
	return k
}

func (k *keepalived) output() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.log.String()
}

// await waits for keepalived to enter want; FAULT on the way (at startup,
// before it sees the link up) is ignored, any other state fails.
func (k *keepalived) await(t *testing.T, want string, limit time.Duration) kaState {
	t.Helper()
	timeout := time.After(limit)
	for {
		select {
		case s := <-k.states:
			if s.state == want {
				return s
			}
			if s.state != "FAULT" {
				t.Fatalf("keepalived went %s while waiting for %s", s.state, want)
			}
		case <-timeout:
			t.Fatalf("keepalived not %s after %s", want, limit)
		}
	}
}

// expectQuiet checks that keepalived made no transition.
func (k *keepalived) expectQuiet(t *testing.T) {
	t.Helper()
	select {
	case s := <-k.states:
		t.Fatalf("keepalived went %s", s.state)
	default:
	}
}

// kill kills keepalived's VRRP process with SIGKILL: it dies without a
// word, as after a crash (no priority 0, the addresses stay).
func (k *keepalived) kill(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(k.dir, "vrrp.pid"))
	if err != nil {
		t.Fatalf("keepalived's VRRP pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("keepalived's VRRP pid %q: %v", b, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill keepalived's VRRP process %d: %v", pid, err)
	}
}

// stop stops keepalived with SIGTERM (its graceful stop, priority 0) and
// waits for it to exit.
func (k *keepalived) stop() {
	select {
	case <-k.done:
		return
	default:
	}
	k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(5 * time.Second):
		k.cmd.Process.Kill()
		if b, err := os.ReadFile(filepath.Join(k.dir, "vrrp.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		<-k.done
		k.t.Errorf("keepalived did not exit within 5s of SIGTERM")
	}
}

// holds reports whether the interface in namespace ns carries vip.
func holds(t *testing.T, ns, ifname string, vip netip.Prefix) bool {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-o", "addr", "show", "dev", ifname).CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr: %v\n%s", err, out)
	}
	return strings.Contains(string(out), " "+vip.String()+" ")
}

func TestKeepalivedInterop(t *testing.T) {
	needKeepalived(t)
	l := newLink(t)
	const interval = 100 * time.Millisecond
	// Fulcrum (A) at 150 against keepalived (B) at 200, then at 100.
	// Master_Down_Interval for A: 3 x 100ms + (256-150) x 100ms / 256.
	const downA = 341406250 * time.Nanosecond
	vip4 := []netip.Prefix{netip.MustParsePrefix("192.0.2.100/24")}
	vip6 := []netip.Prefix{netip.MustParsePrefix("fd00::100/64")}
	tests := []struct {
		name string
		cc   ConnConfig
		ka   kaConfig
	}{
		{"IPv4 multicast", ConnConfig{Interface: l.ifA}, kaConfig{vips: vip4}},
		{"IPv4 unicast", ConnConfig{Interface: l.ifA, Peers: []netip.Addr{l.addrB}},
			kaConfig{vips: vip4, src: l.addrB, peers: []netip.Addr{l.addrA}}},
		{"IPv6 multicast", ConnConfig{Interface: l.ifA, IPv6: true}, kaConfig{vips: vip6}},
		{"IPv6 unicast", ConnConfig{Interface: l.ifA, IPv6: true, Peers: []netip.Addr{l.llB}},
			kaConfig{vips: vip6, src: l.llB, peers: []netip.Addr{l.llA}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vips := tt.ka.vips
			ka := tt.ka
			ka.ifname = l.ifB
			sA := Settings{Priority: 150, AdvertInterval: interval, Preempt: true}

			// keepalived, the higher priority, is Master; Fulcrum,
			// started after, stays Backup.
			ka.priority = 200
			k := startKeepalived(t, l.nsB, ka)
			k.await(t, "BACKUP", 5*time.Second)
			k.await(t, "MASTER", 5*time.Second)
			a := startIn(t, l.nsA, tt.cc, sA, vips)
			a.await(t, "A", Backup, time.Second)
			time.Sleep(2 * downA) // a real-time protocol: let it run
			a.expectQuiet(t, "A")
			k.expectQuiet(t)
			if a.addrs.Held(vips...) || !holds(t, l.nsB, l.ifB, vips[0]) {
				t.Fatalf("with keepalived Master: Fulcrum's calls %v; keepalived holds the VIP: %v", a.addrs.Calls(), holds(t, l.nsB, l.ifB, vips[0]))
			}

			// keepalived dies: Fulcrum takes over after its
			// Master_Down_Interval, learned from keepalived's adverts.
			start := time.Now()
			k.kill(t)
			d := a.await(t, "A", Master, 3*downA)
			t.Logf("Fulcrum master %s after keepalived died (Master_Down_Interval %s)", d, downA)
			if time.Since(start) < 2*interval {
				t.Errorf("Fulcrum took over %s after keepalived died, before Master_Down_Interval %s", time.Since(start), downA)
			}
			k.stop()

			// keepalived comes back at a lower priority: it stays
			// Backup to Fulcrum's adverts.
			ka.priority = 100
			k = startKeepalived(t, l.nsB, ka)
			k.await(t, "BACKUP", 5*time.Second)
			time.Sleep(2 * (3*interval + interval)) // over keepalived's Master_Down_Interval
			k.expectQuiet(t)
			a.expectQuiet(t, "A")
			if holds(t, l.nsB, l.ifB, vips[0]) {
				t.Fatal("keepalived, Backup, holds the VIP")
			}

			// Fulcrum stops gracefully (priority 0): keepalived takes
			// over after its Skew_Time, well before three intervals.
			start = time.Now()
			a.node.Stop()
			s := k.await(t, "MASTER", 3*downA)
			d = s.at.Sub(start)
			t.Logf("keepalived master %s after Fulcrum's graceful stop", d)
			if d >= 3*interval {
				t.Errorf("keepalived took over %s after Fulcrum's priority 0, want about Skew_Time (< %s)", d, 3*interval)
			}
			if !holds(t, l.nsB, l.ifB, vips[0]) {
				t.Error("keepalived, Master, does not hold the VIP")
			}

			// Fulcrum returns with the higher priority and preempts:
			// keepalived steps down at Fulcrum's first advert, so that
			// the two are not Master together for an interval.
			a = startIn(t, l.nsA, tt.cc, sA, vips)
			a.await(t, "A", Backup, time.Second)
			a.await(t, "A", Master, 3*downA)
			masterAt := time.Now()
			s = k.await(t, "BACKUP", 3*downA)
			t.Logf("keepalived Backup %s after Fulcrum became Master", s.at.Sub(masterAt))
			if d := s.at.Sub(masterAt); d > interval {
				t.Errorf("two Masters for %s, more than an advertisement interval", d)
			}
			time.Sleep(2 * downA)
			a.expectQuiet(t, "A")
			k.expectQuiet(t)

			// Fulcrum dies without a word: keepalived waits its
			// Master_Down_Interval (3 x 100ms + 60.9ms) and takes over.
			start = time.Now()
			a.cancel()
			s = k.await(t, "MASTER", 3*downA)
			d = s.at.Sub(start)
			t.Logf("keepalived master %s after Fulcrum died", d)
			if d < 2*interval {
				t.Errorf("keepalived took over %s after Fulcrum died, before its Master_Down_Interval", d)
			}
		})
	}
}
