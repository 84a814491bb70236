package proxy

import (
	"crypto/tls"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"

	"github.com/fulcrumlb/fulcrum/balancer"
	"github.com/fulcrumlb/fulcrum/config"
)

// expectWait is how long a request with "Expect: 100-continue" waits for the
// real server's interim answer before its body is sent anyway (RFC 9110
// §10.1.1 lets a client, and so a proxy, stop waiting).
const expectWait = time.Second

// lingerTime and lingerBytes bound the draining of a client connection
// closed after an error answer.
const (
	lingerTime  = time.Second
	lingerBytes = 256 << 10
)

// Connection states, for shutdown: an idle connection (waiting for the next
// request, no bytes in flight) is closed at once; an active one finishes its
// exchange first.
const (
	stateActive int32 = iota
	stateIdle
	stateClosed
)

// clientConn is one HTTP/1.1 client connection. Its goroutine owns the
// connection to the real server for the length of each exchange, so a
// request is read, forwarded and answered without handing buffers between
// goroutines.
type clientConn struct {
	svc  *Service
	tls  *tls.Conn              // the TLS layer when the service terminates TLS, else nil
	cfg  *config.VirtualService // the service's configuration, read afresh for each request
	conn net.Conn               // nil while an event loop holds the connection (lc.fd)
	// The connection's addresses (remote: the client a PROXY header
	// named), kept for an event loop's connection while conn is nil.
	local, remote net.Addr
	state         atomic.Int32
	// backend is the real-server connection of the exchange in flight, so
	// that a shutdown whose grace ran out can close it too.
	backend atomic.Pointer[backendConn]
	// own holds the idle connections private to this client (to real
	// servers with send_proxy, or with transparent: proxyout.go), kept for
	// its next requests and closed when it leaves.
	own   []*backendConn
	ident *clientID // what those connections announce; made on first need

	in    reader // from the client
	out   writer // to the client
	toSrv writer // to the real server of the current exchange

	peerIP string     // the connection's client IP (after a PROXY header), for X-Forwarded-For
	peer   netip.Addr // the same, for persistence and hashing
	port   string     // the VIP's port, for X-Forwarded-Port

	// The request's client (clientaddr.go): the peer, or from a trusted
	// peer the client its X-Forwarded-For names; for logs, persistence,
	// hashing and Forwarded.
	client       netip.Addr
	clientIP     string
	peerTrusted  bool       // the peer is in trusted_proxies
	lastClient   netip.Addr // the last client found in X-Forwarded-For,
	lastClientIP string     // and its text, kept for the next request

	req  request
	resp response

	// certs are the X-SSL-Client-* fields of the connection's client
	// certificate, made on first use (certsSet).
	certs    []certField
	certsSet bool

	// Per exchange.
	record            // what the exchange leaves for the counters and the log
	headLen      int  // bytes of the request head in in
	headConsumed bool // the head was discarded from in
	keep         bool // the client connection may serve another request
	upgrade      bool // the client asked to switch protocols
	isHead       bool
	bodyDone     bool // the request body (if any) was read whole
	sentBody     bool // an event loop sent the request's body (whole in the buffer): no replay
	responded    bool // response bytes went to the client
	tried        balancer.Tried
	choice       choice // persistence
	linger       bool   // unread client bytes may remain: close gently

	gz gzipPlan // the response's compression (compress.go)
	// The request's route (route.go): the route that matched (nil for
	// none), the configuration of its pool (record.pool; the service's
	// own when no route matched), whose real servers, persistence,
	// retries and timeouts.connect/server apply, and the header rules of
	// the service and of the pool (headerrules.go).
	rt                    *route
	poolCfg               *config.VirtualService
	frontRules, poolRules *serviceRules

	lc    loopConn      // the event loop's state, when one serves the connection (loop.go)
	slots chan struct{} // the service's max_conns slot the connection holds, while a loop serves it
}

