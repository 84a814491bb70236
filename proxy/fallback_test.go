package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
)

// answer is a complete HTTP/1.1 response with body.
func answer(body string) []byte {
	return []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

// getOnce sends one request on a new connection and returns the status and
// body.
func getOnce(t *testing.T, addr string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET /page HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// TestFallbackDispatch checks when the fallback answers: only when the
// scheduler finds no real server (none available, or those available failed
// to connect), not when every one is busy.
func TestFallbackDispatch(t *testing.T) {
	real := rawBackend(t, answer("real"))
	sorry := rawBackend(t, answer("sorry"))
	tests := []struct {
		name     string
		servers  func() []*config.RealServer
		fallback string         // "": none; "closed": one that refuses connections
		hold     bool           // take the only real server's one slot first (max_conns = 1)
		status   int            // wanted
		body     string         // wanted, when 200
		active   bool           // wanted FallbackActive
		served   uint64         // requests the fallback counts
		setup    func(*Service) // after start
	}{
		{
			name:     "a real server is available",
			servers:  func() []*config.RealServer { return []*config.RealServer{rsAt("a", real, 1, config.StateReady)} },
			fallback: sorry, status: 200, body: "real",
		},
		{
			name: "every real server in maintenance",
			servers: func() []*config.RealServer {
				return []*config.RealServer{rsAt("a", real, 1, config.StateMaintenance), rsAt("b", real, 1, config.StateMaintenance)}
			},
			fallback: sorry, status: 200, body: "sorry", active: true, served: 1,
		},
		{
			name:     "draining, without persistence",
			servers:  func() []*config.RealServer { return []*config.RealServer{rsAt("a", real, 1, config.StateDrain)} },
			fallback: sorry, status: 200, body: "sorry", active: true, served: 1,
		},
		{
			name:     "weight 0",
			servers:  func() []*config.RealServer { return []*config.RealServer{rsAt("a", real, 0, config.StateReady)} },
			fallback: sorry, status: 200, body: "sorry", active: true, served: 1,
		},
		{
			name:    "down",
			servers: func() []*config.RealServer { return []*config.RealServer{rsAt("a", real, 1, config.StateReady)} },
			setup: func(s *Service) {
				rs := s.reals.Load().list[0]
				rs.Server.SetDown(true)
				s.Pool.Update()
			},
			fallback: sorry, status: 200, body: "sorry", active: true, served: 1,
		},
		{
			name: "the available real server cannot be reached",
			servers: func() []*config.RealServer {
				return []*config.RealServer{rsAt("a", closedAddr(t), 1, config.StateReady)}
			},
			// Not active: the server is available as far as anyone
			// knows, until a health check says otherwise.
			fallback: sorry, status: 200, body: "sorry", served: 1,
		},
		{
			name:    "every real server busy: the queue's 503, not the fallback",
			servers: func() []*config.RealServer { return []*config.RealServer{rsAt("a", real, 1, config.StateReady)} },
			hold:    true, fallback: sorry, status: 503,
		},
		{
			name: "no fallback",
			servers: func() []*config.RealServer {
				return []*config.RealServer{rsAt("a", real, 1, config.StateMaintenance)}
			},
			status: 503,
		},
		{
			name: "the fallback cannot be reached",
			servers: func() []*config.RealServer {
				return []*config.RealServer{rsAt("a", real, 1, config.StateMaintenance)}
			},
			fallback: "closed", status: 503, active: true, served: 1,
		},
		{
			name: "neither the real server nor the fallback can be reached",
			servers: func() []*config.RealServer {
				return []*config.RealServer{rsAt("a", closedAddr(t), 1, config.StateReady)}
			},
			fallback: "closed", status: 502, served: 1,
		},
		{
			name:     "a fallback and no real servers at all",
			servers:  func() []*config.RealServer { return nil },
			fallback: sorry, status: 200, body: "sorry", active: true, served: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb := tt.fallback
			if fb == "closed" {
				fb = closedAddr(t)
			}
			p := startTestServiceWith(t, config.ModeHTTP, func(vs *config.VirtualService) {
				vs.RealServers = tt.servers()
				vs.Fallback = fb
				vs.Retries = 1
				if tt.hold {
					vs.RealServers[0].MaxConns = 1
					vs.QueueTimeout = 0
				}
			})
			s := p.Services()[0]
			if tt.setup != nil {
				tt.setup(s)
			}
			if tt.hold {
				srv, err := s.Pool.Acquire(nil)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Pool.Release(srv)
			}
			status, body := getOnce(t, s.Addrs()[0].String())
			if status != tt.status || (status == 200 && body != tt.body) {
				t.Errorf("got %d %q, want %d %q", status, body, tt.status, tt.body)
			}
			// The exchange is counted once answered: poll.
			var st ServiceStatus
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
				st = p.Status().Services[0]
				if st.Fallback == fb && st.FallbackActive == tt.active && st.FallbackRequests == tt.served ||
					time.Now().After(deadline) {
					break
				}
			}
			if st.Fallback != fb || st.FallbackActive != tt.active || st.FallbackRequests != tt.served {
				t.Errorf("status: fallback %q active %t requests %d; want %q %t %d",
					st.Fallback, st.FallbackActive, st.FallbackRequests, fb, tt.active, tt.served)
			}
			if f := s.fallback.Load(); f != nil {
				// The slot taken for the attempt was given back.
				waitFor(t, func() bool { return f.rs.Server.Active() == 0 })
			}
		})
	}
}

