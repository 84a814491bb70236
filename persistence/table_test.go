package persistence

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for a Table's now field.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
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

func newTestTable[K comparable](max int, ttl time.Duration) (*Table[K], *fakeClock) {
	clk := newFakeClock()
	t := NewTable[K](max, ttl)
	t.now = clk.Now
	return t, clk
}

// checkInvariants verifies every shard's LRU list, hash index, free list
// and the table's count against each other.
func checkInvariants[K comparable](t *testing.T, tb *Table[K]) {
	t.Helper()
	total := 0
	for i := range tb.shards {
		s := &tb.shards[i]
		s.mu.Lock()
		listed := make(map[uint32]bool)
		var prev uint32
		for ref := s.head; ref != 0; ref = s.at(ref).next {
			if listed[ref] || ref > s.high {
				t.Fatalf("shard %d: LRU list loops or leaves the arena at ref %d", i, ref)
			}
			listed[ref] = true
			e := s.at(ref)
			if e.prev != prev {
				t.Errorf("shard %d: entry %v: prev is %d, want %d", i, e.key, e.prev, prev)
			}
			h := tb.hash(e.key)
			if h>>(64-shardBits) != uint64(i) {
				t.Errorf("shard %d: entry %v belongs to shard %d", i, e.key, h>>(64-shardBits))
			}
			if _, r := s.lookup(e.key, uint32(h)); r != ref {
				t.Errorf("shard %d: entry %v (ref %d) indexed as ref %d", i, e.key, ref, r)
			}
			prev = ref
		}
		if s.tail != prev {
			t.Errorf("shard %d: tail is %d, the list ends at %d", i, s.tail, prev)
		}
		indexed := 0
		for _, v := range s.slots {
			if v != 0 {
				indexed++
				if !listed[uint32(v)] {
					t.Errorf("shard %d: index slot %#x names an unlisted entry", i, v)
				}
			}
		}
		free := 0
		for ref := s.free; ref != 0 && free <= int(s.high); ref = s.at(ref).next {
			if listed[ref] {
				t.Errorf("shard %d: ref %d both free and listed", i, ref)
			}
			free++
		}
		if len(listed) != s.n || indexed != s.n || free+s.n != int(s.high) || s.high > s.cap {
			t.Errorf("shard %d: %d listed, %d indexed, n %d, %d free, high %d, cap %d",
				i, len(listed), indexed, s.n, free, s.high, s.cap)
		}
		if s.n*4 > len(s.slots)*3 {
			t.Errorf("shard %d: index load %d/%d over 3/4", i, s.n, len(s.slots))
		}
		total += s.n
		s.mu.Unlock()
	}
	if got := tb.Len(); got != total {
		t.Errorf("Len() = %d, shards hold %d", got, total)
	}
}

// shardOf returns the index of k's shard.
func shardOf[K comparable](tb *Table[K], k K) int {
	return int(tb.hash(k) >> (64 - shardBits))
}

// sameShardKeys returns n int keys that all hash to one shard of tb.
func sameShardKeys(tb *Table[int], n int) []int {
	want := shardOf(tb, 0)
	keys := []int{0}
	for k := 1; len(keys) < n; k++ {
		if shardOf(tb, k) == want {
			keys = append(keys, k)
		}
	}
	return keys
}

func TestTableGetPutDelete(t *testing.T) {
	tb, _ := newTestTable[string](100, time.Minute)
	if _, ok := tb.Get("alice"); ok {
		t.Fatal("Get on an empty table found an entry")
	}
	tb.Put("alice", "rs1")
	tb.Put("bob", "rs2")
	tb.Put("alice", "rs3") // update
	tests := []struct {
		name   string
		key    string
		want   string
		wantOK bool
	}{
		{name: "updated", key: "alice", want: "rs3", wantOK: true},
		{name: "inserted", key: "bob", want: "rs2", wantOK: true},
		{name: "absent", key: "carol", wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tb.Get(tt.key)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Get(%q) = %q, %v; want %q, %v", tt.key, got, ok, tt.want, tt.wantOK)
			}
		})
	}
	if got := tb.Len(); got != 2 {
		t.Errorf("Len() = %d, want 2", got)
	}
	tb.Delete("alice")
	tb.Delete("nobody")
	if _, ok := tb.Get("alice"); ok {
		t.Error("Get after Delete found the entry")
	}
	if got := tb.Len(); got != 1 {
		t.Errorf("Len() after Delete = %d, want 1", got)
	}
	checkInvariants(t, tb)
}

