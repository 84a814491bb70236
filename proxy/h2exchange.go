package proxy

import (
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fulcrumlb/fulcrum/balancer"
	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/persistence"
)

// Why an HTTP/2 exchange's forwarding was cancelled (context.Cause).
var (
	errServerTimeout = errors.New("the real server sent or took nothing within timeouts.server")
	errCut           = errors.New("the real server was put in maintenance")
)

// h2exchange is one HTTP/2 request (a stream) on its way through the shared
// pipeline: a requestView for persistence and scheduling, forwarded to real
// servers over HTTP/1.1 by their transport.
type h2exchange struct {
	record     // what the exchange leaves for the counters and the log
	conn       *handlerConn
	svc        *Service
	cfg        *config.VirtualService // read once per request, as HTTP/1.1 does
	w          http.ResponseWriter
	r          *http.Request
	choice     choice // persistence
	tried      balancer.Tried
	reqPath    []byte        // the request target's path, for requestView
	out        *http.Request // as it goes to real servers; the URL's host is set per attempt
	ctx        context.Context
	cancel     context.CancelCauseFunc
	body       *h2body                    // nil for a request without a body
	down       watchdog                   // the response: the real server's bytes, the client's reading
	attempting atomic.Pointer[realServer] // the real server of the attempt in flight, for cut
	responded  bool                       // the response head went to the client
	unflushed  bool                       // the body's last piece is left for the end of the handler to send
	abort      bool                       // the response could not be completed: reset the stream
	gz         *gzipWriter                // compresses the response body (compress.go); nil if not
	// The request's route (route.go), as clientConn's: the route that
	// matched (nil for none), the configuration of its pool (record.pool),
	// and the header rules of the service and of the pool.
	rt                    *route
	poolCfg               *config.VirtualService
	frontRules, poolRules *serviceRules

	// The request's client (clientaddr.go): the connection's, or from a
	// trusted peer the client its X-Forwarded-For names.
	client      netip.Addr
	clientIP    string
	peerTrusted bool // the connection's client is in trusted_proxies

	// mu guards w against the goroutines of the transport (interim
	// responses) and of the watchdogs.
	mu       sync.Mutex
	finished bool // the handler returned: w must not be touched
	headDone bool // the final response head is due: no more interim ones
}

// ServeHTTP serves one stream.
func (h *handlerConn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.svc
	x := &h2exchange{conn: h, svc: s, cfg: s.config(), w: w, r: r}
	if !h.enter(x) {
		return
	}
	defer h.leave(x)
	x.record = record{start: time.Now(), proto: h.proto, logMethod: []byte(r.Method), logTarget: []byte(r.RequestURI)}
	x.resolveClient()
	x.ctx, x.cancel = context.WithCancelCause(r.Context())
	x.down.onTimeout = x.responseTimeout
	x.serve()
	if x.unflushed && !x.abort {
		// The last piece leaves after the handler returns, as the stream
		// ends: bound that write by timeouts.client too (a client that
		// opens no flow-control window gets the stream reset).
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(x.cfg.Timeouts.Client))
	}
	x.finish()
	s.logExchange(&x.record, x.clientIP)
	s.account(&x.record)
	if x.abort {
		// RST_STREAM, so that the client does not take a truncated
		// response for a whole one (RFC 9113 §8.1).
		panic(http.ErrAbortHandler)
	}
}

func (x *h2exchange) serve() {
	r := x.r
	switch {
	case r.Method == http.MethodConnect:
		// A tunnel (RFC 9113 §8.5) is not a request for a real server.
		x.fail(501, "CONNECT is not supported", nil)
		return
	case r.Host == "":
		// An HTTP/1.1 request to the real server needs a Host (RFC 9113
		// §8.3.1 has it taken from :authority).
		x.fail(400, "missing :authority", nil)
		return
	case fieldCount(r.Header) > maxHeaders:
		x.fail(431, errTooMany.Error(), nil)
		return
	}
	if !admits(x.cfg, x.client) { // allow, deny
		x.fail(403, "client address not allowed", nil)
		return
	}
	if retry := x.svc.admit(x.client, x.start); retry > 0 {
		x.tooMany(retry)
		return
	}
	if x.route() { // a redirect, or no route for a service without real servers
		return
	}
	x.out = x.outgoing()
	status, reason, err := x.pool.dispatch(x, &x.choice, &x.tried, &x.record, x.poolCfg.Retries, nil, x.attempt)
	if status != 0 {
		x.fail(status, reason, err)
	}
}

