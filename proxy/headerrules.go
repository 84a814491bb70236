package proxy

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"github.com/fulcrumlb/fulcrum/config"
)

// Header rules (request_headers, response_headers): fields set or removed
// on the way to the real server and on the way back to the client. They are
// compiled once per configuration into lower-case name lists, so that
// applying them to an HTTP/1.1 head is a few comparisons per field and
// allocates nothing. A request routed to a pool gets the listening
// service's rules, then the pool's: the pool's remove takes away what the
// front set, its set wins over the front's.
//
// The proxy's own fields are not the rules' to change: hop-by-hop fields
// (RFC 9110 §7.6.1; see hopByHop) and the framing ones (Content-Length,
// Transfer-Encoding, RFC 9112 §6) are left out of the rules, and the fields
// the proxy writes itself (X-Forwarded-*, Forwarded, X-SSL-Client-*, the
// persistence cookie, Alt-Svc) are written after the rules ran, so a rule
// does not remove them. A request's Host can be set, not removed (an
// HTTP/1.1 request needs one, RFC 9112 §3.2). The proxy's own answers
// (errors, redirects) get no rules.

// headerRules is one direction's compiled rules; a nil *headerRules has
// none.
type headerRules struct {
	remove []ruleField // Value unused
	set    []ruleField
}

// ruleField is one field a rule names.
type ruleField struct {
	lower  string   // lower case, for HTTP/1.1 heads (equalFold)
	canon  string   // canonical, the http.Header key
	value  string   // set's value
	values []string // {value}, shared by every request (capacity 1: an append copies)
}

// serviceRules are a service's compiled header rules; nil when it has
// none.
type serviceRules struct {
	req, resp *headerRules // each nil when empty
}

// compileRules compiles the header rules of vs; nil when it has none.
func compileRules(vs *config.VirtualService) *serviceRules {
	req := compileHeaderRules(&vs.RequestHeaders, true)
	resp := compileHeaderRules(&vs.ResponseHeaders, false)
	if req == nil && resp == nil {
		return nil
	}
	return &serviceRules{req: req, resp: resp}
}

func compileHeaderRules(hr *config.HeaderRules, request bool) *headerRules {
	r := &headerRules{}
	for _, name := range hr.Remove {
		lower := strings.ToLower(name)
		if protectedField(lower) || (request && lower == "host") {
			continue
		}
		r.remove = append(r.remove, ruleField{lower: lower, canon: textproto.CanonicalMIMEHeaderKey(name)})
	}
	names := make([]string, 0, len(hr.Set))
	for name := range hr.Set {
		names = append(names, name)
	}
	slices.Sort(names) // the order they are written in, the same on every request
	for _, name := range names {
		lower := strings.ToLower(name)
		if protectedField(lower) {
			continue
		}
		v := hr.Set[name]
		r.set = append(r.set, ruleField{lower: lower, canon: textproto.CanonicalMIMEHeaderKey(name), value: v, values: []string{v}})
	}
	if len(r.remove) == 0 && len(r.set) == 0 {
		return nil
	}
	return r
}

// protectedField reports whether a field (lower case) is the proxy's
// alone: hop-by-hop, or the message's framing.
func protectedField(lower string) bool {
	return hopByHop([]byte(lower)) || lower == "content-length" || lower == "transfer-encoding"
}

func (s *serviceRules) request() *headerRules {
	if s == nil {
		return nil
	}
	return s.req
}

func (s *serviceRules) response() *headerRules {
	if s == nil {
		return nil
	}
	return s.resp
}

// touches reports whether the rules remove or set the field name: the
// message's own field of that name is not passed on.
func (r *headerRules) touches(name []byte) bool {
	if r == nil {
		return false
	}
	for i := range r.remove {
		if f := &r.remove[i]; len(f.lower) == len(name) && equalFold(name, f.lower) {
			return true
		}
	}
	for i := range r.set {
		if f := &r.set[i]; len(f.lower) == len(name) && equalFold(name, f.lower) {
			return true
		}
	}
	return false
}

// touchesLower is touches for a lower-case name.
func (r *headerRules) touchesLower(lower string) bool {
	if r == nil {
		return false
	}
	for i := range r.remove {
		if r.remove[i].lower == lower {
			return true
		}
	}
	for i := range r.set {
		if r.set[i].lower == lower {
			return true
		}
	}
	return false
}

// ruled reports whether the front's or the pool's rules remove or replace
// an HTTP/1.1 message's field.
func ruled(front, pool *headerRules, name []byte) bool {
	return (front != nil || pool != nil) && (front.touches(name) || pool.touches(name))
}

// writeRuleFields writes the fields the rules set into an HTTP/1.1 head:
// the front's, unless the pool's remove or set them again, then the
// pool's.
func writeRuleFields(w *writer, front, pool *headerRules) {
	if front != nil {
		for i := range front.set {
			if f := &front.set[i]; !pool.touchesLower(f.lower) {
				writeRuleField(w, f)
			}
		}
	}
	if pool != nil {
		for i := range pool.set {
			writeRuleField(w, &pool.set[i])
		}
	}
}

func writeRuleField(w *writer, f *ruleField) {
	w.WriteString(f.canon)
	w.WriteString(": ")
	w.WriteString(f.value)
	w.WriteString("\r\n")
}

// apply applies the rules to h (removals first); a request's Host, which
// is not in its header, goes to *host (nil for a response).
func (r *headerRules) apply(h http.Header, host *string) {
	if r == nil {
		return
	}
	for i := range r.remove {
		delete(h, r.remove[i].canon)
	}
	for i := range r.set {
		f := &r.set[i]
		if host != nil && f.lower == "host" {
			*host = f.value
			continue
		}
		h[f.canon] = f.values
	}
}
