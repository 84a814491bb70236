package healthcheck

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/fulcrumlb/fulcrum/config"
)

// httpProbe sends one HTTP/1.1 request (HTTP/2 to an h2 real server: see
// HTTP2), over TLS for https, and passes when
// the response status is one of the expected ones and, if a body regexp is
// set, the first 64 KiB of the body match it. The request is written by hand
// (the fields are few and fixed) and the response parsed by net/http, which
// knows chunked bodies; redirects are not followed, no proxy from the
// environment is used and nothing is kept alive.
type httpProbe struct {
	tls    bool
	method string
	path   string
	host   string // Host header; "" means the checked address
	// serverName is the TLS server name (SNI, and the name verified): the
	// host part of host, or "" for the checked address's host.
	serverName string
	verify     bool
	rootCAs    *x509.CertPool // nil means the system roots; tests set it
	status     config.StatusRanges
	body       *regexp.Regexp // nil means any body
	h2         bool           // speak HTTP/2 (see HTTP2)
}

var _ Probe = (*httpProbe)(nil)

// userAgent lets real servers tell checks from clients in their logs.
const userAgent = "fulcrum-health-check"

// maxInterim bounds the 1xx responses skipped before the final one.
const maxInterim = 8

func newHTTPProbe(hc *config.HealthCheck) (*httpProbe, error) {
	p := &httpProbe{
		tls:    hc.Type == config.CheckHTTPS,
		method: hc.Method,
		path:   hc.Path,
		host:   hc.Host,
		verify: hc.TLSVerify,
		status: hc.ExpectStatus,
	}
	if p.method == "" {
		p.method = http.MethodGet
	}
	if p.path == "" {
		p.path = "/"
	}
	if len(p.status) == 0 {
		p.status = defaultExpectStatus
	}
	// RFC 9110 §9.1: a method is a token. RFC 9112 §3.2: the request
	// target (origin-form) is an absolute path and optional query, with
	// no spaces or controls. RFC 9110 §7.2: Host is a uri-host[:port].
	if !isToken(p.method) {
		return nil, fmt.Errorf("health_check.method: %q is not an HTTP method", p.method)
	}
	if !strings.HasPrefix(p.path, "/") || !isVisible(p.path) {
		return nil, fmt.Errorf("health_check.path: %q must start with '/' and hold no spaces or control characters", p.path)
	}
	if !isVisible(p.host) {
		return nil, fmt.Errorf("health_check.host: %q holds spaces or control characters", p.host)
	}
	if p.host != "" {
		p.serverName = hostname(p.host)
	}
	if hc.ExpectBody != "" {
		re, err := compile("expect_body", hc.ExpectBody)
		if err != nil {
			return nil, err
		}
		p.body = re
	}
	return p, nil
}

// HTTP2 returns the probe that checks a real server speaking HTTP/2
// (protocol = "h2", a gRPC server, which may not answer HTTP/1.1 at all): an
// http or https probe sends its request over HTTP/2, with prior knowledge
// (RFC 9113 §3.3) or negotiated by ALPN (§3.2); any other probe is p.
func HTTP2(p Probe) Probe {
	hp, ok := p.(*httpProbe)
	if !ok {
		return p
	}
	h2 := *hp
	h2.h2 = true
	return &h2
}

