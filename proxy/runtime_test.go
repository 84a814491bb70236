package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/healthcheck"
)

// namedBackend answers every request with its name as the body.
func namedBackend(tb testing.TB, name string) string {
	return rawBackend(tb, []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(name), name)))
}

// client sends requests over one keep-alive connection and returns bodies.
type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialClient(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

// get returns the status and body of one GET.
func (cl *client) get() (int, string) {
	cl.t.Helper()
	cl.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(cl.c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		cl.t.Fatal(err)
	}
	resp, err := http.ReadResponse(cl.br, nil)
	if err != nil {
		cl.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// tally returns how many of n requests each real server answered.
func (cl *client) tally(n int) map[string]int {
	cl.t.Helper()
	got := map[string]int{}
	for range n {
		status, body := cl.get()
		if status != 200 {
			body = fmt.Sprint(status)
		}
		got[body]++
	}
	return got
}

func testConfig(services ...*config.VirtualService) *config.Config {
	return &config.Config{File: "test.toml", Global: config.Global{Grace: time.Second}, VirtualServices: services}
}

func testService(name, listen string, servers ...*config.RealServer) *config.VirtualService {
	return &config.VirtualService{
		Name: name, Listen: []string{listen}, Mode: config.ModeHTTP, Scheduler: "round_robin",
		Retries: 2, QueueTimeout: time.Second,
		Timeouts:    config.Timeouts{Connect: time.Second, Client: 10 * time.Second, ClientHeader: 5 * time.Second, Server: 10 * time.Second},
		RealServers: servers,
	}
}

func startProxy(t *testing.T, cfg *config.Config) *Proxy {
	t.Helper()
	p, err := New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(timeoutCtx(t, time.Second)) })
	return p
}

func TestAdminStates(t *testing.T) {
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	web := testService("web", "127.0.0.1:0",
		&config.RealServer{Name: "a", Address: a, Weight: 1},
		&config.RealServer{Name: "b", Address: b, Weight: 1})
	web.Scheduler = "weighted_round_robin"
	p := startProxy(t, testConfig(web))
	cl := dialClient(t, p.Services()[0].Addrs()[0].String())
	colors := func() (svc string, servers []string) {
		st := p.Status().Services[0]
		for _, r := range st.RealServers {
			servers = append(servers, r.Name+":"+r.Color+":"+r.State)
		}
		return st.Color, servers
	}

	tests := []struct {
		name      string
		change    func() error
		want      map[string]int
		wantColor string
		wantRS    string
	}{
		{"all ready", func() error { return nil }, map[string]int{"a": 5, "b": 5}, ColorGreen, "a:green:ready b:green:ready"},
		{"a in maintenance", func() error { return p.SetState("web", "a", "maintenance") }, map[string]int{"b": 10}, ColorBlue, "a:blue:maintenance b:green:ready"},
		{"a drained", func() error { return p.SetState("web", "a", "drain") }, map[string]int{"b": 10}, ColorBlue, "a:blue:drain b:green:ready"},
		{"both offline", func() error { return p.SetState("web", "b", "maint") }, map[string]int{"503": 10}, ColorRed, "a:blue:drain b:blue:maintenance"},
		{"back online, weight 3:1", func() error {
			return errors.Join(p.SetState("web", "a", "ready"), p.SetState("web", "b", "ready"), p.SetWeight("web", "a", 3))
		}, map[string]int{"a": 15, "b": 5}, ColorGreen, "a:green:ready b:green:ready"},
		{"weight 0", func() error { return p.SetWeight("web", "a", 0) }, map[string]int{"b": 10}, ColorBlue, "a:blue:ready b:green:ready"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.change(); err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, v := range tt.want {
				n += v
			}
			if got := cl.tally(n); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("tally = %v, want %v", got, tt.want)
			}
			svc, rs := colors()
			if svc != tt.wantColor || strings.Join(rs, " ") != tt.wantRS {
				t.Errorf("colors = %s %v, want %s %s", svc, rs, tt.wantColor, tt.wantRS)
			}
		})
	}
}

