package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/fulcrumlb/fulcrum/config"

	"golang.org/x/net/http2"
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
	// private: made for one client (send_proxy, transparent); it goes
	// back to that client's connection, never to the pool.
	private bool
	// preamble is sent before the first request: the PROXY header of a
	// new connection with send_proxy (dial), nil once sent.
	preamble []byte
	// The event loop whose epoll set holds the connection (loop.go), and
	// its slot there; lp is nil when none does. While lp is set, conn is
	// nil: the loop reads and writes fd, outside Go's poller (fdconn.go).
	lp    *evloop
	lslot int32
	lgen  uint32

	// mu guards conn and fd against abort, which shutdown and maintenance
	// call from other goroutines; their owner reads them freely.
	mu sync.Mutex
	// fd is the descriptor an event loop keeps from the first time one
	// took the connection (detach) until it closes, else -1; a goroutine
	// serving the connection since then holds a duplicate (an fdConn) as
	// conn.
	fd            int
	local, remote net.Addr // conn's, kept for the fdConns made from fd
}

// get returns a pooled connection, or nil when the pool has no live one.
// With check, the connection is checked however briefly it was idle (the
// request cannot be replayed if it proves closed). It takes one the event
// loop l watches already if there is one (nil: one no loop watches),
// sparing the move from one epoll set to another.
func (rs *realServer) get(check bool, l *evloop) *backendConn {
	for {
		rs.mu.Lock()
		bc := rs.popIdle(l)
		rs.mu.Unlock()
		if bc == nil {
			return nil
		}
		if (!check && time.Since(bc.idleSince) < staleCheckAfter) || bc.alive() {
			return bc
		}
		bc.close()
	}
}

// connect opens a TCP connection to the real server (tcp mode uses it as
// it is; http mode through dial), within timeouts.connect, and re-encrypts
// it for a tls real server. cl is the client the connection is for, nil
// for one that may serve any client (a pooled one).
func (rs *realServer) connect(cl *clientID) (net.Conn, error) {
	return rs.connectContext(context.Background(), cl)
}

// connectContext is connect, given up early when ctx is done (the HTTP/2
// client that wanted it went away). A connection for client cl comes from
// the client's address with transparent = true, and starts with its PROXY
// header with send_proxy (before the TLS handshake of re-encryption, as
// HAProxy sends it).
func (rs *realServer) connectContext(ctx context.Context, cl *clientID) (net.Conn, error) {
	start := time.Now()
	c, err := rs.dialTCP(ctx, cl)
	if err != nil {
		return nil, err
	}
	timeout := rs.svc.config().Timeouts.Connect
	if cl != nil && rs.sendProxy != 0 {
		if err := writeProxyHeader(c, rs.sendProxy, cl, start.Add(timeout)); err != nil {
			c.Close()
			return nil, err
		}
	}
	if rs.tlsCfg == nil {
		return c, nil
	}
	return rs.tlsClient(c, timeout)
}

// dialTCP opens the TCP connection of connectContext, nothing sent yet.
func (rs *realServer) dialTCP(ctx context.Context, cl *clientID) (net.Conn, error) {
	if rs.tlsErr != nil {
		return nil, rs.tlsErr
	}
	vs := rs.svc.config()
	timeout := vs.Timeouts.Connect
	d := net.Dialer{Timeout: timeout}
	if cl != nil && vs.Transparent {
		var src netip.Addr
		if cl.src != nil {
			src, _ = netip.AddrFromSlice(cl.src.IP)
		}
		if err := transparentDialer(&d, src, rs.Address); err != nil {
			return nil, err
		}
	}
	return d.DialContext(ctx, "tcp", rs.Address)
}

// errH2Only refuses clientConn's HTTP/1.1 bytes to an h2 real server. Its
// service serves HTTP/1.1 clients through net/http instead (h1handler.go);
// only a client connected before a reload gave the service its first h2
// real server gets here, and is sent to another real server, or a 502.
var errH2Only = errors.New(`the real server speaks HTTP/2 (protocol = "h2"), and this HTTP/1.1 connection predates it: reconnect`)

