package balancer

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// queueServer starts an AcquireServer in a goroutine and returns once it is
// queued; see queueUp.
func queueServer(t *testing.T, p *Pool, id int, s *Server, out chan<- result) {
	t.Helper()
	n := p.QueueLen()
	go func() {
		err := p.AcquireServer(s)
		var got *Server
		if err == nil {
			got = s
		}
		out <- result{id, got, err}
	}()
	waitFor(t, "AcquireServer to queue", func() bool { return p.QueueLen() == n+1 })
}

// queueKey starts an AcquireKey in a goroutine and returns once it is
// queued; see queueUp.
func queueKey(t *testing.T, p *Pool, id int, key uint64, out chan<- result) {
	t.Helper()
	n := p.QueueLen()
	go func() {
		s, err := p.AcquireKey(nil, key)
		out <- result{id, s, err}
	}()
	waitFor(t, "AcquireKey to queue", func() bool { return p.QueueLen() == n+1 })
}

func TestServerReachable(t *testing.T) {
	tests := []struct {
		name          string
		set           func(*Server)
		wantReachable bool
		wantAvailable bool
	}{
		{name: "ready", set: func(*Server) {}, wantReachable: true, wantAvailable: true},
		{name: "drain", set: func(s *Server) { s.SetAdminState(Drain) }, wantReachable: true},
		{name: "weight 0", set: func(s *Server) { s.SetWeight(0) }, wantReachable: true},
		{name: "full", set: func(s *Server) { s.SetMaxConns(1); s.tryAcquire() }, wantReachable: true, wantAvailable: true},
		{name: "maintenance", set: func(s *Server) { s.SetAdminState(Maintenance) }},
		{name: "down", set: func(s *Server) { s.SetDown(true) }},
		{name: "drain and down", set: func(s *Server) { s.SetAdminState(Drain); s.SetDown(true) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewServer("a", "", 1, 0)
			tt.set(s)
			if s.Reachable() != tt.wantReachable || s.Available() != tt.wantAvailable {
				t.Errorf("Reachable %v, Available %v; want %v, %v", s.Reachable(), s.Available(), tt.wantReachable, tt.wantAvailable)
			}
		})
	}
}

// TestAcquireServer covers the outcomes that need no waiting for another
// request: claimed, refused, timed out.
func TestAcquireServer(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		setup   func(p *Pool, ss []*Server) // the target is ss[0]
		wantErr error
	}{
		{name: "ready", timeout: long, setup: func(*Pool, []*Server) {}},
		{name: "drain", timeout: long, setup: func(p *Pool, ss []*Server) { ss[0].SetAdminState(Drain); p.Update() }},
		{name: "weight 0", timeout: long, setup: func(p *Pool, ss []*Server) { ss[0].SetWeight(0); p.Update() }},
		{name: "others full", timeout: 0, setup: func(p *Pool, ss []*Server) { ss[1].SetMaxConns(1); ss[1].tryAcquire() }},
		{name: "maintenance", timeout: long, setup: func(p *Pool, ss []*Server) {
			ss[0].SetAdminState(Maintenance)
			p.Update()
		}, wantErr: ErrNoServer},
		{name: "down", timeout: long, setup: func(p *Pool, ss []*Server) { ss[0].SetDown(true); p.Update() }, wantErr: ErrNoServer},
		{name: "down, not yet updated", timeout: long, setup: func(p *Pool, ss []*Server) { ss[0].SetDown(true) }, wantErr: ErrNoServer},
		{name: "full, no queueing", timeout: 0, setup: func(p *Pool, ss []*Server) {
			ss[0].SetMaxConns(1)
			ss[0].tryAcquire()
		}, wantErr: ErrQueueTimeout},
		{name: "full, queue times out", timeout: 20 * time.Millisecond, setup: func(p *Pool, ss []*Server) {
			ss[0].SetMaxConns(1)
			ss[0].tryAcquire()
		}, wantErr: ErrQueueTimeout},
		{name: "drain and full, queue times out", timeout: 20 * time.Millisecond, setup: func(p *Pool, ss []*Server) {
			ss[0].SetMaxConns(1)
			ss[0].tryAcquire()
			ss[0].SetAdminState(Drain)
			p.Update()
		}, wantErr: ErrQueueTimeout},
		{name: "full, not in the pool", timeout: long, setup: func(p *Pool, ss []*Server) {
			ss[0].SetMaxConns(1)
			ss[0].tryAcquire()
			p.SetServers(ss[1:])
		}, wantErr: ErrNoServer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := servers(1, 1)
			p := newPool(t, "round_robin", ss, tt.timeout)
			tt.setup(p, ss)
			before := ss[0].Active()
			start := time.Now()
			err := p.AcquireServer(ss[0])
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("AcquireServer = %v, want %v", err, tt.wantErr)
			}
			if err == ErrQueueTimeout && time.Since(start) < tt.timeout {
				t.Errorf("gave up after %v, before the %v queue timeout", time.Since(start), tt.timeout)
			}
			wantActive := before
			if err == nil {
				wantActive++
			}
			if ss[0].Active() != wantActive {
				t.Errorf("active %d, want %d", ss[0].Active(), wantActive)
			}
			if p.QueueLen() != 0 {
				t.Errorf("QueueLen %d after return, want 0", p.QueueLen())
			}
		})
	}
}

