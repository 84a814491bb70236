// Package l4 is a thin binding to the Linux kernel's IPVS (IP Virtual
// Server): it makes the kernel's virtual services and real servers
// (IPVS "destinations") equal to the ones it is given, for the dr, nat and
// tun modes. It makes no decisions: the caller computes each real server's
// weight from its configuration, health and admin state (down or drain:
// weight 0, quiescent; maintenance: left out) and calls Reconcile, or the
// single-real-server operations for a quick change between two reconciles.
//
// # Ownership
//
// A Manager owns every IPVS service (any protocol and port) whose address is
// a VIP address it was given, in the last Reconcile or earlier in this
// process's life, and no other: it never reads, changes or removes a service
// on another address, nor a firewall-mark service. So do not program other
// IPVS services (with ipvsadm or keepalived) on Fulcrum's VIP addresses.
//
// Ownership needs no state kept outside the kernel: after a restart of
// Fulcrum, the first Reconcile with an unchanged configuration finds every
// service and real server already as wanted and changes nothing, so the
// kernel's connections and counters carry on. A VIP address dropped from the
// configuration while Fulcrum was stopped is not owned any more: its services
// stay in the kernel until removed by hand (ipvsadm -D -t VIP:PORT).
package l4

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
)

// Protocol is the transport protocol of a virtual service.
type Protocol string

// The protocols IPVS balances for Fulcrum.
const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// Forwarding is how IPVS sends a client's packets to a real server.
type Forwarding string

// The forwarding methods (ipvsadm's -g, -m and -i).
const (
	// DirectRouting (dr) rewrites only the destination MAC address: the
	// real server must be on the director's link, hold the VIP on a
	// loopback interface without answering ARP for it, and its replies go
	// straight to the client. No port translation.
	DirectRouting Forwarding = "dr"
	// NAT (nat, IPVS "masquerading") rewrites the destination address and
	// port: replies must route back through the director.
	NAT Forwarding = "nat"
	// Tunnel (tun) encapsulates the packet in IP-in-IP (RFC 2003) to the
	// real server, which may be on another network; it decapsulates on
	// tunl0 (module ipip) and replies straight to the client. No port
	// translation.
	Tunnel Forwarding = "tun"
)

// ServiceKey identifies a virtual service in the kernel.
type ServiceKey struct {
	Protocol Protocol
	VIP      netip.AddrPort
}

func (k ServiceKey) String() string { return string(k.Protocol) + " " + k.VIP.String() }

// Service is a desired IPVS virtual service.
type Service struct {
	// Name is the virtual service's name, for messages and Stats.
	Name string
	// Protocol is tcp or udp. If empty, tcp.
	Protocol Protocol
	// VIP is the virtual address and port clients connect to. The address
	// must be local on the director (IPVS takes packets in LOCAL_IN): a
	// floating IP under HA.
	VIP netip.AddrPort
	// Forwarding is the real servers' forwarding method unless one sets its
	// own. If empty, dr.
	Forwarding Forwarding
	// Scheduler is a Fulcrum scheduler keyword (round_robin, …) or an IPVS
	// scheduler name (rr, wrr, lc, wlc, sh, mh, …): see IPVSScheduler. If
	// empty, wlc (ipvsadm's default).
	Scheduler string
	// Persistence is how long a client (see PersistenceMask) keeps going to
	// the same real server after its last connection ends, rounded up to
	// whole seconds (IPVS persistent service, ipvsadm -p). If zero, not
	// persistent.
	Persistence time.Duration
	// PersistenceMask is the prefix length of client addresses that stick
	// together (ipvsadm -M): 24 makes a whole /24 one client. If zero, 32
	// for an IPv4 VIP and 128 for IPv6.
	PersistenceMask int
	// RealServers are the service's destinations. A real server absent here
	// is removed from the kernel.
	RealServers []RealServer
}

