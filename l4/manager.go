package l4

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/cloudflare/ipvs"
)

// Manager programs the kernel's IPVS for Fulcrum's L4 virtual services. It
// is safe for concurrent use; its operations run one at a time.
type Manager struct {
	mu     sync.Mutex
	c      ipvs.Client
	close  func() error
	owned  map[netip.Addr]bool     // VIP addresses owned (see the package doc)
	wanted map[ServiceKey]*Service // the services as last reconciled
}

// New connects to the kernel's IPVS over generic netlink. It fails with
// ErrNoIPVS when the kernel has no IPVS and ErrPermission without
// CAP_NET_ADMIN. It changes nothing in the kernel.
func New() (*Manager, error) {
	c, err := ipvs.New()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("l4: %w (%v)", ErrNoIPVS, err)
		}
		return nil, fmt.Errorf("l4: connect to IPVS: %w", classify(err, ""))
	}
	m := NewWithClient(c)
	if cl, ok := c.(interface{ Close() error }); ok {
		m.close = cl.Close
	}
	// Reading the service list needs CAP_NET_ADMIN too: fail now, with the
	// fix, rather than at the first change.
	if _, err := m.services(); err != nil {
		m.Close()
		return nil, fmt.Errorf("l4: list IPVS services: %w", classify(err, ""))
	}
	return m, nil
}

// NewWithClient returns a Manager that drives c (tests pass a fake).
func NewWithClient(c ipvs.Client) *Manager {
	return &Manager{c: c, owned: map[netip.Addr]bool{}, wanted: map[ServiceKey]*Service{}}
}

// Close closes the netlink connection. The kernel's services stay, so that
// a restarted Fulcrum finds them and traffic carries on.
func (m *Manager) Close() error {
	if m.close != nil {
		return m.close()
	}
	return nil
}

// ChangeOp is what a Change did.
type ChangeOp string

// The changes Reconcile makes.
const (
	AddService       ChangeOp = "add service"
	UpdateService    ChangeOp = "update service"
	RemoveService    ChangeOp = "remove service"
	AddRealServer    ChangeOp = "add real server"
	UpdateRealServer ChangeOp = "update real server"
	RemoveRealServer ChangeOp = "remove real server"
)

// Change is one change made to the kernel.
type Change struct {
	Op      ChangeOp
	Service ServiceKey
	// RealServer is the real server's address; zero for service changes.
	RealServer netip.AddrPort
	// Detail says what changed, e.g. "weight 1 → 0".
	Detail string
}

func (c Change) String() string {
	s := string(c.Op) + " " + c.Service.String()
	if c.RealServer.IsValid() {
		s += " → " + c.RealServer.String()
	}
	if c.Detail != "" {
		s += ": " + c.Detail
	}
	return s
}

