package config

import (
	"fmt"
	"slices"
	"strings"
)

// Accepted persistence methods.
var persistMethods = []string{PersistNone, PersistSourceIP, PersistCookie, PersistAppCookie, PersistRDPCookie, PersistHeader}

// persistModes lists the methods that work in one mode only, with it. The
// others (none, source_ip) work in both.
var persistModes = map[string]string{
	PersistCookie:    ModeHTTP, // read from the request, set in the response
	PersistAppCookie: ModeHTTP,
	PersistHeader:    ModeHTTP,
	PersistRDPCookie: ModeTCP, // the X.224 Connection Request is the first thing on the connection
}

// Schedulers that need something only one mode has, by config keyword.
// They are strings rather than balancer values so that this table does not
// depend on which schedulers are linked in; an unknown one is reported as
// such first.
const (
	schedURIHash    = "uri_hash"    // hashes the request path: http
	schedHeaderHash = "header_hash" // hashes the hash_header value: http
	schedRDPCookie  = "rdp_cookie"  // hashes the RDP mstshash user: tcp
)

var schedulerModes = map[string]string{
	schedURIHash:    ModeHTTP,
	schedHeaderHash: ModeHTTP,
	schedRDPCookie:  ModeTCP,
}

// stickMethods keep a stick table, which timeout and max_entries shape.
var stickMethods = []string{PersistSourceIP, PersistAppCookie, PersistRDPCookie, PersistHeader}

// persistKeyMethods lists the persistence keys that only some methods use,
// with those methods. Such a key set for another method is reported rather
// than ignored, as for the health check: whoever writes source_mask = 24
// under method = "cookie" expects subnets to stick. inspect_delay is also
// used by the rdp_cookie scheduler, whatever the method.
var persistKeyMethods = []struct {
	key     string
	methods []string
}{
	{"timeout", stickMethods},
	{"cookie_name", []string{PersistCookie, PersistAppCookie}},
	{"cookie_secret", []string{PersistCookie}},
	{"source_mask", []string{PersistSourceIP}},
	{"source_mask6", []string{PersistSourceIP}},
	{"header", []string{PersistHeader}},
	{"max_entries", stickMethods},
	{"inspect_delay", []string{PersistRDPCookie}},
}

// scheduler checks what a virtual service's scheduler needs beyond its name,
// which virtualService checks: the mode it works in and the hash_header it
// hashes.
func (v *validator) scheduler(p path, vs *VirtualService) {
	sp, hp := p.with("scheduler"), p.with("hash_header")
	if mode, ok := schedulerModes[vs.Scheduler]; ok && slices.Contains(modes, vs.Mode) && vs.Mode != mode {
		v.add(sp, "scheduler %q needs mode = %q", vs.Scheduler, mode)
	}
	switch {
	case vs.Scheduler == schedHeaderHash && vs.HashHeader == "":
		v.add(hp, `required for scheduler %s: the request header to hash, such as "X-User"`, schedHeaderHash)
	case vs.Scheduler == schedHeaderHash:
		if msg := checkToken(vs.HashHeader, "header name"); msg != "" {
			v.add(hp, "%s (RFC 9110 §5.1)", msg)
		}
	case v.inFile(hp):
		v.add(hp, "used only by scheduler %s, not %q", schedHeaderHash, vs.Scheduler)
	}
}

