package healthcheck

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// TestHTTP2: an http or https check made for an h2 real server (HTTP2)
// speaks HTTP/2: with prior knowledge to an h2c-only server, by ALPN over
// TLS; a TLS server without h2 fails it. HTTP2 leaves other probes alone.
func TestHTTP2(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 || r.Header.Get("User-Agent") != userAgent || r.Host != "check.example" {
			http.Error(w, "unexpected "+r.Proto+" "+r.Host, http.StatusBadRequest)
			return
		}
		io.WriteString(w, "healthy "+r.URL.RequestURI())
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h2c := &http.Server{Handler: handler, Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	go h2c.Serve(l)
	t.Cleanup(func() { h2c.Close() })
	tlsServer := func(h2 bool) string {
		srv := httptest.NewUnstartedServer(handler)
		srv.Config.ErrorLog = log.New(io.Discard, "", 0)
		srv.EnableHTTP2 = h2
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String()
	}

	tests := []struct {
		name string
		typ  string
		addr string
		ok   bool
		want string
	}{
		{"h2c", config.CheckHTTP, l.Addr().String(), true, "status 200"},
		{"h2 over TLS", config.CheckHTTPS, tlsServer(true), true, "status 200"},
		{"TLS without h2", config.CheckHTTPS, tlsServer(false), false, "tls: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(&config.HealthCheck{Type: tt.typ, Path: "/health?x=1", Host: "check.example", ExpectBody: `^healthy /health\?x=1$`})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			r := HTTP2(p).Check(ctx, tt.addr)
			if r.OK != tt.ok || !strings.Contains(r.Detail, tt.want) {
				t.Errorf("Check = %v %q, want %v %q", r.OK, r.Detail, tt.ok, tt.want)
			}
		})
	}
	if p := HTTP2(tcpProbe{}); p != (tcpProbe{}) {
		t.Errorf("HTTP2(tcp probe) = %#v", p)
	}
	if p := HTTP2(nil); p != nil {
		t.Errorf("HTTP2(nil) = %#v", p)
	}
}
