// Package proxy is Fulcrum's userspace full proxy: it accepts clients on each
// virtual service's listen addresses and forwards HTTP requests (http mode:
// HTTP/1.1, and HTTP/2 over TLS) or raw bytes (tcp mode) to the real server
// its balancer.Pool picks.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/balancer"
	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/healthcheck"
	"github.com/fulcrumlb/fulcrum/tlsterm"
)

// Proxy runs the virtual services of a configuration, and applies new
// configurations (Apply) and runtime changes without stopping.
type Proxy struct {
	log         *zap.Logger
	events      *eventLog
	tickets     *tlsterm.Rotator // session ticket keys of every TLS service
	stopTickets context.CancelFunc

	mu        sync.Mutex // serialises Start, Apply, Shutdown and runtime changes
	cfg       *config.Config
	services  []*Service             // configuration order
	listeners map[string]*listener   // by listenKey
	redirects map[string]*redirector // tls.redirect_http listeners, by listenKey
	h3        h3listeners            // UDP sockets of tls.http3 (h3.go)
	started   bool
	stopped   bool
	accepting sync.WaitGroup // accept loops
	draining  sync.WaitGroup // services removed by a reload, finishing their work
	stick     stickFeed      // stick-table changes for an HA peer (stick.go)
	l4        *l4Syncer      // programs IPVS for the L4 services (l4.go)
}

// listener is one bound listen address. It belongs to the proxy rather than
// a service, so that a reload can hand it to another service without
// closing it.
type listener struct {
	addr string // as configured
	ln   net.Listener
	svc  atomic.Pointer[Service]
}

// New builds the services of cfg; nothing listens until Start.
func New(cfg *config.Config, log *zap.Logger) (*Proxy, error) {
	p := &Proxy{log: log, events: newEventLog(), cfg: cfg, listeners: make(map[string]*listener),
		h3: h3listeners{byKey: make(map[string]*h3listener)}, tickets: tlsterm.NewRotator(ticketKeyPeriod)}
	p.l4 = newL4Syncer(log, p.events)
	SetEventLoops(cfg.Global.EventLoops)
	for _, vs := range cfg.VirtualServices {
		s, err := p.newService(vs, cfg.Global.AccessLog)
		if err != nil {
			return nil, err
		}
		p.services = append(p.services, s)
	}
	// Routes point at pools: resolved once every service exists.
	tables, err := setRoutes(p.services, cfg.VirtualServices)
	if err != nil {
		return nil, err
	}
	for s, t := range tables {
		s.routes.Store(t)
	}
	return p, nil
}

// Services returns the proxy's services in configuration order.
func (p *Proxy) Services() []*Service {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Service(nil), p.services...)
}

// Start binds every listen address, then serves them all. If any address
// cannot be bound, nothing is left listening.
func (p *Proxy) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := checkTransparent(p.cfg); err != nil {
		return err
	}
	if err := p.l4.prepare(p.cfg); err != nil {
		return err
	}
	bound, err := p.bind(p.cfg.VirtualServices)
	if err != nil {
		return err
	}
	h3bound, err := p.bindH3(p.cfg.VirtualServices, bound)
	if err == nil {
		if err = p.applyRedirects(p.cfg); err != nil {
			closeH3(h3bound)
		}
	}
	if err != nil {
		for _, l := range bound {
			l.ln.Close()
		}
		return err
	}
	for _, s := range p.services {
		s.start()
	}
	p.attach(p.services, bound)
	p.attachH3(p.services, h3bound)
	p.l4.sync(p.services)
	ctx, cancel := context.WithCancel(context.Background())
	p.stopTickets = cancel
	go p.tickets.Run(ctx)
	p.started = true
	return nil
}

// ticketKeyPeriod is how often TLS session ticket keys rotate.
const ticketKeyPeriod = time.Hour

