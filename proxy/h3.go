package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/fulcrumlb/fulcrum/config"
)

// The HTTP/3 front end (RFC 9114), for a TLS service with tls.http3 on. Each
// listen address gets a UDP socket on the same host and port as its TCP
// listener, served by github.com/quic-go/quic-go: QUIC (RFC 9000) and its
// TLS 1.3 handshake (RFC 9001), then HTTP/3 framing and QPACK, which turn
// each request stream into a call of handlerConn.ServeHTTP (h2exchange.go),
// as HTTP/2's do. So the request goes through the same pipeline (dispatch:
// persistence, scheduler, retries; account and logExchange) to the real
// server over HTTP/1.1. Clients learn of it from the Alt-Svc field (RFC 7838)
// of the service's responses over TCP.
//
// A QUIC connection is a client connection as a TCP one is: it holds a
// max_conns slot for as long as it lives (the accept loop waits for a slot
// before taking the next connection, leaving the others in quic-go's accept
// queue, as a TCP backlog), counts in the service's active connections, and
// is stopped, force-closed and cut like the others (frontConn).

// altSvcMaxAge is the ma parameter of Alt-Svc (RFC 7838 §3): how long a
// client may remember that HTTP/3 is offered, one day as HAProxy and nginx
// examples use.
const altSvcMaxAge = 86400

// h3CloseDelay is how long a stopped HTTP/3 connection stays open after its
// last request ended: time for the client to read its responses and the
// GOAWAY, and to close the connection itself (RFC 9114 §5.2), as x/net's
// HTTP/2 server waits after its GOAWAY.
const h3CloseDelay = time.Second

// udpBufferSize is the socket buffer size quic-go asks for (see its wiki,
// "UDP Buffer Sizes"): less makes packets drop at high rates.
const udpBufferSize = 7 << 20

// h3listener is one UDP listen address serving HTTP/3. Like a TCP listener
// it belongs to the proxy, so that a reload that keeps the address keeps the
// socket, and with it the clients' QUIC connections (which all arrive on
// it); svc is the service new connections go to.
type h3listener struct {
	addr string // the TCP listen address it shadows, as configured
	pc   *net.UDPConn
	tr   *quic.Transport
	ln   *quic.Listener
	svc  atomic.Pointer[Service]

	accepted chan struct{} // closed when the accept loop has returned
	serving  sync.WaitGroup

	mu      sync.Mutex
	conns   map[*h3conn]struct{}
	retired bool // no service wants the address: its connections are stopped
}

// errH3Off refuses a QUIC connection that arrives while its address serves
// no HTTP/3: bound but not attached yet, or in the middle of a reload.
var errH3Off = errors.New("HTTP/3 is not served here now")

// h3listeners are the proxy's HTTP/3 sockets.
type h3listeners struct {
	byKey   map[string]*h3listener // by listenKey of the TCP listen address
	closing sync.WaitGroup         // retired sockets waiting for their connections to end
	warned  bool                   // the UDP buffer warning was logged
}

// wantsH3 reports whether vs serves HTTP/3.
func wantsH3(vs *config.VirtualService) bool {
	return vs.TLS.HTTP3 && len(vs.TLS.Certificates) > 0 && vs.Mode == config.ModeHTTP
}

// quietQUICBufferWarning stops quic-go from printing its UDP buffer warning
// with the log package (on stderr, in no format of ours): bindH3 checks the
// buffers and logs the same through zap.
var quietQUICBufferWarning = sync.OnceFunc(func() {
	const env = "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING"
	if _, set := os.LookupEnv(env); !set {
		os.Setenv(env, "true")
	}
})

