package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/fulcrumlb/fulcrum/config"
)

// Content switching (L7 routing). A listening service's routes
// ([[virtual_service.route]]) send each request to a pool (a virtual service
// without listen, with its own real servers, scheduler, persistence and
// health checks) or answer it with a redirect; the first route that matches
// wins, in file order, and a request none matches goes to the listening
// service's own real servers, its default pool. Routing happens once per
// request, after the client is resolved and admitted and before the pool's
// persistence and scheduler choose a real server, the same way for every
// front end (clientConn.route, h2exchange.route).
//
// Matching is a short loop over compiled routes that allocates nothing: the
// host is compared without its port and case (RFC 9110 §4.2.3: the host is
// case-insensitive), the path prefix bytewise on the target's path, the
// methods as a list (RFC 9110 §9.1: methods are case-sensitive), the header
// on the fields the front end already parsed, and the path regexp last, for
// it costs the most.

// routeTable is a listening service's routes, compiled with their pools
// resolved. It is replaced on every reload, never changed.
type routeTable struct {
	routes []route
}

// route is one compiled [[virtual_service.route]]. A condition's zero value
// matches every request.
type route struct {
	name string // for the log: the route's name, or "#N" (its position from 1)

	host     string // lower case, no trailing dot; "" for any
	wildcard bool   // host is the suffix ".example.com" of "*.example.com"
	prefix   []byte
	re       *regexp.Regexp // path_regex
	methods  []string
	hdrLower string         // header's name, lower case (HTTP/1.1 lookup); "" for none
	hdrCanon string         // the same, canonical (http.Header key)
	hdrValue *regexp.Regexp // anchored; nil: the field's presence is enough

	pool     *Service // nil for a redirect
	strip    bool     // strip_prefix
	redirect string
	code     int // redirect_code
}

// routeView is what routing reads of a request besides its host, method
// and path.
type routeView interface {
	// hasRouteField reports whether the request carries r's header field
	// with a value r.hdrValue matches whole (any value if nil); any of
	// several fields of that name will do.
	hasRouteField(r *route) bool
}

// buildRoutes compiles the routes of vs, resolving each `to` among pools
// by name (known holds every service's name); nil when vs has none.
func buildRoutes(vs *config.VirtualService, pools map[string]*Service, known map[string]bool) (*routeTable, error) {
	if len(vs.Routes) == 0 {
		return nil, nil
	}
	t := &routeTable{routes: make([]route, len(vs.Routes))}
	for i, rc := range vs.Routes {
		r := &t.routes[i]
		r.name = rc.Name
		if r.name == "" {
			r.name = "#" + strconv.Itoa(i+1)
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("virtual service %q: route %s: %s", vs.Name, r.name, fmt.Sprintf(format, args...))
		}
		host := strings.TrimSuffix(strings.ToLower(rc.Host), ".")
		if rest, ok := strings.CutPrefix(host, "*."); ok {
			host, r.wildcard = "."+rest, true
		}
		r.host = host
		if rc.PathPrefix != "" {
			r.prefix = []byte(rc.PathPrefix)
		}
		r.re = rc.PathRE
		if rc.PathRegex != "" && r.re == nil {
			return nil, fail("path_regex %q was not compiled (configuration not validated)", rc.PathRegex)
		}
		r.methods = rc.Methods
		if rc.Header != "" {
			if rc.HeaderName == "" {
				return nil, fail("header %q was not parsed (configuration not validated)", rc.Header)
			}
			r.hdrCanon, r.hdrLower, r.hdrValue = rc.HeaderName, strings.ToLower(rc.HeaderName), rc.HeaderValue
		}
		r.strip = rc.StripPrefix && len(r.prefix) > 0
		switch {
		case rc.Redirect != "":
			r.redirect, r.code = rc.Redirect, rc.RedirectCode
			if redirectText[r.code] == "" {
				r.code = config.DefaultRedirectCode
			}
		default:
			pool := pools[rc.To]
			switch {
			case pool != nil:
			case known[rc.To]:
				return nil, fail("to %q: not a pool (an http virtual service without listen)", rc.To)
			default:
				return nil, fail("to %q: no such virtual service", rc.To)
			}
			r.pool = pool
		}
	}
	return t, nil
}

