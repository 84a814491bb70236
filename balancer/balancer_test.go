package balancer

import (
	"math"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// servers returns up servers named a, b, c, ... with the given weights and no
// max_conns.
func servers(weights ...int) []*Server {
	out := make([]*Server, len(weights))
	for i, w := range weights {
		out[i] = NewServer(string(rune('a'+i)), "10.0.0."+strconv.Itoa(i+1)+":80", w, 0)
	}
	return out
}

// names maps servers to their names; nil becomes "-".
func names(ss []*Server) string {
	var b strings.Builder
	for _, s := range ss {
		if s == nil {
			b.WriteByte('-')
			continue
		}
		b.WriteString(s.Name)
	}
	return b.String()
}

// waitFor polls cond until it holds. It is how tests wait for another
// goroutine to reach a state (say, to join the queue) without sleeping for a
// guessed duration.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

func TestTried(t *testing.T) {
	ss := servers(1, 1, 1, 1, 1, 1, 1)
	tests := []struct {
		name    string
		add     []int // indexes into ss, in order
		wantLen int
	}{
		{name: "empty", add: nil, wantLen: 0},
		{name: "one", add: []int{2}, wantLen: 1},
		{name: "duplicate", add: []int{2, 2, 2}, wantLen: 1},
		{name: "inline capacity", add: []int{0, 1, 2, 3}, wantLen: 4},
		{name: "spills", add: []int{0, 1, 2, 3, 4, 5}, wantLen: 6},
		{name: "duplicate after spill", add: []int{0, 1, 2, 3, 4, 5, 5, 0}, wantLen: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Tried
			in := map[*Server]bool{}
			for _, i := range tt.add {
				tr.Add(ss[i])
				in[ss[i]] = true
			}
			if got := tr.Len(); got != tt.wantLen {
				t.Errorf("Len() = %d, want %d", got, tt.wantLen)
			}
			for _, s := range ss {
				if got := tr.Has(s); got != in[s] {
					t.Errorf("Has(%s) = %v, want %v", s, got, in[s])
				}
			}
		})
	}
	t.Run("nil", func(t *testing.T) {
		var tr *Tried
		if tr.Has(ss[0]) || tr.Len() != 0 {
			t.Error("nil *Tried is not empty")
		}
	})
	t.Run("no allocation up to four", func(t *testing.T) {
		allocs := testing.AllocsPerRun(100, func() {
			var tr Tried
			for _, s := range ss[:4] {
				tr.Add(s)
			}
			if !tr.Has(ss[3]) {
				t.Fatal("lost an entry")
			}
		})
		if allocs != 0 {
			t.Errorf("%v allocs, want 0", allocs)
		}
	})
}

func TestServerSlots(t *testing.T) {
	tests := []struct {
		name     string
		maxConns int
		acquire  int  // tryAcquire calls
		wantOK   int  // of which succeed
		wantFull bool // after them
	}{
		{name: "unlimited", maxConns: 0, acquire: 100, wantOK: 100},
		{name: "negative is unlimited", maxConns: -3, acquire: 10, wantOK: 10},
		{name: "under limit", maxConns: 5, acquire: 3, wantOK: 3},
		{name: "at limit", maxConns: 5, acquire: 5, wantOK: 5, wantFull: true},
		{name: "over limit", maxConns: 2, acquire: 7, wantOK: 2, wantFull: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewServer("a", "", 1, tt.maxConns)
			ok := 0
			for range tt.acquire {
				if s.tryAcquire() {
					ok++
				}
			}
			if ok != tt.wantOK || s.Active() != int64(tt.wantOK) {
				t.Errorf("%d acquired, Active %d; want %d", ok, s.Active(), tt.wantOK)
			}
			if got := s.full(); got != tt.wantFull {
				t.Errorf("full() = %v, want %v", got, tt.wantFull)
			}
			for range ok {
				s.release()
			}
			if s.Active() != 0 {
				t.Errorf("Active %d after releasing all, want 0", s.Active())
			}
		})
	}
}

