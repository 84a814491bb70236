package config

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

func TestTransparency(t *testing.T) {
	tests := []parseTest{
		{
			name: "valid",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:80"
accept_proxy = true
trusted_proxies = ["10.0.0.0/8", "192.0.2.7", "::ffff:172.16.0.0/108", "2001:db8::/32", "::1"]
forwarded_header = true
transparent = true
[[virtual_service.real_server]]
address = "10.0.0.1:80"
send_proxy = "v1"
[[virtual_service.real_server]]
address = "10.0.0.2:80"
send_proxy = "v2"
`,
			check: func(t *testing.T, c *Config) {
				vs := c.VirtualServices[0]
				want := []netip.Prefix{
					netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
					netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("2001:db8::/32"),
					netip.MustParsePrefix("::1/128"),
				}
				if !slices.Equal(vs.Trusted, want) {
					t.Errorf("Trusted = %v, want %v", vs.Trusted, want)
				}
				if !vs.AcceptProxy || !vs.ForwardedHeader || !vs.Transparent || vs.RealServers[1].SendProxy != SendProxyV2 {
					t.Errorf("keys not decoded: %+v", vs)
				}
			},
		},
		{
			name: "defaults",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
`,
			check: func(t *testing.T, c *Config) {
				vs := c.VirtualServices[0]
				if vs.AcceptProxy || vs.ForwardedHeader || vs.Transparent || vs.Trusted != nil || vs.RealServers[0].SendProxy != "" {
					t.Errorf("defaults: %+v", vs)
				}
			},
		},
		{
			name: "bad",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:80"
accept_proxy = true
trusted_proxies = ["10.0.0.1/8", "lb.example.com", "10.0.0.0/33", "fe80::1%eth0", "::ffff:10.0.0.0/90"]
transparent = true
[[virtual_service.real_server]]
address = "10.0.0.1:80"
send_proxy = "v3"
[[virtual_service.real_server]]
address = "10.0.0.2:80"
protocol = "h2"
send_proxy = "v2"

[[virtual_service]]
name = "db"
listen = "127.0.0.1:5432"
mode = "tcp"
accept_proxy = true
forwarded_header = true
trusted_proxies = []
real_server = [{ address = "10.0.0.3:5432", send_proxy = "v1" }]
`,
			want: []string{
				`lb.toml:5: virtual_service.trusted_proxies: "10.0.0.1/8" has bits set past the prefix length: did you mean "10.0.0.0/8"? (virtual_service "web")`,
				`lb.toml:5: virtual_service.trusted_proxies: not an IP address or CIDR prefix: "lb.example.com" (e.g. "10.0.0.0/8" or "192.0.2.7") (virtual_service "web")`,
				`lb.toml:5: virtual_service.trusted_proxies: not an IP address or CIDR prefix: "10.0.0.0/33" (e.g. "10.0.0.0/8" or "192.0.2.7") (virtual_service "web")`,
				`lb.toml:5: virtual_service.trusted_proxies: not an IP address or CIDR prefix: "fe80::1%eth0" (e.g. "10.0.0.0/8" or "192.0.2.7") (virtual_service "web")`,
				`lb.toml:5: virtual_service.trusted_proxies: "::ffff:10.0.0.0/90" has bits set past the prefix length: did you mean "::ffc0:0:0/90"? (virtual_service "web")`,
				`lb.toml:9: virtual_service.real_server.send_proxy: must be "v1" or "v2" (or "" for none), got "v3" (virtual_service "web", real_server "10.0.0.1:80")`,
				`lb.toml:12: virtual_service.real_server.protocol: "h2" cannot be used with transparent = true: an HTTP/2 connection to the real server is shared by many clients (virtual_service "web", real_server "10.0.0.2:80")`,
				`lb.toml:13: virtual_service.real_server.send_proxy: not with protocol "h2": an HTTP/2 connection to the real server is shared by many clients (virtual_service "web", real_server "10.0.0.2:80")`,
				`lb.toml:19: virtual_service.accept_proxy: needs trusted_proxies: the addresses that may send a PROXY header (e.g. ["10.0.0.0/8"]) (virtual_service "db")`,
				`lb.toml:20: virtual_service.forwarded_header: used only in http mode: a tcp service forwards bytes as they are (virtual_service "db")`,
			},
		},
	}
	runParseTests(t, tests)
}

// TestAcceptProxyHTTP3 checks that accept_proxy refuses HTTP/3, whose QUIC
// clients reach the UDP port with no PROXY header.
func TestAcceptProxyHTTP3(t *testing.T) {
	f := newTLSFiles(t)
	pair := fmt.Sprintf("{ cert = %q, key = %q }", f.cert, f.key)
	runParseTests(t, []parseTest{{
		name: "http3 with accept_proxy",
		input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:443"
accept_proxy = true
trusted_proxies = ["10.0.0.0/8"]
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.tls]
certificates = [` + pair + `]
http3 = true
`,
		want: []string{
			`lb.toml:9: virtual_service.tls.http3: cannot be used with accept_proxy = true: HTTP/3 clients reach the UDP port directly, with no PROXY header (virtual_service "web")`,
		},
	}})
}