// setRoutes compiles the route tables of services, whose configurations
// are cfgs (in the same order), and returns them by service: the caller
// stores them once nothing can fail any more.
func setRoutes(services []*Service, cfgs []*config.VirtualService) (map[*Service]*routeTable, error) {
	pools := make(map[string]*Service)
	known := make(map[string]bool, len(services))
	for i, s := range services {
		known[s.Name] = true
		if cfgs[i].IsPool() && cfgs[i].Mode == config.ModeHTTP {
			pools[s.Name] = s
		}
	}
	tables := make(map[*Service]*routeTable, len(services))
	for i, s := range services {
		t, err := buildRoutes(cfgs[i], pools, known)
		if err != nil {
			return nil, err
		}
		tables[s] = t
	}
	return tables, nil
}

// match returns the first route that matches the request, or nil. host is
// the request's host without port (routeHost), path its target's path
// (splitTarget).
func (t *routeTable) match(host, method, path []byte, rv routeView) *route {
	for i := range t.routes {
		if r := &t.routes[i]; r.matches(host, method, path, rv) {
			return r
		}
	}
	return nil
}

func (r *route) matches(host, method, path []byte, rv routeView) bool {
	if r.host != "" {
		if r.wildcard {
			if len(host) <= len(r.host) || !equalFold(host[len(host)-len(r.host):], r.host) {
				return false
			}
		} else if !equalFold(host, r.host) {
			return false
		}
	}
	if r.prefix != nil && !bytes.HasPrefix(path, r.prefix) {
		return false
	}
	if len(r.methods) > 0 && !hasMethod(r.methods, method) {
		return false
	}
	if r.hdrLower != "" && !rv.hasRouteField(r) {
		return false
	}
	return r.re == nil || r.re.Match(path)
}

func hasMethod(methods []string, m []byte) bool {
	for _, x := range methods {
		if x == string(m) { // no allocation: a comparison
			return true
		}
	}
	return false
}

// routeHost returns the host of a Host field (or :authority) value without
// its port and a trailing dot (a fully-qualified "example.com." names the
// same host). An IPv6 literal keeps its brackets.
func routeHost(h []byte) []byte {
	if len(h) > 0 && h[0] == '[' {
		if i := bytes.IndexByte(h, ']'); i >= 0 {
			return h[:i+1]
		}
		return h
	}
	if i := bytes.IndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	if n := len(h); n > 1 && h[n-1] == '.' {
		h = h[:n-1]
	}
	return h
}

// slash is the path of an absolute-form target without one (RFC 9112
// §3.2.2: "http://h" is "/" on h).
var slash = []byte("/")

// splitTarget splits an HTTP/1.1 request target into the authority of an
// absolute-form target (nil for the origin form), the path, and the query
// (after '?'; nil without one). The asterisk and authority forms (OPTIONS *,
// CONNECT) are a path of their own, which no prefix route matches.
func splitTarget(target []byte) (authority, path, query []byte) {
	path = target
	if len(target) > 0 && target[0] != '/' {
		if i := bytes.Index(target, []byte("://")); i > 0 {
			rest := target[i+3:]
			end := bytes.IndexAny(rest, "/?")
			if end < 0 {
				end = len(rest)
			}
			authority, path = rest[:end], rest[end:]
			if i := bytes.LastIndexByte(authority, '@'); i >= 0 { // userinfo (RFC 3986 §3.2.1)
				authority = authority[i+1:]
			}
		}
	}
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path, query = path[:i], path[i+1:]
	}
	if len(path) == 0 && authority != nil {
		path = slash
	}
	return authority, path, query
}