func rsAt(name, addr string, weight int, state string) *config.RealServer {
	return &config.RealServer{Name: name, Address: addr, Weight: weight, State: state, Protocol: config.ProtoHTTP1}
}

// TestFallbackLeavesPersistenceAlone: a request the fallback answered
// leaves no stick-table entry, so that the client is scheduled again once
// a real server is back.
func TestFallbackLeavesPersistenceAlone(t *testing.T) {
	real := rawBackend(t, answer("real"))
	sorry := rawBackend(t, answer("sorry"))
	p := startTestServiceWith(t, config.ModeHTTP, func(vs *config.VirtualService) {
		vs.RealServers = []*config.RealServer{rsAt("a", real, 1, config.StateMaintenance)}
		vs.Fallback = sorry
		vs.Persistence = config.Persistence{Method: config.PersistSourceIP, Timeout: time.Hour, MaxEntries: 100,
			SourceMask: 32, SourceMask6: 64}
	})
	s := p.Services()[0]
	addr := s.Addrs()[0].String()
	if _, body := getOnce(t, addr); body != "sorry" {
		t.Fatalf("got %q, want the fallback's", body)
	}
	if n := s.persist.Load().addrs.Len(); n != 0 {
		t.Errorf("the stick table holds %d entries after the fallback answered, want 0", n)
	}
	if err := p.SetState("bench", "a", config.StateReady); err != nil {
		t.Fatal(err)
	}
	if _, body := getOnce(t, addr); body != "real" {
		t.Errorf("got %q once the real server is ready, want its answer", body)
	}
	if p.Status().Services[0].FallbackActive {
		t.Error("fallback still active with a ready real server")
	}
}

// TestFallbackReload: a reload keeps the fallback when its address stays
// (its counters and pooled connections with it), replaces it when the
// address changes, and removes it when the key goes.
func TestFallbackReload(t *testing.T) {
	sorry := rawBackend(t, answer("sorry"))
	other := rawBackend(t, answer("other"))
	vs := func(fallback string) *config.VirtualService {
		return &config.VirtualService{
			Name: "web", Listen: []string{"127.0.0.1:0"}, Mode: config.ModeHTTP, Scheduler: "round_robin",
			Retries: 1, Fallback: fallback,
			Timeouts:    config.Timeouts{Connect: time.Second, Client: 10 * time.Second, ClientHeader: 5 * time.Second, Server: 10 * time.Second},
			RealServers: []*config.RealServer{rsAt("a", closedAddr(t), 1, config.StateMaintenance)},
		}
	}
	cfg := func(fallback string) *config.Config {
		return &config.Config{Global: config.Global{Grace: time.Second}, VirtualServices: []*config.VirtualService{vs(fallback)}}
	}
	p, err := New(cfg(sorry), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(timeoutCtx(t, time.Second)) })
	s := p.Services()[0]
	addr := s.Addrs()[0].String()
	if _, body := getOnce(t, addr); body != "sorry" {
		t.Fatalf("got %q, want the fallback's", body)
	}
	first := s.fallback.Load()

	steps := []struct {
		name     string
		fallback string
		same     bool
		body     string
		status   int
	}{
		{"same address: kept", sorry, true, "sorry", 200},
		{"another address: replaced", other, false, "other", 200},
		{"removed", "", false, "", 503},
	}
	for _, step := range steps {
		if err := p.Apply(cfg(step.fallback)); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		cur := s.fallback.Load()
		if (cur == first) != step.same || (step.fallback == "") != (cur == nil) {
			t.Errorf("%s: fallback %+v (first %p)", step.name, cur, first)
		}
		status, body := getOnce(t, addr)
		if status != step.status || (status == 200 && body != step.body) {
			t.Errorf("%s: got %d %q, want %d %q", step.name, status, body, step.status, step.body)
		}
	}
	first.rs.mu.Lock()
	retired := first.rs.retired
	first.rs.mu.Unlock()
	if !retired {
		t.Error("the replaced fallback was not retired")
	}
}

// TestFallbackH2: the HTTP/2 front end dispatches the same way, and the
// access log names the fallback as the real server.
func TestFallbackH2(t *testing.T) {
	sorry := httpBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "sorry "+r.URL.Path) })
	e := startH2(t, func(vs *config.VirtualService) {
		vs.RealServers[0].State = config.StateMaintenance
		vs.Fallback = sorry
	}, namedBackend(t, "a"))
	c := e.client()
	for range 3 { // one pooled connection to the fallback serves them all
		resp, body := get(t, c, newRequest(t, "GET", e.url+"/x", nil))
		if resp.StatusCode != 200 || body != "sorry /x" {
			t.Fatalf("got %d %q, want the fallback's answer", resp.StatusCode, body)
		}
	}
	line := e.waitAccess(3)[0].ContextMap()
	if line["real_server"] != fallbackName || line["status"] != int64(200) {
		t.Errorf("access log: %v", line)
	}
	if err := e.p.SetState("web", "a", config.StateReady); err != nil {
		t.Fatal(err)
	}
	if _, body := get(t, c, newRequest(t, "GET", e.url+"/x", nil)); body != "a" {
		t.Errorf("got %q once the real server is ready, want its answer", body)
	}
}
