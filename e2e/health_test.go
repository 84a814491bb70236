package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// switchableBackend is an HTTP real server on a fixed address that a test
// can stop (closing every connection, as a crashed server does) and start
// again. It answers /health with "OK" and anything else with its name, and
// counts the two apart.
type switchableBackend struct {
	t      *testing.T
	name   string
	addr   string
	mu     sync.Mutex
	srv    *http.Server
	checks atomic.Int64 // health checks answered since the last start
	reqs   atomic.Int64
	// firstReq is the value checks had when the first request after the
	// last start arrived; -1 until then.
	firstReq atomic.Int64
}

func newSwitchableBackend(t *testing.T, name string) *switchableBackend {
	return newSwitchableBackendOn(t, "127.0.0.1", name)
}

func newSwitchableBackendOn(t *testing.T, ip, name string) *switchableBackend {
	b := &switchableBackend{t: t, name: name, addr: freeAddrOn(t, ip)}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *switchableBackend) start() {
	b.t.Helper()
	l, err := net.Listen("tcp", b.addr)
	if err != nil {
		b.t.Fatal(err)
	}
	b.checks.Store(0)
	b.firstReq.Store(-1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/health" {
			b.checks.Add(1)
			io.WriteString(w, "OK")
			return
		}
		b.reqs.Add(1)
		b.firstReq.CompareAndSwap(-1, b.checks.Load())
		io.WriteString(w, b.name)
	})}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go srv.Serve(l)
}

func (b *switchableBackend) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		b.srv.Close()
		b.srv = nil
	}
}

func (b *switchableBackend) real(opts string) real {
	return real{name: b.name, address: b.addr, opts: opts}
}

// load sends requests through vip from a few goroutines until stop is
// called, and counts the answers by body (or status, when not 200).
type load struct {
	stopCh chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	count  map[string]int
}

func startLoad(t *testing.T, vip string, workers int) *load {
	l := &load{stopCh: make(chan struct{}), count: map[string]int{}}
	for range workers {
		l.wg.Go(func() {
			c := &http.Client{Timeout: 5 * time.Second}
			for {
				select {
				case <-l.stopCh:
					return
				default:
				}
				key := ""
				resp, err := c.Get("http://" + vip + "/")
				if err != nil {
					key = "error"
				} else {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					key = string(b)
					if resp.StatusCode != 200 {
						key = fmt.Sprint(resp.StatusCode)
					}
				}
				l.mu.Lock()
				l.count[key]++
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

func (l *load) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
}

func (l *load) snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for k, v := range l.count {
		out[k] = v
	}
	return out
}

// TestHealthCheckDownAndUp kills a real server under load: it must be marked
// down within fall × interval + timeout, then get no traffic while it is
// back but not yet trusted, and come up after rise successful checks.
func TestHealthCheckDownAndUp(t *testing.T) {
	const (
		interval = 300 * time.Millisecond
		timeout  = 200 * time.Millisecond
		rise     = 3
		fall     = 2
	)
	a, b := newSwitchableBackend(t, "a"), newSwitchableBackend(t, "b")
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		health: fmt.Sprintf("type = \"http\"\npath = \"/health\"\nexpect_body = \"^OK$\"\ninterval = %q\ntimeout = %q\nrise = %d\nfall = %d\n",
			interval, timeout, rise, fall),
		real: []real{a.real(""), b.real("")},
	}}})
	isHealth := func(up bool, name string) func(logEntry) bool {
		msg := "real server is down"
		if up {
			msg = "real server is up"
		}
		return func(e logEntry) bool { return e.str("msg") == msg && e.str("real_server") == name }
	}
	// Wait until both are checked, then load.
	waitFor(t, 5*time.Second, "first checks", func() bool { return a.checks.Load() > 0 && b.checks.Load() > 0 })
	ld := startLoad(t, vip, 4)
	waitFor(t, 5*time.Second, "traffic on both", func() bool { return a.reqs.Load() > 10 && b.reqs.Load() > 10 })

	killed := time.Now()
	a.stop()
	down := f.waitLog(5*time.Second, "a down", isHealth(false, "a"))
	// The bound, plus the ±10% jitter of each interval and some slack for a
	// loaded machine.
	limit := time.Duration(fall)*interval*11/10 + timeout + 250*time.Millisecond
	if took := time.Since(killed); took > limit {
		t.Errorf("a marked down %s after it died; want within %s", took, limit)
	}
	if d := down.str("detail"); !strings.Contains(d, "connect") && !strings.Contains(d, "refused") {
		t.Errorf("down log detail = %q, want the connect failure", d)
	}

	// Back, but not trusted until rise successes: it gets no traffic before
	// it has answered rise checks.
	reqsBefore := a.reqs.Load()
	a.start()
	f.waitLog(5*time.Second, "a up", isHealth(true, "a"))
	waitFor(t, 5*time.Second, "traffic on a again", func() bool { return a.reqs.Load() > reqsBefore+10 })
	if got := a.firstReq.Load(); got < rise {
		t.Errorf("a got traffic after answering %d checks since it restarted; want >= rise (%d)", got, rise)
	}
	ld.stop()
	got := ld.snapshot()
	if got["b"] == 0 || got["a"] == 0 {
		t.Errorf("load answers = %v", got)
	}
	// Clients were spared the dead server: connect failures are retried on
	// b. Only requests in flight at the moment of the crash may fail.
	if bad := got["error"] + got["502"] + got["503"]; bad > 4 {
		t.Errorf("%d failed requests (%v); at most the 4 in flight at the crash may fail", bad, got)
	}
}

