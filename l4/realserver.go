package l4

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Command is one step of a real server's setup: a Linux command and what it
// is for.
type Command struct {
	// Argv is the command and its arguments, run as is (no shell).
	Argv []string
	// Why says what the command does, for a comment line above it.
	Why string
}

// String returns the command as a shell command line (no argument here
// needs quoting).
func (c Command) String() string { return strings.Join(c.Argv, " ") }

// ErrIPv6Tunnel means RealServerCommands has no tun setup for an IPv6 VIP:
// IPVS tunnels IPv6 in IPv6 (ip6_tunnel's ip6tnl0), which Fulcrum's VM
// tests do not cover yet.
var ErrIPv6Tunnel = errors.New("mode tun with an IPv6 VIP is not supported yet (only IPv4 VIPs, or dr)")

// RealServerCommands returns the Linux commands that prepare a real server
// to take a VIP's traffic in mode dr or tun: the step most often missed in
// direct routing setups. nat needs none (only a default route through the
// director): the result is empty. The addresses are set with `ip addr
// replace`, so that running the commands again changes nothing and fails
// nowhere. The settings do not survive a reboot: make them permanent in
// /etc/sysctl.d and the network configuration.
//
//   - dr: the VIP on lo as a /32, so the real server accepts packets for
//     it; arp_ignore=1 (answer ARP only for addresses of the interface it
//     arrives on, never for the VIP on lo) and arp_announce=2 (never use the
//     VIP as the source of ARP requests): only the director may claim the VIP
//     on the link (Documentation/networking/ip-sysctl.rst).
//   - dr, IPv6: the VIP on lo as a /128, nothing else: Linux answers a
//     neighbor solicitation only for the addresses of the interface it
//     arrives on (ndisc_recv_ns looks the target up strictly on that
//     device), never for one on lo, so the real server stays silent about
//     the VIP without a sysctl (there is no arp_ignore for IPv6).
//   - tun: the ipip module's tunl0 up with the VIP on it, and reverse path
//     filtering off, since the decapsulated packets come from clients that
//     tunl0 has no route back to; and the dr ARP settings, in case the real
//     server shares the director's link. IPv4 only (ErrIPv6Tunnel).
func RealServerCommands(vip netip.Addr, mode Forwarding) ([]Command, error) {
	vip = vip.Unmap()
	if !vip.IsValid() || vip.IsUnspecified() || vip.IsLoopback() || vip.IsMulticast() || vip.Zone() != "" {
		return nil, fmt.Errorf("real server setup: VIP %s: want the virtual service's own unicast address", vip)
	}
	arp := []Command{
		{[]string{"sysctl", "-w", "net.ipv4.conf.all.arp_ignore=1"},
			"answer ARP only for addresses of the interface asked: never for the VIP, which is on " + vipDevice(mode)},
		{[]string{"sysctl", "-w", "net.ipv4.conf.all.arp_announce=2"},
			"never use the VIP as the source address of ARP requests: only the director may claim it on the link"},
	}
	switch mode {
	case DirectRouting:
		if vip.Is6() {
			return []Command{{[]string{"ip", "-6", "addr", "replace", vip.String() + "/128", "dev", "lo"},
				"accept packets for the VIP (Linux answers neighbor solicitations only for addresses of the interface asked, so not for this one)"}}, nil
		}
		return append(arp, Command{[]string{"ip", "addr", "replace", vip.String() + "/32", "dev", "lo"},
			"accept packets for the VIP: the director forwards them unchanged, only the MAC address rewritten"}), nil
	case Tunnel:
		if vip.Is6() {
			return nil, fmt.Errorf("real server setup: VIP %s: %w", vip, ErrIPv6Tunnel)
		}
		return append(arp,
			Command{[]string{"modprobe", "ipip"}, "load the IP-in-IP tunnel driver (RFC 2003), which creates tunl0"},
			Command{[]string{"ip", "link", "set", "tunl0", "up"}, "decapsulate the director's IP-in-IP packets on tunl0"},
			Command{[]string{"ip", "addr", "replace", vip.String() + "/32", "dev", "tunl0"},
				"accept the decapsulated packets, addressed to the VIP"},
			Command{[]string{"sysctl", "-w", "net.ipv4.conf.tunl0.rp_filter=0"},
				"keep the decapsulated packets: their clients are not reachable through tunl0 (reverse path filter)"},
			Command{[]string{"sysctl", "-w", "net.ipv4.conf.all.rp_filter=0"},
				"the kernel applies the larger of all's and tunl0's rp_filter: all must be 0 too"},
		), nil
	case NAT:
		return nil, nil
	}
	return nil, fmt.Errorf("real server setup: mode %q: want dr, tun or nat", mode)
}

// vipDevice names where the real server holds the VIP in mode.
func vipDevice(mode Forwarding) string {
	if mode == Tunnel {
		return "tunl0"
	}
	return "lo"
}