// bindH3 opens the UDP sockets of the services' HTTP/3 addresses that are
// not open yet, each on the port its TCP listener got (from p.listeners or
// tcp, just bound); on failure it closes what it opened. p.mu is held.
func (p *Proxy) bindH3(services []*config.VirtualService, tcp map[string]*listener) (map[string]*h3listener, error) {
	quietQUICBufferWarning()
	bound := make(map[string]*h3listener)
	for _, vs := range services {
		if !wantsH3(vs) {
			continue
		}
		for _, addr := range vs.Listen {
			k := listenKey(addr)
			if p.h3.byKey[k] != nil || bound[k] != nil {
				continue
			}
			l, err := p.listenH3(addr, k, tcp)
			if err != nil {
				closeH3(bound)
				return nil, fmt.Errorf("virtual service %q: tls.http3: %w", vs.Name, err)
			}
			bound[k] = l
		}
	}
	return bound, nil
}

// listenH3 binds the UDP socket of TCP listen address addr and starts QUIC
// on it.
func (p *Proxy) listenH3(addr, key string, tcp map[string]*listener) (*h3listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	tl := p.listeners[key]
	if tl == nil {
		tl = tcp[key]
	}
	if tl != nil { // port 0: the port TCP got
		if ta, ok := tl.ln.Addr().(*net.TCPAddr); ok {
			port = strconv.Itoa(ta.Port)
		}
	}
	pc, err := listenPacketFreebind(net.JoinHostPort(host, port))
	if err != nil {
		return nil, err
	}
	l := &h3listener{addr: addr, pc: pc.(*net.UDPConn), accepted: make(chan struct{}), conns: make(map[*h3conn]struct{})}
	l.tr = &quic.Transport{Conn: l.pc}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS13, // QUIC's (RFC 9001 §4.2)
		NextProtos: []string{http3.NextProtoH3},
		// The current service's certificates and client_auth, so that a
		// reload that renews them applies to the next handshake.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			if s := l.svc.Load(); s != nil {
				if f := s.tls.Load(); f != nil && f.h3 != nil {
					return f.h3, nil
				}
			}
			return nil, errH3Off
		},
	}
	quicConf := &quic.Config{
		GetConfigForClient: func(*quic.ClientInfo) (*quic.Config, error) {
			s := l.svc.Load()
			if s == nil { // bound, not attached yet: the start or reload is not done
				return nil, errH3Off
			}
			return quicConfig(s.config()), nil
		},
	}
	if l.ln, err = l.tr.Listen(tlsConf, quicConf); err != nil {
		l.tr.Close()
		pc.Close()
		return nil, err
	}
	p.checkUDPBuffers(l)
	return l, nil
}

// quicConfig is the QUIC configuration of a new connection to vs.
func quicConfig(vs *config.VirtualService) *quic.Config {
	return &quic.Config{
		// quic-go aborts a handshake that takes twice this: together,
		// timeouts.client_header, as the TLS handshake over TCP.
		HandshakeIdleTimeout: vs.Timeouts.ClientHeader / 2,
		MaxIdleTimeout:       vs.Timeouts.Client,
		// As HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9000 §4.6).
		MaxIncomingStreams: h2MaxStreams,
		// No 0-RTT: early data can be replayed, and the request it
		// carries would reach a real server twice (RFC 9001 §9.2).
		Allow0RTT: false,
	}
}

