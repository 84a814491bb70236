package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/healthcheck"
	"github.com/fulcrumlb/fulcrum/l4"
)

// fakeIPVS stands in for l4.Manager: it records what each Reconcile was
// asked for (this kernel has no IPVS; l4's own tests run in a VM).
type fakeIPVS struct {
	mu       sync.Mutex
	calls    [][]l4.Service
	err      error // returned by Reconcile
	stats    []l4.ServiceStats
	statsErr error
	closed   bool
}

func (f *fakeIPVS) Reconcile(desired []l4.Service) ([]l4.Change, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cp := slices.Clone(desired)
	for i := range cp {
		cp[i].RealServers = slices.Clone(cp[i].RealServers)
	}
	f.calls = append(f.calls, cp)
	return nil, f.err
}

func (f *fakeIPVS) Stats() ([]l4.ServiceStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats, f.statsErr
}

func (f *fakeIPVS) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// last returns the last desired state and how many Reconciles there were.
func (f *fakeIPVS) last() ([]l4.Service, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return nil, 0
	}
	return f.calls[len(f.calls)-1], len(f.calls)
}

// weights renders the last desired state as "svc: name=weight ...; ...".
func (f *fakeIPVS) weights() string {
	desired, _ := f.last()
	var parts []string
	for _, s := range desired {
		var rs []string
		for _, r := range s.RealServers {
			rs = append(rs, fmt.Sprintf("%s=%d", r.Name, r.Weight))
		}
		parts = append(parts, s.Name+": "+strings.Join(rs, " "))
	}
	return strings.Join(parts, "; ")
}

