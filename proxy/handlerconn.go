package proxy

import (
	"crypto/tls"
	"net"
	"net/netip"
	"strconv"
	"sync"
)

// handlerConn is a client connection whose requests are served through
// net/http's Handler interface (ServeHTTP, h2exchange.go) rather than by
// clientConn's own HTTP/1.1 code: the HTTP/2 front end's connections
// (h2conn). It holds what every exchange of the connection needs and keeps
// count of the exchanges in flight.
type handlerConn struct {
	svc    *Service
	proto  string      // the client's protocol, for the log (protoHTTP2, ...)
	scheme string      // "https" or "http", for X-Forwarded-Proto
	peerIP string      // the client's IP, for X-Forwarded-For and logs
	peer   netip.Addr  // the same, for persistence and hashing
	port   string      // the VIP's port, for X-Forwarded-Port
	certs  []certField // X-SSL-Client-*, passed on when the service verifies client certificates

	mu       sync.Mutex
	ended    bool                     // serving stopped: no handler may start
	handlers sync.WaitGroup           // ServeHTTP calls running
	inflight map[*h2exchange]struct{} // for cut
}

// newHandlerConn describes client connection c, which speaks proto; cs is
// its TLS state, nil for plain HTTP.
func (s *Service) newHandlerConn(c net.Conn, proto string, cs *tls.ConnectionState) *handlerConn {
	h := &handlerConn{svc: s, proto: proto, scheme: "http", peerIP: addrIP(c.RemoteAddr()), peer: addrOf(c.RemoteAddr()),
		inflight: make(map[*h2exchange]struct{})}
	if ta, ok := c.LocalAddr().(*net.TCPAddr); ok {
		h.port = strconv.Itoa(ta.Port)
	}
	if cs != nil {
		h.scheme = "https"
		h.certs = clientCertFields(cs)
	}
	return h
}

// cut cancels the connection's exchanges with rs, which went into
// maintenance.
func (h *handlerConn) cut(rs *realServer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for x := range h.inflight {
		if x.attempting.Load() == rs {
			x.cancel(errCut)
		}
	}
}

// enter counts a handler in; false when the connection has ended (x/net may
// start a handler after its serve loop has returned).
func (h *handlerConn) enter(x *h2exchange) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended {
		return false
	}
	h.handlers.Add(1)
	h.inflight[x] = struct{}{}
	return true
}

func (h *handlerConn) leave(x *h2exchange) {
	h.mu.Lock()
	delete(h.inflight, x)
	h.mu.Unlock()
	h.handlers.Done()
}

// end waits for the handlers still running once the server has stopped
// serving the connection (they see their context canceled), so that the
// service's shutdown waits for them too.
func (h *handlerConn) end() {
	h.mu.Lock()
	h.ended = true
	h.mu.Unlock()
	h.handlers.Wait()
}
