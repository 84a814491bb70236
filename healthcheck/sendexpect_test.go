package healthcheck

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

func TestSendExpect(t *testing.T) {
	// pong answers "PING\r\n" with its replies, one write each, and
	// anything else with "-ERR".
	pong := func(replies ...string) func(net.Conn) {
		return func(c net.Conn) {
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return
			}
			if line != "PING\r\n" {
				replies = []string{"-ERR unknown command\r\n"}
			}
			for _, r := range replies {
				if _, err := c.Write([]byte(r)); err != nil {
					return
				}
			}
			if len(replies) == 0 {
				hold(c)
			}
		}
	}
	big := strings.Repeat("x", maxRead+100)
	tests := []struct {
		name   string
		send   string
		expect string
		server func(net.Conn)
		ok     bool
		want   string
	}{
		{name: "match", send: "PING\r\n", expect: `^\+PONG`, server: pong("+PONG\r\n"), ok: true, want: "reply matches"},
		{name: "match across writes", send: "PING\r\n", expect: `^\+PONG\r\n$`, server: pong("+PO", "NG", "\r\n"), ok: true, want: "reply matches"},
		{name: "wrong send", send: "PONG\r\n", expect: `^\+PONG`, server: pong("+PONG\r\n"),
			want: `reply does not match "^\\+PONG" (got "-ERR unknown command\r\n")`},
		{name: "closed without reply", send: "PING\r\n", expect: `^\+PONG`, server: func(c net.Conn) { c.(*net.TCPConn).CloseWrite(); hold(c) },
			want: `reply does not match "^\\+PONG" (got nothing)`},
		{name: "no reply", send: "PING\r\n", expect: `^\+PONG`, server: pong(),
			want: `timeout after 100ms waiting for a reply matching "^\\+PONG" (got nothing)`},
		{name: "partial reply", send: "PING\r\n", expect: `^\+PONG\r\n`, server: func(c net.Conn) { c.Write([]byte("+PO")); hold(c) },
			want: `timeout after 100ms waiting for a reply matching "^\\+PONG\\r\\n" (got "+PO")`},
		{name: "banner, nothing sent", expect: `^220 `, server: func(c net.Conn) { c.Write([]byte("220 mail.test ESMTP\r\n")) },
			ok: true, want: "reply matches"},
		{name: "multi-line", expect: `(?m)^OK$`, server: func(c net.Conn) { c.Write([]byte("hello\nOK\nbye\n")) },
			ok: true, want: "reply matches"},
		{name: "match within 64 KiB", expect: `OK`, server: func(c net.Conn) { c.Write([]byte(big[:maxRead-2] + "OK")); hold(c) },
			ok: true, want: "reply matches"},
		{name: "no match in 64 KiB", expect: `OK`, server: func(c net.Conn) { c.Write([]byte(big + "OK")); hold(c) },
			want: `reply does not match "OK" in its first 64 KiB (got "` + big[:64] + `"...)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := serve(t, tt.server)
			p, err := New(&config.HealthCheck{Type: config.CheckSendExpect, Send: tt.send, Expect: tt.expect})
			if err != nil {
				t.Fatal(err)
			}
			r := p.Check(timeoutCtx(t, 100*time.Millisecond), addr)
			if r.OK != tt.ok || r.Detail != tt.want {
				t.Errorf("Check = %+v\nwant OK %v, Detail %q", r, tt.ok, tt.want)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		addr := refusedAddr(t)
		p, _ := New(&config.HealthCheck{Type: config.CheckSendExpect, Expect: "x"})
		r := p.Check(timeoutCtx(t, time.Second), addr)
		if want := "connect " + addr + ": connection refused"; r.OK || r.Detail != want {
			t.Errorf("Check = %+v, want %q", r, want)
		}
	})
}
