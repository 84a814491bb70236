package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Accepted values of the TLS keys.
var (
	tlsVersions   = []string{"1.2", "1.3"}
	alpnProtocols = []string{ProtoHTTP1, ProtoH2}
	clientAuths   = []string{ClientAuthNone, ClientAuthRequest, ClientAuthRequire}
	protocols     = []string{ProtoHTTP1, ProtoH2}
)

// timeFormat shows certificate validity dates in problem messages.
const timeFormat = "2006-01-02 15:04:05 UTC"

// tls checks a virtual service's [virtual_service.tls], if the file has
// one. i is the service's index and listens holds the listen addresses so
// far (this service's included); it is returned with redirect_http added,
// so that it conflicts with what follows, the admin address included.
func (v *validator) tls(p path, i int, vs *VirtualService, listens []listenAddr) []listenAddr {
	switch {
	case !v.inFile(p):
		return listens // off, with valid defaults
	case v.seen[p.indexed()]:
		// Not a table ("tls = true", as for a real server): reported as
		// such, and nothing more is said of keys it could not hold.
		return listens
	}
	t := &vs.TLS
	tcp := vs.Mode == ModeTCP
	if tcp && (vs.Persistence.Method == PersistRDPCookie || vs.Scheduler == schedRDPCookie) {
		// RDP sends its X.224 Connection Request in clear and upgrades
		// to TLS inside the protocol (MS-RDPBCGR): a TLS listener would
		// see no RDP client, and hide the cookie from inspection.
		v.add(p, "cannot be combined with rdp_cookie: RDP starts in clear and negotiates its own TLS; leave [virtual_service.tls] out")
	}

	cp := p.with("certificates")
	if len(t.Certificates) == 0 {
		v.add(cp, `required when [virtual_service.tls] is present: one or more { cert = "site.pem", key = "site.key" }`)
	}
	for j, c := range t.Certificates {
		v.certificate(v.pathOf(c, cp.elem(j, func() string { return "" })), c)
	}

	v.oneOf(p.with("min_version"), t.MinVersion, tlsVersions)
	switch ap := p.with("alpn"); {
	case tcp && v.inFile(ap):
		v.add(ap, "used only in http mode: a tcp service passes the decrypted bytes on and offers no ALPN")
	case !tcp:
		v.alpn(ap, t.ALPN)
	}
	if t.HTTP3 && tcp {
		// HTTP/3 is HTTP over QUIC: there is no byte stream to hand a
		// tcp service's real servers.
		v.add(p.with("http3"), "used only in http mode: HTTP/3 carries HTTP requests, which a tcp service does not read; leave http3 out")
	}

	ap, ca := p.with("client_auth"), p.with("client_ca")
	v.oneOf(ap, t.ClientAuth, clientAuths)
	verifies := t.ClientAuth == ClientAuthRequest || t.ClientAuth == ClientAuthRequire
	switch {
	case verifies && t.ClientCA == "":
		v.add(ca, "required for client_auth %s: a PEM file of the CAs that client certificates must chain to", t.ClientAuth)
	case t.ClientCA != "" && t.ClientAuth == ClientAuthNone:
		v.add(ca, "used only with client_auth request or require")
	case t.ClientCA != "":
		if _, err := loadCAs(t.ClientCA); err != nil {
			v.add(ca, "cannot load the CA certificates: %v", err)
		}
	}

	// An empty redirect_http is off, as when absent.
	if rp := p.with("redirect_http"); t.RedirectHTTP != "" {
		addr, port, msg := parseHostPort(t.RedirectHTTP, true)
		if msg != "" {
			v.add(rp, "invalid address %q: %s", t.RedirectHTTP, msg)
			return listens
		}
		la := listenAddr{text: t.RedirectHTTP, addr: addr, port: port, line: v.line(rp), vs: vs, vsIndex: i, key: "tls.redirect_http"}
		if msg := la.conflict(listens); msg != "" {
			v.add(rp, "%s", msg)
		}
		listens = append(listens, la)
	}
	return listens
}

// certificate checks one entry of tls.certificates. Problems with the pair
// go to cert, at the entry's line.
func (v *validator) certificate(p path, c *Certificate) {
	cp, kp := p.with("cert"), p.with("key")
	if c.Cert == "" {
		v.add(cp, "required: the PEM file of the certificate chain")
	}
	if c.Key == "" {
		v.add(kp, "required: the PEM file of the certificate's private key")
	}
	if c.Cert == "" || c.Key == "" {
		return
	}
	pair, err := loadKeyPair(c.Cert, c.Key)
	if err != nil {
		v.add(cp, "cannot load the certificate and key: %v", err)
		return
	}
	if msg := checkValidity(c.Cert, pair, time.Now()); msg != "" {
		v.add(cp, "%s", msg)
	}
}

// checkValidity checks that the leaf of a loaded chain is valid at now: a
// client would refuse an expired or not yet valid certificate in every
// handshake. The message says what is wrong, if anything.
func checkValidity(file string, pair tls.Certificate, now time.Time) string {
	leaf := pair.Leaf // set by tls.LoadX509KeyPair since Go 1.23
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Sprintf("cannot parse the certificate: %v", err)
		}
	}
	switch {
	case now.After(leaf.NotAfter):
		return fmt.Sprintf("%q expired on %s", file, leaf.NotAfter.UTC().Format(timeFormat))
	case now.Before(leaf.NotBefore):
		return fmt.Sprintf("%q is not valid until %s", file, leaf.NotBefore.UTC().Format(timeFormat))
	}
	return ""
}