func (s *Service) serveHTTP(c net.Conn, slots chan struct{}) {
	s.active.Add(1)
	adopted := false // by an event loop, which ends the connection (finish)
	defer func() {
		if !adopted {
			release(slots)
			s.active.Add(-1)
			s.wg.Done()
		}
	}()
	vs := s.config()
	if vs.AcceptProxy { // the PROXY header comes first, before TLS
		if c = s.acceptProxy(c, vs); c == nil {
			return
		}
	}
	var tc *tls.Conn
	if f := s.tls.Load(); f != nil {
		if tc = s.handshake(c, f, vs); tc == nil {
			return
		}
		if tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS {
			s.serveH2(tc, vs)
			return
		}
		c = tc
	}
	if s.hasH2Servers() {
		// clientConn's HTTP/1.1 relay cannot speak HTTP/2 to real servers.
		s.serveH1Handler(c, tc, vs)
		return
	}
	cc := &clientConn{svc: s, tls: tc, cfg: vs, conn: c, local: c.LocalAddr(), remote: c.RemoteAddr()}
	cc.peerIP, cc.peer = addrIP(cc.remote), addrOf(cc.remote)
	if ta, ok := cc.local.(*net.TCPAddr); ok {
		cc.port = strconv.Itoa(ta.Port)
	}
	cc.in.init(c)
	cc.out.reset(c, cc.in.raw)
	if tc == nil && cc.in.raw != nil {
		cc.detachForLoop() // before track: shutdown reads lc.loop
	}
	if !s.track(cc) {
		cc.close()
		return
	}
	if l := cc.lc.loop; l != nil {
		// The loop owns the connection from here, and ends it with
		// cc.finish (loop.go); the max_conns slot goes with it.
		cc.slots, adopted = slots, true
		l.adopt(cc)
		return
	}
	defer s.untrack(cc)
	defer cc.close()
	for cc.awaitRequest() && cc.exchange() {
	}
}

// detachForLoop gives the connection to an event loop, if loops run: its
// descriptor leaves Go's poller (fdconn.go). Goroutines serve it when that
// fails (no descriptor left).
func (cc *clientConn) detachForLoop() {
	l := pickLoop()
	if l == nil {
		return
	}
	fd, err := detachFD(cc.conn)
	if err != nil {
		return
	}
	cc.lc.loop, cc.lc.fd = l, fd
	cc.conn = nil
	cc.in.detach()
	cc.out.rebind(nil, nil)
}

// finish ends a connection an event loop served, as serveHTTP's deferred
// calls end one its goroutine served.
func (cc *clientConn) finish() {
	s := cc.svc
	s.untrack(cc)
	cc.close()
	release(cc.slots)
	s.active.Add(-1)
	s.wg.Done()
}

// frontConn is a client connection of an HTTP front end (HTTP/1.1:
// clientConn; HTTP/2: h2conn), as shutdown and maintenance see it.
type frontConn interface {
	// stop ends the connection once no request is in flight: at once if
	// it is idle. Called when shutdown begins.
	stop()
	// forceClose ends the connection and its exchanges in flight; called
	// when the shutdown grace has run out.
	forceClose()
	// cut ends the connection's exchanges with rs, which went into
	// maintenance.
	cut(rs *realServer)
}

func (s *Service) track(c frontConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isStopping() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Service) untrack(c frontConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (cc *clientConn) close() {
	cc.state.Store(stateClosed)
	if c := cc.conn; c != nil { // nil while an event loop holds the connection
		if cc.linger {
			lingerClose(c)
		}
		c.Close()
	}
	if cc.lc.loop != nil && cc.lc.fd >= 0 { // the loop's descriptor (closing it takes it out of the loop's set)
		unix.Close(cc.lc.fd)
		cc.lc.fd = -1
	}
	cc.in.r, cc.in.w = 0, 0
	cc.in.release()
	cc.out.n = 0
	cc.out.release()
	cc.toSrv.n = 0
	cc.toSrv.release()
	cc.closeOwn()
}

// lingerClose ends a connection whose peer may still be sending (after an
// error answer): closing with unread bytes would send a reset that can
// destroy the answer in flight, so the write side is shut first and input
// drained briefly, as HAProxy and net/http do.
func lingerClose(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(lingerTime))
	var buf [4096]byte
	for n := 0; n < lingerBytes; {
		m, err := c.Read(buf[:])
		n += m
		if err != nil {
			return
		}
	}
}

func (cc *clientConn) forceClose() {
	if l := cc.lc.loop; l != nil {
		l.post(cc, loopForce)
		return
	}
	cc.conn.Close()
	if bc := cc.backend.Load(); bc != nil {
		bc.abort()
	}
}

// stop closes the connection if it waits for a request; an exchange in
// flight finishes, then the connection ends (exchange checks isStopping).
func (cc *clientConn) stop() {
	if l := cc.lc.loop; l != nil {
		l.post(cc, loopStop)
		return
	}
	if cc.state.CompareAndSwap(stateIdle, stateClosed) {
		cc.conn.Close()
	}
}

func (cc *clientConn) cut(rs *realServer) {
	if bc := cc.backend.Load(); bc != nil && bc.rs == rs {
		if l := cc.lc.loop; l != nil {
			l.post(cc, loopCut)
			return
		}
		bc.abort()
	}
}