// finish ends the exchange's use of w and of the real server's transport.
func (x *h2exchange) finish() {
	x.mu.Lock()
	x.finished = true
	x.mu.Unlock()
	x.down.stop()
	if x.body != nil {
		x.body.wd.stop()
		x.bytesIn = x.body.n.Load()
	}
	x.cancel(nil)
}

func fieldCount(h http.Header) int {
	n := 0
	for _, vv := range h {
		n += len(vv)
	}
	return n
}

// outgoing builds the request as it goes to real servers: hop-by-hop fields
// removed, X-Forwarded-* and X-SSL-Client-* set, as writeRequestHead does for
// HTTP/1.1.
func (x *h2exchange) outgoing() *http.Request {
	r := x.r
	ff := x.cfg.ForwardedFor
	fwd := x.cfg.ForwardedHeader
	certs := x.svc.passClientCert()
	h := make(http.Header, len(r.Header)+7)
	var xff, fwds []string
	for k, vv := range r.Header {
		name := []byte(k)
		switch {
		case hopByHop(name):
			continue
		case fwd && isForwardedField(name):
			fwds = vv
			continue
		case ff && forwardedField(name) != 0:
			if forwardedField(name) == xffFor {
				xff = vv
			}
			continue
		case certs && isClientCertField(name):
			continue
		}
		h[k] = vv
	}
	// request_headers, the service's then the pool's (headerrules.go):
	// before the proxy's own fields.
	host := r.Host
	x.frontRules.request().apply(h, &host)
	x.poolRules.request().apply(h, &host)
	// TE is hop-by-hop; "trailers" says the client takes trailer fields
	// and is passed on (gRPC servers want it, RFC 9113 §8.2.2 allows no
	// other value over HTTP/2), as HTTP/1.1 does.
	if acceptsTrailers(r.Header["Te"]) {
		h["Te"] = []string{"trailers"}
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // net/http would add its own
	}
	if certs {
		for _, f := range x.conn.certs {
			h[f.name] = []string{f.value}
		}
	}
	if ff {
		// X-Forwarded-For: the client's list, then this hop's peer.
		var b strings.Builder
		for _, v := range xff {
			if v != "" {
				b.WriteString(v)
				b.WriteString(", ")
			}
		}
		b.WriteString(x.conn.peerIP)
		h["X-Forwarded-For"] = []string{b.String()}
		h["X-Forwarded-Proto"] = []string{x.conn.scheme}
		h["X-Forwarded-Host"] = []string{r.Host}
		if x.conn.port != "" {
			h["X-Forwarded-Port"] = []string{x.conn.port}
		}
	}
	if fwd {
		// Forwarded (RFC 7239 §4): a trusted peer's elements, then ours.
		var b []byte
		if x.peerTrusted {
			for _, v := range fwds {
				if v != "" {
					b = append(b, v...)
					b = append(b, ", "...)
				}
			}
		}
		b = appendForwarded(b, x.client, x.clientIP, x.conn.scheme == "https", []byte(r.Host))
		h["Forwarded"] = []string{string(b)}
	}

	// The target as the client sent it (:path, RFC 9113 §8.3.1), not as
	// net/url would re-encode it.
	path, query, hasQuery := strings.Cut(requestTarget(r), "?")
	x.reqPath = []byte(path)
	stripped := false
	if x.rt != nil && x.rt.strip { // strip_prefix (route.go)
		rest := string(x.rt.rest(x.reqPath))
		if strippedNeedsSlash([]byte(rest)) {
			rest = "/" + rest
		}
		path, stripped = rest, true
	}
	u := &url.URL{Scheme: "http", Opaque: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	if strings.HasPrefix(path, "//") { // an opaque "//a" would be sent as "http://a"
		u.Opaque, u.Path, u.RawPath = "", r.URL.Path, r.URL.RawPath
		if stripped {
			u.Path, _ = url.PathUnescape(path)
			u.RawPath = path
		}
	}
	out := &http.Request{
		Method:     r.Method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       host,
		Trailer:    r.Trailer,
	}
	// The body is streamed as the client sends it (gRPC client streaming),
	// and the client's trailers follow it (r.Trailer is filled in when the
	// body ends).
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		x.body = &h2body{x: x, src: r.Body}
		x.body.wd.onTimeout = x.uploadTimeout
		out.Body, out.ContentLength = x.body, r.ContentLength
	}
	trace := &httptrace.ClientTrace{Got1xxResponse: x.interim}
	return out.WithContext(httptrace.WithClientTrace(x.ctx, trace))
}

