// Package balancer chooses a real server for each new request or connection.
//
// A Pool holds a virtual service's real servers, its Scheduler and the FIFO
// queue of requests waiting for a free slot when every server is at its
// max_conns. Schedulers are told about pool changes (Update) so that Pick is a
// cheap lookup on the hot path. The package knows nothing of health checks,
// persistence or HA: it reads Server.Available.
package balancer

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"sync/atomic"
)

// Server is a real server as the schedulers see it. Its counters are updated
// atomically; it is safe for concurrent use.
type Server struct {
	// Name and Address are fixed for the server's life.
	Name    string
	Address string

	weight   atomic.Int32 // configured share; 0 takes no new traffic
	maxConns atomic.Int64 // 0 = unlimited
	active   atomic.Int64 // requests (http) or connections (tcp) in flight
	down     atomic.Bool  // operational state; false (up) until a health check says otherwise
	admin    atomic.Int32 // AdminState
}

// AdminState is what an operator (or an agent) wants of a server,
// independent of its health.
type AdminState int32

const (
	// Ready servers take traffic when they are up.
	Ready AdminState = iota
	// Drain servers take no new clients; clients that persistence ties to
	// them and established connections carry on.
	Drain
	// Maintenance servers take no traffic at all.
	Maintenance
)

var adminStateNames = [...]string{Ready: "ready", Drain: "drain", Maintenance: "maintenance"}

func (a AdminState) String() string {
	if a >= 0 && int(a) < len(adminStateNames) {
		return adminStateNames[a]
	}
	return "AdminState(" + strconv.Itoa(int(a)) + ")"
}

// ParseAdminState returns the state named s: ready, drain, or maintenance
// (also "maint", HAProxy's word).
func ParseAdminState(s string) (AdminState, bool) {
	switch s {
	case "ready":
		return Ready, true
	case "drain":
		return Drain, true
	case "maintenance", "maint":
		return Maintenance, true
	}
	return 0, false
}

// NewServer returns an up server with the given weight and max_conns
// (0 = unlimited). A Server belongs to one Pool: releasing a slot wakes only
// that pool's queue.
func NewServer(name, address string, weight, maxConns int) *Server {
	s := &Server{Name: name, Address: address}
	s.SetWeight(weight)
	s.SetMaxConns(maxConns)
	return s
}

// SetWeight changes the server's share; 0 (or less) stops new traffic to it
// while leaving requests in flight alone. Values
// beyond int32 are clamped. Call Pool.Update afterwards so that the
// scheduler sees it.
func (s *Server) SetWeight(w int) {
	s.weight.Store(int32(min(max(w, 0), math.MaxInt32)))
}

// SetMaxConns changes the server's concurrency bound; 0 (or less) means
// unlimited. Lowering it below Active does not cut anything: new requests wait
// until enough in-flight ones finish. Call Pool.Update afterwards so that a
// raised bound wakes queued requests at once.
func (s *Server) SetMaxConns(n int) { s.maxConns.Store(int64(max(n, 0))) }

// SetDown records the operational state a health check found. Call
// Pool.Update afterwards so that the scheduler stops (or resumes) counting
// the server and queued requests with nowhere left to go fail fast.
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// SetAdminState records the admin state. Call Pool.Update afterwards, as
// for SetDown.
func (s *Server) SetAdminState(a AdminState) { s.admin.Store(int32(a)) }

// AdminState returns the admin state.
func (s *Server) AdminState() AdminState { return AdminState(s.admin.Load()) }

// Down reports whether a health check found the server down.
func (s *Server) Down() bool { return s.down.Load() }

// tryAcquire claims one slot on the server. It fails only when max_conns is
// set and already reached; a CAS loop rather than Add-then-undo keeps Active
// from ever exceeding max_conns, even for an instant, which matters to least
// connection schedulers reading it concurrently.
func (s *Server) tryAcquire() bool {
	limit := s.maxConns.Load()
	if limit == 0 {
		s.active.Add(1)
		return true
	}
	for {
		a := s.active.Load()
		if a >= limit {
			return false
		}
		if s.active.CompareAndSwap(a, a+1) {
			return true
		}
	}
}

// release returns a slot claimed by tryAcquire. Like sync.WaitGroup it panics
// on a negative count: a double release would silently lift max_conns.
func (s *Server) release() {
	if s.active.Add(-1) < 0 {
		panic("balancer: release of " + s.Name + " without a matching acquire")
	}
}

// full reports whether a tryAcquire would fail now, without claiming.
func (s *Server) full() bool {
	limit := s.maxConns.Load()
	return limit > 0 && s.active.Load() >= limit
}

