package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"

	"github.com/fulcrumlb/fulcrum/balancer"
	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/healthcheck"
	"github.com/fulcrumlb/fulcrum/tlsterm"
)

// realServer is a balancer.Server with its pool of idle connections, its
// counters, its health monitor and the inputs of its effective weight and
// admin state.
type realServer struct {
	*balancer.Server
	svc    *Service
	tlsCfg *tls.Config               // re-encryption, nil for plain TCP
	tlsErr error                     // why tlsCfg could not be built
	fwd    atomic.Pointer[transport] // the Handler front ends' (h2exchange), nil until used
	h2     bool                      // protocol = "h2": spoken to only through fwd
	// sendProxy is the PROXY header version sent first on its
	// connections (send_proxy; 0: none), which are then private to one
	// client (proxyout.go). A change makes a new real server (sameTLS).
	sendProxy byte
	// fallback marks the service's fallback server (fallback.go), which
	// is outside its pool: no persistence remembers it.
	fallback bool

	mu sync.Mutex
	// idle holds the pooled connections by the event loop whose epoll set
	// holds them (idle[l.id]; idle[0]: none), each LIFO: the most recently
	// used last, the warmest. nidle counts them all.
	idle    [][]*backendConn
	nidle   int
	retired bool // removed from its service: pool nothing more

	// Counters, read by Status.
	requests      atomic.Uint64
	responses     [5]atomic.Uint64 // by class: 1xx … 5xx
	bytesIn       atomic.Uint64    // from the real server
	bytesOut      atomic.Uint64    // to the real server
	connectErrors atomic.Uint64
	retries       atomic.Uint64

	// monitor is the health monitor, nil when the service has no check;
	// read on the hot path for passive observation.
	monitor atomic.Pointer[healthcheck.Monitor]

	state sync.Mutex // guards the fields below
	file  config.RealServer
	// Inputs of the effective weight, max_conns and admin state.
	weight      int                 // configured: from the file or the API
	maxConns    int                 // configured
	operator    balancer.AdminState // set by the file or the API
	agentState  balancer.AdminState // Ready unless an agent said drain or maint
	agentPct    int                 // an agent's NN%, 100 if none
	agentWeight int                 // an agent's weight:N, -1 if none
	agentMax    int                 // an agent's maxconn:N, -1 if none
	upSince     time.Time           // when it last came up, for slow start
	last        CheckStatus
	stopMonitor context.CancelFunc
	monitorDone chan struct{}
	retiredAt   time.Time
}

// alpn is what the real server is offered by ALPN on re-encrypted
// connections: HTTP/2 over TLS is chosen by ALPN only (RFC 9113 §3.2; the
// transport refuses a server that did not pick it); a tcp service passes
// the client's bytes on, whatever protocol they are, and offers none. (A
// service whose mode changes is a new service, with new real servers.)
func (rs *realServer) alpn() []string {
	switch {
	case rs.svc != nil && rs.svc.config() != nil && rs.svc.config().Mode == config.ModeTCP:
		return nil
	case rs.h2:
		return []string{http2.NextProtoTLS}
	}
	return []string{config.ProtoHTTP1}
}

func newRealServer(svc *Service, rc *config.RealServer) *realServer {
	rs := &realServer{
		Server:      balancer.NewServer(rc.Name, rc.Address, rc.Weight, rc.MaxConns),
		svc:         svc,
		file:        *rc,
		weight:      rc.Weight,
		maxConns:    rc.MaxConns,
		agentPct:    100,
		agentWeight: -1,
		agentMax:    -1,
		h2:          rc.Protocol == config.ProtoH2,
		sendProxy:   sendProxyVersion(rc.SendProxy),
	}
	if rc.TLS {
		// The file was checked; a CA file that broke since makes every
		// connect fail, and say why.
		rs.tlsCfg, rs.tlsErr = tlsterm.ClientConfig(rc, rs.alpn())
	}
	rs.operator, _ = balancer.ParseAdminState(rc.State) // "" (not from a file) is Ready
	rs.Server.SetAdminState(rs.operator)
	return rs
}

// reconfigure applies a reloaded file's entry for this server. A value the
// file changed wins; one it left alone keeps whatever the API set since.
func (rs *realServer) reconfigure(rc *config.RealServer) {
	rs.state.Lock()
	defer rs.state.Unlock()
	if rc.Weight != rs.file.Weight {
		rs.weight = rc.Weight
	}
	if rc.MaxConns != rs.file.MaxConns {
		rs.maxConns = rc.MaxConns
	}
	if rc.State != rs.file.State {
		rs.operator, _ = balancer.ParseAdminState(rc.State)
	}
	rs.file = *rc
	rs.applyLocked()
}