// Reconcile makes the kernel's IPVS equal to desired for the VIP addresses
// the Manager owns (see the package doc): it adds the missing services and
// real servers, updates the changed ones in place (an update keeps the
// kernel's connections and counters), and removes the owned ones not
// desired. Unchanged ones are not touched: reconciling the same services
// twice, or after a restart, changes nothing. It returns the changes made;
// on errors it still makes every change it can and returns them all.
func (m *Manager) Reconcile(desired []Service) ([]Change, error) {
	var errs []error
	wanted := map[ServiceKey]*Service{}
	for i := range desired {
		// A copy: the caller may reuse its slices.
		s := &Service{}
		*s = desired[i]
		s.RealServers = slices.Clone(s.RealServers)
		if err := s.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, dup := wanted[s.Key()]; dup {
			errs = append(errs, fmt.Errorf("virtual service %q: %s is also virtual service %q", s.Name, s.Key(), prev.Name))
			continue
		}
		wanted[s.Key()] = s
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("l4: %w", errors.Join(errs...))
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	current, err := m.services()
	if err != nil {
		return nil, fmt.Errorf("l4: list IPVS services: %w", classify(err, ""))
	}
	for k := range wanted {
		m.owned[k.VIP.Addr()] = true
	}
	have := map[ServiceKey]ipvs.ServiceExtended{}
	for _, cur := range current {
		if k, ok := m.ownedKey(cur.Service); ok {
			have[k] = cur
		}
	}

	var changes []Change
	keys := sortedServiceKeys(wanted)
	for _, k := range keys {
		cs, err := m.reconcileService(wanted[k], have)
		changes = append(changes, cs...)
		errs = append(errs, err)
	}
	keep := map[netip.Addr]bool{}
	for k := range wanted {
		keep[k.VIP.Addr()] = true
	}
	for _, k := range sortedServiceKeys(have) {
		if wanted[k] != nil {
			continue
		}
		if err := m.c.RemoveService(have[k].Service); err != nil {
			errs = append(errs, fmt.Errorf("remove service %s: %w", k, classify(err, "")))
			keep[k.VIP.Addr()] = true // to retry at the next Reconcile
			continue
		}
		changes = append(changes, Change{Op: RemoveService, Service: k})
	}
	// An address no longer desired, with nothing of ours left on it, is no
	// longer ours.
	for a := range m.owned {
		if !keep[a] {
			delete(m.owned, a)
		}
	}
	m.wanted = wanted
	if err := errors.Join(errs...); err != nil {
		return changes, fmt.Errorf("l4: %w", err)
	}
	return changes, nil
}

// reconcileService makes one desired service and its real servers so.
func (m *Manager) reconcileService(s *Service, have map[ServiceKey]ipvs.ServiceExtended) ([]Change, error) {
	k := s.Key()
	want := s.ipvsService()
	var changes []Change
	cur, exists := have[k]
	switch {
	case !exists:
		if err := m.c.CreateService(want); err != nil {
			return nil, fmt.Errorf("add service %s (%q): %w", k, s.Name, classify(err, want.Scheduler))
		}
		changes = append(changes, Change{Op: AddService, Service: k, Detail: describeService(want)})
	case !sameService(cur.Service, want):
		if err := m.c.UpdateService(want); err != nil {
			return nil, fmt.Errorf("update service %s (%q): %w", k, s.Name, classify(err, want.Scheduler))
		}
		changes = append(changes, Change{Op: UpdateService, Service: k,
			Detail: describeService(cur.Service) + " → " + describeService(want)})
	}
	var dests []ipvs.DestinationExtended
	if exists {
		var err error
		if dests, err = m.destinations(want); err != nil {
			return changes, fmt.Errorf("list real servers of %s (%q): %w", k, s.Name, classify(err, ""))
		}
	}
	haveRS := map[netip.AddrPort]ipvs.Destination{}
	for _, d := range dests {
		haveRS[netip.AddrPortFrom(d.Address.Unmap(), d.Port)] = d.Destination
	}
	var errs []error
	for _, rs := range s.RealServers {
		c, err := m.setDestination(k, want, haveRS, s.ipvsDestination(rs))
		if err != nil {
			errs = append(errs, fmt.Errorf("virtual service %q: real server %q: %w", s.Name, rs.Name, err))
		} else if c != nil {
			changes = append(changes, *c)
		}
		delete(haveRS, unmapPort(rs.Address))
	}
	for _, a := range slices.SortedFunc(maps.Keys(haveRS), netip.AddrPort.Compare) {
		if err := m.c.RemoveDestination(want, haveRS[a]); err != nil {
			errs = append(errs, fmt.Errorf("remove real server %s of %s: %w", a, k, classify(err, "")))
			continue
		}
		changes = append(changes, Change{Op: RemoveRealServer, Service: k, RealServer: a})
	}
	return changes, errors.Join(errs...)
}

// setDestination adds d or updates it if it differs from the kernel's
// (have, by address); it returns nil when nothing changed.
func (m *Manager) setDestination(k ServiceKey, svc ipvs.Service, have map[netip.AddrPort]ipvs.Destination, d ipvs.Destination) (*Change, error) {
	a := netip.AddrPortFrom(d.Address, d.Port)
	cur, exists := have[a]
	switch {
	case !exists:
		if err := m.c.CreateDestination(svc, d); err != nil {
			return nil, fmt.Errorf("add %s to %s: %w", a, k, classify(err, ""))
		}
		return &Change{Op: AddRealServer, Service: k, RealServer: a, Detail: describeDestination(d)}, nil
	case !sameDestination(cur, d):
		if err := m.c.UpdateDestination(svc, d); err != nil {
			return nil, fmt.Errorf("update %s of %s: %w", a, k, classify(err, ""))
		}
		return &Change{Op: UpdateRealServer, Service: k, RealServer: a,
			Detail: describeDestination(cur) + " → " + describeDestination(d)}, nil
	}
	return nil, nil
}

// SetRealServer adds rs to the virtual service k, or updates it (weight,
// forwarding) if present: a real server back from maintenance, or a weight
// change between two reconciles. k must be a service of the last
// Reconcile; the change is remembered as part of it.
func (m *Manager) SetRealServer(k ServiceKey, rs RealServer) (*Change, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.service(k)
	if err != nil {
		return nil, err
	}
	next := *s
	next.RealServers = slices.Clone(s.RealServers)
	i := slices.IndexFunc(next.RealServers, func(r RealServer) bool { return unmapPort(r.Address) == unmapPort(rs.Address) })
	if i >= 0 {
		next.RealServers[i] = rs
	} else {
		next.RealServers = append(next.RealServers, rs)
	}
	if err := next.Validate(); err != nil {
		return nil, fmt.Errorf("l4: %w", err)
	}
	svc := next.ipvsService()
	dests, err := m.destinations(svc)
	if err != nil {
		return nil, fmt.Errorf("l4: list real servers of %s: %w", k, classify(err, ""))
	}
	have := map[netip.AddrPort]ipvs.Destination{}
	for _, d := range dests {
		have[netip.AddrPortFrom(d.Address.Unmap(), d.Port)] = d.Destination
	}
	c, err := m.setDestination(k, svc, have, next.ipvsDestination(rs))
	if err != nil {
		return nil, fmt.Errorf("l4: virtual service %q: real server %q: %w", s.Name, rs.Name, err)
	}
	m.wanted[k] = &next
	return c, nil
}

// SetWeight changes the weight of the real server at rip in the virtual
// service k: 0 is quiescent (down, drain: existing connections carry on,
// new ones go elsewhere).
func (m *Manager) SetWeight(k ServiceKey, rip netip.AddrPort, weight int) (*Change, error) {
	m.mu.Lock()
	s, err := m.service(k)
	var rs RealServer
	if err == nil {
		i := slices.IndexFunc(s.RealServers, func(r RealServer) bool { return unmapPort(r.Address) == unmapPort(rip) })
		if i < 0 {
			err = fmt.Errorf("l4: virtual service %s has no real server %s", k, rip)
		} else {
			rs = s.RealServers[i]
		}
	}
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	rs.Weight = weight
	return m.SetRealServer(k, rs)
}

// RemoveRealServer removes the real server at rip from the virtual service
// k (maintenance): its connections are dropped by the kernel as they next
// send a packet. Removing an absent one is not an error (nil Change).
func (m *Manager) RemoveRealServer(k ServiceKey, rip netip.AddrPort) (*Change, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.service(k)
	if err != nil {
		return nil, err
	}
	rip = unmapPort(rip)
	next := *s
	next.RealServers = slices.DeleteFunc(slices.Clone(s.RealServers), func(r RealServer) bool { return unmapPort(r.Address) == rip })
	svc := s.ipvsService()
	dests, err := m.destinations(svc)
	if err != nil {
		return nil, fmt.Errorf("l4: list real servers of %s: %w", k, classify(err, ""))
	}
	m.wanted[k] = &next
	for _, d := range dests {
		if netip.AddrPortFrom(d.Address.Unmap(), d.Port) == rip {
			if err := m.c.RemoveDestination(svc, d.Destination); err != nil {
				return nil, fmt.Errorf("l4: remove real server %s of %s: %w", rip, k, classify(err, ""))
			}
			return &Change{Op: RemoveRealServer, Service: k, RealServer: rip}, nil
		}
	}
	return nil, nil
}

// services lists the kernel's services. The ipvs package reports an empty
// list as the error os.ErrNotExist itself (a netlink ENOENT is another
// error that wraps it).
func (m *Manager) services() ([]ipvs.ServiceExtended, error) {
	s, err := m.c.Services()
	if err == os.ErrNotExist {
		return nil, nil
	}
	return s, err
}

// destinations lists a service's real servers, as services does.
func (m *Manager) destinations(s ipvs.Service) ([]ipvs.DestinationExtended, error) {
	d, err := m.c.Destinations(s)
	if err == os.ErrNotExist {
		return nil, nil
	}
	return d, err
}

// service returns the reconciled service k; m.mu is held.
func (m *Manager) service(k ServiceKey) (*Service, error) {
	k.VIP = unmapPort(k.VIP)
	if k.Protocol == "" {
		k.Protocol = TCP
	}
	s := m.wanted[k]
	if s == nil {
		return nil, fmt.Errorf("l4: no virtual service %s (not in the last Reconcile)", k)
	}
	return s, nil
}

// ownedKey returns the key of a kernel service the Manager owns.
func (m *Manager) ownedKey(s ipvs.Service) (ServiceKey, bool) {
	p, ok := protocolOf(s.Protocol)
	if !ok || s.FWMark != 0 || !m.owned[s.Address.Unmap()] {
		return ServiceKey{}, false
	}
	return ServiceKey{Protocol: p, VIP: netip.AddrPortFrom(s.Address.Unmap(), s.Port)}, true
}

// sameService compares what Fulcrum sets. The kernel adds the "hashed" flag
// (the service is in its table) to what it reports.
func sameService(cur, want ipvs.Service) bool {
	const flags = ipvs.ServicePersistent | ipvs.ServiceOnePacket
	return cur.Scheduler == want.Scheduler && cur.Flags&flags == want.Flags&flags &&
		cur.Timeout == want.Timeout && cur.Netmask == want.Netmask
}

func sameDestination(cur, want ipvs.Destination) bool {
	return cur.FwdMethod == want.FwdMethod && cur.Weight == want.Weight &&
		cur.UpperThreshold == want.UpperThreshold && cur.LowerThreshold == want.LowerThreshold &&
		(want.FwdMethod != ipvs.Tunnel || cur.TunnelType == want.TunnelType && cur.TunnelPort == want.TunnelPort && cur.TunnelFlags == want.TunnelFlags)
}

func describeService(s ipvs.Service) string {
	d := "scheduler " + s.Scheduler
	if s.Flags&ipvs.ServicePersistent != 0 {
		d += fmt.Sprintf(", persistent %ds mask /%d", s.Timeout, s.Netmask.Bits())
	}
	return d
}

func describeDestination(d ipvs.Destination) string {
	return fmt.Sprintf("%s weight %d", forwardingOf(d.FwdMethod), d.Weight)
}

func sortedServiceKeys[V any](m map[ServiceKey]V) []ServiceKey {
	keys := make([]ServiceKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b ServiceKey) int {
		return cmp.Or(a.VIP.Compare(b.VIP), cmp.Compare(a.Protocol, b.Protocol))
	})
	return keys
}
