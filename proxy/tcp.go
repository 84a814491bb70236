package proxy

import (
	"net"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/balancer"
	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/persistence"
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
	cfg := s.config()
	if cfg.AcceptProxy { // the PROXY header comes first, before TLS or RDP
		pc := s.acceptProxy(c, cfg)
		if pc == nil {
			return
		}
		c = pc
	}
	if f := s.tls.Load(); f != nil {
		// TLS termination: the real server gets the decrypted bytes (or
		// bytes encrypted again, with tls on the real server). Shutdown
		// and the idle watch still see the TCP connection underneath.
		tc := s.handshake(c, f, cfg)
		if tc == nil {
			return
		}
		c = tc
	}
	s.requests.Add(1)
	start := time.Now()
	p := s.persist.Load()
	tp := tcpPick{peer: addrOf(c.RemoteAddr())}
	tp.inspect(c, p)
	var tried balancer.Tried
	var lastErr error
	for attempt := 0; ; attempt++ {
		srv, err := s.pickTCP(&tp, &tried, p)
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
		sc, err := rs.connect(tcpClient(c, rs))
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
		tp.remember(p, rs)
		var sent int64
		if len(tp.prefix) > 0 { // the inspected bytes go first, unchanged
			sc.SetWriteDeadline(time.Now().Add(cfg.Timeouts.Server))
			n, err := sc.Write(tp.prefix)
			sc.SetWriteDeadline(time.Time{})
			sent = int64(n)
			if err != nil {
				sc.Close()
			}
		}
		up, down := pipe(c, sc, cfg.Timeouts.Client, cfg.Timeouts.Server)
		up += sent
		s.untrackTCP(sc)
		s.Pool.Release(srv)
		rs.bytesOut.Add(uint64(up))
		rs.bytesIn.Add(uint64(down))
		s.logTCP(c, srv, start, up, down, nil)
		return
	}
}

// tcpPick is what tcp mode knows of a client for persistence and hashing.
type tcpPick struct {
	peer      netip.Addr
	prefix    []byte // the client's first bytes, read for inspection; sent first
	rdp       persistence.RDPRequest
	persisted bool
}

// maxInspect bounds the bytes read for inspection (an RDP Connection
// Request is well under 1 KiB).
const maxInspect = 8 << 10

// inspect reads the client's first bytes when persistence or the scheduler
// needs the RDP Connection Request (MS-RDPBCGR 2.2.1.1), waiting at most
// inspect_delay. Whatever happens (no cookie, not RDP, a slow or silent
// client) the connection is then scheduled and every byte read is
// forwarded unchanged.
func (t *tcpPick) inspect(c net.Conn, p *persister) {
	if p == nil || (p.method != config.PersistRDPCookie && p.sched != "rdp_cookie") {
		return
	}
	wait := p.cfg.InspectDelay
	if wait <= 0 {
		wait = config.DefaultInspectDelay
	}
	c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= maxInspect {
				break
			}
			buf = append(buf[:cap(buf)], make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		req, perr := persistence.ParseRDP(buf)
		if perr == nil {
			t.rdp = req
			break
		}
		if perr != persistence.ErrNeedMore || err != nil {
			break // not RDP, or the client went quiet or away
		}
	}
	t.prefix = buf
}

// pickTCP chooses the real server of one attempt in tcp mode.
func (s *Service) pickTCP(t *tcpPick, tried *balancer.Tried, p *persister) (*balancer.Server, error) {
	if p == nil {
		return s.Pool.Acquire(tried)
	}
	if tried.Len() == 0 {
		set := s.reals.Load()
		var rs *realServer
		switch {
		case t.rdp.RoutingToken:
			// The RD Connection Broker chose the session host: go there if
			// it belongs to the service, whatever the scheduler says.
			rs = set.byAddr[t.rdp.Addr]
		case p.method == config.PersistRDPCookie && t.rdp.User != "":
			if name, ok := p.keys.Get(t.rdp.User); ok {
				rs = set.byName[name]
			}
		case p.method == config.PersistSourceIP:
			if name, ok := p.addrs.Get(p.sourceKey(t.peer)); ok {
				rs = set.byName[name]
			}
		}
		if rs != nil && s.Pool.AcquireServer(rs.Server) == nil {
			t.persisted = true
			return rs.Server, nil
		}
	}
	t.persisted = false
	switch {
	case p.sched == "source_hash":
		return s.Pool.AcquireKey(tried, addrHash(t.peer))
	case p.sched == "rdp_cookie" && t.rdp.User != "":
		return s.Pool.AcquireKey(tried, balancer.HashString(t.rdp.User))
	}
	return s.Pool.Acquire(tried)
}

// remember records the connection's real server in the stick table.
func (t *tcpPick) remember(p *persister, rs *realServer) {
	if p == nil || t.persisted {
		return
	}
	switch {
	case p.method == config.PersistRDPCookie && t.rdp.User != "":
		p.keys.Put(t.rdp.User, rs.Name)
	case p.method == config.PersistSourceIP:
		p.addrs.Put(p.sourceKey(t.peer), rs.Name)
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

// addrOf returns the IP of a TCP address (IPv4 unmapped), or the zero Addr.
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// addrIP returns the IP of a TCP address as text, or the address as given.
func addrIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return a.String()
}
