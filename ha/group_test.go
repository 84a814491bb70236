package ha

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGroup runs a Group of both families on fake Conns: one Node per
// family, the overrides reach both, notify runs per transition, and Stop
// is graceful.
func TestGroup(t *testing.T) {
	conns := map[bool]*fakeConn{}
	dir := t.TempDir()
	out := filepath.Join(dir, "notify.log")
	script := filepath.Join(dir, "notify")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$@\" >> "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	addrs := &FakeAddresses{}
	v4, v6 := netip.MustParsePrefix("10.0.0.21/24"), netip.MustParsePrefix("fd00::21/64")
	g, err := NewGroup(GroupConfig{
		Interface: "eth0", VRID: 51, Priority: 150, AdvertInterval: 10 * time.Millisecond, Preempt: true,
		VIPs:   []netip.Prefix{v4, v6},
		Notify: []string{script, "arg"},
		Listen: func(cc ConnConfig) (Conn, error) {
			local := netip.MustParseAddr("10.0.0.1")
			if cc.IPv6 {
				local = netip.MustParseAddr("fe80::1")
			}
			c := newFakeConn(local)
			conns[cc.IPv6] = c
			return c, nil
		},
		Addrs: addrs,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.nodes) != 2 {
		t.Fatalf("%d nodes, want 2", len(g.nodes))
	}
	g.Start(context.Background())
	// Nobody else: both become Master after Master_Down_Interval (~35ms).
	waitFor(t, func() bool { return g.Status().State == "master" })
	if !addrs.Held(v4, v6) {
		t.Errorf("addresses not held: %v", addrs.Calls())
	}

	if err := g.Release(); err != nil {
		t.Fatal(err)
	}
	st := g.Status()
	if st.Override != "release" || st.Families[0].Priority != ReleasePriority || st.Families[1].Priority != ReleasePriority {
		t.Errorf("after Release: %+v", st)
	}
	if err := g.Takeover(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return g.Status().State == "master" })
	if st := g.Status(); st.Families[0].Priority != TakeoverPriority {
		t.Errorf("after Takeover: %+v", st)
	}
	if err := g.Auto(); err != nil {
		t.Fatal(err)
	}
	if st := g.Status(); st.Override != "" || st.Families[1].Priority != 150 {
		t.Errorf("after Auto: %+v", st)
	}
	g.Stop()
	if addrs.Held(v4) || addrs.Held(v6) {
		t.Errorf("addresses still held after Stop: %v", addrs.Calls())
	}
	if err := g.Takeover(); err == nil {
		t.Error("Takeover after Stop: no error")
	}
	log, _ := os.ReadFile(out)
	for _, want := range []string{"arg backup 51 150", "arg master 51 150", "arg initialize 51 150"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("notify log lacks %q:\n%s", want, log)
		}
	}
}
