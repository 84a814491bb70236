package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrumlb/fulcrum/config"
)

func TestCheckTransparent(t *testing.T) {
	tests := []struct {
		name        string
		transparent bool
		probe       error
		want        string // "" for no error
	}{
		{"not transparent: nothing checked", false, unix.EPERM, ""},
		{"privileged", true, nil, ""},
		{"no CAP_NET_ADMIN", true, fmt.Errorf("setsockopt: %w", unix.EPERM),
			`virtual service "web": transparent = true needs the CAP_NET_ADMIN capability`},
		{"other failure", true, unix.ENOPROTOOPT, `virtual service "web": transparent = true: protocol not available`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := probeTransparent
			t.Cleanup(func() { probeTransparent = old })
			probeTransparent = func() error { return tt.probe }
			vs := testService("web", "127.0.0.1:0")
			vs.Transparent = tt.transparent
			err := checkTransparent(testConfig(testService("plain", "127.0.0.1:0"), vs))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestTransparentDialerRefuses(t *testing.T) {
	tests := []struct {
		name, src, raddr, want string
	}{
		{"IPv6 client, IPv4 real server", "2001:db8::7", "10.0.0.1:80", "not the same IP family"},
		{"IPv4 client, IPv6 real server", "192.0.2.7", "[2001:db8::1]:80", "not the same IP family"},
		{"unknown client", "", "10.0.0.1:80", "the client's address is unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var src netip.Addr
			if tt.src != "" {
				src = netip.MustParseAddr(tt.src)
			}
			var d net.Dialer
			err := transparentDialer(&d, src, tt.raddr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestTransparentLoopback: with transparent = true the real server sees the
// client's own address as the source. 127.0.0.0/8 is local, so no TPROXY
// routing is needed here (e2e/tproxy_test.go does it across namespaces);
// IP_TRANSPARENT still needs CAP_NET_ADMIN.
func TestTransparentLoopback(t *testing.T) {
	if err := probeTransparent(); errors.Is(err, unix.EPERM) {
		t.Skip("needs CAP_NET_ADMIN for IP_TRANSPARENT")
	}
	backend := listenTCP(t, func(c net.Conn) {
		io.WriteString(c, c.RemoteAddr().String())
	})
	vs := testService("tcp", "127.0.0.1:0", &config.RealServer{Name: "a", Address: backend, Weight: 1})
	vs.Mode, vs.Transparent = config.ModeTCP, true
	p := startProxy(t, testConfig(vs))
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}
	c, err := d.Dial("tcp", p.Services()[0].Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c)
	if host, _, _ := net.SplitHostPort(string(got)); host != "127.0.0.5" {
		t.Fatalf("real server saw %q, want the client's 127.0.0.5", got)
	}
}
