package balancer

import (
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// long is a queue timeout no passing test reaches.
const long = time.Minute

func newPool(t *testing.T, kind string, ss []*Server, timeout time.Duration) *Pool {
	t.Helper()
	s, err := New(kind)
	if err != nil {
		t.Fatal(err)
	}
	return NewPool(s, ss, timeout)
}

type result struct {
	id  int
	s   *Server
	err error
}

// queueUp starts an Acquire with tried in a goroutine and returns once it is
// queued (the queue is one longer), so that callers control arrival order.
func queueUp(t *testing.T, p *Pool, id int, tried *Tried, out chan<- result) {
	t.Helper()
	n := p.QueueLen()
	go func() {
		s, err := p.Acquire(tried)
		out <- result{id, s, err}
	}()
	waitFor(t, "waiter to queue", func() bool { return p.QueueLen() == n+1 })
}

func TestAcquireErrors(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		setup   func(p *Pool, ss []*Server, tried *Tried)
		wantErr error
		wantMsg string
	}{
		{name: "all down", timeout: long, setup: func(p *Pool, ss []*Server, _ *Tried) {
			for _, s := range ss {
				s.SetDown(true)
			}
			p.Update()
		}, wantErr: ErrNoServer, wantMsg: "no real server available"},
		{name: "all down, not yet updated", timeout: long, setup: func(_ *Pool, ss []*Server, _ *Tried) {
			for _, s := range ss {
				s.SetDown(true)
			}
		}, wantErr: ErrNoServer},
		{name: "all weight 0", timeout: long, setup: func(p *Pool, ss []*Server, _ *Tried) {
			for _, s := range ss {
				s.SetWeight(0)
			}
			p.Update()
		}, wantErr: ErrNoServer},
		{name: "all tried", timeout: long, setup: func(_ *Pool, ss []*Server, tr *Tried) {
			for _, s := range ss {
				tr.Add(s)
			}
		}, wantErr: ErrNoServer},
		{name: "untried ones down", timeout: long, setup: func(_ *Pool, ss []*Server, tr *Tried) {
			tr.Add(ss[0])
			ss[1].SetDown(true)
		}, wantErr: ErrNoServer},
		{name: "all full, no queueing", timeout: 0, setup: func(p *Pool, ss []*Server, _ *Tried) {
			for _, s := range ss {
				s.SetMaxConns(1)
				s.tryAcquire()
			}
		}, wantErr: ErrQueueTimeout, wantMsg: "queue timeout: every real server is at max_conns"},
		{name: "all full, queue times out", timeout: 20 * time.Millisecond, setup: func(p *Pool, ss []*Server, _ *Tried) {
			for _, s := range ss {
				s.SetMaxConns(1)
				s.tryAcquire()
			}
		}, wantErr: ErrQueueTimeout},
		{name: "untried one full, queue times out", timeout: 20 * time.Millisecond, setup: func(p *Pool, ss []*Server, tr *Tried) {
			tr.Add(ss[0])
			ss[1].SetMaxConns(1)
			ss[1].tryAcquire()
		}, wantErr: ErrQueueTimeout},
	}
	for _, kind := range Names() {
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				ss := servers(1, 1)
				p := newPool(t, kind, ss, tt.timeout)
				var tried Tried
				tt.setup(p, ss, &tried)
				start := time.Now()
				s, err := p.Acquire(&tried)
				if !errors.Is(err, tt.wantErr) || s != nil {
					t.Fatalf("Acquire = %v, %v; want nil, %v", s, err, tt.wantErr)
				}
				if tt.wantMsg != "" && err.Error() != tt.wantMsg {
					t.Errorf("error text %q, want %q", err, tt.wantMsg)
				}
				if err == ErrQueueTimeout && time.Since(start) < tt.timeout {
					t.Errorf("gave up after %v, before the %v queue timeout", time.Since(start), tt.timeout)
				}
				if p.QueueLen() != 0 {
					t.Errorf("QueueLen %d after failure, want 0", p.QueueLen())
				}
			})
		}
	}
}

func TestAcquireTriedGoesElsewhere(t *testing.T) {
	for _, kind := range Names() {
		t.Run(kind, func(t *testing.T) {
			ss := servers(1, 1, 1)
			p := newPool(t, kind, ss, long)
			var tried Tried
			for range 2 {
				s, err := p.Acquire(&tried)
				if err != nil {
					t.Fatal(err)
				}
				if tried.Has(s) {
					t.Fatalf("got %s again", s)
				}
				tried.Add(s)
				p.Release(s)
			}
			s, err := p.Acquire(&tried)
			if err != nil || tried.Has(s) {
				t.Fatalf("third attempt = %v, %v; want the untried server", s, err)
			}
			tried.Add(s)
			p.Release(s)
			if s, err := p.Acquire(&tried); err != ErrNoServer {
				t.Errorf("fourth attempt = %v, %v; want ErrNoServer", s, err)
			}
		})
	}
}

