package proxy

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/balancer"
	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/healthcheck"
)

// Apply switches the running proxy to cfg (a reload) without dropping a
// connection:
//   - a service whose name and mode are unchanged is updated in place: its
//     clients, queue and counters carry on, and new settings apply from each
//     client's next request;
//   - real servers whose name and address are unchanged keep their health,
//     admin state, counters and pooled connections; a weight, max_conns or
//     state the file changed replaces what the API set;
//   - listen addresses that stay are not re-bound, even when they move to
//     another service; new ones are bound before anything changes, so a
//     failure leaves the old configuration running; the same goes for the
//     UDP sockets of HTTP/3, whose QUIC connections so carry on;
//   - removed services stop accepting and drain, for up to global.grace.
//
// Real servers added at run time (AddRealServer) and not in cfg are removed:
// after a reload the file is the truth.
func (p *Proxy) Apply(cfg *config.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return errors.New("reload: the proxy is stopping")
	}
	if err := checkTransparent(cfg); err != nil {
		return err
	}
	old := make(map[string]*Service, len(p.services))
	for _, s := range p.services {
		old[s.Name] = s
	}
	var next, fresh []*Service
	updates := make(map[*Service]*config.VirtualService)
	for _, vs := range cfg.VirtualServices {
		if s := old[vs.Name]; s != nil && s.config().Mode == vs.Mode {
			delete(old, vs.Name)
			updates[s] = vs
			next = append(next, s)
			continue
		}
		s, err := p.newService(vs, cfg.Global.AccessLog)
		if err != nil {
			return err
		}
		next = append(next, s)
		fresh = append(fresh, s)
	}
	// Probes and schedulers of updated services are built before anything
	// changes, so that their errors too leave the old configuration.
	changes := make(map[*Service]*serviceChange, len(updates))
	for s, vs := range updates {
		c, err := s.prepare(p, vs)
		if err != nil {
			return err
		}
		changes[s] = c
	}
	// Routes, resolved to the services of cfg (next is in cfg's order).
	tables, err := setRoutes(next, cfg.VirtualServices)
	if err != nil {
		return err
	}
	// IPVS, if cfg has the first L4 service (l4.go).
	if p.started {
		if err := p.l4.prepare(cfg); err != nil {
			return err
		}
	}
	// Listeners: bind the new addresses.
	bound, err := p.bind(cfg.VirtualServices)
	if err != nil {
		return err
	}
	var h3bound map[string]*h3listener
	if p.started {
		h3bound, err = p.bindH3(cfg.VirtualServices, bound)
		if err == nil {
			if err = p.applyRedirects(cfg); err != nil {
				closeH3(h3bound)
			}
		}
		if err != nil {
			for _, l := range bound {
				l.ln.Close()
			}
			return err
		}
	}

	// Commit.
	for s, c := range changes {
		s.update(c, cfg.Global.AccessLog)
	}
	for s, t := range tables {
		s.routes.Store(t)
	}
	for _, s := range fresh {
		if p.started {
			s.start()
		}
	}
	if p.started {
		p.attach(next, bound)
		p.attachH3(next, h3bound)
	}
	for _, s := range old {
		s.log.Info("virtual service removed by reload; draining", zap.Duration("grace", cfg.Global.Grace))
		// Stopped now, before Apply returns, so that an accept loop that
		// still holds it moves the client on to the address's new owner.
		s.stop()
		p.draining.Add(1)
		go func() {
			defer p.draining.Done()
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Global.Grace)
			defer cancel()
			s.shutdown(ctx)
		}()
	}
	p.services = next
	p.cfg = cfg
	SetEventLoops(cfg.Global.EventLoops) // for connections from now on
	if p.started {
		p.l4.sync(next) // removed L4 services leave the kernel now
	}
	p.events.add(EventReload, "", "", fmt.Sprintf("configuration reloaded from %s: %d virtual services (%d new, %d removed)",
		cfg.File, len(next), len(fresh), len(old)))
	return nil
}

// serviceChange is a reload's new settings for a service, prepared (and
// checked) before anything changes.
type serviceChange struct {
	vs          *config.VirtualService
	sched       balancer.Scheduler // nil when unchanged
	probe       healthcheck.Probe  // valid when checkChange
	checkChange bool
	tls         *tlsFront // the certificates, re-read
}

func (s *Service) prepare(p *Proxy, vs *config.VirtualService) (*serviceChange, error) {
	old := s.config()
	c := &serviceChange{vs: vs}
	// Certificates are re-read on every reload (they are renewed in place).
	front, err := p.newTLSFront(vs)
	if err != nil {
		return nil, err
	}
	c.tls = front
	if vs.Scheduler != old.Scheduler {
		sched, err := newScheduler(vs)
		if err != nil {
			return nil, fmt.Errorf("virtual service %q: %w", vs.Name, err)
		}
		c.sched = sched
	}
	if !reflect.DeepEqual(vs.HealthCheck, old.HealthCheck) {
		probe, err := newProbe(&vs.HealthCheck)
		if err != nil {
			return nil, fmt.Errorf("virtual service %q: health_check: %w", vs.Name, err)
		}
		c.probe, c.checkChange = probe, true
	}
	return c, nil
}

// update applies a prepared change. The caller holds the proxy's lock.
func (s *Service) update(c *serviceChange, accessLog bool) {
	old := s.config()
	vs := c.vs
	s.cfg.Store(vs)
	s.tls.Store(c.tls)
	s.persist.Store(s.hookStick(newPersister(vs, s.persist.Load())))
	s.setAccess(accessLog)
	s.rules.Store(compileRules(vs))
	if vs.MaxConns != old.MaxConns {
		s.setSlots(vs.MaxConns)
	}
	if !sameRateLimit(vs.RateLimit, old.RateLimit) { // else the clients' counts carry on
		s.limit.Store(newRateLimiter(vs.RateLimit))
	}
	s.Pool.SetQueueTimeout(vs.QueueTimeout)
	s.setFallback(vs.Fallback)
	if c.sched != nil {
		s.Pool.SetScheduler(c.sched)
	}
	if c.checkChange {
		s.probe = c.probe
	}

	cur := make(map[string]*realServer)
	for _, rs := range s.reals.Load().list {
		cur[rs.Name] = rs
	}
	var list, added []*realServer
	for _, rc := range vs.RealServers {
		rs := cur[rc.Name]
		if rs != nil && rs.Address == rc.Address && sameTLS(&rs.file, rc) {
			delete(cur, rc.Name)
			rs.reconfigure(rc)
			if c.checkChange {
				rs.endMonitor()
				rs.startMonitor(s.probe)
			}
		} else {
			rs = newRealServer(s, rc)
			added = append(added, rs)
		}
		list = append(list, rs)
	}
	var removed []*realServer
	for _, rs := range s.reals.Load().list {
		if cur[rs.Name] == rs {
			removed = append(removed, rs)
		}
	}
	s.setReals(list, removed)
	for _, rs := range added {
		rs.startMonitor(s.probe)
	}
}

// sameTLS reports whether two entries of a real server connect the same way
// (a change of TLS settings or of send_proxy makes a new real server: its
// pooled connections and health check were made for the old ones).
func sameTLS(a, b *config.RealServer) bool {
	return a.TLS == b.TLS && a.TLSServerName == b.TLSServerName && a.TLSVerify == b.TLSVerify &&
		a.TLSCA == b.TLSCA && a.Protocol == b.Protocol && a.SendProxy == b.SendProxy
}
