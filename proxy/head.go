package proxy

import (
	"bytes"
	"errors"
)

// Parsing of HTTP/1.1 message heads (RFC 9112 §2–§6), in place: every field is
// a slice into the connection's read buffer, so parsing allocates nothing.

// maxHeaders bounds the header fields of one head (HAProxy's default is 101).
const maxHeaders = 100

var (
	errFull        = errors.New("head larger than the buffer")
	errTooMany     = errors.New("too many header fields")
	errBadLine     = errors.New("malformed start line")
	errBadVersion  = errors.New("unsupported HTTP version")
	errBadHeader   = errors.New("malformed header field")
	errBadLength   = errors.New("invalid Content-Length")
	errBadEncoding = errors.New("unsupported Transfer-Encoding")
	errSmuggle     = errors.New("both Content-Length and Transfer-Encoding")
	errNoHost      = errors.New("missing or repeated Host header")
)

// header is one field line; name and value are trimmed of whitespace.
type header struct {
	name, value []byte
}

// head holds what requests and responses share.
type head struct {
	headers []header
	// minor is the HTTP/1.x minor version.
	minor int
	// contentLength is the body length, or -1 when absent.
	contentLength int64
	chunked       bool
	// Connection header tokens (RFC 9112 §9.6).
	connClose, connKeepAlive, connUpgrade bool
	// connTokens are the other Connection tokens: fields the peer declared
	// hop-by-hop (RFC 9110 §7.6.1), removed when forwarding.
	connTokens [8][]byte
	nTokens    int
	upgrade    []byte
	trailersTE bool // "TE: trailers"
	size       int  // bytes of the head, including the final empty line
}

// request is a parsed request head.
type request struct {
	head
	method, target, line []byte
	host                 []byte
	expectContinue       bool
}

// response is a parsed response head.
type response struct {
	head
	status int
	line   []byte // status line without CRLF
}

// headEnd returns the length of the head at the start of b (through the empty
// line that ends it), or -1 when b does not hold a whole head yet. Bare LF
// line ends are accepted (RFC 9112 §2.2).
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		if i < len(b) && b[i] == '\n' {
			return i + 1
		}
		if i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n' {
			return i + 2
		}
	}
}

// nextLine splits b at its first line end, returning the line without CRLF.
func nextLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// parseRequest parses the head b (as delimited by headEnd).
func (r *request) parse(b []byte) error {
	r.reset(len(b))
	r.method, r.target, r.host, r.expectContinue = nil, nil, nil, false
	line, rest := nextLine(b)
	// Tolerate empty lines before the request line (RFC 9112 §2.2).
	for len(line) == 0 && len(rest) > 0 {
		line, rest = nextLine(rest)
	}
	r.line = line
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return errBadLine
	}
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp2 <= sp1+1 {
		return errBadLine
	}
	r.method, r.target = line[:sp1], line[sp1+1:sp2]
	for _, c := range r.method {
		if !isTchar(c) {
			return errBadLine
		}
	}
	for _, c := range r.target {
		if c <= ' ' || c == 0x7f {
			return errBadLine
		}
	}
	minor, ok := parseVersion(line[sp2+1:])
	if !ok {
		return errBadVersion
	}
	r.minor = minor
	if err := r.parseFields(rest); err != nil {
		return err
	}
	hosts := 0
	for i := range r.headers {
		h := &r.headers[i]
		switch {
		case equalFold(h.name, "host"):
			r.host = h.value
			hosts++
		case equalFold(h.name, "expect"):
			r.expectContinue = equalFold(h.value, "100-continue")
		}
	}
	// RFC 9112 §3.2: a 1.1 request without Host, or with several, is a 400.
	if hosts > 1 || (hosts == 0 && minor >= 1) {
		return errNoHost
	}
	return nil
}

// parse parses a response head b (as delimited by headEnd).
func (r *response) parse(b []byte) error {
	r.reset(len(b))
	line, rest := nextLine(b)
	r.line = line
	// HTTP-version SP 3DIGIT SP [reason]
	if len(line) < 12 || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return errBadLine
	}
	minor, ok := parseVersion(line[:8])
	if !ok {
		return errBadVersion
	}
	r.minor = minor
	st := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return errBadLine
		}
		st = st*10 + int(c-'0')
	}
	if st < 100 {
		return errBadLine
	}
	r.status = st
	return r.parseFields(rest)
}

func (h *head) reset(size int) {
	h.headers = h.headers[:0]
	h.contentLength = -1
	h.chunked, h.connClose, h.connKeepAlive, h.connUpgrade, h.trailersTE = false, false, false, false, false
	h.nTokens = 0
	h.upgrade = nil
	h.size = size
}

// parseVersion accepts "HTTP/1.0" and "HTTP/1.1"; other 1.x minors are
// treated as 1.1 (RFC 9110 §2.5).
func parseVersion(v []byte) (minor int, ok bool) {
	if len(v) != 8 || string(v[:7]) != "HTTP/1." || v[7] < '0' || v[7] > '9' {
		return 0, false
	}
	if v[7] == '0' {
		return 0, true
	}
	return 1, true
}

// parseFields parses the field lines and the framing and connection fields
// among them.
func (h *head) parseFields(b []byte) error {
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		if len(line) == 0 {
			break
		}
		// RFC 9112 §5.2: obsolete line folding is rejected.
		if line[0] == ' ' || line[0] == '\t' {
			return errBadHeader
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errBadHeader
		}
		name := line[:colon]
		for _, c := range name { // also rejects "name :" (RFC 9112 §5.1)
			if !isTchar(c) {
				return errBadHeader
			}
		}
		value := trimOWS(line[colon+1:])
		for _, c := range value {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return errBadHeader
			}
		}
		if len(h.headers) == maxHeaders {
			return errTooMany
		}
		h.headers = append(h.headers, header{name, value})
		if err := h.noteField(name, value); err != nil {
			return err
		}
	}
	if h.chunked && h.contentLength >= 0 {
		// RFC 9112 §6.1: a request with both is an attack vector; refuse it
		// rather than guess which one the next hop believes.
		return errSmuggle
	}
	return nil
}

