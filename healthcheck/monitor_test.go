package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// recorder is a Reporter that remembers what it heard and, if events is
// set, sends each health change on it.
type recorder struct {
	mu      sync.Mutex
	checked []Result
	changes []string // "up: detail" or "down: detail"
	agent   []AgentReply
	events  chan string
}

func (r *recorder) Checked(res Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checked = append(r.checked, res)
}

func (r *recorder) HealthChanged(up bool, why Result) {
	s := "down: " + why.Detail
	if up {
		s = "up: " + why.Detail
	}
	if why.OK != up {
		s += " (OK disagrees)"
	}
	r.mu.Lock()
	r.changes = append(r.changes, s)
	r.mu.Unlock()
	if r.events != nil {
		r.events <- s
	}
}

func (r *recorder) AgentReplied(a AgentReply) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.agent = append(r.agent, a)
}

func (r *recorder) Changes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.changes...)
}

// scripted is a Probe that returns the result it is given.
type scripted struct {
	mu   sync.Mutex
	next Result
}

func (p *scripted) set(r Result) { p.mu.Lock(); p.next = r; p.mu.Unlock() }

func (p *scripted) Check(context.Context, string) Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next
}

// TestMonitorStates drives the state machine one event at a time.
func TestMonitorStates(t *testing.T) {
	// Steps: "ok" and "fail" are active checks ("fine" and "boom"),
	// "err" and "traffic-ok" passive observations, "agent:LINE" an agent
	// reply and "agent-gone" an unreachable agent.
	tests := []struct {
		name    string
		s       Settings
		noProbe bool
		steps   []string
		up      string // Up after each step: U or D
		changes []string
	}{
		{name: "up until fall failures in a row", s: Settings{Fall: 3},
			steps:   []string{"fail", "fail", "ok", "fail", "fail", "fail", "fail"},
			up:      "UUUUUDD",
			changes: []string{"down: 3 consecutive failures: boom"}},
		{name: "down until rise successes in a row", s: Settings{Rise: 2, Down: true},
			steps:   []string{"ok", "fail", "ok", "ok", "ok"},
			up:      "DDDUU",
			changes: []string{"up: 2 consecutive successes: fine"}},
		{name: "default rise 2 fall 3", s: Settings{},
			steps:   []string{"fail", "fail", "fail", "ok", "ok"},
			up:      "UUDDU",
			changes: []string{"down: 3 consecutive failures: boom", "up: 2 consecutive successes: fine"}},
		{name: "rise 1 fall 1", s: Settings{Rise: 1, Fall: 1},
			steps:   []string{"ok", "fail", "fail", "ok", "ok"},
			up:      "UDDUU",
			changes: []string{"down: 1 failure: boom", "up: 1 success: fine"}},
		{name: "flapping never reaches fall", s: Settings{Fall: 2},
			steps: []string{"fail", "ok", "fail", "ok", "fail", "ok"},
			up:    "UUUUUU"},

		{name: "passive errors take it down", s: Settings{ObserveErrors: 3},
			steps: []string{"err", "err", "ok", "err", "ok", "ok"},
			up:    "UUUDDU",
			changes: []string{"down: 3 consecutive errors in traffic: connect 10.0.0.1:80: connection refused",
				"up: 2 consecutive successes: fine"}},
		{name: "a traffic success resets the count", s: Settings{ObserveErrors: 3},
			steps: []string{"err", "err", "traffic-ok", "err", "err", "traffic-ok", "err"},
			up:    "UUUUUUU"},
		{name: "the count starts over after a change", s: Settings{ObserveErrors: 2, Rise: 1},
			steps: []string{"err", "err", "ok", "err", "traffic-ok", "err"},
			up:    "UDUUUU",
			changes: []string{"down: 2 consecutive errors in traffic: connect 10.0.0.1:80: connection refused",
				"up: 1 success: fine"}},
		{name: "passive off", s: Settings{},
			steps: []string{"err", "err", "err", "err", "err", "err", "err", "err", "err", "err", "err"},
			up:    "UUUUUUUUUUU"},
		{name: "passive errors while down change nothing", s: Settings{ObserveErrors: 2, Down: true},
			steps:   []string{"ok", "err", "err", "ok"},
			up:      "DDDU",
			changes: []string{"up: 2 consecutive successes: fine"}},
		{name: "passive needs an active check", noProbe: true, s: Settings{ObserveErrors: 1},
			steps: []string{"err", "err"},
			up:    "UU"},

		{name: "agent down at once, up again", s: Settings{},
			steps:   []string{"agent:down #disk full", "ok", "ok", "agent:up"},
			up:      "DDDU",
			changes: []string{"down: agent: down #disk full", "up: agent: up"}},
		{name: "agent up does not override the check", s: Settings{Fall: 1, Rise: 2},
			steps:   []string{"fail", "agent:up", "ok", "ok"},
			up:      "DDDU",
			changes: []string{"down: 1 failure: boom", "up: 2 consecutive successes: fine"}},
		{name: "check rising while the agent says down", s: Settings{Rise: 1, Down: true},
			steps:   []string{"agent:stopped", "ok", "agent:ready", "agent:up #back"},
			up:      "DDDU",
			changes: []string{"up: agent: up #back"}},
		{name: "check falling while the agent says down", s: Settings{Fall: 1},
			steps:   []string{"agent:fail", "fail", "agent:up", "ok", "ok"},
			up:      "DDDDU",
			changes: []string{"down: agent: down", "up: 2 consecutive successes: fine"}},
		{name: "other agent words leave the state alone", s: Settings{},
			steps: []string{"agent:drain", "agent:maint 0%", "agent:weight:0 maxconn:1", "agent:#hello", "agent:ready"},
			up:    "UUUUU"},
		{name: "an unreachable agent changes nothing", s: Settings{},
			steps:   []string{"agent:down", "agent-gone", "agent-gone", "ok", "agent:up"},
			up:      "DDDDU",
			changes: []string{"down: agent: down", "up: agent: up"}},
		{name: "agent alone", noProbe: true, s: Settings{},
			steps:   []string{"agent:down #bye", "agent:up"},
			up:      "DU",
			changes: []string{"down: agent: down #bye", "up: agent: up"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.steps) != len(tt.up) {
				t.Fatalf("%d steps, %d states", len(tt.steps), len(tt.up))
			}
			probe := &scripted{}
			var p Probe = probe
			if tt.noProbe {
				p = nil
			}
			rec := &recorder{}
			tt.s.AgentAddr = "127.0.0.1:1"
			m := NewMonitor(p, "10.0.0.1:80", tt.s, rec)
			ctx := context.Background()
			var checks, replies int
			for i, step := range tt.steps {
				switch {
				case step == "ok":
					probe.set(Result{OK: true, Detail: "fine"})
					m.checkOnce(ctx)
					checks++
				case step == "fail":
					probe.set(Result{Detail: "boom"})
					m.checkOnce(ctx)
					checks++
				case step == "err":
					m.ObserveError("connect 10.0.0.1:80: connection refused")
				case step == "traffic-ok":
					m.ObserveOK()
				case step == "agent-gone":
					m.query = func(context.Context, string) (AgentReply, error) { return AgentReply{}, errors.New("refused") }
					m.agentOnce(ctx)
				case strings.HasPrefix(step, "agent:"):
					a, err := ParseAgent(strings.TrimPrefix(step, "agent:"))
					if err != nil {
						t.Fatal(err)
					}
					m.query = func(_ context.Context, addr string) (AgentReply, error) {
						if addr != "127.0.0.1:1" {
							t.Errorf("agent queried at %s", addr)
						}
						return a, nil
					}
					m.agentOnce(ctx)
					replies++
				default:
					t.Fatalf("bad step %q", step)
				}
				if got := m.Up(); got != (tt.up[i] == 'U') {
					t.Fatalf("after step %d (%s): Up = %v, want %c", i, step, got, tt.up[i])
				}
			}
			if got := rec.Changes(); fmt.Sprint(got) != fmt.Sprint(tt.changes) {
				t.Errorf("changes:\n got %q\nwant %q", got, tt.changes)
			}
			if len(rec.checked) != checks || len(rec.agent) != replies {
				t.Errorf("reported %d checks and %d agent replies, want %d and %d", len(rec.checked), len(rec.agent), checks, replies)
			}
		})
	}
}