// dial opens a new connection for clientConn's HTTP/1.1 exchanges: for
// client cl alone (private), or nil for the pool.
func (rs *realServer) dial(cl *clientID) (*backendConn, error) {
	if rs.h2 {
		return nil, errH2Only
	}
	var (
		c   net.Conn
		hdr []byte
		err error
	)
	if cl != nil && rs.sendProxy != 0 && rs.tlsCfg == nil {
		// The PROXY header goes out with the first request, in the same
		// write (forward): a system call and a segment fewer, and the
		// real server reads both at once.
		if hdr, err = proxyHeader(rs.sendProxy, cl); err != nil {
			return nil, err
		}
		c, err = rs.dialTCP(context.Background(), cl)
	} else {
		c, err = rs.connect(cl)
	}
	if err != nil {
		return nil, err
	}
	bc := &backendConn{rs: rs, conn: c, private: cl != nil, fd: -1, preamble: hdr}
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
	if rs.nidle < maxIdlePerServer && !rs.retired {
		i := 0
		if bc.lp != nil {
			i = bc.lp.id
		}
		for len(rs.idle) <= i {
			rs.idle = append(rs.idle, nil)
		}
		rs.idle[i] = append(rs.idle[i], bc)
		rs.nidle++
		bc = nil
	}
	rs.mu.Unlock()
	if bc != nil {
		bc.close()
	}
}

// popIdle takes the most recently used idle connection, one loop l
// watches if any (rs.mu held).
func (rs *realServer) popIdle(l *evloop) *backendConn {
	if rs.nidle == 0 {
		return nil
	}
	i := 0
	if l != nil {
		i = l.id
	}
	if i >= len(rs.idle) || len(rs.idle[i]) == 0 {
		for i = range rs.idle {
			if len(rs.idle[i]) > 0 {
				break
			}
		}
	}
	s := rs.idle[i]
	bc := s[len(s)-1]
	s[len(s)-1] = nil
	rs.idle[i] = s[:len(s)-1]
	rs.nidle--
	return bc
}

// reap closes pooled connections idle since before the cutoff; with a zero
// cutoff, all of them, those of the HTTP/2 front end's transport too (which
// closes its own after backendIdleTimeout).
func (rs *realServer) reap(cutoff time.Time) {
	if t := rs.fwd.Load(); t != nil && cutoff.IsZero() {
		t.CloseIdleConnections()
	}
	rs.mu.Lock()
	var old []*backendConn
	for i, s := range rs.idle {
		keep := s[:0]
		for _, bc := range s {
			if cutoff.IsZero() || bc.idleSince.Before(cutoff) {
				old = append(old, bc)
			} else {
				keep = append(keep, bc)
			}
		}
		clear(s[len(keep):])
		rs.idle[i] = keep
	}
	rs.nidle -= len(old)
	rs.mu.Unlock()
	for _, bc := range old {
		bc.close()
	}
}

// alive reports whether an idle connection is still open and silent: a
// non-blocking peek must find nothing to read (no EOF, no stray bytes).
func (bc *backendConn) alive() bool {
	var b [1]byte
	peek := func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return err == unix.EAGAIN
	}
	if bc.fd >= 0 {
		return peek(uintptr(bc.fd))
	}
	raw := bc.in.raw
	if raw == nil {
		// TLS: peek under it; a close_notify or a FIN shows as bytes or EOF.
		if raw = rawOf(bc.conn); raw == nil {
			return true
		}
	}
	ok := false
	raw.Control(func(fd uintptr) { ok = peek(fd) })
	return ok
}

