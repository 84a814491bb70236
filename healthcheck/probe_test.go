package healthcheck

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		hc      config.HealthCheck
		want    string // the probe's type; "" for nil
		wantErr string
	}{
		{name: "default is tcp", hc: config.HealthCheck{}, want: "healthcheck.tcpProbe"},
		{name: "tcp", hc: config.HealthCheck{Type: "tcp"}, want: "healthcheck.tcpProbe"},
		{name: "http", hc: config.HealthCheck{Type: "http", ExpectBody: "^OK$"}, want: "*healthcheck.httpProbe"},
		{name: "https", hc: config.HealthCheck{Type: "https"}, want: "*healthcheck.httpProbe"},
		{name: "send_expect", hc: config.HealthCheck{Type: "send_expect", Send: "PING\r\n", Expect: `^\+PONG`}, want: "*healthcheck.sendExpectProbe"},
		{name: "none", hc: config.HealthCheck{Type: "none"}},
		{name: "unknown type", hc: config.HealthCheck{Type: "icmp"},
			wantErr: `health_check.type: unknown type "icmp" (known: tcp, http, https, send_expect, none)`},
		{name: "bad expect_body", hc: config.HealthCheck{Type: "http", ExpectBody: "(OK"},
			wantErr: "health_check.expect_body: error parsing regexp: missing closing ): `(OK`"},
		{name: "bad expect", hc: config.HealthCheck{Type: "send_expect", Expect: "a**"},
			wantErr: "health_check.expect: error parsing regexp: invalid nested repetition operator: `**`"},
		{name: "send_expect without expect", hc: config.HealthCheck{Type: "send_expect", Send: "x"},
			wantErr: `health_check.expect: required for type "send_expect"`},
		{name: "bad method", hc: config.HealthCheck{Type: "http", Method: "GE T"},
			wantErr: `health_check.method: "GE T" is not an HTTP method`},
		{name: "relative path", hc: config.HealthCheck{Type: "http", Path: "health"},
			wantErr: `health_check.path: "health" must start with '/' and hold no spaces or control characters`},
		{name: "path with CRLF", hc: config.HealthCheck{Type: "http", Path: "/\r\nX: y"},
			wantErr: `health_check.path: "/\r\nX: y" must start with '/'`},
		{name: "host with space", hc: config.HealthCheck{Type: "https", Host: "a b"},
			wantErr: `health_check.host: "a b" holds spaces or control characters`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(&tt.hc)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("New: err = %v, want %q", err, tt.wantErr)
				}
				if p != nil {
					t.Errorf("New = %#v with an error, want nil", p)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got := typeName(p); got != tt.want {
				t.Errorf("New = %s, want %s", got, tt.want)
			}
		})
	}
}

func typeName(p Probe) string {
	if p == nil {
		return ""
	}
	return fmt.Sprintf("%T", p)
}

func TestTCP(t *testing.T) {
	open := serve(t, func(net.Conn) {})
	refused := refusedAddr(t)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		addr string
		ok   bool
		want string
	}{
		{name: "accepted", ctx: timeoutCtx(t, time.Second), addr: open, ok: true, want: "connected"},
		{name: "refused", ctx: timeoutCtx(t, time.Second), addr: refused, want: "connect " + refused + ": connection refused"},
		{name: "canceled", ctx: canceled, addr: open, want: "canceled connecting to " + open},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tcpProbe{}.Check(tt.ctx, tt.addr)
			if r.OK != tt.ok || r.Detail != tt.want {
				t.Errorf("Check = %+v, want OK %v, Detail %q", r, tt.ok, tt.want)
			}
			if r.Latency <= 0 {
				t.Errorf("Latency = %v, want > 0", r.Latency)
			}
		})
	}
}

func TestFailErrTimeout(t *testing.T) {
	// A deadline that passed before the connect is a timeout, with the
	// budget the check had.
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	r := tcpProbe{}.Check(ctx, refusedAddr(t))
	if r.OK || !strings.HasPrefix(r.Detail, "timeout after 0s connecting to 127.0.0.1:") {
		t.Errorf("Check = %+v, want a timeout", r)
	}
}

func TestRoundBudget(t *testing.T) {
	tests := []struct{ in, want time.Duration }{
		{time.Second - 30*time.Microsecond, time.Second},
		{time.Second - 4*time.Millisecond, time.Second},
		{1500 * time.Millisecond, 1500 * time.Millisecond},
		{100*time.Millisecond - 300*time.Microsecond, 100 * time.Millisecond},
		{50*time.Millisecond - 300*time.Microsecond, 50 * time.Millisecond},
		{-time.Millisecond, 0},
	}
	for _, tt := range tests {
		t.Run(tt.in.String(), func(t *testing.T) {
			if got := roundBudget(tt.in); got != tt.want {
				t.Errorf("roundBudget(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
