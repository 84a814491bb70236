package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/fulcrumlb/fulcrum/config"
)

// The PROXY protocol header sent to real servers with send_proxy (HAProxy's
// proxy-protocol.txt): the first bytes of every connection to such a real
// server say which client it serves. Such a connection then carries one
// client's identity and never serves another (see clientConn.own and
// handlerConn.private), as does one made from the client's own address
// (transparent, transparent.go).

// clientID is what a connection to a real server made for one client needs to
// know of it: its address (as the front end trusts it: the PROXY header's
// source when accept_proxy is on), the VIP it connected to, and the TLS
// state when the service terminated TLS.
type clientID struct {
	src, dst *net.TCPAddr
	tls      *tls.ConnectionState // nil: no TLS terminated
}

// newClientID describes the client of a connection from remote to local (TCP
// addresses, or UDP ones for HTTP/3, whose connection to a real server is
// TCP all the same).
func newClientID(remote, local net.Addr, cs *tls.ConnectionState) *clientID {
	return &clientID{src: tcpAddr(remote), dst: tcpAddr(local), tls: cs}
}

func tcpAddr(a net.Addr) *net.TCPAddr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a
	case *net.UDPAddr:
		return &net.TCPAddr{IP: a.IP, Port: a.Port, Zone: a.Zone}
	}
	return nil
}

// sendProxyVersion is the PROXY protocol version of real_server.send_proxy:
// 0 for none.
func sendProxyVersion(s string) byte {
	switch s {
	case config.SendProxyV1:
		return 1
	case config.SendProxyV2:
		return 2
	}
	return 0
}

// sendProxyName is the send_proxy value of a version.
func sendProxyName(v byte) string {
	switch v {
	case 1:
		return config.SendProxyV1
	case 2:
		return config.SendProxyV2
	}
	return ""
}

// private reports whether the real server's connections carry one client's
// identity (a PROXY header, or the client's address as their source) and so
// must never serve another client.
func (rs *realServer) private() bool {
	// The fallback is reached from the balancer's own address: it is
	// often on the balancer itself, where replies to a client's address
	// would not come back through TPROXY.
	return !rs.fallback && (rs.sendProxy != 0 || rs.svc.config().Transparent)
}

// proxyHeader returns the PROXY header of version (1 or 2) that announces
// cl: source the client, destination the VIP. A v2 header carries, when TLS
// was terminated, the TLVs of proxy-protocol.txt §2.2: PP2_TYPE_ALPN,
// PP2_TYPE_AUTHORITY (the SNI) and PP2_TYPE_SSL. Addresses of an unknown
// kind give "PROXY UNKNOWN" (v1) or a v2 LOCAL header: the real server then
// keeps the connection's own addresses.
func proxyHeader(version byte, cl *clientID) ([]byte, error) {
	var src, dst net.Addr
	if cl.src != nil && cl.dst != nil {
		src, dst = unmapped(cl.src), unmapped(cl.dst)
	}
	h := proxyproto.HeaderProxyFromAddrs(version, src, dst)
	if version == 2 && cl.tls != nil {
		if err := h.SetTLVs(tlsTLVs(cl.tls)); err != nil {
			return nil, fmt.Errorf("PROXY header: %w", err)
		}
	}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("PROXY header: %w", err)
	}
	return b, nil
}

// unmapped returns a with an IPv4-mapped IPv6 address (a client of a
// dual-stack listener) as plain IPv4, so that the header says TCP4 when
// both ends are IPv4.
func unmapped(a *net.TCPAddr) *net.TCPAddr {
	if ip4 := a.IP.To4(); ip4 != nil && len(a.IP) != net.IPv4len {
		return &net.TCPAddr{IP: ip4, Port: a.Port}
	}
	return a
}

// tlsTLVs describes a terminated TLS connection as PROXY v2 TLVs
// (proxy-protocol.txt §2.2.1, §2.2.2, §2.2.5).
func tlsTLVs(cs *tls.ConnectionState) []proxyproto.TLV {
	var tlvs []proxyproto.TLV
	if cs.NegotiatedProtocol != "" {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_ALPN, Value: []byte(cs.NegotiatedProtocol)})
	}
	if cs.ServerName != "" {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(cs.ServerName)})
	}
	ssl := tlvparse.PP2SSL{Client: tlvparse.PP2_BITFIELD_CLIENT_SSL, Verify: 1}
	ssl.TLV = append(ssl.TLV, proxyproto.TLV{Type: proxyproto.PP2_SUBTYPE_SSL_VERSION, Value: []byte(tlsVersionName(cs.Version))})
	if len(cs.PeerCertificates) > 0 {
		// §2.2.5: CERT_SESS, a certificate was presented in the TLS
		// session; CERT_CONN, on this very connection (not resumed).
		ssl.Client |= tlvparse.PP2_BITFIELD_CLIENT_CERT_SESS
		if !cs.DidResume {
			ssl.Client |= tlvparse.PP2_BITFIELD_CLIENT_CERT_CONN
		}
		// verify is zero only for a certificate presented and verified
		// (client_auth "require" or "verify_if_given" did the checking).
		if len(cs.VerifiedChains) > 0 {
			ssl.Verify = 0
			if cn := cs.PeerCertificates[0].Subject.CommonName; cn != "" {
				ssl.TLV = append(ssl.TLV, proxyproto.TLV{Type: proxyproto.PP2_SUBTYPE_SSL_CN, Value: []byte(cn)})
			}
		}
	}
	// The cipher by its IANA name (Go's), e.g. TLS_AES_128_GCM_SHA256.
	ssl.TLV = append(ssl.TLV, proxyproto.TLV{Type: proxyproto.PP2_SUBTYPE_SSL_CIPHER, Value: []byte(tls.CipherSuiteName(cs.CipherSuite))})
	if t, err := ssl.Marshal(); err == nil {
		tlvs = append(tlvs, t)
	}
	return tlvs
}

