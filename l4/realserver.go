package l4

import (
	"fmt"
	"net/netip"
	"strings"
)

// RealServerCommands returns the Linux commands (argv form, for printing
// with CommandString or running one by one) that prepare a real server to
// take a VIP's traffic in mode dr or tun: the step most often missed in
// direct routing setups. nat needs none (only a default route through the
// director). The settings do not survive a reboot: make them permanent in
// /etc/sysctl.d and the network configuration.
//
//   - dr: the VIP on lo as a /32, so the real server accepts packets for
//     it; arp_ignore=1 (answer ARP only for addresses of the interface it
//     arrives on, never for the VIP on lo) and arp_announce=2 (never use the
//     VIP as the source of ARP requests): only the director may claim the VIP
//     on the link (ip-sysctl.rst).
//   - tun: the ipip module's tunl0 up with the VIP on it, and reverse path
//     filtering off, since the decapsulated packets come from clients that
//     tunl0 has no route back to; and the dr ARP settings, in case the real
//     server shares the director's link.
//
// Only IPv4 is generated.
func RealServerCommands(vip netip.Addr, mode Forwarding) ([][]string, error) {
	vip = vip.Unmap()
	if !vip.Is4() || vip.IsUnspecified() {
		return nil, fmt.Errorf("real server setup: VIP %s: only IPv4 VIPs are supported", vip)
	}
	arp := [][]string{
		{"sysctl", "-w", "net.ipv4.conf.all.arp_ignore=1"},
		{"sysctl", "-w", "net.ipv4.conf.all.arp_announce=2"},
	}
	switch mode {
	case DirectRouting:
		return append(arp, []string{"ip", "addr", "add", vip.String() + "/32", "dev", "lo"}), nil
	case Tunnel:
		return append(arp,
			[]string{"modprobe", "ipip"},
			[]string{"ip", "link", "set", "tunl0", "up"},
			[]string{"ip", "addr", "add", vip.String() + "/32", "dev", "tunl0"},
			[]string{"sysctl", "-w", "net.ipv4.conf.tunl0.rp_filter=0"},
			[]string{"sysctl", "-w", "net.ipv4.conf.all.rp_filter=0"},
		), nil
	case NAT:
		return nil, nil
	}
	return nil, fmt.Errorf("real server setup: mode %q: want dr, tun or nat", mode)
}

// CommandString returns argv as a shell command line (no argument here
// needs quoting).
func CommandString(argv []string) string { return strings.Join(argv, " ") }
