package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/tlsterm"
)

// tlsFront is a virtual service's TLS termination: its certificates and the
// tls.Config built from them. A reload builds a new one (re-reading the
// files) and switches to it only when the whole reload is committed.
type tlsFront struct {
	store      *tlsterm.Store
	cfg        *tls.Config
	clientAuth bool // client certificates are verified: pass them on in headers
}

// newTLSFront builds the TLS termination of vs, reading its certificate
// files; nil when vs has no TLS. old is the front it replaces, if any.
func (p *Proxy) newTLSFront(vs *config.VirtualService, old *tlsFront) (*tlsFront, error) {
	if len(vs.TLS.Certificates) == 0 {
		return nil, nil
	}
	store := tlsterm.NewStore()
	warnings, err := store.Load(vs.TLS.Certificates)
	if err != nil {
		return nil, fmt.Errorf("virtual service %q: tls: %w", vs.Name, err)
	}
	for _, w := range warnings {
		p.log.Warn("certificate warning", zap.String("service", vs.Name), zap.String("detail", w))
	}
	tc := vs.TLS
	// "h2" may be listed (config accepts it) but is not offered until the
	// HTTP/2 front end exists: clients then speak HTTP/1.1.
	tc.ALPN = nil
	for _, proto := range vs.TLS.ALPN {
		if proto != config.ProtoH2 {
			tc.ALPN = append(tc.ALPN, proto)
		}
	}
	if len(tc.ALPN) < len(vs.TLS.ALPN) && old == nil {
		p.log.Warn(`tls.alpn lists "h2", which is not offered yet: the HTTP/2 front end is not implemented`, zap.String("service", vs.Name))
	}
	cfg, err := tlsterm.ServerConfig(&tc, store, p.tickets)
	if err != nil {
		return nil, fmt.Errorf("virtual service %q: tls: %w", vs.Name, err)
	}
	return &tlsFront{store: store, cfg: cfg, clientAuth: vs.TLS.ClientAuth == "request" || vs.TLS.ClientAuth == "require"}, nil
}

// handshake terminates TLS on a new client connection, within
// timeouts.client_header. It returns nil (having closed c) on failure.
func (s *Service) handshake(c net.Conn, f *tlsFront, vs *config.VirtualService) *tls.Conn {
	tc := tls.Server(c, f.cfg)
	tc.SetDeadline(time.Now().Add(vs.Timeouts.ClientHeader))
	if err := tc.Handshake(); err != nil {
		s.log.Debug("TLS handshake failed", zap.String("client", addrIP(c.RemoteAddr())), zap.Error(err))
		tc.Close()
		return nil
	}
	tc.SetDeadline(time.Time{})
	return tc
}

// Client-certificate fields passed to real servers when the service verifies
// client certificates; the client's own fields of these names are dropped
// so that they cannot be forged.
const clientCertPrefix = "x-ssl-client-"

func (cc *clientConn) writeClientCert(w *writer) {
	cs := cc.tls.ConnectionState()
	subject, issuer, serial, fingerprint, verify := tlsterm.ClientCertFields(&cs)
	for _, f := range [...]struct{ name, value string }{
		{"X-SSL-Client-Verify", verify},
		{"X-SSL-Client-DN", subject},
		{"X-SSL-Client-Issuer", issuer},
		{"X-SSL-Client-Serial", serial},
		{"X-SSL-Client-SHA256", fingerprint},
	} {
		if f.value == "" {
			continue
		}
		w.WriteString(f.name)
		w.WriteString(": ")
		w.WriteString(strings.Map(fieldSafe, f.value))
		w.WriteString("\r\n")
	}
}

// fieldSafe keeps a certificate's text a valid field value.
func fieldSafe(r rune) rune {
	if r < ' ' || r == 0x7f {
		return ' '
	}
	return r
}

// isClientCertField reports whether a request field name is one the proxy
// sets from the client certificate.
func isClientCertField(name []byte) bool {
	return len(name) > len(clientCertPrefix) && equalFold(name[:len(clientCertPrefix)], clientCertPrefix)
}

// tlsClient wraps a new connection to a real server in TLS (re-encryption).
func (rs *realServer) tlsClient(c net.Conn, timeout time.Duration) (net.Conn, error) {
	tc := tls.Client(c, rs.tlsCfg)
	tc.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("tls: %w", err)
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// rawOf returns the descriptor under a connection, TLS or not.
func rawOf(c net.Conn) syscall.RawConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			return raw
		}
	}
	return nil
}