// TestQueueFIFO checks queued requests get slots in arrival order, and that
// a request arriving while others wait queues behind them.
func TestQueueFIFO(t *testing.T) {
	for _, kind := range Names() {
		t.Run(kind, func(t *testing.T) {
			a := NewServer("a", "", 1, 1)
			// Served at once when right; fail fast when not.
			p := newPool(t, kind, []*Server{a}, 5*time.Second)
			held, err := p.Acquire(nil)
			if err != nil {
				t.Fatal(err)
			}
			const n = 5
			out := make(chan result, n)
			for id := range n {
				queueUp(t, p, id, nil, out)
			}
			for want := range n {
				p.Release(held)
				r := <-out
				if r.err != nil || r.id != want {
					t.Fatalf("served #%d (%v), want #%d", r.id, r.err, want)
				}
				held = r.s
			}
			p.Release(held)
			if a.Active() != 0 || p.QueueLen() != 0 {
				t.Errorf("active %d, queued %d; want 0, 0", a.Active(), p.QueueLen())
			}
		})
	}
}

// TestArrivalQueuesBehindWaiters checks that a request arriving while others
// wait does not take a free slot ahead of them. The slot appears by raising
// max_conns without Pool.Update, which would have pumped.
func TestArrivalQueuesBehindWaiters(t *testing.T) {
	for _, kind := range Names() {
		t.Run(kind, func(t *testing.T) {
			a := NewServer("a", "", 1, 1)
			p := newPool(t, kind, []*Server{a}, long)
			held, _ := p.Acquire(nil)
			out := make(chan result, 2)
			queueUp(t, p, 0, nil, out)
			a.SetMaxConns(2)
			go func() {
				s, err := p.Acquire(nil)
				out <- result{1, s, err}
			}()
			if r := <-out; r.id != 0 || r.s != a {
				t.Fatalf("free slot went to #%d (%v), want the queued #0", r.id, r.err)
			}
			waitFor(t, "the arrival to queue", func() bool { return p.QueueLen() == 1 })
			p.Release(held)
			if r := <-out; r.id != 1 || r.s != a {
				t.Fatalf("released: served #%d (%v), want #1", r.id, r.err)
			}
		})
	}
}

// TestQueuePassesOverTried checks that a waiter that already tried the only
// free server does not block those behind it.
func TestQueuePassesOverTried(t *testing.T) {
	ss := []*Server{NewServer("a", "", 1, 1), NewServer("b", "", 1, 1)}
	p := newPool(t, "round_robin", ss, long)
	ha, _ := p.Acquire(nil)
	hb, _ := p.Acquire(nil)
	if names([]*Server{ha, hb}) != "ab" {
		t.Fatalf("held %s, want ab", names([]*Server{ha, hb}))
	}
	out := make(chan result, 2)
	var triedA Tried
	triedA.Add(ss[0])
	queueUp(t, p, 0, &triedA, out)
	queueUp(t, p, 1, nil, out)

	p.Release(ha)
	if r := <-out; r.id != 1 || r.s != ss[0] {
		t.Fatalf("released a: served #%d with %v, want #1 with a", r.id, r.s)
	}
	p.Release(hb)
	if r := <-out; r.id != 0 || r.s != ss[1] {
		t.Fatalf("released b: served #%d with %v, want #0 with b", r.id, r.s)
	}
}

func TestUpdateWakesQueue(t *testing.T) {
	tests := []struct {
		name    string
		change  func(ss []*Server)
		wantErr error
		wantS   string
	}{
		{name: "max_conns raised", change: func(ss []*Server) { ss[0].SetMaxConns(2) }, wantS: "a"},
		{name: "server back up", change: func(ss []*Server) { ss[1].SetDown(false) }, wantS: "b"},
		{name: "last server down", change: func(ss []*Server) { ss[0].SetDown(true) }, wantErr: ErrNoServer},
		{name: "last server drained", change: func(ss []*Server) { ss[0].SetWeight(0) }, wantErr: ErrNoServer},
	}
	for _, kind := range Names() {
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				ss := []*Server{NewServer("a", "", 1, 1), NewServer("b", "", 1, 1)}
				ss[1].SetDown(true)
				p := newPool(t, kind, ss, long)
				if _, err := p.Acquire(nil); err != nil {
					t.Fatal(err)
				}
				out := make(chan result, 1)
				queueUp(t, p, 0, nil, out)
				tt.change(ss)
				p.Update()
				r := <-out
				if r.err != tt.wantErr || (tt.wantS != "" && (r.s == nil || r.s.Name != tt.wantS)) {
					t.Errorf("Acquire = %v, %v; want %s, %v", r.s, r.err, tt.wantS, tt.wantErr)
				}
			})
		}
	}
}

