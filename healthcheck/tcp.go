package healthcheck

import "context"

// tcpProbe passes when a TCP connection to the real server is established
// (the three-way handshake completes); it then closes it at once without
// sending anything.
type tcpProbe struct{}

var _ Probe = tcpProbe{}

// Check connects to addr.
func (tcpProbe) Check(ctx context.Context, addr string) Result {
	c := startCheck(ctx)
	_, stop, err := c.dial(addr)
	if err != nil {
		return c.failErr("connect "+addr, "connecting to "+addr, err)
	}
	r := c.pass("connected")
	stop()
	return r
}
