package proxy

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// This file exposes the stick tables for replication to an HA peer: a feed
// of the entries the request path stores, a snapshot of them all, and the
// receiving side that stores a peer's entries.

// StickFeedLen is how many stick-table updates the feed holds for its
// reader; updates beyond it are dropped and counted (StickDropped).
const StickFeedLen = 4096

// StickUpdate is one stick-table entry of a virtual service.
type StickUpdate struct {
	// Service is the virtual service's name.
	Service string
	// Method is the service's persistence method, which names its table:
	// source_ip, app_cookie, header or rdp_cookie. An entry whose method
	// is not the receiving service's is skipped.
	Method string
	// Key is the client key: the (masked) client address for source_ip,
	// the cookie value, header value or RDP user name otherwise.
	Key string
	// Server is the real server's name.
	Server string
	// Used is the entry's last use.
	Used time.Time
}

// stickFeed is the proxy's stick-table change feed, off until
// StickUpdates turns it on.
type stickFeed struct {
	on      atomic.Bool
	once    sync.Once
	ch      chan StickUpdate // made before on is set
	dropped atomic.Uint64
}

// send queues u without ever blocking the request path: a full feed drops
// it.
func (f *stickFeed) send(u StickUpdate) {
	select {
	case f.ch <- u:
	default:
		f.dropped.Add(1)
	}
}

// StickUpdates turns the stick-table change feed on and returns it: every
// entry the request path stores (a client scheduled afresh) in any virtual
// service, in the order stored. The feed holds StickFeedLen updates; when
// its reader falls behind, updates are dropped and counted (StickDropped),
// so the request path never waits. Every call returns the same channel;
// there is one reader.
func (p *Proxy) StickUpdates() <-chan StickUpdate {
	p.stick.once.Do(func() {
		p.stick.ch = make(chan StickUpdate, StickFeedLen)
		p.stick.on.Store(true)
	})
	return p.stick.ch
}

// StickDropped is how many updates the feed has dropped because it was
// full.
func (p *Proxy) StickDropped() uint64 { return p.stick.dropped.Load() }

// StickSnapshot returns every live stick-table entry of every virtual
// service, for a full resynchronisation of a peer that (re)joins.
func (p *Proxy) StickSnapshot() []StickUpdate {
	p.mu.Lock()
	services := append([]*Service(nil), p.services...)
	p.mu.Unlock()
	var out []StickUpdate
	for _, s := range services {
		ps := s.persist.Load()
		if ps == nil {
			continue
		}
		if ps.addrs != nil {
			ps.addrs.Range(func(k netip.Addr, server string, used time.Time) bool {
				out = append(out, StickUpdate{Service: s.Name, Method: ps.method, Key: k.String(), Server: server, Used: used})
				return true
			})
		}
		if ps.keys != nil {
			ps.keys.Range(func(k string, server string, used time.Time) bool {
				out = append(out, StickUpdate{Service: s.Name, Method: ps.method, Key: k, Server: server, Used: used})
				return true
			})
		}
	}
	return out
}

// ApplyStick stores a peer's stick-table entries in the tables of the
// services they name and returns how many it stored. It skips, without
// failing the rest, an entry whose service is unknown here or persists by
// another method, whose source_ip key is not an address, or which has
// expired; err says how many were skipped and why the first was.
func (p *Proxy) ApplyStick(batch []StickUpdate) (applied int, err error) {
	p.mu.Lock()
	byName := make(map[string]*Service, len(p.services))
	for _, s := range p.services {
		byName[s.Name] = s
	}
	p.mu.Unlock()
	skipped, first := 0, ""
	skip := func(u *StickUpdate, why string) {
		if skipped == 0 {
			first = fmt.Sprintf("virtual service %q: %s", u.Service, why)
		}
		skipped++
	}
	for i := range batch {
		u := &batch[i]
		s := byName[u.Service]
		if s == nil {
			skip(u, "no such virtual service")
			continue
		}
		ps := s.persist.Load()
		if ps == nil || ps.method != u.Method {
			skip(u, fmt.Sprintf("persistence method is not %s", u.Method))
			continue
		}
		var stored bool
		switch u.Method {
		case config.PersistSourceIP:
			a, perr := netip.ParseAddr(u.Key)
			if perr != nil {
				skip(u, fmt.Sprintf("source_ip key %q is not an address", u.Key))
				continue
			}
			stored = ps.addrs.Restore(a, u.Server, u.Used)
		case config.PersistAppCookie, config.PersistHeader, config.PersistRDPCookie:
			stored = ps.keys.Restore(u.Key, u.Server, u.Used)
		default:
			skip(u, fmt.Sprintf("method %q has no stick table", u.Method))
			continue
		}
		if !stored {
			skip(u, "entry expired")
			continue
		}
		applied++
	}
	if skipped > 0 {
		err = fmt.Errorf("%d of %d stick entries skipped; first: %s: %w", skipped, len(batch), first, ErrInvalid)
	}
	return applied, err
}

// hookStick connects p's stick tables to the service's change feed and
// returns p. Tables carried over from the previous persister are hooked
// again to the same effect.
func (s *Service) hookStick(p *persister) *persister {
	if p == nil || s.stick == nil {
		return p
	}
	feed, name, method := s.stick, s.Name, p.method
	if p.addrs != nil {
		p.addrs.SetOnPut(func(k netip.Addr, server string) {
			if feed.on.Load() {
				feed.send(StickUpdate{Service: name, Method: method, Key: k.String(), Server: server, Used: time.Now()})
			}
		})
	}
	if p.keys != nil {
		p.keys.SetOnPut(func(k string, server string) {
			if feed.on.Load() {
				feed.send(StickUpdate{Service: name, Method: method, Key: k, Server: server, Used: time.Now()})
			}
		})
	}
	return p
}