// bind opens the listen addresses of services that are not open yet; on
// failure it closes what it opened.
func (p *Proxy) bind(services []*config.VirtualService) (map[string]*listener, error) {
	bound := make(map[string]*listener)
	for _, s := range services {
		if config.IsL4Mode(s.Mode) {
			continue // the kernel takes its packets (l4.go)
		}
		for _, addr := range s.Listen {
			k := listenKey(addr)
			if p.listeners[k] != nil || bound[k] != nil {
				continue
			}
			ln, err := listenFreebind(addr) // IP_FREEBIND: a floating IP may not be here yet
			if err != nil {
				for _, l := range bound {
					l.ln.Close()
				}
				return nil, fmt.Errorf("virtual service %q: listen %s: %w", s.Name, addr, err)
			}
			bound[k] = &listener{addr: addr, ln: ln}
		}
	}
	return bound, nil
}

// attach points every listen address of services at its service, starts
// accept loops on the newly bound listeners and closes listeners no service
// wants any more. p.mu is held.
func (p *Proxy) attach(services []*Service, bound map[string]*listener) {
	want := make(map[string]bool)
	for _, s := range services {
		if config.IsL4Mode(s.config().Mode) {
			continue // binds nothing (l4.go)
		}
		var addrs []net.Addr
		for _, addr := range s.config().Listen {
			k := listenKey(addr)
			want[k] = true
			l := p.listeners[k]
			if l == nil {
				l = bound[k]
				p.listeners[k] = l
				l.svc.Store(s)
				p.accepting.Add(1)
				go p.acceptLoop(l)
			} else {
				l.svc.Store(s)
			}
			addrs = append(addrs, l.ln.Addr())
		}
		s.mu.Lock()
		s.addrs = addrs
		s.mu.Unlock()
	}
	for k, l := range p.listeners {
		if !want[k] {
			l.ln.Close()
			delete(p.listeners, k)
		}
	}
}

// listenKey identifies a listen address regardless of spelling:
// "0.0.0.0:80" and "0.0.0.0:080" are one; ":80" is "*:80".
func listenKey(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if n, err := strconv.Atoi(port); err == nil {
		port = strconv.Itoa(n)
	}
	if host == "" {
		return "*:" + port
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}
	return net.JoinHostPort(host, port)
}

// acceptLoop accepts clients on l for whichever service l points at.
func (p *Proxy) acceptLoop(l *listener) {
	defer p.accepting.Done()
	var delay time.Duration
	for {
		s := l.svc.Load()
		slots := s.slotChan()
		if slots != nil { // max_conns: leave further clients in the backlog
			select {
			case slots <- struct{}{}:
			case <-s.stopCh: // the service went away; the listener follows or moves
				slots = nil
			}
		}
		c, err := l.ln.Accept()
		if err != nil {
			release(slots)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or memory: back off as net/http does
			// rather than spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Error("accept", zap.Error(err), zap.Duration("retry_in", delay))
			time.Sleep(delay)
			continue
		}
		delay = 0
		if cur := l.svc.Load(); cur != s {
			// A reload moved the address while Accept waited: the client
			// belongs to the new service.
			release(slots)
			slots, s = nil, cur
		}
		for !s.enter(c, slots) {
			// The service is stopping: a reload moved the address to
			// another service (or the process is stopping).
			release(slots)
			slots = nil
			next := l.svc.Load()
			if next == s {
				c.Close()
				break
			}
			s = next
		}
	}
}

func release(slots chan struct{}) {
	if slots != nil {
		<-slots
	}
}

// Shutdown stops accepting, lets in-flight requests and connections finish
// until ctx is done, then closes what is left. Idle keep-alive clients are
// closed at once.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.stopped = true
	// IPVS's services stay in the kernel (l4.go): the syncer only stops
	// following the states.
	p.l4.close()
	if p.stopTickets != nil {
		p.stopTickets()
	}
	p.closeRedirects(ctx)
	for k, l := range p.listeners {
		l.ln.Close()
		delete(p.listeners, k)
	}
	for k, l := range p.h3.byKey {
		p.retireH3(l)
		delete(p.h3.byKey, k)
	}
	services := p.services
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range services {
		wg.Go(func() { s.shutdown(ctx) })
	}
	wg.Wait()
	p.accepting.Wait()
	p.draining.Wait()
	p.h3.closing.Wait() // the UDP sockets, once their connections ended
	return ctx.Err()
}

