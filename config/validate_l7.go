package config

import (
	"fmt"
	"net/netip"
	"net/textproto"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// The keys of L7 content switching (issue 8): routes, pools, access
// control, rate limiting, header rules, compression and the fallback.

// httpOnlyKeys are the virtual service keys that act on HTTP requests; a tcp
// service forwards bytes and has none to act on.
var httpOnlyKeys = []string{"route", "allow", "deny", "rate_limit", "compress", "request_headers", "response_headers", "fallback"}

// listenOnlyKeys are the keys that belong to the side that accepts clients:
// on a pool, which binds nothing and is reached only through the routes of
// a listening service, they would have no effect.
var listenOnlyKeys = []string{
	"tls", "accept_proxy", "trusted_proxies", "max_conns", "allow", "deny", "rate_limit", "compress", "route",
	"timeouts.client", "timeouts.client_header", "forwarded_for", "forwarded_header",
}

// redirectCodes are the redirect statuses a route may answer with: the
// permanent and temporary ones, with (307, 308) and without a guarantee
// that the method and body are kept (RFC 9110 §15.4).
var redirectCodes = []int{301, 302, 307, 308}

// managedFields are the header fields that request_headers and
// response_headers may not set or remove, because the proxy itself owns
// them, with the reason.
var managedFields = map[string]string{
	// RFC 9110 §7.6.1: hop-by-hop fields describe one connection; the
	// proxy removes the client's and writes its own on each side.
	"Connection":       "it is hop-by-hop: the proxy writes its own on each connection (RFC 9110 §7.6.1)",
	"Keep-Alive":       "it is hop-by-hop: the proxy writes its own on each connection (RFC 9110 §7.6.1)",
	"Proxy-Connection": "it is hop-by-hop: the proxy writes its own on each connection (RFC 9110 §7.6.1)",
	"Te":               "it is hop-by-hop: the proxy writes its own on each connection (RFC 9110 §10.1.4)",
	"Trailer":          "it is hop-by-hop: the proxy writes its own on each connection (RFC 9110 §6.6.2)",
	"Upgrade":          "it is hop-by-hop: the proxy negotiates it on each connection (RFC 9110 §7.8)",
	// Framing: a wrong value would cut or run over the message body.
	"Transfer-Encoding": "it frames the body, which the proxy does on each connection (RFC 9112 §6.1)",
	"Content-Length":    "it frames the body and must match the bytes sent (RFC 9110 §8.6)",
}

// managedRequestFields are the fields of requests that rules may not touch.
var managedRequestFields = map[string]string{
	// A request without Host is invalid in HTTP/1.1 (RFC 9112 §3.2), and
	// HTTP/2 and HTTP/3 carry it as :authority; routes match on it.
	"Host": "it names the site the client asked for; routes match on it and HTTP/2 carries it as :authority (RFC 9110 §7.2)",
}

// managedResponseFields are the fields of responses that rules may not
// touch.
var managedResponseFields = map[string]string{
	// The body is coded as this field says; compress sets it.
	"Content-Encoding": "it describes how the body is coded; changing it corrupts the body (RFC 9110 §8.4)",
}

// l7 checks a virtual service's issue 8 keys that need no other service:
// whether it may be a pool, the keys of its mode, access control, rate
// limit, routes (but their to, see routeTargets), header rules and
// fallback. It fills AllowNets, DenyNets and the routes' parsed fields.
func (v *validator) l7(p path, vs *VirtualService) {
	if vs.IsPool() && !v.inFile(p.with("listen")) {
		if vs.Mode != ModeHTTP && v.inFile(p.with("mode")) && slices.Contains(modes, vs.Mode) {
			v.add(p.with("mode"), "a virtual service without listen is a pool, which routes send HTTP requests to: it must be mode %q", ModeHTTP)
		}
		for _, key := range listenOnlyKeys {
			if kp := withKeys(p, key); v.inFile(kp) {
				v.add(kp, "has no effect on a pool (a virtual service without listen): set it on the listening service whose routes point here")
			}
		}
	}
	if vs.Mode == ModeTCP {
		for _, key := range httpOnlyKeys {
			if kp := p.with(key); v.inFile(kp) {
				v.add(kp, "used only in http mode: a tcp service forwards bytes and reads no HTTP requests")
			}
		}
	}

	vs.AllowNets = v.clientNets(p.with("allow"), vs.Allow)
	vs.DenyNets = v.clientNets(p.with("deny"), vs.Deny)
	v.rateLimit(p.with("rate_limit"), &vs.RateLimit)
	v.routes(p.with("route"), vs)
	v.headerRules(p.with("request_headers"), &vs.RequestHeaders, managedRequestFields)
	v.headerRules(p.with("response_headers"), &vs.ResponseHeaders, managedResponseFields)
	v.fallback(p.with("fallback"), vs)
}

// withKeys extends p by a dotted key ("timeouts.client").
func withKeys(p path, dotted string) path {
	for key := range strings.SplitSeq(dotted, ".") {
		p = p.with(key)
	}
	return p
}

// clientNets parses allow or deny: IP addresses (as /32 or /128) and CIDR
// prefixes. IPv4-mapped IPv6 entries are unmapped, as client addresses are.
func (v *validator) clientNets(p path, list []string) []netip.Prefix {
	var nets []netip.Prefix
	for i, s := range list {
		pfx, msg := parseClientNet(s)
		if msg != "" {
			v.add(p.elem(i, nil), "%s", msg)
			continue
		}
		nets = append(nets, pfx)
	}
	return nets
}

// parseClientNet parses one allow or deny entry; the message says what is
// wrong, if anything.
func parseClientNet(s string) (netip.Prefix, string) {
	bad := fmt.Sprintf(`%q must be an IP address or CIDR, such as "192.0.2.0/24" or "2001:db8::1"`, s)
	if !strings.Contains(s, "/") {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return netip.Prefix{}, bad
		}
		ip = ip.Unmap()
		return netip.PrefixFrom(ip, ip.BitLen()), ""
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, bad
	}
	if m := pfx.Masked(); m != pfx {
		return netip.Prefix{}, fmt.Sprintf("%q has bits set past the prefix length: did you mean %q?", s, m.String())
	}
	if pfx.Addr().Is4In6() {
		// ::ffff:10.0.0.0/104 is 10.0.0.0/8: clients are compared
		// unmapped. (A shorter prefix has the ffff bits past its length.)
		return netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96), ""
	}
	return pfx, ""
}

