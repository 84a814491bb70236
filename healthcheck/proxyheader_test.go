package healthcheck

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

func TestSendProxy(t *testing.T) {
	tests := []struct {
		name, version, want string
	}{
		{"v1", config.SendProxyV1, "PROXY UNKNOWN\r\n"},
		{"v2", config.SendProxyV2, "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"},
		{"none", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			got := make(chan string, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					got <- err.Error()
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				b, _ := io.ReadAll(c)
				got <- string(b)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			p := SendProxy(tcpProbe{}, tt.version)
			if r := p.Check(ctx, l.Addr().String()); !r.OK {
				t.Fatalf("check failed: %s", r.Detail)
			}
			if g := <-got; g != tt.want {
				t.Fatalf("real server got %q, want %q", g, tt.want)
			}
		})
	}
	if SendProxy(nil, config.SendProxyV2) != nil {
		t.Fatal("SendProxy(nil) is not nil")
	}
}