// acceptsTrailers reports whether TE field values list "trailers" (RFC 9110
// §10.1.4).
func acceptsTrailers(te []string) bool {
	for _, v := range te {
		for tok := range strings.SplitSeq(v, ",") {
			tok, _, _ = strings.Cut(tok, ";")
			if strings.EqualFold(textproto.TrimString(tok), "trailers") {
				return true
			}
		}
	}
	return false
}

// attempt forwards the request to rs; it returns an error only when no
// connection could be made (nothing was sent).
func (x *h2exchange) attempt(rs *realServer) error {
	defer x.pool.Pool.Release(rs.Server)
	x.attempting.Store(rs)
	defer x.attempting.Store(nil)
	out := *x.out
	u := *out.URL
	u.Host = rs.Address
	if rs.h2 && rs.tlsCfg != nil {
		// HTTP/2 over TLS: the transport dials TLS for https URLs, and
		// :scheme says https (RFC 9113 §8.3.1).
		u.Scheme = "https"
	}
	out.URL = &u
	resp, err := x.conn.transportFor(rs, x.poolCfg).RoundTrip(&out)
	var ce *connectError
	if errors.As(err, &ce) {
		return ce.err
	}
	x.pool.remember(x, &x.choice, rs)
	x.mu.Lock()
	x.headDone = true
	x.mu.Unlock()
	if err != nil {
		x.roundTripFailed(err)
		return nil
	}
	if len(resp.Trailer) > 0 && resp.ContentLength >= 0 {
		// An HTTP/2 real server may give a length and trailers (Go's
		// does); an HTTP/1.1 client can get trailers only in chunked
		// encoding (RFC 9112 §7.1.2), so the length goes, and the
		// trailers are announced (RFC 9110 §6.6.2).
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
		resp.Header["Trailer"] = slices.Collect(maps.Keys(resp.Trailer))
	}
	x.relay(rs, resp)
	return nil
}

// roundTripFailed answers a request that reached the real server but got no
// response head back, with the status HTTP/1.1 would answer.
func (x *h2exchange) roundTripFailed(err error) {
	cause := context.Cause(x.ctx)
	switch {
	case x.body != nil && x.body.wd.timedOut() == sideClient:
		x.fail(408, "request body not received within timeouts.client", err)
	case x.r.Context().Err() != nil:
		x.errMsg, x.err = "client closed the stream", err
	case x.body != nil && x.body.clientErr() != nil:
		x.errMsg, x.err = "client closed during request body", x.body.clientErr()
	case cause == errCut:
		x.fail(502, "real server put in maintenance", err)
	case cause == errServerTimeout || isTimeout(err):
		x.fail(504, "no response from real server within timeouts.server", err)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		x.fail(502, "real server closed the connection without a response", err)
	default:
		x.fail(502, "invalid response from real server", err)
	}
}

// relay passes the real server's response on to the client.
func (x *h2exchange) relay(rs *realServer, resp *http.Response) {
	defer resp.Body.Close()
	if resp.StatusCode < 200 { // 101: Upgrade is not passed on, so never asked for
		x.fail(502, "real server switched protocols unasked", nil)
		return
	}
	x.status = resp.StatusCode
	p := x.pool.persist.Load()
	if p != nil && p.method == config.PersistAppCookie {
		for _, v := range resp.Header["Set-Cookie"] {
			x.pool.learn([]byte(v), rs)
		}
	}
	h := x.w.Header()
	copyResponseHeader(h, resp.Header)
	// response_headers, the service's then the pool's (headerrules.go).
	x.frontRules.response().apply(h, nil)
	x.poolRules.response().apply(h, nil)
	if alt := x.svc.altSvcFor(x.conn.port); alt != nil {
		h["Alt-Svc"] = alt.value // the proxy's, as for HTTP/1.1
	}
	if p != nil && x.choice.setCookie != "" {
		h.Add("Set-Cookie", persistence.SetCookieValue(p.cfg.CookieName, x.choice.setCookie, true))
	}
	// Compression comes last, after the header rules (compress.go).
	if x.cfg.Compress && x.startGzip(resp) {
		defer x.releaseGzip()
	}
	x.responded = true
	x.w.WriteHeader(resp.StatusCode)
	if resp.ContentLength < 0 && x.r.Method != http.MethodHead {
		// Length unknown, likely a stream (server-sent events, a long
		// poll): the client sees the head without waiting for the body.
		if err := x.flush(); err != nil {
			x.errMsg, x.err, x.abort = "write to client failed", err, true
			return
		}
	}
	if !x.copyBody(resp.Body, resp.ContentLength) || (x.gz != nil && !x.endGzip()) {
		return
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
}

// copyResponseHeader copies the real server's response fields to the
// client's response, hop-by-hop fields and those its Connection field names
// left out (RFC 9110 §7.6.1): x/net would take "Connection: close" for a
// request to close the whole client connection.
func copyResponseHeader(dst, src http.Header) {
	var named []string
	for _, v := range src["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if tok = textproto.TrimString(tok); tok != "" {
				named = append(named, textproto.CanonicalMIMEHeaderKey(tok))
			}
		}
	}
	for k, vv := range src {
		if !hopByHop([]byte(k)) && !slices.Contains(named, k) {
			dst[k] = vv
		}
	}
	if _, ok := dst["Content-Type"]; !ok {
		dst["Content-Type"] = nil // none was sent: none is guessed
	}
}