func TestTableExpiry(t *testing.T) {
	const ttl = 30 * time.Minute
	tests := []struct {
		name    string
		idle    time.Duration
		refresh bool // a Get halfway through restarts the idle time
		wantOK  bool
	}{
		{name: "fresh", idle: ttl - time.Nanosecond, wantOK: true},
		{name: "idle exactly ttl", idle: ttl, wantOK: false},
		{name: "idle past ttl", idle: 2 * ttl, wantOK: false},
		{name: "refreshed by Get", idle: ttl + ttl/2, refresh: true, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, clk := newTestTable[string](10, ttl)
			tb.Put("k", "rs1")
			if tt.refresh {
				clk.Advance(tt.idle / 2)
				if _, ok := tb.Get("k"); !ok {
					t.Fatal("entry gone halfway")
				}
				clk.Advance(tt.idle - tt.idle/2)
			} else {
				clk.Advance(tt.idle)
			}
			_, ok := tb.Get("k")
			if ok != tt.wantOK {
				t.Errorf("Get after %v idle: ok = %v, want %v", tt.idle, ok, tt.wantOK)
			}
			wantLen := 0
			if tt.wantOK {
				wantLen = 1
			}
			if got := tb.Len(); got != wantLen {
				t.Errorf("Len() = %d, want %d (an expired Get deletes)", got, wantLen)
			}
			checkInvariants(t, tb)
		})
	}
}

func TestTablePutRefreshesExpired(t *testing.T) {
	tb, clk := newTestTable[string](10, time.Minute)
	tb.Put("k", "rs1")
	clk.Advance(2 * time.Minute)
	tb.Put("k", "rs2")
	if got, ok := tb.Get("k"); !ok || got != "rs2" {
		t.Errorf("Get = %q, %v; want rs2, true", got, ok)
	}
}

func TestTableNoTTL(t *testing.T) {
	tb, clk := newTestTable[string](10, 0)
	tb.Put("k", "rs1")
	clk.Advance(100 * 365 * 24 * time.Hour)
	if _, ok := tb.Get("k"); !ok {
		t.Error("entry of a table without timeout expired")
	}
	if n := tb.Sweep(clk.Now()); n != 0 {
		t.Errorf("Sweep removed %d entries of a table without timeout", n)
	}
}

func TestTableSweep(t *testing.T) {
	const ttl = time.Minute
	tb, clk := newTestTable[int](100000, ttl)
	// 3000 old entries in one shard (more than a sweep batch) and 500
	// spread over all shards; then 200 fresh ones.
	for _, k := range sameShardKeys(tb, 3000) {
		tb.Put(k, "old")
	}
	for k := -1; k >= -500; k-- {
		tb.Put(k, "old")
	}
	clk.Advance(ttl / 2)
	for k := 1000000; k < 1000200; k++ {
		tb.Put(k, "new")
	}
	if n := tb.Sweep(clk.Now()); n != 0 {
		t.Fatalf("early Sweep removed %d entries", n)
	}
	clk.Advance(ttl / 2)
	if n := tb.Sweep(clk.Now()); n != 3500 {
		t.Errorf("Sweep removed %d entries, want 3500", n)
	}
	if got := tb.Len(); got != 200 {
		t.Errorf("Len() after Sweep = %d, want 200", got)
	}
	for k := 1000000; k < 1000200; k++ {
		if v, ok := tb.Get(k); !ok || v != "new" {
			t.Fatalf("fresh entry %d lost: %q, %v", k, v, ok)
		}
	}
	checkInvariants(t, tb)
	clk.Advance(ttl)
	if n := tb.Sweep(clk.Now()); n != 200 {
		t.Errorf("final Sweep removed %d entries, want 200", n)
	}
	checkInvariants(t, tb)
	tb.Put(1, "again") // an emptied, reallocated shard still works
	if _, ok := tb.Get(1); !ok {
		t.Error("Put after emptying Sweep lost the entry")
	}
}

func TestTableLRUEviction(t *testing.T) {
	tb, _ := newTestTable[int](3, time.Hour)
	k := sameShardKeys(tb, 5)
	tb.Put(k[0], "a")
	tb.Put(k[1], "b")
	tb.Put(k[2], "c")
	tb.Get(k[0]) // k[1] is now the least recently used
	tb.Put(k[3], "d")
	tb.Put(k[2], "c2") // update: no eviction, k[2] most recent
	tb.Put(k[4], "e")  // evicts k[0]
	tests := []struct {
		name   string
		key    int
		wantOK bool
	}{
		{name: "evicted as LRU", key: k[1], wantOK: false},
		{name: "evicted after refresh aged", key: k[0], wantOK: false},
		{name: "updated kept", key: k[2], wantOK: true},
		{name: "newer kept", key: k[3], wantOK: true},
		{name: "newest kept", key: k[4], wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := tb.Get(tt.key); ok != tt.wantOK {
				t.Errorf("Get(%d) ok = %v, want %v", tt.key, ok, tt.wantOK)
			}
		})
	}
	if got := tb.Len(); got != 3 {
		t.Errorf("Len() = %d, want 3", got)
	}
	checkInvariants(t, tb)
}

