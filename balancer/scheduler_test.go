package balancer

import (
	"strconv"
	"strings"
	"testing"
)

// pick makes n Picks on a fresh scheduler of the given kind; see picks.
func pick(t *testing.T, kind string, ss []*Server, tried *Tried, n int, release bool) []*Server {
	t.Helper()
	s, err := New(kind)
	if err != nil {
		t.Fatal(err)
	}
	s.Update(ss)
	return picks(s, tried, n, release)
}

// picks makes n Picks; with release each slot is returned at once (short
// requests), otherwise kept (long ones).
func picks(s Scheduler, tried *Tried, n int, release bool) []*Server {
	out := make([]*Server, n)
	for i := range out {
		out[i] = s.Pick(tried)
		if release && out[i] != nil {
			out[i].release()
		}
	}
	return out
}

// counts returns "a=10 b=10 c=10" style tallies in server order.
func counts(ss, picked []*Server) string {
	c := map[*Server]int{}
	for _, s := range picked {
		c[s]++
	}
	var b strings.Builder
	for _, s := range ss {
		b.WriteString(s.Name + "=" + strconv.Itoa(c[s]) + " ")
	}
	if c[nil] > 0 {
		b.WriteString("nil=" + strconv.Itoa(c[nil]) + " ")
	}
	return strings.TrimSpace(b.String())
}

func TestDistribution(t *testing.T) {
	tests := []struct {
		name       string
		kind       string
		weights    []int
		picks      int
		release    bool
		wantCounts string
		wantPrefix string // first picks, in order
	}{
		{name: "round_robin equal", kind: "round_robin", weights: []int{1, 1, 1}, picks: 30, release: true,
			wantCounts: "a=10 b=10 c=10", wantPrefix: "abcabcabcabcabcabcabcabcabcabc"},
		{name: "round_robin ignores weights", kind: "round_robin", weights: []int{5, 1, 1}, picks: 30, release: true,
			wantCounts: "a=10 b=10 c=10", wantPrefix: "abcabc"},
		{name: "weighted_round_robin smooth 5 1 1", kind: "weighted_round_robin", weights: []int{5, 1, 1}, picks: 70, release: true,
			wantCounts: "a=50 b=10 c=10", wantPrefix: "aabacaa" + "aabacaa"},
		{name: "weighted_round_robin 3 1", kind: "weighted_round_robin", weights: []int{3, 1}, picks: 40, release: true,
			wantCounts: "a=30 b=10", wantPrefix: "aaba" + "aaba" + "aaba"},
		{name: "weighted_round_robin equal is round robin", kind: "weighted_round_robin", weights: []int{2, 2, 2}, picks: 30, release: true,
			wantCounts: "a=10 b=10 c=10", wantPrefix: "abcabc"},
		{name: "least_conn short requests rotate", kind: "least_conn", weights: []int{1, 1, 1}, picks: 30, release: true,
			wantCounts: "a=10 b=10 c=10", wantPrefix: "abcabcabc"},
		{name: "least_conn long requests fill evenly", kind: "least_conn", weights: []int{5, 1, 1}, picks: 30, release: false,
			wantCounts: "a=10 b=10 c=10", wantPrefix: "abc"},
		{name: "weighted_least_conn short requests rotate", kind: "weighted_least_conn", weights: []int{1, 1, 1}, picks: 30, release: true,
			wantCounts: "a=10 b=10 c=10", wantPrefix: "abcabc"},
		{name: "weighted_least_conn long requests fill by weight", kind: "weighted_least_conn", weights: []int{2, 1}, picks: 30, release: false,
			wantCounts: "a=20 b=10", wantPrefix: "a"},
		{name: "weighted_least_conn 5 1 1", kind: "weighted_least_conn", weights: []int{5, 1, 1}, picks: 70, release: false,
			wantCounts: "a=50 b=10 c=10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := servers(tt.weights...)
			got := pick(t, tt.kind, ss, nil, tt.picks, tt.release)
			if c := counts(ss, got); c != tt.wantCounts {
				t.Errorf("counts %s, want %s", c, tt.wantCounts)
			}
			if seq := names(got); !strings.HasPrefix(seq, tt.wantPrefix) {
				t.Errorf("sequence %s, want prefix %s", seq, tt.wantPrefix)
			}
		})
	}
}

func TestLeastConnPrefersIdle(t *testing.T) {
	for _, kind := range []string{"least_conn", "weighted_least_conn"} {
		t.Run(kind, func(t *testing.T) {
			ss := servers(1, 1, 1)
			for range 4 {
				ss[0].tryAcquire()
			}
			ss[1].tryAcquire()
			// a has 4 in flight, b 1, c 0: seven picks bring b and c up
			// to a's 4, c first (it alone is idle), then b and c in turn.
			got := pick(t, kind, ss, nil, 7, false)
			if c := counts(ss, got); c != "a=0 b=3 c=4" {
				t.Errorf("counts %s, want a=0 b=3 c=4 (sequence %s)", c, names(got))
			}
			if names(got)[0] != 'c' {
				t.Errorf("first pick %s, want c", names(got))
			}
		})
	}
}