// tally sends n requests one after another and counts the answers by body
// (or status, when not 200).
func tally(t *testing.T, vip string, n int) map[string]int {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	got := map[string]int{}
	for range n {
		resp, err := c.Get("http://" + vip + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		key := string(b)
		if resp.StatusCode != 200 {
			key = fmt.Sprint(resp.StatusCode)
		}
		got[key]++
	}
	return got
}

// agentServer answers HAProxy agent checks with whatever reply holds.
type agentServer struct {
	addr    string
	l       net.Listener
	reply   atomic.Value // string
	queries atomic.Int64
}

func newAgentServer(t *testing.T, addr string) *agentServer {
	a := &agentServer{}
	a.reply.Store("ready\n")
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	a.addr, a.l = l.Addr().String(), l
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			a.queries.Add(1)
			io.WriteString(c, a.reply.Load().(string))
			c.Close()
		}
	}()
	return a
}

// TestAgentCheck drives a real server's weight and state from an agent
// (HAProxy's agent-check protocol). b has no agent, which changes nothing.
func TestAgentCheck(t *testing.T) {
	a := newSwitchableBackendOn(t, "127.0.0.1", "a")
	b := newSwitchableBackendOn(t, "127.0.0.2", "b")
	agentAddr := freeAddr(t)
	_, agentPort, _ := net.SplitHostPort(agentAddr)
	agent := newAgentServer(t, agentAddr)
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   "scheduler = \"weighted_round_robin\"\n",
		health: "type = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\nagent_port = " + agentPort + "\n",
		real:   []real{a.real("weight = 10\n"), b.real("weight = 10\n")},
	}}})

	// say sets the agent's reply and waits until fulcrum has seen it twice
	// (the second query starts after the first reply was applied).
	say := func(reply string) {
		t.Helper()
		agent.reply.Store(reply + "\n")
		n := agent.queries.Load()
		waitFor(t, 5*time.Second, "agent queried", func() bool { return agent.queries.Load() >= n+2 })
	}
	tests := []struct {
		reply string
		n     int
		want  map[string]int
	}{
		{"ready 100%", 20, map[string]int{"a": 10, "b": 10}},
		{"50%", 30, map[string]int{"a": 10, "b": 20}},
		{"drain", 10, map[string]int{"b": 10}},
		{"ready", 30, map[string]int{"a": 10, "b": 20}}, // still 50%
		{"100% weight:20", 30, map[string]int{"a": 20, "b": 10}},
		{"maint", 10, map[string]int{"b": 10}},
		{"ready weight:10", 20, map[string]int{"a": 10, "b": 10}},
		{"down #disk full", 10, map[string]int{"b": 10}},
		{"up", 20, map[string]int{"a": 10, "b": 10}},
	}
	for _, tt := range tests {
		t.Run(tt.reply, func(t *testing.T) {
			say(tt.reply)
			if tt.reply == "up" {
				f.waitLog(5*time.Second, "a up", func(e logEntry) bool {
					return e.str("msg") == "real server is up" && e.str("real_server") == "a"
				})
			}
			if got := tally(t, vip, tt.n); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("after %q: %v, want %v", tt.reply, got, tt.want)
			}
		})
	}
	down := f.waitLog(time.Second, "a down", func(e logEntry) bool {
		return e.str("msg") == "real server is down" && e.str("real_server") == "a"
	})
	if !strings.Contains(down.str("detail"), "disk full") {
		t.Errorf("down detail = %q, want the agent's reason", down.str("detail"))
	}
	// An agent that stops answering changes nothing: the last word holds.
	say("50%")
	agent.l.Close()
	n := a.checks.Load()
	waitFor(t, 5*time.Second, "three more checks", func() bool { return a.checks.Load() >= n+3 })
	if got := tally(t, vip, 30); got["a"] != 10 || got["b"] != 20 {
		t.Errorf("agent gone: %v, want a 10, b 20 (its last 50%%)", got)
	}
}