// TestMaxConnsUnderConcurrency hammers each scheduler and checks no server
// ever carries more than max_conns, as seen both by Active and by the
// requests themselves. Run with -race.
func TestMaxConnsUnderConcurrency(t *testing.T) {
	for _, kind := range Names() {
		t.Run(kind, func(t *testing.T) {
			ss := []*Server{NewServer("a", "", 1, 2), NewServer("b", "", 2, 3), NewServer("c", "", 3, 5)}
			p := newPool(t, kind, ss, long)
			var inUse [3]atomic.Int64
			index := map[*Server]int{ss[0]: 0, ss[1]: 1, ss[2]: 2}
			var failures atomic.Int64
			var wg sync.WaitGroup
			for range 32 {
				wg.Go(func() {
					for range 300 {
						s, err := p.Acquire(nil)
						if err != nil {
							failures.Add(1)
							t.Errorf("Acquire: %v", err)
							return
						}
						if n := inUse[index[s]].Add(1); n > s.MaxConns() || s.Active() > s.MaxConns() {
							t.Errorf("%s carries %d (active %d), max_conns %d", s, n, s.Active(), s.MaxConns())
						}
						inUse[index[s]].Add(-1)
						p.Release(s)
					}
				})
			}
			wg.Wait()
			checkIdle(t, p)
		})
	}
}

// TestReleaseBeforeJoin drives the lost wake-up interleaving step by step:
// the only slot is released after a request's Pick failed but before it
// joined the queue, so the release sees nobody queued and does not pump.
// The request must still get the slot (by pumping as it joins) rather than
// wait for a release that never comes.
func TestReleaseBeforeJoin(t *testing.T) {
	for _, kind := range Names() {
		t.Run(kind, func(t *testing.T) {
			a := NewServer("a", "", 1, 1)
			// Served at once when right; fail fast when not.
			p := newPool(t, kind, []*Server{a}, 5*time.Second)
			held, err := p.Acquire(nil)
			if err != nil {
				t.Fatal(err)
			}
			testHookJoin = func() {
				if p.QueueLen() != 0 {
					t.Error("queue not empty as the request joins")
				}
				p.Release(held)
			}
			defer func() { testHookJoin = nil }()
			s, err := p.Acquire(nil)
			if s != a || err != nil {
				t.Fatalf("Acquire = %v, %v; want a", s, err)
			}
			p.Release(s)
			checkIdle(t, p)
		})
	}
}

// TestNoLostWakeUp races releases against requests joining the queue with
// every server nearly always full. A lost wake-up leaves a request queued
// with a slot free; as the load stops, the last such request then waits out
// the (long) queue timeout and the test fails or hangs.
func TestNoLostWakeUp(t *testing.T) {
	for _, kind := range Names() {
		t.Run(kind, func(t *testing.T) {
			ss := []*Server{NewServer("a", "", 1, 1), NewServer("b", "", 2, 1)}
			p := newPool(t, kind, ss, long)
			start := make(chan struct{})
			var queued atomic.Int64 // Acquires that found others queued after them
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					<-start
					for range 500 {
						s, err := p.Acquire(nil)
						if err != nil {
							t.Errorf("Acquire: %v", err)
							return
						}
						if p.QueueLen() > 0 {
							queued.Add(1)
						}
						runtime.Gosched() // let others pile up
						p.Release(s)
					}
				})
			}
			close(start)
			wg.Wait()
			checkIdle(t, p)
			if queued.Load() == 0 {
				t.Error("nobody ever queued: the test raced nothing")
			}
		})
	}
}

