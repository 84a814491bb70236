package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"github.com/pires/go-proxyproto"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/fulcrumlb/fulcrum/config"
)

// The PROXY protocol on the listener (accept_proxy). A load balancer in
// front of Fulcrum (HAProxy's send-proxy, an AWS NLB, ...) opens each
// connection with a header naming the client it accepted; the header is
// believed only from a peer in trusted_proxies, and its source then stands
// for the client everywhere: logs, X-Forwarded-For, persistence and hashing,
// PROXY headers sent on, the transparent source address.
//
// The header is read without reading past it: the HTTP/1.1 path reads the
// socket itself (reader.readFD), and a TLS handshake or a tcp service's
// first bytes follow the header at once, so whatever comes after it must
// stay in the socket. The bytes are peeked (recvfrom with MSG_PEEK) until
// the header's length is known and all of it has arrived, parsed by
// go-proxyproto, and then exactly that many bytes are read.

// Signatures of the two versions (PROXY protocol spec §2.1, §2.2).
const (
	proxySigV1 = "PROXY "
	proxySigV2 = "\r\n\r\n\x00\r\nQUIT\n"
)

// proxyV1Max is the longest v1 header, CRLF included: "PROXY UNKNOWN" and two
// full IPv6 addresses and ports (spec §2.1).
const proxyV1Max = 107

// proxyV2Fixed is the v2 header's fixed part: the signature, the version
// and command, the family and the 16-bit length of what follows (spec §2.2).
const proxyV2Fixed = 16

// proxyPeekSize is the first peek's size: a v1 header, or a v2 header with
// IPv6 addresses and a few TLVs, fits.
const proxyPeekSize = 256

// Why a PROXY header was refused.
var (
	errProxyMissing  = errors.New("no PROXY protocol header (the connection does not start with one)")
	errProxyV1Long   = fmt.Errorf("PROXY v1 header has no CRLF within %d bytes", proxyV1Max)
	errProxyV2Long   = fmt.Errorf("PROXY v2 header longer than %d bytes", proxyV2Fixed+int(proxyproto.MaxV2HeaderSize))
	errProxyTrailing = errors.New("PROXY header not read whole by the parser")
	errProxyNotTCP   = errors.New("accept_proxy needs a TCP connection")
)

// proxiedConn is a client connection that began with a PROXY header: its
// RemoteAddr is the client the header names. Embedding *net.TCPConn keeps
// SyscallConn (rawOf), CloseWrite, ReadFrom and WriteTo (splice) promoted;
// code that needs the *net.TCPConn itself unwraps it with tcpOf.
//
// LocalAddr stays the socket's: the address the client reached on the proxy
// in front (the header's destination) is not Fulcrum's, so X-Forwarded-Port
// keeps naming Fulcrum's own VIP port.
type proxiedConn struct {
	*net.TCPConn
	remote *net.TCPAddr
}

func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }

// tcpOf returns the TCP connection under c (a *proxiedConn, or c itself),
// or nil if c is not TCP. A TLS layer is not looked through.
func tcpOf(c net.Conn) *net.TCPConn {
	switch c := c.(type) {
	case *net.TCPConn:
		return c
	case *proxiedConn:
		return c.TCPConn
	}
	return nil
}

// acceptProxy reads the PROXY header a connection of a service with
// accept_proxy starts with, within timeouts.client_header. It returns the
// connection to serve, whose RemoteAddr is the client; or nil, having closed
// c and logged why, when the peer is not trusted or the header is missing,
// malformed or late.
func (s *Service) acceptProxy(c net.Conn, vs *config.VirtualService) net.Conn {
	pc, err := readProxyHeader(c, vs.Trusted, time.Now().Add(vs.Timeouts.ClientHeader))
	if err != nil {
		if isTimeout(err) {
			err = fmt.Errorf("PROXY header not received within timeouts.client_header: %w", err)
		}
		s.log.Warn("PROXY header refused, connection closed", zap.String("client", addrIP(c.RemoteAddr())), zap.Error(err))
		c.Close()
		return nil
	}
	return pc
}

