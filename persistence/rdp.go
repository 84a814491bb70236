package persistence

import (
	"bytes"
	"errors"
	"net/netip"
	"strconv"
)

// Errors of ParseRDP.
var (
	// ErrNeedMore: the bytes so far are a proper prefix of a connection
	// request that may still turn out valid; read more (up to
	// inspect_delay) and parse again from the start.
	ErrNeedMore = errors.New("persistence: incomplete RDP connection request")
	// ErrNotRDP: the bytes are not an RDP connection request and no more
	// bytes can change that; schedule the connection without persistence.
	ErrNotRDP = errors.New("persistence: not an RDP connection request")
)

const (
	// MaxRDPRequest bounds the connection request ParseRDP accepts, and so
	// the bytes the proxy needs to buffer while inspecting. Real requests
	// are a few dozen bytes, a few hundred with a long routing token.
	MaxRDPRequest = 8192
	// MaxRDPUser bounds RDPRequest.User; a longer mstshash value is cut.
	// Clients already cut it (mstsc sends a prefix of "DOMAIN\user").
	MaxRDPUser = 256
)

const (
	tpktHeaderLen = 4 // T.123 §8: version, reserved, length (2)
	x224CRLen     = 7 // X.224 §13.3: LI, CR code, DST-REF (2), SRC-REF (2), class
	rdpFixedLen   = tpktHeaderLen + x224CRLen
	maxLI         = 254 // X.224 §13.2.1: 255 is reserved
	tpduCR        = 0xE0
	negReqType    = 0x01 // MS-RDPBCGR 2.2.1.1.1 TYPE_RDP_NEG_REQ
	negReqLen     = 8
)

// RDPRequest is what an RDP client's X.224 Connection Request says about
// where it wants to go (MS-RDPBCGR 2.2.1.1). Its zero value means the
// request carries neither a routing token nor a cookie.
type RDPRequest struct {
	// RoutingToken is true when the request carries a routing token (any
	// token line other than a "Cookie: mstshash=" cookie), e.g. an RD
	// Connection Broker's "Cookie: msts=..." or a "tsv://..." load-balance
	// info string.
	RoutingToken bool
	// Addr is the real server named by a well-formed
	// "Cookie: msts=<ip>.<port>.<reserved>" routing token. Invalid (zero) if
	// there is none or it is malformed; the proxy then schedules normally.
	Addr netip.AddrPort
	// User is the value of a "Cookie: mstshash=<user>" cookie as the client
	// sent it (clients may cut it short; cut here at MaxRDPUser bytes). It
	// contains no CR or LF but is otherwise raw bytes: not necessarily
	// UTF-8, so quote it when logging. Empty if there is no such cookie.
	User string
}

// ParseRDP parses the start of a TCP stream as an RDP X.224 Connection
// Request (MS-RDPBCGR 2.2.1.1):
//
//	tpktHeader   4 bytes  version 3, reserved 0, length (big endian, whole packet)
//	x224Crq      7 bytes  LI, 0xE0 (CR, CDT 0), DST-REF 0, SRC-REF, class 0
//	routingToken or cookie, optional: an ANSI line ended by CR LF
//	rdpNegReq    8 bytes, optional: type 1, flags, length 8 (LE), protocols
//	             (possibly followed by rdpCorrelationInfo, not inspected)
//
// It returns ErrNeedMore while b is a proper prefix of a request that could
// still be valid and ErrNotRDP as soon as it cannot be one, so a proxy reads
// until one of the two answers stops being ErrNeedMore or inspect_delay runs
// out. It only looks at b; the proxy forwards every byte unchanged. Bytes
// after the request's length are ignored.
//
// Checks: the TPKT version and reserved byte; a length of 11 to
// MaxRDPRequest; the LI equal to length-5 (for requests longer than 259
// bytes LI cannot hold that and FreeRDP sends its low byte, so any LI is
// accepted); the CR code; DST-REF 0 and class 0 (X.224 §13.3.3); a token
// line ended by CR LF within the TPDU with no lone CR or LF; and whatever
// follows the token line (or the whole variable part, if it starts with
// byte 1) being an RDP_NEG_REQ: type 1, length 8.
//
// A well-formed request whose token is not understood (a malformed msts
// token, an unknown routing token) is not an error: it parses with
// RoutingToken set and no Addr, and the proxy falls back to its scheduler.
func ParseRDP(b []byte) (RDPRequest, error) {
	n, err := checkRDP(b)
	if err != nil {
		return RDPRequest{}, err
	}
	return parseTokenLine(b[rdpFixedLen:n]), nil
}

