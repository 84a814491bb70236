package proxy

import (
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/balancer"
	"github.com/fulcrumlb/fulcrum/config"
)

// The fallback ("sorry server", ldirectord's fallback) answers a service's
// requests while none of its real servers is available: all down, in
// maintenance, draining or at weight 0. It is a plain HTTP/1.1 server
// outside the service's balancer pool, so no scheduler, health check or
// persistence ever chooses it; dispatch turns to it only when the scheduler
// finds no server. Busy servers (every one at max_conns) are not
// unavailable: their requests queue as before, and a queue timeout is still
// a 503.

// fallbackName is the fallback's real_server in access-log lines.
const fallbackName = "fallback"

// fallback is a service's fallback server.
type fallback struct {
	rs *realServer
	// pool holds rs alone: it is how a slot on rs is claimed
	// (balancer.Server's own counters are the package's), so that the
	// front ends' Pool.Release after the attempt, which returns the slot
	// on the server whichever pool it is called on, stays balanced.
	pool *balancer.Pool
}

// newFallback makes the fallback of s at addr (IP:port, validated); nil
// for "".
func newFallback(s *Service, addr string) *fallback {
	if addr == "" {
		return nil
	}
	rs := newRealServer(s, &config.RealServer{
		Name:      fallbackName,
		Address:   addr,
		Weight:    config.DefaultWeight,
		TLSVerify: true,
		Protocol:  config.ProtoHTTP1,
		State:     config.StateReady,
	})
	rs.fallback = true
	sched, _ := balancer.New("first") // registered in package balancer
	return &fallback{rs: rs, pool: balancer.NewPool(sched, []*balancer.Server{rs.Server}, 0)}
}

// setFallback makes addr the fallback of s, keeping the current one (its
// pooled connections, its counters) when the address is the same.
func (s *Service) setFallback(addr string) {
	cur := s.fallback.Load()
	if cur != nil && cur.rs.Address == addr {
		return
	}
	s.fallback.Store(newFallback(s, addr))
	if cur != nil {
		cur.rs.retire() // requests in flight finish
	}
}

// toFallback sends the request to the fallback through try, as dispatch
// does a real server. It returns try's error: the fallback could not be
// reached.
func (s *Service) toFallback(fb *fallback, rec *record, try func(rs *realServer) error) error {
	// Never fails: the server is up, ready, weighted and unbounded.
	if _, err := fb.pool.Acquire(nil); err != nil {
		return err
	}
	rs := fb.rs
	rec.rs = rs
	err := try(rs)
	if err != nil {
		rec.connFailed = true
		rs.connectErrors.Add(1)
		s.log.Debug("connect to fallback failed", zap.String("address", rs.Address), zap.Error(err))
	}
	return err
}

// reapFallback closes the fallback's pooled connections idle since before
// cutoff (all with a zero cutoff).
func (s *Service) reapFallback(cutoff time.Time) {
	if fb := s.fallback.Load(); fb != nil {
		fb.rs.reap(cutoff)
	}
}
