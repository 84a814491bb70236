package balancer

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by Pool.Acquire. The proxy maps them to a status: 503 for
// both, or 502 when ErrNoServer follows failed connects (every server tried).
var (
	// ErrNoServer means no real server is up, has weight and is untried.
	ErrNoServer = errors.New("no real server available")
	// ErrQueueTimeout means servers are up but every one stayed at its
	// max_conns for the whole queue timeout.
	ErrQueueTimeout = errors.New("queue timeout: every real server is at max_conns")
)

// Pool is a virtual service's real servers, its scheduler and its queue: the
// requests waiting, in arrival order, for a server slot when every candidate
// is at max_conns (HAProxy's backend queue). It is safe for concurrent use.
//
// Acquire and Release take no lock and do not allocate while nobody is
// queued; the queue costs a mutex only while it is in use.
type Pool struct {
	sched   atomic.Pointer[schedRef]
	servers atomic.Pointer[[]*Server]
	timeout atomic.Int64 // time.Duration

	// queued is the queue length, kept beside the list so that Acquire and
	// Release can see "nobody waits" with one atomic load. It changes only
	// under mu.
	queued atomic.Int64

	mu         sync.Mutex // guards head, tail and every queued waiter's links
	head, tail *waiter

	updateMu sync.Mutex // Scheduler.Update must not run concurrently with itself
}

// schedRef boxes a Scheduler so that it can be swapped atomically.
type schedRef struct{ Scheduler }

// waiter is one queued Acquire. Waiters are pooled: a request that has to
// queue should not also pay for a channel and a timer.
type waiter struct {
	tried      *Tried       // owned by the waiting Acquire; read by pumps
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
	p.sched.Store(&schedRef{s})
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
	p.sched.Store(&schedRef{s})
	p.updateMu.Unlock()
	p.Update()
}

// SetQueueTimeout changes the queue timeout for requests queued from now on.
func (p *Pool) SetQueueTimeout(d time.Duration) { p.timeout.Store(int64(d)) }

// QueueLen returns the number of requests waiting for a slot.
func (p *Pool) QueueLen() int { return int(p.queued.Load()) }

// Update tells the scheduler that servers' weights, max_conns or states
// changed (after Server.SetWeight, SetMaxConns, SetDown). Queued requests
// that no longer have any server to wait for fail with ErrNoServer, and those
// that can now be served (a server came up or got a higher max_conns) are.
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
		if !p.hasCandidate(w.tried) {
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
func (p *Pool) Acquire(tried *Tried) (*Server, error) {
	if tried.Len() == 0 {
		return p.acquire(nil)
	}
	// Scheduler.Pick is an interface call, so the compiler assumes its
	// pointer argument escapes; handing it the caller's *Tried would move
	// every caller's Tried to the heap, first attempts included. So pass
	// nil for first attempts, and a pooled copy on retries.
	t := trieds.Get().(*Tried)
	*t = *tried
	s, err := p.acquire(t)
	*t = Tried{}
	trieds.Put(t)
	return s, err
}

func (p *Pool) acquire(tried *Tried) (*Server, error) {
	// New arrivals may skip the queue only when it is empty; otherwise they
	// could take the slot a release was about to hand to the head.
	if p.queued.Load() == 0 {
		if s := p.sched.Load().Pick(tried); s != nil {
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
	return p.wait(tried)
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

// wait queues the request and waits for a pump to hand it a server.
func (p *Pool) wait(tried *Tried) (*Server, error) {
	w := waiters.Get().(*waiter)
	w.tried = tried
	defer func() {
		w.tried = nil
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
// cannot use any free slot (it already tried those servers) is passed over
// rather than blocking the queue; a waiter with nothing tried failing to Pick
// means every server is full for everyone, so the walk stops there, which
// keeps the common case O(1). Callers hold mu.
func (p *Pool) pump() {
	for w := p.head; w != nil; {
		next := w.next
		s := p.sched.Load().Pick(w.tried)
		if s == nil {
			if w.tried.Len() == 0 {
				return
			}
		} else {
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
	p.queued.Add(-1)
}