// TestQueueTimeoutRace uses queue timeouts so short that they often fire as
// a server is handed over. Whichever wins, no slot may leak: a waiter handed
// a server as it times out must take it (and here releases it).
func TestQueueTimeoutRace(t *testing.T) {
	for _, kind := range Names() {
		t.Run(kind, func(t *testing.T) {
			ss := []*Server{NewServer("a", "", 1, 1), NewServer("b", "", 1, 2)}
			p := newPool(t, kind, ss, time.Microsecond)
			var served, timedOut atomic.Int64
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					for range 500 {
						s, err := p.Acquire(nil)
						switch err {
						case nil:
							served.Add(1)
							// Hold the slot a moment so
							// others queue.
							for range 3 {
								runtime.Gosched()
							}
							p.Release(s)
						case ErrQueueTimeout:
							timedOut.Add(1)
						default:
							t.Errorf("Acquire: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()
			checkIdle(t, p)
			t.Logf("served %d, timed out %d", served.Load(), timedOut.Load())
		})
	}
}

func checkIdle(t *testing.T, p *Pool) {
	t.Helper()
	if q := p.QueueLen(); q != 0 {
		t.Errorf("QueueLen %d at rest, want 0", q)
	}
	for _, s := range p.Servers() {
		if s.Active() != 0 {
			t.Errorf("%s: active %d at rest, want 0 (leaked slot)", s, s.Active())
		}
	}
}

func TestPoolAccessors(t *testing.T) {
	ss := servers(1, 2, 3)
	sched := new(LeastConn)
	p := NewPool(sched, ss, 0)
	if p.Scheduler() != sched {
		t.Error("Scheduler() is not the one given")
	}
	got := p.Servers()
	if names(got) != "abc" {
		t.Errorf("Servers() = %s, want abc", names(got))
	}
	got[0] = nil
	if p.Servers()[0] != ss[0] {
		t.Error("Servers() exposes the pool's slice")
	}
}

// TestPoolChanges covers what a reload or the admin API changes at run time:
// the servers, the scheduler and the admin state.
func TestPoolChanges(t *testing.T) {
	ss := servers(1, 1, 1)
	p := NewPool(new(RoundRobin), ss[:2], 0)
	pick := func() string {
		t.Helper()
		s, err := p.Acquire(nil)
		if err != nil {
			return err.Error()
		}
		p.Release(s)
		return s.Name
	}
	seq := func(n int) (out string) {
		for range n {
			out += pick()
		}
		return out
	}
	if got := seq(4); got != "abab" {
		t.Fatalf("two servers: %s, want abab", got)
	}
	p.SetServers(ss)
	if got := seq(6); strings.Count(got, "c") != 2 {
		t.Errorf("after adding c: %s, want c twice in 6", got)
	}
	p.SetServers(ss[1:])
	if got := seq(4); strings.Contains(got, "a") {
		t.Errorf("after removing a: %s", got)
	}
	p.SetScheduler(new(LeastConn))
	if _, ok := p.Scheduler().(*LeastConn); !ok {
		t.Errorf("Scheduler() = %v after SetScheduler(least_conn)", p.Scheduler())
	}
	for _, st := range []AdminState{Drain, Maintenance} {
		ss[1].SetAdminState(st)
		p.Update()
		if got := seq(4); got != "cccc" {
			t.Errorf("b in %s: %s, want cccc", st, got)
		}
	}
	ss[1].SetAdminState(Ready)
	ss[2].SetAdminState(Maintenance)
	p.Update()
	if got := seq(2); got != "bb" {
		t.Errorf("b ready, c in maintenance: %s, want bb", got)
	}
	ss[1].SetDown(true)
	p.Update()
	if got := pick(); got != ErrNoServer.Error() {
		t.Errorf("b down, c in maintenance: %s, want %v", got, ErrNoServer)
	}
}

func TestParseAdminState(t *testing.T) {
	tests := []struct {
		in   string
		want AdminState
		ok   bool
	}{
		{"ready", Ready, true},
		{"drain", Drain, true},
		{"maintenance", Maintenance, true},
		{"maint", Maintenance, true},
		{"MAINT", 0, false},
		{"", 0, false},
		{"offline", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := ParseAdminState(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseAdminState(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
			if ok && tt.in != "maint" && got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

// TestHotPathDoesNotAllocate guards the claim the benchmarks show, in the
// form callers use: a Tried on the stack, first attempt and retry, with and
// without a key, and a persistent client's AcquireServer.
func TestHotPathDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items at random")
	}
	// Direct calls, not through a func value, which would make the
	// compiler move tried to the heap.
	tests := []struct {
		name  string
		keyed bool
	}{
		{name: "Acquire"},
		{name: "AcquireKey", keyed: true},
	}
	for _, kind := range Names() {
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				ss := servers(3, 2, 1, 1)
				p := newPool(t, kind, ss, long)
				key := uint64(0)
				allocs := testing.AllocsPerRun(1000, func() {
					key += 0x9e3779b97f4a7c15
					var tried Tried
					var s *Server
					var err error
					for range 2 { // first attempt, retry
						if tt.keyed {
							s, err = p.AcquireKey(&tried, key)
						} else {
							s, err = p.Acquire(&tried)
						}
						if err != nil {
							t.Fatal(err)
						}
						p.Release(s)
						tried.Add(s)
					}
				})
				if allocs != 0 {
					t.Errorf("%v allocs per %s/Release pair, want 0", allocs, tt.name)
				}
			})
		}
	}
	t.Run("AcquireServer", func(t *testing.T) {
		ss := servers(1, 1)
		ss[1].SetMaxConns(100)
		p := newPool(t, "round_robin", ss, long)
		allocs := testing.AllocsPerRun(1000, func() {
			if err := p.AcquireServer(ss[1]); err != nil {
				t.Fatal(err)
			}
			p.Release(ss[1])
		})
		if allocs != 0 {
			t.Errorf("%v allocs per AcquireServer/Release pair, want 0", allocs)
		}
	})
}
