package proxy

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/balancer"
	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/l4"
)

// The L4 virtual services (modes dr, nat, tun) bind nothing: the kernel's
// IPVS forwards their packets. Everything else runs as for the other
// services: health checks, admin states, weights, slow start, agents,
// events, reloads and the runtime API, all of which end in
// realServer.applyLocked. The l4 syncer turns the resulting state into the
// IPVS services package l4 programs.

// l4Manager is what the syncer needs of an *l4.Manager; tests give a fake.
type l4Manager interface {
	Reconcile([]l4.Service) ([]l4.Change, error)
	Stats() ([]l4.ServiceStats, error)
	Close() error
}

// newL4Manager connects to the kernel's IPVS. It fails with l4.ErrNoIPVS or
// l4.ErrPermission, whose messages say how to fix it.
func newL4Manager() (l4Manager, error) {
	m, err := l4.New()
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return m, nil
}

// l4RetryPeriod is how often the syncer reconciles without being signalled:
// a failed Reconcile is retried, and a change made by hand (ipvsadm) to a
// service Fulcrum owns is undone.
const l4RetryPeriod = 10 * time.Second

// l4Syncer makes the kernel's IPVS follow the L4 services' state. It is
// signalled (coalescing) on every change of a real server's effective
// state, and reconciles the whole desired state each time: simple, and
// idempotent, as l4.Manager.Reconcile changes only what differs.
type l4Syncer struct {
	log        *zap.Logger
	events     *eventLog
	newManager func() (l4Manager, error) // l4.New, or a fake in tests
	wake       chan struct{}             // capacity 1: signals coalesce

	mu       sync.Mutex // one Reconcile at a time; guards the fields below
	m        l4Manager  // nil until a configuration has an L4 service
	services []*Service // the proxy's, as of the last Start or Apply
	lastErr  string     // of the last Reconcile, so a failure is told once
	stop     chan struct{}
	done     chan struct{}
}

func newL4Syncer(log *zap.Logger, events *eventLog) *l4Syncer {
	return &l4Syncer{log: log.Named("ipvs"), events: events, newManager: newL4Manager, wake: make(chan struct{}, 1)}
}

// signal asks for a Reconcile soon; it never blocks.
func (y *l4Syncer) signal() {
	select {
	case y.wake <- struct{}{}:
	default:
	}
}

// prepare connects to IPVS if cfg has an L4 service and the syncer has not
// yet: called by Start and Apply before they change anything, so that a
// kernel without IPVS or a process without CAP_NET_ADMIN fails them with
// the cause and its fix.
func (y *l4Syncer) prepare(cfg *config.Config) error {
	var first *config.VirtualService
	for _, vs := range cfg.VirtualServices {
		if config.IsL4Mode(vs.Mode) {
			first = vs
			break
		}
	}
	y.mu.Lock()
	defer y.mu.Unlock()
	if first == nil || y.m != nil {
		return nil
	}
	m, err := y.newManager()
	if err != nil {
		return fmt.Errorf("virtual service %q: mode %s needs the kernel's IPVS: %w", first.Name, first.Mode, err)
	}
	y.m = m
	return nil
}

// sync makes services the proxy's and reconciles at once, so that Start and
// Apply return with the kernel programmed (a reload's removed services
// gone); then starts the loop that follows later changes. A failure is
// logged and retried, not returned: the other services run on.
func (y *l4Syncer) sync(services []*Service) {
	y.mu.Lock()
	defer y.mu.Unlock()
	y.services = services
	if y.m == nil {
		return
	}
	y.reconcile(true)
	if y.stop == nil {
		y.stop, y.done = make(chan struct{}), make(chan struct{})
		go y.run(y.stop, y.done)
	}
}

// run reconciles when signalled and every l4RetryPeriod until stop closes.
func (y *l4Syncer) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(l4RetryPeriod)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-y.wake:
		case <-t.C:
		}
		y.mu.Lock()
		if y.m != nil {
			y.reconcile(false)
		}
		y.mu.Unlock()
	}
}

// reconcile hands the desired state to the kernel. y.mu is held. loud logs
// the outcome at info even when nothing changed (Start and Apply).
func (y *l4Syncer) reconcile(loud bool) {
	desired := desiredL4(y.services)
	changes, err := y.m.Reconcile(desired)
	for _, c := range changes {
		y.log.Info("IPVS changed", zap.Stringer("change", c))
	}
	switch {
	case err != nil:
		msg := err.Error()
		if msg != y.lastErr {
			y.log.Warn("IPVS reconcile failed; retrying", zap.Error(err), zap.Duration("retry_in", l4RetryPeriod))
			y.events.add(EventIPVS, "", "", "IPVS not programmed as configured: "+msg)
		} else {
			y.log.Debug("IPVS reconcile failed again", zap.Error(err))
		}
		y.lastErr = msg
		return
	case y.lastErr != "":
		y.log.Info("IPVS reconciled after failures", zap.Int("services", len(desired)), zap.Int("changes", len(changes)))
		y.events.add(EventIPVS, "", "", "IPVS programmed as configured again")
		y.lastErr = ""
	case loud || len(changes) > 0:
		y.log.Info("IPVS reconciled", zap.Int("services", len(desired)), zap.Int("changes", len(changes)))
	}
}

// close stops the loop and the netlink connection. The kernel's services
// stay: a restarted Fulcrum finds them as it left them, and traffic
// carries on meanwhile.
func (y *l4Syncer) close() {
	y.mu.Lock()
	stop, done, m := y.stop, y.done, y.m
	y.stop, y.done, y.m = nil, nil, nil
	y.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	if m != nil {
		m.Close()
	}
}