// waitWeights waits until the last desired state renders as want.
func (f *fakeIPVS) waitWeights(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.weights() != want {
		if time.Now().After(deadline) {
			t.Fatalf("IPVS desired state %q, want %q", f.weights(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func l4TestService(name, mode, vip string, servers ...*config.RealServer) *config.VirtualService {
	for _, rs := range servers {
		if rs.State == "" {
			rs.State = config.StateReady
		}
	}
	return &config.VirtualService{
		Name: name, Listen: []string{vip}, Mode: mode, Protocol: config.ProtocolTCP, Scheduler: "wlc",
		HealthCheck: config.HealthCheck{Type: config.CheckNone},
		RealServers: servers,
	}
}

// startL4 starts a proxy for cfg whose IPVS is fake.
func startL4(t *testing.T, cfg *config.Config, fake *fakeIPVS) *Proxy {
	t.Helper()
	p, err := New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	p.l4.newManager = func() (l4Manager, error) { return fake, nil }
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(timeoutCtx(t, time.Second)) })
	return p
}

func TestL4DesiredState(t *testing.T) {
	rdp := l4TestService("rdp", config.ModeDR, "10.0.0.30:3389",
		&config.RealServer{Name: "a", Address: "10.0.0.41:3389", Weight: 3},
		&config.RealServer{Name: "b", Address: "10.0.0.42:3389", Weight: 1},
		&config.RealServer{Name: "c", Address: "10.0.0.43:3389", Weight: 1, State: config.StateMaintenance},
		&config.RealServer{Name: "d", Address: "10.0.0.44:3389", Weight: 0},
	)
	rdp.Persistence = config.Persistence{Method: config.PersistSourceIP, Timeout: 2 * time.Hour, SourceMask: 24, SourceMask6: 64}
	dns := l4TestService("dns", config.ModeNAT, "[2001:db8::53]:53", &config.RealServer{Name: "n1", Address: "[2001:db8::1]:5353", Weight: 1})
	dns.Protocol = config.ProtocolUDP
	dns.Persistence = config.Persistence{Method: config.PersistSourceIP, Timeout: time.Minute, SourceMask: 24, SourceMask6: 48}
	web := testService("web", "127.0.0.1:0", &config.RealServer{Name: "w", Address: "127.0.0.1:1", Weight: 1})
	fake := &fakeIPVS{}
	p := startL4(t, testConfig(rdp, web, dns), fake)

	// Start returns with the kernel programmed: no wait.
	desired, n := fake.last()
	if n != 1 {
		t.Fatalf("%d Reconciles at Start, want 1", n)
	}
	want := []l4.Service{
		{
			Name: "rdp", Protocol: l4.TCP, VIP: netip.MustParseAddrPort("10.0.0.30:3389"), Forwarding: l4.DirectRouting,
			Scheduler: "wlc", Persistence: 2 * time.Hour, PersistenceMask: 24,
			RealServers: []l4.RealServer{
				{Name: "a", Address: netip.MustParseAddrPort("10.0.0.41:3389"), Weight: 3},
				{Name: "b", Address: netip.MustParseAddrPort("10.0.0.42:3389"), Weight: 1},
				// c: maintenance, left out; d: weight 0 in the file.
				{Name: "d", Address: netip.MustParseAddrPort("10.0.0.44:3389"), Weight: 0},
			},
		},
		{
			Name: "dns", Protocol: l4.UDP, VIP: netip.MustParseAddrPort("[2001:db8::53]:53"), Forwarding: l4.NAT,
			Scheduler: "wlc", Persistence: time.Minute, PersistenceMask: 48,
			RealServers: []l4.RealServer{{Name: "n1", Address: netip.MustParseAddrPort("[2001:db8::1]:5353"), Weight: 1}},
		},
	}
	if fmt.Sprint(desired) != fmt.Sprint(want) {
		t.Errorf("desired\n%+v\nwant\n%+v", desired, want)
	}
	for _, s := range p.Services() {
		if s.Name != "web" && len(s.Addrs()) != 0 {
			t.Errorf("L4 service %s bound %v: it must bind nothing", s.Name, s.Addrs())
		}
	}
	for _, d := range want {
		if err := d.Validate(); err != nil {
			t.Errorf("the desired state is not valid for l4: %v", err)
		}
	}
}

func TestL4FollowsStates(t *testing.T) {
	svc := l4TestService("rdp", config.ModeDR, "10.0.0.30:3389",
		&config.RealServer{Name: "a", Address: "10.0.0.41:3389", Weight: 3},
		&config.RealServer{Name: "b", Address: "10.0.0.42:3389", Weight: 1},
	)
	fake := &fakeIPVS{}
	p := startL4(t, testConfig(svc), fake)
	fake.waitWeights(t, "rdp: a=3 b=1")

	steps := []struct {
		name   string
		change func() error
		want   string
	}{
		{"drain: weight 0, quiescent", func() error { return p.SetState("rdp", "b", "drain") }, "rdp: a=3 b=0"},
		{"maintenance: removed", func() error { return p.SetState("rdp", "b", "maintenance") }, "rdp: a=3"},
		{"ready again", func() error { return p.SetState("rdp", "b", "ready") }, "rdp: a=3 b=1"},
		{"weight from the API", func() error { return p.SetWeight("rdp", "a", 7) }, "rdp: a=7 b=1"},
		{"down: weight 0", func() error {
			healthOf(p, "rdp", "a").HealthChanged(false, healthcheck.Result{Detail: "test"})
			return nil
		}, "rdp: a=0 b=1"},
		{"up", func() error {
			healthOf(p, "rdp", "a").HealthChanged(true, healthcheck.Result{Detail: "test"})
			return nil
		}, "rdp: a=7 b=1"},
		{"added through the API", func() error {
			return p.AddRealServer("rdp", &config.RealServer{Name: "c", Address: "10.0.0.43:3389", Weight: 2})
		}, "rdp: a=7 b=1 c=2"},
		{"removed through the API", func() error { return p.RemoveRealServer("rdp", "b") }, "rdp: a=7 c=2"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := st.change(); err != nil {
				t.Fatal(err)
			}
			fake.waitWeights(t, st.want)
		})
	}
}

// healthOf returns a reporter for a real server, as its monitor would
// report (TestSlowStart does the same).
func healthOf(p *Proxy, service, server string) *reporter {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, rs, err := p.find(service, server)
	if err != nil {
		panic(err)
	}
	return &reporter{rs: rs}
}

// TestL4HealthCheck flips a real health check: a nat real server whose
// port stops accepting goes to weight 0, and back when it accepts again.
func TestL4HealthCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	go acceptAndClose(ln)
	svc := l4TestService("web", config.ModeNAT, "10.0.0.30:80", &config.RealServer{Name: "a", Address: addr, Weight: 2})
	svc.HealthCheck = config.HealthCheck{Type: config.CheckTCP, Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 1, Fall: 1}
	fake := &fakeIPVS{}
	startL4(t, testConfig(svc), fake)
	fake.waitWeights(t, "web: a=2")

	ln.Close()
	fake.waitWeights(t, "web: a=0")
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	fake.waitWeights(t, "web: a=2")
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func TestL4SlowStart(t *testing.T) {
	svc := l4TestService("rdp", config.ModeDR, "10.0.0.30:3389", &config.RealServer{Name: "a", Address: "10.0.0.41:3389", Weight: 100})
	svc.HealthCheck.SlowStart = 500 * time.Millisecond
	fake := &fakeIPVS{}
	p := startL4(t, testConfig(svc), fake)
	rep := healthOf(p, "rdp", "a")
	rep.HealthChanged(false, healthcheck.Result{Detail: "test"})
	fake.waitWeights(t, "rdp: a=0")
	rep.HealthChanged(true, healthcheck.Result{Detail: "test"})
	seen := map[int]bool{}
	deadline := time.Now().Add(5 * time.Second)
	for fake.weights() != "rdp: a=100" {
		if time.Now().After(deadline) {
			t.Fatalf("weight %q, want a=100 after the ramp", fake.weights())
		}
		desired, _ := fake.last()
		seen[desired[0].RealServers[0].Weight] = true
		time.Sleep(time.Millisecond)
	}
	var ramp []int
	for w := range seen {
		if w > 0 && w < 100 {
			ramp = append(ramp, w)
		}
	}
	if len(ramp) < 2 {
		t.Errorf("weights programmed during the ramp: %v, want steps between 0 and 100", seen)
	}
}

func TestL4Reload(t *testing.T) {
	rdp := l4TestService("rdp", config.ModeDR, "10.0.0.30:3389", &config.RealServer{Name: "a", Address: "10.0.0.41:3389", Weight: 1})
	web := testService("web", "127.0.0.1:0", &config.RealServer{Name: "w", Address: "127.0.0.1:1", Weight: 1})
	fake := &fakeIPVS{}
	p := startL4(t, testConfig(rdp, web), fake)
	fake.waitWeights(t, "rdp: a=1")

	// Same name, new mode and VIP: a new service takes the old one's place.
	nat := l4TestService("rdp", config.ModeNAT, "10.0.0.31:3389", &config.RealServer{Name: "a", Address: "10.0.0.41:13389", Weight: 2})
	if err := p.Apply(testConfig(nat, web)); err != nil {
		t.Fatal(err)
	}
	desired, _ := fake.last()
	if len(desired) != 1 || desired[0].Forwarding != l4.NAT || desired[0].VIP.String() != "10.0.0.31:3389" || desired[0].RealServers[0].Weight != 2 {
		t.Errorf("after the reload: %+v", desired)
	}
	// Removed: Apply returns with it out of the desired state.
	if err := p.Apply(testConfig(web)); err != nil {
		t.Fatal(err)
	}
	if desired, n := fake.last(); len(desired) != 0 {
		t.Errorf("after removing the L4 service: Reconcile #%d wants %+v, want nothing", n, desired)
	}
}

func TestL4ReloadAddsFirstL4Service(t *testing.T) {
	web := testService("web", "127.0.0.1:0", &config.RealServer{Name: "w", Address: "127.0.0.1:1", Weight: 1})
	p := startProxy(t, testConfig(web))
	var calls int
	p.l4.newManager = func() (l4Manager, error) {
		calls++
		return nil, fmt.Errorf("l4: %w", l4.ErrPermission)
	}
	rdp := l4TestService("rdp", config.ModeDR, "10.0.0.30:3389", &config.RealServer{Name: "a", Address: "10.0.0.41:3389", Weight: 1})
	err := p.Apply(testConfig(web, rdp))
	if !errors.Is(err, l4.ErrPermission) || !strings.Contains(err.Error(), `virtual service "rdp": mode dr needs the kernel's IPVS`) {
		t.Fatalf("Apply: %v, want ErrPermission naming the service", err)
	}
	if n := len(p.Services()); n != 1 {
		t.Errorf("%d services after a refused reload, want the old 1", n)
	}
	fake := &fakeIPVS{}
	p.l4.newManager = func() (l4Manager, error) { calls++; return fake, nil }
	if err := p.Apply(testConfig(web, rdp)); err != nil {
		t.Fatal(err)
	}
	fake.waitWeights(t, "rdp: a=1")
	if err := p.Apply(testConfig(web, rdp)); err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Errorf("the IPVS connection was opened %d times, want once more after the failure", calls-1)
	}
}

func TestL4StartWithoutIPVS(t *testing.T) {
	for _, sentinel := range []error{l4.ErrNoIPVS, l4.ErrPermission} {
		t.Run(sentinel.Error()[:20], func(t *testing.T) {
			web := testService("web", "127.0.0.1:0", &config.RealServer{Name: "w", Address: "127.0.0.1:1", Weight: 1})
			rdp := l4TestService("rdp", config.ModeTUN, "10.0.0.30:3389", &config.RealServer{Name: "a", Address: "10.0.0.41:3389", Weight: 1})
			p, err := New(testConfig(web, rdp), zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			p.l4.newManager = func() (l4Manager, error) { return nil, fmt.Errorf("l4: %w", sentinel) }
			err = p.Start()
			if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), `virtual service "rdp": mode tun needs the kernel's IPVS: `) {
				t.Fatalf("Start: %v, want %v naming the service", err, sentinel)
			}
			if a := p.Services()[0].Addrs(); len(a) != 0 {
				t.Errorf("web listens on %v after a failed Start", a)
			}
		})
	}
	// Without an L4 service, IPVS is never opened.
	web := testService("web", "127.0.0.1:0", &config.RealServer{Name: "w", Address: "127.0.0.1:1", Weight: 1})
	p, err := New(testConfig(web), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	p.l4.newManager = func() (l4Manager, error) { t.Error("IPVS opened without an L4 service"); return nil, l4.ErrNoIPVS }
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	p.Shutdown(timeoutCtx(t, time.Second))
}

func TestL4ReconcileErrors(t *testing.T) {
	svc := l4TestService("rdp", config.ModeDR, "10.0.0.30:3389", &config.RealServer{Name: "a", Address: "10.0.0.41:3389", Weight: 1})
	fake := &fakeIPVS{err: errors.New("l4: add service tcp 10.0.0.30:3389: the kernel has no such IPVS scheduler")}
	p := startL4(t, testConfig(svc), fake) // a Reconcile error does not fail Start
	ipvsEvents := func() []Event {
		var out []Event
		for _, e := range p.Events(0) {
			if e.Kind == EventIPVS {
				out = append(out, e)
			}
		}
		return out
	}
	if ev := ipvsEvents(); len(ev) != 1 || !strings.Contains(ev[0].Message, "no such IPVS scheduler") {
		t.Fatalf("events %+v, want one ipvs event with the error", ev)
	}
	// Retried on the next signal; the same error is not told again.
	_, n := fake.last()
	p.SetWeight("rdp", "a", 2)
	waitFor(t, func() bool { _, m := fake.last(); return m > n })
	if ev := ipvsEvents(); len(ev) != 1 {
		t.Errorf("events %+v after the same error again, want still one", ev)
	}
	fake.mu.Lock()
	fake.err = nil
	fake.mu.Unlock()
	p.SetWeight("rdp", "a", 3)
	waitFor(t, func() bool { return len(ipvsEvents()) == 2 })
	if ev := ipvsEvents(); ev[1].Message != "IPVS programmed as configured again" {
		t.Errorf("recovery event %+v", ev[1])
	}
}

func TestL4Shutdown(t *testing.T) {
	svc := l4TestService("rdp", config.ModeDR, "10.0.0.30:3389", &config.RealServer{Name: "a", Address: "10.0.0.41:3389", Weight: 1})
	fake := &fakeIPVS{}
	p, err := New(testConfig(svc), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	p.l4.newManager = func() (l4Manager, error) { return fake, nil }
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	_, n := fake.last()
	p.Shutdown(timeoutCtx(t, time.Second))
	desired, m := fake.last()
	fake.mu.Lock()
	closed := fake.closed
	fake.mu.Unlock()
	// The kernel keeps the services: no Reconcile removes them.
	if m != n || len(desired) != 1 || !closed {
		t.Errorf("after Shutdown: %d Reconciles (was %d), last %+v, closed %t; want no new Reconcile and a closed manager", m, n, desired, closed)
	}
}

func TestL4Status(t *testing.T) {
	svc := l4TestService("rdp", config.ModeDR, "10.0.0.30:3389",
		&config.RealServer{Name: "a", Address: "10.0.0.41:3389", Weight: 1},
		&config.RealServer{Name: "b", Address: "10.0.0.42:3389", Weight: 1, State: config.StateMaintenance},
	)
	fake := &fakeIPVS{stats: []l4.ServiceStats{{
		Name: "rdp", Counters: l4.Counters{Connections: 10},
		RealServers: []l4.RealServerStats{{
			Address: netip.MustParseAddrPort("10.0.0.41:3389"), Name: "a", Weight: 1,
			ActiveConns: 3, InactiveConns: 2,
			Counters: l4.Counters{Connections: 9, InPackets: 100, OutPackets: 0, InBytes: 5000, OutBytes: 0},
		}},
	}}}
	p := startL4(t, testConfig(svc), fake)
	st := p.Status().Services[0]
	a, b := st.RealServers[0], st.RealServers[1]
	if st.Mode != "dr" || st.Protocol != "tcp" || st.Listen[0] != "10.0.0.30:3389" || st.Requests != 10 || st.ActiveConns != 3 || st.Color != ColorBlue {
		t.Errorf("service status %+v", st)
	}
	if a.Requests != 9 || a.Active != 3 || a.InactiveConns != 2 || a.BytesOut != 5000 || a.PacketsOut != 100 || a.BytesIn != 0 || a.Color != ColorGreen {
		t.Errorf("real server a %+v", a)
	}
	if b.Requests != 0 || b.State != config.StateMaintenance || b.Color != ColorBlue {
		t.Errorf("real server b %+v", b)
	}
	// Unreadable counters: zeros, not a failed status.
	fake.mu.Lock()
	fake.statsErr = errors.New("netlink: boom")
	fake.mu.Unlock()
	if st := p.Status().Services[0]; st.Requests != 0 || st.RealServers[0].Requests != 0 || st.Color != ColorBlue {
		t.Errorf("status without counters %+v", st)
	}
}

func TestL4AddRealServerChecked(t *testing.T) {
	svc := l4TestService("rdp", config.ModeDR, "10.0.0.30:3389", &config.RealServer{Name: "a", Address: "10.0.0.41:3389", Weight: 1})
	fake := &fakeIPVS{}
	p := startL4(t, testConfig(svc), fake)
	for _, rc := range []*config.RealServer{
		{Name: "port", Address: "10.0.0.42:3390", Weight: 1},
		{Name: "family", Address: "[2001:db8::1]:3389", Weight: 1},
		{Name: "maxconns", Address: "10.0.0.43:3389", Weight: 1, MaxConns: 5},
	} {
		if err := p.AddRealServer("rdp", rc); !errors.Is(err, ErrInvalid) {
			t.Errorf("AddRealServer %s: %v, want ErrInvalid", rc.Name, err)
		}
	}
	fake.waitWeights(t, "rdp: a=1")
}
