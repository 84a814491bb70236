package healthcheck

import (
	"context"
	"fmt"
	"io"
	"regexp"

	"github.com/fulcrumlb/fulcrum/config"
)

// sendExpectProbe connects, writes its bytes (if any) and passes as soon as
// what the real server replies matches its regular expression. It reads at
// most 64 KiB; the server closing the connection, the deadline or a full
// buffer without a match fail the check. The expression sees the reply from
// its first byte, so "^" anchors there ((?m) makes it match line starts).
type sendExpectProbe struct {
	send   string
	expect *regexp.Regexp
}

var _ Probe = (*sendExpectProbe)(nil)

func newSendExpectProbe(hc *config.HealthCheck) (*sendExpectProbe, error) {
	if hc.Expect == "" {
		return nil, fmt.Errorf("health_check.expect: required for type %q", config.CheckSendExpect)
	}
	re, err := compile("expect", hc.Expect)
	if err != nil {
		return nil, err
	}
	return &sendExpectProbe{send: hc.Send, expect: re}, nil
}

// Check talks to addr.
func (p *sendExpectProbe) Check(ctx context.Context, addr string) Result {
	c := startCheck(ctx)
	conn, stop, err := c.dial(addr)
	if err != nil {
		return c.failErr("connect "+addr, "connecting to "+addr, err)
	}
	defer stop()
	if p.send != "" {
		if _, err := io.WriteString(conn, p.send); err != nil {
			return c.failErr("send", "sending", err)
		}
	}
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			if len(buf) == maxRead {
				return c.fail(fmt.Sprintf("reply does not match %q in its first 64 KiB (got %s)", p.expect, snippet(buf)))
			}
			nb := make([]byte, len(buf), min(2*cap(buf), maxRead))
			copy(nb, buf)
			buf = nb
		}
		n, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 && p.expect.Match(buf) {
			return c.pass("reply matches")
		}
		switch {
		case err == io.EOF:
			return c.fail(fmt.Sprintf("reply does not match %q (got %s)", p.expect, snippet(buf)))
		case err != nil:
			return c.failErr("read reply", fmt.Sprintf("waiting for a reply matching %q (got %s)", p.expect, snippet(buf)), err)
		}
	}
}
