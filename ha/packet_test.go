package ha

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

var (
	src4 = netip.MustParseAddr("10.0.0.1")
	src6 = netip.MustParseAddr("fe80::1")
)

// handVector is an advertisement built by hand from the field layout of
// RFC 5798 §5.2: VRID 51, priority 150, Max Adver Int 100cs (1s), one
// address 10.0.0.21, sent from 10.0.0.1 to 224.0.0.18.
//
// The checksum (RFC 5798 §5.2.8, RFC 1071) is the one's complement of the
// one's complement sum of the 16-bit words of the pseudo-header and of the
// packet with a zero checksum field:
//
//	pseudo-header: 0a00 0001 (src) e000 0012 (dst) 0070 (0, proto 112) 000c (length 12)
//	packet:        3133 (v3, type 1, VRID 51) 9601 (prio 150, 1 address)
//	               0064 (rsvd 0, 100cs) 0000 (checksum) 0a00 0015 (10.0.0.21)
//	sum:           0a00+0001+e000+0012+0070+000c+3133+9601+0064+0a00+0015 = 0x1bc3c
//	fold:          bc3c + 1 = bc3d; complement: 43c2
var handVector = []byte{
	0x31, 0x33, 0x96, 0x01,
	0x00, 0x64, 0x43, 0xc2,
	0x0a, 0x00, 0x00, 0x15,
}

