// Package admin serves Fulcrum's admin listener: the JSON API under
// /api/v1/, the web UI (embedded, no external assets) and Prometheus
// /metrics. It talks to the running proxy only through the Runtime
// interface, so it can be tested against a fake.
//
//	POST   /api/v1/login                                   {"user","password"} → session cookie + csrf_token
//	POST   /api/v1/logout
//	GET    /api/v1/session                                 logged in? csrf_token
//	GET    /api/v1/status                                  every service and real server, with rates
//	GET    /api/v1/services/{service}
//	GET    /api/v1/services/{service}/servers/{server}
//	PUT    /api/v1/services/{service}/servers/{server}/state   {"state":"drain"}
//	PUT    /api/v1/services/{service}/servers/{server}/weight  {"weight":5}
//	POST   /api/v1/services/{service}/servers              {"name","address","weight","max_conns","state"} → 201
//	DELETE /api/v1/services/{service}/servers/{server}     → 204
//	POST   /api/v1/reload                                  → 200, or 422 with the config problems
//	GET    /api/v1/events?after=N                          events with ID > N, oldest first
//	GET    /metrics                                        Prometheus
//
// Callers authenticate with a session (web UI) or HTTP Basic auth. Changes
// need, besides, a matching Origin if any, and X-CSRF-Token (session) or
// Content-Type: application/json (Basic); see checkOrigin and checkCSRF.
package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/proxy"
)

// Runtime is the running load balancer as the admin listener sees it. The
// proxy and cmd/fulcrum implement it.
type Runtime interface {
	// Status is a snapshot of every virtual service and real server.
	Status() proxy.Status
	// Events returns the events with ID > after, oldest first (a ring of
	// the last ~500).
	Events(after uint64) []proxy.Event
	// SetState sets a real server's admin state: ready, drain or
	// maintenance. Errors wrap proxy.ErrNotFound or proxy.ErrInvalid.
	SetState(service, server, state string) error
	// SetWeight sets a real server's configured weight.
	SetWeight(service, server string, weight int) error
	// AddRealServer adds a real server to a running virtual service. Errors
	// wrap ErrNotFound (service) or ErrInvalid (duplicate name, bad
	// address, ...).
	AddRealServer(service string, rs *config.RealServer) error
	// RemoveRealServer removes a real server; its connections finish.
	RemoveRealServer(service, server string) error
	// Reload re-reads the configuration file; a bad file yields
	// config.Errors and changes nothing.
	Reload() error
}

// Limits and timeouts of the admin listener.
const (
	// maxBodyBytes bounds a request body; the API's bodies are tiny.
	maxBodyBytes = 64 << 10
	// maxHeaderBytes bounds a request head.
	maxHeaderBytes = 64 << 10

	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	// writeTimeout leaves room for a reload, which re-reads and applies the
	// configuration inside the request.
	writeTimeout = 60 * time.Second
	idleTimeout  = 120 * time.Second
)

// Server is the admin listener. Create it with New, then Start it.
type Server struct {
	cfg config.Admin
	rt  Runtime
	log *zap.Logger
	// now is the clock of sessions and the login throttle; tests replace
	// it before serving.
	now func() time.Time

	tlsConfig *tls.Config // nil: plain HTTP

	auth    *authenticator
	rates   *sampler
	handler http.Handler
	sync    syncFields // HA sync endpoints (sync.go)

	// newTicker makes the rate sampler's ticker; tests replace it.
	newTicker func(d time.Duration) (<-chan time.Time, func())

	mu      sync.Mutex
	srv     *http.Server
	ln      net.Listener
	stop    chan struct{} // closed by Shutdown to end the sampler
	sampled chan struct{} // closed when the sampler has ended
}

// New prepares an admin listener for cfg, logging to log as given (name it
// "admin" if wanted; nil logs nothing). It checks the users' password
// hashes and loads the TLS key pair when cfg.TLSCert and cfg.TLSKey are
// set, but binds nothing until Start.
func New(cfg config.Admin, rt Runtime, log *zap.Logger) (*Server, error) {
	if rt == nil {
		return nil, errors.New("admin: nil Runtime")
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{
		cfg:   cfg,
		rt:    rt,
		log:   log,
		now:   time.Now,
		rates: newSampler(rateWindow),
		newTicker: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
	}
	for _, u := range cfg.Users {
		if err := checkUser(u); err != nil {
			return nil, fmt.Errorf("admin: %w", err)
		}
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("admin: tls_cert and tls_key must be given together")
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("admin: load TLS key pair: %w", err)
		}
		s.tlsConfig = &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
		}
	}
	s.auth = newAuthenticator(s.log, func() time.Time { return s.now() })
	s.auth.setUsers(cfg.Users)
	s.handler = s.routes()
	return s, nil
}

// Handler returns the admin listener's handler (API, UI and /metrics), for
// tests and for serving it on a listener of one's own. Rates stay zero
// unless the Server is also started.
func (s *Server) Handler() http.Handler { return s.handler }

// SetUsers replaces the accounts that may log in, as after a configuration
// reload. Sessions of removed users, and of users whose password hash
// changed, end at once. Users with an unusable password hash are left out
// (and logged); New reports them as errors.
func (s *Server) SetUsers(users []*config.AdminUser) {
	ended := s.auth.setUsers(users)
	s.log.Info("admin users updated", zap.Int("users", len(users)), zap.Int("sessions_ended", ended))
}

// Start binds cfg.Listen (HTTPS when a TLS key pair is configured), serves
// in the background and starts sampling request rates. It returns once the
// listener is bound.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("admin: already started")
	}
	if s.cfg.Listen == "" {
		return errors.New("admin: no listen address")
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("admin: listen: %w", err)
	}
	errLog, err := zap.NewStdLogAt(s.log, zapcore.WarnLevel)
	if err != nil {
		ln.Close()
		return fmt.Errorf("admin: %w", err)
	}
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.tlsConfig,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errLog,
	}
	s.srv, s.ln = srv, ln
	s.stop, s.sampled = make(chan struct{}), make(chan struct{})
	s.rates.observe(s.now(), s.rt.Status())
	go s.sample(s.stop, s.sampled)
	go func() {
		var err error
		if s.tlsConfig != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener failed", zap.Error(err))
		}
	}()
	s.log.Info("admin listening", zap.Stringer("address", ln.Addr()), zap.Bool("tls", s.tlsConfig != nil),
		zap.Bool("metrics_auth", s.cfg.MetricsAuth))
	return nil
}

// Addr is the bound address, or nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops accepting connections and waits, up to ctx, for requests
// in flight to finish. It is a no-op before Start.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	srv, stop, sampled := s.srv, s.stop, s.sampled
	s.stop = nil
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	if stop != nil {
		close(stop)
		<-sampled
	}
	if err := srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	return nil
}

// sample feeds the rate sampler a Status snapshot at every tick until stop
// is closed.
func (s *Server) sample(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick, stopTicker := s.newTicker(sampleInterval)
	defer stopTicker()
	for {
		select {
		case <-stop:
			return
		case now := <-tick:
			s.rates.observe(now, s.rt.Status())
		}
	}
}
