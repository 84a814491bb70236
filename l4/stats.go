package l4

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/cloudflare/ipvs"
)

// Counters are IPVS's totals since the service or real server was added
// (the kernel's 64-bit counters).
type Counters struct {
	Connections uint64
	InPackets   uint64
	OutPackets  uint64 // 0 with dr and tun: replies bypass the director
	InBytes     uint64
	OutBytes    uint64
}

// ServiceStats is the kernel's view of one owned virtual service.
type ServiceStats struct {
	Key ServiceKey
	// Name is the virtual service's name in the last Reconcile.
	Name      string
	Scheduler string // IPVS's name
	Counters
	RealServers []RealServerStats
}

// RealServerStats is the kernel's view of one real server.
type RealServerStats struct {
	Address    netip.AddrPort
	Name       string // in the last Reconcile; "" if unknown
	Weight     int
	Forwarding Forwarding
	// ActiveConns are established TCP connections, InactiveConns the others
	// (TIME_WAIT, UDP), PersistentConns the persistence templates.
	ActiveConns, InactiveConns, PersistentConns int
	Counters
}

// Stats returns the kernel's state and counters of the services of the last
// Reconcile (for metrics and the admin API), in the Reconcile's order of
// keys. A service missing from the kernel is left out.
func (m *Manager) Stats() ([]ServiceStats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	current, err := m.services()
	if err != nil {
		return nil, fmt.Errorf("l4: list IPVS services: %w", classify(err, ""))
	}
	byKey := map[ServiceKey]ipvs.ServiceExtended{}
	for _, cur := range current {
		if k, ok := m.ownedKey(cur.Service); ok && m.wanted[k] != nil {
			byKey[k] = cur
		}
	}
	var out []ServiceStats
	for _, k := range sortedServiceKeys(byKey) {
		cur, s := byKey[k], m.wanted[k]
		names := map[netip.AddrPort]string{}
		for _, rs := range s.RealServers {
			names[unmapPort(rs.Address)] = rs.Name
		}
		dests, err := m.destinations(cur.Service)
		if err != nil {
			return nil, fmt.Errorf("l4: list real servers of %s: %w", k, classify(err, ""))
		}
		st := ServiceStats{Key: k, Name: s.Name, Scheduler: cur.Scheduler, Counters: counters(cur.Stats64)}
		for _, d := range dests {
			a := netip.AddrPortFrom(d.Address.Unmap(), d.Port)
			st.RealServers = append(st.RealServers, RealServerStats{
				Address: a, Name: names[a], Weight: int(d.Weight), Forwarding: forwardingOf(d.FwdMethod),
				ActiveConns: int(d.ActiveConnections), InactiveConns: int(d.InactiveConnections),
				PersistentConns: int(d.PersistentConnections), Counters: counters(d.Stats64),
			})
		}
		slices.SortFunc(st.RealServers, func(a, b RealServerStats) int { return a.Address.Compare(b.Address) })
		out = append(out, st)
	}
	return out, nil
}

func counters(s ipvs.Stats) Counters {
	return Counters{Connections: s.Connections, InPackets: s.IncomingPackets, OutPackets: s.OutgoingPackets,
		InBytes: s.IncomingBytes, OutBytes: s.OutgoingBytes}
}
