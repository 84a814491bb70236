package tlsterm

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/fulcrumlb/fulcrum/config"
)

// defaultALPN is offered when tls.alpn is empty.
var defaultALPN = []string{"http/1.1"}

// cipherSuites are the TLS 1.2 suites served: ECDHE key exchange (forward
// secrecy) with an AEAD cipher only, as in Mozilla's "intermediate"
// profile. CBC suites (Lucky13 and its kin, RFC 7457 §2.8) and static RSA
// key exchange (no forward secrecy; ROBOT) are left out. HTTP/2 needs one of
// the AES-128-GCM ones (RFC 7540 §9.2.2). TLS 1.3 suites are all AEAD and
// are not configurable in Go. Go orders the suites itself, by the hardware.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Client authentication modes (tls.client_auth).
const (
	clientAuthNone    = "none"
	clientAuthRequest = "request"
	clientAuthRequire = "require"
)

// ServerConfig builds the tls.Config of a virtual service from its [tls]
// table:
//   - the certificate is picked from store by SNI, per handshake, so a Load
//     applies without a new config;
//   - min_version "1.2" (the default) or "1.3";
//   - TLS 1.2 with the ECDHE AEAD suites of cipherSuites only;
//   - Go's default key exchanges (X25519MLKEM768 and the other post-quantum
//     hybrids, X25519, P-256, P-384, P-521), which follow Go's releases;
//   - alpn offered in order, ["http/1.1"] if empty;
//   - client_auth none, request (a certificate is verified against client_ca
//     if the client sends one) or require (the client must send one that
//     verifies);
//   - no renegotiation: Go's server never renegotiates (RFC 5746 attacks,
//     and the client-initiated renegotiation DoS, do not apply);
//   - session tickets (RFC 5077, RFC 8446 §4.6.1) whose keys r rotates; with
//     a nil r, Go's own rotation (a new key a day).
//
// client_ca is read now: build a new config to re-read it. r keeps only a
// weak reference to the config, so replaced configs need no unregistering.
func ServerConfig(c *config.TLS, store *Store, r *Rotator) (*tls.Config, error) {
	if store == nil {
		return nil, errors.New("tlsterm: ServerConfig needs a Store")
	}
	minVersion, err := parseVersion(c.MinVersion)
	if err != nil {
		return nil, err
	}
	alpn := c.ALPN
	if len(alpn) == 0 {
		alpn = defaultALPN
	}
	cfg := &tls.Config{
		GetCertificate: store.GetCertificate,
		MinVersion:     minVersion,
		CipherSuites:   append([]uint16(nil), cipherSuites...),
		NextProtos:     append([]string(nil), alpn...),
	}
	switch c.ClientAuth {
	case "", clientAuthNone:
	case clientAuthRequest, clientAuthRequire:
		if c.ClientCA == "" {
			return nil, fmt.Errorf("client_auth %q needs client_ca", c.ClientAuth)
		}
		pool, err := LoadCAs(c.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("client_ca: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if c.ClientAuth == clientAuthRequire {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	default:
		return nil, fmt.Errorf("client_auth: %q is not none, request or require", c.ClientAuth)
	}
	if r != nil {
		r.Register(cfg)
	}
	return cfg, nil
}

// parseVersion maps tls.min_version to a protocol version.
func parseVersion(v string) (uint16, error) {
	switch v {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("min_version: %q is not 1.2 or 1.3", v)
}