// checkUDPBuffers logs, once, that the socket buffers are smaller than
// quic-go asked for (it tries to raise them when it starts on the socket).
func (p *Proxy) checkUDPBuffers(l *h3listener) {
	if p.h3.warned {
		return
	}
	raw, err := l.pc.SyscallConn()
	if err != nil {
		return
	}
	var rcv, snd int
	raw.Control(func(fd uintptr) {
		rcv, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	if rcv >= udpBufferSize && snd >= udpBufferSize {
		return
	}
	p.h3.warned = true
	p.log.Warn("UDP socket buffers are smaller than QUIC wants: HTTP/3 may drop packets under load; raise net.core.rmem_max and net.core.wmem_max (see https://github.com/quic-go/quic-go/wiki/UDP-Buffer-Sizes)",
		zap.String("listen", l.addr), zap.Int("receive_buffer", rcv), zap.Int("send_buffer", snd), zap.Int("wanted", udpBufferSize))
}

// attachH3 points every HTTP/3 address of services at its service, starts
// accept loops on the newly bound sockets, retires the sockets no service
// wants any more, and sets each service's Alt-Svc. p.mu is held.
func (p *Proxy) attachH3(services []*Service, bound map[string]*h3listener) {
	want := make(map[string]bool)
	for _, s := range services {
		vs := s.config()
		if !wantsH3(vs) {
			s.altSvc.Store(nil)
			continue
		}
		var alts []altSvc
		for _, addr := range vs.Listen {
			k := listenKey(addr)
			want[k] = true
			l := p.h3.byKey[k]
			if l == nil {
				l = bound[k]
				p.h3.byKey[k] = l
				l.svc.Store(s)
				p.accepting.Add(1)
				go p.acceptH3(l)
			} else {
				l.svc.Store(s)
			}
			alts = append(alts, newAltSvc(l.pc.LocalAddr().(*net.UDPAddr).Port))
		}
		s.altSvc.Store(&alts)
	}
	for k, l := range p.h3.byKey {
		if !want[k] {
			p.retireH3(l)
			delete(p.h3.byKey, k)
		}
	}
}

// closeH3 closes sockets bound for a start or reload that failed.
func closeH3(bound map[string]*h3listener) {
	for _, l := range bound {
		l.ln.Close()
		l.tr.Close()
		l.pc.Close()
	}
}

// retireH3 stops accepting on l and stops its connections (GOAWAY); the
// socket closes once they have ended: closing it would end them at once,
// since they all receive on it. p.mu is held.
func (p *Proxy) retireH3(l *h3listener) {
	l.ln.Close()
	l.mu.Lock()
	l.retired = true
	for h := range l.conns {
		h.stop()
	}
	l.mu.Unlock()
	p.h3.closing.Go(func() {
		<-l.accepted // no connection is added after this
		l.serving.Wait()
		l.tr.Close()
		l.pc.Close()
	})
}

// acceptH3 accepts QUIC connections on l for whichever service l points
// at, as acceptLoop does TCP clients.
func (p *Proxy) acceptH3(l *h3listener) {
	defer p.accepting.Done()
	defer close(l.accepted)
	for {
		s := l.svc.Load()
		slots := s.slotChan()
		if slots != nil { // max_conns: leave further clients in quic-go's queue
			select {
			case slots <- struct{}{}:
			case <-s.stopCh:
				slots = nil
			}
		}
		qc, err := l.ln.Accept(context.Background())
		if err != nil { // the listener was closed: quic-go has no other error
			release(slots)
			return
		}
		if cur := l.svc.Load(); cur != s {
			release(slots)
			slots, s = nil, cur
		}
		for !s.enterH3(l, qc, slots) {
			release(slots)
			slots = nil
			next := l.svc.Load()
			if next == s {
				qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
				break
			}
			s = next
		}
	}
}

// enterH3 starts serving QUIC connection qc; false if the service is
// stopping.
func (s *Service) enterH3(l *h3listener, qc *quic.Conn, slots chan struct{}) bool {
	s.mu.Lock()
	if s.isStopping() {
		s.mu.Unlock()
		return false
	}
	s.wg.Add(1)
	s.mu.Unlock()
	l.serving.Add(1)
	go s.serveH3(l, qc, slots)
	return true
}

// h3conn is one HTTP/3 client connection.
//
// Each has its own http3.Server, as each h2conn has its own http2.Server:
// quic-go's graceful stop (Shutdown: GOAWAY, RFC 9114 §5.2, then the
// requests in flight finish) is the server's, not a connection's.
type h3conn struct {
	*handlerConn
	qc  *quic.Conn
	srv *http3.Server

	mu       sync.Mutex
	running  int                // requests being served
	stopping bool               // stop was called
	quiet    context.CancelFunc // ends the graceful stop: closes the connection
}

// serveH3 serves a QUIC connection until the client leaves, it idles for
// timeouts.client, or the service stops.
func (s *Service) serveH3(l *h3listener, qc *quic.Conn, slots chan struct{}) {
	defer s.wg.Done()
	defer l.serving.Done()
	defer release(slots)
	s.active.Add(1)
	defer s.active.Add(-1)
	// Whatever ends serving, the connection ends too (a no-op if it has).
	defer qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
	vs := s.config()
	cs := qc.ConnectionState().TLS
	h := &h3conn{handlerConn: s.newHandlerConnAt(qc.RemoteAddr(), qc.LocalAddr(), protoHTTP3, &cs), qc: qc}
	h.srv = &http3.Server{
		Handler:     h,
		IdleTimeout: vs.Timeouts.Client,
		// As HTTP/1.1's head limit (SETTINGS_MAX_FIELD_SECTION_SIZE,
		// RFC 9114 §7.2.4.1).
		MaxHeaderBytes: bufSize,
		Logger:         s.h3log,
	}
	if !s.track(h) {
		return
	}
	defer s.untrack(h)
	l.mu.Lock()
	l.conns[h] = struct{}{}
	retired := l.retired
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.conns, h)
		l.mu.Unlock()
	}()
	if retired || s.isStopping() { // stopped before it was tracked
		h.stop()
	}
	h.srv.ServeQUICConn(qc)
	h.end()
}