// rateLimit checks [virtual_service.rate_limit].
func (v *validator) rateLimit(p path, r *RateLimit) {
	v.between(p.with("requests"), r.Requests, 0, -1)
	v.between(p.with("burst"), r.Burst, 0, -1)
	if r.Per <= 0 {
		v.add(p.with("per"), "must be > 0, got %s", r.Per)
	}
	if r.Requests != 0 {
		return
	}
	// Keys shaping a limit that is off are more likely a forgotten
	// requests than a wish.
	for _, key := range []string{"per", "burst"} {
		if kp := p.with(key); v.inFile(kp) {
			v.add(kp, "has no effect while requests = 0 (no rate limit): set requests too")
		}
	}
}

// routes checks a listening service's routes, filling their parsed fields.
// Their targets are checked by routeTargets, once every service is known.
func (v *validator) routes(rp path, vs *VirtualService) {
	byName := map[string]*Route{}
	for j, rt := range vs.Routes {
		p := v.pathOf(rt, rp.elem(j, rt.label))
		if rt.Name != "" {
			switch other, ok := byName[rt.Name]; {
			case !validName.MatchString(rt.Name):
				v.add(p.with("name"), "%q must start with a letter or digit and hold only letters, digits, '-', '_' and '.'", rt.Name)
			case ok:
				v.add(p.with("name"), "%q is already used by the route at line %d", rt.Name, other.Line)
			default:
				byName[rt.Name] = rt
			}
		}
		v.route(p, rt)
	}
}