func TestRuntimeErrors(t *testing.T) {
	a := namedBackend(t, "a")
	p := startProxy(t, testConfig(testService("web", "127.0.0.1:0", &config.RealServer{Name: "a", Address: a, Weight: 1})))
	tests := []struct {
		name string
		err  error
		want error
		text string
	}{
		{"unknown service", p.SetState("nope", "a", "drain"), ErrNotFound, `virtual service "nope": not found`},
		{"unknown server", p.SetState("web", "zz", "drain"), ErrNotFound, `virtual service "web": real server "zz": not found`},
		{"bad state", p.SetState("web", "a", "offline"), ErrInvalid, `state "offline": want ready, drain or maintenance: invalid`},
		{"bad weight", p.SetWeight("web", "a", -1), ErrInvalid, "weight -1: want 0..65535: invalid"},
		{"weight unknown server", p.SetWeight("web", "zz", 1), ErrNotFound, ""},
		{"add duplicate name", p.AddRealServer("web", &config.RealServer{Name: "a", Address: "127.0.0.1:1", Weight: 1}), ErrInvalid, `real server "a" already exists: invalid`},
		{"add duplicate address", p.AddRealServer("web", &config.RealServer{Name: "b", Address: a, Weight: 1}), ErrInvalid, ""},
		{"add bad address", p.AddRealServer("web", &config.RealServer{Name: "b", Address: "localhost:80"}), ErrInvalid, `address "localhost:80": want IP:port: invalid`},
		{"add to unknown service", p.AddRealServer("nope", &config.RealServer{Name: "b", Address: "127.0.0.1:1"}), ErrNotFound, ""},
		{"remove unknown", p.RemoveRealServer("web", "zz"), ErrNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, tt.want) {
				t.Fatalf("err = %v, want %v", tt.err, tt.want)
			}
			if tt.text != "" && tt.err.Error() != tt.text {
				t.Errorf("err = %q, want %q", tt.err, tt.text)
			}
		})
	}
}

func TestAddRemoveRealServer(t *testing.T) {
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	p := startProxy(t, testConfig(testService("web", "127.0.0.1:0", &config.RealServer{Name: "a", Address: a, Weight: 1})))
	cl := dialClient(t, p.Services()[0].Addrs()[0].String())
	if err := p.AddRealServer("web", &config.RealServer{Name: "b", Address: b, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	if got := cl.tally(4); got["a"] != 2 || got["b"] != 2 {
		t.Errorf("after adding b: %v", got)
	}
	if err := p.RemoveRealServer("web", "a"); err != nil {
		t.Fatal(err)
	}
	if got := cl.tally(4); got["b"] != 4 {
		t.Errorf("after removing a: %v", got)
	}
	var kinds []string
	for _, e := range p.Events(0) {
		kinds = append(kinds, e.Kind+" "+e.RealServer+" "+e.Message)
	}
	want := fmt.Sprintf("admin b added (%s)|admin a removed", b)
	if strings.Join(kinds, "|") != want {
		t.Errorf("events = %q, want %q", strings.Join(kinds, "|"), want)
	}
	if got := p.Events(p.Events(0)[0].ID); len(got) != 1 {
		t.Errorf("Events(after first) = %d events, want 1", len(got))
	}
}

func TestApply(t *testing.T) {
	a, b, c := namedBackend(t, "a"), namedBackend(t, "b"), namedBackend(t, "c")
	web := testService("web", "127.0.0.1:0",
		&config.RealServer{Name: "a", Address: a, Weight: 1},
		&config.RealServer{Name: "b", Address: b, Weight: 1})
	p := startProxy(t, testConfig(web))
	addr := p.Services()[0].Addrs()[0].String()
	cl := dialClient(t, addr)
	cl.tally(2)
	if err := p.SetState("web", "b", "drain"); err != nil {
		t.Fatal(err)
	}
	before := p.Status().Services[0].RealServers[0].Requests

	// b stays (its drain survives), a's weight changes in the file, c is new.
	web2 := testService("web", "127.0.0.1:0",
		&config.RealServer{Name: "a", Address: a, Weight: 2},
		&config.RealServer{Name: "b", Address: b, Weight: 1},
		&config.RealServer{Name: "c", Address: c, Weight: 1})
	web2.Scheduler = "weighted_round_robin"
	if err := p.Apply(testConfig(web2)); err != nil {
		t.Fatal(err)
	}
	if got := p.Services()[0].Addrs()[0].String(); got != addr {
		t.Errorf("listener re-bound: %s, was %s", got, addr)
	}
	// The same client connection carries on, now balanced 2:0:1.
	if got := cl.tally(9); got["a"] != 6 || got["c"] != 3 {
		t.Errorf("after reload: %v, want a 6, c 3", got)
	}
	// Counters move just after the response is sent.
	waitFor(t, func() bool { return p.Status().Services[0].RealServers[0].Requests == before+6 })
	st := p.Status().Services[0]
	if st.Scheduler != "weighted_round_robin" || st.RealServers[1].State != "drain" {
		t.Errorf("status after reload: %+v", st)
	}

	// A second service on a new address; a broken listen address (in use)
	// refuses the whole reload.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	bad := testConfig(web2, testService("api", busy.Addr().String(), &config.RealServer{Name: "c", Address: c, Weight: 1}))
	if err := p.Apply(bad); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Apply with a busy address: %v", err)
	}
	if n := len(p.Services()); n != 1 {
		t.Errorf("a refused reload changed the services: %d", n)
	}

	// Renaming the service keeps the listener and moves it over; the old
	// service drains: its keep-alive client is closed after its exchange.
	renamed := testService("www", "127.0.0.1:0", &config.RealServer{Name: "c", Address: c, Weight: 1})
	if err := p.Apply(testConfig(renamed)); err != nil {
		t.Fatal(err)
	}
	cl2 := dialClient(t, addr)
	if got := cl2.tally(2); got["c"] != 2 {
		t.Errorf("new client after rename: %v, want c only", got)
	}
	if names := p.Status().Services; len(names) != 1 || names[0].Name != "www" {
		t.Errorf("services after rename: %+v", names)
	}
}

// TestSlowStart: a real server that comes up ramps its weight from near zero
// to its full weight over slow_start.
func TestSlowStart(t *testing.T) {
	a := namedBackend(t, "a")
	web := testService("web", "127.0.0.1:0", &config.RealServer{Name: "a", Address: a, Weight: 100})
	web.HealthCheck.SlowStart = 500 * time.Millisecond
	p := startProxy(t, testConfig(web))
	rs := p.Services()[0].reals.Load().list[0]
	rep := &reporter{rs: rs}
	rep.HealthChanged(false, healthcheck.Result{Detail: "test"})
	if !rs.Server.Down() || rs.Server.Available() {
		t.Fatal("not down")
	}
	start := time.Now()
	rep.HealthChanged(true, healthcheck.Result{Detail: "test"})
	if w := rs.Server.Weight(); w < 1 || w > 30 {
		t.Errorf("weight just after coming up = %d, want a small share of 100", w)
	}
	seen := map[int]bool{}
	waitFor(t, func() bool {
		seen[rs.Server.Weight()] = true
		return rs.Server.Weight() == 100
	})
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Errorf("full weight after %s, want about slow_start (500ms)", took)
	}
	if len(seen) < 3 {
		t.Errorf("weights seen during the ramp: %v, want steps", seen)
	}
	if ev := p.Events(0); len(ev) != 2 || ev[0].Message != "down: test" || ev[1].Message != "up: test" {
		t.Errorf("events = %+v", ev)
	}
}

