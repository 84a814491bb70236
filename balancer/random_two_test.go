package balancer

import (
	"strconv"
	"testing"
)

// seqRand returns a reproducible random source for RandomTwo: mix64 of a
// counter (splitmix64).
func seqRand(seed uint64) func() uint64 {
	return func() uint64 {
		seed += hashK1
		return mix64(seed)
	}
}

func newRandomTwo(ss []*Server, seed uint64) *RandomTwo {
	r := &RandomTwo{rand: seqRand(seed)}
	r.Update(ss)
	return r
}

// TestRandomTwoPrefersLessLoaded checks the choice between the two draws.
func TestRandomTwoPrefersLessLoaded(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		active  []int // in flight before the picks
		picks   int
		release bool
		check   func(t *testing.T, ss []*Server, c map[*Server]int)
	}{
		{name: "loaded server avoided", weights: []int{1, 1, 1, 1, 1}, active: []int{0, 0, 9, 0, 0},
			picks: 1000, release: true, check: func(t *testing.T, ss []*Server, c map[*Server]int) {
				// rs2 is always the more loaded of its pair.
				if c[ss[2]] != 0 {
					t.Errorf("loaded rs2 picked %d times, want 0", c[ss[2]])
				}
			}},
		{name: "two servers is least connections", weights: []int{1, 1}, active: []int{3, 0},
			picks: 3, release: false, check: func(t *testing.T, ss []*Server, c map[*Server]int) {
				if c[ss[1]] != 3 {
					t.Errorf("rs1 (idle) got %d of 3, want all until it catches up", c[ss[1]])
				}
			}},
		{name: "weights: long requests fill 2:1", weights: []int{2, 1}, picks: 300, release: false,
			check: func(t *testing.T, ss []*Server, c map[*Server]int) {
				if c[ss[0]] != 200 || c[ss[1]] != 100 {
					t.Errorf("got %d, %d; want 200, 100", c[ss[0]], c[ss[1]])
				}
			}},
		{name: "weights: busier heavy server wins", weights: []int{3, 1}, active: []int{4, 2},
			picks: 1, release: false, check: func(t *testing.T, ss []*Server, c map[*Server]int) {
				// (4+1)/3 < (2+1)/1
				if c[ss[0]] != 1 {
					t.Errorf("picked rs1, want rs0: its load relative to its weight is lower")
				}
			}},
		{name: "idle servers share evenly", weights: []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, picks: 20000, release: true,
			check: func(t *testing.T, ss []*Server, c map[*Server]int) {
				for _, s := range ss {
					if c[s] < 1700 || c[s] > 2300 {
						t.Errorf("%s got %d of 20000, want about 2000", s, c[s])
					}
				}
			}},
		{name: "long requests stay balanced", weights: []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, picks: 1000, release: false,
			check: func(t *testing.T, ss []*Server, c map[*Server]int) {
				// One random choice would leave the spread about
				// ±30; two choices keep it within a few.
				for _, s := range ss {
					if c[s] < 95 || c[s] > 105 {
						t.Errorf("%s got %d of 1000, want 100 ± 5", s, c[s])
					}
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := rservers(tt.weights...)
			for i, n := range tt.active {
				for range n {
					ss[i].tryAcquire()
				}
			}
			r := newRandomTwo(ss, 42)
			c := map[*Server]int{}
			for _, s := range picks(r, nil, tt.picks, tt.release) {
				if s == nil {
					t.Fatal("nil pick")
				}
				c[s]++
			}
			tt.check(t, ss, c)
		})
	}
}

// TestRandomTwoDrawsDistinct checks the two draws are two different servers
// chosen uniformly: every pair turns up, and none twice as often as the
// average.
func TestRandomTwoDrawsDistinct(t *testing.T) {
	const n = 5
	pairs := map[[2]uint64]int{}
	next := seqRand(7)
	for range 20000 {
		i, j := twoIndexes(next(), n)
		if i == j || i >= n || j >= n {
			t.Fatalf("draws %d, %d", i, j)
		}
		pairs[[2]uint64{i, j}]++
	}
	if len(pairs) != n*(n-1) {
		t.Errorf("%d ordered pairs drawn, want %d", len(pairs), n*(n-1))
	}
	for p, c := range pairs {
		if c < 700 || c > 1300 {
			t.Errorf("pair %v drawn %d times, want about 1000", p, c)
		}
	}
}

// TestRandomTwoFallsBack checks a free server is found when both draws
// cannot take the request.
func TestRandomTwoFallsBack(t *testing.T) {
	for free := range 10 {
		t.Run("rs"+strconv.Itoa(free), func(t *testing.T) {
			ss := rservers(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
			for i, s := range ss {
				s.SetMaxConns(1)
				if i != free {
					s.tryAcquire()
				}
			}
			r := newRandomTwo(ss, uint64(free))
			for range 50 {
				s := r.Pick(nil)
				if s != ss[free] {
					t.Fatalf("Pick = %v, want %s", s, ss[free])
				}
				s.release()
			}
		})
	}
}

// TestRandomTwoDefaultSource checks the runtime source works (the registered
// constructor leaves rand nil).
func TestRandomTwoDefaultSource(t *testing.T) {
	ss := rservers(1, 1, 1, 1)
	r := new(RandomTwo)
	r.Update(ss)
	c := map[*Server]int{}
	for _, s := range picks(r, nil, 4000, true) {
		c[s]++
	}
	for _, s := range ss {
		if c[s] < 800 || c[s] > 1200 {
			t.Errorf("%s got %d of 4000, want about 1000", s, c[s])
		}
	}
}