// route checks one route but its to.
func (v *validator) route(p path, rt *Route) {
	switch {
	case rt.To == "" && rt.Redirect == "":
		v.add(p.with("to"), `required: the pool to send the requests to, or redirect = "https://…" to answer them with a redirect`)
	case rt.To != "" && rt.Redirect != "":
		v.add(p.with("redirect"), "not with to: a route either sends requests to a pool or answers them with a redirect")
	}

	if h := rt.Host; h != "" {
		if msg := checkRouteHost(h); msg != "" {
			v.add(p.with("host"), "%s", msg)
		} else {
			// Host names are case-insensitive (RFC 9110 §4.2.3): the
			// router compares lower-cased names.
			rt.Host = strings.ToLower(h)
		}
	}

	pp, rp := p.with("path_prefix"), p.with("path_regex")
	// Empty strings are no condition, as when absent.
	if rt.PathPrefix != "" {
		if msg := checkPath(rt.PathPrefix); msg != "" {
			v.add(pp, "%s", msg)
		}
	}
	rt.PathRE = nil
	if rt.PathRegex != "" {
		re, err := regexp.Compile(rt.PathRegex)
		if err != nil {
			v.add(rp, "not a valid regular expression: %s", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		} else {
			rt.PathRE = re
		}
	}
	if rt.PathPrefix != "" && rt.PathRegex != "" {
		v.add(rp, "not with path_prefix: give one or the other (a regexp can hold a prefix: ^/v1/)")
	}

	mp := p.with("methods")
	for i, m := range rt.Methods {
		// Methods are tokens (RFC 9110 §9.1); any is allowed, as HTTP has
		// extension methods (WebDAV's PROPFIND, say).
		if msg := checkToken(m, "method"); msg != "" {
			v.add(mp.elem(i, nil), "%s (RFC 9110 §9.1)", msg)
			continue
		}
		// Methods are case-sensitive and registered in upper case:
		// "get" in the file can only mean GET.
		rt.Methods[i] = strings.ToUpper(m)
	}

	v.routeHeader(p.with("header"), rt)

	if rt.StripPrefix && (rt.PathPrefix == "" || rt.To == "") {
		v.add(p.with("strip_prefix"), "needs path_prefix (the prefix to strip) and to (a pool to forward to)")
	}
	if rt.Redirect != "" {
		if msg := checkRedirect(rt.Redirect); msg != "" {
			v.add(p.with("redirect"), "%s", msg)
		}
	}
	cp := p.with("redirect_code")
	switch {
	case !slices.Contains(redirectCodes, rt.RedirectCode):
		v.add(cp, "must be 301, 302, 307 or 308, got %d", rt.RedirectCode)
	case v.inFile(cp) && rt.Redirect == "":
		v.add(cp, "used only with redirect")
	}
}

// checkRouteHost checks a route's host: a name, or "*." and a name. The
// message says what is wrong, if anything.
func checkRouteHost(s string) string {
	name := strings.TrimPrefix(s, "*.")
	switch {
	case s == "*":
		return `"*" matches every host: leave host out instead`
	case strings.Contains(s, ":"):
		return fmt.Sprintf("%q holds a ':': the host is matched without its port, and IPv6 literals are not supported", s)
	case strings.Contains(name, "*"):
		return fmt.Sprintf(`%q: a wildcard may only be a whole first label, as in "*.example.com"`, s)
	case len(name) > 253:
		return fmt.Sprintf("%q is longer than 253 bytes", s)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			strings.ContainsFunc(label, func(r rune) bool {
				return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
			}) {
			return fmt.Sprintf(`%q is not a host name or "*." and a host name (write names in punycode)`, s)
		}
	}
	return ""
}

// routeHeader parses a route's header condition, "Name: value" or "Name",
// into HeaderName and HeaderValue.
func (v *validator) routeHeader(p path, rt *Route) {
	rt.HeaderName, rt.HeaderValue = "", nil
	if rt.Header == "" {
		return // no condition, as when absent
	}
	name, value, _ := strings.Cut(rt.Header, ":")
	name = strings.TrimSpace(name)
	if msg := checkToken(name, "header name"); msg != "" {
		v.add(p, `%s (RFC 9110 §5.1); write "Name: value" or "Name"`, msg)
		return
	}
	rt.HeaderName = textproto.CanonicalMIMEHeaderKey(name)
	// The value is compared without the blanks around it, as a
	// recipient parses field values (RFC 9110 §5.5).
	value = strings.Trim(value, " \t")
	if value == "" {
		return
	}
	re, err := regexp.Compile("^(?:" + value + ")$")
	if err != nil {
		v.add(p, "value %q is not a valid regular expression: %s", value, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		return
	}
	rt.HeaderValue = re
}

// checkRedirect checks a route's redirect: an absolute http or https URL,
// or a path on the same site. The request's path rest and query are
// appended, so it may hold neither a query nor a fragment.
func checkRedirect(s string) string {
	if !visibleASCII(s) {
		return fmt.Sprintf("%q holds a blank, control or non-ASCII character; percent-encode it", s)
	}
	if strings.HasPrefix(s, "//") {
		// A network-path reference (RFC 3986 §4.2): browsers read what
		// follows as a host.
		return fmt.Sprintf(`%q starts with "//", which clients read as a host name: write "https://host/…" or a path`, s)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Sprintf("%q is not a URL: %s", s, strings.TrimPrefix(err.Error(), fmt.Sprintf("parse %q: ", s)))
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return fmt.Sprintf("%q holds a query or fragment: the redirect keeps the request's own query, appended after the path", s)
	case strings.HasPrefix(s, "/"):
		return ""
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf(`%q must be an http or https URL ("https://www.example.com/new/") or a path ("/new/")`, s)
	case u.Host == "" || u.Opaque != "":
		return fmt.Sprintf("%q has no host", s)
	case u.User != nil:
		return fmt.Sprintf("%q holds user information, which clients must not be sent to (RFC 9110 §4.2.4)", s)
	}
	return ""
}

// headerRules checks request_headers or response_headers. managed holds the
// fields of that direction the proxy owns, beyond managedFields. Names are
// made canonical (textproto), so that rules compare as header fields do:
// case-insensitively.
func (v *validator) headerRules(p path, h *HeaderRules, managed map[string]string) {
	sp := p.with("set")
	set := make(map[string]string, len(h.Set))
	seen := map[string]string{}
	for _, name := range sortedKeys(h.Set) {
		value := h.Set[name]
		np := sp.with(name)
		canon, ok := v.ruleField(np, name, managed, "set")
		if !ok {
			continue
		}
		if other, ok := seen[canon]; ok {
			v.add(np, "%q is also set as %q: field names are case-insensitive", name, other)
			continue
		}
		seen[canon] = name
		if i := strings.IndexFunc(value, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }); i >= 0 {
			// CR or LF would end the field and let the value inject
			// others (RFC 9110 §5.5: field values hold no controls).
			v.add(np, "the value holds a control character (%q): field values may hold none but tab", value[i:i+1])
			continue
		}
		set[canon] = value
	}
	if h.Set != nil {
		h.Set = set
	}
	rp := p.with("remove")
	for i, name := range h.Remove {
		if canon, ok := v.ruleField(rp.elem(i, nil), name, managed, "remove"); ok {
			h.Remove[i] = canon
		}
	}
}

// ruleField checks the field name of a header rule and returns it
// canonical.
func (v *validator) ruleField(p path, name string, managed map[string]string, verb string) (string, bool) {
	if msg := checkToken(name, "header name"); msg != "" {
		v.add(p, "%s (RFC 9110 §5.1)", msg)
		return "", false
	}
	canon := textproto.CanonicalMIMEHeaderKey(name)
	why, ok := managedFields[canon]
	if !ok {
		why, ok = managed[canon]
	}
	if ok {
		v.add(p, "cannot %s %s: %s", verb, canon, why)
		return "", false
	}
	return canon, true
}

// sortedKeys returns m's keys sorted, so that problems come out in a stable
// order.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// fallback checks a service's fallback address, written as a real server's.
func (v *validator) fallback(p path, vs *VirtualService) {
	if vs.Fallback == "" {
		return
	}
	addr, port, msg := parseHostPort(vs.Fallback, false)
	if msg != "" {
		v.add(p, "invalid address %q: %s", vs.Fallback, msg)
		return
	}
	for _, rs := range vs.RealServers {
		if a, pt, msg := parseHostPort(rs.Address, false); msg == "" && a == addr && pt == port {
			// The fallback answers when every real server is down: one
			// of them cannot stand in for the others.
			v.add(p, "%q is also the real_server at line %d: the fallback answers when no real server is available", vs.Fallback, rs.Line)
			return
		}
	}
}

// routeTargets checks every route's to, once all services are known: it
// must name a pool, an http virtual service without listen.
func (v *validator) routeTargets(c *Config, names map[string]*VirtualService) {
	var pools []string
	for _, vs := range c.VirtualServices {
		if vs.IsPool() && vs.Name != "" && !IsL4Mode(vs.Mode) {
			pools = append(pools, vs.Name)
		}
	}
	for i, vs := range c.VirtualServices {
		if IsL4Mode(vs.Mode) {
			continue // its routes are refused (validate_l4.go)
		}
		vp := v.pathOf(vs, path{}.with("virtual_service").elem(i, vs.label))
		for j, rt := range vs.Routes {
			if rt.To == "" {
				continue
			}
			tp := v.pathOf(rt, vp.with("route").elem(j, rt.label)).with("to")
			target, ok := names[rt.To]
			switch {
			case !ok:
				msg := fmt.Sprintf("no virtual service %q", rt.To)
				if s := closest(rt.To, pools); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				} else if len(pools) == 0 {
					msg += ": routes go to pools, virtual services without listen"
				}
				v.add(tp, "%s", msg)
			case !target.IsPool():
				v.add(tp, "virtual_service %q listens: routes go to pools, virtual services without listen", rt.To)
			case target.Mode != ModeHTTP:
				v.add(tp, "virtual_service %q is mode %q: routes go to http pools", rt.To, target.Mode)
			}
		}
	}
}