// TestStickTableSurvivesReload: a reload that keeps the persistence method
// and the table's bounds keeps the table (and so every client's server);
// changing the method starts afresh.
func TestStickTableSurvivesReload(t *testing.T) {
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	mk := func(method string) *config.VirtualService {
		vs := testService("web", "127.0.0.1:0",
			&config.RealServer{Name: "a", Address: a, Weight: 1},
			&config.RealServer{Name: "b", Address: b, Weight: 1})
		vs.Persistence = config.Persistence{Method: method, Timeout: time.Hour, MaxEntries: 100, SourceMask: 32, SourceMask6: 64}
		return vs
	}
	p := startProxy(t, testConfig(mk(config.PersistSourceIP)))
	cl := dialClient(t, p.Services()[0].Addrs()[0].String())
	_, first := cl.get()
	before := p.Services()[0].persist.Load()
	if n := before.addrs.Len(); n != 1 {
		t.Fatalf("stick entries = %d, want 1", n)
	}
	if err := p.Apply(testConfig(mk(config.PersistSourceIP))); err != nil {
		t.Fatal(err)
	}
	after := p.Services()[0].persist.Load()
	if after.addrs != before.addrs {
		t.Error("a reload with the same persistence replaced the stick table")
	}
	if got := cl.tally(6); got[first] != 6 {
		t.Errorf("after reload: %v, want all on %s", got, first)
	}
	if err := p.Apply(testConfig(mk(config.PersistNone))); err != nil {
		t.Fatal(err)
	}
	if got := p.Services()[0].persist.Load(); got != nil {
		t.Errorf("persistence none with round_robin: persister %v, want nil (the plain hot path)", got)
	}
	if got := cl.tally(6); got["a"] != 3 || got["b"] != 3 {
		t.Errorf("without persistence: %v", got)
	}
}
