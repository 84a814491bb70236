package healthcheck

import (
	"context"

	"github.com/fulcrumlb/fulcrum/config"
)

// PROXY protocol headers of a check (HAProxy's proxy-protocol.txt): a real
// server that expects one first on every connection (HAProxy's accept-proxy,
// nginx's proxy_protocol) refuses a connection without it, so a check of a
// real server with send_proxy sends one too, saying that the connection is
// the proxy's own and not a client's, as HAProxy's check-send-proxy does.
var (
	// v1, §2.1: "PROXY UNKNOWN": the receiver keeps the connection's own
	// addresses.
	proxyV1Unknown = []byte("PROXY UNKNOWN\r\n")
	// v2, §2.2: the signature, version 2 command LOCAL (0x20), family
	// UNSPEC (0x00), no address bytes (length 0).
	proxyV2Local = []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
)

// proxyHeaderKey is the context key of the header a check sends first.
type proxyHeaderKey struct{}

// sendProxyProbe is a Probe whose connections start with a PROXY header.
type sendProxyProbe struct {
	Probe
	header []byte
}

// SendProxy returns the probe that checks a real server with send_proxy
// version ("v1" or "v2"): p, whose connections start with a PROXY header
// (v1 UNKNOWN, v2 LOCAL). Any other version returns p. Agent checks, on
// their own port, send none.
func SendProxy(p Probe, version string) Probe {
	if p == nil {
		return nil
	}
	switch version {
	case config.SendProxyV1:
		return sendProxyProbe{Probe: p, header: proxyV1Unknown}
	case config.SendProxyV2:
		return sendProxyProbe{Probe: p, header: proxyV2Local}
	}
	return p
}

// Check runs the wrapped check, whose dial sends the header.
func (p sendProxyProbe) Check(ctx context.Context, addr string) Result {
	return p.Probe.Check(context.WithValue(ctx, proxyHeaderKey{}, p.header), addr)
}
