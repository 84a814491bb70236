package proxy

import (
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/balancer"
)

// serveTCP proxies one client connection in tcp mode: pick a real server,
// connect (retrying others on failure), then move bytes both ways.
func (s *Service) serveTCP(c net.Conn, slots chan struct{}) {
	defer s.wg.Done()
	defer release(slots)
	if !s.trackTCP(c, nil) {
		c.Close()
		return
	}
	defer s.untrackTCP(c)
	s.active.Add(1)
	defer s.active.Add(-1)
	s.requests.Add(1)
	cfg := s.config()
	start := time.Now()
	var tried balancer.Tried
	var lastErr error
	for attempt := 0; ; attempt++ {
		srv, err := s.Pool.Acquire(&tried)
		if err != nil {
			if lastErr != nil {
				err = lastErr
			}
			s.failed.Add(1)
			s.logTCP(c, nil, start, 0, 0, err)
			c.Close()
			return
		}
		rs := s.realOf(srv)
		if attempt > 0 {
			rs.retries.Add(1)
		}
		sc, err := rs.connect()
		if err != nil {
			s.Pool.Release(srv)
			rs.connectErrors.Add(1)
			rs.observe(true, "connect: "+err.Error())
			s.log.Debug("connect to real server failed", zap.String("real_server", srv.Name), zap.Error(err))
			tried.Add(srv)
			lastErr = err
			if attempt >= cfg.Retries {
				s.failed.Add(1)
				s.logTCP(c, srv, start, 0, 0, err)
				c.Close()
				return
			}
			continue
		}
		if !s.trackTCP(sc, rs) {
			sc.Close()
			c.Close()
			s.Pool.Release(srv)
			return
		}
		rs.requests.Add(1)
		rs.observe(false, "")
		up, down := pipe(c, sc, cfg.Timeouts.Client, cfg.Timeouts.Server)
		s.untrackTCP(sc)
		s.Pool.Release(srv)
		rs.bytesOut.Add(uint64(up))
		rs.bytesIn.Add(uint64(down))
		s.logTCP(c, srv, start, up, down, nil)
		return
	}
}

func (s *Service) logTCP(c net.Conn, srv *balancer.Server, start time.Time, up, down int64, err error) {
	access := s.access.Load()
	if access == nil && err == nil {
		return
	}
	rsName := "-"
	if srv != nil {
		rsName = srv.Name
	}
	fields := []zap.Field{
		zap.String("client", addrIP(c.RemoteAddr())),
		zap.String("real_server", rsName),
		zap.Int64("bytes_in", up),
		zap.Int64("bytes_out", down),
		zap.Duration("duration", time.Since(start)),
	}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	if access != nil {
		access.Info("connection", fields...)
	} else {
		s.log.Warn("connection failed", fields...)
	}
}

// trackTCP records a tcp-mode connection, so that shutdown (and, for a
// real-server connection, maintenance) can close it.
func (s *Service) trackTCP(c net.Conn, rs *realServer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isStopping() {
		return false
	}
	s.tcpConns[c] = rs
	return true
}

func (s *Service) untrackTCP(c net.Conn) {
	s.mu.Lock()
	delete(s.tcpConns, c)
	s.mu.Unlock()
}

// addrIP returns the IP of a TCP address as text, or the address as given.
func addrIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return a.String()
}
