// Package healthcheck decides whether a real server is up.
//
// A Probe performs one active check of one address: a TCP connect (tcp.go),
// an HTTP/1.1 request over plain TCP or TLS (http.go), or a send/expect
// exchange (sendexpect.go). Every check is bounded by its context's deadline
// and returns a Result whose Detail says, in an operator's words, why it
// failed ("status 503, want 200-399", "timeout after 1s waiting for the
// response").
//
// An agent check (agent.go) polls a small agent on the real server that
// replies with one line of HAProxy's agent-check words: up, down, drain,
// maint, ready, NN%, weight:N, maxconn:N and #reason.
//
// A Monitor (monitor.go) runs one real server's checks: the active check
// every interval with jitter and rise/fall hysteresis, the agent check beside
// it, and passive observation of the errors live traffic meets. It tells a
// Reporter about every check, every agent reply and every change between up
// and down. The package decides only the operational state (up or down); the
// admin state (ready, drain, maintenance) and weights the agent reports are
// the caller's business.
package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// Result is the outcome of one check.
type Result struct {
	// OK reports whether the check passed.
	OK bool
	// Detail says briefly what was found: on a pass "connected" or
	// "status 200"; on a failure why, as an operator reads it in a log
	// ("connect 10.0.0.1:80: connection refused").
	Detail string
	// Latency is how long the check took, until it passed or failed.
	Latency time.Duration
}

// Probe is one kind of active check. Check tests the real server at addr
// ("host:port", with the check port already applied) and returns when it
// knows the answer or ctx is done; ctx's deadline is the check's timeout. A
// Probe is safe for concurrent use: one Probe serves every real server of a
// virtual service.
type Probe interface {
	Check(ctx context.Context, addr string) Result
}

// maxRead bounds what a check reads of an HTTP body or a send_expect reply.
const maxRead = 64 << 10

// defaultExpectStatus passes an http/https check when expect_status is
// empty (the configuration's default too).
var defaultExpectStatus = config.StatusRanges{{Lo: 200, Hi: 399}}

// New returns the probe hc configures, or (nil, nil) for type "none" (no
// active check: the server is always up as far as checks go). An empty Type
// means tcp. It compiles the regular expressions and checks the request
// fields, returning an error that names the offending key.
func New(hc *config.HealthCheck) (Probe, error) {
	// The constructors' typed nils must not become non-nil Probes.
	var (
		p   Probe
		err error
	)
	switch hc.Type {
	case "", config.CheckTCP:
		p = tcpProbe{}
	case config.CheckHTTP, config.CheckHTTPS:
		p, err = newHTTPProbe(hc)
	case config.CheckSendExpect:
		p, err = newSendExpectProbe(hc)
	case config.CheckNone:
		return nil, nil
	default:
		err = fmt.Errorf("health_check.type: unknown type %q (known: %s, %s, %s, %s, %s)", hc.Type,
			config.CheckTCP, config.CheckHTTP, config.CheckHTTPS, config.CheckSendExpect, config.CheckNone)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// compile compiles the regular expression of key.
func compile(key, expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("health_check.%s: %w", key, err)
	}
	return re, nil
}

// check times one check and turns its failures into operator-readable
// Details. A probe creates one per Check call.
type check struct {
	ctx    context.Context
	start  time.Time
	budget time.Duration // the ctx deadline from start
	bound  bool          // whether ctx has a deadline
}

func startCheck(ctx context.Context) *check {
	c := &check{ctx: ctx, start: time.Now()}
	if d, ok := ctx.Deadline(); ok {
		c.budget, c.bound = roundBudget(d.Sub(c.start)), true
	}
	return c
}

// roundBudget rounds the time a check had to what was configured: the
// deadline was set a moment before the check started, so "1s" is seen as
// 999.97ms.
func roundBudget(d time.Duration) time.Duration {
	if d >= 100*time.Millisecond {
		return d.Round(10 * time.Millisecond)
	}
	return max(d.Round(time.Millisecond), 0)
}

// pass is a passed check.
func (c *check) pass(detail string) Result {
	return Result{OK: true, Detail: detail, Latency: time.Since(c.start)}
}

// fail is a failed check whose Detail is detail.
func (c *check) fail(detail string) Result {
	return Result{Detail: detail, Latency: time.Since(c.start)}
}

// failErr is a check that failed with err while doing something. A timeout
// (the ctx deadline or the connection's deadline, which is the same) says
// "timeout after 1s " + waiting, as in "timeout after 1s waiting for the
// response"; another error says op + ": " + its cause, as in "connect
// 10.0.0.1:80: connection refused".
func (c *check) failErr(op, waiting string, err error) Result {
	switch {
	case errors.Is(c.ctx.Err(), context.Canceled):
		return c.fail("canceled " + waiting)
	case isTimeout(err) || c.ctx.Err() != nil:
		return c.fail(c.timeout() + " " + waiting)
	}
	msg := cause(err)
	if strings.HasPrefix(msg, op+": ") { // "tls: failed to verify certificate: ..."
		return c.fail(msg)
	}
	return c.fail(op + ": " + msg)
}

// timeout says how long the check had: "timeout after 1s".
func (c *check) timeout() string {
	if !c.bound {
		return "timeout"
	}
	return "timeout after " + c.budget.String()
}

// dial connects to addr within the check's context and bounds the
// connection's reads and writes by the same deadline. Cancelling the
// context unblocks them at once. Call the returned stop when done.
func (c *check) dial(addr string) (conn net.Conn, stop func(), err error) {
	var d net.Dialer
	conn, err = d.DialContext(c.ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := c.ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	unhook := context.AfterFunc(c.ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	stop = func() { unhook(); conn.Close() }
	if h, ok := c.ctx.Value(proxyHeaderKey{}).([]byte); ok { // SendProxy
		if _, err := conn.Write(h); err != nil {
			stop()
			return nil, nil, err
		}
	}
	return conn, stop, nil
}

// isTimeout reports whether err is a deadline passing.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// cause is the words of err an operator needs: the system error of a
// network operation ("connection refused") without Go's "dial tcp
// 127.0.0.1:1234->...:" wrapping, or "connection closed by the server" for an
// early EOF.
func cause(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed by the server"
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

// snippet quotes the first bytes of b for a Detail, so that an operator sees
// what came back instead of what was expected.
func snippet(b []byte) string {
	const n = 64
	if len(b) == 0 {
		return "nothing"
	}
	if len(b) > n {
		return strconv.Quote(string(b[:n])) + "..."
	}
	return strconv.Quote(string(b))
}
