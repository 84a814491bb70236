package l4

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"
)

// Tests against the VM's kernel: what Reconcile programs is what ipvsadm
// shows, and Reconcile changes nothing it need not change.

func newManager(t *testing.T) *Manager {
	t.Helper()
	m, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// recorder is an ipvs.Client that logs the changes it passes on to the
// kernel.
type recorder struct {
	ipvs.Client
	ops []string
}

func (r *recorder) log(op string, s ipvs.Service, d *ipvs.Destination) {
	e := fmt.Sprintf("%s %v %s", op, s.Protocol, netip.AddrPortFrom(s.Address, s.Port))
	if d != nil {
		e += " " + netip.AddrPortFrom(d.Address, d.Port).String()
	}
	r.ops = append(r.ops, e)
}

func (r *recorder) CreateService(s ipvs.Service) error {
	r.log("CreateService", s, nil)
	return r.Client.CreateService(s)
}

func (r *recorder) UpdateService(s ipvs.Service) error {
	r.log("UpdateService", s, nil)
	return r.Client.UpdateService(s)
}

func (r *recorder) RemoveService(s ipvs.Service) error {
	r.log("RemoveService", s, nil)
	return r.Client.RemoveService(s)
}

func (r *recorder) CreateDestination(s ipvs.Service, d ipvs.Destination) error {
	r.log("CreateDestination", s, &d)
	return r.Client.CreateDestination(s, d)
}

func (r *recorder) UpdateDestination(s ipvs.Service, d ipvs.Destination) error {
	r.log("UpdateDestination", s, &d)
	return r.Client.UpdateDestination(s, d)
}

func (r *recorder) RemoveDestination(s ipvs.Service, d ipvs.Destination) error {
	r.log("RemoveDestination", s, &d)
	return r.Client.RemoveDestination(s, d)
}

// newRecordingManager is a Manager on the kernel's IPVS whose changes are
// logged: a fresh one is a restarted Fulcrum.
func newRecordingManager(t *testing.T) (*Manager, *recorder) {
	t.Helper()
	c, err := ipvs.New()
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{Client: c}
	t.Cleanup(func() { c.(interface{ Close() error }).Close() })
	return NewWithClient(r), r
}

func TestVMServicesAsConfigured(t *testing.T) {
	needVM(t)
	rs := func(name, addr string, weight int) RealServer {
		return RealServer{Name: name, Address: ap(addr), Weight: weight}
	}
	tests := []struct {
		name string
		svc  Service
		want []string // ipvsadm -Ln, parsed
	}{
		{"dr wlc persistent /24", Service{
			Name: "rdp-dr", VIP: ap("203.0.113.30:3389"), Forwarding: DirectRouting, Scheduler: "weighted_least_conn",
			Persistence: 2 * time.Hour, PersistenceMask: 24,
			RealServers: []RealServer{rs("ts1", "192.0.2.41:3389", 1), rs("ts2", "192.0.2.42:3389", 5)},
		}, []string{
			"TCP 203.0.113.30:3389 wlc persistent 7200 mask 255.255.255.0",
			"-> 192.0.2.41:3389 Route 1",
			"-> 192.0.2.42:3389 Route 5",
		}},
		{"nat rr with port translation", Service{
			Name: "web", VIP: ap("203.0.113.31:80"), Forwarding: NAT, Scheduler: "round_robin",
			RealServers: []RealServer{rs("w1", "192.0.2.51:8080", 1), rs("w2", "192.0.2.52:8081", 0)},
		}, []string{"TCP 203.0.113.31:80 rr", "-> 192.0.2.51:8080 Masq 1", "-> 192.0.2.52:8081 Masq 0"}},
		{"tun wrr", Service{
			Name: "tun", VIP: ap("203.0.113.32:443"), Forwarding: Tunnel, Scheduler: "weighted_round_robin",
			RealServers: []RealServer{rs("t1", "192.0.2.61:443", 3)},
		}, []string{"TCP 203.0.113.32:443 wrr", "-> 192.0.2.61:443 Tunnel 3"}},
		{"udp sh, mixed forwarding", Service{
			Name: "dns", Protocol: UDP, VIP: ap("203.0.113.33:53"), Scheduler: "source_hash",
			RealServers: []RealServer{rs("d1", "192.0.2.71:53", 1), {Name: "d2", Address: ap("192.0.2.72:53"), Weight: 1, Forwarding: NAT}},
		}, []string{"UDP 203.0.113.33:53 sh", "-> 192.0.2.71:53 Route 1", "-> 192.0.2.72:53 Masq 1"}},
		{"lc", Service{
			Name: "lc", VIP: ap("203.0.113.34:25"), Scheduler: "least_conn",
			RealServers: []RealServer{rs("m1", "192.0.2.81:25", 1)},
		}, []string{"TCP 203.0.113.34:25 lc", "-> 192.0.2.81:25 Route 1"}},
		{"ipv6 mh persistent", Service{
			Name: "v6", VIP: ap("[2001:db8::30]:80"), Forwarding: NAT, Scheduler: "mh", Persistence: 90 * time.Second, PersistenceMask: 64,
			RealServers: []RealServer{rs("v1", "[2001:db8::41]:8080", 2)},
		}, []string{"TCP [2001:db8::30]:80 mh persistent 90 mask 64", "-> [2001:db8::41]:8080 Masq 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t)
			if _, err := m.Reconcile([]Service{tt.svc}); err != nil {
				t.Fatal(err)
			}
			key := strings.ToUpper(string(tt.svc.Key().Protocol)) + " " + tt.svc.VIP.String()
			if got := ipvsadm(t)[key]; !slices.Equal(got, tt.want) {
				t.Errorf("ipvsadm -Ln for %s:\n%s\nwant:\n%s", key, strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			// And the Manager removes what it owns when it is no longer
			// desired.
			if _, err := m.Reconcile(nil); err != nil {
				t.Fatal(err)
			}
			if got, ok := ipvsadm(t)[key]; ok {
				t.Errorf("service still in the kernel after Reconcile(nil): %v", got)
			}
		})
	}
}

// A second Reconcile, by the same Manager or by a new one (Fulcrum
// restarted), sends the kernel no change at all.
func TestVMReconcileTwiceChangesNothing(t *testing.T) {
	needVM(t)
	desired := []Service{
		{Name: "a", VIP: ap("203.0.113.40:80"), Forwarding: NAT, Scheduler: "wrr", Persistence: time.Minute,
			RealServers: []RealServer{{Name: "a1", Address: ap("192.0.2.41:8080"), Weight: 2}, {Name: "a2", Address: ap("192.0.2.42:8080")}}},
		{Name: "b", Protocol: UDP, VIP: ap("203.0.113.40:53"), Forwarding: DirectRouting, Scheduler: "sh",
			RealServers: []RealServer{{Name: "b1", Address: ap("192.0.2.41:53"), Weight: 1}}},
		{Name: "c", VIP: ap("[2001:db8::40]:443"), Forwarding: Tunnel, Scheduler: "mh",
			RealServers: []RealServer{{Name: "c1", Address: ap("[2001:db8::41]:443"), Weight: 7}}},
	}
	m, rec := newRecordingManager(t)
	changes, err := m.Reconcile(desired)
	if err != nil || len(changes) != 7 {
		t.Fatalf("first Reconcile: %d changes %v, err %v; want 3 services and 4 real servers added", len(changes), changes, err)
	}
	t.Cleanup(func() { m.Reconcile(nil) })
	before := ipvsadm(t)
	for _, name := range []string{"same manager", "restarted"} {
		t.Run(name, func(t *testing.T) {
			mm, r := m, rec
			if name == "restarted" {
				mm, r = newRecordingManager(t)
			}
			r.ops = nil
			changes, err := mm.Reconcile(desired)
			if err != nil || len(changes) != 0 || len(r.ops) != 0 {
				t.Fatalf("Reconcile again: changes %v, kernel operations %v, err %v", changes, r.ops, err)
			}
			if after := ipvsadm(t); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("ipvsadm -Ln changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func TestVMRealServerChanges(t *testing.T) {
	needVM(t)
	m := newManager(t)
	svc := Service{Name: "s", VIP: ap("203.0.113.41:80"), Forwarding: NAT, Scheduler: "wlc",
		RealServers: []RealServer{{Name: "r1", Address: ap("192.0.2.41:80"), Weight: 1}, {Name: "r2", Address: ap("192.0.2.42:80"), Weight: 1}}}
	if _, err := m.Reconcile([]Service{svc}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Reconcile(nil) })
	const key = "TCP 203.0.113.41:80"
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"down: weight 0", func() error { _, err := m.SetWeight(svc.Key(), ap("192.0.2.42:80"), 0); return err },
			[]string{"TCP 203.0.113.41:80 wlc", "-> 192.0.2.41:80 Masq 1", "-> 192.0.2.42:80 Masq 0"}},
		{"maintenance: removed", func() error { _, err := m.RemoveRealServer(svc.Key(), ap("192.0.2.42:80")); return err },
			[]string{"TCP 203.0.113.41:80 wlc", "-> 192.0.2.41:80 Masq 1"}},
		{"ready: back", func() error {
			_, err := m.SetRealServer(svc.Key(), RealServer{Name: "r2", Address: ap("192.0.2.42:80"), Weight: 4})
			return err
		}, []string{"TCP 203.0.113.41:80 wlc", "-> 192.0.2.41:80 Masq 1", "-> 192.0.2.42:80 Masq 4"}},
		{"removed from the configuration", func() error {
			s := svc
			s.RealServers = s.RealServers[1:]
			_, err := m.Reconcile([]Service{s})
			return err
		}, []string{"TCP 203.0.113.41:80 wlc", "-> 192.0.2.42:80 Masq 1"}},
		{"scheduler changed in place", func() error {
			s := svc
			s.RealServers, s.Scheduler = s.RealServers[1:], "lc"
			_, err := m.Reconcile([]Service{s})
			return err
		}, []string{"TCP 203.0.113.41:80 lc", "-> 192.0.2.42:80 Masq 1"}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := ipvsadm(t)[key]; !slices.Equal(got, s.want) {
			t.Fatalf("%s: ipvsadm -Ln:\n%s\nwant:\n%s", s.name, strings.Join(got, "\n"), strings.Join(s.want, "\n"))
		}
	}
}

// Services that are not on a VIP address of the configuration (made here
// with ipvsadm, as another tool would) are left alone.
func TestVMUnownedUntouched(t *testing.T) {
	needVM(t)
	for _, args := range [][]string{
		{"-A", "-t", "198.51.100.77:80", "-s", "rr"},
		{"-a", "-t", "198.51.100.77:80", "-r", "192.0.2.9:80", "-g", "-w", "3"},
		{"-A", "-u", "198.51.100.77:53", "-s", "wrr"},
		{"-A", "-f", "7", "-s", "rr"},
		{"-a", "-f", "7", "-r", "192.0.2.9", "-g"},
	} {
		if out, err := exec.Command("ipvsadm", args...).CombinedOutput(); err != nil {
			t.Fatalf("ipvsadm %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ipvsadm", "-D", "-t", "198.51.100.77:80").Run()
		exec.Command("ipvsadm", "-D", "-u", "198.51.100.77:53").Run()
		exec.Command("ipvsadm", "-D", "-f", "7").Run()
	})
	foreign := func() string {
		all := ipvsadm(t)
		return fmt.Sprint(all["TCP 198.51.100.77:80"], all["UDP 198.51.100.77:53"], all["FWM 7"])
	}
	before := foreign()
	m, rec := newRecordingManager(t)
	svc := Service{Name: "mine", VIP: ap("203.0.113.42:80"), Forwarding: NAT,
		RealServers: []RealServer{{Name: "r", Address: ap("192.0.2.41:80"), Weight: 1}}}
	for _, desired := range [][]Service{{svc}, nil} {
		if _, err := m.Reconcile(desired); err != nil {
			t.Fatal(err)
		}
		if after := foreign(); after != before {
			t.Fatalf("foreign services changed:\nbefore %s\nafter  %s", before, after)
		}
	}
	for _, op := range rec.ops {
		if !strings.Contains(op, "203.0.113.42:80") {
			t.Errorf("change outside the owned VIP: %s", op)
		}
	}
}

// Without CAP_NET_ADMIN (an unprivileged user), New names the cause and the
// fix.
func TestVMPermission(t *testing.T) {
	needVM(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "FULCRUM_L4_CHILD=new")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), ErrPermission.Error()) {
		t.Fatalf("New without CAP_NET_ADMIN: %s\nwant: %v", out, ErrPermission)
	}
}

// A service with a scheduler whose module is not loaded (the VM loads no
// ip_vs_sed) fails with the module to load.
func TestVMMissingScheduler(t *testing.T) {
	needVM(t)
	m := newManager(t)
	_, err := m.Reconcile([]Service{{Name: "sed", VIP: ap("203.0.113.43:80"),
		Scheduler: "sed", RealServers: []RealServer{{Name: "r", Address: ap("192.0.2.41:80")}}}})
	if !errors.Is(err, ErrNoScheduler) || !strings.Contains(err.Error(), "modprobe ip_vs_sed") {
		t.Fatalf("got %v, want ErrNoScheduler naming ip_vs_sed", err)
	}
	m.Reconcile(nil)
}
