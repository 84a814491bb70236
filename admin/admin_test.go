package admin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/internal/testpki"
	"github.com/fulcrumlb/fulcrum/proxy"
)

const (
	testUser     = "admin"
	testPassword = "s3cret-pass"
)

// testHash is testPassword at bcrypt's lowest cost, to keep tests fast.
var testHash = sync.OnceValue(func() string {
	h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
})

func testUsers() []*config.AdminUser {
	return []*config.AdminUser{{Name: testUser, PasswordHash: testHash()}}
}

// fakeRuntime is a Runtime holding a status it changes as the real one
// would, recording every mutating call.
type fakeRuntime struct {
	mu        sync.Mutex
	status    proxy.Status
	events    []proxy.Event
	calls     []string
	reloadErr error
	// refuse makes SetState fail for the real servers it names.
	refuse  map[string]error
	changed chan string // receives each call, if not nil
}

func newFakeRuntime() *fakeRuntime {
	checked := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rs := func(name, addr, color, health, state string, weight int) proxy.RealServerStatus {
		return proxy.RealServerStatus{
			Name: name, Address: addr, Color: color, Health: health, State: state,
			Weight: weight, EffectiveWeight: weight, MaxConns: 100, Active: 3, Requests: 1000,
			Responses: proxy.ResponseClasses{C2xx: 990, C5xx: 10}, BytesIn: 5000, BytesOut: 700,
			ConnectErrors: 2, Retries: 1,
			Check: proxy.CheckStatus{Type: "http", OK: health == "up", Detail: "HTTP 200 OK",
				Latency: 1500 * time.Microsecond, Time: checked},
		}
	}
	return &fakeRuntime{
		status: proxy.Status{Services: []proxy.ServiceStatus{
			{
				Name: "web", Mode: "http", Scheduler: "round_robin", Listen: []string{"127.0.0.1:8080"},
				Color: proxy.ColorGreen, ActiveConns: 7, Queue: 1, Requests: 2000, Errors: 4,
				Fallback: "127.0.0.1:8099", FallbackRequests: 12, RateLimited: 5,
				RealServers: []proxy.RealServerStatus{
					rs("web1", "10.0.0.1:80", proxy.ColorGreen, "up", config.StateReady, 1),
					rs("web2", "10.0.0.2:80", proxy.ColorGreen, "up", config.StateReady, 2),
				},
			},
			{
				Name: "db", Mode: "tcp", Scheduler: "least_conn", Listen: []string{"127.0.0.1:5432"},
				Color: proxy.ColorRed, RealServers: []proxy.RealServerStatus{
					rs("db1", "10.0.1.1:5432", proxy.ColorRed, "down", config.StateReady, 1),
				},
			},
		}, EventLoops: proxy.EventLoopStatus{Running: 2, Served: 900, HandedOff: 100}},
		events: []proxy.Event{
			{ID: 1, Time: checked, Kind: proxy.EventHealth, Service: "db", RealServer: "db1", Message: "down: connection refused"},
			{ID: 2, Time: checked.Add(time.Second), Kind: proxy.EventReload, Message: "configuration reloaded"},
			{ID: 3, Time: checked.Add(2 * time.Second), Kind: proxy.EventAdmin, Service: "web", RealServer: "web1", Message: "<b>drain</b> by admin"},
		},
	}
}

func (f *fakeRuntime) record(format string, args ...any) {
	c := fmt.Sprintf(format, args...)
	f.calls = append(f.calls, c)
	if f.changed != nil {
		select {
		case f.changed <- c:
		default:
		}
	}
}

func (f *fakeRuntime) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeRuntime) Status() proxy.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := proxy.Status{Services: slices.Clone(f.status.Services), EventLoops: f.status.EventLoops}
	for i := range out.Services {
		out.Services[i].RealServers = slices.Clone(out.Services[i].RealServers)
	}
	return out
}

func (f *fakeRuntime) Events(after uint64) []proxy.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []proxy.Event
	for _, e := range f.events {
		if e.ID > after {
			out = append(out, e)
		}
	}
	return out
}

// find returns the service and the index of its real server (-1 if none).
func (f *fakeRuntime) find(service, server string) (*proxy.ServiceStatus, int, error) {
	for i := range f.status.Services {
		vs := &f.status.Services[i]
		if vs.Name != service {
			continue
		}
		for j := range vs.RealServers {
			if vs.RealServers[j].Name == server {
				return vs, j, nil
			}
		}
		return vs, -1, fmt.Errorf("real server %q: %w", server, proxy.ErrNotFound)
	}
	return nil, -1, fmt.Errorf("virtual service %q: %w", service, proxy.ErrNotFound)
}

