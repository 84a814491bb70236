package config

import (
	"slices"
	"testing"
	"time"
)

func TestL4(t *testing.T) {
	tests := []parseTest{
		{
			name: "the issue's example",
			input: `[[virtual_service]]
name = "rdp-dr"
listen = "10.0.0.30:3389"
mode = "dr"
protocol = "tcp"
scheduler = "weighted_least_conn"
  [virtual_service.persistence]
  method = "source_ip"
  timeout = "2h"
  source_mask = 32
  [virtual_service.health_check]
  type = "tcp"
  [[virtual_service.real_server]]
  name = "ts1"
  address = "10.0.0.41:3389"
  weight = 1
`,
			check: func(t *testing.T, c *Config) {
				vs := c.VirtualServices[0]
				if !IsL4Mode(vs.Mode) || vs.Protocol != ProtocolTCP || vs.Persistence.Timeout != 2*time.Hour {
					t.Errorf("got %+v", vs)
				}
			},
		},
		{
			name: "protocol defaults to tcp in the L4 modes only",
			input: `[[virtual_service]]
name = "l4"
listen = "10.0.0.30:80"
mode = "tun"
real_server = [{ address = "10.0.1.1:80" }]
[[virtual_service]]
name = "l7"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.1.1:80" }]
`,
			check: func(t *testing.T, c *Config) {
				if p := c.VirtualServices[0].Protocol; p != ProtocolTCP {
					t.Errorf("tun: protocol %q, want tcp", p)
				}
				if p := c.VirtualServices[1].Protocol; p != "" {
					t.Errorf("http: protocol %q, want empty", p)
				}
			},
		},
		{
			name: "nat translates ports; IPv6 VIP; every IPVS scheduler name",
			input: `[[virtual_service]]
name = "dns"
listen = "[2001:db8::53]:53"
mode = "nat"
protocol = "udp"
scheduler = "sed"
persistence = { method = "source_ip", source_mask6 = 128 }
health_check = { type = "none" }
real_server = [{ address = "[2001:db8::1]:5353" }, { address = "[2001:db8::2]:5353", state = "maintenance" }]
[[virtual_service]]
name = "dns-tcp"
listen = "[2001:db8::53]:53"
mode = "nat"
real_server = [{ address = "[2001:db8::1]:5353" }]
`,
		},
		{
			name: "the port rule names both ports, for dr and tun but not nat",
			input: `[[virtual_service]]
name = "a"
listen = "10.0.0.30:443"
mode = "dr"
real_server = [{ address = "10.0.1.1:8443" }]
[[virtual_service]]
name = "b"
listen = "10.0.0.31:443"
mode = "tun"
real_server = [{ address = "10.0.1.1:8443" }]
[[virtual_service]]
name = "c"
listen = "10.0.0.32:443"
mode = "nat"
real_server = [{ address = "10.0.1.1:8443" }]
`,
			want: []string{
				`lb.toml:5: virtual_service.real_server.address: port 8443 differs from the VIP's port 443 (listen "10.0.0.30:443"): mode dr does not translate ports, so the real server must serve the VIP's port; use mode nat to translate (virtual_service "a", real_server "10.0.1.1:8443")`,
				`lb.toml:10: virtual_service.real_server.address: port 8443 differs from the VIP's port 443 (listen "10.0.0.31:443"): mode tun does not translate ports, so the real server must serve the VIP's port; use mode nat to translate (virtual_service "b", real_server "10.0.1.1:8443")`,
			},
		},
		{
			name: "schedulers of the userspace proxy only",
			input: `[[virtual_service]]
name = "a"
listen = "10.0.0.30:80"
mode = "dr"
scheduler = "uri_hash"
real_server = [{ address = "10.0.1.1:80" }]
[[virtual_service]]
name = "b"
listen = "10.0.0.31:80"
mode = "nat"
scheduler = "rdp_cookie"
hash_header = "X-User"
real_server = [{ address = "10.0.1.1:80" }]
`,
			want: []string{
				`lb.toml:5: virtual_service.scheduler: unknown scheduler "uri_hash" for mode dr (the kernel's IPVS schedules: round_robin, weighted_round_robin, least_conn, weighted_least_conn, source_hash, rr, wrr, lc, wlc, sh, mh, dh, sed, nq, fo, ovf, lblc, lblcr, twos) (virtual_service "a")`,
				`lb.toml:11: virtual_service.scheduler: unknown scheduler "rdp_cookie" for mode nat (the kernel's IPVS schedules: round_robin, weighted_round_robin, least_conn, weighted_least_conn, source_hash, rr, wrr, lc, wlc, sh, mh, dh, sed, nq, fo, ovf, lblc, lblcr, twos) (virtual_service "b")`,
				`lb.toml:12: virtual_service.hash_header: not used in mode nat: the kernel's IPVS forwards the packets, and this key acts on the connections of the userspace proxy (modes http and tcp) (virtual_service "b")`,
			},
		},
		{
			name: "userspace keys, tables and real server keys",
			input: `[[virtual_service]]
name = "a"
listen = "10.0.0.30:443"
mode = "dr"
fallback = "10.0.0.9:80"
  [virtual_service.tls]
  certificates = [{ cert = "x.pem", key = "x.key" }]
  [virtual_service.rate_limit]
  requests = 10
  [[virtual_service.route]]
  to = "b"
  [[virtual_service.real_server]]
  address = "10.0.1.1:443"
  protocol = "h2"
  tls_verify = false
`,
			want: []string{
				`lb.toml:5: virtual_service.fallback: not used in mode dr: the kernel's IPVS forwards the packets, and this key acts on the connections of the userspace proxy (modes http and tcp) (virtual_service "a")`,
				`lb.toml:6: virtual_service.tls: not used in mode dr: the kernel's IPVS forwards the packets, and this key acts on the connections of the userspace proxy (modes http and tcp) (virtual_service "a")`,
				`lb.toml:8: virtual_service.rate_limit: not used in mode dr: the kernel's IPVS forwards the packets, and this key acts on the connections of the userspace proxy (modes http and tcp) (virtual_service "a")`,
				`lb.toml:10: virtual_service.route: not used in mode dr: the kernel's IPVS forwards the packets, and this key acts on the connections of the userspace proxy (modes http and tcp) (virtual_service "a")`,
				`lb.toml:14: virtual_service.real_server.protocol: not used in mode dr: the kernel forwards the client's packets to the real server as they are (virtual_service "a", real_server "10.0.1.1:443")`,
				`lb.toml:15: virtual_service.real_server.tls_verify: not used in mode dr: the kernel forwards the client's packets to the real server as they are (virtual_service "a", real_server "10.0.1.1:443")`,
			},
		},
		{
			name: "a udp VIP does not take the TCP port of a userspace service",
			input: `[[virtual_service]]
name = "dns"
listen = "10.0.0.30:53"
mode = "dr"
protocol = "udp"
real_server = [{ address = "10.0.1.1:53" }]
[[virtual_service]]
name = "dns-proxy"
listen = ":53"
mode = "tcp"
real_server = [{ address = "10.0.1.1:53" }]
[[virtual_service]]
name = "dns-l4-tcp"
listen = "10.0.0.30:53"
mode = "dr"
real_server = [{ address = "10.0.1.1:53" }]
`,
			want: []string{
				`lb.toml:14: virtual_service.listen: "10.0.0.30:53" overlaps ":53" (every address) of virtual_service "dns-proxy" at line 9 (virtual_service "dns-l4-tcp")`,
			},
		},
	}
	runParseTests(t, tests)
}

// TestL4SchedulersDistinct keeps the list free of duplicates; l4's tests
// check that each maps to an IPVS scheduler.
func TestL4SchedulersDistinct(t *testing.T) {
	s := L4Schedulers()
	if len(slices.Compact(slices.Sorted(slices.Values(s)))) != len(s) || !slices.Contains(s, DefaultScheduler) {
		t.Errorf("L4Schedulers() = %v: want distinct names including the default %q", s, DefaultScheduler)
	}
}