// rest returns what follows the route's path prefix in path (all of path
// without a prefix): what a redirect appends to its URL and strip_prefix
// forwards.
func (r *route) rest(path []byte) []byte {
	if len(r.prefix) > 0 && bytes.HasPrefix(path, r.prefix) {
		return path[len(r.prefix):]
	}
	return path
}

// strippedNeedsSlash reports whether the forwarded path of strip_prefix
// needs a "/" before rest: a path always starts with one ("/v1/" on "/v1/"
// forwards "/", "/v1" on "/v1x" forwards "/x").
func strippedNeedsSlash(rest []byte) bool { return len(rest) == 0 || rest[0] != '/' }

// redirectText holds the reason phrases of the redirect codes a route may
// answer with (RFC 9110 §15.4).
var redirectText = map[int]string{
	301: "Moved Permanently",
	302: "Found",
	307: "Temporary Redirect",
	308: "Permanent Redirect",
}

// locationRest is what a redirect's Location has after the route's URL:
// the path after the prefix, one "/" fewer when the URL ends with one and
// the rest starts with one. The query, if any, follows it.
func (r *route) locationRest(path []byte) []byte {
	rest := r.rest(path)
	if strings.HasSuffix(r.redirect, "/") && len(rest) > 0 && rest[0] == '/' {
		rest = rest[1:]
	}
	return rest
}

// location is the redirect's Location for a request with path and query
// (nil: none), as a string (HTTP/2 and HTTP/3; HTTP/1.1 writes the same
// pieces in place).
func (r *route) location(path, query []byte) string {
	var b strings.Builder
	rest := r.locationRest(path)
	b.Grow(len(r.redirect) + len(rest) + 1 + len(query))
	b.WriteString(r.redirect)
	b.Write(rest)
	if len(query) > 0 {
		b.WriteByte('?')
		b.Write(query)
	}
	return b.String()
}

// redirectBody is the short body of a redirect answer.
func redirectBody(code int) string { return strconv.Itoa(code) + " " + redirectText[code] + "\n" }

// admits reports whether client may send requests to the service (allow,
// deny). Tested on the request's client, after trusted_proxies.
func admits(vs *config.VirtualService, client netip.Addr) bool {
	if len(vs.AllowNets) == 0 && len(vs.DenyNets) == 0 {
		return true
	}
	client = client.Unmap()
	if len(vs.AllowNets) > 0 && !isTrusted(vs.AllowNets, client) {
		return false
	}
	return !isTrusted(vs.DenyNets, client)
}

// HTTP/1.1: clientConn routes.

// route chooses the request's pool: a route's, or the service's own. done
// reports that the request was answered instead (a redirect; 404 when no
// route matched and the service has no real servers of its own), and keep
// then whether the connection may serve another request.
func (cc *clientConn) route() (done, keep bool) {
	s := cc.svc
	cc.poolCfg, cc.rt = cc.cfg, nil
	cc.frontRules, cc.poolRules = s.rules.Load(), nil
	t := s.routes.Load()
	if t == nil {
		cc.pool = s
		return false, false
	}
	authority, path, query := splitTarget(cc.req.target)
	host := cc.req.host
	if authority != nil { // the target's authority overrides Host (RFC 9112 §3.2.2)
		host = authority
	}
	r := t.match(routeHost(host), cc.req.method, path, cc)
	if r == nil {
		if !s.servesUnrouted() {
			return true, cc.fail(404, "no route matched", nil)
		}
		cc.pool = s
		return false, false
	}
	cc.routeName = r.name
	if r.pool == nil {
		return true, cc.answerRedirect(r, path, query)
	}
	cc.rt, cc.pool, cc.poolCfg = r, r.pool, r.pool.config()
	cc.poolRules = r.pool.rules.Load()
	return false, false
}

func (cc *clientConn) hasRouteField(r *route) bool {
	for i := range cc.req.headers {
		h := &cc.req.headers[i]
		if len(h.name) == len(r.hdrLower) && equalFold(h.name, r.hdrLower) && (r.hdrValue == nil || r.hdrValue.Match(h.value)) {
			return true
		}
	}
	return false
}