// Key returns the service's kernel identity.
func (s *Service) Key() ServiceKey {
	p := s.Protocol
	if p == "" {
		p = TCP
	}
	return ServiceKey{Protocol: p, VIP: unmapPort(s.VIP)}
}

// RealServer is a desired IPVS destination.
type RealServer struct {
	// Name is the real server's name, for messages and Stats.
	Name string
	// Address is the real server's address and port. With dr and tun the
	// port must be the VIP's (the packet is not rewritten).
	Address netip.AddrPort
	// Weight is the IPVS weight, 0 to math.MaxInt32. 0 is quiescent: no new
	// connections, existing ones carry on (down, drain).
	Weight int
	// Forwarding overrides the service's. If empty, the service's.
	Forwarding Forwarding
}

// maxPersistence is the largest timeout IPVS stores (seconds in a u32,
// turned into jiffies in an unsigned long).
const maxPersistence = 31 * 24 * time.Hour

// Validate reports every problem of s at once, each naming the service and
// the real server.
func (s *Service) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("virtual service %q (%s): %s", s.Name, s.VIP, fmt.Sprintf(format, args...)))
	}
	switch s.Protocol {
	case "", TCP, UDP:
	default:
		bad("protocol %q: want tcp or udp", s.Protocol)
	}
	vip := unmapPort(s.VIP)
	if !vip.Addr().IsValid() || vip.Addr().IsUnspecified() || vip.Port() == 0 {
		bad("VIP must be an address and a port, not %s", s.VIP)
	}
	if _, err := IPVSScheduler(s.Scheduler); err != nil {
		bad("%v", err)
	}
	if s.Persistence < 0 || s.Persistence > maxPersistence {
		bad("persistence timeout %v: want 0 (none) to %v", s.Persistence, maxPersistence)
	}
	if bits := vip.Addr().BitLen(); s.PersistenceMask < 0 || s.PersistenceMask > bits && bits > 0 {
		bad("persistence mask /%d: want 0 to %d", s.PersistenceMask, bits)
	}
	if _, err := s.forwarding(""); err != nil {
		bad("%v", err)
	}
	seen := map[netip.AddrPort]string{}
	for _, rs := range s.RealServers {
		badRS := func(format string, args ...any) {
			bad("real server %q (%s): %s", rs.Name, rs.Address, fmt.Sprintf(format, args...))
		}
		addr := unmapPort(rs.Address)
		if !addr.Addr().IsValid() || addr.Addr().IsUnspecified() || addr.Port() == 0 {
			badRS("address must be an address and a port")
			continue
		}
		if prev, dup := seen[addr]; dup {
			badRS("same address as real server %q", prev)
		}
		seen[addr] = rs.Name
		if addr.Addr().Is4() != vip.Addr().Is4() {
			badRS("address family differs from the VIP's")
		}
		if rs.Weight < 0 || rs.Weight > math.MaxInt32 {
			badRS("weight %d: want 0 to %d", rs.Weight, math.MaxInt32)
		}
		fwd, err := s.forwarding(rs.Forwarding)
		if err != nil {
			badRS("%v", err)
		} else if fwd != NAT && addr.Port() != vip.Port() {
			badRS("port %d differs from the VIP's %d: %s forwarding does not translate ports", addr.Port(), vip.Port(), fwd)
		}
	}
	return errors.Join(errs...)
}

// forwarding returns the forwarding method of a real server that asks for
// own (empty: the service's).
func (s *Service) forwarding(own Forwarding) (Forwarding, error) {
	f := own
	if f == "" {
		f = s.Forwarding
	}
	switch f {
	case "":
		return DirectRouting, nil
	case DirectRouting, NAT, Tunnel:
		return f, nil
	}
	return "", fmt.Errorf("forwarding %q: want dr, nat or tun", f)
}