// detach takes the connection out of Go's poller for an event loop, which
// reads and writes bc.fd from then on (until attach). It reports false for
// a connection a loop cannot serve (TLS), or when no descriptor is left.
func (bc *backendConn) detach() bool {
	if bc.conn == nil {
		return true
	}
	if bc.fd < 0 {
		if _, ok := bc.conn.(syscall.Conn); !ok {
			return false
		}
		bc.local, bc.remote = bc.conn.LocalAddr(), bc.conn.RemoteAddr()
	}
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if bc.fd < 0 {
		fd, err := detachFD(bc.conn)
		if err != nil {
			return false
		}
		bc.fd = fd
	} else {
		bc.conn.Close() // the duplicate attach made
	}
	bc.conn = nil
	bc.in.detach()
	return true
}

// attach gives a connection an event loop held (detach) back to Go's
// poller, for a goroutine: as an fdConn over a duplicate of bc.fd.
func (bc *backendConn) attach() error {
	if bc.conn != nil {
		return nil
	}
	c, err := newFDConn(bc.fd, bc.local, bc.remote)
	if err != nil {
		return err
	}
	bc.mu.Lock()
	bc.conn = c
	bc.mu.Unlock()
	bc.in.init(c)
	return nil
}

// loosen readies a connection an event loop may hold for a goroutine: out
// of the loop's epoll set, and back in Go's poller (attach). from is the
// loop that calls, or nil for a goroutine. When that fails (no descriptor
// left), it closes bc.
func (bc *backendConn) loosen(from *evloop) error {
	switch bc.lp {
	case nil:
	case from:
		from.unregister(bc)
	default:
		bc.lp.unregisterFrom(bc)
	}
	if err := bc.attach(); err != nil {
		bc.close()
		return err
	}
	return nil
}

// abort ends the connection from another goroutine than its user's (the
// shutdown grace ran out, or its real server went into maintenance): the
// user's reads and writes fail, and it closes the connection.
func (bc *backendConn) abort() {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if bc.conn != nil {
		bc.conn.Close()
	}
	if bc.fd >= 0 {
		unix.Shutdown(bc.fd, unix.SHUT_RDWR)
	}
}

func (bc *backendConn) close() {
	if l := bc.lp; l != nil { // the loop frees its slot (closing took it out of its set)
		bc.lp = nil
		l.send(loopMsg{kind: loopFree, slot: bc.lslot, gen: bc.lgen})
	}
	bc.mu.Lock()
	if bc.conn != nil {
		bc.conn.Close()
	}
	if bc.fd >= 0 {
		unix.Close(bc.fd)
		bc.fd = -1
	}
	bc.mu.Unlock()
	bc.in.r, bc.in.w = 0, 0
	bc.in.release()
}