// Service is one running virtual service.
type Service struct {
	Name string
	Pool *balancer.Pool

	cfg     atomic.Pointer[config.VirtualService]
	reals   atomic.Pointer[realSet]
	tls     atomic.Pointer[tlsFront]      // nil without TLS
	altSvc  atomic.Pointer[[]altSvc]      // per TCP port, when HTTP/3 is on (h3.go); else nil
	persist atomic.Pointer[persister]     // nil without persistence or a hashing scheduler
	slots   atomic.Pointer[chan struct{}] // nil when max_conns is 0
	access  atomic.Pointer[zap.Logger]    // nil when the access log is off
	limit   atomic.Pointer[rateLimiter]   // rate_limit's table (ratelimit.go); nil when off
	routes  atomic.Pointer[routeTable]    // content switching (route.go); nil without routes
	rules   atomic.Pointer[serviceRules]  // request_headers, response_headers (headerrules.go); nil without
	probe   healthcheck.Probe             // nil without an active check; guarded by p.mu
	// fallback answers while no real server is available (fallback.go);
	// nil without one.
	fallback atomic.Pointer[fallback]

	log    *zap.Logger
	h2log  *log.Logger  // x/net/http2's complaints about clients, at debug level
	h3log  *slog.Logger // quic-go's, likewise
	events *eventLog
	stick  *stickFeed // the proxy's (stick.go)
	proxy  *Proxy     // for a pool's cut, which reaches the listening services' clients

	// Counters, read by Status.
	requests atomic.Uint64
	failed   atomic.Uint64 // exchanges (connections) that ended in an error
	active   atomic.Int64  // client connections
	limited  atomic.Uint64 // requests answered 429 by rate_limit

	mu       sync.Mutex
	addrs    []net.Addr
	conns    map[frontConn]struct{}   // HTTP client connections (both front ends)
	tcpConns map[net.Conn]*realServer // client (nil) and real-server connections of tcp mode
	wg       sync.WaitGroup
	stopCh   chan struct{} // closed, under mu, when shutdown begins
}

// realSet is a service's real servers: the current ones in order, and every
// server a request may still hold (removed ones included) by its balancer
// entry. It is replaced, never changed.
type realSet struct {
	list     []*realServer
	byServer map[*balancer.Server]*realServer
	// Lookups for persistence, over list only.
	byName map[string]*realServer
	byAddr map[netip.AddrPort]*realServer // RDP routing tokens
	tokens *tokens                        // cookie persistence, else nil
	// h2 is set when a server of list speaks HTTP/2: HTTP/1.1 clients are
	// then served through net/http (h1handler.go).
	h2 bool
}

