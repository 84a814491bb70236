package balancer

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// keyedKinds are the schedulers built on consistentHash.
var keyedKinds = []string{"source_hash", "uri_hash", "header_hash", "rdp_cookie"}

// testKeys are 100,000 keys as the proxy makes them: hashes of strings.
var testKeys = func() []uint64 {
	keys := make([]uint64, 100_000)
	for i := range keys {
		keys[i] = HashString("10." + strconv.Itoa(i>>16) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255))
	}
	return keys
}()

// rservers returns up servers named rs0, rs1, ... with the given weights.
func rservers(weights ...int) []*Server {
	out := make([]*Server, len(weights))
	for i, w := range weights {
		out[i] = NewServer("rs"+strconv.Itoa(i), "10.1.0."+strconv.Itoa(i+1)+":80", w, 0)
	}
	return out
}

func newHash(ss []*Server) *consistentHash {
	c := new(consistentHash)
	c.Update(ss)
	return c
}

// mapping returns the name of the server each test key maps to.
func mapping(c *consistentHash) []string {
	out := make([]string, len(testKeys))
	for i, k := range testKeys {
		if s := c.lookup(k); s != nil {
			out[i] = s.Name
		}
	}
	return out
}

// shares returns each name's share of the mapped keys, in percent.
func shares(m []string) map[string]float64 {
	c := map[string]float64{}
	for _, n := range m {
		c[n] += 100 / float64(len(m))
	}
	return c
}

func TestMaglevEven(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		want    []float64 // percent of keys per server
	}{
		{name: "one", weights: []int{1}, want: []float64{100}},
		{name: "three equal", weights: []int{1, 1, 1}, want: []float64{33.33, 33.33, 33.33}},
		{name: "ten equal", weights: []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
			want: []float64{10, 10, 10, 10, 10, 10, 10, 10, 10, 10}},
		{name: "ten equal heavy", weights: []int{50, 50, 50, 50, 50, 50, 50, 50, 50, 50},
			want: []float64{10, 10, 10, 10, 10, 10, 10, 10, 10, 10}},
		{name: "3 1", weights: []int{3, 1}, want: []float64{75, 25}},
		{name: "1 3", weights: []int{1, 3}, want: []float64{25, 75}},
		{name: "1 2 3 4", weights: []int{1, 2, 3, 4}, want: []float64{10, 20, 30, 40}},
		{name: "skewed", weights: []int{100, 1}, want: []float64{99.01, 0.99}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := rservers(tt.weights...)
			got := shares(mapping(newHash(ss)))
			for i, s := range ss {
				if d := got[s.Name] - tt.want[i]; d < -1 || d > 1 {
					t.Errorf("%s (weight %d) has %.2f%% of keys, want %.2f%% ± 1", s, s.Weight(), got[s.Name], tt.want[i])
				}
			}
		})
	}
}

// TestMaglevDisruption checks the point of consistent hashing: a change of
// servers moves few keys, and mostly only those it must.
func TestMaglevDisruption(t *testing.T) {
	tests := []struct {
		name string
		// change applies to servers rs0..rs9 (weight 1) and returns the
		// pool after.
		change        func(ss []*Server) []*Server
		maxMoved      float64 // percent of all keys
		maxMovedOther float64 // percent of the keys of servers the change leaves alone
	}{
		{name: "remove rs3", change: func(ss []*Server) []*Server {
			return append(ss[:3:3], ss[4:]...)
		}, maxMoved: 12, maxMovedOther: 1},
		{name: "rs3 down", change: func(ss []*Server) []*Server {
			ss[3].SetDown(true)
			return ss
		}, maxMoved: 12, maxMovedOther: 1},
		{name: "rs9 drained", change: func(ss []*Server) []*Server {
			ss[9].SetAdminState(Drain)
			return ss
		}, maxMoved: 12, maxMovedOther: 1},
		{name: "add rs10", change: func(ss []*Server) []*Server {
			return append(ss, NewServer("rs10", "10.1.0.11:80", 1, 0))
		}, maxMoved: 10.5, maxMovedOther: 10.5}, // 1/11 must move to rs10
		{name: "remove two", change: func(ss []*Server) []*Server {
			return append(ss[1:5:5], ss[6:]...)
		}, maxMoved: 22, maxMovedOther: 2},
		{name: "reorder", change: func(ss []*Server) []*Server {
			out := append([]*Server(nil), ss...)
			rand.New(rand.NewPCG(1, 2)).Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
			return out
		}, maxMoved: 0, maxMovedOther: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := rservers(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
			c := newHash(ss)
			before := mapping(c)
			after := tt.change(append([]*Server(nil), ss...))
			c.Update(after)
			still := map[string]bool{}
			for _, s := range after {
				if s.Available() {
					still[s.Name] = true
				}
			}
			moved, other, otherKeys := 0, 0, 0
			for i, n := range mapping(c) {
				if !still[n] {
					t.Fatalf("key %d maps to %s, which is not available", i, n)
				}
				if n != before[i] {
					moved++
				}
				if still[before[i]] {
					otherKeys++
					if n != before[i] {
						other++
					}
				}
			}
			movedPct := 100 * float64(moved) / float64(len(testKeys))
			otherPct := 100 * float64(other) / float64(otherKeys)
			t.Logf("moved %.2f%% of keys; %.2f%% of those whose server stayed", movedPct, otherPct)
			if movedPct > tt.maxMoved {
				t.Errorf("moved %.2f%% of keys, want <= %.1f%%", movedPct, tt.maxMoved)
			}
			if otherPct > tt.maxMovedOther {
				t.Errorf("moved %.2f%% of the keys whose server stayed, want <= %.1f%%", otherPct, tt.maxMovedOther)
			}

			// Undoing the change restores every key.
			for _, s := range ss {
				s.SetDown(false)
				s.SetAdminState(Ready)
			}
			c.Update(ss)
			for i, n := range mapping(c) {
				if n != before[i] {
					t.Fatalf("after undoing: key %d maps to %s, was %s", i, n, before[i])
				}
			}
		})
	}
}