// answerRedirect answers the request with route r's redirect, as the
// proxy's other answers (fail): the connection is kept when the request
// was read whole.
func (cc *clientConn) answerRedirect(r *route, path, query []byte) bool {
	cc.status, cc.generated = r.code, true
	keep := cc.beginAnswer()
	w := &cc.out
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(r.code))
	w.WriteString(" ")
	w.WriteString(redirectText[r.code])
	w.WriteString("\r\nLocation: ")
	w.WriteString(r.redirect)
	w.Write(r.locationRest(path))
	if len(query) > 0 {
		w.WriteString("?")
		w.Write(query)
	}
	return cc.endAnswer(keep, redirectBody(r.code))
}

// writeRequestLine writes the request line as it goes to the pool:
// without the route's prefix with strip_prefix (an absolute-form target
// goes in origin form then), else as the client sent it.
func (cc *clientConn) writeRequestLine(w *writer) {
	req := &cc.req
	if cc.rt == nil || !cc.rt.strip {
		w.Write(req.line)
		return
	}
	_, path, query := splitTarget(req.target)
	rest := cc.rt.rest(path)
	w.Write(req.method)
	w.WriteString(" ")
	if strippedNeedsSlash(rest) {
		w.WriteString("/")
	}
	w.Write(rest)
	if query != nil {
		w.WriteString("?")
		w.Write(query)
	}
	w.Write(req.line[len(req.method)+1+len(req.target):]) // " HTTP/1.x"
}

// HTTP/2, HTTP/3 and net/http's HTTP/1.1: h2exchange routes.

// route is clientConn.route for an exchange: done reports that the request
// was answered.
func (x *h2exchange) route() (done bool) {
	s := x.svc
	x.poolCfg, x.rt = x.cfg, nil
	x.frontRules, x.poolRules = s.rules.Load(), nil
	t := s.routes.Load()
	if t == nil {
		x.pool = s
		return false
	}
	path, query, _ := strings.Cut(requestTarget(x.r), "?")
	r := t.match(routeHost([]byte(x.r.Host)), []byte(x.r.Method), []byte(path), x)
	if r == nil {
		if !s.servesUnrouted() {
			x.fail(404, "no route matched", nil)
			return true
		}
		x.pool = s
		return false
	}
	x.routeName = r.name
	if r.pool == nil {
		x.answerRedirect(r, path, query)
		return true
	}
	x.rt, x.pool, x.poolCfg = r, r.pool, r.pool.config()
	x.poolRules = r.pool.rules.Load()
	return false
}

func (x *h2exchange) hasRouteField(r *route) bool {
	for _, v := range x.r.Header[r.hdrCanon] {
		if r.hdrValue == nil || r.hdrValue.MatchString(v) {
			return true
		}
	}
	return false
}

// answerRedirect answers the request with route r's redirect.
func (x *h2exchange) answerRedirect(r *route, path, query string) {
	x.status, x.generated, x.responded = r.code, true, true
	body := redirectBody(r.code)
	h := x.w.Header()
	clear(h)
	h["Location"] = []string{r.location([]byte(path), []byte(query))}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	x.w.WriteHeader(r.code)
	if x.r.Method != http.MethodHead {
		io.WriteString(x.w, body)
	}
	x.flush()
}

// requestTarget is the target of r as the client sent it (:path, RFC 9113
// §8.3.1), in origin form: an HTTP/1.1 client's absolute form (RFC 9112
// §3.2.2) has its host in r.Host already.
func requestTarget(r *http.Request) string {
	if r.URL.Host == "" {
		return r.RequestURI
	}
	target := r.URL.EscapedPath()
	if target == "" {
		target = "/"
	}
	if r.URL.ForceQuery || r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	return target
}

// servesUnrouted reports whether the service has a default pool for the
// requests no route matched: real servers of its own, or a fallback that
// answers while it has none.
func (s *Service) servesUnrouted() bool {
	return len(s.reals.Load().list) > 0 || s.fallback.Load() != nil
}
