package l4

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
)

// These tests drive a Manager against fakeIPVS and run everywhere; the same
// behaviour against the real kernel is checked inside the VM
// (ipvs_vm_test.go).

var ap = netip.MustParseAddrPort

func rdpFarm() Service {
	return Service{
		Name: "rdp", VIP: ap("203.0.113.30:3389"), Forwarding: DirectRouting,
		Scheduler: "weighted_least_conn", Persistence: 2 * time.Hour, PersistenceMask: 24,
		RealServers: []RealServer{
			{Name: "ts1", Address: ap("192.0.2.41:3389"), Weight: 1},
			{Name: "ts2", Address: ap("192.0.2.42:3389"), Weight: 2},
		},
	}
}

func webNAT() Service {
	return Service{
		Name: "web", Protocol: TCP, VIP: ap("203.0.113.30:80"), Forwarding: NAT, Scheduler: "rr",
		RealServers: []RealServer{{Name: "w1", Address: ap("192.0.2.51:8080"), Weight: 1}},
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Service)
		wantErr string // "" for valid
	}{
		{"good dr", func(*Service) {}, ""},
		{"good nat translates ports", func(s *Service) {
			s.Forwarding = NAT
			s.RealServers[0].Address = ap("192.0.2.41:13389")
		}, ""},
		{"good udp ipv6", func(s *Service) {
			s.Protocol, s.VIP, s.PersistenceMask = UDP, ap("[2001:db8::30]:3389"), 64
			s.RealServers = []RealServer{{Name: "v6", Address: ap("[2001:db8::41]:3389")}}
		}, ""},
		{"ipv4-mapped addresses are IPv4", func(s *Service) {
			s.VIP = ap("[::ffff:203.0.113.30]:3389")
		}, ""},
		{"bad protocol", func(s *Service) { s.Protocol = "sctp" }, `protocol "sctp": want tcp or udp`},
		{"bad forwarding", func(s *Service) { s.Forwarding = "snat" }, `forwarding "snat": want dr, nat or tun`},
		{"bad scheduler", func(s *Service) { s.Scheduler = "fastest" }, `scheduler "fastest" has no IPVS equivalent`},
		{"no VIP port", func(s *Service) { s.VIP = ap("203.0.113.30:0") }, "VIP must be an address and a port"},
		{"dr port translation", func(s *Service) { s.RealServers[1].Address = ap("192.0.2.42:13389") },
			`real server "ts2" (192.0.2.42:13389): port 13389 differs from the VIP's 3389: dr forwarding does not translate ports`},
		{"tun port translation", func(s *Service) {
			s.RealServers[0].Forwarding = Tunnel
			s.RealServers[0].Address = ap("192.0.2.41:1")
		}, "tun forwarding does not translate ports"},
		{"duplicate real server", func(s *Service) { s.RealServers[1].Address = s.RealServers[0].Address },
			`same address as real server "ts1"`},
		{"family mismatch", func(s *Service) { s.RealServers[0].Address = ap("[2001:db8::41]:3389") },
			"address family differs from the VIP's"},
		{"negative weight", func(s *Service) { s.RealServers[0].Weight = -1 }, "weight -1"},
		{"negative persistence", func(s *Service) { s.Persistence = -time.Second }, "persistence timeout -1s"},
		{"mask too long", func(s *Service) { s.PersistenceMask = 33 }, "persistence mask /33: want 0 to 32"},
		{"every problem at once", func(s *Service) { s.Protocol, s.Scheduler = "icmp", "x" },
			`protocol "icmp": want tcp or udp` + "\n" + `virtual service "rdp" (203.0.113.30:3389): scheduler "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := rdpFarm()
			tt.edit(&s)
			err := s.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate: got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestIPVSScheduler(t *testing.T) {
	for name, want := range map[string]string{
		"": "wlc", "round_robin": "rr", "weighted_round_robin": "wrr", "least_conn": "lc",
		"weighted_least_conn": "wlc", "source_hash": "sh", "maglev": "mh", "mh": "mh", "sed": "sed",
	} {
		if got, err := IPVSScheduler(name); err != nil || got != want {
			t.Errorf("IPVSScheduler(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	for _, name := range []string{"random_two", "uri_hash", "first", "RR"} {
		if _, err := IPVSScheduler(name); err == nil {
			t.Errorf("IPVSScheduler(%q): no error", name)
		}
	}
}

func TestReconcileCreates(t *testing.T) {
	f := newFakeIPVS()
	m := NewWithClient(f)
	changes, err := m.Reconcile([]Service{rdpFarm(), webNAT()})
	if err != nil {
		t.Fatal(err)
	}
	wantChanges := []string{
		"add service tcp 203.0.113.30:80: scheduler rr",
		"add real server tcp 203.0.113.30:80 → 192.0.2.51:8080: nat weight 1",
		"add service tcp 203.0.113.30:3389: scheduler wlc, persistent 7200s mask /24",
		"add real server tcp 203.0.113.30:3389 → 192.0.2.41:3389: dr weight 1",
		"add real server tcp 203.0.113.30:3389 → 192.0.2.42:3389: dr weight 2",
	}
	if got := changeStrings(changes); !slices.Equal(got, wantChanges) {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantChanges, "\n"))
	}
	_, rdp := f.find(ipvs.Service{Address: netip.MustParseAddr("203.0.113.30"), Port: 3389, Protocol: ipvs.TCP})
	want := ipvs.Service{
		Address: netip.MustParseAddr("203.0.113.30"), Port: 3389, Protocol: ipvs.TCP, Family: ipvs.INET,
		Scheduler: "wlc", Flags: ipvs.ServicePersistent, Timeout: 7200, Netmask: netmask.MaskFrom(24, 32),
	}
	if rdp == nil || rdp.svc != want {
		t.Fatalf("kernel service: got %+v, want %+v", rdp, want)
	}
	if d := rdp.dests[1]; d.FwdMethod != ipvs.DirectRoute || d.Weight != 2 || d.Family != ipvs.INET {
		t.Errorf("destination: %+v", d)
	}
	_, web := f.find(ipvs.Service{Address: netip.MustParseAddr("203.0.113.30"), Port: 80, Protocol: ipvs.TCP})
	if web.svc.Flags != 0 || web.svc.Timeout != 0 || web.svc.Netmask != netmask.MaskFrom(32, 32) || web.dests[0].FwdMethod != ipvs.Masquerade {
		t.Errorf("nat service: %+v", web)
	}
}

// Reconciling the same services again, from the same Manager or from a new
// one (a restarted Fulcrum), asks the kernel for no change at all.
func TestReconcileIdempotent(t *testing.T) {
	f := newFakeIPVS()
	desired := []Service{rdpFarm(), webNAT()}
	if _, err := NewWithClient(f).Reconcile(desired); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"same manager", "after a restart"} {
		t.Run(name, func(t *testing.T) {
			m := NewWithClient(f)
			if name == "same manager" {
				m.Reconcile(desired)
			}
			f.ops = nil
			changes, err := m.Reconcile(desired)
			if err != nil || len(changes) != 0 || len(f.ops) != 0 {
				t.Fatalf("second Reconcile: changes %v, kernel operations %v, err %v", changes, f.ops, err)
			}
		})
	}
}

func TestReconcileChanges(t *testing.T) {
	tests := []struct {
		name string
		edit func(s []Service) []Service
		want []string
	}{
		{"weight to 0 (down)", func(s []Service) []Service {
			s[0].RealServers[1].Weight = 0
			return s
		}, []string{"update real server tcp 203.0.113.30:3389 → 192.0.2.42:3389: dr weight 2 → dr weight 0"}},
		{"real server left out (maintenance)", func(s []Service) []Service {
			s[0].RealServers = s[0].RealServers[:1]
			return s
		}, []string{"remove real server tcp 203.0.113.30:3389 → 192.0.2.42:3389"}},
		{"real server added", func(s []Service) []Service {
			s[1].RealServers = append(s[1].RealServers, RealServer{Name: "w2", Address: ap("192.0.2.52:8080"), Weight: 3})
			return s
		}, []string{"add real server tcp 203.0.113.30:80 → 192.0.2.52:8080: nat weight 3"}},
		{"forwarding changed", func(s []Service) []Service {
			s[0].RealServers[0].Forwarding = Tunnel
			return s
		}, []string{"update real server tcp 203.0.113.30:3389 → 192.0.2.41:3389: dr weight 1 → tun weight 1"}},
		{"scheduler and persistence changed", func(s []Service) []Service {
			s[0].Scheduler, s[0].Persistence = "source_hash", 0
			return s
		}, []string{"update service tcp 203.0.113.30:3389: scheduler wlc, persistent 7200s mask /24 → scheduler sh"}},
		{"service removed", func(s []Service) []Service { return s[:1] },
			[]string{"remove service tcp 203.0.113.30:80"}},
		{"everything removed", func(s []Service) []Service { return nil },
			[]string{"remove service tcp 203.0.113.30:80", "remove service tcp 203.0.113.30:3389"}},
		{"protocol changed is another service", func(s []Service) []Service {
			s[1].Protocol = UDP
			return s
		}, []string{
			"add service udp 203.0.113.30:80: scheduler rr",
			"add real server udp 203.0.113.30:80 → 192.0.2.51:8080: nat weight 1",
			"remove service tcp 203.0.113.30:80",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIPVS()
			m := NewWithClient(f)
			if _, err := m.Reconcile([]Service{rdpFarm(), webNAT()}); err != nil {
				t.Fatal(err)
			}
			desired := tt.edit([]Service{rdpFarm(), webNAT()})
			changes, err := m.Reconcile(desired)
			if err != nil {
				t.Fatal(err)
			}
			if got := changeStrings(changes); !slices.Equal(got, tt.want) {
				t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if changes, _ := m.Reconcile(desired); len(changes) != 0 {
				t.Errorf("third Reconcile changed %v", changes)
			}
		})
	}
}

// Services on addresses that are not VIPs of the desired configuration, and
// firewall-mark services, are never touched; a stale service on a VIP
// address is removed.
func TestReconcileOwnership(t *testing.T) {
	f := newFakeIPVS()
	foreign := []ipvs.Service{
		{Address: netip.MustParseAddr("198.51.100.7"), Port: 80, Protocol: ipvs.TCP, Family: ipvs.INET, Scheduler: "rr", Netmask: netmask.MaskFrom(32, 32)},
		{FWMark: 7, Family: ipvs.INET, Scheduler: "rr", Netmask: netmask.MaskFrom(32, 32)},
	}
	for _, s := range foreign {
		f.CreateService(s)
		f.CreateDestination(s, ipvs.Destination{Address: netip.MustParseAddr("192.0.2.9"), Port: 80, Family: ipvs.INET, Weight: 1})
	}
	// Left by an older configuration on a VIP address that is still ours.
	stale := ipvs.Service{Address: netip.MustParseAddr("203.0.113.30"), Port: 443, Protocol: ipvs.TCP, Family: ipvs.INET, Scheduler: "rr", Netmask: netmask.MaskFrom(32, 32)}
	f.CreateService(stale)
	f.ops = nil

	m := NewWithClient(f)
	changes, err := m.Reconcile([]Service{webNAT()})
	if err != nil {
		t.Fatal(err)
	}
	if got := changeStrings(changes); !slices.Contains(got, "remove service tcp 203.0.113.30:443") {
		t.Errorf("stale service on a VIP address not removed: %v", got)
	}
	// A VIP address dropped from the configuration is cleaned up, since this
	// Manager programmed it; the foreign ones still are not touched.
	m.Reconcile([]Service{webNAT(), rdpFarm()})
	other := rdpFarm()
	other.VIP = ap("203.0.113.31:3389")
	changes, err = m.Reconcile([]Service{other})
	if err != nil {
		t.Fatal(err)
	}
	if got := changeStrings(changes); !slices.Contains(got, "remove service tcp 203.0.113.30:80") || !slices.Contains(got, "remove service tcp 203.0.113.30:3389") {
		t.Errorf("services of a dropped VIP address not removed: %v", got)
	}
	// After a restart the dropped address is not known to be ours.
	f.CreateService(stale)
	if changes, _ := NewWithClient(f).Reconcile([]Service{other}); len(changes) != 0 {
		t.Errorf("a new Manager touched a service on an address not in its configuration: %v", changes)
	}
	for _, s := range foreign {
		if _, fs := f.find(s); fs == nil || len(fs.dests) != 1 {
			t.Errorf("foreign service %v was changed: %+v", s, fs)
		}
	}
	for _, op := range f.ops {
		if strings.Contains(op, "198.51.100.7") || strings.Contains(op, "0.0.0.0") || strings.Contains(op, "invalid") {
			t.Errorf("operation on a foreign service: %s", op)
		}
	}
}

func TestSetWeightAndRemove(t *testing.T) {
	f := newFakeIPVS()
	m := NewWithClient(f)
	rdp := rdpFarm()
	if _, err := m.Reconcile([]Service{rdp}); err != nil {
		t.Fatal(err)
	}
	k := rdp.Key()
	steps := []struct {
		name string
		do   func() (*Change, error)
		want string // "" for no change
	}{
		{"down", func() (*Change, error) { return m.SetWeight(k, ap("192.0.2.42:3389"), 0) },
			"update real server tcp 203.0.113.30:3389 → 192.0.2.42:3389: dr weight 2 → dr weight 0"},
		{"down again", func() (*Change, error) { return m.SetWeight(k, ap("192.0.2.42:3389"), 0) }, ""},
		{"maintenance", func() (*Change, error) { return m.RemoveRealServer(k, ap("192.0.2.42:3389")) },
			"remove real server tcp 203.0.113.30:3389 → 192.0.2.42:3389"},
		{"maintenance again", func() (*Change, error) { return m.RemoveRealServer(k, ap("192.0.2.42:3389")) }, ""},
		{"ready", func() (*Change, error) {
			return m.SetRealServer(k, RealServer{Name: "ts2", Address: ap("192.0.2.42:3389"), Weight: 2})
		}, "add real server tcp 203.0.113.30:3389 → 192.0.2.42:3389: dr weight 2"},
	}
	for _, s := range steps {
		c, err := s.do()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := ""
		if c != nil {
			got = c.String()
		}
		if got != s.want {
			t.Fatalf("%s: change %q, want %q", s.name, got, s.want)
		}
	}
	if _, err := m.SetWeight(k, ap("192.0.2.99:3389"), 1); err == nil || !strings.Contains(err.Error(), "has no real server 192.0.2.99:3389") {
		t.Errorf("SetWeight of an unknown real server: %v", err)
	}
	if _, err := m.SetWeight(ServiceKey{TCP, ap("198.51.100.7:80")}, ap("192.0.2.9:80"), 1); err == nil || !strings.Contains(err.Error(), "no virtual service tcp 198.51.100.7:80") {
		t.Errorf("SetWeight on a service not reconciled: %v", err)
	}
	if _, err := m.SetRealServer(k, RealServer{Name: "bad", Address: ap("192.0.2.43:1")}); err == nil || !strings.Contains(err.Error(), "does not translate ports") {
		t.Errorf("SetRealServer with a bad real server: %v", err)
	}
	// The single changes are remembered: reconciling the same state again
	// changes nothing.
	if changes, _ := m.Reconcile([]Service{rdp}); len(changes) != 0 {
		t.Errorf("Reconcile after SetWeight/Remove/Set: %v", changes)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name    string
		failOp  string
		err     error
		is      error
		wantErr string
	}{
		{"no CAP_NET_ADMIN", "Services", syscall.EPERM, ErrPermission, "changing IPVS needs CAP_NET_ADMIN: run fulcrum as root"},
		{"no scheduler module", "CreateService", syscall.ENOENT, ErrNoScheduler, "load it with `modprobe ip_vs_wlc`"},
		{"other errors pass through", "CreateDestination", syscall.EINVAL, syscall.EINVAL, "add 192.0.2.41:3389 to tcp 203.0.113.30:3389: invalid argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIPVS()
			f.fail[tt.failOp] = tt.err
			_, err := NewWithClient(f).Reconcile([]Service{rdpFarm(), webNAT()})
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want errors.Is %v and %q", err, tt.is, tt.wantErr)
			}
		})
	}
	// A failure on one service does not stop the others.
	f := newFakeIPVS()
	f.fail["CreateDestination"] = syscall.EINVAL
	changes, err := NewWithClient(f).Reconcile([]Service{rdpFarm(), webNAT()})
	if err == nil || len(changes) != 2 {
		t.Errorf("changes %v, err %v: want both services added despite the failing real servers", changes, err)
	}
	if _, err := NewWithClient(newFakeIPVS()).Reconcile([]Service{rdpFarm(), rdpFarm()}); err == nil ||
		!strings.Contains(err.Error(), `tcp 203.0.113.30:3389 is also virtual service "rdp"`) {
		t.Errorf("duplicate services: %v", err)
	}
}

func TestStats(t *testing.T) {
	f := newFakeIPVS()
	m := NewWithClient(f)
	if _, err := m.Reconcile([]Service{rdpFarm(), webNAT()}); err != nil {
		t.Fatal(err)
	}
	st, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[1].Name != "rdp" || st[1].Scheduler != "wlc" || len(st[1].RealServers) != 2 ||
		st[1].RealServers[1].Name != "ts2" || st[1].RealServers[1].Weight != 2 || st[1].RealServers[1].Forwarding != DirectRouting {
		t.Errorf("Stats: %+v", st)
	}
}

func changeStrings(cs []Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.String())
	}
	return out
}
