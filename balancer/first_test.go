package balancer

import "testing"

func TestFirst(t *testing.T) {
	tests := []struct {
		name     string
		maxConns []int
		setup    func(ss []*Server, tried *Tried)
		picks    int
		release  bool
		want     string // picked, in order; "-" for nil
	}{
		{name: "fills in order up to max_conns", maxConns: []int{2, 2, 2}, picks: 7, want: "aabbcc-"},
		{name: "uneven max_conns", maxConns: []int{1, 3, 2}, picks: 7, want: "abbbcc-"},
		{name: "unlimited first takes all", maxConns: []int{0, 2, 2}, picks: 5, want: "aaaaa"},
		{name: "short requests stay on the first", maxConns: []int{2, 2, 2}, picks: 5, release: true, want: "aaaaa"},
		{name: "down skipped", maxConns: []int{2, 2, 2}, setup: func(ss []*Server, _ *Tried) {
			ss[0].SetDown(true)
		}, picks: 5, want: "bbcc-"},
		{name: "drain skipped", maxConns: []int{2, 2, 2}, setup: func(ss []*Server, _ *Tried) {
			ss[1].SetAdminState(Drain)
		}, picks: 5, want: "aacc-"},
		{name: "weight 0 skipped", maxConns: []int{2, 2, 2}, setup: func(ss []*Server, _ *Tried) {
			ss[0].SetWeight(0)
		}, picks: 5, want: "bbcc-"},
		{name: "tried skipped", maxConns: []int{2, 2, 2}, setup: func(ss []*Server, tried *Tried) {
			tried.Add(ss[0])
		}, picks: 5, want: "bbcc-"},
		{name: "partly busy", maxConns: []int{2, 2, 2}, setup: func(ss []*Server, _ *Tried) {
			ss[0].tryAcquire()
		}, picks: 5, want: "abbcc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := servers(1, 1, 1)
			for i, n := range tt.maxConns {
				ss[i].SetMaxConns(n)
			}
			var tried Tried
			if tt.setup != nil {
				tt.setup(ss, &tried)
			}
			got := pick(t, "first", ss, &tried, tt.picks, tt.release)
			if names(got) != tt.want {
				t.Errorf("picked %s, want %s", names(got), tt.want)
			}
		})
	}
}

// TestFirstMovesBack checks that once the first server has a free slot
// again, it takes the next request.
func TestFirstMovesBack(t *testing.T) {
	ss := servers(1, 1)
	ss[0].SetMaxConns(1)
	f := new(First)
	f.Update(ss)
	a := f.Pick(nil)
	if b := f.Pick(nil); a != ss[0] || b != ss[1] {
		t.Fatalf("picked %s %s, want a b", a, b)
	}
	a.release()
	if s := f.Pick(nil); s != ss[0] {
		t.Errorf("after a freed a slot: %s, want a", s)
	}
}