// transport is how the net/http Handler front ends (HTTP/2, and HTTP/1.1
// to a service with h2 real servers: h2exchange) forward requests to one
// real server: net/http's client, HTTP/1.1 or HTTP/2 as the real server's
// protocol says, over connections made by connect (so that timeouts.connect
// and re-encryption work the same).
type transport struct {
	*http.Transport
	headerTimeout time.Duration // timeouts.server it was made with

	// The connections it made, so that maintenance can close them all at
	// once: one HTTP/2 connection carries the streams of many clients, and
	// may still carry some when the cut cancels them. Closed ones are
	// dropped when the next one is made.
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// connectError is a failure to connect to the real server: nothing was
// sent, so another real server may be tried.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// HTTP/2 to real servers: how soon a silent connection is checked with a
// PING (RFC 9113 §6.7), and how long the answer may take before the
// connection counts as dead and its requests fail. Without them a real
// server that vanished (power lost, a firewall that dropped the flow) would
// hold its streams until the kernel gave up on TCP, many minutes later.
const (
	h2PingAfter   = 15 * time.Second
	h2PingTimeout = 5 * time.Second
)

// transport returns the real server's transport for the service settings
// vs, made on first use. A reload that changes timeouts.server makes a new
// one (a Transport is not to be changed in use); the old one's idle
// connections are closed, and its requests in flight finish.
func (rs *realServer) transport(vs *config.VirtualService) *http.Transport {
	cur := rs.fwd.Load()
	if cur != nil && cur.headerTimeout == vs.Timeouts.Server {
		return cur.Transport
	}
	next := rs.newTransport(vs, nil)
	if !rs.fwd.CompareAndSwap(cur, next) {
		return rs.fwd.Load().Transport
	}
	if cur != nil {
		cur.CloseIdleConnections()
	}
	return next.Transport
}

// newTransport makes a transport to the real server for the service
// settings vs, whose connections are for client cl alone (handlerConn's
// private ones), or for any client when cl is nil.
func (rs *realServer) newTransport(vs *config.VirtualService, cl *clientID) *transport {
	next := &transport{headerTimeout: vs.Timeouts.Server, conns: make(map[net.Conn]struct{})}
	next.Transport = &http.Transport{
		Proxy: nil, // never a proxy from the environment
		// The requests go out as they came: no gzip asked for.
		DisableCompression: true,
		// As the HTTP/1.1 front end's pool.
		MaxIdleConnsPerHost: maxIdlePerServer,
		IdleConnTimeout:     backendIdleTimeout,
		// timeouts.server runs from the end of the request, as for
		// HTTP/1.1 (for HTTP/2 too: net/http's HTTP/2 client starts it
		// once the request body has gone). No Expect: 100-continue
		// reaches a real server: the front end's server answers it itself
		// when the body is first read.
		ResponseHeaderTimeout:  vs.Timeouts.Server,
		MaxResponseHeaderBytes: bufSize,
	}
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		c, err := rs.connectContext(ctx, cl)
		if err == nil && rs.h2 && rs.tlsCfg != nil {
			err = checkALPN(c)
		}
		if err != nil {
			return nil, &connectError{err}
		}
		next.add(c)
		return c, nil
	}
	t := next.Transport
	switch {
	case !rs.h2:
		// No HTTP/2 attempted: the real server speaks HTTP/1.1.
		t.DialContext = dial
		t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	case rs.tlsCfg != nil:
		// HTTP/2 over TLS (RFC 9113 §3.2): requests for https URLs (see
		// h2exchange.attempt) are sent on the connections dial makes,
		// whose TLS negotiated "h2".
		t.DialTLSContext = dial
		t.Protocols = new(http.Protocols)
		t.Protocols.SetHTTP2(true)
	default:
		// HTTP/2 with prior knowledge over cleartext (RFC 9113 §3.3),
		// what gRPC servers without TLS speak.
		t.DialContext = dial
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	if rs.h2 {
		t.HTTP2 = &http.HTTP2Config{SendPingTimeout: h2PingAfter, PingTimeout: h2PingTimeout}
	}
	return next
}

// checkALPN fails a TLS connection to an h2 real server whose server did
// not choose HTTP/2: speaking it anyway would only end in a protocol error
// on the first request.
func checkALPN(c net.Conn) error {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
		c.Close()
		if p == "" {
			p = "none"
		}
		return fmt.Errorf("tls: the real server did not negotiate HTTP/2 (ALPN h2; it chose %s)", p)
	}
	return nil
}

// add records a connection the transport made, forgetting closed ones.
func (t *transport) add(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for old := range t.conns {
		if isClosed(old) {
			delete(t.conns, old)
		}
	}
	t.conns[c] = struct{}{}
}

// closeAll closes every connection the transport made, busy or idle.
func (t *transport) closeAll() {
	t.mu.Lock()
	conns := t.conns
	t.conns = make(map[net.Conn]struct{})
	t.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// isClosed reports whether c was closed (here): its descriptor is gone.
func isClosed(c net.Conn) bool {
	raw := rawOf(c)
	return raw != nil && raw.Control(func(uintptr) {}) != nil
}

// cutForwarding closes the connections of the real server's transport,
// those in use too: the real server went into maintenance. (The exchanges
// using them were cancelled; this does not wait for them to notice.)
func (rs *realServer) cutForwarding() {
	if t := rs.fwd.Load(); t != nil {
		t.closeAll()
	}
}
