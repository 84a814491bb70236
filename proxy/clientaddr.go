package proxy

import (
	"net/netip"
	"net/textproto"
	"strings"
	"unsafe"
)

// The client address of a request. The connection's client (its TCP peer,
// or the source of its PROXY header) is the client, unless it is a trusted
// proxy (trusted_proxies): then X-Forwarded-For is believed, read right to
// left (each proxy appends the address it got the request from), up to the
// first address that is not itself a trusted proxy: that is the client. An
// untrusted client's X-Forwarded-For is not believed, since anyone can write
// one.
//
// That address is the request's client for the access log, source-IP
// persistence and hashing, and the Forwarded header's for=. The
// X-Forwarded-For sent on is still the client's list with this hop's peer
// appended (RFC 7239 §5.2's model, which real servers expect), and PROXY
// headers and the transparent source use the connection's client.
//
// An X-Forwarded-For element is an IPv4 or IPv6 address, with or without a
// port ("192.0.2.7:5678", "[2001:db8::1]:443"), IPv6 with or without
// brackets; several fields are one list in field order (RFC 9110 §5.3);
// empty elements are skipped (RFC 9110 §5.6.1). An element that is none of
// these ("unknown", an obfuscated name, a zone) stops the walk: nothing left
// of it can be traced, so the client is the address right of it, as the
// last trusted proxy saw it (or the peer).

// trustWalk resolves the client of one request: fed X-Forwarded-For field
// values from the last to the first, it keeps the client found so far.
type trustWalk struct {
	trusted []netip.Prefix
	client  netip.Addr // the peer at first
	done    bool       // the client is found: feed no more
}

// field feeds one X-Forwarded-For field value, whose elements are walked
// right to left.
func (w *trustWalk) field(v string) {
	for !w.done {
		elem := v
		i := strings.LastIndexByte(v, ',')
		if i >= 0 {
			elem, v = v[i+1:], v[:i]
		}
		// OWS around an element (RFC 9110 §5.6.3)
		if elem = textproto.TrimString(elem); elem != "" {
			a, ok := parseForwardedAddr(elem)
			if !ok {
				w.done = true
				return
			}
			w.client = a
			if !isTrusted(w.trusted, a) {
				w.done = true
				return
			}
		}
		if i < 0 {
			return
		}
	}
}

