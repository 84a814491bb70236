// Package proxy is Fulcrum's userspace full proxy: it accepts clients on each
// virtual service's listen addresses and forwards HTTP/1.1 requests (http
// mode) or raw bytes (tcp mode) to the real server its balancer.Pool picks.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/balancer"
	"github.com/fulcrumlb/fulcrum/config"
)

// Proxy runs the virtual services of one configuration.
type Proxy struct {
	services []*Service
	log      *zap.Logger
}

// New builds the services of cfg; nothing listens until Start.
func New(cfg *config.Config, log *zap.Logger) (*Proxy, error) {
	p := &Proxy{log: log}
	for _, vs := range cfg.VirtualServices {
		s, err := newService(vs, cfg.Global.AccessLog, log)
		if err != nil {
			return nil, fmt.Errorf("virtual service %q: %w", vs.Name, err)
		}
		p.services = append(p.services, s)
	}
	return p, nil
}

// Services returns the proxy's services in configuration order.
func (p *Proxy) Services() []*Service { return p.services }

// Start binds every listen address, then serves them all. If any address
// cannot be bound, nothing is left listening.
func (p *Proxy) Start() error {
	for _, s := range p.services {
		if err := s.listen(); err != nil {
			for _, s := range p.services {
				s.closeListeners()
			}
			return err
		}
	}
	for _, s := range p.services {
		s.serve()
	}
	return nil
}

// Shutdown stops accepting, lets in-flight requests and connections finish
// until ctx is done, then closes what is left. Idle keep-alive clients are
// closed at once.
func (p *Proxy) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, s := range p.services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.shutdown(ctx)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// Service is one running virtual service.
type Service struct {
	Name string
	cfg  *config.VirtualService
	Pool *balancer.Pool
	real map[*balancer.Server]*realServer

	log    *zap.Logger
	access *zap.Logger // nil when the access log is off

	listeners []net.Listener
	slots     chan struct{} // nil when max_conns is 0

	mu       sync.Mutex
	conns    map[*clientConn]struct{}
	tcpConns map[net.Conn]struct{}
	wg       sync.WaitGroup
	stopCh   chan struct{} // closed, under mu, when shutdown begins
}

func newService(vs *config.VirtualService, accessLog bool, log *zap.Logger) (*Service, error) {
	sched, err := balancer.New(vs.Scheduler)
	if err != nil {
		return nil, err
	}
	s := &Service{
		Name:     vs.Name,
		cfg:      vs,
		real:     make(map[*balancer.Server]*realServer, len(vs.RealServers)),
		log:      log.With(zap.String("service", vs.Name)),
		conns:    make(map[*clientConn]struct{}),
		tcpConns: make(map[net.Conn]struct{}),
		stopCh:   make(chan struct{}),
	}
	if accessLog {
		s.access = log.Named("access").With(zap.String("service", vs.Name))
	}
	servers := make([]*balancer.Server, 0, len(vs.RealServers))
	for _, r := range vs.RealServers {
		b := balancer.NewServer(r.Name, r.Address, r.Weight, r.MaxConns)
		servers = append(servers, b)
		s.real[b] = newRealServer(b, vs.Timeouts.Connect)
	}
	s.Pool = balancer.NewPool(sched, servers, vs.QueueTimeout)
	if vs.MaxConns > 0 {
		s.slots = make(chan struct{}, vs.MaxConns)
	}
	return s, nil
}

// Addrs returns the bound listen addresses (useful with port 0).
func (s *Service) Addrs() []net.Addr {
	a := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		a[i] = l.Addr()
	}
	return a
}

func (s *Service) listen() error {
	for _, addr := range s.cfg.Listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("virtual service %q: listen %s: %w", s.Name, addr, err)
		}
		s.listeners = append(s.listeners, l)
	}
	return nil
}

func (s *Service) closeListeners() {
	for _, l := range s.listeners {
		l.Close()
	}
}

func (s *Service) serve() {
	for _, l := range s.listeners {
		s.wg.Add(1)
		go s.acceptLoop(l)
	}
	s.wg.Add(1)
	go s.reapIdle()
	s.log.Info("virtual service listening",
		zap.Strings("listen", s.cfg.Listen), zap.String("mode", s.cfg.Mode),
		zap.String("scheduler", s.cfg.Scheduler), zap.Int("real_servers", len(s.real)))
}

func (s *Service) acceptLoop(l net.Listener) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		if s.slots != nil { // max_conns: leave further clients in the backlog
			select {
			case s.slots <- struct{}{}:
			case <-s.stopCh:
				return
			}
		}
		c, err := l.Accept()
		if err != nil {
			s.releaseSlot()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or memory: back off as net/http does
			// rather than spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Error("accept", zap.Error(err), zap.Duration("retry_in", delay))
			select {
			case <-time.After(delay):
			case <-s.stopCh:
				return
			}
			continue
		}
		delay = 0
		s.wg.Add(1)
		if s.cfg.Mode == config.ModeTCP {
			go s.serveTCP(c)
		} else {
			go s.serveHTTP(c)
		}
	}
}

func (s *Service) releaseSlot() {
	if s.slots != nil {
		<-s.slots
	}
}

// reapIdle closes pooled real-server connections nobody used for a while.
func (s *Service) reapIdle() {
	defer s.wg.Done()
	t := time.NewTicker(backendIdleTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			cutoff := time.Now().Add(-backendIdleTimeout)
			for _, rs := range s.real {
				rs.reap(cutoff)
			}
		case <-s.stopCh:
			return
		}
	}
}

func (s *Service) shutdown(ctx context.Context) {
	s.mu.Lock()
	if !s.isStopping() { // a second Shutdown only waits
		close(s.stopCh)
		s.closeListeners()
		for cc := range s.conns {
			cc.stopIfIdle()
		}
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for cc := range s.conns {
			cc.forceClose()
		}
		for c := range s.tcpConns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
	}
	for _, rs := range s.real {
		rs.reap(time.Time{})
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