// awaitRequest waits, holding no buffer, until the client sends the next
// request, and reads its first bytes. It returns false when the connection
// should end (closed by the client, idle timeout, shutdown).
func (cc *clientConn) awaitRequest() bool {
	if len(cc.in.buffered()) > 0 { // a pipelined request is already here
		return true
	}
	cc.in.release()
	cc.out.release()
	cc.toSrv.release()
	if !cc.state.CompareAndSwap(stateActive, stateIdle) {
		return false
	}
	if cc.svc.isStopping() {
		return false
	}
	cc.cfg = cc.svc.config()
	cc.in.extendDeadline(time.Now(), cc.cfg.Timeouts.Client)
	var err error
	if cc.in.raw != nil {
		err = cc.in.waitFill()
	}
	if !cc.state.CompareAndSwap(stateIdle, stateActive) {
		return false
	}
	return err == nil
}

// exchange serves one request and reports whether the connection may serve
// another.
func (cc *clientConn) exchange() bool {
	cc.startExchange(time.Now())
	keep := cc.serveRequest()
	s := cc.svc
	s.logExchange(&cc.record, cc.clientIP)
	s.account(&cc.record)
	return keep && !s.isStopping()
}

// startExchange begins the record of an exchange at now.
func (cc *clientConn) startExchange(now time.Time) {
	cc.headLen, cc.headConsumed, cc.responded, cc.bodyDone, cc.sentBody = 0, false, false, false, false
	cc.choice = choice{}
	cc.tried = balancer.Tried{}
	cc.gz = gzipPlan{}
	cc.record = record{start: now, proto: protoHTTP11, logMethod: cc.logMethod[:0], logTarget: cc.logTarget[:0]}
	cc.client, cc.clientIP, cc.peerTrusted = cc.peer, cc.peerIP, false
}

func (cc *clientConn) serveRequest() bool {
	if done, keep := cc.prepare(); done {
		return keep
	}
	return cc.proxyRequest(nil)
}

// prepare reads and checks the request head and runs the service's rules
// on it (allow/deny, rate limit, routes). done reports that the request was
// answered here (keep: the connection may serve another); else it goes to
// a real server. On an event loop the head is in the buffer already and
// answers do not wait (writer.noWait).
func (cc *clientConn) prepare() (done, keep bool) {
	n, err := cc.readHead()
	if err != nil {
		return true, cc.headError(err)
	}
	return cc.prepareHead(n)
}

// prepareHead is prepare for the request head of n bytes in the buffer.
func (cc *clientConn) prepareHead(n int) (done, keep bool) {
	req := &cc.req
	if err := req.parse(cc.in.buffered()[:n]); err != nil {
		cc.logMethod = append(cc.logMethod, req.method...)
		cc.logTarget = append(cc.logTarget, req.target...)
		switch err {
		case errTooMany:
			return true, cc.fail(431, err.Error(), nil)
		case errBadEncoding:
			return true, cc.fail(501, err.Error(), nil)
		}
		return true, cc.fail(400, err.Error(), nil)
	}
	cc.headLen = n
	cc.logMethod = append(cc.logMethod, req.method...)
	cc.logTarget = append(cc.logTarget, req.target...)
	if req.minor == 0 {
		cc.proto = protoHTTP10
	}
	cc.isHead = string(req.method) == "HEAD"
	cc.upgrade = req.connUpgrade && len(req.upgrade) > 0
	cc.keep = (req.minor >= 1 && !req.connClose) || (req.minor == 0 && req.connKeepAlive)
	cc.bodyDone = !req.chunked && req.contentLength <= 0
	cc.resolveClient()
	if !admits(cc.cfg, cc.client) { // allow, deny
		return true, cc.fail(403, "client address not allowed", nil)
	}
	if retry := cc.svc.admit(cc.client, cc.start); retry > 0 {
		return true, cc.tooMany(retry)
	}
	return cc.route() // a redirect, or no route for a service without real servers
}

// readHead reads until the buffer holds a whole request head and returns its
// length. The head must arrive within timeouts.client_header of its first
// byte.
func (cc *clientConn) readHead() (int, error) {
	deadline := false
	for {
		if n := cc.bufferedHead(); n > 0 {
			return n, nil
		}
		if !deadline {
			cc.in.setDeadline(cc.start.Add(cc.cfg.Timeouts.ClientHeader))
			deadline = true
		}
		if err := cc.in.fill(); err != nil {
			return 0, err
		}
	}
}