// persistence checks a virtual service's [virtual_service.persistence].
func (v *validator) persistence(p path, vs *VirtualService) {
	ps := &vs.Persistence
	mp := p.with("method")
	v.oneOf(mp, ps.Method, persistMethods)
	if mode, ok := persistModes[ps.Method]; ok && slices.Contains(modes, vs.Mode) && vs.Mode != mode {
		v.add(mp, "method %q needs mode = %q", ps.Method, mode)
	}

	np := p.with("cookie_name")
	switch {
	case ps.Method == PersistAppCookie && ps.CookieName == "":
		v.add(np, `required for method %s: the application's session cookie to learn, such as "JSESSIONID"`, PersistAppCookie)
	case ps.Method == PersistCookie || ps.Method == PersistAppCookie || ps.CookieName != "":
		if msg := checkToken(ps.CookieName, "cookie name"); msg != "" {
			v.add(np, "%s (RFC 6265 §4.1.1)", msg)
		}
	}
	// An empty secret in the file is more likely a template gone wrong than
	// a wish for a random one, which differs between the members of an HA
	// pair: leaving the key out asks for that.
	if sp := p.with("cookie_secret"); v.inFile(sp) && len(ps.CookieSecret) < MinCookieSecret {
		v.add(sp, "must be at least %d bytes, got %d", MinCookieSecret, len(ps.CookieSecret))
	}
	hp := p.with("header")
	switch {
	case ps.Method == PersistHeader && ps.Header == "":
		v.add(hp, `required for method %s: the request header whose value sticks, such as "X-Session"`, PersistHeader)
	case ps.Method == PersistHeader || ps.Header != "":
		if msg := checkToken(ps.Header, "header name"); msg != "" {
			v.add(hp, "%s (RFC 9110 §5.1)", msg)
		}
	}

	v.between(p.with("source_mask"), ps.SourceMask, 1, 32)
	v.between(p.with("source_mask6"), ps.SourceMask6, 1, 128)
	v.between(p.with("max_entries"), ps.MaxEntries, 1, MaxStickEntries)
	if ps.Timeout <= 0 {
		v.add(p.with("timeout"), "must be > 0, got %s", ps.Timeout)
	}
	if d := ps.InspectDelay; d < MinInspectDelay || d > MaxInspectDelay {
		v.add(p.with("inspect_delay"), "must be between %s and %s, got %s", MinInspectDelay, MaxInspectDelay, d)
	}

	if !slices.Contains(persistMethods, ps.Method) {
		return // which keys apply is unknown
	}
	for _, k := range persistKeyMethods {
		kp := p.with(k.key)
		if !v.inFile(kp) || slices.Contains(k.methods, ps.Method) {
			continue
		}
		switch {
		case k.key == "inspect_delay":
			if vs.Scheduler != schedRDPCookie {
				v.add(kp, "used only by method %s and scheduler %s, which read the client's first bytes; not method %q with scheduler %q",
					PersistRDPCookie, schedRDPCookie, ps.Method, vs.Scheduler)
			}
		case ps.Method == PersistNone:
			v.add(kp, "not used by method %q (no persistence)", ps.Method)
		case ps.Method == PersistCookie && slices.Equal(k.methods, stickMethods):
			v.add(kp, "not used by method %q, which keeps no stick table: the client's cookie names the real server", ps.Method)
		default:
			v.add(kp, "used only by method %s, not %q", orList(k.methods), ps.Method)
		}
	}
}

// tokenChars are the characters of a token besides letters and digits
// (RFC 9110 §5.6.2 tchar), which header field names (§5.1) and cookie names
// (RFC 6265 §4.1.1) are made of.
const tokenChars = "!#$%&'*+-.^_`|~"

// checkToken checks that s is a token; what names it in the message. The
// message says what is wrong, if anything.
func checkToken(s, what string) string {
	if s == "" {
		return fmt.Sprintf("must be a %s, got \"\"", what)
	}
	for i := range len(s) {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) || strings.IndexByte(tokenChars, c) >= 0 {
			continue
		}
		var bad string
		switch {
		case c == ' ' || c == '\t':
			bad = "a blank"
		case c < ' ' || c == 0x7f:
			bad = "a control character"
		case c >= 0x80:
			bad = "a non-ASCII character"
		default:
			bad = fmt.Sprintf("%q", string(c))
		}
		return fmt.Sprintf("%q is not a valid %s: it holds %s; use letters, digits and %s", s, what, bad, tokenChars)
	}
	return ""
}
