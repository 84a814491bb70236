package tlsterm

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"strings"
)

// Client certificate verification results, as nginx's $ssl_client_verify.
const (
	VerifySuccess = "SUCCESS" // a certificate was sent and verified against client_ca
	VerifyNone    = "NONE"    // no certificate was sent
	// VerifyFailed: a certificate was sent but not verified. A config from
	// ServerConfig never lets such a handshake through; a config that
	// requests certificates without verifying them would.
	VerifyFailed = "FAILED"
)

// ClientCertFields describes the client's certificate, for request headers
// passed to the real server:
//   - subject and issuer: distinguished names as RFC 4514 strings
//     ("CN=alice,O=Example"), with every byte that is not printable ASCII
//     escaped as \XX (RFC 4514 §2.4), so they are safe header values;
//   - serial: the serial number in upper-case hex, an even number of digits
//     (as nginx's $ssl_client_serial);
//   - fingerprint: the SHA-256 of the certificate's DER, lower-case hex;
//   - verify: VerifySuccess, VerifyNone (all else empty) or VerifyFailed.
//
// It allocates: call it once per connection, not per request.
func ClientCertFields(cs *tls.ConnectionState) (subject, issuer, serial, fingerprint, verify string) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return "", "", "", "", VerifyNone
	}
	c := cs.PeerCertificates[0]
	verify = VerifyFailed
	if len(cs.VerifiedChains) > 0 {
		verify = VerifySuccess
	}
	sum := sha256.Sum256(c.Raw)
	return dn(c.Subject), dn(c.Issuer), serialHex(c.SerialNumber), hex.EncodeToString(sum[:]), verify
}

// dn renders a distinguished name with non-printable and non-ASCII bytes
// escaped, which pkix leaves as they are.
func dn(n pkix.Name) string {
	s := n.String()
	if !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r >= 0x7f }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < ' ' || c >= 0x7f:
			const digits = "0123456789ABCDEF"
			b.WriteByte('\\')
			b.WriteByte(digits[c>>4])
			b.WriteByte(digits[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// serialHex renders a serial number as upper-case hex digit pairs.
func serialHex(n *big.Int) string {
	if n == nil {
		return ""
	}
	s := strings.ToUpper(new(big.Int).Abs(n).Text(16))
	if len(s)%2 == 1 {
		s = "0" + s
	}
	if n.Sign() < 0 { // only parsed with GODEBUG x509negativeserial=1
		s = "-" + s
	}
	return s
}