// schedulers maps Fulcrum's scheduler keywords to IPVS's names
// (ip_vs_SCHED modules); IPVS's own names map to themselves.
var schedulers = map[string]string{
	"round_robin":          "rr",
	"weighted_round_robin": "wrr",
	"least_conn":           "lc",
	"weighted_least_conn":  "wlc",
	"source_hash":          "sh",
	"maglev":               "mh",
	// IPVS's names, as ipvsadm -s takes them (ipvsadm(8)).
	"rr": "rr", "wrr": "wrr", "lc": "lc", "wlc": "wlc", "sh": "sh", "mh": "mh",
	"dh": "dh", "sed": "sed", "nq": "nq", "fo": "fo", "ovf": "ovf",
	"lblc": "lblc", "lblcr": "lblcr", "twos": "twos",
}

// IPVSScheduler returns the IPVS scheduler for a Fulcrum keyword or an IPVS
// name. Empty is wlc.
func IPVSScheduler(name string) (string, error) {
	if name == "" {
		return "wlc", nil
	}
	if s, ok := schedulers[name]; ok {
		return s, nil
	}
	return "", fmt.Errorf("scheduler %q has no IPVS equivalent (known: %v)", name, Schedulers())
}

// Schedulers returns the scheduler names IPVSScheduler knows, sorted.
func Schedulers() []string {
	var names []string
	for n := range schedulers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ipvsService converts a validated Service for the ipvs package.
func (s *Service) ipvsService() ipvs.Service {
	k := s.Key()
	sched, _ := IPVSScheduler(s.Scheduler)
	svc := ipvs.Service{
		Address:   k.VIP.Addr(),
		Port:      k.VIP.Port(),
		Protocol:  ipvsProtocol(k.Protocol),
		Family:    family(k.VIP.Addr()),
		Scheduler: sched,
	}
	bits := k.VIP.Addr().BitLen()
	if s.PersistenceMask > 0 {
		bits = s.PersistenceMask
	}
	// The kernel wants a netmask with every service (ip_vs_genl_parse_service
	// refuses one without), used only when persistent.
	svc.Netmask = netmask.MaskFrom(bits, k.VIP.Addr().BitLen())
	if s.Persistence > 0 {
		svc.Flags = ipvs.ServicePersistent
		svc.Timeout = uint32((s.Persistence + time.Second - 1) / time.Second)
	}
	return svc
}

// ipvsDestination converts a real server of a validated Service.
func (s *Service) ipvsDestination(rs RealServer) ipvs.Destination {
	addr := unmapPort(rs.Address)
	fwd, _ := s.forwarding(rs.Forwarding)
	return ipvs.Destination{
		Address:   addr.Addr(),
		Port:      addr.Port(),
		Family:    family(addr.Addr()),
		FwdMethod: ipvsForwarding(fwd),
		Weight:    uint32(rs.Weight),
	}
}

func ipvsProtocol(p Protocol) ipvs.Protocol {
	if p == UDP {
		return ipvs.UDP
	}
	return ipvs.TCP
}

func protocolOf(p ipvs.Protocol) (Protocol, bool) {
	switch p {
	case ipvs.TCP:
		return TCP, true
	case ipvs.UDP:
		return UDP, true
	}
	return "", false
}

func ipvsForwarding(f Forwarding) ipvs.ForwardType {
	switch f {
	case NAT:
		return ipvs.Masquerade
	case Tunnel:
		return ipvs.Tunnel
	}
	return ipvs.DirectRoute
}

func forwardingOf(f ipvs.ForwardType) Forwarding {
	switch f {
	case ipvs.Masquerade:
		return NAT
	case ipvs.Tunnel:
		return Tunnel
	case ipvs.DirectRoute:
		return DirectRouting
	}
	return Forwarding(f.String())
}

func family(a netip.Addr) ipvs.AddressFamily {
	if a.Is4() {
		return ipvs.INET
	}
	return ipvs.INET6
}

// unmapPort turns an IPv4-mapped IPv6 address (::ffff:10.0.0.1) into IPv4,
// the form the kernel reports.
func unmapPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
