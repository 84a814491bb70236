package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// TestRateLimiterBucket drives one client's bucket through time: the burst
// a quiet client may make, the refill rate, and the wait a refused request
// is told.
func TestRateLimiterBucket(t *testing.T) {
	type step struct {
		at   time.Duration // since the limiter's start
		wait time.Duration // 0: allowed
	}
	tests := []struct {
		name  string
		rl    config.RateLimit
		steps []step
	}{
		{
			name: "2 per second: two at once, then one every 500ms",
			rl:   config.RateLimit{Requests: 2, Per: time.Second},
			steps: []step{
				{0, 0}, {0, 0}, {0, 500 * time.Millisecond},
				{100 * time.Millisecond, 400 * time.Millisecond},
				{500 * time.Millisecond, 0}, {500 * time.Millisecond, 500 * time.Millisecond},
				{time.Second, 0},
				{3 * time.Second, 0}, {3 * time.Second, 0}, {3 * time.Second, 500 * time.Millisecond}, // refilled to 2, no more
			},
		},
		{
			name: "burst adds to the capacity, not to the rate",
			rl:   config.RateLimit{Requests: 1, Per: time.Second, Burst: 2},
			steps: []step{
				{0, 0}, {0, 0}, {0, 0}, {0, time.Second},
				{time.Second, 0}, {time.Second, time.Second},
				{10 * time.Second, 0}, {10 * time.Second, 0}, {10 * time.Second, 0}, {10 * time.Second, time.Second},
			},
		},
		{
			name: "per a minute",
			rl:   config.RateLimit{Requests: 3, Per: time.Minute},
			steps: []step{
				{0, 0}, {0, 0}, {0, 0}, {0, 20 * time.Second},
				{19 * time.Second, time.Second}, {20 * time.Second, 0}, {20 * time.Second, 20 * time.Second},
			},
		},
		{
			name:  "per absent: a second",
			rl:    config.RateLimit{Requests: 1},
			steps: []step{{0, 0}, {0, time.Second}, {time.Second, 0}},
		},
		{
			name: "refused requests cost nothing",
			rl:   config.RateLimit{Requests: 1, Per: time.Second},
			steps: []step{
				{0, 0}, {0, time.Second}, {0, time.Second}, {900 * time.Millisecond, 100 * time.Millisecond},
				{time.Second, 0},
			},
		},
	}
	client := netip.MustParseAddr("192.0.2.7")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newRateLimiter(tt.rl)
			for i, s := range tt.steps {
				if got := l.allow(client, l.base.Add(s.at)); got != s.wait {
					t.Fatalf("step %d (at %s): wait %s, want %s", i, s.at, got, s.wait)
				}
			}
		})
	}
}

func TestRateLimiterOff(t *testing.T) {
	for _, rl := range []config.RateLimit{{}, {Requests: 0, Per: time.Second, Burst: 5}} {
		if l := newRateLimiter(rl); l != nil {
			t.Errorf("newRateLimiter(%+v) = %p, want nil (off)", rl, l)
		}
	}
}

