package proxy

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// v2 builds a PROXY v2 header: the signature, verCmd, fam, then body with
// its length.
func v2(verCmd, fam byte, body ...[]byte) string {
	var b []byte
	for _, p := range body {
		b = append(b, p...)
	}
	h := []byte(proxySigV2)
	h = append(h, verCmd, fam)
	h = binary.BigEndian.AppendUint16(h, uint16(len(b)))
	return string(append(h, b...))
}

// v2ip4 is the address block of an IPv4 v2 header.
func v2ip4(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func v2ip6(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

// proxyHeaderTests are PROXY headers, valid and not, each followed by
// application bytes that must stay unread. client is the address the
// connection then has ("peer": the TCP peer's); err a part of the error.
var proxyHeaderTests = []struct {
	name   string
	header string
	client string
	err    string
}{
	// Version 1 (spec §2.1).
	{name: "v1 tcp4", header: "PROXY TCP4 198.51.100.7 192.0.2.1 56324 443\r\n", client: "198.51.100.7:56324"},
	{name: "v1 tcp6", header: "PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n", client: "[2001:db8::7]:56324"},
	{name: "v1 unknown", header: "PROXY UNKNOWN\r\n", client: "peer"},
	{name: "v1 unknown with addresses", header: "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", client: "peer"},
	{name: "v1 longest", header: "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
		client: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
	{name: "v1 no CR", header: "PROXY TCP4 198.51.100.7 192.0.2.1 56324 443\n", err: "must end with"},
	{name: "v1 too long", header: "PROXY TCP4 " + strings.Repeat("1", 100) + "\r\n", err: "no CRLF within 107"},
	{name: "v1 lower case", header: "proxy TCP4 198.51.100.7 192.0.2.1 56324 443\r\n", err: "no PROXY protocol header"},
	{name: "v1 no space", header: "PROXYTCP4 198.51.100.7 192.0.2.1 56324 443\r\n", err: "no PROXY protocol header"},
	{name: "v1 bad family", header: "PROXY TCP5 198.51.100.7 192.0.2.1 56324 443\r\n", err: "address family"},
	{name: "v1 ipv6 in tcp4", header: "PROXY TCP4 2001:db8::7 192.0.2.1 56324 443\r\n", err: "invalid address"},
	{name: "v1 ipv4 in tcp6", header: "PROXY TCP6 198.51.100.7 2001:db8::1 56324 443\r\n", err: "invalid address"},
	{name: "v1 bad address", header: "PROXY TCP4 198.51.100.777 192.0.2.1 56324 443\r\n", err: "invalid address"},
	{name: "v1 port too big", header: "PROXY TCP4 198.51.100.7 192.0.2.1 65536 443\r\n", err: "port"},
	{name: "v1 negative port", header: "PROXY TCP4 198.51.100.7 192.0.2.1 -1 443\r\n", err: "port"},
	{name: "v1 missing port", header: "PROXY TCP4 198.51.100.7 192.0.2.1 56324\r\n", err: "address family"},
	{name: "v1 extra field", header: "PROXY TCP4 198.51.100.7 192.0.2.1 56324 443 9\r\n", err: "address family"},
	{name: "v1 double space", header: "PROXY  TCP4 198.51.100.7 192.0.2.1 56324 443\r\n", err: "address family"},
	{name: "v1 empty", header: "PROXY \r\n", err: "address family"},

	// Version 2 (spec §2.2).
	{name: "v2 tcp4", header: v2(0x21, 0x11, v2ip4("198.51.100.7", "192.0.2.1", 56324, 443)), client: "198.51.100.7:56324"},
	{name: "v2 tcp6", header: v2(0x21, 0x21, v2ip6("2001:db8::7", "2001:db8::1", 56324, 443)), client: "[2001:db8::7]:56324"},
	{name: "v2 tcp4 with TLVs", header: v2(0x21, 0x11, v2ip4("198.51.100.7", "192.0.2.1", 1, 443),
		[]byte{0x02, 0, 11}, []byte("example.com"), // PP2_TYPE_AUTHORITY
		[]byte{0x04, 1, 44}, make([]byte, 300)), // PP2_TYPE_NOOP, past the first peek
		client: "198.51.100.7:1"},
	{name: "v2 local", header: v2(0x20, 0x00), client: "peer"},
	{name: "v2 local with addresses", header: v2(0x20, 0x11, v2ip4("198.51.100.7", "192.0.2.1", 1, 2)), client: "peer"},
	{name: "v2 local odd length", header: v2(0x20, 0x11, []byte{1, 2, 3}), client: "peer"},
	{name: "v2 unix", header: v2(0x21, 0x31, make([]byte, 216)), client: "peer"},
	{name: "v2 version 1", header: v2(0x11, 0x11, v2ip4("198.51.100.7", "192.0.2.1", 1, 2)), err: "unsupported"},
	{name: "v2 version 3", header: v2(0x31, 0x11, v2ip4("198.51.100.7", "192.0.2.1", 1, 2)), err: "unsupported"},
	{name: "v2 command 2", header: v2(0x22, 0x11, v2ip4("198.51.100.7", "192.0.2.1", 1, 2)), err: "unsupported"},
	{name: "v2 bad family", header: v2(0x21, 0x41, v2ip4("198.51.100.7", "192.0.2.1", 1, 2)), err: "unsupported"},
	{name: "v2 unknown transport", header: v2(0x21, 0x13, v2ip4("198.51.100.7", "192.0.2.1", 1, 2)), err: "unsupported"},
	{name: "v2 proxy unspec", header: v2(0x21, 0x00), err: "unsupported"},
	{name: "v2 short ipv4", header: v2(0x21, 0x11, make([]byte, 11)), err: "invalid length"},
	{name: "v2 short ipv6", header: v2(0x21, 0x21, make([]byte, 35)), err: "invalid length"},
	{name: "v2 too long", header: string(binary.BigEndian.AppendUint16([]byte(proxySigV2+"\x21\x11"), 4097)), err: "longer than 4112"},
	{name: "v2 bad signature", header: "\r\n\r\n\x00\r\nQUIT\r" + v2(0x21, 0x11, v2ip4("198.51.100.7", "192.0.2.1", 1, 2))[12:],
		err: "no PROXY protocol header"},

	// Not a PROXY header at all.
	{name: "http request", header: "GET / HTTP/1.1\r\n", err: "no PROXY protocol header"},
	{name: "tls hello", header: "\x16\x03\x01\x00\xa5", err: "no PROXY protocol header"},
}

// TestReadProxyHeader sends each header on a real TCP connection, in one
// write and byte by byte, and checks the client address, the error, and
// that the bytes after the header are left for the application.
func TestReadProxyHeader(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	const after = "GET / HTTP/1.1\r\n\r\n"
	for _, tt := range proxyHeaderTests {
		for _, split := range []bool{false, true} {
			name := tt.name
			if split {
				name += "/byte by byte"
			}
			t.Run(name, func(t *testing.T) {
				client, server := tcpPair(t)
				go func() {
					if !split {
						client.Write([]byte(tt.header + after))
						return
					}
					for i := range len(tt.header) {
						if _, err := client.Write([]byte{tt.header[i]}); err != nil {
							return
						}
						time.Sleep(time.Millisecond) // separate segments, so the peek sees each
					}
					client.Write([]byte(after))
				}()
				c, err := readProxyHeader(server, trusted, time.Now().Add(5*time.Second))
				if tt.err != "" {
					if err == nil || !strings.Contains(err.Error(), tt.err) {
						t.Fatalf("err = %v, want one with %q", err, tt.err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				want := tt.client
				if want == "peer" {
					want = server.RemoteAddr().String()
				}
				if got := c.RemoteAddr().String(); got != want {
					t.Errorf("RemoteAddr = %s, want %s", got, want)
				}
				if c.LocalAddr().String() != server.LocalAddr().String() {
					t.Errorf("LocalAddr = %s, want the socket's %s", c.LocalAddr(), server.LocalAddr())
				}
				got := make([]byte, len(after))
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(c, got); err != nil || string(got) != after {
					t.Errorf("after the header: %q, %v; want %q", got, err, after)
				}
			})
		}
	}
}

func TestReadProxyHeaderRefused(t *testing.T) {
	tests := []struct {
		name    string
		trusted string
		send    string // then the client waits
		close   bool   // then the client closes
		err     string
		timeout bool
	}{
		{name: "untrusted peer", trusted: "10.0.0.0/8", send: "PROXY UNKNOWN\r\n", err: "peer 127.0.0.1 is not in trusted_proxies"},
		{name: "no trusted proxies", send: "PROXY UNKNOWN\r\n", err: "not in trusted_proxies"},
		{name: "silent", trusted: "127.0.0.1/32", timeout: true},
		{name: "v1 incomplete", trusted: "127.0.0.1/32", send: "PROXY TCP4 198.51.100.7 ", timeout: true},
		{name: "v2 incomplete", trusted: "127.0.0.1/32", send: v2(0x21, 0x11, v2ip4("198.51.100.7", "192.0.2.1", 1, 2))[:20], timeout: true},
		{name: "closed early", trusted: "127.0.0.1/32", send: "PROXY TCP4", close: true, err: "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var trusted []netip.Prefix
			if tt.trusted != "" {
				trusted = []netip.Prefix{netip.MustParsePrefix(tt.trusted)}
			}
			client, server := tcpPair(t)
			client.Write([]byte(tt.send))
			if tt.close {
				client.Close()
			}
			_, err := readProxyHeader(server, trusted, time.Now().Add(100*time.Millisecond))
			switch {
			case err == nil:
				t.Fatal("no error")
			case tt.timeout && !isTimeout(err):
				t.Fatalf("err = %v, want a timeout", err)
			case !tt.timeout && !strings.Contains(err.Error(), tt.err):
				t.Fatalf("err = %v, want one with %q", err, tt.err)
			}
		})
	}
}

// TestProxiedConnUnwrap checks that what needs the socket under a
// proxiedConn still finds it.
func TestProxiedConnUnwrap(t *testing.T) {
	_, server := tcpPair(t)
	pc := &proxiedConn{TCPConn: server.(*net.TCPConn), remote: &net.TCPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 1}}
	if tcpOf(pc) != server {
		t.Error("tcpOf does not unwrap a proxiedConn")
	}
	if rawOf(pc) == nil {
		t.Error("rawOf finds no descriptor")
	}
	if _, ok := sinceLastData(pc); !ok {
		t.Error("sinceLastData does not see the socket")
	}
	var r reader
	r.init(pc)
	if r.raw == nil {
		t.Error("reader of a proxiedConn does not read the descriptor")
	}
	if addrIP(pc.RemoteAddr()) != "198.51.100.7" {
		t.Errorf("addrIP = %s", addrIP(pc.RemoteAddr()))
	}
}

// FuzzProxyHeader checks that no input makes proxyHeaderLen or the parser
// panic, that a measured header parses from exactly its bytes, and that a
// parsed non-LOCAL header has a source.
func FuzzProxyHeader(f *testing.F) {
	for _, tt := range proxyHeaderTests {
		f.Add([]byte(tt.header))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := proxyHeaderLen(b)
		if err != nil || n == 0 || n > len(b) {
			return
		}
		h, err := parseProxyHeader(b[:n])
		if err != nil {
			return
		}
		if !h.Command.IsLocal() && h.SourceAddr == nil {
			t.Fatalf("%q: PROXY header without a source", b[:n])
		}
		if h.SourceAddr != nil {
			_ = h.SourceAddr.String() // must not panic (a nil *TCPAddr would)
		}
	})
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}
