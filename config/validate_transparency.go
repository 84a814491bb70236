package config

import (
	"net/netip"
	"slices"
	"strings"
)

// Accepted values of real_server.send_proxy ("" is off).
const (
	SendProxyV1 = "v1"
	SendProxyV2 = "v2"
)

var sendProxyVersions = []string{"", SendProxyV1, SendProxyV2}

// transparency checks the keys that carry the client's address: accept_proxy,
// trusted_proxies, forwarded_header and transparent, and fills vs.Trusted.
func (v *validator) transparency(p path, vs *VirtualService) {
	tp := p.with("trusted_proxies")
	vs.Trusted = vs.Trusted[:0]
	for j, s := range vs.TrustedProxies {
		pfx, msg := parseTrusted(s)
		if msg != "" {
			v.add(tp.elem(j, nil), "%s", msg)
			continue
		}
		vs.Trusted = append(vs.Trusted, pfx)
	}
	if vs.AcceptProxy && len(vs.TrustedProxies) == 0 {
		v.add(p.with("accept_proxy"), `needs trusted_proxies: the addresses that may send a PROXY header (e.g. ["10.0.0.0/8"])`)
	}
	if vs.AcceptProxy && vs.TLS.HTTP3 {
		// QUIC runs over UDP straight from the client: no PROXY header
		// precedes it, so its clients could not be told from the proxy's.
		v.add(p.with("tls").with("http3"), "cannot be used with accept_proxy = true: HTTP/3 clients reach the UDP port directly, with no PROXY header")
	}
	if vs.ForwardedHeader && vs.Mode == ModeTCP {
		v.add(p.with("forwarded_header"), "used only in http mode: a tcp service forwards bytes as they are")
	}
}

// realServerTransparency checks a real server's send_proxy and what
// transparent allows it.
func (v *validator) realServerTransparency(p path, vs *VirtualService, rs *RealServer) {
	sp := p.with("send_proxy")
	if !slices.Contains(sendProxyVersions, rs.SendProxy) {
		v.add(sp, `must be "v1" or "v2" (or "" for none), got %q`, rs.SendProxy)
	}
	if vs.Mode == ModeTCP || rs.Protocol != ProtoH2 {
		return
	}
	// One HTTP/2 connection to the real server carries the requests of
	// many clients: it cannot start with one client's header or come
	// from one client's address.
	if rs.SendProxy != "" {
		v.add(sp, `not with protocol "h2": an HTTP/2 connection to the real server is shared by many clients`)
	}
	if vs.Transparent {
		v.add(p.with("protocol"), `"h2" cannot be used with transparent = true: an HTTP/2 connection to the real server is shared by many clients`)
	}
}

// parseTrusted parses one trusted_proxies entry: an IP address or a CIDR
// prefix without host bits.
func parseTrusted(s string) (netip.Prefix, string) {
	if !strings.Contains(s, "/") {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return netip.Prefix{}, `not an IP address or CIDR prefix: "` + s + `" (e.g. "10.0.0.0/8" or "192.0.2.7")`
		}
		ip = ip.Unmap()
		return netip.PrefixFrom(ip, ip.BitLen()), ""
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, `not an IP address or CIDR prefix: "` + s + `" (e.g. "10.0.0.0/8" or "192.0.2.7")`
	}
	if m := pfx.Masked(); m != pfx {
		return netip.Prefix{}, `"` + s + `" has bits set past the prefix length: did you mean "` + m.String() + `"?`
	}
	if pfx.Addr().Is4In6() {
		// ::ffff:10.0.0.0/104 is 10.0.0.0/8: peers are compared unmapped.
		// (A shorter prefix would have the ffff bits past its length.)
		return netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96), ""
	}
	return pfx, ""
}