func TestTableBound(t *testing.T) {
	tests := []struct {
		name string
		max  int
		puts int
	}{
		{name: "one", max: 1, puts: 1000},
		{name: "fewer than shards", max: 10, puts: 1000},
		{name: "many", max: 1000, puts: 20000},
		{name: "not reached", max: 5000, puts: 4000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, _ := newTestTable[int](tt.max, time.Hour)
			for i := 0; i < tt.puts; i++ {
				tb.Put(i, "rs")
				if tb.Len() > tt.max {
					t.Fatalf("after %d puts Len() = %d > max %d", i+1, tb.Len(), tt.max)
				}
			}
			if want := min(tt.max, tt.puts); tb.Len() != want {
				t.Errorf("Len() = %d, want %d", tb.Len(), want)
			}
			if _, ok := tb.Get(tt.puts - 1); !ok {
				t.Error("the last inserted entry was evicted")
			}
			checkInvariants(t, tb)
		})
	}
}

func TestTableDefaultMax(t *testing.T) {
	if got := NewTable[int](0, 0).max; got != DefaultMaxEntries {
		t.Errorf("max = %d, want %d", got, DefaultMaxEntries)
	}
}

func TestTableConcurrent(t *testing.T) {
	const max = 500
	tb, clk := newTestTable[int](max, time.Second)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 5000; i++ {
				k := (i*7 + g*13) % 2000
				switch i % 5 {
				case 0, 1:
					tb.Put(k, fmt.Sprint("rs", g))
				case 2, 3:
					tb.Get(k)
				case 4:
					tb.Delete(k)
				}
				if g == 0 && i%500 == 0 {
					clk.Advance(300 * time.Millisecond)
					tb.Sweep(clk.Now())
				}
			}
		})
	}
	wg.Wait()
	if got := tb.Len(); got > max {
		t.Errorf("Len() = %d > max %d", got, max)
	}
	checkInvariants(t, tb)
}

func TestSourceKey(t *testing.T) {
	tests := []struct {
		name         string
		addr         string
		mask4, mask6 int
		want         string
	}{
		{name: "ipv4 full", addr: "192.0.2.77", mask4: 32, mask6: 64, want: "192.0.2.77"},
		{name: "ipv4 /24", addr: "192.0.2.77", mask4: 24, mask6: 64, want: "192.0.2.0"},
		{name: "ipv4 /20", addr: "192.0.31.77", mask4: 20, mask6: 64, want: "192.0.16.0"},
		{name: "ipv4 mask 0 keeps all", addr: "192.0.2.77", mask4: 0, mask6: 64, want: "192.0.2.77"},
		{name: "ipv4 mask too long keeps all", addr: "192.0.2.77", mask4: 40, mask6: 64, want: "192.0.2.77"},
		{name: "4in6 unmapped then masked", addr: "::ffff:192.0.2.77", mask4: 24, mask6: 64, want: "192.0.2.0"},
		{name: "4in6 unmapped full", addr: "::ffff:192.0.2.77", mask4: 32, mask6: 64, want: "192.0.2.77"},
		{name: "ipv6 /64", addr: "2001:db8:1:2:3:4:5:6", mask4: 32, mask6: 64, want: "2001:db8:1:2::"},
		{name: "ipv6 /48", addr: "2001:db8:1:2:3:4:5:6", mask4: 32, mask6: 48, want: "2001:db8:1::"},
		{name: "ipv6 full", addr: "2001:db8:1:2:3:4:5:6", mask4: 32, mask6: 128, want: "2001:db8:1:2:3:4:5:6"},
		{name: "ipv6 zone dropped", addr: "fe80::1%eth0", mask4: 32, mask6: 128, want: "fe80::1"},
		{name: "ipv6 zone dropped masked", addr: "fe80::1:2:3:4%eth0", mask4: 32, mask6: 64, want: "fe80::"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SourceKey(netip.MustParseAddr(tt.addr), tt.mask4, tt.mask6)
			if want := netip.MustParseAddr(tt.want); got != want {
				t.Errorf("SourceKey(%s, %d, %d) = %v, want %v", tt.addr, tt.mask4, tt.mask6, got, want)
			}
		})
	}
	if got := SourceKey(netip.Addr{}, 24, 64); got.IsValid() {
		t.Errorf("SourceKey(invalid) = %v, want invalid", got)
	}
}