// TestRateLimiterClientsApart: one client's requests do not spend
// another's tokens, IPv4 or IPv6 (the full address, not its /64).
func TestRateLimiterClientsApart(t *testing.T) {
	l := newRateLimiter(config.RateLimit{Requests: 1, Per: time.Second})
	now := l.base
	for _, a := range []string{"192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2", "::ffff:192.0.2.3"} {
		if w := l.allow(netip.MustParseAddr(a), now); w != 0 {
			t.Errorf("%s: first request refused (wait %s)", a, w)
		}
		if w := l.allow(netip.MustParseAddr(a), now); w == 0 {
			t.Errorf("%s: second request allowed", a)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		wait time.Duration
		want int64
	}{
		{time.Nanosecond, 1},
		{500 * time.Millisecond, 1},
		{time.Second, 1},
		{time.Second + time.Nanosecond, 2},
		{1500 * time.Millisecond, 2},
		{59*time.Second + 999*time.Millisecond, 60},
		{time.Hour, 3600},
	}
	for _, tt := range tests {
		if got := retryAfter(tt.wait); got != tt.want {
			t.Errorf("retryAfter(%s) = %d, want %d", tt.wait, got, tt.want)
		}
	}
}

func TestSameRateLimit(t *testing.T) {
	tests := []struct {
		name string
		a, b config.RateLimit
		want bool
	}{
		{"both off", config.RateLimit{}, config.RateLimit{Per: time.Minute, Burst: 3}, true},
		{"per absent is 1s", config.RateLimit{Requests: 5}, config.RateLimit{Requests: 5, Per: time.Second}, true},
		{"requests changed", config.RateLimit{Requests: 5, Per: time.Second}, config.RateLimit{Requests: 6, Per: time.Second}, false},
		{"burst changed", config.RateLimit{Requests: 5, Per: time.Second}, config.RateLimit{Requests: 5, Per: time.Second, Burst: 1}, false},
		{"turned off", config.RateLimit{Requests: 5, Per: time.Second}, config.RateLimit{Per: time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sameRateLimit(tt.a, tt.b); got != tt.want {
				t.Errorf("sameRateLimit = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRateShardEviction: a new client in a full shard takes the place of
// one whose bucket has refilled, else of the least recently seen.
func TestRateShardEviction(t *testing.T) {
	const capacity = 4
	l := newRateLimiter(config.RateLimit{Requests: 1})
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}) }
	sh := &rateShard{head: -1, tail: -1}
	add := func(i int, t int64) { sh.add(addr(i), l.hash(addr(i)), t, capacity) }
	entry := func(i int) *rateEntry {
		t.Helper()
		e, _ := sh.find(addr(i), l.hash(addr(i)))
		if e < 0 {
			t.Fatalf("client %d not found", i)
		}
		return &sh.entries[e]
	}
	held := func(i int) bool { e, _ := sh.find(addr(i), l.hash(addr(i))); return e >= 0 }
	for i := range capacity { // seen at 0..3; 1 and 3 drained until 100
		add(i, int64(i))
		if i == 1 || i == 3 {
			entry(i).full = 100
		}
	}
	sh.touch(mustFind(t, sh, l, addr(0))) // 0 seen last: list 0 3 2 1, least recent last
	entry(2).full = 100

	// At 50 only 0 has refilled (full at 0): it goes, though seen last.
	add(10, 50)
	if held(0) {
		t.Errorf("the refilled client 0 was kept")
	}
	entry(10).full = 100 // its request spent a token
	// At 60 none has refilled: the least recently seen (1) goes.
	add(11, 60)
	if held(1) {
		t.Errorf("the least recently seen client 1 was kept")
	}
	for _, i := range []int{2, 3, 10, 11} {
		if !held(i) {
			t.Errorf("client %d lost", i)
		}
	}
	if len(sh.entries) != capacity {
		t.Errorf("%d entries, want %d", len(sh.entries), capacity)
	}
	// The list holds every entry once, most recent first: 11 10 3 2.
	var order []netip.Addr
	for i := sh.head; i >= 0; i = sh.entries[i].next {
		order = append(order, sh.entries[i].addr)
	}
	want := []netip.Addr{addr(11), addr(10), addr(3), addr(2)}
	if len(order) != len(want) {
		t.Fatalf("list %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("list %v, want %v", order, want)
		}
	}
}

func mustFind(t *testing.T, sh *rateShard, l *rateLimiter, a netip.Addr) int32 {
	t.Helper()
	e, _ := sh.find(a, l.hash(a))
	if e < 0 {
		t.Fatalf("%s not found", a)
	}
	return e
}

// TestRateShardIndex: the index finds every client the shard holds, and
// none it dropped, through a long churn in a small shard whose clients
// collide in the index (backward-shift deletion keeps probe chains whole).
func TestRateShardIndex(t *testing.T) {
	const capacity = 16
	sh := &rateShard{head: -1, tail: -1}
	for i := range 5000 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		// Few distinct hashes: long probe chains that wrap around.
		h := uint64(i*7) % 5
		if e, _ := sh.find(a, h); e >= 0 {
			t.Fatalf("step %d: %s found before it was added", i, a)
		}
		e := sh.add(a, h, int64(i), capacity)
		if sh.entries[e].addr != a {
			t.Fatalf("step %d: entry %d holds %s, want %s", i, e, sh.entries[e].addr, a)
		}
		n := 0
		for _, s := range sh.slots {
			if s != 0 {
				n++
				ent := &sh.entries[s-1]
				if f, _ := sh.find(ent.addr, ent.hash); f != s-1 {
					t.Fatalf("step %d: %s is in the index but not found", i, ent.addr)
				}
			}
		}
		if n != len(sh.entries) {
			t.Fatalf("step %d: %d index slots for %d entries", i, n, len(sh.entries))
		}
	}
}

// TestRateLimiterBounded: a flood of a million distinct addresses leaves at
// most MaxRateLimitClients entries, and the memory the table holds stays
// flat once it is full.
func TestRateLimiterBounded(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 200_000
	}
	l := newRateLimiter(config.RateLimit{Requests: 10, Per: time.Second})
	now := l.base
	flood := func(from, to int) {
		for i := from; i < to; i++ {
			a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
			l.allow(a, now)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	flood(0, 4*config.MaxRateLimitClients) // full, every shard churned
	before := heap()
	flood(4*config.MaxRateLimitClients, n)
	after := heap()
	if got := l.len(); got > config.MaxRateLimitClients {
		t.Errorf("%d clients held, want at most %d", got, config.MaxRateLimitClients)
	}
	for i := range l.shards {
		if sh := &l.shards[i]; len(sh.entries) > l.perShard || len(sh.slots) > 2*l.perShard {
			t.Fatalf("shard %d: %d entries, %d index slots; at most %d", i, len(sh.entries), len(sh.slots), l.perShard)
		}
	}
	// Some slack for the runtime's own (the test's goroutines, GC).
	if grown := int64(after) - int64(before); grown > 1<<20 {
		t.Errorf("heap grew by %d bytes over %d more distinct clients (from %d to %d)", grown, n-4*config.MaxRateLimitClients, before, after)
	}
	t.Logf("%d clients held after %d distinct; heap %d -> %d bytes", l.len(), n, before, after)

	if raceEnabled {
		return
	}
	// A known client, and a new one in a full table, allocate nothing.
	known := netip.MustParseAddr("192.0.2.1")
	if a := testing.AllocsPerRun(1000, func() { l.allow(known, now) }); a != 0 {
		t.Errorf("a known client's request allocates %v times, want 0", a)
	}
	i := n
	if a := testing.AllocsPerRun(1000, func() { flood(i, i+1); i++ }); a != 0 {
		t.Errorf("a new client in a full table allocates %v times, want 0", a)
	}
}

// TestRateLimiterConcurrent: clients racing on shared entries never get
// more than their tokens (run with -race).
func TestRateLimiterConcurrent(t *testing.T) {
	l := newRateLimiter(config.RateLimit{Requests: 10, Per: time.Hour, Burst: 5})
	now := l.base.Add(time.Second)
	clients := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1")}
	var allowed [3]atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 200 {
				c := (g + i) % len(clients)
				if l.allow(clients[c], now) == 0 {
					allowed[c].Add(1)
				}
				// Other clients churn the table meanwhile.
				l.allow(netip.AddrFrom4([4]byte{10, byte(g), byte(i >> 8), byte(i)}), now)
			}
		})
	}
	wg.Wait()
	for c := range clients {
		if got := allowed[c].Load(); got != 15 {
			t.Errorf("client %s: %d requests allowed, want 15 (requests + burst)", clients[c], got)
		}
	}
}

// TestRateLimitHTTP1: over HTTP/1.1 the request beyond the limit gets 429
// with Retry-After and the connection stays; a reload that keeps the
// setting keeps the counts, one that changes it starts afresh.
func TestRateLimitHTTP1(t *testing.T) {
	backend := rawBackend(t, benchResponse)
	p := startTestServiceWith(t, config.ModeHTTP, func(vs *config.VirtualService) {
		vs.RateLimit = config.RateLimit{Requests: 2, Per: time.Hour}
	}, backend)
	s := p.Services()[0]
	c, err := net.Dial("tcp", s.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get := func(method string) *http.Response {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, method+" / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i := range 2 {
		if resp := get("GET"); resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d, want 200", i, resp.StatusCode)
		}
	}
	resp := get("GET")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1800" || resp.Close {
		t.Errorf("third request: status %d, Retry-After %q, close %v; want 429, 1800 (a token every 30 min), kept",
			resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close)
	}
	if resp := get("HEAD"); resp.StatusCode != 429 || resp.ContentLength <= 0 {
		t.Errorf("HEAD: status %d, Content-Length %d; want 429 with the length of the body not sent", resp.StatusCode, resp.ContentLength)
	}
	if resp := get("GET"); resp.StatusCode != 429 {
		t.Errorf("after HEAD: status %d, want 429 (the connection carried on in step)", resp.StatusCode)
	}
	if st := s.status(); st.RateLimited != 3 {
		t.Errorf("RateLimited = %d, want 3", st.RateLimited)
	}

	cfg := p.cfg
	reload := func(rl config.RateLimit) {
		t.Helper()
		vs := *cfg.VirtualServices[0]
		vs.RateLimit = rl
		next := *cfg
		next.VirtualServices = []*config.VirtualService{&vs}
		if err := p.Apply(&next); err != nil {
			t.Fatal(err)
		}
	}
	reload(config.RateLimit{Requests: 2, Per: time.Hour})
	if resp := get("GET"); resp.StatusCode != 429 {
		t.Errorf("after a reload keeping rate_limit: status %d, want 429 (counts kept)", resp.StatusCode)
	}
	reload(config.RateLimit{Requests: 3, Per: time.Hour})
	if resp := get("GET"); resp.StatusCode != 200 {
		t.Errorf("after a reload changing rate_limit: status %d, want 200 (counts afresh)", resp.StatusCode)
	}
	reload(config.RateLimit{})
	for i := range 5 {
		if resp := get("GET"); resp.StatusCode != 200 {
			t.Fatalf("rate_limit off, request %d: status %d", i, resp.StatusCode)
		}
	}
}