func TestSettingsNormalize(t *testing.T) {
	tests := []struct {
		name string
		in   Settings
		want Settings
	}{
		{name: "zero", in: Settings{}, want: Settings{Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}},
		{name: "timeout cut to interval", in: Settings{Interval: time.Second, Timeout: 5 * time.Second, Rise: 1, Fall: 1},
			want: Settings{Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1}},
		{name: "default timeout cut to a short interval", in: Settings{Interval: 300 * time.Millisecond},
			want: Settings{Interval: 300 * time.Millisecond, Timeout: 300 * time.Millisecond, Rise: 2, Fall: 3}},
		{name: "negatives", in: Settings{Interval: -1, Timeout: -1, Rise: -1, Fall: -1, ObserveErrors: -1},
			want: Settings{Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}},
		{name: "kept", in: Settings{Interval: 5 * time.Second, Timeout: 2 * time.Second, Rise: 4, Fall: 5, ObserveErrors: 10, AgentAddr: "a:1", Down: true},
			want: Settings{Interval: 5 * time.Second, Timeout: 2 * time.Second, Rise: 4, Fall: 5, ObserveErrors: 10, AgentAddr: "a:1", Down: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NewMonitor(&scripted{}, "x:1", tt.in, &recorder{}).s; got != tt.want {
				t.Errorf("settings = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// fakeTime is a clock that moves only when told, and a timer whose waits a
// test reads and fires one by one.
type fakeTime struct {
	mu    sync.Mutex
	t     time.Time
	waits chan time.Duration // each after() call's duration
	fire  chan time.Time     // the channel every after() returns
}

func newFakeTime() *fakeTime {
	return &fakeTime{t: time.Unix(1e9, 0), waits: make(chan time.Duration), fire: make(chan time.Time)}
}

func (f *fakeTime) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeTime) advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func (f *fakeTime) after(d time.Duration) <-chan time.Time {
	f.waits <- d
	return f.fire
}

// slowProbe takes `took` of fake time per check and records how many
// checks ran at once.
type slowProbe struct {
	ft            *fakeTime
	took          time.Duration
	running, most atomic.Int32
	calls         atomic.Int32
	deadline      chan time.Duration // how long each check's context had
}

func (p *slowProbe) Check(ctx context.Context, _ string) Result {
	n := p.running.Add(1)
	defer p.running.Add(-1)
	for {
		m := p.most.Load()
		if n <= m || p.most.CompareAndSwap(m, n) {
			break
		}
	}
	p.calls.Add(1)
	if d, ok := ctx.Deadline(); ok {
		p.deadline <- time.Until(d)
	} else {
		p.deadline <- -1
	}
	p.ft.advance(p.took)
	return Result{OK: true, Detail: "fine"}
}

// TestMonitorSchedule steps the check loop with a fake clock: the first
// check waits a random part of the interval, each next one the interval
// (with jitter) from the start of the one before, and a check that takes
// the whole timeout neither overlaps the next nor makes checks pile up.
func TestMonitorSchedule(t *testing.T) {
	const interval = time.Second
	tests := []struct {
		name      string
		timeout   time.Duration
		took      time.Duration
		rand      func(n int64) int64
		first     time.Duration
		next      time.Duration
		wantLimit time.Duration // the context's deadline for each check
	}{
		{name: "no jitter", timeout: 500 * time.Millisecond, took: 10 * time.Millisecond,
			rand: func(int64) int64 { return 0 }, first: 0, next: interval - 10*time.Millisecond, wantLimit: 500 * time.Millisecond},
		{name: "half the jitter", timeout: 500 * time.Millisecond, took: 10 * time.Millisecond,
			rand: func(n int64) int64 { return n / 2 }, first: interval / 2, next: 950*time.Millisecond - 10*time.Millisecond, wantLimit: 500 * time.Millisecond},
		{name: "most jitter", timeout: 500 * time.Millisecond, took: 10 * time.Millisecond,
			rand: func(n int64) int64 { return n - 1 }, first: interval - 1, next: 900*time.Millisecond - 10*time.Millisecond, wantLimit: 500 * time.Millisecond},
		{name: "check takes the whole timeout", timeout: interval, took: interval,
			rand: func(int64) int64 { return 0 }, first: 0, next: 0, wantLimit: interval},
		{name: "check overruns the interval", timeout: interval, took: 3 * interval,
			rand: func(int64) int64 { return 0 }, first: 0, next: 0, wantLimit: interval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ft := newFakeTime()
			p := &slowProbe{ft: ft, took: tt.took, deadline: make(chan time.Duration, 10)}
			m := NewMonitor(p, "x:1", Settings{Interval: interval, Timeout: tt.timeout}, &recorder{})
			m.now, m.after, m.randN = ft.now, ft.after, tt.rand
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { m.Run(ctx); close(done) }()

			if got := <-ft.waits; got != tt.first {
				t.Errorf("first wait = %v, want %v", got, tt.first)
			}
			const rounds = 5
			for i := range rounds {
				ft.fire <- time.Time{}
				if got := <-ft.waits; got != tt.next {
					t.Errorf("wait after check %d = %v, want %v", i, got, tt.next)
				}
				if limit := <-p.deadline; limit <= 0 || limit > tt.wantLimit {
					t.Errorf("check %d had %v, want at most %v", i, limit, tt.wantLimit)
				}
			}
			// One check per timer firing: none overlapped, none was
			// added to catch up.
			if got := p.calls.Load(); got != rounds {
				t.Errorf("%d checks, want %d", got, rounds)
			}
			if got := p.most.Load(); got != 1 {
				t.Errorf("%d checks ran at once", got)
			}
			cancel()
			<-done
		})
	}
}

// TestMonitorJitter checks the bounds of the real random delays.
func TestMonitorJitter(t *testing.T) {
	for _, interval := range []time.Duration{time.Nanosecond, 7 * time.Nanosecond, 10 * time.Millisecond, 2 * time.Second} {
		t.Run(interval.String(), func(t *testing.T) {
			m := NewMonitor(&scripted{}, "x:1", Settings{Interval: interval}, &recorder{})
			lo, hi := interval-interval/10, interval
			var seenLo, seenHi bool
			for range 10000 {
				if d := time.Duration(m.randN(int64(interval))); d < 0 || d >= interval {
					t.Fatalf("first delay %v, want [0, %v)", d, interval)
				}
				d := m.nextInterval()
				if d < lo || d > hi {
					t.Fatalf("interval %v, want [%v, %v]", d, lo, hi)
				}
				mid := interval - interval/20
				seenLo, seenHi = seenLo || d < mid, seenHi || d > mid
			}
			if interval >= 10*time.Millisecond && (!seenLo || !seenHi) {
				t.Errorf("jitter stayed on one side of the middle (below: %v, above: %v)", seenLo, seenHi)
			}
		})
	}
}

// TestMonitorStop checks that Run returns when its context ends, also in
// the middle of a check, and that a check cut short counts for nothing.
func TestMonitorStop(t *testing.T) {
	started := make(chan struct{})
	p := probeFunc(func(ctx context.Context, _ string) Result {
		close(started)
		<-ctx.Done()
		return Result{Detail: "canceled"}
	})
	rec := &recorder{}
	m := NewMonitor(p, "x:1", Settings{Interval: time.Hour, Timeout: time.Hour, Fall: 1}, rec)
	m.randN = func(int64) int64 { return 0 }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	<-started
	cancel()
	<-done
	if len(rec.checked) != 0 || len(rec.changes) != 0 || !m.Up() {
		t.Errorf("a canceled check was counted: %+v %q, up %v", rec.checked, rec.changes, m.Up())
	}
}

type probeFunc func(ctx context.Context, addr string) Result

func (f probeFunc) Check(ctx context.Context, addr string) Result { return f(ctx, addr) }

// TestMonitorNoProbe: with type none a server carried over as down comes up
// when Run starts, and Run waits for its context.
func TestMonitorNoProbe(t *testing.T) {
	rec := &recorder{events: make(chan string, 1)}
	m := NewMonitor(nil, "x:1", Settings{Down: true}, rec)
	if m.Up() {
		t.Fatal("up before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	if got, want := <-rec.events, "up: no active check"; got != want {
		t.Errorf("change %q, want %q", got, want)
	}
	select {
	case <-done:
		t.Fatal("Run returned before its context ended")
	default:
	}
	cancel()
	<-done
}

// TestMonitorRun runs a monitor for real, fast, against loopback servers:
// an HTTP server whose status the test sets and an agent whose reply it
// sets.
func TestMonitorRun(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	addr := serve(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		var head []byte
		for !strings.Contains(string(head), "\r\n\r\n") {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			head = append(head, buf[:n]...)
		}
		fmt.Fprintf(c, "HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n", status.Load())
	})
	var agentSays atomic.Value
	agentSays.Store("up 100%\n")
	agent := serve(t, func(c net.Conn) { c.Write([]byte(agentSays.Load().(string))) })

	p, err := New(&configHTTP)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{events: make(chan string, 10)}
	m := NewMonitor(p, addr, Settings{Interval: 5 * time.Millisecond, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 2, AgentAddr: agent}, rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	expect := func(want string) {
		t.Helper()
		select {
		case got := <-rec.events:
			if got != want {
				t.Fatalf("change %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no change; want %q", want)
		}
	}
	status.Store(503)
	expect("down: 2 consecutive failures: status 503, want 200-399")
	status.Store(200)
	expect("up: 2 consecutive successes: status 200")
	agentSays.Store("down #disk full\n")
	expect("down: agent: down #disk full")
	agentSays.Store("up\n")
	expect("up: agent: up")
}

var configHTTP = config.HealthCheck{Type: config.CheckHTTP}

// TestMonitorConcurrent runs checks, the agent and passive observation at
// once, for the race detector.
func TestMonitorConcurrent(t *testing.T) {
	var flip atomic.Bool
	p := probeFunc(func(context.Context, string) Result { return Result{OK: flip.Load()} })
	var agentFlip atomic.Bool
	rec := &recorder{events: make(chan string, 1<<16)}
	m := NewMonitor(p, "x:1", Settings{Interval: time.Millisecond, Rise: 1, Fall: 1, ObserveErrors: 3, AgentAddr: "a:1"}, rec)
	m.query = func(context.Context, string) (AgentReply, error) {
		if agentFlip.Load() {
			return AgentReply{State: AgentDown, Percent: -1, Weight: -1, MaxConn: -1}, nil
		}
		return AgentReply{State: AgentUp, Percent: -1, Weight: -1, MaxConn: -1}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(ctx) })
	for i := range 4 {
		wg.Go(func() {
			for j := 0; ctx.Err() == nil; j++ {
				if (i+j)%3 == 0 {
					m.ObserveOK()
				} else {
					m.ObserveError("boom")
				}
				m.Up()
				if j%100 == 0 {
					flip.Store(!flip.Load())
					agentFlip.Store(!agentFlip.Load())
				}
			}
		})
	}
	for range 20 { // let them race for a while
		select {
		case <-rec.events:
		case <-time.After(10 * time.Second):
			t.Fatal("no change in 10s")
		}
	}
	cancel()
	wg.Wait()
	// Changes alternate: up, down, up... never two alike in a row.
	changes := rec.Changes()
	for i := 1; i < len(changes); i++ {
		if changes[i][:3] == changes[i-1][:3] {
			t.Fatalf("changes %d and %d are both %q", i-1, i, changes[i][:3])
		}
	}
	if len(changes) > 0 && !strings.HasPrefix(changes[0], "down") {
		t.Errorf("first change %q, want down", changes[0])
	}
}

// TestMonitorStaleCheck: a check that was under way when traffic errors took
// the server down does not count towards its rise: only checks that start
// afterwards can bring it back.
func TestMonitorStaleCheck(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	p := probeFunc(func(ctx context.Context, _ string) Result {
		if calls.Add(1) == 1 {
			close(started)
			<-release // answers after the server was taken down
		}
		return Result{OK: true, Detail: "ok"}
	})
	rec := &recorder{}
	m := NewMonitor(p, "x:1", Settings{Interval: time.Hour, Timeout: time.Hour, Rise: 1, ObserveErrors: 1}, rec)
	m.randN = func(int64) int64 { return 0 }
	done := make(chan struct{})
	go func() { m.checkOnce(context.Background()); close(done) }()
	<-started
	m.ObserveError("status 500")
	close(release)
	<-done
	if m.Up() {
		t.Errorf("up after a check that started before the server went down; changes %q", rec.Changes())
	}
	m.checkOnce(context.Background())
	if !m.Up() {
		t.Errorf("a fresh check did not bring it up; changes %q", rec.Changes())
	}
}
