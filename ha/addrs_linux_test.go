package ha

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// TestLinkAddresses puts floating IPs on a real interface in a network
// namespace, checks that the neighbour sees the announcements (its stale
// cache entries take our MAC), and removes them. Needs root.
func TestLinkAddresses(t *testing.T) {
	l := newLink(t)
	v4 := netip.MustParsePrefix("192.0.2.100/24")
	v6 := netip.MustParsePrefix("2001:db8::100/64")
	vips := []netip.Prefix{v4, v6}
	// B caches a wrong MAC for both: a gratuitous ARP / an unsolicited NA
	// with Override must replace it (an absent entry may not be created).
	run(t, "ip", "-n", l.nsB, "neigh", "replace", "192.0.2.100", "lladdr", "02:00:00:00:00:99", "dev", l.ifB, "nud", "stale")
	run(t, "ip", "-n", l.nsB, "neigh", "replace", "2001:db8::100", "lladdr", "02:00:00:00:00:99", "dev", l.ifB, "nud", "stale")

	// Right after the link comes up, B may not have its multicast route
	// yet and would drop the advertisements to ff02::1 (no route).
	waitFor(t, func() bool {
		return strings.Contains(ipOut(t, "ip", "-n", l.nsB, "-6", "route", "show", "table", "local"), "ff00::/8 dev "+l.ifB)
	})

	var la *LinkAddresses
	var mac net.HardwareAddr
	err := inNetns(l.nsA, func() error {
		var err error
		if la, err = NewLinkAddresses(l.ifA, zaptest.NewLogger(t)); err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(l.ifA)
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		if err := la.AddVIPs(vips); err != nil {
			return err
		}
		if err := la.AddVIPs(vips); err != nil { // idempotent
			return err
		}
		return la.Announce(vips)
	})
	if err != nil {
		t.Fatal(err)
	}
	la.Wait()
	addrs := ipOut(t, "ip", "-n", l.nsA, "addr", "show", "dev", l.ifA)
	for _, p := range vips {
		if !strings.Contains(addrs, p.String()) {
			t.Errorf("%s not on %s:\n%s", p, l.ifA, addrs)
		}
	}
	neigh := ipOut(t, "ip", "-n", l.nsB, "neigh", "show", "dev", l.ifB)
	for _, a := range []string{"192.0.2.100 ", "2001:db8::100 "} {
		if !strings.Contains(neigh, a+"lladdr "+mac.String()) {
			t.Errorf("B's neighbour cache does not map %sto %s:\n%s", a, mac, neigh)
		}
	}

	if err := inNetns(l.nsA, func() error {
		if err := la.RemoveVIPs(vips); err != nil {
			return err
		}
		return la.RemoveVIPs(vips) // absent: no error
	}); err != nil {
		t.Fatal(err)
	}
	addrs = ipOut(t, "ip", "-n", l.nsA, "addr", "show", "dev", l.ifA)
	for _, p := range vips {
		if strings.Contains(addrs, p.Addr().String()+"/") {
			t.Errorf("%s still on %s:\n%s", p, l.ifA, addrs)
		}
	}
	if err := inNetns(l.nsA, func() error { _, err := NewLinkAddresses("nosuch0", nil); return err }); err == nil {
		t.Error("NewLinkAddresses(nosuch0): no error")
	}
}

func ipOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitFor polls cond until it holds, for at most 5s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