// ServeHTTP serves one request stream, counting it for stop.
func (h *h3conn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.running++
	h.mu.Unlock()
	defer h.left()
	h.handlerConn.ServeHTTP(w, r)
}

func (h *h3conn) left() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running--
	if h.running == 0 && h.stopping {
		time.AfterFunc(h3CloseDelay, h.quiet)
	}
}

// stop sends GOAWAY: the requests in flight finish, new ones are refused
// (H3_REQUEST_REJECTED, which a client may retry elsewhere), then the
// connection closes, h3CloseDelay after its last request, unless the
// client closes it first.
func (h *h3conn) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopping {
		return
	}
	h.stopping = true
	ctx, cancel := context.WithCancel(context.Background())
	h.quiet = cancel
	// Shutdown returns once the connection has ended: when the client
	// closes it, or when ctx ends and it closes it.
	go h.srv.Shutdown(ctx)
	if h.running == 0 {
		time.AfterFunc(h3CloseDelay, cancel)
	}
}

// forceClose ends the connection and its requests now.
func (h *h3conn) forceClose() {
	h.qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "shutting down")
}

// altSvc is the Alt-Svc field (RFC 7838 §3) of the responses of one TCP
// listen port when HTTP/3 is on: h3 on the same port, which a client may
// use for altSvcMaxAge seconds.
type altSvc struct {
	port  string   // the TCP port it is for (the UDP one is the same)
	field []byte   // "Alt-Svc: ...\r\n", for HTTP/1.1
	value []string // for HTTP/2 and HTTP/3
}

func newAltSvc(port int) altSvc {
	v := `h3=":` + strconv.Itoa(port) + `"; ma=` + strconv.Itoa(altSvcMaxAge)
	return altSvc{port: strconv.Itoa(port), field: []byte("Alt-Svc: " + v + "\r\n"), value: []string{v}}
}

// altSvcFor returns the Alt-Svc of responses to a client connected to
// port, or nil when the service does not serve HTTP/3 there.
func (s *Service) altSvcFor(port string) *altSvc {
	if t := s.altSvc.Load(); t != nil {
		for i := range *t {
			if (*t)[i].port == port {
				return &(*t)[i]
			}
		}
	}
	return nil
}

// newH3Log is quic-go's log of a service: what it reports (a client that
// broke the protocol, a handler that panicked) at debug level, as
// x/net/http2's.
func newH3Log(log *zap.Logger) *slog.Logger {
	std, _ := zap.NewStdLogAt(log.Named("h3"), zap.DebugLevel)
	return slog.New(slog.NewTextHandler(std.Writer(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}