func (f *fakeRuntime) SetState(service, server, state string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("SetState %s %s %s", service, server, state)
	if err := f.refuse[server]; err != nil {
		return err
	}
	vs, i, err := f.find(service, server)
	if err != nil {
		return fmt.Errorf("set state: %w", err)
	}
	rs := &vs.RealServers[i]
	rs.State = state
	rs.Color = proxy.ColorGreen
	if state != config.StateReady {
		rs.Color = proxy.ColorBlue
		if vs.Color == proxy.ColorGreen {
			vs.Color = proxy.ColorBlue
		}
	}
	return nil
}

func (f *fakeRuntime) SetWeight(service, server string, weight int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("SetWeight %s %s %d", service, server, weight)
	vs, i, err := f.find(service, server)
	if err != nil {
		return fmt.Errorf("set weight: %w", err)
	}
	vs.RealServers[i].Weight = weight
	vs.RealServers[i].EffectiveWeight = weight
	return nil
}

func (f *fakeRuntime) AddRealServer(service string, rs *config.RealServer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("AddRealServer %s %s %s w=%d max=%d %s", service, rs.Name, rs.Address, rs.Weight, rs.MaxConns, rs.State)
	vs, i, err := f.find(service, rs.Name)
	if vs == nil {
		return fmt.Errorf("add real server: %w", err)
	}
	if i >= 0 {
		return fmt.Errorf("add real server %q: %w: duplicate name", rs.Name, proxy.ErrInvalid)
	}
	if strings.HasPrefix(rs.Address, "bad") {
		return fmt.Errorf("add real server %q: %w: address is not an IP", rs.Name, proxy.ErrInvalid)
	}
	vs.RealServers = append(vs.RealServers, proxy.RealServerStatus{
		Name: rs.Name, Address: rs.Address, Weight: rs.Weight, EffectiveWeight: rs.Weight,
		MaxConns: int64(rs.MaxConns), State: rs.State, Health: "up", Color: proxy.ColorGreen,
	})
	return nil
}

func (f *fakeRuntime) RemoveRealServer(service, server string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("RemoveRealServer %s %s", service, server)
	vs, i, err := f.find(service, server)
	if err != nil {
		return fmt.Errorf("remove real server: %w", err)
	}
	vs.RealServers = slices.Delete(vs.RealServers, i, i+1)
	return nil
}

func (f *fakeRuntime) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("Reload")
	return f.reloadErr
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is an admin Server behind an httptest server.
type fixture struct {
	s     *Server
	rt    *fakeRuntime
	clock *fakeClock
	ts    *httptest.Server
	logs  *observer.ObservedLogs
}

func newFixture(t *testing.T, mutate ...func(*config.Admin)) *fixture {
	t.Helper()
	cfg := config.Admin{Listen: "127.0.0.1:0", MetricsAuth: true, Users: testUsers()}
	for _, m := range mutate {
		m(&cfg)
	}
	core, logs := observer.New(zap.DebugLevel)
	rt := newFakeRuntime()
	s, err := New(cfg, rt, zap.New(core))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s.now = clock.Now
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return &fixture{s: s, rt: rt, clock: clock, ts: ts, logs: logs}
}

// req describes one test request.
type req struct {
	method, path, body string
	basic              bool   // send testUser/testPassword with Basic auth
	user, password     string // Basic auth with these instead
	json               bool   // Content-Type: application/json
	header             map[string]string
	cookie             *http.Cookie
}

// resp is a test response with its body read.
type resp struct {
	status int
	header http.Header
	body   string
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("response is not a JSON object: %v\n%s", err, r.body)
	}
	return m
}

func (f *fixture) do(t *testing.T, rq req) resp {
	t.Helper()
	var body io.Reader
	if rq.body != "" {
		body = strings.NewReader(rq.body)
	}
	r, err := http.NewRequest(rq.method, f.ts.URL+rq.path, body)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case rq.user != "":
		r.SetBasicAuth(rq.user, rq.password)
	case rq.basic:
		r.SetBasicAuth(testUser, testPassword)
	}
	if rq.json {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range rq.header {
		r.Header.Set(k, v)
	}
	if rq.cookie != nil {
		r.AddCookie(rq.cookie)
	}
	res, err := f.ts.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: string(b)}
}

