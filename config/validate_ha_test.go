package config

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// haService is a virtual service to put an [ha] section after.
const haService = `[[virtual_service]]
name = "web"
listen = "10.0.0.21:80"
real_server = [{ address = "10.0.1.1:80" }]
`

func TestHA(t *testing.T) {
	runParseTests(t, []parseTest{
		{
			name:  "absent: off",
			input: haService,
			check: func(t *testing.T, c *Config) {
				if c.HA.Enabled() {
					t.Error("Enabled without [ha]")
				}
			},
		},
		{
			name: "minimal: defaults",
			input: haService + `[ha]
interface = "eth0"
vrid = 51
floating_ips = ["10.0.0.21/24", "fd00::21/64"]
`,
			check: func(t *testing.T, c *Config) {
				want := HA{
					Interface: "eth0", VRID: 51, Priority: 100, AdvertInterval: time.Second,
					FloatingIPs: []string{"10.0.0.21/24", "fd00::21/64"}, Preempt: true, TrackWeight: 50,
					VIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.21/24"), netip.MustParsePrefix("fd00::21/64")},
					Line: 5,
				}
				if !reflect.DeepEqual(c.HA, want) {
					t.Errorf("got\n%+v\nwant\n%+v", c.HA, want)
				}
				if !c.HA.Enabled() {
					t.Error("not Enabled")
				}
			},
		},
		{
			name: "the bounds",
			input: haService + `[ha]
interface = "bond0.100"
vrid = 255
priority = 255
advert_interval = "40.95s"
floating_ips = ["10.0.0.21/32"]
unicast_peers = ["10.0.0.12"]
track_weight = 0
notify = "  /usr/bin/logger   -t ha "
sync_peer = "peer.example:9080"
sync_user = "sync"
sync_password_file = "testdata/test-only-sync-password"
`,
			check: func(t *testing.T, c *Config) {
				if got, want := c.HA.NotifyArgs, []string{"/usr/bin/logger", "-t", "ha"}; !reflect.DeepEqual(got, want) {
					t.Errorf("NotifyArgs = %q, want %q", got, want)
				}
				if got, want := c.HA.Peers, []netip.Addr{netip.MustParseAddr("10.0.0.12")}; !reflect.DeepEqual(got, want) {
					t.Errorf("Peers = %v, want %v", got, want)
				}
			},
		},
		{
			name:  "empty section",
			input: haService + "[ha]\n",
			want: []string{
				`lb.toml:5: ha.interface: required when [ha] is present: the interface that carries the floating IPs, such as "eth0"`,
				`lb.toml:5: ha.vrid: required: the virtual router ID, 1..255, the same on both nodes and unique on the link`,
				`lb.toml:5: ha.floating_ips: required: one or more addresses with their prefix length, such as ["10.0.0.21/24"]`,
			},
		},
		{
			name: "out of range",
			input: haService + `[ha]
interface = "averyveryverylongname"
vrid = 256
priority = 0
advert_interval = "41s"
floating_ips = ["10.0.0.21"]
track_weight = -1
notify = " "
sync_peer = ":9080"
`,
			want: []string{
				`lb.toml:5: ha.sync_user: required with sync_peer: the peer's [[admin.user]] that pushes log in as`,
				`lb.toml:5: ha.sync_password_file: required with sync_peer: a file holding that user's password`,
				`lb.toml:6: ha.interface: "averyveryverylongname" is not an interface name: 1 to 15 characters, no '/', ':', spaces, "." or ".."`,
				`lb.toml:7: ha.vrid: must be between 1 and 255, got 256`,
				`lb.toml:8: ha.priority: must be between 1 and 255, got 0`,
				`lb.toml:9: ha.advert_interval: must be between 10ms and 40.95s, got 41s`,
				`lb.toml:10: ha.floating_ips: not an address with a prefix length: "10.0.0.21" (e.g. "10.0.0.21/24" or "fd00::21/64")`,
				`lb.toml:11: ha.track_weight: must be between 0 and 254, got -1`,
				`lb.toml:12: ha.notify: is blank: give a command, or leave it out`,
				`lb.toml:13: ha.sync_peer: invalid address ":9080": host is required`,
			},
		},
		{
			name: "unknown key",
			input: haService + `[ha]
interface = "eth0"
vrid = 1
floating_ips = ["10.0.0.21/24"]
priorty = 10
`,
			want: []string{`lb.toml:9: ha.priorty: unknown key "priorty" (did you mean "priority"?)`},
		},
	})
}
