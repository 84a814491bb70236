//lint:file-ignore SA1019 x/net/http2 marks its Server deprecated in favour of net/http, but net/http has no per-connection ServeConn: Fulcrum terminates TLS itself and hands over one connection at a time.

package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"

	"go.uber.org/zap"
	"golang.org/x/net/http2"

	"github.com/fulcrumlb/fulcrum/config"
)

// The HTTP/2 front end (RFC 9113). A TLS client that negotiated "h2" by ALPN
// (RFC 9113 §3.2) is served by golang.org/x/net/http2, which does the
// framing, flow control and HPACK and turns each stream into a call of
// handlerConn.ServeHTTP (h2exchange.go). From there a request goes through the
// same pipeline as an HTTP/1.1 one (dispatch: persistence, scheduler,
// retries; account and logExchange) and on to the real server over HTTP/1.1.

// h2MaxStreams is SETTINGS_MAX_CONCURRENT_STREAMS: how many requests one
// client connection may have in flight (RFC 9113 §5.1.2), x/net's default.
// The real servers' max_conns and the queue bound what reaches them.
const h2MaxStreams = 250

// h2MaxFrameSize is SETTINGS_MAX_FRAME_SIZE, the largest frame a client may
// send: the protocol's initial value (RFC 9113 §4.2, §6.5.2), which HAProxy
// keeps too, rather than x/net's 1 MiB: a bigger frame is a FRAME_SIZE_ERROR
// (h2spec 4.2 expects it of a frame above 16384 bytes), and reading one
// buffers no more than that.
const h2MaxFrameSize = 16384

// h2conn is one HTTP/2 client connection.
//
// Each has its own http2.Server and, as that server's BaseConfig, its own
// http.Server. x/net/http2 has no graceful stop for one connection, but
// Shutdown of the http.Server it was configured on (http2.ConfigureServer)
// makes its connections send GOAWAY (RFC 9113 §6.8), finish the streams in
// flight and close: that is stop. The http2.Server holds the idle timeout
// (timeouts.client) the connection started with. Both cost little next to a
// TLS handshake.
type h2conn struct {
	*handlerConn
	tc   *tls.Conn
	base *http.Server
}

// serveH2 serves a client that negotiated HTTP/2 until it leaves, idles for
// timeouts.client, or the service stops.
func (s *Service) serveH2(tc *tls.Conn, vs *config.VirtualService) {
	cs := tc.ConnectionState()
	h := &h2conn{handlerConn: s.newHandlerConn(tc, protoHTTP2, &cs), tc: tc}
	srv := &http2.Server{MaxConcurrentStreams: h2MaxStreams, MaxReadFrameSize: h2MaxFrameSize, IdleTimeout: vs.Timeouts.Client}
	h.base = &http.Server{
		Handler: h,
		// As HTTP/1.1's head limit; x/net answers 431 beyond it (and
		// advertises it as SETTINGS_MAX_HEADER_LIST_SIZE).
		MaxHeaderBytes: bufSize,
		ConnState:      h.connState,
		ErrorLog:       s.h2log,
	}
	if err := http2.ConfigureServer(h.base, srv); err != nil {
		s.log.Error("HTTP/2", zap.Error(err))
		tc.Close()
		return
	}
	if !s.track(h) {
		tc.Close()
		return
	}
	defer s.untrack(h)
	srv.ServeConn(newH2Guard(tc), &http2.ServeConnOpts{BaseConfig: h.base, Handler: h})
	h.end()
}

// connState follows the connection's state. A connection that turns idle
// while the service stops is stopped: this also catches one that started
// while stop was called, before x/net had registered it for Shutdown.
func (h *h2conn) connState(_ net.Conn, st http.ConnState) {
	if st == http.StateIdle && h.svc.isStopping() {
		h.stop()
	}
}

// stop sends GOAWAY: the streams in flight finish, then the connection
// closes (at once if there are none, after the second x/net gives the
// client to read the GOAWAY).
func (h *h2conn) stop() {
	// Shutdown returns at once: it has no listener or connection of its
	// own to wait for; x/net's hook stops the connection.
	h.base.Shutdown(context.Background())
}

func (h *h2conn) forceClose() { h.tc.Close() }
