// Package tlsterm terminates TLS for virtual services: a certificate store
// that picks a certificate by SNI and is reloaded without dropping a
// connection, the server and client tls.Configs with Fulcrum's defaults,
// session ticket key rotation, and the client-certificate fields passed on to
// real servers. It uses the standard library only.
package tlsterm

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// ExpiryWarning is how close to its expiry a certificate is reported by
// Load and flagged Expiring by Info: two weeks leave time to renew one by
// hand.
const ExpiryWarning = 14 * 24 * time.Hour

const day = 24 * time.Hour

// Store holds a virtual service's certificates and picks one per connection
// by SNI. Load replaces the whole set at once; GetCertificate reads it
// without a lock, so the two may run concurrently.
type Store struct {
	set atomic.Pointer[certSet] // nil until the first successful Load
	now func() time.Time        // time.Now; tests move it
}

// certSet is one loaded set of certificates, never changed once published.
// The maps hold, for each name, the certificates valid for it in
// configuration order, so that the first one the client supports can be
// picked when an ECDSA and an RSA certificate share a name.
type certSet struct {
	certs    []*loaded // configuration order; the first is the default
	exact    map[string][]*tls.Certificate
	wildcard map[string][]*tls.Certificate // "example.com" holds the certificates for "*.example.com"
	ips      map[netip.Addr][]*tls.Certificate
}

// loaded is one certificate of a set.
type loaded struct {
	file  string // the certificate file, as configured
	cert  *tls.Certificate
	names []string // DNS names (or the CN) and IP addresses, for Info
}

// CertInfo describes one loaded certificate, for the admin status.
type CertInfo struct {
	// File is the certificate file as configured.
	File string
	// Names are the leaf's DNS names (its CN when it has no subject
	// alternative names) followed by its IP addresses.
	Names []string
	// NotAfter is the end of the leaf's validity.
	NotAfter time.Time
	// DaysLeft is the whole days from now to NotAfter, negative once it
	// has passed.
	DaysLeft int
	// Expiring is true within ExpiryWarning of NotAfter, and after it.
	Expiring bool
}

// NewStore returns an empty store; GetCertificate fails until a Load
// succeeds.
func NewStore() *Store { return &Store{now: time.Now} }