// checkRDP validates the bytes of b that belong to the request and returns
// the request's length once it is complete.
func checkRDP(b []byte) (int, error) {
	// TPKT header, T.123 §8.
	if len(b) > 0 && b[0] != 3 {
		return 0, ErrNotRDP
	}
	if len(b) > 1 && b[1] != 0 {
		return 0, ErrNotRDP
	}
	if len(b) < tpktHeaderLen {
		if len(b) == 3 && int(b[2])<<8 > MaxRDPRequest {
			return 0, ErrNotRDP
		}
		return 0, ErrNeedMore
	}
	n := int(b[2])<<8 | int(b[3])
	if n < rdpFixedLen || n > MaxRDPRequest {
		return 0, ErrNotRDP
	}
	h := b[:min(len(b), n)]

	// X.224 Connection Request, X.224 §13.3. LI counts the TPDU after
	// itself: everything after the TPKT header and the LI byte.
	if len(h) > 4 && n-5 <= maxLI && int(h[4]) != n-5 {
		return 0, ErrNotRDP
	}
	if len(h) > 5 && h[5] != tpduCR {
		return 0, ErrNotRDP
	}
	if (len(h) > 6 && h[6] != 0) || (len(h) > 7 && h[7] != 0) {
		return 0, ErrNotRDP
	}
	if len(h) > 10 && h[10]&0xF0 != 0 {
		return 0, ErrNotRDP
	}
	if err := checkVariable(h[min(len(h), rdpFixedLen):], n-rdpFixedLen); err != nil {
		return 0, err
	}
	if len(b) < n {
		return 0, ErrNeedMore
	}
	return n, nil
}

// checkVariable checks v, the received prefix of the size bytes after the
// fixed headers: an optional token line ended by CR LF, then an optional
// RDP_NEG_REQ. It fails as soon as no completion of v can fit size.
func checkVariable(v []byte, size int) error {
	if size == 0 {
		return nil
	}
	if len(v) == 0 {
		if size == 1 { // too short for a line (CR LF) or an RDP_NEG_REQ
			return ErrNotRDP
		}
		return nil
	}
	if v[0] == negReqType {
		return checkNegReq(v, size)
	}
	i := bytes.IndexByte(v, '\r')
	line := v
	if i >= 0 {
		line = v[:i]
	}
	if bytes.IndexByte(line, '\n') >= 0 {
		return ErrNotRDP
	}
	if i < 0 {
		// No CR yet: the CR LF must still fit.
		if len(v) > size-2 {
			return ErrNotRDP
		}
		return nil
	}
	if i+1 < len(v) && v[i+1] != '\n' {
		return ErrNotRDP
	}
	rest := size - (i + 2)
	if rest < 0 {
		return ErrNotRDP
	}
	if rest == 0 {
		return nil
	}
	return checkNegReq(v[min(len(v), i+2):], rest)
}

// checkNegReq checks v, the received prefix of size bytes that must start
// with an RDP_NEG_REQ (MS-RDPBCGR 2.2.1.1.1). Bytes after its 8 (an
// rdpCorrelationInfo, 2.2.1.1.2) are not inspected.
func checkNegReq(v []byte, size int) error {
	if size < negReqLen {
		return ErrNotRDP
	}
	if len(v) > 0 && v[0] != negReqType {
		return ErrNotRDP
	}
	if (len(v) > 2 && v[2] != negReqLen) || (len(v) > 3 && v[3] != 0) {
		return ErrNotRDP
	}
	return nil
}