// applyLocked recomputes the effective weight, max_conns and admin state and
// hands them to the balancer. rs.state is held.
func (rs *realServer) applyLocked() {
	w := rs.weight
	if rs.agentWeight >= 0 {
		w = rs.agentWeight
	}
	w = w * rs.agentPct / 100
	if ss := rs.svc.config().HealthCheck.SlowStart; ss > 0 && !rs.upSince.IsZero() && w > 0 {
		if up := time.Since(rs.upSince); up < ss {
			w = max(1, int(int64(w)*int64(up)/int64(ss)))
		}
	}
	rs.Server.SetWeight(w)
	maxConns := rs.maxConns
	if rs.agentMax >= 0 {
		maxConns = rs.agentMax
	}
	rs.Server.SetMaxConns(maxConns)
	admin := max(rs.operator, rs.agentState)
	entering := admin == balancer.Maintenance && rs.Server.AdminState() != balancer.Maintenance
	rs.Server.SetAdminState(admin)
	rs.svc.Pool.Update()
	rs.svc.signalL4() // the kernel follows (l4.go)
	if entering {
		// Maintenance means no traffic at all, whoever asked for it (the
		// API, an agent, the file): close the server's connections, where
		// a drain lets them finish. Not under rs.state: cut takes the
		// service's lock.
		go rs.svc.cut(rs)
	}
}

// setOperator sets the admin state an operator asked for.
func (rs *realServer) setOperator(a balancer.AdminState) {
	rs.state.Lock()
	rs.operator = a
	rs.applyLocked()
	rs.state.Unlock()
}

// setWeight sets the configured weight (the API's "weight" call).
func (rs *realServer) setWeight(w int) {
	rs.state.Lock()
	rs.weight = w
	rs.applyLocked()
	rs.state.Unlock()
}