// Load reads and checks every certificate: its file holds a PEM chain (leaf
// first), its key file the PEM private key (RSA or ECDSA; PKCS #1, SEC 1 or
// PKCS #8) of the leaf, and the leaf is valid now. Each problem is reported
// on a line of its own that starts with the file it concerns, and all
// certificates are checked before one is reported. On any error the store
// is left as it was, so the certificates loaded before keep serving.
//
// On success the new set replaces the old one atomically: a handshake that
// has already picked a certificate keeps it, new ones see the new set.
// Leaves that expire within ExpiryWarning are returned as warnings
// ("site.pem: certificate for www.example.com expires in 6 days
// (2026-11-29)").
func (s *Store) Load(certs []*config.Certificate) (warnings []string, err error) {
	if len(certs) == 0 {
		return nil, errors.New("no certificates given")
	}
	now := s.now()
	set := &certSet{
		exact:    make(map[string][]*tls.Certificate),
		wildcard: make(map[string][]*tls.Certificate),
		ips:      make(map[netip.Addr][]*tls.Certificate),
	}
	var errs []error
	for _, c := range certs {
		l, warn, err := loadCertificate(c, now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		warnings = append(warnings, warn...)
		set.add(l)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	s.set.Store(set)
	return warnings, nil
}

// loadCertificate reads and checks one certificate and its key.
func loadCertificate(c *config.Certificate, now time.Time) (*loaded, []string, error) {
	certPEM, err := readFile(c.Cert)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := readFile(c.Key)
	if err != nil {
		return nil, nil, err
	}
	// The leaf is parsed here rather than left to tls.X509KeyPair, so that a
	// broken certificate is not blamed on the key.
	leafDER := firstBlock(certPEM, func(typ string) bool { return typ == "CERTIFICATE" })
	if leafDER == nil {
		return nil, nil, fmt.Errorf("%s: no PEM certificate found", c.Cert)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: first certificate: %w", c.Cert, err)
	}
	if firstBlock(keyPEM, func(typ string) bool { return strings.HasSuffix(typ, "PRIVATE KEY") }) == nil {
		return nil, nil, fmt.Errorf("%s: no PEM private key found", c.Key)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	switch {
	case err != nil && strings.Contains(err.Error(), "does not match"):
		return nil, nil, fmt.Errorf("%s: the private key in %s does not match the certificate", c.Cert, c.Key)
	case err != nil:
		return nil, nil, fmt.Errorf("%s: private key %s: %w", c.Cert, c.Key, err)
	}
	pair.Leaf = leaf // spares the handshake parsing it again (X509KeyPair does too, unless GODEBUG x509keypairleaf=0)

	who := "certificate for " + describe(leaf)
	date := func(t time.Time) string { return t.UTC().Format(time.DateOnly) }
	switch {
	case now.Before(leaf.NotBefore):
		return nil, nil, fmt.Errorf("%s: %s is not valid before %s (in %s)",
			c.Cert, who, leaf.NotBefore.UTC().Format(time.RFC3339), days(leaf.NotBefore.Sub(now)))
	case now.After(leaf.NotAfter):
		return nil, nil, fmt.Errorf("%s: %s expired on %s (%s ago)",
			c.Cert, who, date(leaf.NotAfter), days(now.Sub(leaf.NotAfter)))
	}
	var warnings []string
	if left := leaf.NotAfter.Sub(now); left < ExpiryWarning {
		warnings = append(warnings, fmt.Sprintf("%s: %s expires in %s (%s)", c.Cert, who, days(left), date(leaf.NotAfter)))
	}
	if !serverAuth(leaf) {
		warnings = append(warnings, fmt.Sprintf("%s: %s is not for TLS servers: its extended key usage lacks serverAuth, so clients will refuse it", c.Cert, who))
	}
	return &loaded{file: c.Cert, cert: &pair, names: names(leaf)}, warnings, nil
}

// firstBlock returns the bytes of the first PEM block whose type is
// wanted, or nil.
func firstBlock(data []byte, wanted func(typ string) bool) []byte {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil
		}
		if wanted(b.Type) {
			return b.Bytes
		}
	}
}

// serverAuth reports whether the leaf may serve TLS (RFC 5280 §4.2.1.12):
// with no extended key usage it may serve anything.
func serverAuth(leaf *x509.Certificate) bool {
	if len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range leaf.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// dnsNames returns the names the leaf is chosen by: its DNS subject
// alternative names, lower case, or its CN when it has no subject
// alternative name at all (RFC 6125 §6.4.4).
func dnsNames(leaf *x509.Certificate) []string {
	var out []string
	for _, n := range leaf.DNSNames {
		out = append(out, normalize(n))
	}
	if len(out) == 0 && len(leaf.IPAddresses) == 0 && leaf.Subject.CommonName != "" {
		out = append(out, normalize(leaf.Subject.CommonName))
	}
	return out
}

// names lists the leaf's DNS names and IP addresses, for Info.
func names(leaf *x509.Certificate) []string {
	out := dnsNames(leaf)
	for _, ip := range leaf.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

// describe names a leaf in messages: by its first name, or its subject.
func describe(leaf *x509.Certificate) string {
	if n := names(leaf); len(n) > 0 {
		return n[0]
	}
	return fmt.Sprintf("%q", leaf.Subject.String())
}

// normalize makes a host name comparable: lower case, no trailing dot.
func normalize(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// days renders a duration in whole days, rounded down.
func days(d time.Duration) string {
	switch n := int(d / day); n {
	case 0:
		return "less than a day"
	case 1:
		return "1 day"
	default:
		return fmt.Sprintf("%d days", n)
	}
}

// add indexes a certificate under its names. A name held by several
// certificates keeps them in configuration order.
func (set *certSet) add(l *loaded) {
	set.certs = append(set.certs, l)
	for _, n := range dnsNames(l.cert.Leaf) {
		if suffix, ok := strings.CutPrefix(n, "*."); ok {
			set.wildcard[suffix] = appendOnce(set.wildcard[suffix], l.cert)
		} else {
			set.exact[n] = appendOnce(set.exact[n], l.cert)
		}
	}
	for _, ip := range l.cert.Leaf.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			a = a.Unmap()
			set.ips[a] = appendOnce(set.ips[a], l.cert)
		}
	}
}

// appendOnce appends c unless it is already last (a name listed twice).
func appendOnce(list []*tls.Certificate, c *tls.Certificate) []*tls.Certificate {
	if len(list) > 0 && list[len(list)-1] == c {
		return list
	}
	return append(list, c)
}

var errNoCertificates = errors.New("tlsterm: no certificates loaded")

// GetCertificate picks the certificate for a handshake, as
// tls.Config.GetCertificate: the one whose DNS names hold the SNI name
// (case-insensitively), else one with a wildcard "*.example.com" standing
// for exactly the first label (RFC 6125 §6.4.3), else, when the client sent
// an IP literal or no name, one whose IP addresses hold the address it
// connected to, else the first certificate. When several certificates fit
// equally (an ECDSA and an RSA one for the same name), the first the client
// supports wins.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	set := s.set.Load()
	if set == nil {
		return nil, errNoCertificates
	}
	if hello.ServerName != "" {
		name := normalize(hello.ServerName)
		if c := set.exact[name]; c != nil {
			return pick(hello, c), nil
		}
		if i := strings.IndexByte(name, '.'); i > 0 {
			if c := set.wildcard[name[i+1:]]; c != nil {
				return pick(hello, c), nil
			}
		}
		// RFC 6066 §3 forbids IP literals in SNI, but some clients send them.
		if len(set.ips) > 0 {
			if a, err := netip.ParseAddr(name); err == nil {
				if c := set.ips[a.Unmap()]; c != nil {
					return pick(hello, c), nil
				}
			}
		}
	} else if len(set.ips) > 0 && hello.Conn != nil {
		if a, ok := localIP(hello.Conn.LocalAddr()); ok {
			if c := set.ips[a]; c != nil {
				return pick(hello, c), nil
			}
		}
	}
	return set.certs[0].cert, nil
}

// pick returns the first certificate of list the client can use, or the
// first one when it can use none (the handshake then fails with the
// client's own complaint rather than ours).
func pick(hello *tls.ClientHelloInfo, list []*tls.Certificate) *tls.Certificate {
	if len(list) > 1 {
		for _, c := range list {
			if hello.SupportsCertificate(c) == nil {
				return c
			}
		}
	}
	return list[0]
}

// localIP is the IP address a connection was accepted on.
func localIP(addr net.Addr) (netip.Addr, bool) {
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	case *net.UDPAddr: // QUIC
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	case nil:
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(addr.String())
	return ap.Addr().Unmap(), err == nil
}

// Info describes the loaded certificates in configuration order, with the
// days left counted from now; nil before the first successful Load.
func (s *Store) Info() []CertInfo {
	set := s.set.Load()
	if set == nil {
		return nil
	}
	now := s.now()
	out := make([]CertInfo, 0, len(set.certs))
	for _, l := range set.certs {
		notAfter := l.cert.Leaf.NotAfter
		left := notAfter.Sub(now)
		daysLeft := int(left / day)
		if left < 0 && left%day != 0 {
			daysLeft-- // round down, not toward zero
		}
		out = append(out, CertInfo{
			File:     l.file,
			Names:    append([]string(nil), l.names...),
			NotAfter: notAfter,
			DaysLeft: daysLeft,
			Expiring: left < ExpiryWarning,
		})
	}
	return out
}
