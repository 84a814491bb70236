package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// The L4 modes (dr, nat, tun: issue 9): the kernel's IPVS forwards the
// packets, Fulcrum programs it (package l4, which this package may not
// import: it must stay free of netlink) and keeps the health checks, states
// and weights.

// l4Schedulers are the schedulers of an L4 service: Fulcrum's keywords that
// have an IPVS equivalent, then IPVS's own names (ipvsadm(8) -s), each an
// ip_vs_NAME kernel module. l4.IPVSScheduler maps every one of them (a test
// in l4 checks it).
var l4Schedulers = []string{
	"round_robin", "weighted_round_robin", "least_conn", "weighted_least_conn", "source_hash",
	"rr", "wrr", "lc", "wlc", "sh", "mh", "dh", "sed", "nq", "fo", "ovf", "lblc", "lblcr", "twos",
}

// L4Schedulers returns the scheduler names accepted in the L4 modes.
func L4Schedulers() []string { return slices.Clone(l4Schedulers) }

// l4Protocols are the values of virtual_service.protocol.
var l4Protocols = []string{ProtocolTCP, ProtocolUDP}

// l4RefusedKeys are the virtual service keys of the userspace proxy: in the
// L4 modes the kernel forwards each packet and Fulcrum sees no connection,
// request or byte, so they could have no effect. Refused rather than
// ignored, as elsewhere: whoever writes max_conns expects a limit.
var l4RefusedKeys = []string{
	"tls", "accept_proxy", "trusted_proxies", "transparent", "forwarded_for", "forwarded_header",
	"max_conns", "retries", "queue_timeout", "timeouts", "route", "allow", "deny", "rate_limit",
	"compress", "fallback", "request_headers", "response_headers", "hash_header",
	// Passive checks count the failures of live traffic, which the
	// kernel carries.
	"health_check.observe_errors",
	// IPVS's persistence templates are the kernel's: no table to bound.
	"persistence.max_entries",
}

// l4RefusedRealServerKeys are the real server keys of the userspace proxy's
// connections to real servers.
var l4RefusedRealServerKeys = []string{"max_conns", "tls", "tls_server_name", "tls_verify", "tls_ca", "protocol", "send_proxy"}

// MaxL4PersistTimeout bounds persistence.timeout in the L4 modes: IPVS keeps
// the timeout in seconds in a u32 turned into jiffies, and refuses more
// than about a month (l4's maxPersistence).
const MaxL4PersistTimeout = 31 * 24 * time.Hour

// l4 checks the keys of an L4 virtual service but its health check,
// persistence method and real servers' common keys, which virtualService
// checks as for the other modes.
func (v *validator) l4(p path, vs *VirtualService) {
	v.oneOf(p.with("protocol"), vs.Protocol, l4Protocols)
	vip, vipOK := v.l4Listen(p.with("listen"), vs)

	if sp := p.with("scheduler"); !slices.Contains(l4Schedulers, vs.Scheduler) {
		msg := fmt.Sprintf("unknown scheduler %q for mode %s (the kernel's IPVS schedules: %s)",
			vs.Scheduler, vs.Mode, strings.Join(l4Schedulers, ", "))
		if s := closest(vs.Scheduler, l4Schedulers); s != "" {
			msg = fmt.Sprintf("unknown scheduler %q for mode %s (did you mean %q?)", vs.Scheduler, vs.Mode, s)
		}
		v.add(sp, "%s", msg)
	}
	for _, key := range l4RefusedKeys {
		if kp := withKeys(p, key); v.inFile(kp) {
			v.add(kp, "not used in mode %s: the kernel's IPVS forwards the packets, and this key acts on the connections of the userspace proxy (modes http and tcp)", vs.Mode)
		}
	}
	if ps := &vs.Persistence; ps.Method == PersistSourceIP && ps.Timeout > MaxL4PersistTimeout {
		v.add(p.with("persistence").with("timeout"), "must be at most %s in mode %s (IPVS's limit), got %s", MaxL4PersistTimeout, vs.Mode, ps.Timeout)
	}

	rp := p.with("real_server")
	for i, rs := range vs.RealServers {
		p := v.pathOf(rs, rp.elem(i, rs.label))
		for _, key := range l4RefusedRealServerKeys {
			if kp := p.with(key); v.inFile(kp) {
				v.add(kp, "not used in mode %s: the kernel forwards the client's packets to the real server as they are", vs.Mode)
			}
		}
		addr, port, msg := parseHostPort(rs.Address, false)
		if msg != "" || !vipOK {
			continue // reported by realServers, or no VIP to compare with
		}
		ap := p.with("address")
		switch {
		case addr.Is4() != vip.Addr().Is4():
			v.add(ap, "%q and the VIP %s are of different address families: IPVS forwards within one", rs.Address, vip)
		case vs.Mode != ModeNAT && port != vip.Port():
			// dr rewrites only the MAC address and tun wraps the packet
			// whole: the real server gets it for the VIP's port.
			v.add(ap, "port %d differs from the VIP's port %d (listen %q): mode %s does not translate ports, so the real server must serve the VIP's port; use mode nat to translate",
				port, vip.Port(), vs.Listen[0], vs.Mode)
		}
	}
}

// l4Listen checks an L4 service's listen: exactly one address with a
// specific IP (the VIP), which IPVS matches packets against. It returns the
// VIP and whether it is valid.
func (v *validator) l4Listen(lp path, vs *VirtualService) (netip.AddrPort, bool) {
	switch {
	case len(vs.Listen) == 0 && v.inFile(lp):
		return netip.AddrPort{}, false // reported as empty by virtualService
	case len(vs.Listen) == 0:
		v.add(lp, `required in mode %s: the VIP:port clients connect to, such as "10.0.0.30:3389" (services without listen are pools of http services)`, vs.Mode)
		return netip.AddrPort{}, false
	case len(vs.Listen) > 1:
		v.add(lp, "mode %s takes exactly one address (the VIP), got %d: make one virtual service per VIP:port", vs.Mode, len(vs.Listen))
		return netip.AddrPort{}, false
	}
	addr, port, msg := parseHostPort(vs.Listen[0], true)
	if msg != "" {
		return netip.AddrPort{}, false // reported by virtualService
	}
	if !addr.IsValid() || addr.IsUnspecified() {
		v.add(lp.elem(0, nil), "%q: mode %s needs a specific address, the VIP (IPVS services are per address), not every address", vs.Listen[0], vs.Mode)
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(addr, port), true
}