// TestTableMemory1M measures the heap held by 1,000,000 source-IP entries
// pointing at one shared real-server name; the issue bounds it at 200 MiB.
func TestTableMemory1M(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 1,000,000 entries")
	}
	const n = 1000000
	server := "rs-web-01.example.internal" // one shared string, as the proxy stores names
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	tb := NewTable[netip.Addr](n, 30*time.Minute)
	for i := 0; i < n; i++ {
		u := uint32(10<<24 | i)
		tb.Put(netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)}), server)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if tb.Len() != n {
		t.Fatalf("Len() = %d, want %d", tb.Len(), n)
	}
	used := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("1,000,000 IPv4 entries: %.1f MiB heap (%d bytes/entry)", float64(used)/(1<<20), used/n)
	if used > 200<<20 {
		t.Errorf("1,000,000 entries use %.1f MiB, want <= 200 MiB", float64(used)/(1<<20))
	}
	runtime.KeepAlive(tb)
}

// model is an obviously correct stick table with the same per-shard LRU
// policy, to check Table against under random operations.
type model struct {
	tb    *Table[int] // for the shard of a key
	max   int
	ttl   int64
	vals  map[int]modelEntry
	order [numShards][]int // per shard, most recently used first
}

type modelEntry struct {
	server string
	used   int64
}

func (m *model) unlist(k int) {
	o := &m.order[shardOf(m.tb, k)]
	for i, x := range *o {
		if x == k {
			*o = append((*o)[:i], (*o)[i+1:]...)
			return
		}
	}
}

func (m *model) front(k int) {
	m.unlist(k)
	o := &m.order[shardOf(m.tb, k)]
	*o = append([]int{k}, *o...)
}

func (m *model) drop(k int) {
	m.unlist(k)
	delete(m.vals, k)
}

func (m *model) get(k int, now int64) (string, bool) {
	e, ok := m.vals[k]
	if !ok {
		return "", false
	}
	if m.ttl > 0 && now-e.used >= m.ttl {
		m.drop(k)
		return "", false
	}
	m.vals[k] = modelEntry{e.server, now}
	m.front(k)
	return e.server, true
}

func (m *model) put(k int, server string, now int64) {
	if _, ok := m.vals[k]; !ok && len(m.vals) >= m.max {
		own := shardOf(m.tb, k)
		victim := own
		if len(m.order[own]) == 0 {
			victim = -1
			for i := range m.order {
				if i != own && len(m.order[i]) > 0 {
					victim = i
					break
				}
			}
		}
		if victim >= 0 {
			o := m.order[victim]
			m.drop(o[len(o)-1])
		}
	}
	m.vals[k] = modelEntry{server, now}
	m.front(k)
}

func (m *model) sweep(now int64) int {
	n := 0
	for i := range m.order {
		for o := m.order[i]; len(o) > 0 && now-m.vals[o[len(o)-1]].used >= m.ttl; o = m.order[i] {
			m.drop(o[len(o)-1])
			n++
		}
	}
	return n
}

func TestTableMatchesModel(t *testing.T) {
	tests := []struct {
		name string
		max  int
		keys int
		ops  int
	}{
		{name: "tiny bound", max: 5, keys: 40, ops: 20000},
		{name: "bound under shard count", max: 50, keys: 200, ops: 50000},
		{name: "large", max: 3000, keys: 8000, ops: 200000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const ttl = 100 * time.Second
			tb, clk := newTestTable[int](tt.max, ttl)
			m := &model{tb: tb, max: tt.max, ttl: int64(ttl), vals: make(map[int]modelEntry)}
			r := rand.New(rand.NewPCG(uint64(tt.max), 7))
			for op := range tt.ops {
				k := r.IntN(tt.keys)
				now := clk.Now().UnixNano()
				switch x := r.IntN(100); {
				case x < 45:
					server := fmt.Sprint("rs", r.IntN(4))
					tb.Put(k, server)
					m.put(k, server, now)
				case x < 85:
					got, ok := tb.Get(k)
					want, wantOK := m.get(k, now)
					if got != want || ok != wantOK {
						t.Fatalf("op %d: Get(%d) = %q, %v; model %q, %v", op, k, got, ok, want, wantOK)
					}
				case x < 95:
					tb.Delete(k)
					m.drop(k)
				case x < 98:
					clk.Advance(time.Duration(r.IntN(30)) * time.Second)
				default:
					if got, want := tb.Sweep(clk.Now()), m.sweep(now); got != want {
						t.Fatalf("op %d: Sweep removed %d, model %d", op, got, want)
					}
				}
				if tb.Len() != len(m.vals) {
					t.Fatalf("op %d: Len() = %d, model %d", op, tb.Len(), len(m.vals))
				}
				if op%1000 == 0 {
					checkInvariants(t, tb)
					compareOrder(t, tb, m)
				}
			}
			checkInvariants(t, tb)
			compareOrder(t, tb, m)
		})
	}
}

