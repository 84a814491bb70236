package proxy

import (
	"bytes"
	"net/netip"
	"strings"
	"time"

	"github.com/fulcrumlb/fulcrum/balancer"
	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/persistence"
)

// persister is a service's persistence and request keying: how a request is
// tied to the real server it reached before, and which key the hashing
// schedulers hash. A service without either has none (nil), which keeps the
// hot path as it was. Its stick table outlives reloads that keep the method
// and the table's bounds.
type persister struct {
	cfg    config.Persistence
	method string
	sched  string // the scheduler keyword, for its key
	hashHd string // header_hash: the header, lower case (see equalFold)
	header string // header persistence: the header, lower case

	addrs  *persistence.Table[netip.Addr] // source_ip
	keys   *persistence.Table[string]     // app_cookie, header, rdp_cookie (user)
	signer *persistence.Signer            // cookie
}

// keyedSchedulers hash a request key; the value says what is hashed.
var keyedSchedulers = map[string]bool{"source_hash": true, "uri_hash": true, "header_hash": true, "rdp_cookie": true}

// newPersister builds the persistence of vs, carrying over old's tables and
// signer where they still fit; nil when vs needs none.
func newPersister(vs *config.VirtualService, old *persister) *persister {
	pc := vs.Persistence
	if (pc.Method == "" || pc.Method == config.PersistNone) && !keyedSchedulers[vs.Scheduler] {
		return nil
	}
	p := &persister{cfg: pc, method: pc.Method, sched: vs.Scheduler,
		hashHd: strings.ToLower(vs.HashHeader), header: strings.ToLower(pc.Header)}
	if p.method == "" {
		p.method = config.PersistNone
	}
	sameTable := old != nil && old.method == p.method && old.cfg.MaxEntries == pc.MaxEntries && old.cfg.Timeout == pc.Timeout &&
		old.cfg.SourceMask == pc.SourceMask && old.cfg.SourceMask6 == pc.SourceMask6 && old.cfg.Header == pc.Header &&
		old.cfg.CookieName == pc.CookieName
	switch p.method {
	case config.PersistSourceIP:
		if sameTable {
			p.addrs = old.addrs
		} else {
			p.addrs = persistence.NewTable[netip.Addr](pc.MaxEntries, pc.Timeout)
		}
	case config.PersistAppCookie, config.PersistHeader, config.PersistRDPCookie:
		if sameTable {
			p.keys = old.keys
		} else {
			p.keys = persistence.NewTable[string](pc.MaxEntries, pc.Timeout)
		}
	case config.PersistCookie:
		if old != nil && old.signer != nil && old.cfg.CookieSecret == pc.CookieSecret {
			p.signer = old.signer // a random secret is kept across reloads
		} else {
			p.signer = persistence.NewSigner([]byte(pc.CookieSecret))
		}
	}
	return p
}

// sweep drops expired stick-table entries.
func (p *persister) sweep(now time.Time) {
	if p == nil {
		return
	}
	if p.addrs != nil {
		p.addrs.Sweep(now)
	}
	if p.keys != nil {
		p.keys.Sweep(now)
	}
}

// sourceKey is the stick-table key of a client address.
func (p *persister) sourceKey(a netip.Addr) netip.Addr {
	return persistence.SourceKey(a, p.cfg.SourceMask, p.cfg.SourceMask6)
}

// tokens maps cookie tokens to real servers and back, for a service's
// current real servers.
type tokens struct {
	byToken  map[string]*realServer
	ofServer map[*realServer]string
}

func newTokens(signer *persistence.Signer, service string, list []*realServer) *tokens {
	t := &tokens{byToken: make(map[string]*realServer, len(list)), ofServer: make(map[*realServer]string, len(list))}
	for _, rs := range list {
		tok := signer.Token(service, rs.Name)
		t.byToken[tok] = rs
		t.ofServer[rs] = tok
	}
	return t
}

// The decisions below are made the same way for every HTTP front end: they
// read a request through requestView and keep their state in a choice.

// requestView is what scheduling and persistence read of a request, whatever
// protocol carried it (HTTP/1.1: clientConn; HTTP/2: h2request).
type requestView interface {
	peerAddr() netip.Addr
	field(lowerName string) []byte // the first value of a header field, or nil
	cookie(name string) ([]byte, bool)
	path() []byte // the request target without its query
}

// choice is one request's persistence state across its attempts.
type choice struct {
	persisted bool        // persistence chose the real server
	cookieRS  *realServer // the server the request's persistence cookie names
	setCookie string      // the persistence cookie token to insert in the response
}

// stuck returns the real server the request is tied to, if any.
func (s *Service) stuck(p *persister, rv requestView, ch *choice) *realServer {
	set := s.reals.Load()
	switch p.method {
	case config.PersistCookie:
		if v, ok := rv.cookie(p.cfg.CookieName); ok && set.tokens != nil {
			ch.cookieRS = set.tokens.byToken[string(v)] // no allocation: map lookup by converted bytes
			return ch.cookieRS
		}
	case config.PersistAppCookie:
		if v, ok := rv.cookie(p.cfg.CookieName); ok {
			if name, ok := p.keys.Get(string(v)); ok {
				return set.byName[name]
			}
		}
	case config.PersistHeader:
		if v := rv.field(p.header); len(v) > 0 {
			if name, ok := p.keys.Get(string(v)); ok {
				return set.byName[name]
			}
		}
	case config.PersistSourceIP:
		if name, ok := p.addrs.Get(p.sourceKey(rv.peerAddr())); ok {
			return set.byName[name]
		}
	}
	return nil
}