// TestMaglevSameNamesSameTable checks that the table depends on the
// servers' names and weights only: another process (other Server values) or
// another configuration order builds the same table.
func TestMaglevSameNamesSameTable(t *testing.T) {
	ss := rservers(1, 2, 1, 3, 1)
	want := newHash(ss).table.Load()
	for seed := range uint64(5) {
		other := rservers(1, 2, 1, 3, 1) // a different process's servers
		rand.New(rand.NewPCG(seed, 7)).Shuffle(len(other), func(i, j int) { other[i], other[j] = other[j], other[i] })
		got := newHash(other).table.Load()
		if len(got.slots) != len(want.slots) {
			t.Fatalf("order %s: %d slots, want %d", names(other), len(got.slots), len(want.slots))
		}
		for i := range want.slots {
			if g, w := got.servers[got.slots[i]].Name, want.servers[want.slots[i]].Name; g != w {
				t.Fatalf("order %s: slot %d is %s, want %s", names(other), i, g, w)
			}
		}
	}
}

// TestMaglevGolden pins where some keys go. Like TestHashGolden it must never
// need updating: HA pairs on different releases must agree.
func TestMaglevGolden(t *testing.T) {
	c := newHash([]*Server{
		NewServer("web1", "", 1, 0), NewServer("web2", "", 1, 0),
		NewServer("web3", "", 2, 0), NewServer("web4", "", 1, 0),
	})
	tests := []struct{ key, want string }{
		{"10.0.0.1", "web4"},
		{"10.0.0.2", "web3"},
		{"192.168.1.7", "web3"},
		{"/index.html", "web2"},
		{"alice", "web4"},
		{"bob", "web3"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if got := c.lookup(HashString(tt.key)); got.Name != tt.want {
				t.Errorf("%s maps to %s, want %s", tt.key, got, tt.want)
			}
		})
	}
}

func TestMaglevSizes(t *testing.T) {
	for _, m := range maglevSizes {
		for d := uint64(2); d*d <= m; d++ {
			if m%d == 0 {
				t.Errorf("table size %d is divisible by %d", m, d)
				break
			}
		}
	}
	tests := []struct {
		servers int
		want    uint64
	}{
		{0, 65537}, {1, 65537}, {655, 65537}, {656, 131071}, {2000, 262147}, {1 << 30, 16777213},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.servers), func(t *testing.T) {
			if got := maglevSize(tt.servers); got != tt.want {
				t.Errorf("maglevSize(%d) = %d, want %d", tt.servers, got, tt.want)
			}
		})
	}
}

