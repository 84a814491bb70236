package balancer

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by Pool.Acquire, AcquireKey and AcquireServer. The proxy
// maps them to a status: 503 for both, or 502 when ErrNoServer follows failed
// connects (every server tried).
var (
	// ErrNoServer means no real server is up, has weight and is untried
	// (for AcquireServer: the server is down or in maintenance).
	ErrNoServer = errors.New("no real server available")
	// ErrQueueTimeout means servers are up but every one stayed at its
	// max_conns for the whole queue timeout.
	ErrQueueTimeout = errors.New("queue timeout: every real server is at max_conns")
)

// Pool is a virtual service's real servers, its scheduler and its queue: the
// requests waiting, in arrival order, for a server slot when every candidate
// is at max_conns (HAProxy's backend queue). It is safe for concurrent use.
//
// Acquire, AcquireKey, AcquireServer and Release take no lock and do not
// allocate while nobody is queued; the queue costs a mutex only while it is in
// use.
type Pool struct {
	sched   atomic.Pointer[schedRef]
	servers atomic.Pointer[[]*Server]
	timeout atomic.Int64 // time.Duration

	// queued is the queue length, kept beside the list so that Acquire and
	// Release can see "nobody waits" with one atomic load. It changes only
	// under mu.
	queued atomic.Int64

	mu         sync.Mutex // guards head, tail, targeted and every queued waiter's links
	head, tail *waiter
	targeted   int // queued AcquireServer waiters

	updateMu sync.Mutex // Scheduler.Update must not run concurrently with itself
}

// schedRef boxes a Scheduler so that it can be swapped atomically, with the
// KeyScheduler it may also be found once, not on every pick.
type schedRef struct {
	Scheduler
	keyed KeyScheduler // the same scheduler if it picks by key, else nil
}

func newSchedRef(s Scheduler) *schedRef {
	k, _ := s.(KeyScheduler)
	return &schedRef{Scheduler: s, keyed: k}
}

// pick is PickKey for a keyed request when the scheduler can use the key,
// else Pick.
func (r *schedRef) pick(tried *Tried, key uint64, keyed bool) *Server {
	if keyed && r.keyed != nil {
		return r.keyed.PickKey(key, tried)
	}
	return r.Pick(tried)
}

// waiter is one queued Acquire, AcquireKey or AcquireServer. Waiters are
// pooled: a request that has to queue should not also pay for a channel and a
// timer.
type waiter struct {
	tried      *Tried       // owned by the waiting Acquire; read by pumps
	key        uint64       // for AcquireKey
	keyed      bool         // key is set: pumps use PickKey
	target     *Server      // for AcquireServer: the only server it takes
	ch         chan *Server // capacity 1: the handed server, or nil for ErrNoServer
	timer      *time.Timer
	prev, next *waiter
	queued     bool // in the list; guarded by Pool.mu
}

var waiters = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &waiter{ch: make(chan *Server, 1), timer: t}
}}

// trieds holds copies of callers' Tried sets; see Acquire.
var trieds = sync.Pool{New: func() any { return new(Tried) }}

// NewPool returns a pool over servers (the slice is copied) balanced by s.
// queueTimeout is how long Acquire waits for a slot when every candidate is
// at max_conns; if zero, it does not wait but fails with ErrQueueTimeout at
// once. Each server must belong to this pool only: releasing its slots wakes
// this pool's queue and no other.
func NewPool(s Scheduler, servers []*Server, queueTimeout time.Duration) *Pool {
	p := &Pool{}
	list := append([]*Server(nil), servers...)
	p.servers.Store(&list)
	p.sched.Store(newSchedRef(s))
	p.timeout.Store(int64(queueTimeout))
	s.Update(list)
	return p
}

// Servers returns the pool's real servers in configuration order (a copy).
func (p *Pool) Servers() []*Server { return append([]*Server(nil), *p.servers.Load()...) }

// Scheduler returns the pool's scheduler.
func (p *Pool) Scheduler() Scheduler { return p.sched.Load().Scheduler }

// SetServers replaces the pool's servers (the slice is copied), as when a
// real server is added or removed at run time. Requests in flight on a
// removed server finish and Release it as usual.
func (p *Pool) SetServers(servers []*Server) {
	list := append([]*Server(nil), servers...)
	p.updateMu.Lock()
	p.servers.Store(&list)
	p.updateMu.Unlock()
	p.Update()
}

// SetScheduler replaces the pool's scheduler (a reload changed it).
func (p *Pool) SetScheduler(s Scheduler) {
	p.updateMu.Lock()
	s.Update(*p.servers.Load())
	p.sched.Store(newSchedRef(s))
	p.updateMu.Unlock()
	p.Update()
}

