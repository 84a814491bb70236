package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/fulcrumlb/fulcrum/config"
)

// HTTP/1.1 clients of a service with h2 real servers. clientConn relays the
// client's HTTP/1.1 bytes to the real server as they are, which an HTTP/2
// real server cannot read. Such a service serves its HTTP/1.1 clients with
// net/http's server instead, one connection at a time: each request becomes a
// call of handlerConn.ServeHTTP (h2exchange.go), as an HTTP/2 stream does,
// goes through the same pipeline (persistence, scheduler, retries, account,
// log) and on to the chosen real server's transport, HTTP/1.1 or HTTP/2.
//
// What this path does not do: switching protocols. A request to upgrade the
// connection (WebSocket, RFC 6455 §4) is answered 501, since the real server
// behind an HTTP/2 hop could not take the connection over (RFC 9113 §8.6:
// HTTP/2 has no Upgrade); a request to upgrade to h2c is served as a plain
// request, the Upgrade ignored (RFC 9110 §7.8 lets a server do so).

// hasH2Servers reports whether one of the service's real servers, or of the
// pools its routes lead to, speaks HTTP/2, so that its HTTP/1.1 clients are
// served by serveH1Handler.
func (s *Service) hasH2Servers() bool {
	if s.reals.Load().h2 {
		return true
	}
	if t := s.routes.Load(); t != nil {
		for i := range t.routes {
			if p := t.routes[i].pool; p != nil && p.reals.Load().h2 {
				return true
			}
		}
	}
	return false
}

// h1conn is one HTTP/1.1 client connection served through net/http.
//
// Each has its own http.Server, serving a listener that hands out the one
// connection: Server.Serve is the only way into net/http's HTTP/1.1 server,
// and the Server holds the timeouts the connection started with.
type h1conn struct {
	*handlerConn
	c     net.Conn // the client connection, TLS layer included
	srv   *http.Server
	ln    *oneConnListener
	state atomic.Int32 // the connection's http.ConnState, for stop
}

// serveH1Handler serves an HTTP/1.1 client (tc is its TLS layer, nil for
// plain HTTP; c is tc when there is one) until it leaves, idles for
// timeouts.client, or the service stops.
func (s *Service) serveH1Handler(c net.Conn, tc *tls.Conn, vs *config.VirtualService) {
	var cs *tls.ConnectionState
	if tc != nil {
		st := tc.ConnectionState()
		cs = &st
	}
	h := &h1conn{handlerConn: s.newHandlerConn(c, protoHTTP11, cs), c: c, ln: newOneConnListener(c)}
	h.srv = &http.Server{
		Handler: h,
		// As clientConn: timeouts.client_header for a request head,
		// timeouts.client between requests (request and response bodies
		// are timed by the exchange's watchdogs).
		ReadHeaderTimeout: vs.Timeouts.ClientHeader,
		IdleTimeout:       vs.Timeouts.Client,
		// As HTTP/1.1's head limit; net/http answers 431 beyond it.
		MaxHeaderBytes: bufSize,
		ConnState:      h.connState,
		ErrorLog:       s.h2log,
		// ALPN chose HTTP/1.1, or there is no TLS: nothing else is
		// spoken here.
		Protocols:    new(http.Protocols),
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	h.srv.Protocols.SetHTTP1(true)
	if !s.track(h) {
		c.Close()
		return
	}
	defer s.untrack(h)
	h.srv.Serve(h.ln) // returns once the connection has ended, or at once when stopped before
	h.ln.wait()
	h.end()
}

// ServeHTTP serves one request of the connection.
func (h *h1conn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The log names the request's own version. net/http serves one
	// request of a connection at a time, on the connection's goroutine:
	// nothing else reads proto meanwhile.
	h.proto = protoHTTP11
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 {
		h.proto = protoHTTP10
	}
	if wantsUpgrade(r) {
		h.refuseUpgrade(w, r)
		return
	}
	h.handlerConn.ServeHTTP(w, r)
}

// wantsUpgrade reports whether r asks to switch protocols (RFC 9110 §7.8)
// to anything but h2c, whose Upgrade is ignored.
func wantsUpgrade(r *http.Request) bool {
	up := r.Header["Upgrade"]
	if len(up) == 0 || !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
		return false
	}
	for _, v := range up {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, "h2c") {
				return true
			}
		}
	}
	return false
}

// refuseUpgrade answers an upgrade request 501, logged and counted as the
// pipeline's own answers are.
func (h *h1conn) refuseUpgrade(w http.ResponseWriter, r *http.Request) {
	rec := record{start: time.Now(), proto: h.proto, logMethod: []byte(r.Method), logTarget: []byte(r.RequestURI),
		status: http.StatusNotImplemented, generated: true,
		errMsg: "upgrade (WebSocket) is not supported by a service with h2 real servers"}
	body := cannedBodies[rec.status]
	hdr := w.Header()
	hdr["Content-Type"] = []string{"text/plain; charset=utf-8"}
	hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	hdr["Cache-Control"] = []string{"no-cache"}
	hdr["Connection"] = []string{"close"} // what follows the head may be another protocol's bytes
	w.WriteHeader(rec.status)
	io.WriteString(w, body)
	_, client, _ := clientOfRequest(h.svc.config().Trusted, h.peer, h.peerIP, r.Header["X-Forwarded-For"])
	h.svc.logExchange(&rec, client)
	h.svc.account(&rec)
}

// connState follows the connection's state: for stop, and for serveH1Handler
// to know when it has ended.
func (h *h1conn) connState(_ net.Conn, st http.ConnState) {
	h.state.Store(int32(st))
	switch st {
	case http.StateIdle:
		// Stopped while a request was in flight: net/http closes the
		// connection after the response (keep-alives are off), but one
		// that turned idle just before is closed here.
		if h.svc.isStopping() {
			h.c.Close()
		}
	case http.StateClosed, http.StateHijacked:
		h.ln.done()
	}
}

// stop ends the connection once no request is in flight: at once if it
// waits for one; else after the response, which says "Connection: close".
func (h *h1conn) stop() {
	h.srv.SetKeepAlivesEnabled(false)
	if st := http.ConnState(h.state.Load()); st == http.StateNew || st == http.StateIdle {
		h.c.Close()
	}
}

func (h *h1conn) forceClose() { h.c.Close() }

// oneConnListener hands out one connection, then blocks until that
// connection has ended (or the listener is closed), so that Server.Serve
// returns when the connection does.
type oneConnListener struct {
	c        net.Conn
	mu       sync.Mutex
	accepted bool
	ended    chan struct{} // closed when the connection has ended
	closed   chan struct{} // closed by Close
	endOnce  sync.Once
	closeOne sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{c: c, ended: make(chan struct{}), closed: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	first := !l.accepted
	l.accepted = true
	l.mu.Unlock()
	if first {
		return l.c, nil
	}
	select {
	case <-l.ended:
	case <-l.closed:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.closeOne.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

// done marks the connection ended.
func (l *oneConnListener) done() { l.endOnce.Do(func() { close(l.ended) }) }

// wait waits until the connection, if it was handed out, has ended; one
// that never was is closed.
func (l *oneConnListener) wait() {
	l.mu.Lock()
	accepted := l.accepted
	l.accepted = true // no later Accept hands it out
	l.mu.Unlock()
	if !accepted {
		l.c.Close()
		return
	}
	<-l.ended
}