// compareOrder checks that every shard lists the model's keys in the
// model's recency order with the model's values.
func compareOrder(t *testing.T, tb *Table[int], m *model) {
	t.Helper()
	for i := range tb.shards {
		s := &tb.shards[i]
		var got []int
		for ref := s.head; ref != 0; ref = s.at(ref).next {
			e := s.at(ref)
			got = append(got, e.key)
			if want := m.vals[e.key]; e.server != want.server || e.used != want.used {
				t.Fatalf("shard %d key %d: %q@%d, model %q@%d", i, e.key, e.server, e.used, want.server, want.used)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(m.order[i]) {
			t.Fatalf("shard %d order %v, model %v", i, got, m.order[i])
		}
	}
}

// TestShardIndexCollisions drives one shard's index with chosen hashes:
// long runs of keys with the same home slot that wrap around the end of the
// index, then deletions from the middle of runs (backward shift).
func TestShardIndexCollisions(t *testing.T) {
	var s shard[int]
	h32 := func(k int) uint32 {
		// Homes 13..15 of a 16-slot index, so runs wrap to slot 0; the
		// high bits keep keys apart for the comparison shortcut.
		return uint32(k)<<8 | uint32(13+k%3)
	}
	const n = 12 // load 12/16: just under 3/4
	refs := make(map[int]uint32)
	for k := range n {
		ref := s.alloc()
		*s.at(ref) = entry[int]{key: k}
		s.insert(h32(k), ref)
		s.pushFront(ref, s.at(ref))
		refs[k] = ref
	}
	if len(s.slots) != minSlots {
		t.Fatalf("index has %d slots, want %d", len(s.slots), minSlots)
	}
	present := make(map[int]bool)
	for k := range n {
		present[k] = true
	}
	for _, k := range []int{0, 4, 11, 5, 1, 7, 2, 10, 3, 9, 6, 8} {
		slot, ref := s.lookup(k, h32(k))
		if ref != refs[k] {
			t.Fatalf("lookup(%d) = ref %d, want %d", k, ref, refs[k])
		}
		s.remove(slot, ref, s.at(ref))
		delete(present, k)
		for other := range present {
			if _, ref := s.lookup(other, h32(other)); ref != refs[other] {
				t.Fatalf("after removing %d: lookup(%d) = ref %d, want %d", k, other, ref, refs[other])
			}
		}
		if _, ref := s.lookup(k, h32(k)); ref != 0 {
			t.Fatalf("removed key %d still found", k)
		}
	}
	for i, v := range s.slots {
		if v != 0 {
			t.Errorf("slot %d not emptied: %#x", i, v)
		}
	}
}

// TestTableAllocs pins the hot paths at zero allocations: lookups, updates
// of an existing key, and insertions into a full table (which recycle the
// evicted entry).
func TestTableAllocs(t *testing.T) {
	keys := make([]netip.Addr, 4096)
	for i := range keys {
		keys[i] = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
	}
	tb := NewTable[netip.Addr](1024, time.Hour)
	for _, k := range keys {
		tb.Put(k, "rs1")
	}
	users := NewTable[string](10, time.Hour)
	users.Put("alice", "rs1")
	i := 0
	next := func() netip.Addr { i = (i + 1) % len(keys); return keys[i] }
	tests := []struct {
		name string
		f    func()
	}{
		{name: "Get hit or miss", f: func() { tb.Get(next()) }},
		{name: "Put existing", f: func() { k := next(); tb.Put(k, "rs2"); tb.Put(k, "rs2") }},
		{name: "Put evicting", f: func() { tb.Put(next(), "rs3") }},
		{name: "Delete", f: func() { tb.Delete(next()) }},
		{name: "Get string key", f: func() { users.Get("alice") }},
		{name: "SourceKey", f: func() { SourceKey(next(), 24, 64) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tt.f); n != 0 {
				t.Errorf("%v allocations per run, want 0", n)
			}
		})
	}
}
