package ha

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	peerA := netip.MustParseAddr("10.0.0.1") // handVector's source
	uni := netip.MustParseAddr("10.0.0.2")
	// handVector's checksum is over 224.0.0.18: what keepalived before
	// 1.3.6 sent to unicast peers too.
	right, err := Advertisement{VRID: 51, Priority: 150, MaxAdvertInt: 100, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.21")}}.Marshal(peerA, uni)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		p       []byte
		dst     netip.Addr
		ttl     int
		peers   []netip.Addr
		errText string // empty: accepted
	}{
		{name: "multicast", p: handVector, dst: GroupIPv4, ttl: 255},
		{name: "TTL 254", p: handVector, dst: GroupIPv4, ttl: 254, errText: "TTL 254, want 255"},
		{name: "multicast check on a unicast destination", p: right, dst: uni, ttl: 255, errText: "sent to 10.0.0.2, not to 224.0.0.18"},
		{name: "unicast peer", p: right, dst: uni, ttl: 255, peers: []netip.Addr{peerA}},
		{name: "unicast peer, hop limit 64 (keepalived's IPv6 unicast)", p: right, dst: uni, ttl: 64, peers: []netip.Addr{peerA}},
		{name: "unicast, legacy keepalived checksum", p: handVector, dst: uni, ttl: 255, peers: []netip.Addr{peerA}},
		{name: "unicast, not a peer", p: right, dst: uni, ttl: 255, peers: []netip.Addr{netip.MustParseAddr("10.0.0.9")}, errText: "from 10.0.0.1: not a unicast peer"},
		{name: "bad packet", p: handVector[:6], dst: GroupIPv4, ttl: 255, errText: "packet too short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := check(tt.p, peerA, tt.dst, tt.ttl, tt.peers, GroupIPv4)
			if tt.errText != "" {
				if !errors.Is(err, ErrDiscarded) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("check error = %v, want ErrDiscarded containing %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			if in.Src != peerA || in.Dst != tt.dst || in.Advert.VRID != 51 {
				t.Fatalf("check = %+v", in)
			}
		})
	}
}