// newRealSet indexes list; byServer starts with the entries of keep (servers
// requests may still hold).
func (s *Service) newRealSet(list []*realServer, keep map[*balancer.Server]*realServer) *realSet {
	set := &realSet{
		list:     list,
		byServer: make(map[*balancer.Server]*realServer, len(keep)+len(list)),
		byName:   make(map[string]*realServer, len(list)),
		byAddr:   make(map[netip.AddrPort]*realServer, len(list)),
	}
	for srv, rs := range keep {
		set.byServer[srv] = rs
	}
	for _, rs := range list {
		set.byServer[rs.Server] = rs
		set.byName[rs.Name] = rs
		set.h2 = set.h2 || rs.h2
		if ap, err := netip.ParseAddrPort(rs.Address); err == nil {
			set.byAddr[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = rs
		}
	}
	if p := s.persist.Load(); p != nil && p.signer != nil {
		set.tokens = newTokens(p.signer, s.Name, list)
	}
	return set
}

func (p *Proxy) newService(vs *config.VirtualService, accessLog bool) (*Service, error) {
	sched, err := newScheduler(vs)
	if err != nil {
		return nil, fmt.Errorf("virtual service %q: %w", vs.Name, err)
	}
	probe, err := newProbe(&vs.HealthCheck)
	if err != nil {
		return nil, fmt.Errorf("virtual service %q: health_check: %w", vs.Name, err)
	}
	front, err := p.newTLSFront(vs)
	if err != nil {
		return nil, err
	}
	s := &Service{
		Name:     vs.Name,
		probe:    probe,
		log:      p.log.With(zap.String("service", vs.Name)),
		events:   p.events,
		stick:    &p.stick,
		proxy:    p,
		conns:    make(map[frontConn]struct{}),
		tcpConns: make(map[net.Conn]*realServer),
		stopCh:   make(chan struct{}),
	}
	s.h2log, _ = zap.NewStdLogAt(s.log.Named("h2"), zap.DebugLevel)
	s.h3log = newH3Log(s.log)
	s.cfg.Store(vs)
	s.tls.Store(front)
	s.setAccess(accessLog)
	s.setSlots(vs.MaxConns)
	s.rules.Store(compileRules(vs))
	s.limit.Store(newRateLimiter(vs.RateLimit))
	s.fallback.Store(newFallback(s, vs.Fallback))
	s.persist.Store(s.hookStick(newPersister(vs, nil)))
	var list []*realServer
	servers := make([]*balancer.Server, 0, len(vs.RealServers))
	for _, rc := range vs.RealServers {
		rs := newRealServer(s, rc)
		list = append(list, rs)
		servers = append(servers, rs.Server)
	}
	s.reals.Store(s.newRealSet(list, nil))
	s.Pool = balancer.NewPool(sched, servers, vs.QueueTimeout)
	return s, nil
}

// newScheduler builds the service's balancer. An L4 service's pool never
// picks (the kernel schedules: its scheduler may be an IPVS name), it only
// keeps the real servers' states, so it gets the default scheduler.
func newScheduler(vs *config.VirtualService) (balancer.Scheduler, error) {
	if config.IsL4Mode(vs.Mode) {
		return balancer.New(config.DefaultScheduler)
	}
	return balancer.New(vs.Scheduler)
}

// newProbe builds the active check of hc; nil when there is none.
func newProbe(hc *config.HealthCheck) (healthcheck.Probe, error) {
	if hc.Type == "" || hc.Type == config.CheckNone {
		return nil, nil
	}
	return healthcheck.New(hc)
}

func (s *Service) config() *config.VirtualService { return s.cfg.Load() }

// realOf returns the realServer of a server the pool handed out.
func (s *Service) realOf(srv *balancer.Server) *realServer { return s.reals.Load().byServer[srv] }

func (s *Service) slotChan() chan struct{} {
	if c := s.slots.Load(); c != nil {
		return *c
	}
	return nil
}

// setSlots sizes the service's max_conns; clients holding a slot of an
// earlier size give it back there.
func (s *Service) setSlots(n int) {
	if n <= 0 {
		s.slots.Store(nil)
		return
	}
	c := make(chan struct{}, n)
	s.slots.Store(&c)
}

func (s *Service) setAccess(on bool) {
	if on {
		s.access.Store(s.log.Named("access"))
	} else {
		s.access.Store(nil)
	}
}

// Addrs returns the bound listen addresses (useful with port 0).
func (s *Service) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]net.Addr(nil), s.addrs...)
}