// TestRateLimitSharedAcrossFrontEnds: HTTP/1.1, HTTP/2 and HTTP/3 requests
// of one client spend the same tokens; each front end's 429 has
// Retry-After.
func TestRateLimitSharedAcrossFrontEnds(t *testing.T) {
	backend := httpBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	e := startH2(t, withH3(func(vs *config.VirtualService) {
		vs.RateLimit = config.RateLimit{Requests: 3, Per: time.Hour}
	}), backend)
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.pki.Pool()}, ForceAttemptHTTP2: false}}
	t.Cleanup(h1.CloseIdleConnections)
	h2, h3 := e.client(), e.h3client(nil)
	var got []string
	for _, c := range []*http.Client{h1, h2, h3, h3, h2, h1} {
		resp, err := c.Get(e.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got = append(got, resp.Proto+" "+resp.Status[:3]+" "+resp.Header.Get("Retry-After"))
	}
	want := "HTTP/1.1 200 |HTTP/2.0 200 |HTTP/3.0 200 |HTTP/3.0 429 1200|HTTP/2.0 429 1200|HTTP/1.1 429 1200"
	if strings.Join(got, "|") != want {
		t.Errorf("answers %q, want %q", strings.Join(got, "|"), want)
	}
	lines := e.waitAccess(6)
	for _, l := range lines[3:] {
		if m := l.ContextMap(); m["status"] != int64(429) || m["error"] != rateLimitedReason || m["real_server"] != "-" {
			t.Errorf("access log of a refused request: %v", m)
		}
	}
}