// TestPickKeyFailover checks what PickKey does with keys whose server cannot
// take them before the next Update: another server, always the same one for
// a key, spread by weight over the others; other keys are left alone.
func TestPickKeyFailover(t *testing.T) {
	tests := []struct {
		name  string
		setup func(ss []*Server, tried *Tried) // disables rs2
	}{
		{name: "down", setup: func(ss []*Server, _ *Tried) { ss[2].SetDown(true) }},
		{name: "maintenance", setup: func(ss []*Server, _ *Tried) { ss[2].SetAdminState(Maintenance) }},
		{name: "weight 0", setup: func(ss []*Server, _ *Tried) { ss[2].SetWeight(0) }},
		{name: "tried", setup: func(ss []*Server, tried *Tried) { tried.Add(ss[2]) }},
		{name: "full", setup: func(ss []*Server, _ *Tried) { ss[2].SetMaxConns(1); ss[2].tryAcquire() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := rservers(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
			c := newHash(ss)
			home := mapping(c)
			var tried Tried
			tt.setup(ss, &tried)
			failover := map[string]int{}
			moved := 0
			for i, k := range testKeys[:20000] {
				s := c.PickKey(k, &tried)
				if s == nil {
					t.Fatalf("key %d: nil", i)
				}
				s.release()
				if home[i] != "rs2" {
					if s.Name != home[i] {
						t.Fatalf("key %d moved from %s to %s", i, home[i], s)
					}
					continue
				}
				if s == ss[2] {
					t.Fatalf("key %d stayed on rs2", i)
				}
				moved++
				failover[s.Name]++
				if again := c.PickKey(k, &tried); again != s {
					t.Fatalf("key %d failed over to %s, then to %s", i, s, again)
				} else {
					again.release()
				}
			}
			// rs2's keys spread over the other nine: 1/9 each, none
			// with over twice that.
			if len(failover) != 9 {
				t.Errorf("rs2's keys went to %d servers, want all 9 others: %v", len(failover), failover)
			}
			for n, k := range failover {
				if k > 2*moved/9 {
					t.Errorf("%s took %d of rs2's %d keys, want about %d", n, k, moved, moved/9)
				}
			}
		})
	}
}

// TestPickKeySkips covers the cases with few servers left, where PickKey
// falls back to scanning the servers.
func TestPickKeySkips(t *testing.T) {
	tests := []struct {
		name  string
		setup func(ss []*Server, tried *Tried)
		want  string // the only server that may be picked; "" = nil
	}{
		{name: "one left", setup: func(ss []*Server, _ *Tried) {
			for _, s := range ss[1:] {
				s.SetDown(true)
			}
		}, want: "rs0"},
		{name: "one untried", setup: func(ss []*Server, tried *Tried) {
			for _, s := range ss[:9] {
				tried.Add(s)
			}
		}, want: "rs9"},
		{name: "one free", setup: func(ss []*Server, _ *Tried) {
			for _, s := range ss {
				if s.Name != "rs5" {
					s.SetMaxConns(1)
					s.tryAcquire()
				}
			}
		}, want: "rs5"},
		{name: "all down", setup: func(ss []*Server, _ *Tried) {
			for _, s := range ss {
				s.SetDown(true)
			}
		}},
		{name: "all tried", setup: func(ss []*Server, tried *Tried) {
			for _, s := range ss {
				tried.Add(s)
			}
		}},
		{name: "all full", setup: func(ss []*Server, _ *Tried) {
			for _, s := range ss {
				s.SetMaxConns(1)
				s.tryAcquire()
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := rservers(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
			c := newHash(ss)
			var tried Tried
			tt.setup(ss, &tried)
			for i, k := range testKeys[:1000] {
				s := c.PickKey(k, &tried)
				if (s == nil && tt.want != "") || (s != nil && s.Name != tt.want) {
					t.Fatalf("key %d: PickKey = %v, want %q", i, s, tt.want)
				}
				if s != nil {
					s.release()
				}
			}
		})
	}
	t.Run("empty", func(t *testing.T) {
		c := new(consistentHash)
		if s := c.PickKey(1, nil); s != nil {
			t.Errorf("before Update: %v", s)
		}
		c.Update(nil)
		if s := c.PickKey(1, nil); s != nil {
			t.Errorf("no servers: %v", s)
		}
	})
}

// TestKeyedSchedulers checks each keyed scheduler maps equal keys to the
// same server, through the same table, and balances requests without a key
// by smooth weighted round robin.
func TestKeyedSchedulers(t *testing.T) {
	var first []string // the mapping of the first kind
	for _, kind := range keyedKinds {
		t.Run(kind, func(t *testing.T) {
			ss := rservers(5, 1, 1)
			sched, err := New(kind)
			if err != nil {
				t.Fatal(err)
			}
			ks := sched.(KeyScheduler)
			ks.Update(ss)
			var got []string
			for i := range 3000 {
				key := HashString("/item/" + strconv.Itoa(i%1000)) // each key three times
				s := ks.PickKey(key, nil)
				s.release()
				got = append(got, s.Name)
				if i >= 1000 && s.Name != got[i-1000] {
					t.Fatalf("key %d: %s, earlier %s", i%1000, s, got[i-1000])
				}
			}
			if first == nil {
				first = got
			}
			for i := range got {
				if got[i] != first[i] {
					t.Fatalf("key %d: %s, but %s under %s", i, got[i], first[i], keyedKinds[0])
				}
			}
			if seq := names(picks(ks, nil, 14, true)); seq != "rs0rs0rs1rs0rs2rs0rs0rs0rs0rs1rs0rs2rs0rs0" {
				t.Errorf("Pick sequence %s, want smooth weighted round robin (a a b a c a a)", seq)
			}
		})
	}
}

func TestPickKeyDoesNotAllocate(t *testing.T) {
	ss := rservers(1, 2, 3)
	c := newHash(ss)
	var tried Tried
	tried.Add(ss[1])
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		i++
		s := c.PickKey(testKeys[i], &tried)
		s.release()
	})
	if allocs != 0 {
		t.Errorf("%v allocs per PickKey, want 0", allocs)
	}
}