// Check sends the request to addr and judges the response.
func (p *httpProbe) Check(ctx context.Context, addr string) Result {
	c := startCheck(ctx)
	conn, stop, err := c.dial(addr)
	if err != nil {
		return c.failErr("connect "+addr, "connecting to "+addr, err)
	}
	defer stop()
	if p.tls {
		tc := tls.Client(conn, p.tlsConfig(addr))
		if err := tc.HandshakeContext(ctx); err != nil {
			return c.failErr("tls", "in the TLS handshake", err)
		}
		if p.h2 && tc.ConnectionState().NegotiatedProtocol != "h2" {
			return c.fail("tls: the real server did not negotiate HTTP/2 (ALPN h2)")
		}
		conn = tc
	}
	var resp *http.Response
	if p.h2 {
		var res Result
		if resp, res = p.roundTripH2(c, conn, addr); resp == nil {
			return res
		}
	} else {
		if _, err := io.WriteString(conn, p.request(addr)); err != nil {
			return c.failErr("send request", "sending the request", err)
		}
		br := bufio.NewReader(conn)
		req := &http.Request{Method: p.method} // ReadResponse needs it to know whether a body follows
		for i := 0; ; i++ {
			resp, err = http.ReadResponse(br, req)
			if err != nil {
				return c.failErr("read response", "waiting for the response", err)
			}
			// RFC 9110 §15.2: 1xx responses are interim; the final one follows.
			if resp.StatusCode >= 200 || i == maxInterim {
				break
			}
		}
	}
	defer resp.Body.Close()
	got := "status " + strconv.Itoa(resp.StatusCode)
	if !p.status.Match(resp.StatusCode) {
		return c.fail(got + ", want " + p.status.String())
	}
	if p.body == nil {
		return c.pass(got)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRead))
	if err != nil {
		return c.failErr("read body", "reading the body", err)
	}
	if !p.body.Match(body) {
		return c.fail(fmt.Sprintf("body does not match %q (got %s)", p.body, snippet(body)))
	}
	return c.pass(got)
}

// request is the request head for addr.
func (p *httpProbe) request(addr string) string {
	host := p.host
	if host == "" {
		host = addr
	}
	return p.method + " " + p.path + " HTTP/1.1\r\n" +
		"Host: " + host + "\r\n" +
		"User-Agent: " + userAgent + "\r\n" +
		"Accept: */*\r\n" +
		"Connection: close\r\n" +
		"\r\n"
}

// tlsConfig is the client configuration for a check of addr. Without
// verification any certificate passes: real servers often have self-signed
// ones, and the check is about the service answering, not its identity.
func (p *httpProbe) tlsConfig(addr string) *tls.Config {
	name := p.serverName
	if name == "" {
		name = hostname(addr)
	}
	return &tls.Config{
		ServerName:         name,
		InsecureSkipVerify: !p.verify,
		RootCAs:            p.rootCAs,
		NextProtos:         p.alpn(),
	}
}

func (p *httpProbe) alpn() []string {
	if p.h2 {
		return []string{"h2"}
	}
	return []string{"http/1.1"}
}

// roundTripH2 sends the check's request over HTTP/2 on conn (TLS that
// negotiated h2, or plain TCP), made by net/http's client; the response is
// nil when the exchange failed, and the Result says why. Closing conn (the
// check's stop) ends the HTTP/2 connection.
func (p *httpProbe) roundTripH2(c *check, conn net.Conn, addr string) (*http.Response, Result) {
	scheme := "http"
	dial := func(context.Context, string, string) (net.Conn, error) { return conn, nil }
	tr := &http.Transport{Proxy: nil, DisableCompression: true, MaxResponseHeaderBytes: maxRead, Protocols: new(http.Protocols)}
	if p.tls {
		scheme = "https"
		tr.DialTLSContext = dial
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.DialContext = dial
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	cc, err := tr.NewClientConn(c.ctx, scheme, addr)
	if err != nil {
		return nil, c.failErr("http2", "starting HTTP/2", err)
	}
	host := p.host
	if host == "" {
		host = addr
	}
	req, err := http.NewRequestWithContext(c.ctx, p.method, scheme+"://"+addr+p.path, nil)
	if err != nil {
		return nil, c.fail("request: " + err.Error())
	}
	req.Host = host
	req.Header = http.Header{"User-Agent": {userAgent}, "Accept": {"*/*"}}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return nil, c.failErr("read response", "waiting for the response", err)
	}
	return resp, Result{}
}

// hostname is the host part of "host:port", "[v6]:port", "host" or "[v6]".
func hostname(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// isToken reports whether s is an RFC 9110 §5.6.2 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// isVisible reports whether s holds no spaces, controls or DEL, which would
// split or smuggle a request line or header.
func isVisible(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}
