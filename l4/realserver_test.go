package l4

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestRealServerCommands(t *testing.T) {
	tests := []struct {
		name    string
		vip     string
		mode    Forwarding
		want    string // the commands, one per line
		wantErr string
	}{
		{"dr", "10.0.0.30", DirectRouting, `sysctl -w net.ipv4.conf.all.arp_ignore=1
sysctl -w net.ipv4.conf.all.arp_announce=2
ip addr replace 10.0.0.30/32 dev lo`, ""},
		{"tun, mapped address", "::ffff:10.0.0.30", Tunnel, `sysctl -w net.ipv4.conf.all.arp_ignore=1
sysctl -w net.ipv4.conf.all.arp_announce=2
modprobe ipip
ip link set tunl0 up
ip addr replace 10.0.0.30/32 dev tunl0
sysctl -w net.ipv4.conf.tunl0.rp_filter=0
sysctl -w net.ipv4.conf.all.rp_filter=0`, ""},
		{"nat", "10.0.0.30", NAT, "", ""},
		{"dr IPv6", "2001:db8::30", DirectRouting, "ip -6 addr replace 2001:db8::30/128 dev lo", ""},
		{"tun IPv6", "2001:db8::30", Tunnel, "", "IPv6 VIP is not supported yet"},
		{"unknown mode", "10.0.0.30", "snat", "", `mode "snat": want dr, tun or nat`},
		{"unspecified", "0.0.0.0", DirectRouting, "", "want the virtual service's own unicast address"},
		{"loopback", "127.0.0.1", DirectRouting, "", "want the virtual service's own unicast address"},
		{"multicast", "ff02::1", DirectRouting, "", "want the virtual service's own unicast address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmds, err := RealServerCommands(netip.MustParseAddr(tt.vip), tt.mode)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want %q", err, tt.wantErr)
				}
				return
			}
			var lines []string
			for _, c := range cmds {
				lines = append(lines, c.String())
				if c.Why == "" || strings.Contains(c.Why, "\n") {
					t.Errorf("%s: comment %q: want one line", c, c.Why)
				}
			}
			if got := strings.Join(lines, "\n"); err != nil || got != tt.want {
				t.Fatalf("got (%v)\n%s\nwant\n%s", err, got, tt.want)
			}
		})
	}
	if _, err := RealServerCommands(netip.MustParseAddr("2001:db8::30"), Tunnel); !errors.Is(err, ErrIPv6Tunnel) {
		t.Errorf("tun IPv6: %v, want ErrIPv6Tunnel", err)
	}
}
