package proxy

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// maxIdlePerServer bounds the idle keep-alive connections kept to one
	// real server; more are closed when released.
	maxIdlePerServer = 512
	// backendIdleTimeout closes pooled connections unused for this long, so
	// the pool shrinks after a burst and holds few descriptors.
	backendIdleTimeout = 30 * time.Second
	// staleCheckAfter: a pooled connection idle longer than this is checked
	// (a non-blocking peek) before reuse, because the real server may have
	// closed it (Apache's keep-alive timeout is 5s). Younger ones are used as
	// they are; a bodiless request that meets a closed one is replayed.
	staleCheckAfter = time.Second
)

// backendConn is one connection to a real server.
type backendConn struct {
	rs        *realServer
	conn      net.Conn
	in        reader
	idleSince time.Time
}

// get returns a pooled connection, or nil when the pool has no live one.
// With check, the connection is checked however briefly it was idle (the
// request cannot be replayed if it proves closed).
func (rs *realServer) get(check bool) *backendConn {
	for {
		rs.mu.Lock()
		n := len(rs.idle)
		if n == 0 {
			rs.mu.Unlock()
			return nil
		}
		bc := rs.idle[n-1]
		rs.idle[n-1] = nil
		rs.idle = rs.idle[:n-1]
		rs.mu.Unlock()
		if (!check && time.Since(bc.idleSince) < staleCheckAfter) || bc.alive() {
			return bc
		}
		bc.close()
	}
}

// connect opens a TCP connection to the real server (tcp mode uses it as
// it is; http mode through dial).
func (rs *realServer) connect() (net.Conn, error) {
	if rs.tlsErr != nil {
		return nil, rs.tlsErr
	}
	timeout := rs.svc.config().Timeouts.Connect
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", rs.Address)
	if err != nil || rs.tlsCfg == nil {
		return c, err
	}
	return rs.tlsClient(c, timeout)
}

// dial opens a new connection for HTTP exchanges.
func (rs *realServer) dial() (*backendConn, error) {
	c, err := rs.connect()
	if err != nil {
		return nil, err
	}
	bc := &backendConn{rs: rs, conn: c}
	bc.in.init(c)
	return bc, nil
}

// put returns a connection whose exchange ended cleanly to the idle pool;
// now is a recent time (the exchange's), to spare a clock read.
func (rs *realServer) put(bc *backendConn, now time.Time) {
	if len(bc.in.buffered()) > 0 { // bytes beyond the response: not reusable
		bc.close()
		return
	}
	bc.in.release()
	bc.idleSince = now
	rs.mu.Lock()
	if len(rs.idle) < maxIdlePerServer && !rs.retired {
		rs.idle = append(rs.idle, bc)
		bc = nil
	}
	rs.mu.Unlock()
	if bc != nil {
		bc.close()
	}
}

// reap closes pooled connections idle since before the cutoff; with a zero
// cutoff, all of them.
func (rs *realServer) reap(cutoff time.Time) {
	rs.mu.Lock()
	keep := rs.idle[:0]
	var old []*backendConn
	for _, bc := range rs.idle {
		if cutoff.IsZero() || bc.idleSince.Before(cutoff) {
			old = append(old, bc)
		} else {
			keep = append(keep, bc)
		}
	}
	for i := len(keep); i < len(rs.idle); i++ {
		rs.idle[i] = nil
	}
	rs.idle = keep
	rs.mu.Unlock()
	for _, bc := range old {
		bc.close()
	}
}

// alive reports whether an idle connection is still open and silent: a
// non-blocking peek must find nothing to read (no EOF, no stray bytes).
func (bc *backendConn) alive() bool {
	raw := bc.in.raw
	if raw == nil {
		// TLS: peek under it; a close_notify or a FIN shows as bytes or EOF.
		if raw = rawOf(bc.conn); raw == nil {
			return true
		}
	}
	ok := false
	var b [1]byte
	raw.Control(func(fd uintptr) {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		ok = err == unix.EAGAIN
	})
	return ok
}

func (bc *backendConn) close() {
	bc.conn.Close()
	bc.in.r, bc.in.w = 0, 0
	bc.in.release()
}
