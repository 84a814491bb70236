package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"github.com/fulcrumlb/fulcrum/config"

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
// it is; http mode through dial), within timeouts.connect, and re-encrypts
// it for a tls real server.
func (rs *realServer) connect() (net.Conn, error) { return rs.connectContext(context.Background()) }

// connectContext is connect, given up early when ctx is done (the HTTP/2
// client that wanted it went away).
func (rs *realServer) connectContext(ctx context.Context) (net.Conn, error) {
	if rs.tlsErr != nil {
		return nil, rs.tlsErr
	}
	timeout := rs.svc.config().Timeouts.Connect
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", rs.Address)
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
// cutoff, all of them, those of the HTTP/2 front end's transport too (which
// closes its own after backendIdleTimeout).
func (rs *realServer) reap(cutoff time.Time) {
	if t := rs.fwd.Load(); t != nil && cutoff.IsZero() {
		t.CloseIdleConnections()
	}
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

// transport is how the HTTP/2 front end forwards requests to one real
// server: net/http's HTTP/1.1 client over connections made by connect (so
// that re-encryption works the same), pooled as backendConns are.
type transport struct {
	*http.Transport
	headerTimeout time.Duration // timeouts.server it was made with
}

// connectError is a failure to connect to the real server: nothing was
// sent, so another real server may be tried.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// transport returns the real server's transport for the service settings
// vs, made on first use. A reload that changes timeouts.server makes a new
// one (a Transport is not to be changed in use); the old one's idle
// connections are closed, and its requests in flight finish.
func (rs *realServer) transport(vs *config.VirtualService) *http.Transport {
	cur := rs.fwd.Load()
	if cur != nil && cur.headerTimeout == vs.Timeouts.Server {
		return cur.Transport
	}
	next := &transport{headerTimeout: vs.Timeouts.Server, Transport: &http.Transport{
		Proxy: nil, // never a proxy from the environment
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := rs.connectContext(ctx)
			if err != nil {
				return nil, &connectError{err}
			}
			return c, nil
		},
		// The requests go out as they came: no gzip asked for, no HTTP/2
		// attempted (protocol = "h2" to real servers is not implemented).
		DisableCompression: true,
		TLSNextProto:       map[string]func(string, *tls.Conn) http.RoundTripper{},
		// As the HTTP/1.1 front end's pool.
		MaxIdleConnsPerHost: maxIdlePerServer,
		IdleConnTimeout:     backendIdleTimeout,
		// timeouts.server runs from the end of the request, as for
		// HTTP/1.1. (No Expect: 100-continue reaches a real server: x/net
		// answers it itself when the body is first read.)
		ResponseHeaderTimeout:  vs.Timeouts.Server,
		MaxResponseHeaderBytes: bufSize,
	}}
	if !rs.fwd.CompareAndSwap(cur, next) {
		return rs.fwd.Load().Transport
	}
	if cur != nil {
		cur.CloseIdleConnections()
	}
	return next.Transport
}
