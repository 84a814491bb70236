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
// clientConn's own HTTP/1.1 code: the HTTP/2 and HTTP/3 front ends'
// connections (h2conn, h3conn). It holds what every exchange of the
// connection needs and keeps count of the exchanges in flight.
type handlerConn struct {
	svc    *Service
	proto  string      // the client's protocol, for the log (protoHTTP2, ...)
	scheme string      // "https" or "http", for X-Forwarded-Proto
	peerIP string      // the client's IP, for X-Forwarded-For and logs
	peer   netip.Addr  // the same, for persistence and hashing
	port   string      // the VIP's port, for X-Forwarded-Port
	certs  []certField // X-SSL-Client-*, passed on when the service verifies client certificates
	ident  *clientID   // for connections private to this client (send_proxy, transparent: proxyout.go)

	mu       sync.Mutex
	ended    bool                       // serving stopped: no handler may start
	handlers sync.WaitGroup             // ServeHTTP calls running
	inflight map[*h2exchange]struct{}   // for cut
	private  map[*realServer]*transport // transports private to this client (transportFor)
	spent    []*transport               // private ones replaced by a reload, to close at the end
}

// newHandlerConn describes client connection c, which speaks proto; cs is
// its TLS state, nil for plain HTTP.
func (s *Service) newHandlerConn(c net.Conn, proto string, cs *tls.ConnectionState) *handlerConn {
	return s.newHandlerConnAt(c.RemoteAddr(), c.LocalAddr(), proto, cs)
}

// newHandlerConnAt describes a client connection from remote to local: TCP
// addresses, or UDP ones for HTTP/3 (a QUIC connection is no net.Conn).
func (s *Service) newHandlerConnAt(remote, local net.Addr, proto string, cs *tls.ConnectionState) *handlerConn {
	if ua, ok := remote.(*net.UDPAddr); ok {
		remote = &net.TCPAddr{IP: ua.IP, Port: ua.Port, Zone: ua.Zone}
	}
	h := &handlerConn{svc: s, proto: proto, scheme: "http", peerIP: addrIP(remote), peer: addrOf(remote),
		inflight: make(map[*h2exchange]struct{}), ident: newClientID(remote, local, cs)}
	switch a := local.(type) {
	case *net.TCPAddr:
		h.port = strconv.Itoa(a.Port)
	case *net.UDPAddr:
		h.port = strconv.Itoa(a.Port)
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
	h.endPrivate()
}