// copyBody streams the response body to the client, each piece as soon as
// it arrives, and reports whether all of it went. size is the body's length
// if known, else -1.
//
// A piece is flushed (written out as DATA frames) at once when the body's
// length is unknown (a stream: server-sent events, gRPC), or when the real
// server sent less than a buffer's worth and more is due (it is slower than
// the client). The last piece of a body of known length is not: the end of
// the handler sends it, so that HEADERS, DATA and END_STREAM of a small
// response, and those of other streams finishing meanwhile, leave in one
// TLS record and one write rather than one each.
func (x *h2exchange) copyBody(src io.Reader, size int64) bool {
	buf := getBuf()
	defer putBuf(buf)
	for {
		x.down.arm(sideServer, x.poolCfg.Timeouts.Server)
		n, err := src.Read(buf[:])
		x.down.disarm()
		if n > 0 {
			x.down.arm(sideClient, x.cfg.Timeouts.Client)
			_, werr := x.writeBody(buf[:n])
			x.down.disarm()
			x.unflushed = !(size < 0 || (n < len(buf) && err == nil && x.bytesOut+int64(n) < size))
			if werr == nil && !x.unflushed {
				werr = x.flush()
			}
			if werr != nil {
				x.errMsg, x.err, x.abort = "write to client failed", werr, true
				return false
			}
			x.bytesOut += int64(n)
		}
		switch {
		case err == io.EOF:
			return true
		case err == nil:
		case x.r.Context().Err() != nil:
			x.errMsg, x.err = "client closed the stream", err
			return false
		default:
			if cause := context.Cause(x.ctx); cause != nil {
				err = cause
			}
			x.errMsg, x.err, x.abort = "response body from real server ended early", err, true
			return false
		}
	}
}