// addrHash is the source_hash key of a client address: its 4 bytes for
// IPv4, 16 for IPv6 (as balancer.SourceHash documents).
func addrHash(a netip.Addr) uint64 {
	if a.Is4() {
		b := a.As4()
		return balancer.HashBytes(b[:])
	}
	b := a.As16()
	return balancer.HashBytes(b[:])
}

// requestKey is what a hashing scheduler hashes for this request; ok is
// false when the request has none (header_hash without the header).
func requestKey(p *persister, rv requestView) (uint64, bool) {
	switch p.sched {
	case "source_hash":
		return addrHash(rv.peerAddr()), true
	case "uri_hash":
		return balancer.HashBytes(rv.path()), true
	case "header_hash":
		if v := rv.field(p.hashHd); len(v) > 0 {
			return balancer.HashBytes(v), true
		}
	}
	return 0, false
}

// pick chooses the real server of one attempt: the persistent one when the
// request is tied to one that is reachable (a draining server still takes
// its persistent clients), else the scheduler's choice.
func (s *Service) pick(rv requestView, ch *choice, tried *balancer.Tried) (*balancer.Server, error) {
	p := s.persist.Load()
	if p == nil {
		return s.Pool.Acquire(tried)
	}
	if tried.Len() == 0 && p.method != config.PersistNone {
		if rs := s.stuck(p, rv, ch); rs != nil {
			if err := s.Pool.AcquireServer(rs.Server); err == nil {
				ch.persisted = true
				return rs.Server, nil
			}
			// Down, in maintenance or gone: rescheduled, and the entry is
			// replaced below.
		}
	}
	ch.persisted = false
	if key, ok := requestKey(p, rv); ok {
		return s.Pool.AcquireKey(tried, key)
	}
	return s.Pool.Acquire(tried)
}

// remember records where the request went, once it reached rs: a stick
// entry, or the cookie to insert in the response.
func (s *Service) remember(rv requestView, ch *choice, rs *realServer) {
	p := s.persist.Load()
	if p == nil || rs.fallback { // the fallback stands in for the real servers; it is no choice to keep
		return
	}
	switch p.method {
	case config.PersistCookie:
		if set := s.reals.Load(); set.tokens != nil && ch.cookieRS != rs {
			ch.setCookie = set.tokens.ofServer[rs]
		}
	case config.PersistSourceIP:
		if !ch.persisted {
			p.addrs.Put(p.sourceKey(rv.peerAddr()), rs.Name)
		}
	case config.PersistHeader:
		if v := rv.field(p.header); len(v) > 0 && !ch.persisted {
			p.keys.Put(string(v), rs.Name)
		}
	}
}

// learn reads the application's session cookie (app_cookie) from one
// Set-Cookie field value of rs's response.
func (s *Service) learn(setCookie []byte, rs *realServer) {
	p := s.persist.Load()
	if p == nil || p.method != config.PersistAppCookie || rs.fallback {
		return
	}
	if name, value, ok := persistence.SetCookieName(setCookie); ok && string(name) == p.cfg.CookieName && len(value) > 0 {
		p.keys.Put(string(value), rs.Name)
	}
}

// HTTP/1.1: clientConn is a requestView.

func (cc *clientConn) peerAddr() netip.Addr          { return cc.client }
func (cc *clientConn) field(lowerName string) []byte { return cc.req.field(lowerName) }

func (cc *clientConn) path() []byte {
	path := cc.req.target
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	return path
}

// cookie returns the value of the named cookie in the request.
func (cc *clientConn) cookie(name string) ([]byte, bool) {
	for i := range cc.req.headers {
		h := &cc.req.headers[i]
		if len(h.name) == 6 && equalFold(h.name, "cookie") {
			if v, ok := persistence.CookieValue(h.value, name); ok {
				return v, true
			}
		}
	}
	return nil, false
}

// field returns the value of the first field named name (lower case), or
// nil.
func (h *head) field(name string) []byte {
	for i := range h.headers {
		if f := &h.headers[i]; len(f.name) == len(name) && equalFold(f.name, name) {
			return f.value
		}
	}
	return nil
}

// learnAll feeds every Set-Cookie of the response to learn.
func (cc *clientConn) learnAll(rs *realServer) {
	if p := cc.pool.persist.Load(); p == nil || p.method != config.PersistAppCookie {
		return
	}
	for i := range cc.resp.headers {
		if h := &cc.resp.headers[i]; len(h.name) == 10 && equalFold(h.name, "set-cookie") {
			cc.pool.learn(h.value, rs)
		}
	}
}

// writeSetCookie adds the persistence cookie to a response head, rendered
// as every front end renders it (persistence.AppendSetCookie), in place.
func (cc *clientConn) writeSetCookie(w *writer) {
	p := cc.pool.persist.Load() // the pool's persistence (route.go)
	if p == nil || cc.choice.setCookie == "" {
		return
	}
	w.WriteString("Set-Cookie: ")
	w.Write(persistence.AppendSetCookie(w.spare(), p.cfg.CookieName, cc.choice.setCookie, cc.tls != nil))
	w.WriteString("\r\n")
}