// parseForwardedAddr parses one X-Forwarded-For element: an IP address,
// IPv6 in brackets or not, with an optional port. IPv4-mapped IPv6 is
// unmapped, as peers are.
func parseForwardedAddr(s string) (netip.Addr, bool) {
	host := s
	switch {
	case s == "":
		return netip.Addr{}, false
	case strings.IndexByte(s, '%') >= 0:
		// A zone names an interface of someone else's host; refusing it
		// also keeps ParseAddr from keeping s (see resolveClientBytes).
		return netip.Addr{}, false
	case s[0] == '[':
		end := strings.IndexByte(s, ']')
		if end < 0 || !validPort(s[end+1:], true) {
			return netip.Addr{}, false
		}
		host = s[1:end]
		if strings.IndexByte(host, ':') < 0 { // "[192.0.2.1]" is no IPv6 literal
			return netip.Addr{}, false
		}
	default:
		if i := strings.IndexByte(s, ':'); i >= 0 && strings.IndexByte(s[i+1:], ':') < 0 {
			// One colon: IPv4 and a port. (Two or more: bare IPv6.)
			if !validPort(s[i:], false) {
				return netip.Addr{}, false
			}
			host = s[:i]
			if strings.IndexByte(host, '.') < 0 {
				return netip.Addr{}, false
			}
		}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// validPort reports whether s is ":" and 1 to 5 digits, or empty when
// optional.
func validPort(s string, optional bool) bool {
	if s == "" {
		return optional
	}
	if s[0] != ':' || len(s) < 2 || len(s) > 6 {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// bytesString views b as a string without copying, for parsing an element
// in place. Nothing may keep the string: parseForwardedAddr refuses zones,
// the only part of an address netip would keep, and drops ParseAddr's error,
// which quotes its input.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// resolveClient sets the request's client (cc.client, cc.clientIP) and
// whether its peer is trusted. With no trusted peer or no X-Forwarded-For
// it allocates nothing.
func (cc *clientConn) resolveClient() {
	cc.client, cc.clientIP = cc.peer, cc.peerIP
	trusted := cc.cfg.Trusted
	cc.peerTrusted = len(trusted) > 0 && isTrusted(trusted, cc.peer)
	if !cc.peerTrusted {
		return
	}
	w := trustWalk{trusted: trusted, client: cc.peer}
	hs := cc.req.headers
	for i := len(hs) - 1; i >= 0 && !w.done; i-- {
		if forwardedField(hs[i].name) == xffFor {
			w.field(bytesString(hs[i].value))
		}
	}
	if w.client != cc.peer {
		// The same client is likely to send the next request too.
		if w.client != cc.lastClient {
			cc.lastClient, cc.lastClientIP = w.client, w.client.String()
		}
		cc.client, cc.clientIP = cc.lastClient, cc.lastClientIP
	}
}

// resolveClient does for an HTTP/2, HTTP/3 or net/http HTTP/1.1 request
// what clientConn.resolveClient does.
func (x *h2exchange) resolveClient() {
	h := x.conn
	x.client, x.clientIP, x.peerTrusted = clientOfRequest(x.cfg.Trusted, h.peer, h.peerIP, x.r.Header["X-Forwarded-For"])
}

// clientOfRequest returns the client of a request from peer (peerIP its
// text) with X-Forwarded-For fields xff, and whether peer is trusted.
func clientOfRequest(trusted []netip.Prefix, peer netip.Addr, peerIP string, xff []string) (netip.Addr, string, bool) {
	if len(trusted) == 0 || !isTrusted(trusted, peer) {
		return peer, peerIP, false
	}
	w := trustWalk{trusted: trusted, client: peer}
	for i := len(xff) - 1; i >= 0 && !w.done; i-- {
		w.field(xff[i])
	}
	if w.client == peer {
		return peer, peerIP, true
	}
	return w.client, w.client.String(), true
}

// The Forwarded field (RFC 7239), with forwarded_header: the client's
// fields are kept when its peer is trusted and dropped otherwise (they
// cannot be believed), and this hop's element is appended:
// for=<the request's client>;proto=http|https;host=<Host>. No by=: it would
// name Fulcrum's own address to every real server for no use.

// isForwardedField reports whether name is "Forwarded".
func isForwardedField(name []byte) bool {
	return len(name) == len("forwarded") && equalFold(name, "forwarded")
}

// appendForwarded appends this hop's Forwarded element to dst.
func appendForwarded(dst []byte, client netip.Addr, clientIP string, https bool, host []byte) []byte {
	dst = append(dst, "for="...)
	switch {
	case client.Is6():
		// An IPv6 node is quoted and bracketed (RFC 7239 §6).
		dst = append(dst, `"[`...)
		dst = append(dst, clientIP...)
		dst = append(dst, `]"`...)
	case client.IsValid():
		dst = append(dst, clientIP...)
	default:
		dst = append(dst, "unknown"...) // RFC 7239 §6.3
	}
	if https {
		dst = append(dst, ";proto=https"...)
	} else {
		dst = append(dst, ";proto=http"...)
	}
	if len(host) > 0 {
		dst = append(dst, ";host="...)
		dst = appendForwardedValue(dst, host)
	}
	return dst
}

// appendForwardedValue appends v as a token, or as a quoted-string when it
// holds other characters (a host's ":port", an IPv6 literal's brackets):
// RFC 7239 §4's value = token / quoted-string.
func appendForwardedValue(dst, v []byte) []byte {
	token := true
	for _, c := range v {
		if !isTokenChar(c) {
			token = false
			break
		}
	}
	if token {
		return append(dst, v...)
	}
	dst = append(dst, '"')
	for _, c := range v {
		if c == '"' || c == '\\' {
			dst = append(dst, '\\') // quoted-pair (RFC 9110 §5.6.4)
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}

// isTokenChar reports whether c is a tchar (RFC 9110 §5.6.2).
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