// SetQueueTimeout changes the queue timeout for requests queued from now on.
func (p *Pool) SetQueueTimeout(d time.Duration) { p.timeout.Store(int64(d)) }

// QueueLen returns the number of requests waiting for a slot.
func (p *Pool) QueueLen() int { return int(p.queued.Load()) }

// Update tells the scheduler that servers' weights, max_conns or states
// changed (after Server.SetWeight, SetMaxConns, SetDown). Queued requests
// that no longer have any server to wait for fail with ErrNoServer (for
// AcquireServer: their server went down, into maintenance or out of the
// pool), and those that can now be served (a server came up or got a higher
// max_conns) are.
func (p *Pool) Update() {
	p.updateMu.Lock()
	p.sched.Load().Update(*p.servers.Load())
	p.updateMu.Unlock()
	// A waiter that joins after this load pumps for itself, against the
	// snapshot just stored.
	if p.queued.Load() == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for w := p.head; w != nil; {
		next := w.next
		if !p.canWait(w) {
			p.remove(w)
			w.ch <- nil
		}
		w = next
	}
	p.pump()
}

// Acquire claims a slot on a real server not in tried (which may be nil) and
// returns it; the caller must Release it when the request or connection is
// done. When every candidate is at max_conns it waits in the queue up to the
// queue timeout. It fails with ErrNoServer or ErrQueueTimeout.
func (p *Pool) Acquire(tried *Tried) (*Server, error) { return p.acquireCopy(tried, 0, false) }

// AcquireKey is Acquire for a request with a key (see KeyScheduler): a
// KeyScheduler picks by the key, also for the request once queued; other
// schedulers ignore it. The caller must Release the server.
func (p *Pool) AcquireKey(tried *Tried, key uint64) (*Server, error) {
	return p.acquireCopy(tried, key, true)
}

func (p *Pool) acquireCopy(tried *Tried, key uint64, keyed bool) (*Server, error) {
	if tried.Len() == 0 {
		return p.acquire(nil, key, keyed)
	}
	// Scheduler.Pick is an interface call, so the compiler assumes its
	// pointer argument escapes; handing it the caller's *Tried would move
	// every caller's Tried to the heap, first attempts included. So pass
	// nil for first attempts, and a pooled copy on retries.
	t := trieds.Get().(*Tried)
	*t = *tried
	s, err := p.acquire(t, key, keyed)
	*t = Tried{}
	trieds.Put(t)
	return s, err
}

func (p *Pool) acquire(tried *Tried, key uint64, keyed bool) (*Server, error) {
	// New arrivals may skip the queue only when it is empty; otherwise they
	// could take the slot a release was about to hand to the head.
	if p.queued.Load() == 0 {
		if s := p.sched.Load().pick(tried, key, keyed); s != nil {
			return s, nil
		}
	}
	if !p.hasCandidate(tried) {
		return nil, ErrNoServer
	}
	// With no timeout nobody ever queues, so the Pick above was made.
	if p.timeout.Load() <= 0 {
		return nil, ErrQueueTimeout
	}
	return p.wait(tried, key, keyed, nil)
}

// AcquireServer claims a slot on s itself, bypassing the scheduler, for a
// client that persistence ties to s; the caller must Release it. s must be
// one of the pool's servers. Drain and weight 0 do not stop it (see
// Server.Reachable). When s is at max_conns the request waits in the pool's
// queue, in arrival order with the others, up to the queue timeout
// (ErrQueueTimeout). It fails with ErrNoServer if s is down or in
// maintenance, or goes down, into maintenance or out of the pool while the
// request waits (as Pool.Update reports it).
func (p *Pool) AcquireServer(s *Server) error {
	if !s.Reachable() {
		return ErrNoServer
	}
	if p.queued.Load() == 0 && s.tryAcquire() {
		return nil
	}
	if !p.hasServer(s) {
		return ErrNoServer
	}
	if p.timeout.Load() <= 0 {
		return ErrQueueTimeout
	}
	_, err := p.wait(nil, 0, false, s)
	return err
}

// canWait reports whether a queued request may still be served given time.
func (p *Pool) canWait(w *waiter) bool {
	if w.target != nil {
		return w.target.Reachable() && p.hasServer(w.target)
	}
	return p.hasCandidate(w.tried)
}

// hasServer reports whether s is one of the pool's servers.
func (p *Pool) hasServer(s *Server) bool {
	for _, x := range *p.servers.Load() {
		if x == s {
			return true
		}
	}
	return false
}

