package proxy

import (
	"bytes"
	"net/netip"
	"net/textproto"
	"strings"
	"testing"

	"github.com/fulcrumlb/fulcrum/config"
)

func TestParseForwardedAddr(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" when not an address
	}{
		{"192.0.2.7", "192.0.2.7"},
		{"192.0.2.7:5678", "192.0.2.7"},
		{"2001:db8::1", "2001:db8::1"},
		{"[2001:db8::1]", "2001:db8::1"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:1", "192.0.2.7"},
		{"::1", "::1"},
		{"unknown", ""},
		{"_hidden", ""},
		{"192.0.2.7:", ""},
		{"192.0.2.7:123456", ""},
		{"192.0.2.7:http", ""},
		{"192.0.2", ""},
		{"[192.0.2.7]", ""},
		{"[2001:db8::1", ""},
		{"[2001:db8::1]443", ""},
		{"[2001:db8::1]:", ""},
		{"fe80::1%eth0", ""},
		{"[fe80::1%eth0]:80", ""},
		{"2001:db8::1:80:", ""},
		{"example.com:80", ""},
		{"192.0.2.7 ", ""}, // elements come trimmed
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, ok := parseForwardedAddr(tt.in)
			got := ""
			if ok {
				got = a.String()
			}
			if got != tt.want {
				t.Errorf("parseForwardedAddr(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestTrustWalk checks the X-Forwarded-For trust rules: from a trusted peer
// the right-most untrusted address is the client.
func TestTrustWalk(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")}
	tests := []struct {
		name   string
		peer   string
		fields []string // X-Forwarded-For fields in order
		want   string
	}{
		{name: "no field", peer: "10.0.0.1", want: "10.0.0.1"},
		{name: "one client", peer: "10.0.0.1", fields: []string{"203.0.113.9"}, want: "203.0.113.9"},
		{name: "client then proxy", peer: "10.0.0.1", fields: []string{"203.0.113.9, 10.0.0.2"}, want: "203.0.113.9"},
		{name: "forged left of client", peer: "10.0.0.1", fields: []string{"1.1.1.1, 203.0.113.9, 10.0.0.2"}, want: "203.0.113.9"},
		{name: "all trusted", peer: "10.0.0.1", fields: []string{"10.9.9.9, 10.0.0.3, 10.0.0.2"}, want: "10.9.9.9"},
		{name: "fields in order", peer: "10.0.0.1", fields: []string{"1.1.1.1, 203.0.113.9", "10.0.0.3", "10.0.0.2"}, want: "203.0.113.9"},
		{name: "later field wins", peer: "10.0.0.1", fields: []string{"203.0.113.9", "198.51.100.1"}, want: "198.51.100.1"},
		{name: "spaces and tabs", peer: "10.0.0.1", fields: []string{" 203.0.113.9 ,\t10.0.0.2\t"}, want: "203.0.113.9"},
		{name: "empty elements", peer: "10.0.0.1", fields: []string{"203.0.113.9,, 10.0.0.2,", ""}, want: "203.0.113.9"},
		{name: "ports", peer: "10.0.0.1", fields: []string{"203.0.113.9:5678, 10.0.0.2:80"}, want: "203.0.113.9"},
		{name: "ipv6", peer: "10.0.0.1", fields: []string{"2001:db8::9, [2001:db8:ffff::1]:443"}, want: "2001:db8::9"},
		{name: "ipv6 bracketed client", peer: "2001:db8:ffff::2", fields: []string{"[2001:db8::9]"}, want: "2001:db8::9"},
		{name: "mapped", peer: "10.0.0.1", fields: []string{"::ffff:203.0.113.9"}, want: "203.0.113.9"},
		{name: "unparsable stops", peer: "10.0.0.1", fields: []string{"203.0.113.9, unknown, 10.0.0.2"}, want: "10.0.0.2"},
		{name: "unparsable right away", peer: "10.0.0.1", fields: []string{"203.0.113.9, unknown"}, want: "10.0.0.1"},
		{name: "garbage", peer: "10.0.0.1", fields: []string{"<script>"}, want: "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := trustWalk{trusted: trusted, client: netip.MustParseAddr(tt.peer)}
			for i := len(tt.fields) - 1; i >= 0 && !w.done; i-- {
				w.field(tt.fields[i])
			}
			if got := w.client.String(); got != tt.want {
				t.Errorf("client = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestResolveClient checks the HTTP/1.1 request's client, and that it
// allocates nothing when there is nothing to believe.
func TestResolveClient(t *testing.T) {
	tests := []struct {
		name    string
		peer    string
		trusted []string
		head    string
		want    string
	}{
		{name: "untrusted peer", peer: "127.0.0.1", trusted: []string{"10.0.0.0/8"},
			head: "X-Forwarded-For: 203.0.113.9\r\n", want: "127.0.0.1"},
		{name: "no trusted proxies", peer: "127.0.0.1",
			head: "X-Forwarded-For: 203.0.113.9\r\n", want: "127.0.0.1"},
		{name: "trusted", peer: "127.0.0.1", trusted: []string{"127.0.0.0/8", "10.0.0.0/8"},
			head: "X-Forwarded-For: 203.0.113.9, 10.0.0.1\r\n", want: "203.0.113.9"},
		{name: "trusted, two fields", peer: "127.0.0.1", trusted: []string{"127.0.0.0/8", "10.0.0.0/8"},
			head: "X-Forwarded-For: 203.0.113.9\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.1\r\n", want: "203.0.113.9"},
		{name: "trusted, no field", peer: "127.0.0.1", trusted: []string{"127.0.0.0/8"}, want: "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := requestFrom(t, tt.peer, tt.trusted, tt.head)
			cc.resolveClient()
			if got := cc.client.String(); got != tt.want || cc.clientIP != tt.want {
				t.Errorf("client = %s (%q), want %s", got, cc.clientIP, tt.want)
			}
			if tt.want == tt.peer {
				if n := testing.AllocsPerRun(100, cc.resolveClient); n != 0 {
					t.Errorf("%v allocations", n)
				}
			}
		})
	}
}

// requestFrom is a clientConn holding a parsed request with the header
// fields head, from peer.
func requestFrom(t *testing.T, peer string, trusted []string, head string) *clientConn {
	t.Helper()
	vs := &config.VirtualService{}
	for _, s := range trusted {
		vs.Trusted = append(vs.Trusted, netip.MustParsePrefix(s))
	}
	cc := &clientConn{cfg: vs, peer: netip.MustParseAddr(peer), peerIP: peer}
	if err := cc.req.parse([]byte("GET / HTTP/1.1\r\nHost: www.example.com\r\n" + head + "\r\n")); err != nil {
		t.Fatal(err)
	}
	return cc
}

func TestAppendForwarded(t *testing.T) {
	tests := []struct {
		client string
		https  bool
		host   string
		want   string
	}{
		{"192.0.2.60", false, "example.com", "for=192.0.2.60;proto=http;host=example.com"},
		{"2001:db8:cafe::17", true, "example.com", `for="[2001:db8:cafe::17]";proto=https;host=example.com`},
		{"192.0.2.60", false, "example.com:8080", `for=192.0.2.60;proto=http;host="example.com:8080"`},
		{"192.0.2.60", false, "[2001:db8::1]:80", `for=192.0.2.60;proto=http;host="[2001:db8::1]:80"`},
		{"192.0.2.60", false, `a"b\c`, `for=192.0.2.60;proto=http;host="a\"b\\c"`},
		{"192.0.2.60", false, "", "for=192.0.2.60;proto=http"},
		{"", false, "x", "for=unknown;proto=http;host=x"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			var a netip.Addr
			if tt.client != "" {
				a = netip.MustParseAddr(tt.client)
			}
			if got := string(appendForwarded(nil, a, tt.client, tt.https, []byte(tt.host))); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestWriteRequestHeadForwarded checks which Forwarded elements reach the
// real server: a trusted peer's are kept, an untrusted one's dropped.
func TestWriteRequestHeadForwarded(t *testing.T) {
	tests := []struct {
		name    string
		trusted []string
		want    string
	}{
		{name: "untrusted", want: "Forwarded: for=127.0.0.1;proto=http;host=www.example.com\r\n"},
		{name: "trusted", trusted: []string{"127.0.0.1/32"},
			want: "Forwarded: for=198.51.100.1, for=10.0.0.1;proto=http;host=www.example.com\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := requestFrom(t, "127.0.0.1", tt.trusted, "Forwarded: for=198.51.100.1\r\nX-Forwarded-For: 10.0.0.1\r\n")
			cc.cfg.ForwardedHeader = true
			cc.svc = &Service{}
			cc.resolveClient()
			var out bytes.Buffer
			cc.toSrv.reset(captureConn{out: &out}, nil)
			cc.writeRequestHead(&cc.toSrv)
			cc.toSrv.flush()
			head := out.String()
			if strings.Count(head, "Forwarded: ") != 1 || !strings.Contains(head, tt.want) {
				t.Errorf("head:\n%s\nwant one Forwarded field: %q", head, tt.want)
			}
		})
	}
}

// FuzzTrustWalk checks that no X-Forwarded-For value panics the walk, and
// that the client found is the peer or an address the value holds.
func FuzzTrustWalk(f *testing.F) {
	for _, s := range []string{"203.0.113.9, 10.0.0.1", "[2001:db8::1]:443,,unknown", "1.2.3.4:5", "::ffff:1.2.3.4", ","} {
		f.Add(s)
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::/0")}
	peer := netip.MustParseAddr("10.0.0.1")
	f.Fuzz(func(t *testing.T, v string) {
		w := trustWalk{trusted: trusted, client: peer}
		w.field(v)
		if !w.client.IsValid() {
			t.Fatalf("%q: invalid client", v)
		}
		// One element that parses is the client (every address is
		// trusted here, so the walk goes on past it to none).
		if a, ok := parseForwardedAddr(textproto.TrimString(v)); ok && !strings.Contains(v, ",") && w.client != a {
			t.Fatalf("%q: client %s, want %s", v, w.client, a)
		}
	})
}

// TestClientOfRequest checks the handler path's resolution (HTTP/2, HTTP/3,
// net/http HTTP/1.1), which reads net/http's header fields.
func TestClientOfRequest(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		peer        string
		xff         []string
		want        string
		wantTrusted bool
	}{
		{"192.0.2.1", []string{"203.0.113.9"}, "192.0.2.1", false},
		{"10.0.0.1", nil, "10.0.0.1", true},
		{"10.0.0.1", []string{"203.0.113.9", "10.0.0.2"}, "203.0.113.9", true},
		{"10.0.0.1", []string{"203.0.113.9, unknown"}, "10.0.0.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.peer+" "+strings.Join(tt.xff, "|"), func(t *testing.T) {
			a, s, tr := clientOfRequest(trusted, netip.MustParseAddr(tt.peer), tt.peer, tt.xff)
			if a.String() != tt.want || s != tt.want || tr != tt.wantTrusted {
				t.Errorf("got %s %q %v, want %s %v", a, s, tr, tt.want, tt.wantTrusted)
			}
		})
	}
}
