package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/quic-go/quic-go/http3"
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
	h3         *tls.Config // for QUIC (h3.go): cfg offering "h3" by ALPN; nil when tls.http3 is off
	clientAuth bool        // client certificates are verified: pass them on in headers
}

// newTLSFront builds the TLS termination of vs, reading its certificate
// files; nil when vs has no TLS.
func (p *Proxy) newTLSFront(vs *config.VirtualService) (*tlsFront, error) {
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
	// Every protocol of tls.alpn is offered: "h2" is served by the HTTP/2
	// front end (h2.go), "http/1.1" by clientConn.
	cfg, err := tlsterm.ServerConfig(&vs.TLS, store, p.tickets)
	if err != nil {
		return nil, fmt.Errorf("virtual service %q: tls: %w", vs.Name, err)
	}
	if vs.Mode == config.ModeTCP {
		// The decrypted bytes go on as they are: no application protocol
		// is negotiated on the real server's behalf.
		cfg.NextProtos = nil
	}
	f := &tlsFront{store: store, cfg: cfg, clientAuth: vs.TLS.ClientAuth == "request" || vs.TLS.ClientAuth == "require"}
	if vs.TLS.HTTP3 {
		// The same certificates and client_auth; QUIC makes it TLS 1.3
		// only (RFC 9001 §4.2). A clone has the ticket keys of the
		// moment: registered on its own to follow their rotation.
		f.h3 = http3.ConfigureTLSConfig(cfg)
		p.tickets.Register(f.h3)
	}
	return f, nil
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

// certField is one X-SSL-Client-* request field.
type certField struct{ name, value string }

// clientCertFields describes the client certificate of a connection in the
// fields passed to real servers, with values safe in a header; fields
// without a value are left out. It allocates: call it once per connection.
func clientCertFields(cs *tls.ConnectionState) []certField {
	subject, issuer, serial, fingerprint, verify := tlsterm.ClientCertFields(cs)
	fields := make([]certField, 0, 5)
	for _, f := range [...]certField{
		{"X-SSL-Client-Verify", verify},
		{"X-SSL-Client-DN", subject},
		{"X-SSL-Client-Issuer", issuer},
		{"X-SSL-Client-Serial", serial},
		{"X-SSL-Client-SHA256", fingerprint},
	} {
		if f.value != "" {
			fields = append(fields, certField{f.name, strings.Map(fieldSafe, f.value)})
		}
	}
	return fields
}

// passClientCert reports whether requests carry the client certificate
// fields to real servers: when the service verifies client certificates.
func (s *Service) passClientCert() bool {
	f := s.tls.Load()
	return f != nil && f.clientAuth
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