// hasCandidate reports whether a server could take the request given time,
// that is whether waiting makes sense: one is up, has weight and is untried.
func (p *Pool) hasCandidate(tried *Tried) bool {
	for _, s := range *p.servers.Load() {
		if eligible(s, tried) {
			return true
		}
	}
	return false
}

// testHookJoin, if set, runs as a request is about to join the queue, so
// tests can release a slot in the window between its failed Pick and the
// join. It is on the queueing path only.
var testHookJoin func()

// wait queues the request and waits for a pump to hand it a server; see
// waiter for the arguments.
func (p *Pool) wait(tried *Tried, key uint64, keyed bool, target *Server) (*Server, error) {
	w := waiters.Get().(*waiter)
	w.tried, w.key, w.keyed, w.target = tried, key, keyed, target
	defer func() {
		w.tried, w.key, w.keyed, w.target = nil, 0, false, nil
		waiters.Put(w)
	}()

	if testHookJoin != nil {
		testHookJoin()
	}
	p.mu.Lock()
	p.push(w)
	// A slot may have been released between our failed Pick and the push,
	// by a Release that saw an empty queue and so did not pump. Pump now;
	// see Release for why this is enough.
	p.pump()
	p.mu.Unlock()

	var s *Server
	w.timer.Reset(time.Duration(p.timeout.Load()))
	select {
	case s = <-w.ch:
		w.timer.Stop() // since Go 1.23 no stale tick can be left in C
	case <-w.timer.C:
		p.mu.Lock()
		timedOut := w.queued
		if timedOut {
			p.remove(w)
		}
		p.mu.Unlock()
		if timedOut {
			return nil, ErrQueueTimeout
		}
		// A pump dequeued us and handed over a server (or nil) as the
		// timer fired; the send happened under mu, so it is in the
		// buffer already. Using it beats failing with a slot in hand.
		s = <-w.ch
	}
	if s == nil {
		return nil, ErrNoServer
	}
	return s, nil
}

// Release returns a slot that Acquire claimed on s and, if requests are
// queued, hands freed slots to them in order.
//
// No wake-up is lost between Release and a request joining the queue.
// Release decrements s's active count and then loads queued; the joiner
// increments queued (in push) and then Picks, which reads active counts. All
// four are sequentially consistent atomics, so in their single total order
// either the load comes after the increment, and this Release takes mu and
// pumps after the joiner has pushed (push and increment happen together
// under mu); or the load comes before it, so the decrement does too, and the
// joiner's own Pick sees the freed slot. A Pick that fails while slots are
// free has lost a race to another claimer, whose own Release will pump.
func (p *Pool) Release(s *Server) {
	s.release()
	if p.queued.Load() == 0 {
		return
	}
	p.mu.Lock()
	p.pump()
	p.mu.Unlock()
}

// pump hands free slots to queued requests in arrival order. A waiter that
// cannot use any free slot (it already tried those servers, or waits for one
// server that is full) is passed over rather than blocking the queue. A
// waiter with nothing tried failing to pick means every Available server is
// full for everyone, so the walk stops there, which keeps the common case
// O(1); only AcquireServer waiters behind it can still be served (their
// server may be draining, so not Available, and have a slot), so while there
// are any the walk goes on for them alone. Callers hold mu.
func (p *Pool) pump() {
	ref := p.sched.Load()
	full := false // every Available server is full
	for w := p.head; w != nil; {
		next := w.next
		var s *Server
		switch {
		case w.target != nil:
			// Not while unreachable: Update will fail the waiter.
			if w.target.Reachable() && w.target.tryAcquire() {
				s = w.target
			}
		case !full:
			s = ref.pick(w.tried, w.key, w.keyed)
			if s == nil && w.tried.Len() == 0 {
				if p.targeted == 0 {
					return
				}
				full = true
			}
		}
		if s != nil {
			p.remove(w)
			w.ch <- s // never blocks: capacity 1 and one send per queueing
		}
		w = next
	}
}

// push appends w to the queue. Callers hold mu.
func (p *Pool) push(w *waiter) {
	w.prev, w.next = p.tail, nil
	if p.tail != nil {
		p.tail.next = w
	} else {
		p.head = w
	}
	p.tail = w
	w.queued = true
	if w.target != nil {
		p.targeted++
	}
	p.queued.Add(1)
}

// remove unlinks w from the queue. Callers hold mu.
func (p *Pool) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		p.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		p.tail = w.prev
	}
	w.prev, w.next = nil, nil
	w.queued = false
	if w.target != nil {
		p.targeted--
	}
	p.queued.Add(-1)
}