func TestServerSetters(t *testing.T) {
	tests := []struct {
		name          string
		set           func(*Server)
		wantWeight    int
		wantMaxConns  int64
		wantAvailable bool
	}{
		{name: "new", set: func(*Server) {}, wantWeight: 1, wantMaxConns: 0, wantAvailable: true},
		{name: "weight", set: func(s *Server) { s.SetWeight(7) }, wantWeight: 7, wantAvailable: true},
		{name: "weight zero", set: func(s *Server) { s.SetWeight(0) }, wantWeight: 0},
		{name: "negative weight", set: func(s *Server) { s.SetWeight(-4) }, wantWeight: 0},
		{name: "huge weight clamps", set: func(s *Server) { s.SetWeight(math.MaxInt32 + 10) }, wantWeight: math.MaxInt32, wantAvailable: true},
		{name: "max_conns", set: func(s *Server) { s.SetMaxConns(9) }, wantWeight: 1, wantMaxConns: 9, wantAvailable: true},
		{name: "negative max_conns", set: func(s *Server) { s.SetMaxConns(-1) }, wantWeight: 1, wantMaxConns: 0, wantAvailable: true},
		{name: "down", set: func(s *Server) { s.SetDown(true) }, wantWeight: 1},
		{name: "down then up", set: func(s *Server) { s.SetDown(true); s.SetDown(false) }, wantWeight: 1, wantAvailable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewServer("a", "", 1, 0)
			tt.set(s)
			if s.Weight() != tt.wantWeight || s.MaxConns() != tt.wantMaxConns || s.Available() != tt.wantAvailable {
				t.Errorf("weight %d, max_conns %d, available %v; want %d, %d, %v",
					s.Weight(), s.MaxConns(), s.Available(), tt.wantWeight, tt.wantMaxConns, tt.wantAvailable)
			}
		})
	}
}

func TestReleaseWithoutAcquirePanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "without a matching acquire") {
			t.Errorf("recover() = %v, want a release panic", r)
		}
	}()
	NewServer("a", "", 1, 0).release()
}

func TestRegistry(t *testing.T) {
	want := []string{"first", "header_hash", "least_conn", "random_two", "rdp_cookie", "round_robin",
		"source_hash", "uri_hash", "weighted_least_conn", "weighted_round_robin"}
	if got := Names(); !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	tests := []struct {
		name    string
		keyword string
		keyed   bool // a KeyScheduler
		wantErr string
	}{
		{name: "round_robin", keyword: "round_robin"},
		{name: "weighted_round_robin", keyword: "weighted_round_robin"},
		{name: "least_conn", keyword: "least_conn"},
		{name: "weighted_least_conn", keyword: "weighted_least_conn"},
		{name: "source_hash", keyword: "source_hash", keyed: true},
		{name: "uri_hash", keyword: "uri_hash", keyed: true},
		{name: "header_hash", keyword: "header_hash", keyed: true},
		{name: "rdp_cookie", keyword: "rdp_cookie", keyed: true},
		{name: "random_two", keyword: "random_two"},
		{name: "first", keyword: "first"},
		{name: "unknown", keyword: "random",
			wantErr: `unknown scheduler "random" (known: [first header_hash least_conn random_two rdp_cookie round_robin source_hash uri_hash weighted_least_conn weighted_round_robin])`},
		{name: "case matters", keyword: "Round_Robin",
			wantErr: `unknown scheduler "Round_Robin" (known: [first header_hash least_conn random_two rdp_cookie round_robin source_hash uri_hash weighted_least_conn weighted_round_robin])`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.keyword)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("New(%q) error = %v, want %q", tt.keyword, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%q): %v", tt.keyword, err)
			}
			if s.String() != tt.keyword {
				t.Errorf("String() = %q, want %q", s.String(), tt.keyword)
			}
			if _, ok := s.(KeyScheduler); ok != tt.keyed {
				t.Errorf("is a KeyScheduler: %v, want %v", ok, tt.keyed)
			}
			if s2, _ := New(tt.keyword); s2 == s {
				t.Error("New returned a shared scheduler; each pool needs its own")
			}
		})
	}
}
