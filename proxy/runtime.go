package proxy

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/balancer"
	"github.com/fulcrumlb/fulcrum/config"
)

// This file is the runtime API the admin package serves: status, events and
// changes to real servers while the proxy runs.

// Status returns a snapshot of every virtual service.
func (p *Proxy) Status() Status {
	p.mu.Lock()
	services := append([]*Service(nil), p.services...)
	p.mu.Unlock()
	st := Status{Services: make([]ServiceStatus, 0, len(services)), EventLoops: loopStatus()}
	ipvs := p.l4.stats() // nil without L4 services
	for _, s := range services {
		ss := s.status()
		if config.IsL4Mode(ss.Mode) {
			fillL4Status(&ss, ipvs[s.Name])
		}
		st.Services = append(st.Services, ss)
	}
	return st
}

func (s *Service) status() ServiceStatus {
	vs := s.config()
	st := ServiceStatus{
		Name:        s.Name,
		Mode:        vs.Mode,
		Protocol:    vs.Protocol,
		Scheduler:   vs.Scheduler,
		Listen:      vs.Listen,
		Pool:        vs.IsPool(),
		ActiveConns: s.active.Load(),
		Queue:       s.Pool.QueueLen(),
		Requests:    s.requests.Load(),
		Errors:      s.failed.Load(),
		RateLimited: s.limited.Load(),
	}
	if f := s.tls.Load(); f != nil {
		for _, c := range f.store.Info() {
			st.Certificates = append(st.Certificates, CertificateStatus(c))
		}
	}
	var available, down, offline int
	for _, rs := range s.reals.Load().list {
		r := rs.status()
		switch r.Color {
		case ColorGreen:
			available++
		case ColorRed:
			down++
		case ColorBlue:
			offline++
		}
		st.RealServers = append(st.RealServers, r)
	}
	switch {
	case available == 0:
		st.Color = ColorRed
	case down > 0:
		st.Color = ColorYellow
	case offline > 0:
		st.Color = ColorBlue
	default:
		st.Color = ColorGreen
	}
	if fb := s.fallback.Load(); fb != nil {
		st.Fallback = fb.rs.Address
		st.FallbackActive = available == 0
		st.FallbackRequests = fb.rs.requests.Load()
	}
	return st
}

// Events returns the recent events with an ID above after, oldest first.
func (p *Proxy) Events(after uint64) []Event { return p.events.since(after) }

// RecordEvent adds an event to the recent events (the caller logs it).
func (p *Proxy) RecordEvent(kind, service, server, msg string) {
	p.events.add(kind, service, server, msg)
}

// find returns the named service and real server. p.mu is held.
func (p *Proxy) find(service, server string) (*Service, *realServer, error) {
	s := p.service(service)
	if s == nil {
		return nil, nil, fmt.Errorf("virtual service %q: %w", service, ErrNotFound)
	}
	for _, rs := range s.reals.Load().list {
		if rs.Name == server {
			return s, rs, nil
		}
	}
	return nil, nil, fmt.Errorf("virtual service %q: real server %q: %w", service, server, ErrNotFound)
}