// parseTokenLine interprets the variable part of a request checkRDP
// accepted.
func parseTokenLine(v []byte) RDPRequest {
	if len(v) == 0 || v[0] == negReqType {
		return RDPRequest{}
	}
	line := v[:bytes.IndexByte(v, '\r')] // checkRDP guarantees a CR LF
	if len(line) == 0 {
		return RDPRequest{}
	}
	if rest, ok := cutPrefixFold(line, "Cookie:"); ok {
		for len(rest) > 0 && rest[0] == ' ' {
			rest = rest[1:]
		}
		if user, ok := cutPrefixFold(rest, "mstshash="); ok {
			return RDPRequest{User: string(user[:min(len(user), MaxRDPUser)])}
		}
		if tok, ok := cutPrefixFold(rest, "msts="); ok {
			return RDPRequest{RoutingToken: true, Addr: parseMSTS(tok)}
		}
	}
	return RDPRequest{RoutingToken: true}
}

// parseMSTS decodes an RD Connection Broker routing token's value,
// "<ip>.<port>.<reserved>": ip is the IPv4 address as a decimal u32 whose
// little-endian bytes are the address octets, port is the port as a decimal
// u16 with its bytes swapped, reserved is ignored. E.g. 172.31.249.216:3389
// is "3640205228.15629.0000". The zero AddrPort if malformed or out of range.
func parseMSTS(tok []byte) netip.AddrPort {
	ip, tok, ok := decimal(tok, 10, 1<<32-1)
	if !ok || len(tok) == 0 || tok[0] != '.' {
		return netip.AddrPort{}
	}
	port, tok, ok := decimal(tok[1:], 5, 1<<16-1)
	if !ok || len(tok) == 0 || tok[0] != '.' {
		return netip.AddrPort{}
	}
	a := netip.AddrFrom4([4]byte{byte(ip), byte(ip >> 8), byte(ip >> 16), byte(ip >> 24)})
	return netip.AddrPortFrom(a, uint16(port>>8|port<<8))
}

// decimal reads 1 to maxDigits decimal digits with a value <= max from the
// start of b and returns the value and the rest of b.
func decimal(b []byte, maxDigits int, max uint64) (uint64, []byte, bool) {
	var v uint64
	i := 0
	for i < len(b) && i < maxDigits && '0' <= b[i] && b[i] <= '9' {
		v = v*10 + uint64(b[i]-'0')
		i++
	}
	if i == 0 || v > max || (i < len(b) && '0' <= b[i] && b[i] <= '9') {
		return 0, b, false
	}
	return v, b[i:], true
}

// EncodeRoutingToken returns the RD Connection Broker routing token that
// sends a client to ap, "Cookie: msts=<ip>.<port>.0000" (without the CR LF
// the client adds), as given to xfreerdp's /load-balance-info: or an .rdp
// file's loadbalanceinfo. Empty if ap is not IPv4: the format has no room
// for IPv6.
func EncodeRoutingToken(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	if !a.Is4() {
		return ""
	}
	o := a.As4()
	ip := uint32(o[0]) | uint32(o[1])<<8 | uint32(o[2])<<16 | uint32(o[3])<<24
	port := ap.Port()>>8 | ap.Port()<<8
	return "Cookie: msts=" + strconv.FormatUint(uint64(ip), 10) + "." +
		strconv.FormatUint(uint64(port), 10) + ".0000"
}

// cutPrefixFold is bytes.CutPrefix with ASCII case folding.
func cutPrefixFold(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) {
		return b, false
	}
	for i := 0; i < len(prefix); i++ {
		c, p := b[i], prefix[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= p && p <= 'Z' {
			p += 'a' - 'A'
		}
		if c != p {
			return b, false
		}
	}
	return b[len(prefix):], true
}