// noteField records what the proxy itself needs to know from one field.
func (h *head) noteField(name, value []byte) error {
	switch len(name) {
	case 2:
		if equalFold(name, "te") {
			h.trailersTE = hasToken(value, "trailers")
		}
	case 7:
		if equalFold(name, "upgrade") {
			h.upgrade = value
		}
	case 10:
		if equalFold(name, "connection") {
			h.noteConnection(value)
		}
	case 14:
		if equalFold(name, "content-length") {
			n, ok := parseContentLength(value)
			if !ok || (h.contentLength >= 0 && h.contentLength != n) {
				return errBadLength
			}
			h.contentLength = n
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			// Only "chunked" is understood, and it must be the final (here:
			// the only) coding (RFC 9112 §6.1).
			if h.chunked || !equalFold(value, "chunked") {
				return errBadEncoding
			}
			h.chunked = true
		}
	}
	return nil
}

func (h *head) noteConnection(v []byte) {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = trimOWS(v[:i]), v[i+1:]
		} else {
			tok, v = trimOWS(v), nil
		}
		switch {
		case len(tok) == 0:
		case equalFold(tok, "close"):
			h.connClose = true
		case equalFold(tok, "keep-alive"):
			h.connKeepAlive = true
		case equalFold(tok, "upgrade"):
			h.connUpgrade = true
		case h.nTokens < len(h.connTokens):
			h.connTokens[h.nTokens] = tok
			h.nTokens++
		}
	}
}

// parseContentLength accepts 1*DIGIT, and a list of identical values
// ("42, 42"), which RFC 9112 §6.3 allows a recipient to treat as one.
func parseContentLength(v []byte) (int64, bool) {
	n := int64(-1)
	for len(v) > 0 {
		var part []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			part, v = trimOWS(v[:i]), v[i+1:]
		} else {
			part, v = trimOWS(v), nil
		}
		if len(part) == 0 || len(part) > 18 {
			return 0, false
		}
		var m int64
		for _, c := range part {
			if c < '0' || c > '9' {
				return 0, false
			}
			m = m*10 + int64(c-'0')
		}
		if n >= 0 && m != n {
			return 0, false
		}
		n = m
	}
	return n, n >= 0
}

// hopByHop reports whether a field is removed when forwarding either way
// (RFC 9110 §7.6.1; the same list as net/http/httputil.ReverseProxy):
//   - Connection, Keep-Alive, Proxy-Connection: per-connection options; the
//     proxy states its own.
//   - TE: what this hop accepts; "trailers" is re-added when the client sent it.
//   - Upgrade: re-added only when the upgrade is passed on.
//   - Proxy-Authenticate, Proxy-Authorization: for this hop, not the origin.
//   - Transfer-Encoding is not listed: the proxy passes chunked framing
//     through unchanged and writes the field itself when it changes framing.
func hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return equalFold(name, "te")
	case 7:
		return equalFold(name, "upgrade")
	case 10:
		return equalFold(name, "connection") || equalFold(name, "keep-alive")
	case 16:
		return equalFold(name, "proxy-connection")
	case 18:
		return equalFold(name, "proxy-authenticate")
	case 19:
		return equalFold(name, "proxy-authorization")
	}
	return false
}

// dropField reports whether a field must not be forwarded: hop-by-hop, or
// named in the message's own Connection header.
func (h *head) dropField(name []byte) bool {
	if hopByHop(name) {
		return true
	}
	for _, t := range h.connTokens[:h.nTokens] {
		if equalFoldBytes(name, t) {
			return true
		}
	}
	return false
}

func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = v[:i], v[i+1:]
		} else {
			t, v = v, nil
		}
		t = trimOWS(t)
		if i := bytes.IndexByte(t, ';'); i >= 0 {
			t = trimOWS(t[:i])
		}
		if equalFold(t, tok) {
			return true
		}
	}
	return false
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold compares b with the lower-case ASCII string s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// isTchar reports whether c may appear in a token (RFC 9110 §5.6.2).
func isTchar(c byte) bool { return c < 0x80 && tchar[c] }

var tchar = [128]bool{
	'!': true, '#': true, '$': true, '%': true, '&': true, '\'': true, '*': true,
	'+': true, '-': true, '.': true, '^': true, '_': true, '`': true, '|': true, '~': true,
	'0': true, '1': true, '2': true, '3': true, '4': true, '5': true, '6': true, '7': true, '8': true, '9': true,
	'A': true, 'B': true, 'C': true, 'D': true, 'E': true, 'F': true, 'G': true, 'H': true, 'I': true,
	'J': true, 'K': true, 'L': true, 'M': true, 'N': true, 'O': true, 'P': true, 'Q': true, 'R': true,
	'S': true, 'T': true, 'U': true, 'V': true, 'W': true, 'X': true, 'Y': true, 'Z': true,
	'a': true, 'b': true, 'c': true, 'd': true, 'e': true, 'f': true, 'g': true, 'h': true, 'i': true,
	'j': true, 'k': true, 'l': true, 'm': true, 'n': true, 'o': true, 'p': true, 'q': true, 'r': true,
	's': true, 't': true, 'u': true, 'v': true, 'w': true, 'x': true, 'y': true, 'z': true,
}
