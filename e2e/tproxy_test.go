package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netnsLab is three network namespaces joined by veth pairs, made by the
// test and deleted when it ends:
//
//	client 10.231.1.2 ── 10.231.1.1 lb 10.231.2.1 ── 10.231.2.2 server
//
// The client's and the server's default routes go through lb, so that the
// server's replies to a client address return through fulcrum; lb has the
// TPROXY routing of the README: packets of a transparent socket are marked
// by nft (socket transparent) and delivered locally (table 100).
type netnsLab struct {
	t                  *testing.T
	client, lb, server string // namespace names
}

func newNetnsLab(t *testing.T) *netnsLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: install iproute2 and nftables to run this end-to-end test", tool)
		}
	}
	id := fmt.Sprintf("%d%03d", os.Getpid()%100000, rand.IntN(1000))
	lab := &netnsLab{t: t, client: "fcc" + id, lb: "fcl" + id, server: "fcs" + id}
	for _, ns := range []string{lab.client, lab.lb, lab.server} {
		lab.run("ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		lab.in(ns, "ip", "link", "set", "lo", "up")
	}
	// veth names: at most 15 bytes.
	vc, vl, vs, vm := "vc"+id, "vl"+id, "vs"+id, "vm"+id
	lab.run("ip", "link", "add", vc, "netns", lab.client, "type", "veth", "peer", "name", vl, "netns", lab.lb)
	lab.run("ip", "link", "add", vs, "netns", lab.server, "type", "veth", "peer", "name", vm, "netns", lab.lb)
	for _, a := range [][3]string{{lab.client, vc, "10.231.1.2/24"}, {lab.lb, vl, "10.231.1.1/24"},
		{lab.server, vs, "10.231.2.2/24"}, {lab.lb, vm, "10.231.2.1/24"}} {
		lab.in(a[0], "ip", "addr", "add", a[2], "dev", a[1])
		lab.in(a[0], "ip", "link", "set", a[1], "up")
	}
	lab.in(lab.client, "ip", "route", "add", "default", "via", "10.231.1.1")
	lab.in(lab.server, "ip", "route", "add", "default", "via", "10.231.2.1")
	lab.in(lab.lb, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	// The README's recipe.
	lab.in(lab.lb, "ip", "rule", "add", "fwmark", "1", "lookup", "100")
	lab.in(lab.lb, "ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
	lab.in(lab.lb, "nft", "add table ip fulcrum; "+
		"add chain ip fulcrum prerouting { type filter hook prerouting priority mangle; policy accept; }; "+
		"add rule ip fulcrum prerouting meta l4proto tcp socket transparent 1 meta mark set 1 accept")
	return lab
}

func (lab *netnsLab) run(name string, args ...string) {
	lab.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		lab.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func (lab *netnsLab) in(ns string, args ...string) {
	lab.t.Helper()
	lab.run("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// inNetns runs f on a thread switched into namespace ns: sockets f creates
// belong to ns, and stay there once the thread is back.
func (lab *netnsLab) inNetns(ns string, f func()) {
	lab.t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		lab.t.Fatal(err)
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		runtime.UnlockOSThread()
		lab.t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		lab.t.Fatal(err)
	}
	f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and dies with the goroutine.
		lab.t.Fatalf("back to the test's namespace: %v", err)
	}
	runtime.UnlockOSThread()
}

// TestTransparentProxy: with transparent = true the real server sees the
// client's own address (10.231.1.2) as the source of the connections fulcrum
// makes, for HTTP and TCP virtual services; without, lb's (10.231.2.1).
func TestTransparentProxy(t *testing.T) {
	lab := newNetnsLab(t)
	// Real servers inside the server namespace, answering with the peer
	// address they see.
	var httpL, tcpL net.Listener
	lab.inNetns(lab.server, func() {
		var err1, err2 error
		httpL, err1 = net.Listen("tcp", "10.231.2.2:9000")
		tcpL, err2 = net.Listen("tcp", "10.231.2.2:9001")
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
	})
	t.Cleanup(func() { httpL.Close(); tcpL.Close() })
	go http.Serve(httpL, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, host)
	}))
	go func() {
		for {
			c, err := tcpL.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			io.WriteString(c, host)
			c.Close()
		}
	}()

	var services []service
	for i, mode := range []string{"http", "tcp"} {
		for j, transparent := range []bool{true, false} {
			services = append(services, service{
				name:   fmt.Sprintf("%s-%v", mode, transparent),
				listen: []string{fmt.Sprintf("10.231.1.1:%d", 8080+2*i+j)},
				opts:   fmt.Sprintf("mode = %q\ntransparent = %v\n", mode, transparent),
				real:   []real{{name: "s", address: fmt.Sprintf("10.231.2.2:%d", 9000+i)}},
			})
		}
	}
	path := filepath.Join(t.TempDir(), "fulcrum.toml")
	if err := os.WriteFile(path, []byte(config{services: services}.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	f := startProcessVia(t, []string{"ip", "netns", "exec", lab.lb}, "run", "-c", path)
	f.waitLog(10*time.Second, "fulcrum started", func(e logEntry) bool { return e.str("msg") == "fulcrum started" })

	for _, s := range services {
		t.Run(s.name, func(t *testing.T) {
			var c net.Conn
			lab.inNetns(lab.client, func() {
				var err error
				if c, err = net.DialTimeout("tcp", s.listen[0], 5*time.Second); err != nil {
					t.Fatal(err)
				}
			})
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if strings.HasPrefix(s.name, "http") {
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			}
			b, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			got := string(b)
			if i := strings.Index(got, "\r\n\r\n"); i >= 0 {
				got = got[i+4:]
			}
			want := "10.231.2.1"
			if strings.HasSuffix(s.name, "true") {
				want = "10.231.1.2"
			}
			if got != want {
				t.Fatalf("the real server saw %q, want %s", b, want)
			}
		})
	}
}

// TestTransparentNeedsCapNetAdmin: without CAP_NET_ADMIN, a configuration
// with transparent = true does not start, and says why.
func TestTransparentNeedsCapNetAdmin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run fulcrum without CAP_NET_ADMIN and see the difference")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not found: install util-linux to run this end-to-end test")
	}
	path := filepath.Join(t.TempDir(), "fulcrum.toml")
	cfg := config{services: []service{{name: "tp", listen: []string{freeAddr(t)}, opts: "transparent = true\n",
		real: []real{{name: "s", address: freeAddr(t)}}}}}
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// Root whose bounding set lacks CAP_NET_ADMIN gets no CAP_NET_ADMIN
	// across exec; CAP_NET_RAW goes too, as it also allows IP_TRANSPARENT.
	f := startProcessVia(t, []string{"setpriv", "--bounding-set", "-net_admin,-net_raw"}, "run", "-c", path)
	if code := f.wait(10 * time.Second); code == 0 {
		t.Fatal("fulcrum started without CAP_NET_ADMIN")
	}
	if out := f.stderr.String(); !strings.Contains(out, `transparent = true needs the CAP_NET_ADMIN capability`) || !strings.Contains(out, "tp") {
		t.Fatalf("no clear error in:\n%s", out)
	}
}
