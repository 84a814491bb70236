package tlsterm

import (
	"crypto/tls"
	"fmt"
	"net"
	"slices"

	"github.com/fulcrumlb/fulcrum/config"
)

// clientSessions is how many TLS sessions to a real server are kept for
// resumption: a few per pooled connection's worth is plenty, as a real
// server has one name.
const clientSessions = 64

// ClientConfig builds the tls.Config for re-encrypting to a real server:
//   - ServerName (sent in SNI and verified) is tls_server_name, else the
//     host of the address; Go sends no SNI for an IP and verifies it against
//     the certificate's IP addresses;
//   - the certificate is verified against tls_ca if given (read now), else
//     the system roots; tls_verify = false skips verification, leaving the
//     link encrypted but open to an active attacker on the path;
//   - TLS 1.2 or later, offering alpn (the protocol the proxy will speak:
//     "http/1.1", "h2", or none for the bytes of a tcp service);
//   - sessions are cached, so new connections to the real server resume.
func ClientConfig(rs *config.RealServer, alpn []string) (*tls.Config, error) {
	name := rs.TLSServerName
	if name == "" {
		host, _, err := net.SplitHostPort(rs.Address)
		if err != nil {
			return nil, fmt.Errorf("address: %w", err)
		}
		name = host
	}
	cfg := &tls.Config{
		ServerName:         name,
		InsecureSkipVerify: !rs.TLSVerify,
		MinVersion:         tls.VersionTLS12,
		NextProtos:         slices.Clone(alpn),
		ClientSessionCache: tls.NewLRUClientSessionCache(clientSessions),
	}
	// A given CA file is read even with verification off, so that a wrong
	// path is reported rather than lurking until verification is turned on.
	if rs.TLSCA != "" {
		pool, err := LoadCAs(rs.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("tls_ca: %w", err)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