// tlsVersionName names a TLS version as HAProxy's ssl_fc_protocol and
// OpenSSL do ("TLSv1.3"), for PP2_SUBTYPE_SSL_VERSION.
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return "0x" + strconv.FormatUint(uint64(v), 16)
}

// writeProxyHeader sends the PROXY header of version for cl first on c, a
// new connection to the real server, before anything else (TLS included),
// by deadline.
func writeProxyHeader(c net.Conn, version byte, cl *clientID, deadline time.Time) error {
	b, err := proxyHeader(version, cl)
	if err != nil {
		return err
	}
	c.SetWriteDeadline(deadline)
	_, err = c.Write(b)
	c.SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("sending the PROXY header: %w", err)
	}
	return nil
}

// clientOf describes the HTTP/1.1 client for its private connections.
func (cc *clientConn) clientOf() *clientID {
	if cc.ident == nil {
		var cs *tls.ConnectionState
		if cc.tls != nil {
			st := cc.tls.ConnectionState()
			cs = &st
		}
		cc.ident = newClientID(cc.remote, cc.local, cs)
	}
	return cc.ident
}

// takeOwn returns the client's idle private connection to rs, or nil. It is
// checked as rs.get checks a pooled one.
func (cc *clientConn) takeOwn(rs *realServer, check bool) *backendConn {
	for i, bc := range cc.own {
		if bc.rs != rs {
			continue
		}
		last := len(cc.own) - 1
		copy(cc.own[i:], cc.own[i+1:])
		cc.own[last] = nil
		cc.own = cc.own[:last]
		if (!check && time.Since(bc.idleSince) < staleCheckAfter) || bc.alive() {
			return bc
		}
		bc.close()
		return nil
	}
	return nil
}

// keepOwn keeps a private connection whose exchange ended cleanly for the
// client's next request, as rs.put pools a shared one.
func (cc *clientConn) keepOwn(bc *backendConn, now time.Time) {
	if len(bc.in.buffered()) > 0 || bc.rs.isRetired() {
		bc.close()
		return
	}
	bc.in.release()
	bc.idleSince = now
	cc.own = append(cc.own, bc)
}

// closeOwn closes the client's private connections: it is leaving.
func (cc *clientConn) closeOwn() {
	for i, bc := range cc.own {
		bc.close()
		cc.own[i] = nil
	}
	cc.own = cc.own[:0]
}

func (rs *realServer) isRetired() bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.retired
}

// transportFor returns the transport for an exchange of the connection with
// rs: the real server's shared one, or, when rs's connections carry one
// client's identity, one private to this connection, made on first use and
// closed when the connection ends (endPrivate).
func (h *handlerConn) transportFor(rs *realServer, vs *config.VirtualService) *http.Transport {
	if !rs.private() {
		return rs.transport(vs)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.private[rs]
	if t != nil && t.headerTimeout == vs.Timeouts.Server {
		return t.Transport
	}
	if t != nil {
		// A reload changed timeouts.server: as rs.transport does, a new
		// one; the old one's requests in flight finish.
		t.CloseIdleConnections()
		h.spent = append(h.spent, t)
	}
	if h.private == nil {
		h.private = make(map[*realServer]*transport)
	}
	t = rs.newTransport(vs, h.ident)
	h.private[rs] = t
	return t.Transport
}

// endPrivate closes the connection's private transports: the client left.
func (h *handlerConn) endPrivate() {
	h.mu.Lock()
	ts := h.spent
	for _, t := range h.private {
		ts = append(ts, t)
	}
	h.private, h.spent = nil, nil
	h.mu.Unlock()
	for _, t := range ts {
		t.CloseIdleConnections()
		t.closeAll()
	}
}

// tcpClient describes tcp mode's client c for a connection to rs, nil when
// rs's connections need not know it. The PROXY header goes first, before
// the bytes read for inspection (an RDP Connection Request).
func tcpClient(c net.Conn, rs *realServer) *clientID {
	if !rs.private() {
		return nil
	}
	var cs *tls.ConnectionState
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		cs = &st
	}
	return newClientID(c.RemoteAddr(), c.LocalAddr(), cs)
}