// TestAcquireServerQueued covers a persistent request waiting for its full
// server and what may happen to the server meanwhile.
func TestAcquireServerQueued(t *testing.T) {
	tests := []struct {
		name    string
		change  func(p *Pool, ss []*Server, held *Server) (releasedHeld bool)
		wantErr error
	}{
		{name: "released", change: func(p *Pool, _ []*Server, held *Server) bool { p.Release(held); return true }},
		{name: "max_conns raised", change: func(p *Pool, ss []*Server, _ *Server) bool {
			ss[0].SetMaxConns(2)
			p.Update()
			return false
		}},
		{name: "drained, then released", change: func(p *Pool, ss []*Server, held *Server) bool {
			ss[0].SetAdminState(Drain)
			p.Update()
			if p.QueueLen() != 1 {
				t.Errorf("drain dropped the persistent request")
			}
			p.Release(held)
			return true
		}},
		{name: "weight 0, then released", change: func(p *Pool, ss []*Server, held *Server) bool {
			ss[0].SetWeight(0)
			p.Update()
			p.Release(held)
			return true
		}},
		{name: "goes down", change: func(p *Pool, ss []*Server, _ *Server) bool {
			ss[0].SetDown(true)
			p.Update()
			return false
		}, wantErr: ErrNoServer},
		{name: "goes into maintenance", change: func(p *Pool, ss []*Server, _ *Server) bool {
			ss[0].SetAdminState(Maintenance)
			p.Update()
			return false
		}, wantErr: ErrNoServer},
		{name: "removed from the pool", change: func(p *Pool, ss []*Server, _ *Server) bool {
			p.SetServers(ss[1:])
			return false
		}, wantErr: ErrNoServer},
		{name: "down, then released before Update", change: func(p *Pool, ss []*Server, held *Server) bool {
			// The pump must not hand over an unreachable server.
			ss[0].SetDown(true)
			p.Release(held)
			if p.QueueLen() != 1 {
				t.Errorf("the request was served by a down server")
			}
			p.Update()
			return true
		}, wantErr: ErrNoServer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := []*Server{NewServer("a", "", 1, 1), NewServer("b", "", 1, 0)}
			p := newPool(t, "round_robin", ss, long)
			held := ss[0]
			if err := p.AcquireServer(held); err != nil {
				t.Fatal(err)
			}
			out := make(chan result, 1)
			queueServer(t, p, 0, ss[0], out)
			releasedHeld := tt.change(p, ss, held)
			r := <-out
			if r.err != tt.wantErr {
				t.Fatalf("AcquireServer = %v, want %v", r.err, tt.wantErr)
			}
			if r.err == nil {
				p.Release(ss[0])
			}
			if !releasedHeld {
				p.Release(held)
			}
			checkIdle(t, p)
		})
	}
}