// stats returns the kernel's counters by virtual service name, nil without
// an L4 service. Status must not fail for them: an error is logged at debug
// and the counters show zero.
func (y *l4Syncer) stats() map[string]*l4.ServiceStats {
	y.mu.Lock()
	m := y.m
	y.mu.Unlock()
	if m == nil {
		return nil
	}
	list, err := m.Stats()
	if err != nil {
		y.log.Debug("IPVS counters unreadable; shown as zero", zap.Error(err))
		return nil
	}
	out := make(map[string]*l4.ServiceStats, len(list))
	for i := range list {
		out[list[i].Name] = &list[i]
	}
	return out
}

// desiredL4 is the IPVS state of the L4 services among services.
func desiredL4(services []*Service) []l4.Service {
	var out []l4.Service
	for _, s := range services {
		if svc, ok := s.l4Service(); ok {
			out = append(out, svc)
		}
	}
	return out
}

// l4Service is the service's desired IPVS service, false if it is not an
// L4 one. Each real server gets its effective weight (agent and slow start
// included) while up and ready; 0 while down or draining (quiescent: IPVS
// sends it no new connection and lets the established ones finish); and is
// left out in maintenance, which means no traffic at all.
func (s *Service) l4Service() (l4.Service, bool) {
	vs := s.config()
	if !config.IsL4Mode(vs.Mode) || len(vs.Listen) != 1 {
		return l4.Service{}, false
	}
	vip, err := netip.ParseAddrPort(vs.Listen[0])
	if err != nil {
		return l4.Service{}, false // the file was validated
	}
	out := l4.Service{
		Name:       s.Name,
		Protocol:   l4.Protocol(vs.Protocol),
		VIP:        vip,
		Forwarding: l4Forwarding(vs.Mode),
		Scheduler:  vs.Scheduler,
	}
	if ps := vs.Persistence; ps.Method == config.PersistSourceIP {
		out.Persistence = ps.Timeout
		out.PersistenceMask = ps.SourceMask
		if !vip.Addr().Unmap().Is4() {
			out.PersistenceMask = ps.SourceMask6
		}
	}
	for _, rs := range s.reals.Load().list {
		if r, ok := rs.l4RealServer(); ok {
			out.RealServers = append(out.RealServers, r)
		}
	}
	return out, true
}

// l4RealServer is the real server's IPVS destination; false in maintenance.
func (rs *realServer) l4RealServer() (l4.RealServer, bool) {
	admin := rs.Server.AdminState()
	if admin == balancer.Maintenance {
		return l4.RealServer{}, false
	}
	addr, err := netip.ParseAddrPort(rs.Address)
	if err != nil {
		return l4.RealServer{}, false // checked by config and AddRealServer
	}
	w := rs.Server.Weight()
	if rs.Server.Down() || admin == balancer.Drain {
		w = 0
	}
	return l4.RealServer{Name: rs.Name, Address: addr, Weight: w}, true
}

func l4Forwarding(mode string) l4.Forwarding {
	switch mode {
	case config.ModeNAT:
		return l4.NAT
	case config.ModeTUN:
		return l4.Tunnel
	}
	return l4.DirectRouting
}

// signalL4 tells the syncer that a real server of an L4 service changed.
func (s *Service) signalL4() {
	if s.proxy != nil && s.proxy.l4 != nil && config.IsL4Mode(s.config().Mode) {
		s.proxy.l4.signal()
	}
}

// checkL4RealServer checks a real server added through the API as the
// kernel will: a dr or tun real server on another port than the VIP's, or
// of another address family, would make every Reconcile of the service
// fail.
func (s *Service) checkL4RealServer(rc *config.RealServer) error {
	if rc.MaxConns != 0 {
		return fmt.Errorf("max_conns: not used in mode %s (the kernel forwards the packets)", s.config().Mode)
	}
	svc, ok := s.l4Service()
	if !ok {
		return nil
	}
	addr, err := netip.ParseAddrPort(rc.Address)
	if err != nil {
		return fmt.Errorf("address %q: want IP:port", rc.Address)
	}
	svc.RealServers = append(svc.RealServers, l4.RealServer{Name: rc.Name, Address: addr, Weight: rc.Weight})
	return svc.Validate()
}

// fillL4Status puts the kernel's counters into an L4 service's status:
// connections for requests, and the real servers' connections, bytes and
// packets. IPVS counts "in" from the client and "out" towards it, so its
// in bytes are the ones sent to the real server (BytesOut) and its out
// bytes the ones received from it (BytesIn: 0 with dr and tun, whose
// replies bypass the director). Without ss (no counters) they stay zero.
func fillL4Status(st *ServiceStatus, ss *l4.ServiceStats) {
	if ss == nil {
		return
	}
	st.Requests = ss.Connections
	byAddr := make(map[netip.AddrPort]*l4.RealServerStats, len(ss.RealServers))
	for i := range ss.RealServers {
		byAddr[ss.RealServers[i].Address] = &ss.RealServers[i]
	}
	for i := range st.RealServers {
		r := &st.RealServers[i]
		ap, err := netip.ParseAddrPort(r.Address)
		if err != nil {
			continue
		}
		x := byAddr[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())]
		if x == nil {
			continue // in maintenance: not in the kernel
		}
		r.Requests = x.Connections
		r.Active = int64(x.ActiveConns)
		r.InactiveConns = int64(x.InactiveConns)
		r.BytesOut, r.BytesIn = x.InBytes, x.OutBytes
		r.PacketsOut, r.PacketsIn = x.InPackets, x.OutPackets
		st.ActiveConns += int64(x.ActiveConns)
	}
}