// checkAddr is where the active check connects: the server's address, or
// its host with the check's port.
func (rs *realServer) checkAddr(port int) string {
	if port == 0 {
		return rs.Address
	}
	host, _, err := net.SplitHostPort(rs.Address)
	if err != nil {
		return rs.Address
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// startMonitor starts the health monitor for the service's current check
// settings, keeping the server's present health.
func (rs *realServer) startMonitor(probe healthcheck.Probe) {
	hc := &rs.svc.config().HealthCheck
	rs.state.Lock()
	rs.last.Type = hc.Type
	if probe == nil {
		rs.last.Type = config.CheckNone // also for "" (configs built in code)
	}
	rs.state.Unlock()
	if probe == nil && hc.AgentPort == 0 {
		// No check at all (any more): nothing could bring a down server
		// back, so it counts as up.
		if rs.Server.Down() {
			rs.state.Lock()
			rs.Server.SetDown(false)
			rs.applyLocked()
			rs.state.Unlock()
			rs.svc.events.add(EventHealth, rs.svc.Name, rs.Name, "up: no health check configured")
		}
		return
	}
	set := healthcheck.Settings{
		Interval:      hc.Interval,
		Timeout:       hc.Timeout,
		Rise:          hc.Rise,
		Fall:          hc.Fall,
		ObserveErrors: hc.ObserveErrors,
		Down:          rs.Server.Down(),
	}
	if hc.AgentPort != 0 {
		set.AgentAddr = rs.checkAddr(hc.AgentPort)
	}
	rep := &reporter{rs: rs}
	if rs.h2 {
		probe = healthcheck.HTTP2(probe) // a gRPC server may not answer HTTP/1.1
	}
	// A real server that expects a PROXY header refuses a check without.
	probe = healthcheck.SendProxy(probe, sendProxyName(rs.sendProxy))
	m := healthcheck.NewMonitor(probe, rs.checkAddr(hc.Port), set, rep)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	rs.state.Lock()
	rs.stopMonitor, rs.monitorDone = cancel, done
	rs.state.Unlock()
	rs.monitor.Store(m)
	go func() {
		defer close(done)
		m.Run(ctx)
		rep.dead.Store(true)
	}()
}

// endMonitor stops the health monitor and waits until it has stopped
// reporting.
func (rs *realServer) endMonitor() {
	rs.state.Lock()
	cancel, done := rs.stopMonitor, rs.monitorDone
	rs.stopMonitor, rs.monitorDone = nil, nil
	rs.state.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	rs.monitor.Store(nil)
}

// retire takes the server out of service for good: no monitor, no pooled
// connections. Requests in flight finish.
func (rs *realServer) retire() {
	rs.endMonitor()
	rs.mu.Lock()
	rs.retired = true
	rs.mu.Unlock()
	rs.state.Lock()
	rs.retiredAt = time.Now()
	rs.state.Unlock()
	rs.reap(time.Time{})
}

// observe feeds passive health observation with the outcome of one request:
// failed is a connect failure, a timeout or a 5xx.
func (rs *realServer) observe(failed bool, detail string) {
	m := rs.monitor.Load()
	if m == nil {
		return
	}
	if failed {
		m.ObserveError(detail)
	} else {
		m.ObserveOK()
	}
}

// countResponse counts a response status from the real server.
func (rs *realServer) countResponse(status int) {
	if c := status/100 - 1; c >= 0 && c < len(rs.responses) {
		rs.responses[c].Add(1)
	}
}

// reporter receives one monitor's reports for a real server. dead is set
// once the monitor has returned, so a replaced monitor cannot report late.
type reporter struct {
	rs   *realServer
	dead atomic.Bool
}

func (r *reporter) Checked(res healthcheck.Result) {
	if r.dead.Load() {
		return
	}
	rs := r.rs
	rs.state.Lock()
	rs.last.OK, rs.last.Detail, rs.last.Latency, rs.last.Time = res.OK, res.Detail, res.Latency, time.Now()
	rs.state.Unlock()
}

func (r *reporter) HealthChanged(up bool, why healthcheck.Result) {
	if r.dead.Load() {
		return
	}
	rs := r.rs
	s := rs.svc
	rs.state.Lock()
	rs.Server.SetDown(!up)
	ss := s.config().HealthCheck.SlowStart
	if up {
		rs.upSince = time.Now()
	}
	rs.applyLocked()
	rs.state.Unlock()
	log := s.log.With(zap.String("real_server", rs.Name), zap.String("address", rs.Address), zap.String("detail", why.Detail))
	if up {
		log.Info("real server is up")
		s.events.add(EventHealth, s.Name, rs.Name, "up: "+why.Detail)
		if ss > 0 {
			go rs.slowStart(ss)
		}
	} else {
		log.Warn("real server is down")
		s.events.add(EventHealth, s.Name, rs.Name, "down: "+why.Detail)
	}
}

// slowStart raises the effective weight in steps until the ramp is over.
func (rs *realServer) slowStart(d time.Duration) {
	step := max(d/20, 100*time.Millisecond)
	t := time.NewTicker(step)
	defer t.Stop()
	for range t.C {
		rs.state.Lock()
		since := rs.upSince
		rs.applyLocked()
		rs.state.Unlock()
		if rs.Server.Down() || time.Since(since) >= d {
			return
		}
	}
}

func (r *reporter) AgentReplied(a healthcheck.AgentReply) {
	if r.dead.Load() {
		return
	}
	rs := r.rs
	rs.state.Lock()
	before := [4]int{int(rs.agentState), rs.agentPct, rs.agentWeight, rs.agentMax}
	switch a.State {
	case "drain":
		rs.agentState = balancer.Drain
	case "maint":
		rs.agentState = balancer.Maintenance
	case "ready":
		rs.agentState = balancer.Ready
	}
	if a.Percent >= 0 {
		rs.agentPct = a.Percent
	}
	if a.Weight >= 0 {
		rs.agentWeight = min(a.Weight, config.MaxWeight)
	}
	if a.MaxConn >= 0 {
		rs.agentMax = a.MaxConn
	}
	after := [4]int{int(rs.agentState), rs.agentPct, rs.agentWeight, rs.agentMax}
	rs.last.Agent = a.String()
	changed := after != before
	var msg string
	if changed {
		rs.applyLocked()
		msg = fmt.Sprintf("agent: %s (now %s, effective weight %d, max_conns %d)",
			a.String(), rs.Server.AdminState(), rs.Server.Weight(), rs.Server.MaxConns())
	}
	rs.state.Unlock()
	if changed {
		s := rs.svc
		s.log.Info("agent changed real server", zap.String("real_server", rs.Name), zap.String("reply", a.String()))
		s.events.add(EventAgent, s.Name, rs.Name, msg)
	}
}

// status returns the server's snapshot.
func (rs *realServer) status() RealServerStatus {
	rs.state.Lock()
	st := RealServerStatus{
		Name:    rs.Name,
		Address: rs.Address,
		Weight:  rs.weight,
		Check:   rs.last,
	}
	rs.state.Unlock()
	st.EffectiveWeight = rs.Server.Weight()
	st.MaxConns = rs.Server.MaxConns()
	st.Active = rs.Server.Active()
	st.State = rs.Server.AdminState().String()
	st.Health = "up"
	st.Color = ColorGreen
	switch {
	case rs.Server.Down():
		st.Health, st.Color = "down", ColorRed
	case !rs.Server.Available():
		st.Color = ColorBlue
	}
	st.Requests = rs.requests.Load()
	c := &st.Responses
	for i, p := range []*uint64{&c.C1xx, &c.C2xx, &c.C3xx, &c.C4xx, &c.C5xx} {
		*p = rs.responses[i].Load()
	}
	st.BytesIn = rs.bytesIn.Load()
	st.BytesOut = rs.bytesOut.Load()
	st.ConnectErrors = rs.connectErrors.Load()
	st.Retries = rs.retries.Load()
	return st
}
