package l4

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRealServerCommands(t *testing.T) {
	tests := []struct {
		vip     string
		mode    Forwarding
		want    string // the commands, one per line
		wantErr string
	}{
		{"10.0.0.30", DirectRouting, `sysctl -w net.ipv4.conf.all.arp_ignore=1
sysctl -w net.ipv4.conf.all.arp_announce=2
ip addr add 10.0.0.30/32 dev lo`, ""},
		{"::ffff:10.0.0.30", Tunnel, `sysctl -w net.ipv4.conf.all.arp_ignore=1
sysctl -w net.ipv4.conf.all.arp_announce=2
modprobe ipip
ip link set tunl0 up
ip addr add 10.0.0.30/32 dev tunl0
sysctl -w net.ipv4.conf.tunl0.rp_filter=0
sysctl -w net.ipv4.conf.all.rp_filter=0`, ""},
		{"10.0.0.30", NAT, "", ""},
		{"10.0.0.30", "snat", "", `mode "snat": want dr, tun or nat`},
		{"2001:db8::30", DirectRouting, "", "only IPv4 VIPs are supported"},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode)+" "+tt.vip, func(t *testing.T) {
			argvs, err := RealServerCommands(netip.MustParseAddr(tt.vip), tt.mode)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want %q", err, tt.wantErr)
				}
				return
			}
			var lines []string
			for _, a := range argvs {
				lines = append(lines, CommandString(a))
			}
			if got := strings.Join(lines, "\n"); err != nil || got != tt.want {
				t.Fatalf("got (%v)\n%s\nwant\n%s", err, got, tt.want)
			}
		})
	}
}