// TestAcquireServerFIFO checks persistent and scheduled requests share one
// queue in arrival order.
func TestAcquireServerFIFO(t *testing.T) {
	a := NewServer("a", "", 1, 1)
	p := newPool(t, "round_robin", []*Server{a}, 5*time.Second)
	held, err := p.Acquire(nil)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan result, 4)
	queueUp(t, p, 0, nil, out)
	queueServer(t, p, 1, a, out)
	queueKey(t, p, 2, 7, out)
	queueServer(t, p, 3, a, out)
	for want := range 4 {
		p.Release(held)
		r := <-out
		if r.err != nil || r.id != want || r.s != a {
			t.Fatalf("served #%d (%v, %v), want #%d with a", r.id, r.s, r.err, want)
		}
		held = r.s
	}
	p.Release(held)
	checkIdle(t, p)
}

// TestAcquireServerPastBlockedQueue checks that a persistent request for a
// draining server is served when that server frees a slot, although a
// scheduled request ahead of it still waits: the draining server is not one
// the scheduled request may have.
func TestAcquireServerPastBlockedQueue(t *testing.T) {
	ss := []*Server{NewServer("a", "", 1, 1), NewServer("b", "", 1, 1)}
	p := newPool(t, "round_robin", ss, long)
	ha, _ := p.Acquire(nil)
	hb, _ := p.Acquire(nil)
	if names([]*Server{ha, hb}) != "ab" {
		t.Fatalf("held %s, want ab", names([]*Server{ha, hb}))
	}
	ss[1].SetAdminState(Drain)
	p.Update()
	out := make(chan result, 2)
	queueUp(t, p, 0, nil, out)
	queueServer(t, p, 1, ss[1], out)
	p.Release(hb)
	if r := <-out; r.id != 1 || r.s != ss[1] {
		t.Fatalf("b released: served #%d with %v, want #1 with b", r.id, r.s)
	}
	if p.QueueLen() != 1 {
		t.Fatalf("QueueLen %d, want the scheduled request still queued", p.QueueLen())
	}
	p.Release(ha)
	if r := <-out; r.id != 0 || r.s != ss[0] {
		t.Fatalf("a released: served #%d with %v, want #0 with a", r.id, r.s)
	}
	p.Release(ss[0])
	p.Release(ss[1])
	checkIdle(t, p)
}

// keySpy is a KeyScheduler that records how it was asked.
type keySpy struct {
	First
	keys  atomic.Int64 // PickKey calls
	plain atomic.Int64 // Pick calls
	last  atomic.Uint64
}

func (k *keySpy) Pick(tried *Tried) *Server {
	k.plain.Add(1)
	return k.First.Pick(tried)
}

func (k *keySpy) PickKey(key uint64, tried *Tried) *Server {
	k.keys.Add(1)
	k.last.Store(key)
	return k.First.Pick(tried)
}

// TestAcquireKey checks AcquireKey picks by key, at once and once queued,
// and that Acquire and other schedulers do not.
func TestAcquireKey(t *testing.T) {
	t.Run("at once", func(t *testing.T) {
		spy := new(keySpy)
		p := NewPool(spy, servers(1), long)
		s, err := p.AcquireKey(nil, 42)
		if err != nil || spy.keys.Load() != 1 || spy.plain.Load() != 0 || spy.last.Load() != 42 {
			t.Fatalf("AcquireKey = %v, %v; PickKey calls %d (last key %d), Pick calls %d; want one PickKey(42)",
				s, err, spy.keys.Load(), spy.last.Load(), spy.plain.Load())
		}
		p.Release(s)
		if s, err = p.Acquire(nil); err != nil || spy.plain.Load() != 1 || spy.keys.Load() != 1 {
			t.Fatalf("Acquire = %v, %v; want one Pick", s, err)
		}
		p.Release(s)
	})
	t.Run("queued", func(t *testing.T) {
		spy := new(keySpy)
		a := NewServer("a", "", 1, 1)
		p := NewPool(spy, []*Server{a}, long)
		held, _ := p.Acquire(nil)
		out := make(chan result, 2)
		queueKey(t, p, 0, 99, out)
		queueUp(t, p, 1, nil, out)
		keys := spy.keys.Load()
		p.Release(held)
		r := <-out
		if r.id != 0 || r.s != a || spy.keys.Load() <= keys || spy.last.Load() != 99 {
			t.Fatalf("served #%d (%v); last key %d; want #0 served by PickKey(99)", r.id, r.err, spy.last.Load())
		}
		plain := spy.plain.Load()
		p.Release(r.s)
		r = <-out
		if r.id != 1 || spy.plain.Load() <= plain {
			t.Fatalf("served #%d; want #1 served by Pick", r.id)
		}
		p.Release(r.s)
		checkIdle(t, p)
	})
	t.Run("other schedulers ignore the key", func(t *testing.T) {
		ss := servers(1, 1, 1)
		p := newPool(t, "round_robin", ss, long)
		var got []*Server
		for range 6 {
			s, err := p.AcquireKey(nil, 5)
			if err != nil {
				t.Fatal(err)
			}
			p.Release(s)
			got = append(got, s)
		}
		if names(got) != "abcabc" {
			t.Errorf("round_robin with a key: %s, want abcabc", names(got))
		}
	})
}