func TestParse(t *testing.T) {
	v6pkt, err := Advertisement{VRID: 7, Priority: 100, MaxAdvertInt: 10,
		Addrs: []netip.Addr{netip.MustParseAddr("fe80::21"), netip.MustParseAddr("fd00::21")}}.Marshal(src6, GroupIPv6)
	if err != nil {
		t.Fatal(err)
	}
	with := func(b []byte, f func(b []byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	tests := []struct {
		name     string
		b        []byte
		src, dst netip.Addr
		want     Advertisement
		wantErr  error
		errText  string
	}{
		{
			name: "hand-built IPv4 vector",
			b:    handVector, src: src4, dst: GroupIPv4,
			want: Advertisement{VRID: 51, Priority: 150, MaxAdvertInt: 100, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.21")}},
		},
		{
			name: "IPv4-mapped source and destination",
			b:    handVector, src: netip.AddrFrom16(src4.As16()), dst: netip.AddrFrom16(GroupIPv4.As16()),
			want: Advertisement{VRID: 51, Priority: 150, MaxAdvertInt: 100, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.21")}},
		},
		{
			name: "IPv6 two addresses",
			b:    v6pkt, src: src6, dst: GroupIPv6,
			want: Advertisement{VRID: 7, Priority: 100, MaxAdvertInt: 10,
				Addrs: []netip.Addr{netip.MustParseAddr("fe80::21"), netip.MustParseAddr("fd00::21")}},
		},
		{
			name: "reserved bits ignored",
			// Field 0xf064: the sum grows by 0xf000, 0xbc3d+0xf000 folds to 0xac3e, complement 0x53c1.
			b:   with(handVector, func(b []byte) { b[4], b[6], b[7] = 0xf0, 0x53, 0xc1 }),
			src: src4, dst: GroupIPv4,
			want: Advertisement{VRID: 51, Priority: 150, MaxAdvertInt: 100, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.21")}},
		},
		{
			name: "short", b: handVector[:7], src: src4, dst: GroupIPv4,
			wantErr: ErrShort, errText: "7 bytes, the header alone is 8",
		},
		{
			name: "version 2", b: with(handVector, func(b []byte) { b[0] = 0x21 }), src: src4, dst: GroupIPv4,
			wantErr: ErrVersion, errText: "unsupported version: 2, want 3",
		},
		{
			name: "type 2", b: with(handVector, func(b []byte) { b[0] = 0x32 }), src: src4, dst: GroupIPv4,
			wantErr: ErrType, errText: "unknown packet type: 2, want 1",
		},
		{
			name: "count larger than packet", b: with(handVector, func(b []byte) { b[3] = 2 }), src: src4, dst: GroupIPv4,
			wantErr: ErrLength, errText: "12 bytes for 2 IPv4 addresses, want 16",
		},
		{
			name: "trailing bytes", b: append(append([]byte(nil), handVector...), 0, 0, 0, 0), src: src4, dst: GroupIPv4,
			wantErr: ErrLength, errText: "16 bytes for 1 IPv4 addresses, want 12",
		},
		{
			name: "IPv4 payload under IPv6 header", b: handVector, src: src6, dst: GroupIPv6,
			wantErr: ErrLength, errText: "12 bytes for 1 IPv6 addresses, want 24",
		},
		{
			name: "bad checksum", b: with(handVector, func(b []byte) { b[7] ^= 1 }), src: src4, dst: GroupIPv4,
			wantErr: ErrChecksum, errText: "0x43c3 does not verify",
		},
		{
			// keepalived before 1.3.6 summed the group address for unicast
			// too; a right sender sums the real destination.
			name: "checksum is over the real destination", b: handVector, src: src4, dst: netip.MustParseAddr("10.0.0.2"),
			wantErr: ErrChecksum, errText: "10.0.0.1 -> 10.0.0.2",
		},
		{
			name: "changed priority breaks the checksum", b: with(handVector, func(b []byte) { b[2] = 151 }), src: src4, dst: GroupIPv4,
			wantErr: ErrChecksum,
		},
		{
			name: "mixed families", b: handVector, src: src4, dst: GroupIPv6,
			wantErr: ErrFamily, errText: "source 10.0.0.1 and destination ff02::12",
		},
		{
			name: "VRID 0",
			// VRID 51 -> 0 adds 0x0033 to the checksum: 0x43c2+0x33 = 0x43f5.
			b:   with(handVector, func(b []byte) { b[1], b[7] = 0, 0xf5 }),
			src: src4, dst: GroupIPv4,
			wantErr: ErrField, errText: "VRID 0",
		},
		{
			name: "interval 0",
			// 0x0064 -> 0 adds 0x64: 0x43c2+0x64 = 0x4426.
			b:   with(handVector, func(b []byte) { b[5], b[6], b[7] = 0, 0x44, 0x26 }),
			src: src4, dst: GroupIPv4,
			wantErr: ErrField, errText: "Max Adver Int 0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.b, tt.src, tt.dst)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("Parse error = %v, want %v containing %q", err, tt.wantErr, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMarshal(t *testing.T) {
	vip := netip.MustParseAddr("10.0.0.21")
	tests := []struct {
		name     string
		a        Advertisement
		src, dst netip.Addr
		want     []byte
		errText  string
	}{
		{
			name: "hand-built vector",
			a:    Advertisement{VRID: 51, Priority: 150, MaxAdvertInt: 100, Addrs: []netip.Addr{vip}},
			src:  src4, dst: GroupIPv4, want: handVector,
		},
		{
			name: "priority 0, no address",
			a:    Advertisement{VRID: 1, Priority: 0, MaxAdvertInt: 1},
			src:  src4, dst: GroupIPv4,
			// pseudo 0a00+0001+e000+0012+0070+0008 + 3101+0000+0001 = 0x11b8d -> 1b8e -> e471
			want: []byte{0x31, 0x01, 0x00, 0x00, 0x00, 0x01, 0xe4, 0x71},
		},
		{name: "VRID 0", a: Advertisement{MaxAdvertInt: 1}, src: src4, dst: GroupIPv4, errText: "VRID 0"},
		{name: "interval 0", a: Advertisement{VRID: 1}, src: src4, dst: GroupIPv4, errText: "Max Adver Int 0, want 1..4095"},
		{name: "interval too big", a: Advertisement{VRID: 1, MaxAdvertInt: 4096}, src: src4, dst: GroupIPv4, errText: "Max Adver Int 4096"},
		{
			name: "IPv6 address in IPv4 advertisement",
			a:    Advertisement{VRID: 1, MaxAdvertInt: 1, Addrs: []netip.Addr{netip.MustParseAddr("fd00::1")}},
			src:  src4, dst: GroupIPv4, errText: "address fd00::1 in an IPv4 advertisement",
		},
		{
			name: "too many addresses",
			a:    Advertisement{VRID: 1, MaxAdvertInt: 1, Addrs: make([]netip.Addr, 256)},
			src:  src4, dst: GroupIPv4, errText: "256 addresses, at most 255",
		},
		{name: "mixed families", a: Advertisement{VRID: 1, MaxAdvertInt: 1}, src: src6, dst: GroupIPv4, errText: "source fe80::1 and destination 224.0.0.18"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.a.Marshal(tt.src, tt.dst)
			if tt.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("Marshal error = %v, want one containing %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Marshal = % x, want % x", got, tt.want)
			}
		})
	}
}

func TestCentiseconds(t *testing.T) {
	tests := []struct {
		d    string
		want uint16
		ok   bool
	}{
		{"1s", 100, true}, {"10ms", 1, true}, {"15ms", 1, true}, {"40.95s", 4095, true},
		{"9ms", 0, false}, {"41s", 0, false}, {"0s", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.d, func(t *testing.T) {
			got, ok := Centiseconds(mustDuration(t, tt.d))
			if got != tt.want || ok != tt.ok {
				t.Fatalf("Centiseconds(%s) = %d, %v, want %d, %v", tt.d, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// FuzzParse checks that Parse never panics, and that whatever it accepts
// marshals back to the same bytes (modulo the reserved bits) and parses to
// the same value.
func FuzzParse(f *testing.F) {
	f.Add(handVector, true)
	v6, _ := Advertisement{VRID: 7, Priority: 0, MaxAdvertInt: 4095, Addrs: []netip.Addr{src6}}.Marshal(src6, GroupIPv6)
	f.Add(v6, false)
	f.Add([]byte{0x31, 0x01, 0x00, 0x00, 0x00, 0x01, 0xe4, 0x71}, true)
	f.Fuzz(func(t *testing.T, b []byte, v4 bool) {
		src, dst := src4, GroupIPv4
		if !v4 {
			src, dst = src6, GroupIPv6
		}
		a, err := Parse(b, src, dst)
		if err != nil {
			return
		}
		m, err := a.Marshal(src, dst)
		if err != nil {
			t.Fatalf("Marshal(Parse(% x)) = %v", b, err)
		}
		a2, err := Parse(m, src, dst)
		if err != nil {
			t.Fatalf("Parse(Marshal(%+v)) = %v", a, err)
		}
		if !reflect.DeepEqual(a, a2) {
			t.Fatalf("round trip: %+v != %+v", a, a2)
		}
		if b[4]&0xf0 == 0 && string(m) != string(b) {
			t.Fatalf("Marshal(Parse(% x)) = % x", b, m)
		}
	})
}