// bufferedHead returns the length of the whole request head at the start
// of the buffer, or -1 while it is not whole; empty lines before a request
// are dropped (RFC 9112 §2.2).
func (cc *clientConn) bufferedHead() int {
	b := cc.in.buffered()
	for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
		cc.in.discard(1)
		b = cc.in.buffered()
	}
	if n := headEnd(b); n > 0 {
		return n
	}
	return -1
}

// headError answers a request head that could not be read.
func (cc *clientConn) headError(err error) bool {
	partial := len(cc.in.buffered()) > 0
	switch {
	case err == errFull:
		return cc.fail(431, "request head larger than "+strconv.Itoa(bufSize)+" bytes", nil)
	case isTimeout(err) && partial:
		return cc.fail(408, "request head not received within timeouts.client_header", nil)
	case partial:
		cc.errMsg, cc.err = "client closed during request head", err
	}
	// Nothing received (idle timeout, client closed): end quietly.
	return false
}

// proxyRequest forwards the request through the shared pipeline
// (dispatch): persistence and the scheduler pick the real server, a failed
// connect tries another. first is an event loop's attempt to go on with
// (resumed), or nil.
func (cc *clientConn) proxyRequest(first *resumed) bool {
	var keep bool
	var rs0 *realServer
	if first != nil {
		rs0 = first.rs
	}
	status, reason, err := cc.pool.dispatch(cc, &cc.choice, &cc.tried, &cc.record, cc.poolCfg.Retries, rs0, func(rs *realServer) error {
		var k bool
		var connErr error
		if first != nil {
			k, connErr = cc.resume(first)
			first = nil
		} else {
			k, connErr = cc.attempt(rs)
		}
		keep = k
		return connErr
	})
	if status != 0 {
		return cc.fail(status, reason, err)
	}
	return keep
}

// attempt forwards the request to one real server; it returns a non-nil
// error only when no connection could be made, so that another real server
// may be tried.
func (cc *clientConn) attempt(rs *realServer) (keep bool, connErr error) {
	defer cc.pool.Pool.Release(rs.Server)
	defer cc.backend.Store(nil)
	// A request with a body cannot be sent again, so a pooled connection
	// for it is always checked first.
	var bc *backendConn
	if rs.private() {
		bc = cc.takeOwn(rs, !cc.bodyDone)
	} else {
		bc = rs.get(!cc.bodyDone, nil)
	}
	// An event loop may hold it (one served on it before).
	if bc != nil && bc.loosen(nil) != nil {
		bc = nil
	}
	return cc.attemptWith(rs, bc)
}

// resumed is an attempt an event loop began on rs and hands over to a
// goroutine (loop.go): the loop acquired rs and may have taken bc and sent
// the request head (perhaps in part: toSrv.spill holds the rest).
type resumed struct {
	rs   *realServer
	bc   *backendConn // nil when the loop found no idle connection
	sent bool
}

// resume goes on with an attempt an event loop began, as attempt would.
func (cc *clientConn) resume(r *resumed) (keep bool, connErr error) {
	if r.bc == nil {
		return cc.attempt(r.rs)
	}
	defer cc.pool.Pool.Release(r.rs.Server)
	defer cc.backend.Store(nil)
	bc := r.bc
	cc.toSrv.rebind(bc.conn, bc.in.raw) // the loop wrote to its descriptor
	var replay bool
	switch {
	case !r.sent:
		keep, replay = cc.forward(bc, true)
	default:
		if err := cc.toSrv.flushSpill(); err != nil {
			bc.close()
			if cc.sentBody { // not sent again (RFC 9110 §9.2.2)
				return cc.fail(502, "write to real server failed", err), nil
			}
			replay = true // a pooled connection; nothing of the request can have been read
			break
		}
		keep, replay = cc.relayResponse(bc, !cc.sentBody)
	}
	if !replay {
		return keep, nil
	}
	return cc.attemptWith(r.rs, nil)
}

// attemptWith is attempt from the connection taken: bc, pooled, or nil to
// dial one.
func (cc *clientConn) attemptWith(rs *realServer, bc *backendConn) (keep bool, connErr error) {
	for {
		reused := bc != nil
		if !reused {
			var cl *clientID
			if rs.private() {
				cl = cc.clientOf()
			}
			var err error
			if bc, err = rs.dial(cl); err != nil {
				return false, err
			}
		}
		cc.backend.Store(bc)
		cc.pool.remember(cc, &cc.choice, rs)
		keep, replay := cc.forward(bc, reused)
		if !replay {
			return keep, nil
		}
		// A pooled connection the real server had closed: the request was
		// not received, so send it again on a fresh one.
		bc = nil
	}
}