// TestSkips covers the servers every scheduler must pass over. Each case
// builds a, b, c, lets setup disable some, and lists who may still be picked.
func TestSkips(t *testing.T) {
	tests := []struct {
		name string
		// setup runs before (pre) or after (post) Update; post checks
		// that Pick re-reads state the snapshot has not caught up with.
		pre, post func(ss []*Server, tried *Tried)
		want      string // servers that must share the picks evenly; "" = nil only
	}{
		{name: "down before update", pre: func(ss []*Server, _ *Tried) { ss[1].SetDown(true) }, want: "ac"},
		{name: "down after update", post: func(ss []*Server, _ *Tried) { ss[1].SetDown(true) }, want: "ac"},
		{name: "weight 0 before update", pre: func(ss []*Server, _ *Tried) { ss[0].SetWeight(0) }, want: "bc"},
		{name: "weight 0 after update", post: func(ss []*Server, _ *Tried) { ss[0].SetWeight(0) }, want: "bc"},
		{name: "tried", pre: func(_ []*Server, tr *Tried) { tr.Add(servers(1)[0]) }, want: "abc"}, // a stranger
		{name: "tried one", pre: func(ss []*Server, tr *Tried) { tr.Add(ss[2]) }, want: "ab"},
		{name: "tried two", pre: func(ss []*Server, tr *Tried) { tr.Add(ss[0]); tr.Add(ss[2]) }, want: "b"},
		{name: "full", pre: func(ss []*Server, _ *Tried) { ss[1].SetMaxConns(1); ss[1].tryAcquire() }, want: "ac"},
		{name: "full after update", post: func(ss []*Server, _ *Tried) { ss[0].SetMaxConns(2); ss[0].tryAcquire(); ss[0].tryAcquire() }, want: "bc"},
		{name: "all down", pre: func(ss []*Server, _ *Tried) {
			for _, s := range ss {
				s.SetDown(true)
			}
		}, want: ""},
		{name: "all tried", pre: func(ss []*Server, tr *Tried) {
			for _, s := range ss {
				tr.Add(s)
			}
		}, want: ""},
		{name: "all full", pre: func(ss []*Server, _ *Tried) {
			for _, s := range ss {
				s.SetMaxConns(1)
				s.tryAcquire()
			}
		}, want: ""},
		{name: "mixed", pre: func(ss []*Server, tr *Tried) {
			ss[0].SetDown(true)
			tr.Add(ss[1])
		}, want: "c"},
	}
	for _, kind := range Names() {
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				ss := servers(1, 1, 1)
				var tried Tried
				if tt.pre != nil {
					tt.pre(ss, &tried)
				}
				sched, _ := New(kind)
				sched.Update(ss)
				if tt.post != nil {
					tt.post(ss, &tried)
				}
				got := make([]*Server, 60)
				for i := range got {
					if got[i] = sched.Pick(&tried); got[i] != nil {
						got[i].release()
					}
				}
				checkSpread(t, kind, ss, got, tt.want)
			})
		}
	}
}

// checkSpread checks that short requests (released at once) were picked
// among the servers named in want, as the kind of scheduler spreads them:
// all to the first of them for first; each at least once, at random, for
// random_two; evenly for the rest. An empty want means nil picks only.
func checkSpread(t *testing.T, kind string, ss, picked []*Server, want string) {
	t.Helper()
	n := len(picked)
	var wantCounts strings.Builder
	for _, s := range ss {
		k := 0
		if strings.Contains(want, s.Name) {
			switch kind {
			case "first":
				if s.Name == want[:1] {
					k = n
				}
			case "random_two":
				k = -1 // any number but 0
			default:
				k = n / len(want)
			}
		}
		c := 0
		for _, p := range picked {
			if p == s {
				c++
			}
		}
		if k == -1 && c > 0 {
			k = c
		}
		wantCounts.WriteString(s.Name + "=" + strconv.Itoa(k) + " ")
	}
	if want == "" {
		wantCounts.WriteString("nil=" + strconv.Itoa(n))
	}
	if c, w := counts(ss, picked), strings.TrimSpace(wantCounts.String()); c != w {
		t.Errorf("counts %s, want %s (sequence %s)", c, w, names(picked))
	}
}

func TestPickEmpty(t *testing.T) {
	for _, kind := range Names() {
		t.Run(kind, func(t *testing.T) {
			s, _ := New(kind)
			if got := s.Pick(nil); got != nil {
				t.Errorf("Pick before Update = %s, want nil", got)
			}
			s.Update(nil)
			if got := s.Pick(nil); got != nil {
				t.Errorf("Pick on empty pool = %s, want nil", got)
			}
		})
	}
}

func TestUpdateRestoresServer(t *testing.T) {
	for _, kind := range Names() {
		t.Run(kind, func(t *testing.T) {
			ss := servers(1, 1)
			ss[1].SetDown(true)
			s, _ := New(kind)
			s.Update(ss)
			if got := picks(s, nil, 4, true); names(got) != "aaaa" {
				t.Fatalf("with b down: %s, want aaaa", names(got))
			}
			ss[1].SetDown(false)
			if got := picks(s, nil, 4, true); names(got) != "aaaa" {
				t.Fatalf("b up, no Update yet: %s, want aaaa", names(got))
			}
			s.Update(ss)
			checkSpread(t, kind, ss, picks(s, nil, 60, true), "ab")
		})
	}
}