// service returns the named service or nil. p.mu is held.
func (p *Proxy) service(name string) *Service {
	for _, s := range p.services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// SetState sets a real server's admin state: ready, drain or maintenance
// (also "maint"). It holds until changed again, across reloads that do not
// change the server's state in the file.
func (p *Proxy) SetState(service, server, state string) error {
	a, ok := balancer.ParseAdminState(state)
	if !ok {
		return fmt.Errorf("state %q: want ready, drain or maintenance: %w", state, ErrInvalid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s, rs, err := p.find(service, server)
	if err != nil {
		return err
	}
	rs.setOperator(a)
	s.log.Info("admin state set", zap.String("real_server", rs.Name), zap.Stringer("state", a))
	s.events.add(EventAdmin, s.Name, rs.Name, "state set to "+a.String())
	return nil
}

// SetWeight sets a real server's configured weight (0..config.MaxWeight).
func (p *Proxy) SetWeight(service, server string, weight int) error {
	if weight < 0 || weight > config.MaxWeight {
		return fmt.Errorf("weight %d: want 0..%d: %w", weight, config.MaxWeight, ErrInvalid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s, rs, err := p.find(service, server)
	if err != nil {
		return err
	}
	rs.setWeight(weight)
	s.log.Info("weight set", zap.String("real_server", rs.Name), zap.Int("weight", weight))
	s.events.add(EventAdmin, s.Name, rs.Name, fmt.Sprintf("weight set to %d", weight))
	return nil
}

var serverName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// AddRealServer adds a real server to a running service. It lasts until the
// next reload, which makes the file the truth again.
func (p *Proxy) AddRealServer(service string, rc *config.RealServer) error {
	c := *rc
	if c.Name == "" {
		c.Name = c.Address
	}
	if c.State == "" {
		c.State = config.StateReady
	}
	var problems []string
	if _, err := netip.ParseAddrPort(c.Address); err != nil {
		problems = append(problems, fmt.Sprintf("address %q: want IP:port", c.Address))
	}
	if !serverName.MatchString(c.Name) && c.Name != c.Address {
		problems = append(problems, fmt.Sprintf("name %q: use letters, digits, '.', '_' and '-'", c.Name))
	}
	if c.Weight < 0 || c.Weight > config.MaxWeight {
		problems = append(problems, fmt.Sprintf("weight %d: want 0..%d", c.Weight, config.MaxWeight))
	}
	if c.MaxConns < 0 {
		problems = append(problems, fmt.Sprintf("max_conns %d: must be >= 0", c.MaxConns))
	}
	if _, ok := balancer.ParseAdminState(c.State); !ok {
		problems = append(problems, fmt.Sprintf("state %q: want ready, drain or maintenance", c.State))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %w", strings.Join(problems, "; "), ErrInvalid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.service(service)
	if s == nil {
		return fmt.Errorf("virtual service %q: %w", service, ErrNotFound)
	}
	for _, rs := range s.reals.Load().list {
		if rs.Name == c.Name {
			return fmt.Errorf("real server %q already exists: %w", c.Name, ErrInvalid)
		}
		if rs.Address == c.Address {
			return fmt.Errorf("address %s is already real server %q: %w", c.Address, rs.Name, ErrInvalid)
		}
	}
	if config.IsL4Mode(s.config().Mode) {
		if err := s.checkL4RealServer(&c); err != nil {
			return fmt.Errorf("%v: %w", err, ErrInvalid)
		}
	}
	rs := newRealServer(s, &c)
	s.setReals(append(s.reals.Load().list, rs), nil)
	rs.startMonitor(s.probe)
	s.log.Info("real server added", zap.String("real_server", rs.Name), zap.String("address", rs.Address))
	s.events.add(EventAdmin, s.Name, rs.Name, "added ("+rs.Address+")")
	return nil
}

// RemoveRealServer removes a real server from a running service; requests
// in flight to it finish.
func (p *Proxy) RemoveRealServer(service, server string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, rs, err := p.find(service, server)
	if err != nil {
		return err
	}
	var list []*realServer
	for _, x := range s.reals.Load().list {
		if x != rs {
			list = append(list, x)
		}
	}
	s.setReals(list, []*realServer{rs})
	s.log.Info("real server removed", zap.String("real_server", rs.Name))
	s.events.add(EventAdmin, s.Name, rs.Name, "removed")
	return nil
}

// setReals makes list the service's real servers and retires the removed
// ones; they stay known (byServer) while requests may hold them.
func (s *Service) setReals(list, removed []*realServer) {
	s.mu.Lock()
	s.reals.Store(s.newRealSet(list, s.reals.Load().byServer))
	s.mu.Unlock()
	servers := make([]*balancer.Server, len(list))
	for i, rs := range list {
		servers[i] = rs.Server
	}
	s.Pool.SetServers(servers)
	for _, rs := range removed {
		rs.retire()
	}
	s.signalL4()
}