// start begins health checking and the reaping of idle connections.
func (s *Service) start() {
	for _, rs := range s.reals.Load().list {
		rs.startMonitor(s.probe)
	}
	s.wg.Add(1)
	go s.reapIdle()
	vs := s.config()
	if config.IsL4Mode(vs.Mode) {
		s.log.Info("virtual service in the kernel (IPVS)", zap.String("vip", vs.Listen[0]), zap.String("mode", vs.Mode),
			zap.String("protocol", vs.Protocol), zap.String("scheduler", vs.Scheduler), zap.Int("real_servers", len(vs.RealServers)))
		return
	}
	if vs.IsPool() {
		s.log.Info("pool started (no listen: reached through routes)", zap.String("scheduler", vs.Scheduler),
			zap.Int("real_servers", len(vs.RealServers)))
		return
	}
	s.log.Info("virtual service listening",
		zap.Strings("listen", vs.Listen), zap.String("mode", vs.Mode),
		zap.String("scheduler", vs.Scheduler), zap.Int("real_servers", len(vs.RealServers)))
}

// enter starts serving client c, which holds a slot from slots (nil if
// none); false if the service is stopping.
func (s *Service) enter(c net.Conn, slots chan struct{}) bool {
	s.mu.Lock()
	if s.isStopping() {
		s.mu.Unlock()
		return false
	}
	s.wg.Add(1)
	s.mu.Unlock()
	if s.config().Mode == config.ModeTCP {
		go s.serveTCP(c, slots)
	} else {
		go s.serveHTTP(c, slots)
	}
	return true
}

// reapIdle closes pooled real-server connections nobody used for a while,
// and forgets removed real servers nothing holds any more.
func (s *Service) reapIdle() {
	defer s.wg.Done()
	t := time.NewTicker(backendIdleTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			now := time.Now()
			cutoff := now.Add(-backendIdleTimeout)
			set := s.reals.Load()
			for _, rs := range set.byServer {
				rs.reap(cutoff)
			}
			s.reapFallback(cutoff)
			s.persist.Load().sweep(now)
			s.forgetRetired(now.Add(-time.Minute))
		case <-s.stopCh:
			return
		}
	}
}

// forgetRetired drops removed real servers retired before cutoff that no
// request holds.
func (s *Service) forgetRetired(cutoff time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.reals.Load()
	var drop []*balancer.Server
	for srv, rs := range set.byServer {
		rs.state.Lock()
		old := !rs.retiredAt.IsZero() && rs.retiredAt.Before(cutoff)
		rs.state.Unlock()
		if old && srv.Active() == 0 {
			drop = append(drop, srv)
		}
	}
	if len(drop) == 0 {
		return
	}
	next := *set
	next.byServer = maps.Clone(set.byServer)
	for _, srv := range drop {
		delete(next.byServer, srv)
	}
	s.reals.Store(&next)
}

func (s *Service) shutdown(ctx context.Context) {
	s.stop()
	for _, rs := range s.reals.Load().list {
		rs.endMonitor()
	}

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.forceClose()
		}
		for c := range s.tcpConns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
	}
	for _, rs := range s.reals.Load().byServer {
		rs.reap(time.Time{})
	}
	s.reapFallback(time.Time{})
}

// cut closes every connection to rs now: the real server was put in
// maintenance, which means no traffic at all.
func (s *Service) cut(rs *realServer) {
	s.mu.Lock()
	for c := range s.conns {
		c.cut(rs)
	}
	for c, owner := range s.tcpConns {
		if owner == rs {
			c.Close()
		}
	}
	s.mu.Unlock()
	if s.config().IsPool() && s.proxy != nil {
		// A pool's exchanges are the listening services' clients'.
		for _, f := range s.proxy.Services() {
			if f == s {
				continue
			}
			f.mu.Lock()
			for c := range f.conns {
				c.cut(rs)
			}
			f.mu.Unlock()
		}
	}
	rs.reap(time.Time{})
	rs.cutForwarding()
}

// stop begins a shutdown: no new clients, idle ones closed. Stopping twice
// is harmless.
func (s *Service) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.isStopping() {
		close(s.stopCh)
		for c := range s.conns {
			c.stop()
		}
	}
}

// isStopping reports whether shutdown has begun.
func (s *Service) isStopping() bool {
	select {
	case <-s.stopCh:
		return true
	default:
		return false
	}
}
