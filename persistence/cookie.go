package persistence

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
)

// TokenLen is the length of a token made by Signer.Token: 16 bytes in
// unpadded base64url.
const TokenLen = 22

// Signer makes the values of the cookie inserted by cookie persistence.
//
// A token is base64url (no padding) of the first 16 bytes of
// HMAC-SHA256(secret, service + "\x00" + server): it names a real server of
// one virtual service without revealing the server's name or address, it
// differs between virtual services, and it cannot be made without the
// secret. Only [A-Za-z0-9_-] occur, so it is a valid cookie-octet
// (RFC 6265 §4.1.1) needing no quoting.
//
// Tokens are never decoded: the proxy computes Token for every real server
// of a virtual service whenever its real servers change and keeps a
// token → server map, so a request's cookie is one map lookup, and a forged
// or stale token (a removed server, a changed secret) simply is not found and
// the client is scheduled afresh and given a new cookie. The same secret
// gives the same tokens in every process, so the members of an HA pair and a
// restarted balancer accept each other's cookies.
type Signer struct {
	secret []byte
}

// NewSigner returns a Signer keyed with a copy of secret. If secret is nil
// or empty, it uses 32 random bytes from crypto/rand: its cookies then do not
// survive a restart and differ between balancers.
func NewSigner(secret []byte) *Signer {
	if len(secret) == 0 {
		secret = make([]byte, 32)
		rand.Read(secret) // never fails (crypto/rand, Go 1.24+)
	} else {
		secret = bytes.Clone(secret)
	}
	return &Signer{secret: secret}
}

// Token returns the cookie value that sticks a client of the virtual
// service to the real server, both given by name (names contain no NUL).
func (s *Signer) Token(service, server string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(service))
	m.Write([]byte{0})
	m.Write([]byte(server))
	var sum [sha256.Size]byte
	return base64.RawURLEncoding.EncodeToString(m.Sum(sum[:0])[:16])
}

// SetCookieValue returns the value of the Set-Cookie field that inserts the
// persistence cookie: "NAME=TOKEN; Path=/; HttpOnly; SameSite=Lax", plus
// "; Secure" when the client came over TLS. No Expires/Max-Age: it is a
// session cookie, and the stickiness it carries needs no server-side expiry.
func SetCookieValue(name, token string, secure bool) string {
	return string(AppendSetCookie(nil, name, token, secure))
}

// AppendSetCookie appends what SetCookieValue returns to dst, for a proxy
// that builds response heads in a reused buffer.
func AppendSetCookie(dst []byte, name, token string, secure bool) []byte {
	dst = append(dst, name...)
	dst = append(dst, '=')
	dst = append(dst, token...)
	dst = append(dst, "; Path=/; HttpOnly; SameSite=Lax"...)
	if secure {
		dst = append(dst, "; Secure"...)
	}
	return dst
}

// CookieValue returns the value of the first cookie called name (compared
// case-sensitively, as cookie names are) in the value of one Cookie field,
// "a=b; c=d" (RFC 6265 §5.4, §4.2.1). It tolerates spaces and tabs around
// names, values and separators, skips pairs without "=", and strips the
// double quotes of a quoted value. The result aliases header; no allocation.
// A request with several Cookie fields needs one call per field.
func CookieValue(header []byte, name string) ([]byte, bool) {
	if name == "" {
		return nil, false
	}
	for len(header) > 0 {
		var pair []byte
		if i := bytes.IndexByte(header, ';'); i >= 0 {
			pair, header = header[:i], header[i+1:]
		} else {
			pair, header = header, nil
		}
		eq := bytes.IndexByte(pair, '=')
		if eq < 0 {
			continue
		}
		if string(trimOWS(pair[:eq])) == name {
			return unquote(trimOWS(pair[eq+1:])), true
		}
	}
	return nil, false
}

// SetCookieName returns the cookie name and value a Set-Cookie field value
// sets (its first name=value pair, before any attribute; RFC 6265 §5.2), for
// app_cookie persistence to learn the application's session cookie. Spaces
// are trimmed and a quoted value is unquoted, so the value is what
// CookieValue later finds in the client's requests. ok is false when there is
// no "=" or the name is empty. An empty value (a cookie being deleted) is
// returned as such; it is not worth learning.
func SetCookieName(field []byte) (name, value []byte, ok bool) {
	if i := bytes.IndexByte(field, ';'); i >= 0 {
		field = field[:i]
	}
	eq := bytes.IndexByte(field, '=')
	if eq < 0 {
		return nil, nil, false
	}
	name = trimOWS(field[:eq])
	if len(name) == 0 {
		return nil, nil, false
	}
	return name, unquote(trimOWS(field[eq+1:])), true
}

// trimOWS trims spaces and horizontal tabs (RFC 9110 §5.6.3 OWS).
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// unquote strips the DQUOTEs around a cookie value (RFC 6265 §4.1.1 allows
// them; they are not part of the value).
func unquote(b []byte) []byte {
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		return b[1 : len(b)-1]
	}
	return b
}