// login logs testUser in and returns the session cookie and CSRF token.
func (f *fixture) login(t *testing.T) (*http.Cookie, string) {
	t.Helper()
	r := f.do(t, req{method: "POST", path: "/api/v1/login", json: true,
		body: fmt.Sprintf(`{"user":%q,"password":%q}`, testUser, testPassword)})
	if r.status != http.StatusOK {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == sessionCookie {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatalf("login set no %s cookie: %v", sessionCookie, r.header)
	}
	csrf, _ := r.json(t)["csrf_token"].(string)
	if csrf == "" {
		t.Fatalf("login returned no csrf_token: %s", r.body)
	}
	return &http.Cookie{Name: cookie.Name, Value: cookie.Value}, csrf
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  config.Admin
		rt   Runtime
		want string
	}{
		{name: "nil runtime", cfg: config.Admin{}, want: "nil Runtime"},
		{name: "bad hash", rt: newFakeRuntime(),
			cfg:  config.Admin{Users: []*config.AdminUser{{Name: "bob", PasswordHash: "plain"}}},
			want: `user "bob": password_hash is not a bcrypt hash`},
		{name: "cert without key", rt: newFakeRuntime(), cfg: config.Admin{TLSCert: "x.pem"},
			want: "tls_cert and tls_key must be given together"},
		{name: "missing cert file", rt: newFakeRuntime(), cfg: config.Admin{TLSCert: "/nonexistent.pem", TLSKey: "/nonexistent.key"},
			want: "load TLS key pair"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, tt.rt, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// TestStartServeShutdown runs the real listener: bound address, sampler,
// timeouts set, shutdown.
func TestStartServeShutdown(t *testing.T) {
	rt := newFakeRuntime()
	s, err := New(config.Admin{Listen: "127.0.0.1:0", Users: testUsers()}, rt, zaptestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != nil {
		t.Fatalf("Addr before Start = %v, want nil", s.Addr())
	}
	ticks := make(chan time.Time)
	s.newTicker = func(time.Duration) (<-chan time.Time, func()) { return ticks, func() {} }
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return base }
	if err := s.Start(); err != nil { // samples once, at base
		t.Fatal(err)
	}
	if err := s.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}
	if s.srv.ReadHeaderTimeout == 0 || s.srv.ReadTimeout == 0 || s.srv.WriteTimeout == 0 ||
		s.srv.IdleTimeout == 0 || s.srv.MaxHeaderBytes == 0 {
		t.Errorf("server timeouts not all set: %+v", s.srv)
	}

	// 50 more requests a second later: 50 req/s.
	rt.mu.Lock()
	rt.status.Services[0].Requests += 50
	rt.mu.Unlock()
	ticks <- base.Add(time.Second)
	ticks <- base.Add(time.Second) // returns once the previous tick is handled

	req, _ := http.NewRequest("GET", "http://"+s.Addr().String()+"/api/v1/status", nil)
	req.SetBasicAuth(testUser, testPassword)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var st statusResponse
	json.NewDecoder(res.Body).Decode(&st)
	res.Body.Close()
	if res.StatusCode != 200 || len(st.Services) != 2 {
		t.Fatalf("status: %d %+v", res.StatusCode, st)
	}
	if got := st.Services[0].RequestRate; got != 50 {
		t.Errorf("request_rate = %v, want 50", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", s.Addr().String()); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tt := range []struct{ name, listen, want string }{
		{"no address", "", "no listen address"},
		{"address in use", ln.Addr().String(), "admin: listen:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(config.Admin{Listen: tt.listen, Users: testUsers()}, newFakeRuntime(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start: got %v, want %q", err, tt.want)
			}
		})
	}
}

// TestTLS serves HTTPS with a self-signed pair: login sets a Secure cookie
// and plain HTTP is refused.
func TestTLS(t *testing.T) {
	certFile, keyFile := testpki.SelfSignedFiles(t, testpki.Leaf{CN: "fulcrum-test", IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotAfter: time.Now().Add(time.Hour)})
	s, err := New(config.Admin{Listen: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile, Users: testUsers()},
		newFakeRuntime(), zaptestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	base := "https://" + s.Addr().String()
	res, err := client.Post(base+"/api/v1/login", "application/json",
		strings.NewReader(fmt.Sprintf(`{"user":%q,"password":%q}`, testUser, testPassword)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("login over TLS: %d", res.StatusCode)
	}
	cookies := res.Cookies()
	if len(cookies) != 1 || !cookies[0].Secure || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode {
		t.Errorf("session cookie over TLS = %+v, want Secure, HttpOnly, SameSite=Strict", cookies)
	}
	res, err = http.Get("http://" + s.Addr().String() + "/")
	if err == nil {
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS listener: %d, want 400", res.StatusCode)
		}
	}
}

func zaptestLogger(t *testing.T) *zap.Logger {
	core, _ := observer.New(zap.InfoLevel)
	return zap.New(core)
}