// TestPassiveObservation: with observe_errors, a real server answering 5xx
// to live traffic is taken down after that many errors in a row, although
// its active check passes, and the active check brings it back.
func TestPassiveObservation(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	var mu sync.Mutex
	var checkTimes []time.Time // when a answered a health check
	a := newHTTPBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			mu.Lock()
			checkTimes = append(checkTimes, time.Now())
			mu.Unlock()
			io.WriteString(w, "OK")
			return
		}
		if failing.Load() {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "a")
	}))
	b := newHTTPBackend(t, "b", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		health: "type = \"http\"\npath = \"/health\"\ninterval = \"300ms\"\nrise = 2\nobserve_errors = 3\n",
		real:   []real{a.real(""), b.real("")},
	}}})
	// Round robin: a answers 500 to every other request until it is down.
	got := tally(t, vip, 20)
	down := f.waitLog(time.Second, "a down", func(e logEntry) bool {
		return e.str("msg") == "real server is down" && e.str("real_server") == "a"
	})
	if got["500"] != 3 || got["b"] != 17 {
		t.Errorf("answers = %v; want exactly 3 errors from a, then b only", got)
	}
	if d := down.str("detail"); !strings.Contains(d, "3 consecutive errors") || !strings.Contains(d, "500") {
		t.Errorf("down detail = %q", d)
	}
	failing.Store(false)
	up := f.waitLog(5*time.Second, "a up", func(e logEntry) bool {
		return e.str("msg") == "real server is up" && e.str("real_server") == "a"
	})
	// The checks a answered between being marked down and up: rise of
	// them, at least, brought it back.
	downAt, err1 := time.Parse(time.RFC3339Nano, down.str("time"))
	upAt, err2 := time.Parse(time.RFC3339Nano, up.str("time"))
	if err1 != nil || err2 != nil {
		t.Fatalf("log times: %v %v", err1, err2)
	}
	mu.Lock()
	c := 0
	for _, at := range checkTimes {
		// The log's times are in milliseconds: the check that brought a
		// up arrived in the millisecond the log says it came up.
		if at.After(downAt) && at.Before(upAt.Add(time.Millisecond)) {
			c++
		}
	}
	mu.Unlock()
	if c < 2 {
		t.Errorf("a came back after %d checks, want rise (2)", c)
	}
	if got := tally(t, vip, 10); got["a"] != 5 || got["b"] != 5 {
		t.Errorf("after recovery: %v", got)
	}
}