// alpn checks tls.alpn: known protocols, each once, and at least one (an
// empty list would offer nothing a client could pick).
func (v *validator) alpn(p path, list []string) {
	if len(list) == 0 {
		v.add(p, `must list at least one protocol: ["h2", "http/1.1"]`)
	}
	first := map[string]int{} // protocol -> line of its first entry
	for j, proto := range list {
		ep := p.elem(j, nil)
		if line, ok := first[proto]; ok {
			v.add(ep, "%q is listed twice (also at line %d)", proto, line)
			continue
		}
		first[proto] = v.line(ep)
		v.oneOf(ep, proto, alpnProtocols)
	}
}

// realServerTLS checks a real server's tls, tls_server_name, tls_verify,
// tls_ca and protocol keys.
func (v *validator) realServerTLS(p path, vs *VirtualService, rs *RealServer) {
	// Without tls these keys would do nothing; whoever sets them most
	// likely expects an encrypted connection. An empty string asks for
	// nothing and is let through; tls_verify counts when present at all.
	np, vp, cp := p.with("tls_server_name"), p.with("tls_verify"), p.with("tls_ca")
	if !rs.TLS {
		const msg = "used only with tls = true"
		if rs.TLSServerName != "" {
			v.add(np, msg)
		}
		// tls_verify = true (the default, as in the example) with
		// tls = false is harmless; false suggests a misunderstanding.
		if v.inFile(vp) && !rs.TLSVerify {
			v.add(vp, msg)
		}
		if rs.TLSCA != "" {
			v.add(cp, msg)
		}
	}
	if rs.TLSServerName != "" {
		if msg := checkServerName(rs.TLSServerName); msg != "" {
			v.add(np, "%s", msg)
		}
	}
	if rs.TLSCA != "" {
		if rs.TLS && !rs.TLSVerify {
			v.add(cp, "used only with tls_verify = true: nothing is verified")
		} else if _, err := loadCAs(rs.TLSCA); err != nil {
			v.add(cp, "cannot load the CA certificates: %v", err)
		}
	}

	pp := p.with("protocol")
	switch {
	case vs.Mode == ModeTCP && rs.Protocol == ProtoH2:
		// Said apart: whoever wants gRPC through a tcp service may think
		// the proxy must know the protocol; it forwards the bytes, HTTP/2
		// or not, and needs nothing.
		v.add(pp, `"h2" is used only in http mode: a tcp service forwards the bytes as they are, HTTP/2 included; leave protocol out`)
	case vs.Mode == ModeTCP && v.inFile(pp):
		v.add(pp, "used only in http mode: a tcp service forwards bytes as they are")
	default:
		v.oneOf(pp, rs.Protocol, protocols)
	}
}

// checkServerName checks a real server's tls_server_name: a DNS name made of
// labels of letters, digits, '-' (RFC 1123 §2.1) and '_' (which Go's
// certificate verification accepts too), or an IP address without a zone.
// The message says what is wrong, if anything.
func checkServerName(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return fmt.Sprintf("%q: an IP address with a zone cannot be verified; leave out %q", s, "%"+a.Zone())
		}
		return ""
	}
	bad := fmt.Sprintf("%q is not a host name or IP address", s)
	switch {
	case strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"):
		return bad + ": write an IPv6 address without brackets"
	case strings.Contains(s, ":"):
		return bad + ": give the name without a port"
	case len(s) > 253:
		return bad + ": longer than 253 characters"
	}
	for _, label := range strings.Split(s, ".") {
		switch {
		case label == "":
			return bad + ": it has an empty label"
		case len(label) > 63:
			return bad + fmt.Sprintf(": label %q is longer than 63 characters", label)
		case label[0] == '-' || label[len(label)-1] == '-':
			return bad + fmt.Sprintf(": label %q starts or ends with '-'", label)
		case strings.ContainsFunc(label, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}):
			return bad + ": use letters, digits, '-' and '.' (write names in punycode)"
		}
	}
	return ""
}

// regularFile returns an error unless name is a regular file. Every file a
// configuration names is read when it is validated and again on reload; a
// FIFO or /dev/zero given by mistake would hang `fulcrum check` or a
// reload (opening a FIFO blocks until a writer comes), so they are refused
// before they are opened.
func regularFile(name string) error {
	fi, err := os.Stat(name)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", name)
	}
	return nil
}

// loadKeyPair loads a PEM certificate chain and its key as the listeners
// will (admin tls_cert and tls_key, a virtual service's certificates).
func loadKeyPair(cert, key string) (tls.Certificate, error) {
	for _, f := range []string{cert, key} {
		if err := regularFile(f); err != nil {
			return tls.Certificate{}, err
		}
	}
	return tls.LoadX509KeyPair(cert, key)
}

// loadCAs loads a PEM file of CA certificates (client_ca, tls_ca). It must
// hold at least one, and each must parse: unlike CertPool.AppendCertsFromPEM,
// which skips a bad one silently, it says which is wrong.
func loadCAs(name string) (*x509.CertPool, error) {
	if err := regularFile(name); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate #%d: %w", name, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", name)
	}
	return pool, nil
}