// TestAcquireKeySourceHash runs a keyed scheduler through the pool: a key
// sticks to its server, retries and a full home server fail over, and a
// queued request takes its home server when that frees first.
func TestAcquireKeySourceHash(t *testing.T) {
	ss := rservers(1, 1, 1)
	p := newPool(t, "source_hash", ss, long)
	c := &p.Scheduler().(*SourceHash).consistentHash
	key := testKeys[0]
	home := c.lookup(key)
	for range 5 {
		s, err := p.AcquireKey(nil, key)
		if err != nil || s != home {
			t.Fatalf("AcquireKey = %v, %v; want its home %s", s, err, home)
		}
		p.Release(s)
	}
	var tried Tried
	tried.Add(home)
	retry, err := p.AcquireKey(&tried, key)
	if err != nil || retry == home {
		t.Fatalf("retry = %v, %v; want another server", retry, err)
	}
	p.Release(retry)

	// Fill every server; queue the key; free its home.
	for _, s := range ss {
		s.SetMaxConns(1)
		if err := p.AcquireServer(s); err != nil {
			t.Fatal(err)
		}
	}
	out := make(chan result, 1)
	queueKey(t, p, 0, key, out)
	p.Release(home)
	if r := <-out; r.s != home {
		t.Fatalf("queued key served by %v (%v), want its home %s", r.s, r.err, home)
	}
	// Queue it again; free the retry server: the key fails over to it
	// rather than wait for its home.
	queueKey(t, p, 0, key, out)
	p.Release(retry)
	if r := <-out; r.s != retry {
		t.Fatalf("queued key served by %v (%v), want the failover %s", r.s, r.err, retry)
	}
	for _, s := range ss {
		p.Release(s)
	}
	checkIdle(t, p)
}

// TestMixedUnderConcurrency hammers a pool with scheduled, keyed and
// persistent requests at once, with one server draining (so only persistent
// requests reach it), and checks max_conns holds and no slot or wake-up is
// lost. Run with -race.
func TestMixedUnderConcurrency(t *testing.T) {
	for _, kind := range Names() {
		t.Run(kind, func(t *testing.T) {
			ss := []*Server{NewServer("a", "", 1, 2), NewServer("b", "", 2, 3), NewServer("c", "", 3, 2), NewServer("d", "", 1, 1)}
			ss[3].SetAdminState(Drain)
			p := newPool(t, kind, ss, long)
			var wg sync.WaitGroup
			for g := range 24 {
				wg.Go(func() {
					for i := range 200 {
						var s *Server
						var err error
						switch (g + i) % 3 {
						case 0:
							s, err = p.Acquire(nil)
						case 1:
							s, err = p.AcquireKey(nil, testKeys[g*200+i])
						default:
							s = ss[(g+i)%len(ss)]
							err = p.AcquireServer(s)
						}
						if err != nil {
							t.Errorf("request %d: %v", i, err)
							return
						}
						if s.Active() > s.MaxConns() {
							t.Errorf("%s active %d, max_conns %d", s, s.Active(), s.MaxConns())
						}
						if s == ss[3] && (g+i)%3 != 2 {
							t.Errorf("draining d given to a new client")
						}
						p.Release(s)
					}
				})
			}
			wg.Wait()
			checkIdle(t, p)
		})
	}
}
