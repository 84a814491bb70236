package persistence

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readHex reads a testdata/*.hex file: '#' comment lines, then hex digits
// with any whitespace.
func readHex(tb testing.TB, name string) []byte {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	var digits strings.Builder
	for line := range strings.Lines(string(raw)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return b
}

// buildCR builds a Connection Request around the variable part v, with the
// LI RDP uses unless li >= 0.
func buildCR(v string, li int) []byte {
	n := rdpFixedLen + len(v)
	if li < 0 {
		li = (n - 5) & 0xff
	}
	b := []byte{3, 0, byte(n >> 8), byte(n), byte(li), 0xE0, 0, 0, 0, 0, 0}
	return append(b, v...)
}

// negReq is an RDP_NEG_REQ asking for TLS and CredSSP.
const negReq = "\x01\x00\x08\x00\x03\x00\x00\x00"

func TestParseRDPCaptured(t *testing.T) {
	tests := []struct {
		file string
		want RDPRequest
	}{
		{file: "freerdp-mstshash-alice.hex", want: RDPRequest{User: "alice"}},
		{file: "freerdp-msts-token.hex", want: RDPRequest{RoutingToken: true, Addr: netip.MustParseAddrPort("172.31.249.216:3389")}},
		{file: "freerdp-no-user.hex", want: RDPRequest{User: "root"}},
		{file: "freerdp-empty-user.hex", want: RDPRequest{}},
		{file: "freerdp-long-user.hex", want: RDPRequest{User: "averyveryverylongusername_abcdefghijklmnop"}},
		{file: "freerdp-long-token.hex", want: RDPRequest{RoutingToken: true}},
		{file: "freerdp-tsv-token.hex", want: RDPRequest{RoutingToken: true}},
		{file: "freerdp-sec-rdp.hex", want: RDPRequest{User: "alice"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b := readHex(t, tt.file)
			got, err := ParseRDP(b)
			if err != nil || got != tt.want {
				t.Fatalf("ParseRDP = %+v, %v; want %+v, nil", got, err, tt.want)
			}
			for i := range len(b) {
				if _, err := ParseRDP(b[:i]); err != ErrNeedMore {
					t.Errorf("ParseRDP(first %d of %d bytes) error = %v, want ErrNeedMore", i, len(b), err)
				}
			}
			// What follows the request (nothing, normally: the client
			// waits for the Connection Confirm) does not matter.
			more := append(bytes.Clone(b), "\x03\x00\x00\x08garbage"...)
			if got, err := ParseRDP(more); err != nil || got != tt.want {
				t.Errorf("with trailing bytes: ParseRDP = %+v, %v", got, err)
			}
		})
	}
}

func TestParseRDP(t *testing.T) {
	longUser := strings.Repeat("u", MaxRDPUser+50)
	tests := []struct {
		name    string
		in      []byte
		want    RDPRequest
		wantErr error
	}{
		// Well-formed requests.
		{name: "minimal, no variable part", in: buildCR("", -1)},
		{name: "negotiation request only", in: buildCR(negReq, -1)},
		{name: "neg req with correlation info", in: buildCR("\x01\x08\x08\x00\x03\x00\x00\x00\x06\x00\x24\x00"+strings.Repeat("\r\n", 16), -1)},
		{name: "mstshash", in: buildCR("Cookie: mstshash=bob\r\n"+negReq, -1), want: RDPRequest{User: "bob"}},
		{name: "mstshash without neg req", in: buildCR("Cookie: mstshash=bob\r\n", -1), want: RDPRequest{User: "bob"}},
		{name: "mstshash domain user", in: buildCR("Cookie: mstshash=CORP\\bob\r\n", -1), want: RDPRequest{User: "CORP\\bob"}},
		{name: "mstshash case and spaces", in: buildCR("cookie:   MSTSHASH=Bob\r\n", -1), want: RDPRequest{User: "Bob"}},
		{name: "mstshash cut", in: buildCR("Cookie: mstshash="+longUser+"\r\n", -1), want: RDPRequest{User: longUser[:MaxRDPUser]}},
		{name: "mstshash empty", in: buildCR("Cookie: mstshash=\r\n"+negReq, -1)},
		{name: "empty token line", in: buildCR("\r\n"+negReq, -1)},
		{name: "msts", in: buildCR("Cookie: msts=3640205228.15629.0000\r\n"+negReq, -1),
			want: RDPRequest{RoutingToken: true, Addr: netip.MustParseAddrPort("172.31.249.216:3389")}},
		{name: "msts loopback", in: buildCR("Cookie: msts=16777343.15629.0000\r\n", -1),
			want: RDPRequest{RoutingToken: true, Addr: netip.MustParseAddrPort("127.0.0.1:3389")}},
		{name: "msts max values", in: buildCR("Cookie: msts=4294967295.65535.0\r\n", -1),
			want: RDPRequest{RoutingToken: true, Addr: netip.MustParseAddrPort("255.255.255.255:65535")}},
		{name: "msts reserved ignored", in: buildCR("Cookie: msts=3640205228.15629.x\r\n", -1),
			want: RDPRequest{RoutingToken: true, Addr: netip.MustParseAddrPort("172.31.249.216:3389")}},
		{name: "msts leading zeros", in: buildCR("Cookie: msts=0003640205.00001.0000\r\n", -1),
			want: RDPRequest{RoutingToken: true, Addr: netip.MustParseAddrPort("141.139.55.0:256")}},
		{name: "unknown routing token", in: buildCR("tsv://MS Terminal Services Plugin.1.Sessions\r\n"+negReq, -1), want: RDPRequest{RoutingToken: true}},
		{name: "other cookie is a routing token", in: buildCR("Cookie: foo=bar\r\n", -1), want: RDPRequest{RoutingToken: true}},
		{name: "long request, any LI", in: buildCR(strings.Repeat("x", 300)+"\r\n"+negReq, 0x07), want: RDPRequest{RoutingToken: true}},
		{name: "largest request", in: buildCR(strings.Repeat("x", MaxRDPRequest-rdpFixedLen-2)+"\r\n", -1), want: RDPRequest{RoutingToken: true}},

		// Malformed msts tokens: a valid request, no address.
		{name: "msts ip too big", in: buildCR("Cookie: msts=4294967296.15629.0000\r\n", -1), want: RDPRequest{RoutingToken: true}},
		{name: "msts ip too many digits", in: buildCR("Cookie: msts=00000000001.15629.0000\r\n", -1), want: RDPRequest{RoutingToken: true}},
		{name: "msts port too big", in: buildCR("Cookie: msts=3640205228.65536.0000\r\n", -1), want: RDPRequest{RoutingToken: true}},
		{name: "msts no reserved", in: buildCR("Cookie: msts=3640205228.15629\r\n", -1), want: RDPRequest{RoutingToken: true}},
		{name: "msts not digits", in: buildCR("Cookie: msts=abc.15629.0000\r\n", -1), want: RDPRequest{RoutingToken: true}},
		{name: "msts empty", in: buildCR("Cookie: msts=\r\n", -1), want: RDPRequest{RoutingToken: true}},
		{name: "msts signed", in: buildCR("Cookie: msts=-1.15629.0000\r\n", -1), want: RDPRequest{RoutingToken: true}},

		// Not RDP.
		{name: "http", in: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), wantErr: ErrNotRDP},
		{name: "http one byte", in: []byte("G"), wantErr: ErrNotRDP},
		{name: "tls client hello", in: []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), wantErr: ErrNotRDP},
		{name: "ssh", in: []byte("SSH-2.0-OpenSSH_9.2\r\n"), wantErr: ErrNotRDP},
		{name: "bad version", in: append([]byte{2}, buildCR(negReq, -1)[1:]...), wantErr: ErrNotRDP},
		{name: "bad reserved", in: append([]byte{3, 1}, buildCR(negReq, -1)[2:]...), wantErr: ErrNotRDP},
		{name: "length below 11", in: []byte{3, 0, 0, 10, 5, 0xE0, 0, 0, 0, 0}, wantErr: ErrNotRDP},
		{name: "length 12 fits nothing", in: []byte{3, 0, 0, 12}, wantErr: ErrNotRDP},
		{name: "huge length", in: []byte{3, 0, 0xff, 0xff}, wantErr: ErrNotRDP},
		{name: "length just over max", in: []byte{3, 0, MaxRDPRequest >> 8, 1}, wantErr: ErrNotRDP},
		{name: "length high byte over max", in: []byte{3, 0, MaxRDPRequest>>8 + 1}, wantErr: ErrNotRDP},
		{name: "LI too small", in: buildCR(negReq, 6), wantErr: ErrNotRDP},
		{name: "LI too big", in: buildCR(negReq, 20), wantErr: ErrNotRDP},
		{name: "connection confirm code", in: func() []byte { b := buildCR(negReq, -1); b[5] = 0xD0; return b }(), wantErr: ErrNotRDP},
		{name: "data TPDU", in: []byte{3, 0, 0, 12, 2, 0xF0, 0x80, 0x7f, 0x65, 0x82, 0x01, 0x94}, wantErr: ErrNotRDP},
		{name: "dst-ref set", in: func() []byte { b := buildCR(negReq, -1); b[7] = 1; return b }(), wantErr: ErrNotRDP},
		{name: "class 2", in: func() []byte { b := buildCR(negReq, -1); b[10] = 0x20; return b }(), wantErr: ErrNotRDP},
		{name: "cookie without CRLF", in: buildCR("Cookie: mstshash=bob", -1), wantErr: ErrNotRDP},
		{name: "cookie with CR only at the end", in: buildCR("Cookie: mstshash=bob\r", -1), wantErr: ErrNotRDP},
		{name: "cookie with LF only", in: buildCR("Cookie: mstshash=bob\n"+negReq, -1), wantErr: ErrNotRDP},
		{name: "cookie with lone CR", in: buildCR("Cookie: mstshash=b\rob\r\n"+negReq, -1), wantErr: ErrNotRDP},
		{name: "CRLF inside the neg req's room", in: buildCR("Cookie: mstshash=bob"+negReq+"\r\n", -1), want: RDPRequest{User: "bob" + negReq}},
		{name: "junk after cookie", in: buildCR("Cookie: mstshash=bob\r\nxyz", -1), wantErr: ErrNotRDP},
		{name: "short neg req after cookie", in: buildCR("Cookie: mstshash=bob\r\n\x01\x00\x08\x00", -1), wantErr: ErrNotRDP},
		{name: "neg req wrong type after cookie", in: buildCR("Cookie: mstshash=bob\r\n\x02\x00\x08\x00\x03\x00\x00\x00", -1), wantErr: ErrNotRDP},
		{name: "neg req wrong length", in: buildCR("\x01\x00\x09\x00\x03\x00\x00\x00", -1), wantErr: ErrNotRDP},
		{name: "neg req too short", in: buildCR("\x01\x00\x08\x00\x03", -1), wantErr: ErrNotRDP},

		// Proper prefixes.
		{name: "empty", in: nil, wantErr: ErrNeedMore},
		{name: "version only", in: []byte{3}, wantErr: ErrNeedMore},
		{name: "length high byte at max", in: []byte{3, 0, MaxRDPRequest >> 8}, wantErr: ErrNeedMore},
		{name: "header only", in: buildCR("Cookie: mstshash=bob\r\n", -1)[:11], wantErr: ErrNeedMore},
		{name: "cookie cut before CR", in: buildCR("Cookie: mstshash=bob\r\n", -1)[:20], wantErr: ErrNeedMore},
		{name: "cookie cut after CR", in: buildCR("Cookie: mstshash=bob\r\n"+negReq, -1)[:32], wantErr: ErrNeedMore},
		{name: "neg req cut", in: buildCR("Cookie: mstshash=bob\r\n"+negReq, -1)[:36], wantErr: ErrNeedMore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRDP(tt.in)
			if err != tt.wantErr || got != tt.want {
				t.Errorf("ParseRDP(%q) = %+v, %v; want %+v, %v", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err == ErrNeedMore {
				if c := completeRDP(tt.in); c == nil {
					t.Errorf("ErrNeedMore for %q, which has no valid completion", tt.in)
				}
			}
		})
	}
}

func TestParseRDPErrorText(t *testing.T) {
	_, err := ParseRDP([]byte("GET /"))
	if err == nil || !strings.Contains(err.Error(), "not an RDP connection request") {
		t.Errorf("error = %v, want it to say not an RDP connection request", err)
	}
	_, err = ParseRDP([]byte{3, 0})
	if err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("error = %v, want it to say incomplete", err)
	}
}

func TestEncodeRoutingToken(t *testing.T) {
	tests := []struct {
		name string
		ap   netip.AddrPort
		want string
	}{
		{name: "MS-RDPBCGR example", ap: netip.MustParseAddrPort("172.31.249.216:3389"), want: "Cookie: msts=3640205228.15629.0000"},
		{name: "loopback", ap: netip.MustParseAddrPort("127.0.0.2:33389"), want: "Cookie: msts=33554559.28034.0000"},
		{name: "4in6", ap: netip.MustParseAddrPort("[::ffff:172.31.249.216]:3389"), want: "Cookie: msts=3640205228.15629.0000"},
		{name: "ipv6", ap: netip.MustParseAddrPort("[2001:db8::1]:3389"), want: ""},
		{name: "invalid", ap: netip.AddrPort{}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := EncodeRoutingToken(tt.ap); got != tt.want {
				t.Errorf("EncodeRoutingToken(%v) = %q, want %q", tt.ap, got, tt.want)
			}
		})
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		var a [4]byte
		for i := range a {
			a[i] = byte(r.Uint32())
		}
		ap := netip.AddrPortFrom(netip.AddrFrom4(a), uint16(r.Uint32()))
		got, err := ParseRDP(buildCR(EncodeRoutingToken(ap)+"\r\n"+negReq, -1))
		if err != nil || got.Addr != ap || !got.RoutingToken {
			t.Fatalf("round trip of %v: %+v, %v", ap, got, err)
		}
	}
}

// completeRDP extends p, a prefix ParseRDP answered ErrNeedMore for, into a
// complete request as this test understands the format, independently of
// the parser; it returns nil when p cannot be completed that way.
func completeRDP(p []byte) []byte {
	c := bytes.Clone(p)
	var n int
	switch {
	case len(c) >= 4:
		n = int(c[2])<<8 | int(c[3])
	case len(c) == 3:
		n = max(int(c[2])<<8, rdpFixedLen)
	default:
		n = rdpFixedLen + negReqLen
	}
	if n < rdpFixedLen || len(c) > n {
		return nil
	}
	header := []byte{3, 0, byte(n >> 8), byte(n), byte(n - 5), 0xE0, 0, 0, 0x12, 0x34, 0}
	for len(c) < rdpFixedLen {
		c = append(c, header[len(c)])
	}
	size := n - rdpFixedLen
	v := c[rdpFixedLen:]
	neg := func(v []byte, size int) []byte {
		if size < negReqLen {
			return nil
		}
		for len(v) < negReqLen {
			v = append(v, negReq[len(v)])
		}
		for len(v) < size {
			v = append(v, 0)
		}
		return v
	}
	switch {
	case size == 0:
	case len(v) == 0 && size >= negReqLen:
		v = neg(v, size)
	case len(v) > 0 && v[0] == negReqType:
		v = neg(v, size)
	default: // a token line
		i := bytes.IndexAny(v, "\r\n")
		if i < 0 {
			if size-2 < len(v) {
				return nil
			}
			for len(v) < size-2 {
				v = append(v, 'x')
			}
			v = append(v, '\r', '\n')
			break
		}
		if i == len(v)-1 {
			v = append(v, '\n')
		}
		if rest := size - (i + 2); rest > 0 {
			tail := neg(bytes.Clone(v[i+2:]), rest)
			if tail == nil {
				return nil
			}
			v = append(v[:i+2], tail...)
		}
	}
	if v == nil || len(v) != size {
		return nil
	}
	c = append(c[:rdpFixedLen], v...)
	if _, err := ParseRDP(c); err != nil {
		return nil
	}
	return c
}

func FuzzParseRDP(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.hex")
	for _, name := range files {
		f.Add(readHex(f, filepath.Base(name)))
	}
	for _, s := range []string{
		"Cookie: mstshash=bob\r\n" + negReq,
		"Cookie: msts=3640205228.15629.0000\r\n",
		"\r\n", "", negReq, "x\r\n\x01",
	} {
		f.Add(buildCR(s, -1))
	}
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"))
	f.Add([]byte{3, 0, 0x20})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ParseRDP(b)
		switch {
		case err == nil:
			n := int(b[2])<<8 | int(b[3])
			if strings.ContainsAny(got.User, "\r\n") || len(got.User) > MaxRDPUser {
				t.Fatalf("User %q has CR/LF or is too long", got.User)
			}
			if got.Addr.IsValid() && (!got.RoutingToken || !got.Addr.Addr().Is4()) {
				t.Fatalf("Addr %v without an IPv4 routing token: %+v", got.Addr, got)
			}
			if got.RoutingToken && got.User != "" {
				t.Fatalf("both a routing token and a user: %+v", got)
			}
			for i := range n {
				if _, err := ParseRDP(b[:i]); err != ErrNeedMore {
					t.Fatalf("prefix of %d of a valid %d-byte request: %v, want ErrNeedMore", i, n, err)
				}
			}
			if got2, err := ParseRDP(append(bytes.Clone(b[:n]), 0xff, '\r')); err != nil || got2 != got {
				t.Fatalf("trailing bytes changed the result: %+v, %v", got2, err)
			}
		case errors.Is(err, ErrNeedMore):
			if completeRDP(b) == nil {
				t.Fatalf("ErrNeedMore for %q, which no completion makes valid", b)
			}
		case errors.Is(err, ErrNotRDP):
			for _, more := range []string{"", "\r\n", negReq, "\x00\x00\x00\x00"} {
				if _, err := ParseRDP(append(bytes.Clone(b), more...)); err != ErrNotRDP {
					t.Fatalf("%q is not RDP but with %q appended: %v", b, more, err)
				}
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if got != (RDPRequest{}) && err != nil {
			t.Fatalf("result %+v with error %v", got, err)
		}
	})
}