// readProxyHeader checks that c's peer is trusted, then reads its PROXY
// header by deadline and returns c as the header describes it. A v1
// "UNKNOWN" or a v2 LOCAL header (the proxy's own connection, a health
// check) leaves the peer as the client.
func readProxyHeader(c net.Conn, trusted []netip.Prefix, deadline time.Time) (net.Conn, error) {
	if peer := addrOf(c.RemoteAddr()); !isTrusted(trusted, peer) {
		return nil, fmt.Errorf("peer %s is not in trusted_proxies: a PROXY header from it is not believed", peer)
	}
	tc := tcpOf(c)
	if tc == nil {
		return nil, errProxyNotTCP
	}
	tc.SetReadDeadline(deadline)
	defer tc.SetReadDeadline(time.Time{})
	b, err := peekProxyHeader(tc)
	if err != nil {
		return nil, err
	}
	h, err := parseProxyHeader(b)
	if err != nil {
		return nil, err
	}
	// The header is whole in the socket: take exactly its bytes.
	if _, err := io.ReadFull(tc, b); err != nil {
		return nil, err
	}
	if h.Command.IsLocal() {
		return c, nil
	}
	src, ok := h.SourceAddr.(*net.TCPAddr)
	if !ok {
		// A UDP or UNIX source has no meaning for a TCP client: the
		// peer stays the client, as for UNKNOWN.
		return c, nil
	}
	return &proxiedConn{TCPConn: tc, remote: src}, nil
}

// peekProxyHeader waits until the socket holds a whole PROXY header and
// returns a copy of it, leaving every byte in the socket.
func peekProxyHeader(tc *net.TCPConn) ([]byte, error) {
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, proxyPeekSize)
	var n, hlen int
	var herr error
	err = raw.Read(func(fd uintptr) bool {
		for {
			m, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
				syscall.MSG_PEEK, 0, 0)
			switch {
			case errno == syscall.EINTR:
				continue
			case errno == syscall.EAGAIN:
				return false // wait in the poller for more bytes
			case errno != 0:
				herr = errno
				return true
			case m == 0:
				herr = io.ErrUnexpectedEOF // closed before the header was whole
				return true
			}
			n = int(m)
			hlen, herr = proxyHeaderLen(buf[:n])
			switch {
			case herr != nil:
				return true
			case hlen > len(buf):
				// A v2 header with TLVs beyond the first peek: peek it
				// all (bounded by proxyproto.MaxV2HeaderSize).
				buf = append(buf, make([]byte, hlen-len(buf))...)
				continue
			case hlen > 0 && hlen <= n:
				return true
			}
			// Part of the header is here. A peek sees the bytes, not
			// the end of the stream behind them: a client that has
			// closed (FIN received) will send no more.
			if closedByPeer(fd) {
				herr = io.ErrUnexpectedEOF
				return true
			}
			// The bytes stay in the socket, and the poller wakes on the
			// next ones (epoll is edge triggered: every arrival, the FIN
			// too, is an edge).
			return false
		}
	})
	if err != nil {
		return nil, err
	}
	if herr != nil {
		return nil, herr
	}
	return buf[:hlen], nil
}

// closedByPeer reports whether the peer of socket fd has closed its side
// (TCP state CLOSE_WAIT).
func closedByPeer(fd uintptr) bool {
	info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	return err == nil && info.State == unix.BPF_TCP_CLOSE_WAIT
}

// proxyHeaderLen returns the length of the PROXY header b starts with: 0
// when more bytes are needed to know it, an error when b cannot start one.
// The length may be more than len(b).
func proxyHeaderLen(b []byte) (int, error) {
	switch {
	case len(b) == 0:
		return 0, nil
	case b[0] == proxySigV1[0]:
		if k := min(len(b), len(proxySigV1)); string(b[:k]) != proxySigV1[:k] {
			return 0, errProxyMissing
		}
		if i := bytes.IndexByte(b[:min(len(b), proxyV1Max)], '\n'); i >= 0 {
			return i + 1, nil
		}
		if len(b) >= proxyV1Max {
			return 0, errProxyV1Long
		}
		return 0, nil
	case b[0] == proxySigV2[0]:
		if k := min(len(b), len(proxySigV2)); string(b[:k]) != proxySigV2[:k] {
			return 0, errProxyMissing
		}
		if len(b) < proxyV2Fixed {
			return 0, nil
		}
		l := binary.BigEndian.Uint16(b[14:16])
		if l > proxyproto.MaxV2HeaderSize {
			return 0, errProxyV2Long
		}
		return proxyV2Fixed + int(l), nil
	}
	return 0, errProxyMissing
}

// parseProxyHeader parses b, exactly one whole PROXY header (as
// proxyHeaderLen measured it).
func parseProxyHeader(b []byte) (*proxyproto.Header, error) {
	br := bufio.NewReaderSize(bytes.NewReader(b), max(len(b), proxyV2Fixed))
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, err
	}
	if br.Buffered() != 0 {
		return nil, errProxyTrailing
	}
	return h, nil
}

// isTrusted reports whether a is in one of the prefixes (trusted_proxies,
// parsed and unmapped by config).
func isTrusted(trusted []netip.Prefix, a netip.Addr) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