// forward sends the request over bc and relays the answer. replay is true
// when bc turned out to be closed before answering and the request can be
// sent again unchanged.
func (cc *clientConn) forward(bc *backendConn, reused bool) (keep, replay bool) {
	req := &cc.req
	w := &cc.toSrv
	w.reset(bc.conn, bc.in.raw)
	if bc.preamble != nil {
		w.Write(bc.preamble)
		bc.preamble = nil
	}
	cc.writeRequestHead(w)
	if cc.bodyDone {
		if err := w.flush(); err != nil {
			bc.close()
			if reused {
				return false, true
			}
			return cc.fail(502, "write to real server failed", err), false
		}
		// The head stays buffered until the answer comes, for a replay.
		return cc.relayResponse(bc, reused)
	}

	cc.consumeHead()
	if req.expectContinue && req.minor >= 1 {
		if done, keep := cc.awaitContinue(bc); done {
			return keep, false
		}
	}
	up := flow{src: &cc.in, dst: w, readTimeout: cc.cfg.Timeouts.Client, writeTimeout: cc.poolCfg.Timeouts.Server}
	var err error
	if req.chunked {
		err = up.copyChunked(false)
	} else {
		err = up.copyN(req.contentLength)
	}
	if err == nil {
		err = up.flush()
	}
	cc.bytesIn = up.n
	if err != nil {
		if up.srcErr {
			bc.close()
			if isTimeout(err) {
				return cc.fail(408, "request body not received within timeouts.client", err), false
			}
			if err == errBadChunk || err == errTrailers {
				return cc.fail(400, "malformed chunked request body", err), false
			}
			cc.errMsg, cc.err = "client closed during request body", err
			return false, false
		}
		// The real server stopped reading; it may have answered already
		// (e.g. 413), so read on; the client connection ends after it.
		cc.keep = false
	} else {
		cc.bodyDone = true
	}
	return cc.relayResponse(bc, false)
}

// consumeHead drops the request head from the client buffer once it is
// forwarded and no replay can need it.
func (cc *clientConn) consumeHead() {
	if !cc.headConsumed {
		cc.in.discard(cc.headLen)
		cc.headConsumed = true
	}
}

// awaitContinue sends the head of a request that expects 100-continue and
// waits briefly for the real server's interim answer. done reports that a
// final response was relayed instead and the body must not be sent.
func (cc *clientConn) awaitContinue(bc *backendConn) (done, keep bool) {
	if err := cc.toSrv.flush(); err != nil {
		bc.close()
		return true, cc.fail(502, "write to real server failed", err)
	}
	bc.in.setDeadline(time.Now().Add(min(expectWait, cc.poolCfg.Timeouts.Server)))
	n, err := readResponseHead(&bc.in)
	if err != nil {
		if isTimeout(err) && len(bc.in.buffered()) == 0 {
			return false, false // no answer yet: send the body anyway
		}
		bc.close()
		return true, cc.fail(502, "invalid answer from real server", err)
	}
	if err := cc.resp.parse(bc.in.buffered()[:n]); err != nil {
		bc.close()
		return true, cc.fail(502, "invalid response head from real server", err)
	}
	if cc.resp.status == 100 {
		bc.in.discard(n)
		cc.out.Write(cc.resp.line)
		cc.out.WriteString("\r\n\r\n")
		if err := cc.out.flush(); err != nil {
			bc.close()
			cc.errMsg, cc.err = "write to client failed", err
			return true, false
		}
		return false, false
	}
	// A final answer before the body (e.g. 401, 417): relay it; the body
	// the client may still send is not wanted, so the connection ends.
	cc.keep = false
	keep, _ = cc.relayResponse(bc, false)
	return true, keep
}

// readResponseHead reads until in holds a whole response head.
func readResponseHead(in *reader) (int, error) {
	if len(in.buffered()) == 0 {
		if err := in.waitFill(); err != nil {
			return 0, err
		}
	}
	for {
		if n := headEnd(in.buffered()); n > 0 {
			return n, nil
		}
		if err := in.fill(); err != nil {
			return 0, err
		}
	}
}

