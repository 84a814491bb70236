package e2e

import (
	"net"
	"net/http"
	"testing"
)

// TestIPv6Listen serves a VIP on the IPv6 loopback, alone and beside an
// IPv4 one; X-Forwarded-For carries the IPv6 client address.
func TestIPv6Listen(t *testing.T) {
	needCurl(t)
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		l.Close()
	}
	b := newHTTPBackend(t, "web1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.Header.Get("X-Forwarded-For")))
	}))
	v6 := freeAddrOn(t, "::1")
	v4 := freeAddr(t)
	tests := []struct {
		name    string
		listen  []string
		url     string
		wantXFF string
	}{
		{"IPv6 only", []string{v6}, "http://" + v6 + "/", "::1"},
		{"IPv4 and IPv6: IPv6", []string{v4, v6}, "http://" + v6 + "/", "::1"},
		{"IPv4 and IPv6: IPv4", []string{v4, v6}, "http://" + v4 + "/", "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			startFulcrum(t, config{services: []service{{listen: tt.listen, real: []real{b.real("")}}}})
			status, body := curlStatus(t, "-g", tt.url)
			if status != 200 || body != tt.wantXFF {
				t.Errorf("got %d %q, want 200 %q", status, body, tt.wantXFF)
			}
		})
	}
}
