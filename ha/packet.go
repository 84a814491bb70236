package ha

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// The wire constants of RFC 5798.
const (
	// Protocol is the IP protocol number of VRRP (RFC 5798 §5.1.1.4).
	Protocol = 112
	// Version is the only VRRP version spoken: 3 (RFC 5798 §5.2.1).
	// There is no authentication in version 3 (RFC 5798 §9).
	Version = 3
	// TypeAdvertisement is the only packet type (RFC 5798 §5.2.2).
	TypeAdvertisement = 1
	// TTL is the IPv4 TTL / IPv6 Hop Limit every advertisement is sent
	// with, and that a receiver requires (RFC 5798 §5.1.1.3, §5.1.2.3,
	// §7.1), so that only a neighbour on the link can speak.
	TTL = 255
	// PriorityOwner is the priority of the owner of the virtual
	// addresses, who becomes Master at once (RFC 5798 §5.2.4).
	PriorityOwner = 255
	// PriorityStop is sent by a Master that stops, so that a Backup takes
	// over after only Skew_Time (RFC 5798 §5.2.4, §6.4.3).
	PriorityStop = 0
	// MaxAdvertIntLimit is the largest Max Adver Int: 12 bits of
	// centiseconds, 40.95s (RFC 5798 §5.2.7).
	MaxAdvertIntLimit = 0x0fff

	headerLen = 8
)

// Groups are the destinations of multicast advertisements (RFC 5798
// §5.1.1.2, §5.1.2.2).
var (
	GroupIPv4 = netip.AddrFrom4([4]byte{224, 0, 0, 18})
	GroupIPv6 = netip.MustParseAddr("ff02::12")
)

// Advertisement is one VRRPv3 ADVERTISEMENT (RFC 5798 §5.2): the fixed
// header's variable fields and the virtual addresses. Version (3) and Type
// (1) are implied.
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|(rsvd) |     Max Adver Int     |          Checksum             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       IPvX Address(es)                        |
type Advertisement struct {
	// VRID is the Virtual Router Identifier, 1..255 (RFC 5798 §5.2.3).
	// Zero is invalid.
	VRID uint8
	// Priority of the sender: 255 the address owner, 1..254 a backup, 0
	// a Master that stops (RFC 5798 §5.2.4).
	Priority uint8
	// MaxAdvertInt is the sender's Advertisement_Interval in
	// centiseconds, 1..4095 (RFC 5798 §5.2.7). Zero is invalid.
	MaxAdvertInt uint16
	// Addrs are the virtual addresses, all of the family of the IP
	// header; at most 255 (RFC 5798 §5.2.5, §5.2.9). Empty is allowed
	// on the wire (RFC 5798 §5.2.5 does not forbid it; keepalived sends
	// none when it has no VIP of the family).
	Addrs []netip.Addr
}

// Interval is MaxAdvertInt as a duration.
func (a Advertisement) Interval() time.Duration {
	return time.Duration(a.MaxAdvertInt) * 10 * time.Millisecond
}

// Centiseconds converts an advertisement interval to the Max Adver Int
// field, rounding down to the field's centisecond granularity (RFC 5798
// §5.2.7). It reports false when d is below 10ms or above 40.95s.
func Centiseconds(d time.Duration) (uint16, bool) {
	cs := d / (10 * time.Millisecond)
	if cs < 1 || cs > MaxAdvertIntLimit {
		return 0, false
	}
	return uint16(cs), true
}

// Parse errors; Parse wraps them with the detail.
var (
	ErrShort    = errors.New("vrrp: packet too short")
	ErrVersion  = errors.New("vrrp: unsupported version")
	ErrType     = errors.New("vrrp: unknown packet type")
	ErrLength   = errors.New("vrrp: length does not match the address count")
	ErrChecksum = errors.New("vrrp: bad checksum")
	ErrFamily   = errors.New("vrrp: address family")
	ErrField    = errors.New("vrrp: invalid field")
)