// relayResponse reads the real server's response and relays it to the
// client. replayable says the request may be sent again if bc proves closed
// before answering.
func (cc *clientConn) relayResponse(bc *backendConn, replayable bool) (keep, replay bool) {
	resp := &cc.resp
	// A bodiless request was sent just now; after a body (which may have
	// taken long to upload) read the clock afresh.
	now := cc.start
	if cc.headConsumed {
		now = time.Now()
	}
	bc.in.extendDeadline(now, cc.poolCfg.Timeouts.Server)
	var n int
	for {
		var err error
		n, err = readResponseHead(&bc.in)
		if err != nil {
			got := len(bc.in.buffered()) > 0
			bc.close()
			switch {
			case !got && replayable && !isTimeout(err):
				return false, true
			case isTimeout(err):
				return cc.fail(504, "no response from real server within timeouts.server", err), false
			case err == errFull:
				return cc.fail(502, "response head from real server too large", err), false
			}
			return cc.fail(502, "real server closed the connection without a response", err), false
		}
		if err := resp.parse(bc.in.buffered()[:n]); err != nil {
			bc.close()
			return cc.fail(502, "invalid response head from real server", err), false
		}
		if resp.status >= 200 {
			break
		}
		if resp.status == 101 {
			if !cc.upgrade {
				bc.close()
				return cc.fail(502, "real server switched protocols unasked", nil), false
			}
			cc.consumeHead()
			return cc.tunnel(bc, n), false
		}
		// Other 1xx (100, 103): passed on to HTTP/1.1 clients only (RFC 9110 §15.2).
		if cc.req.minor >= 1 {
			cc.out.Write(bc.in.buffered()[:n])
			if err := cc.out.flush(); err != nil {
				bc.close()
				cc.errMsg, cc.err = "write to client failed", err
				return false, false
			}
		}
		bc.in.discard(n)
	}
	framing := cc.framingOf()
	dechunk, reuse, keep := cc.answerHead(bc, n, framing)
	now = time.Now() // the response may have been long in coming
	down := flow{src: &bc.in, dst: &cc.out, readTimeout: cc.poolCfg.Timeouts.Server, writeTimeout: cc.cfg.Timeouts.Client, now: now}
	var err error
	switch {
	case cc.gz.on:
		err = cc.copyGzip(&down, framing == chunked)
	case framing == sized:
		err = down.copyN(resp.contentLength)
	case framing == chunked:
		err = down.copyChunked(dechunk)
	case framing == untilClose:
		err = down.copyUntilEOF()
		reuse = false
	}
	if err == nil {
		err = down.flush()
	}
	cc.bytesOut = down.n
	if err != nil {
		bc.close()
		if down.srcErr {
			cc.errMsg = "response body from real server ended early"
		} else {
			cc.errMsg = "write to client failed"
		}
		cc.err = err
		return false, false
	}
	switch {
	case reuse && bc.private:
		cc.keepOwn(bc, now)
	case reuse:
		bc.rs.put(bc, now)
	default:
		bc.close()
	}
	return keep, false
}

// Framing of a response body (RFC 9112 §6.3).
const (
	noBody = iota
	sized
	chunked
	untilClose
)

// framingOf returns how the body of the response in cc.resp is delimited.
func (cc *clientConn) framingOf() int {
	resp := &cc.resp
	switch {
	case cc.isHead || resp.status == 204 || resp.status == 304:
		return noBody
	case resp.chunked:
		return chunked
	case resp.contentLength >= 0:
		return sized
	}
	return untilClose
}

// answerHead passes on the final response head (n bytes in bc.in, parsed
// into cc.resp, its body's framing from framingOf): it decides whether bc
// and the client connection are kept, and writes the head to the client.
func (cc *clientConn) answerHead(bc *backendConn, n, framing int) (dechunk, reuse, keep bool) {
	resp := &cc.resp
	cc.consumeHead()
	cc.status = resp.status
	cc.learnAll(bc.rs)
	dechunk = framing == chunked && cc.req.minor == 0 // HTTP/1.0 has no chunked
	reuse = !resp.connClose && (resp.minor >= 1 || resp.connKeepAlive) && framing != untilClose
	keep = cc.keep && cc.bodyDone && framing != untilClose && !dechunk && !cc.svc.isStopping()
	if cc.cfg.Compress {
		if cc.gz = cc.wantGzip(framing == noBody); cc.gz.on {
			// Compressed, the body goes chunked to an HTTP/1.1 client
			// whatever its framing was, and to an HTTP/1.0 one until
			// the connection closes (compress.go).
			keep = cc.keep && cc.bodyDone && cc.req.minor >= 1 && !cc.svc.isStopping()
		}
	}
	cc.writeResponseHead(keep, dechunk)
	bc.in.discard(n)
	cc.responded = true
	return dechunk, reuse, keep
}