// flush sends what was written to the client, within timeouts.client.
func (x *h2exchange) flush() error {
	x.down.arm(sideClient, x.cfg.Timeouts.Client)
	defer x.down.disarm()
	if x.gz != nil {
		if err := x.gz.Flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(x.w).Flush()
}

// fail answers the client with the proxy's own status (as clientConn.fail
// does), or resets the stream when the response head went already.
func (x *h2exchange) fail(status int, reason string, err error) {
	x.status, x.errMsg, x.err, x.generated = status, reason, err, true
	if x.responded {
		x.abort = true
		return
	}
	x.responded = true
	body := cannedBodies[status]
	h := x.w.Header()
	clear(h)
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	h["Cache-Control"] = []string{"no-cache"}
	x.w.WriteHeader(status)
	if x.r.Method != http.MethodHead {
		io.WriteString(x.w, body)
	}
	x.flush() // a client that went away meanwhile changes nothing to say
}

// interim passes a 1xx response of the real server on (103 Early Hints,
// RFC 8297), as HTTP/1.1 does. 100 Continue is x/net's to send (when the
// body is first read, RFC 9110 §10.1.1): it takes Expect off the request.
func (x *h2exchange) interim(code int, header textproto.MIMEHeader) error {
	if code == http.StatusContinue {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.headDone || x.finished {
		return nil
	}
	h := x.w.Header()
	for k, vv := range header {
		if !hopByHop([]byte(k)) {
			h[k] = vv
		}
	}
	x.w.WriteHeader(code)
	clear(h)
	return nil
}

// responseTimeout is the response watchdog's: the real server sent nothing
// within timeouts.server, or the client took nothing within
// timeouts.client.
func (x *h2exchange) responseTimeout(side int) {
	if side == sideServer {
		x.cancel(errServerTimeout)
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.finished {
		http.NewResponseController(x.w).SetWriteDeadline(time.Unix(1, 0)) // resets the stream
	}
}

// uploadTimeout is the request body watchdog's: the client sent nothing
// within timeouts.client, or the real server took nothing within
// timeouts.server.
func (x *h2exchange) uploadTimeout(side int) {
	if side == sideServer {
		x.cancel(errServerTimeout)
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.finished {
		http.NewResponseController(x.w).SetReadDeadline(time.Unix(1, 0)) // ends the body's Read
	}
}

// HTTP/2: h2exchange is a requestView.

func (x *h2exchange) peerAddr() netip.Addr { return x.client }
func (x *h2exchange) path() []byte         { return x.reqPath }

func (x *h2exchange) field(lowerName string) []byte {
	if lowerName == "host" { // :authority (RFC 9113 §8.3.1)
		return []byte(x.r.Host)
	}
	if vv := x.r.Header[textproto.CanonicalMIMEHeaderKey(lowerName)]; len(vv) > 0 {
		return []byte(vv[0])
	}
	return nil
}

// cookie returns the value of the named cookie in the request (x/net joins
// the cookie fields of HTTP/2 into one, RFC 9113 §8.2.3).
func (x *h2exchange) cookie(name string) ([]byte, bool) {
	for _, v := range x.r.Header["Cookie"] {
		if c, ok := persistence.CookieValue([]byte(v), name); ok {
			return c, true
		}
	}
	return nil, false
}

// h2body is a request body as the transport reads it to send it on. It
// counts the bytes, keeps the timeouts between them, remembers the client's
// error, and ignores Close: the transport closes the body of a request it
// could not connect for, which dispatch then sends to another real server.
type h2body struct {
	x   *h2exchange
	src io.ReadCloser
	wd  watchdog // timeouts.client for the client's bytes, timeouts.server for the real server's reading
	n   atomic.Int64

	mu  sync.Mutex
	err error // the client's
}

func (b *h2body) Read(p []byte) (int, error) {
	client, server := b.x.cfg.Timeouts.Client, b.x.poolCfg.Timeouts.Server
	b.wd.arm(sideClient, client)
	n, err := b.src.Read(p)
	b.wd.disarm()
	b.n.Add(int64(n))
	switch {
	case err == nil:
		// The transport writes the bytes to the real server, then reads
		// again.
		b.wd.arm(sideServer, server)
	case err != io.EOF:
		b.mu.Lock()
		b.err = err
		b.mu.Unlock()
	}
	return n, err
}

func (b *h2body) Close() error { return nil }

func (b *h2body) clientErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Sides of an exchange a watchdog waits on.
const (
	sideClient = 1 + iota
	sideServer
)

// watchdog ends an exchange that waits on one side for longer than a
// timeout, as the deadlines of its connections do for HTTP/1.1: armed
// before each wait (a read, a write) and disarmed after it, it bounds each
// silence rather than the whole transfer. onTimeout is called with the side
// that timed out, on the timer's goroutine.
type watchdog struct {
	onTimeout func(side int)

	mu      sync.Mutex
	t       *time.Timer
	armed   bool
	due     time.Time
	side    int
	fired   int // the side that timed out, or 0
	stopped bool
}

func (d *watchdog) arm(side int, timeout time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped || d.fired != 0 {
		return
	}
	d.armed, d.side, d.due = true, side, time.Now().Add(timeout)
	if d.t == nil {
		d.t = time.AfterFunc(timeout, d.fire)
	} else {
		d.t.Reset(timeout)
	}
}

func (d *watchdog) disarm() {
	d.mu.Lock()
	d.armed = false
	d.mu.Unlock()
}

// stop disarms the watchdog for good.
func (d *watchdog) stop() {
	d.mu.Lock()
	d.stopped, d.armed = true, false
	if d.t != nil {
		d.t.Stop()
	}
	d.mu.Unlock()
}

// timedOut returns the side that timed out, or 0.
func (d *watchdog) timedOut() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fired
}

func (d *watchdog) fire() {
	d.mu.Lock()
	// A timer that went off for an earlier wait, or for one that ended
	// just in time, is not a timeout.
	if !d.armed || d.stopped || time.Now().Before(d.due) {
		d.mu.Unlock()
		return
	}
	d.fired, d.armed = d.side, false
	side := d.side
	d.mu.Unlock()
	d.onTimeout(side)
}