// Parse decodes and validates the VRRP payload b of an IP packet from src
// to dst, as RFC 5798 §7.1 asks of a receiver: the version, the type, that
// the packet holds exactly the header and Count IPvX Addr addresses (as
// keepalived also requires), the checksum over the pseudo-header (for IPv4
// too, RFC 5798 §5.2.8), and a non-zero VRID and Max Adver Int. It does not
// check the TTL, the VRID wanted or the addresses against the
// configuration: those are the transport's and the Node's business.
func Parse(b []byte, src, dst netip.Addr) (Advertisement, error) {
	src, dst = src.Unmap(), dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return Advertisement{}, fmt.Errorf("%w: source %v and destination %v", ErrFamily, src, dst)
	}
	if len(b) < headerLen {
		return Advertisement{}, fmt.Errorf("%w: %d bytes, the header alone is %d", ErrShort, len(b), headerLen)
	}
	if v := b[0] >> 4; v != Version {
		return Advertisement{}, fmt.Errorf("%w: %d, want %d", ErrVersion, v, Version)
	}
	if t := b[0] & 0x0f; t != TypeAdvertisement {
		return Advertisement{}, fmt.Errorf("%w: %d, want %d (ADVERTISEMENT)", ErrType, t, TypeAdvertisement)
	}
	alen := 16
	if src.Is4() {
		alen = 4
	}
	count := int(b[3])
	if want := headerLen + count*alen; len(b) != want {
		return Advertisement{}, fmt.Errorf("%w: %d bytes for %d IPv%d addresses, want %d", ErrLength, len(b), count, family(src), want)
	}
	if sum := checksum(b, src, dst); sum != 0 {
		return Advertisement{}, fmt.Errorf("%w: 0x%04x does not verify (sums to 0x%04x) for %v -> %v", ErrChecksum, binary.BigEndian.Uint16(b[6:]), sum, src, dst)
	}
	a := Advertisement{
		VRID:         b[1],
		Priority:     b[2],
		MaxAdvertInt: binary.BigEndian.Uint16(b[4:]) & MaxAdvertIntLimit, // the top 4 bits are reserved (RFC 5798 §5.2.6)
	}
	if a.VRID == 0 {
		return Advertisement{}, fmt.Errorf("%w: VRID 0", ErrField)
	}
	if a.MaxAdvertInt == 0 {
		return Advertisement{}, fmt.Errorf("%w: Max Adver Int 0", ErrField)
	}
	if count > 0 {
		a.Addrs = make([]netip.Addr, count)
	}
	for i := range count {
		p := b[headerLen+i*alen : headerLen+(i+1)*alen]
		if alen == 4 {
			a.Addrs[i] = netip.AddrFrom4([4]byte(p))
		} else {
			a.Addrs[i] = netip.AddrFrom16([16]byte(p))
		}
	}
	return a, nil
}

// Marshal encodes a as the VRRP payload of an IP packet from src to dst,
// with the checksum over the pseudo-header of that packet (RFC 5798
// §5.2.8). Addrs must be of the family of src and dst.
func (a Advertisement) Marshal(src, dst netip.Addr) ([]byte, error) {
	src, dst = src.Unmap(), dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return nil, fmt.Errorf("vrrp: marshal: %w: source %v and destination %v", ErrFamily, src, dst)
	}
	switch {
	case a.VRID == 0:
		return nil, fmt.Errorf("vrrp: marshal: %w: VRID 0", ErrField)
	case a.MaxAdvertInt == 0 || a.MaxAdvertInt > MaxAdvertIntLimit:
		return nil, fmt.Errorf("vrrp: marshal: %w: Max Adver Int %d, want 1..%d centiseconds", ErrField, a.MaxAdvertInt, MaxAdvertIntLimit)
	case len(a.Addrs) > 255:
		return nil, fmt.Errorf("vrrp: marshal: %w: %d addresses, at most 255", ErrField, len(a.Addrs))
	}
	alen := 16
	if src.Is4() {
		alen = 4
	}
	b := make([]byte, headerLen, headerLen+len(a.Addrs)*alen)
	b[0] = Version<<4 | TypeAdvertisement
	b[1] = a.VRID
	b[2] = a.Priority
	b[3] = uint8(len(a.Addrs))
	binary.BigEndian.PutUint16(b[4:], a.MaxAdvertInt)
	for _, addr := range a.Addrs {
		addr = addr.Unmap()
		if addr.Is4() != src.Is4() || !addr.IsValid() {
			return nil, fmt.Errorf("vrrp: marshal: %w: address %v in an IPv%d advertisement", ErrFamily, addr, family(src))
		}
		b = append(b, addr.AsSlice()...)
	}
	binary.BigEndian.PutUint16(b[6:], checksum(b, src, dst))
	return b, nil
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// checksum is the Internet checksum (RFC 1071) of b preceded by the
// pseudo-header of RFC 8200 §8.1 for IPv6 or of RFC 768/793 for IPv4 (the
// layout RFC 5798 §5.2.8 refers to). Over a packet whose checksum field is
// filled in it returns 0 when the field is right; over one whose field is
// zero it returns the value to put there.
func checksum(b []byte, src, dst netip.Addr) uint16 {
	var sum uint32
	add := func(p []byte) {
		for len(p) >= 2 {
			sum += uint32(p[0])<<8 | uint32(p[1])
			p = p[2:]
		}
		if len(p) == 1 {
			sum += uint32(p[0]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	// Zero, protocol and upper-layer length: as 16-bit words the two
	// layouts sum to the same (the IPv6 length is 32 bits, but a VRRP
	// packet is shorter than 64KiB).
	sum += Protocol + uint32(len(b))
	add(b)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