// tunnel relays a 101 (Switching Protocols) answer, then moves bytes both
// ways until either side ends (WebSocket, RFC 6455 §4; RFC 9110 §7.8).
func (cc *clientConn) tunnel(bc *backendConn, n int) bool {
	cc.status = 101
	cc.writeResponseHead(true, false)
	bc.in.discard(n)
	cc.responded = true
	// Bytes either side sent after its head are passed on first.
	if b := bc.in.buffered(); len(b) > 0 {
		cc.out.Write(b)
		bc.in.discard(len(b))
	}
	if err := cc.out.flush(); err != nil {
		bc.close()
		cc.errMsg, cc.err = "write to client failed", err
		return false
	}
	if b := cc.in.buffered(); len(b) > 0 {
		if _, err := bc.conn.Write(b); err != nil {
			bc.close()
			cc.errMsg, cc.err = "write to real server failed", err
			return false
		}
		cc.in.discard(len(b))
	}
	cc.conn.SetDeadline(time.Time{})
	bc.conn.SetDeadline(time.Time{})
	up, down := pipe(cc.conn, bc.conn, cc.cfg.Timeouts.Client, cc.poolCfg.Timeouts.Server)
	cc.bytesIn, cc.bytesOut = up, down
	bc.close()
	return false
}

// writeRequestHead writes the request head as it goes to the real server:
// hop-by-hop fields removed, X-Forwarded-* added.
func (cc *clientConn) writeRequestHead(w *writer) {
	req := &cc.req
	ff := cc.cfg.ForwardedFor
	fwd := cc.cfg.ForwardedHeader
	certs := cc.tls != nil && cc.svc.passClientCert()
	front, pool := cc.frontRules.request(), cc.poolRules.request()
	cc.writeRequestLine(w) // strip_prefix
	w.WriteString("\r\n")
	for i := range req.headers {
		h := &req.headers[i]
		if req.dropField(h.name) || (ff && forwardedField(h.name) != 0) || (certs && isClientCertField(h.name)) ||
			(fwd && isForwardedField(h.name)) || ruled(front, pool, h.name) {
			continue
		}
		writeField(w, h.name, h.value)
	}
	// request_headers: after the client's fields, before the proxy's own.
	writeRuleFields(w, front, pool)
	if cc.upgrade {
		w.WriteString("Connection: Upgrade\r\n")
		writeNamed(w, "Upgrade", req.upgrade)
	} else if req.minor == 0 {
		// Ask an HTTP/1.0 exchange to keep the real server connection.
		w.WriteString("Connection: keep-alive\r\n")
	}
	if req.trailersTE {
		w.WriteString("TE: trailers\r\n")
	}
	if certs {
		if !cc.certsSet {
			cs := cc.tls.ConnectionState()
			cc.certs, cc.certsSet = clientCertFields(&cs), true
		}
		for _, f := range cc.certs {
			w.WriteString(f.name)
			w.WriteString(": ")
			w.WriteString(f.value)
			w.WriteString("\r\n")
		}
	}
	if ff {
		// X-Forwarded-For: the client's list, then this hop's peer.
		w.WriteString("X-Forwarded-For: ")
		for i := range req.headers {
			h := &req.headers[i]
			if forwardedField(h.name) == xffFor && len(h.value) > 0 {
				w.Write(h.value)
				w.WriteString(", ")
			}
		}
		w.WriteString(cc.peerIP)
		if cc.tls != nil {
			w.WriteString("\r\nX-Forwarded-Proto: https\r\n")
		} else {
			w.WriteString("\r\nX-Forwarded-Proto: http\r\n")
		}
		if len(req.host) > 0 {
			writeNamed(w, "X-Forwarded-Host", req.host)
		}
		if cc.port != "" {
			w.WriteString("X-Forwarded-Port: ")
			w.WriteString(cc.port)
			w.WriteString("\r\n")
		}
	}
	if fwd {
		// Forwarded (RFC 7239 §4): a trusted peer's elements, then ours.
		w.WriteString("Forwarded: ")
		if cc.peerTrusted {
			for i := range req.headers {
				h := &req.headers[i]
				if isForwardedField(h.name) && len(h.value) > 0 {
					w.Write(h.value)
					w.WriteString(", ")
				}
			}
		}
		w.Write(appendForwarded(w.spare(), cc.client, cc.clientIP, cc.tls != nil, req.host))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
}

// writeResponseHead writes the response head as it goes to the client.
func (cc *clientConn) writeResponseHead(keep, dechunk bool) {
	resp := &cc.resp
	w := &cc.out
	// With HTTP/3 on, the proxy's Alt-Svc replaces the real server's,
	// which names the real server's own alternatives (RFC 7838 §3).
	alt := cc.svc.altSvcFor(cc.port)
	front, pool := cc.frontRules.response(), cc.poolRules.response()
	w.Write(resp.line)
	w.WriteString("\r\n")
	for i := range resp.headers {
		h := &resp.headers[i]
		if resp.dropField(h.name) || (dechunk && equalFold(h.name, "transfer-encoding")) ||
			(alt != nil && equalFold(h.name, "alt-svc")) || ruled(front, pool, h.name) ||
			(cc.gz.on && cc.gzipField(w, h.name, h.value)) {
			continue
		}
		writeField(w, h.name, h.value)
	}
	writeRuleFields(w, front, pool) // response_headers
	if cc.gz.on {
		cc.gzipFields(w) // after the rules: compression comes last
	}
	if alt != nil {
		w.Write(alt.field)
	}
	switch {
	case resp.status == 101:
		w.WriteString("Connection: Upgrade\r\n")
		writeNamed(w, "Upgrade", resp.upgrade)
	case !keep:
		w.WriteString("Connection: close\r\n")
	case cc.req.minor == 0:
		w.WriteString("Connection: keep-alive\r\n")
	}
	cc.writeSetCookie(w)
	w.WriteString("\r\n")
}

func writeNamed(w *writer, name string, value []byte) {
	w.WriteString(name)
	w.WriteString(": ")
	w.Write(value)
	w.WriteString("\r\n")
}

func writeField(w *writer, name, value []byte) {
	if w.err == nil && w.buf != nil && w.n+len(name)+len(value)+4 <= bufSize {
		// The usual case, in one bounds check.
		n := w.n + copy(w.buf[w.n:], name)
		w.buf[n], w.buf[n+1] = ':', ' '
		n += 2 + copy(w.buf[n+2:], value)
		w.buf[n], w.buf[n+1] = '\r', '\n'
		w.n = n + 2
		return
	}
	w.Write(name)
	w.WriteString(": ")
	w.Write(value)
	w.WriteString("\r\n")
}

// X-Forwarded-* fields the proxy sets itself when forwarded_for is on.
const (
	xffFor = 1 + iota
	xffOther
)

func forwardedField(name []byte) int {
	if len(name) < len("x-forwarded-for") || (name[0] != 'x' && name[0] != 'X') {
		return 0
	}
	switch {
	case equalFold(name, "x-forwarded-for"):
		return xffFor
	case equalFold(name, "x-forwarded-proto"), equalFold(name, "x-forwarded-host"), equalFold(name, "x-forwarded-port"):
		return xffOther
	}
	return 0
}

// fail answers the client with status (unless response bytes already went
// out), records why for the exchange's one log line, and reports whether the
// connection may serve another request.
// beginAnswer starts an answer of the proxy's own (a redirect, a 429) to a
// request read whole and well formed, so that unlike fail's 4xx it keeps
// the connection when no request body is left unread. It reports whether
// the connection is kept. The caller writes the status line and its own
// fields, then calls endAnswer.
func (cc *clientConn) beginAnswer() (keep bool) {
	keep = cc.keep && cc.bodyDone && !cc.svc.isStopping()
	if keep {
		cc.consumeHead()
	} else {
		cc.linger = true
	}
	return keep
}

// endAnswer ends the head begun by beginAnswer, sends body as text and
// reports whether the connection may serve another request.
func (cc *clientConn) endAnswer(keep bool, body string) bool {
	w := &cc.out
	w.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ")
	w.Write(strconv.AppendInt(w.spare(), int64(len(body)), 10))
	switch {
	case !keep:
		w.WriteString("\r\nConnection: close")
	case cc.req.minor == 0:
		w.WriteString("\r\nConnection: keep-alive")
	}
	w.WriteString("\r\n\r\n")
	if !cc.isHead {
		w.WriteString(body)
	}
	w.extendDeadline(time.Now(), cc.cfg.Timeouts.Client)
	if err := w.flush(); err != nil {
		if cc.errMsg == "" {
			cc.errMsg, cc.err = "write to client failed", err
		}
		return false
	}
	cc.responded = true
	return keep
}

func (cc *clientConn) fail(status int, reason string, err error) bool {
	cc.status, cc.errMsg, cc.err = status, reason, err
	cc.generated = true
	keep := cc.keep && cc.bodyDone && status >= 500 && !cc.svc.isStopping()
	if cc.responded {
		return false
	}
	if keep {
		cc.consumeHead()
	}
	if !keep {
		cc.linger = true
	}
	cc.out.Write(cannedResponse(status, keep))
	cc.out.extendDeadline(time.Now(), cc.cfg.Timeouts.Client)
	if e := cc.out.flush(); e != nil {
		return false
	}
	cc.responded = true
	return keep
}