// Available reports whether the server may take new clients: it is up,
// ready and its weight is above zero. It says nothing of free slots.
func (s *Server) Available() bool {
	return !s.down.Load() && s.admin.Load() == int32(Ready) && s.weight.Load() > 0
}

// Reachable reports whether a persistent client may still be sent to the
// server: it is up and not in maintenance. Unlike Available it holds in drain
// and at weight 0, which stop new clients only (HAProxy's semantics: a
// persistent client "is not a new client"). It says nothing of free slots.
func (s *Server) Reachable() bool {
	return !s.down.Load() && s.admin.Load() != int32(Maintenance)
}

// Weight returns the server's current weight.
func (s *Server) Weight() int { return int(s.weight.Load()) }

// Active returns the requests or connections in flight to the server.
func (s *Server) Active() int64 { return s.active.Load() }

// MaxConns returns the server's concurrency bound; 0 means unlimited.
func (s *Server) MaxConns() int64 { return s.maxConns.Load() }

func (s *Server) String() string { return s.Name }

// Scheduler picks a server among a pool's servers. Implementations live one
// per file and register under their config keyword, which String returns.
type Scheduler interface {
	// Update tells the scheduler the pool's servers, or their weights or
	// availability, changed. It is called before the first Pick and is
	// never called concurrently with itself.
	Update(servers []*Server)
	// Pick returns an Available server not in tried and claims one of its
	// slots (see Server.tryAcquire), or nil when it finds no server with a
	// free slot. It may also return nil after losing a bounded number of
	// races for slots to concurrent Picks: each loss means another request
	// holds a slot, and its Release will wake the queue. It is called
	// concurrently and must not allocate or lock.
	Pick(tried *Tried) *Server
	fmt.Stringer
}

// KeyScheduler is a Scheduler that can also pick by a key the proxy derives
// from the request (a hash of the client address, the URI, a header, the RDP
// user: see HashBytes), so that equal keys reach the same server while it
// can take them. Pool.AcquireKey uses PickKey; Pool.Acquire, for requests
// without a key, uses Pick.
type KeyScheduler interface {
	Scheduler
	// PickKey is Pick for a request with the given key: the server the
	// key maps to if it is Available, untried and has a free slot, else
	// another chosen deterministically from the key, so that a key's
	// failover server is stable too. Like Pick it claims a slot, returns
	// nil only when no server has a free slot (or after a bounded number
	// of lost races), and must not allocate or lock.
	PickKey(key uint64, tried *Tried) *Server
}

// Tried is the set of servers a request has already tried (failed connects),
// so that retries go elsewhere. The zero value is empty; it does not allocate
// for up to len(first) servers.
type Tried struct {
	first [4]*Server
	n     int // entries used in first
	more  []*Server
}

// Add puts s in the set; adding a server twice is harmless.
func (t *Tried) Add(s *Server) {
	if t.Has(s) {
		return
	}
	if t.n < len(t.first) {
		t.first[t.n] = s
		t.n++
		return
	}
	t.more = append(t.more, s)
}

// Has reports whether s is in the set. A nil *Tried is empty. A linear scan
// beats a map here: the set is almost always empty or holds one or two
// servers.
func (t *Tried) Has(s *Server) bool {
	if t == nil {
		return false
	}
	for _, x := range t.first[:t.n] {
		if x == s {
			return true
		}
	}
	for _, x := range t.more {
		if x == s {
			return true
		}
	}
	return false
}

// Len returns the number of servers in the set. A nil *Tried is empty.
func (t *Tried) Len() int {
	if t == nil {
		return 0
	}
	return t.n + len(t.more)
}

// eligible reports whether a scheduler may consider s at all: it is up, has
// weight and has not been tried. Schedulers re-check Available on every Pick
// because a health check may mark a server down before the owner gets round
// to Pool.Update.
func eligible(s *Server, tried *Tried) bool {
	return s.Available() && !tried.Has(s)
}

// availableServers returns the servers that are Available now, in pool order:
// the snapshot the round robin and least connection schedulers scan.
func availableServers(servers []*Server) []*Server {
	up := make([]*Server, 0, len(servers))
	for _, s := range servers {
		if s.Available() {
			up = append(up, s)
		}
	}
	return up
}

var registry = map[string]func() Scheduler{}

// register makes a scheduler constructor known under its keyword; called from
// each scheduler file's init.
func register(name string, newFn func() Scheduler) { registry[name] = newFn }

// New returns a fresh scheduler for a config keyword.
func New(name string) (Scheduler, error) {
	f, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("unknown scheduler %q (known: %v)", name, Names())
	}
	return f(), nil
}

// Names lists the known scheduler keywords, sorted.
func Names() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
