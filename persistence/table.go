// Package persistence holds the pieces persistence is built from, free of
// any wire protocol or proxy state: the stick table that remembers which
// real server a client key belongs to, the signer of inserted cookies and
// the cookie field parsers, and the parser of the RDP X.224 Connection
// Request that carries a Terminal Services routing token or user name.
//
// Stick tables store real-server names, never *balancer.Server pointers, so
// an entry survives a config reload that rebuilds the pools: the proxy looks
// the name up in the current pool and reschedules when it is gone, down or in
// maintenance.
package persistence

import (
	"hash/maphash"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxEntries bounds a table made with max <= 0, like the config's
// max_entries default.
const DefaultMaxEntries = 1000000

const (
	// shardBits splits a table into 64 shards so that concurrent clients
	// rarely share a lock. The shard is picked by the top bits of the key's
	// hash, the index slot by the low 32 bits.
	shardBits = 6
	numShards = 1 << shardBits

	// sweepBatch bounds how many entries Sweep removes per lock hold, so a
	// sweep of a large table never stalls the request path for long.
	sweepBatch = 1024

	// A shard's entries live in chunks that never move: 8, 16, ... 1024
	// entries, then 1024 each, so a small table stays small and a big one
	// wastes at most one partly used chunk per shard.
	firstChunk   = 8
	smallChunks  = 8                                 // chunks of 8 << 0 .. 8 << 7 entries
	smallEntries = firstChunk * (1<<smallChunks - 1) // entries in the small chunks
	bigChunk     = firstChunk << (smallChunks - 1)   // 1024
	minSlots     = 16                                // smallest index, a power of two
)

// Table is a stick table: it maps a client key (source address, user name,
// cookie value, header value) to the name of a real server. Entries expire
// after being idle for the table's timeout and, beyond the table's bound,
// the least recently used ones are evicted.
//
// The table is split into 64 shards by a hash of the key; each shard has its
// own mutex, hash index and LRU list, so Get, Put and Delete are O(1) and
// never take a table-wide lock. Recency is per shard: at the bound, an
// insertion evicts the least recently used entry of the key's own shard,
// which approximates a global LRU closely for hashed keys. The bound itself
// is global: Len never settles above it.
//
// Expiry is lazy (Get drops an expired entry it finds) plus periodic (the
// proxy calls Sweep). All methods are safe for concurrent use.
//
// Memory: an entry is its key, the server name's string header (the name's
// bytes are shared with the caller's string), its last-use time and two
// 32-bit list links, stored in chunked arrays rather than one allocation
// each; the index is an open-addressing array of 8-byte slots (linear
// probing, load <= 3/4). For netip.Addr keys that is 56 bytes per entry plus
// 11-21 bytes of index, about 75 MiB per million entries, against about
// 140 MiB with a Go map of pointers to list nodes. Like Go maps, a shard
// keeps its memory at its high-water mark; it is released when the shard
// empties (all its entries expire or are deleted).
type Table[K comparable] struct {
	// now returns the current time; tests replace it before using the
	// table. If nil, time.Now.
	now func() time.Time

	ttl   int64 // idle timeout in nanoseconds; <= 0: entries never expire
	max   int64 // bound on the number of entries, > 0
	count atomic.Int64
	seed  maphash.Seed
	// onPut is told of every Put (see SetOnPut); nil: nobody listens, and
	// Put pays one atomic load.
	onPut atomic.Pointer[func(K, string)]

	shards [numShards]shard[K]
}

// shard is one lock's worth of a Table.
//
// Entries are addressed by ref, their arena index + 1, so the zero ref
// means none. The index maps a key to a ref: each non-zero slot holds the
// low 32 bits of the key's hash (to skip most key comparisons and to find a
// slot's home when deleting) above the ref. The LRU list runs from head
// (most recently used) to tail through the entries' prev/next refs; free
// arena entries are chained through next.
type shard[K comparable] struct {
	mu     sync.Mutex
	slots  []uint64     // hash index: 0 empty, else hash32<<32 | ref
	chunks [][]entry[K] // the arena
	cap    uint32       // entries in chunks
	high   uint32       // arena entries handed out (free or live)
	free   uint32       // first free arena entry, 0 if none
	n      int          // live entries
	head   uint32
	tail   uint32
	// Keeps the next shard's mutex off this one's cache line.
	_ [64]byte
}

type entry[K comparable] struct {
	key        K
	server     string
	used       int64 // last use, unix nanoseconds
	prev, next uint32
}

// NewTable returns an empty table bounded to max entries (if max <= 0,
// DefaultMaxEntries) whose entries expire after ttl without use (if ttl <= 0,
// they never expire and only the bound removes them).
func NewTable[K comparable](max int, ttl time.Duration) *Table[K] {
	if max <= 0 {
		max = DefaultMaxEntries
	}
	return &Table[K]{ttl: int64(ttl), max: int64(max), seed: maphash.MakeSeed()}
}

// Get returns the real server stored for k and makes it the most recently
// used entry, restarting its idle time. An expired entry is deleted and
// reported as absent.
func (t *Table[K]) Get(k K) (string, bool) {
	h := t.hash(k)
	s := &t.shards[h>>(64-shardBits)]
	now := t.clock()
	s.mu.Lock()
	slot, ref := s.lookup(k, uint32(h))
	if ref == 0 {
		s.mu.Unlock()
		return "", false
	}
	e := s.at(ref)
	if t.expired(e, now) {
		s.remove(slot, ref, e)
		s.mu.Unlock()
		t.count.Add(-1)
		return "", false
	}
	e.used = now
	s.toFront(ref, e)
	server := e.server
	s.mu.Unlock()
	return server, true
}

// Put stores server for k, replacing any previous value, as the most
// recently used entry. Inserting beyond the bound evicts the least recently
// used entry of k's shard. The OnPut hook, if any, is told afterwards.
func (t *Table[K]) Put(k K, server string) {
	t.store(k, server, t.clock())
	if f := t.onPut.Load(); f != nil {
		(*f)(k, server)
	}
}

// Restore stores server for k as last used at used, as when an HA peer
// replicates its entry; unlike Put it does not tell the OnPut hook, so two
// peers never echo entries back and forth. An entry already expired at used
// is not stored (false). The entry goes to the front of its shard's LRU
// list even if it is older than others there, so, as after a wall-clock
// step, Sweep may find it only after those; Get never returns it expired.
func (t *Table[K]) Restore(k K, server string, used time.Time) bool {
	u := used.UnixNano()
	if t.ttl > 0 && t.clock()-u >= t.ttl {
		return false
	}
	t.store(k, server, u)
	return true
}

// SetOnPut makes f the hook told of every Put, after the entry is stored
// and outside the table's locks; nil removes it. f runs on the request
// path, so it must be quick and must not block (the proxy's hook sends to a
// bounded channel and drops when it is full). Safe to call at any time.
func (t *Table[K]) SetOnPut(f func(k K, server string)) {
	if f == nil {
		t.onPut.Store(nil)
		return
	}
	t.onPut.Store(&f)
}

// Range calls f for every entry not expired at the time its shard is read,
// with its last use, shard by shard. Each shard is copied under its lock
// and f runs outside it, so f may use the table; entries changed meanwhile
// may be seen in their old or new state. f returning false stops the walk.
func (t *Table[K]) Range(f func(k K, server string, used time.Time) bool) {
	now := t.clock()
	type item struct {
		key    K
		server string
		used   int64
	}
	var buf []item
	for i := range t.shards {
		s := &t.shards[i]
		buf = buf[:0]
		s.mu.Lock()
		for ref := s.head; ref != 0; {
			e := s.at(ref)
			if !t.expired(e, now) {
				buf = append(buf, item{e.key, e.server, e.used})
			}
			ref = e.next
		}
		s.mu.Unlock()
		for _, it := range buf {
			if !f(it.key, it.server, time.Unix(0, it.used)) {
				return
			}
		}
	}
}

// store puts server for k with last use used. See Put.
func (t *Table[K]) store(k K, server string, used int64) {
	h := t.hash(k)
	s := &t.shards[h>>(64-shardBits)]
	s.mu.Lock()
	if _, ref := s.lookup(k, uint32(h)); ref != 0 {
		e := s.at(ref)
		e.server = server
		e.used = used
		s.toFront(ref, e)
		s.mu.Unlock()
		return
	}
	if t.count.Add(1) > t.max {
		// Full: drop this shard's least recently used entry; the insertion
		// below reuses its arena entry. If this shard is empty (only
		// possible with a tiny bound), take one from another shard
		// instead; TryLock avoids lock-order deadlocks and, if every other
		// shard is busy or empty, the table rather holds one entry over its
		// bound than waits here.
		if s.tail != 0 {
			t.removeRef(s, s.tail)
			t.count.Add(-1)
		} else {
			t.evictElsewhere(s)
		}
	}
	ref := s.alloc()
	e := s.at(ref)
	*e = entry[K]{key: k, server: server, used: used}
	s.insert(uint32(h), ref)
	s.pushFront(ref, e)
	s.mu.Unlock()
}

// evictElsewhere removes the least recently used entry of the first other
// shard it can lock without waiting. The caller holds own's lock.
func (t *Table[K]) evictElsewhere(own *shard[K]) {
	for i := range t.shards {
		o := &t.shards[i]
		if o == own || !o.mu.TryLock() {
			continue
		}
		if o.tail == 0 {
			o.mu.Unlock()
			continue
		}
		t.removeRef(o, o.tail)
		o.mu.Unlock()
		t.count.Add(-1)
		return
	}
}

// Delete removes k's entry, if any.
func (t *Table[K]) Delete(k K) {
	h := t.hash(k)
	s := &t.shards[h>>(64-shardBits)]
	s.mu.Lock()
	slot, ref := s.lookup(k, uint32(h))
	if ref != 0 {
		s.remove(slot, ref, s.at(ref))
	}
	s.mu.Unlock()
	if ref != 0 {
		t.count.Add(-1)
	}
}

// Len returns the number of entries, including expired ones that no Get or
// Sweep has removed yet.
func (t *Table[K]) Len() int {
	return int(t.count.Load())
}

// Sweep removes the entries idle for the table's timeout or longer at now
// and returns how many it removed. The proxy calls it periodically; between
// sweeps Get still never returns an expired entry. Each shard is walked from
// its least recently used end and only as far as entries are expired, so a
// sweep costs O(expired entries + shards). If the wall clock stepped back,
// an expired entry may hide behind a fresher one until a later sweep or Get.
func (t *Table[K]) Sweep(now time.Time) int {
	if t.ttl <= 0 {
		return 0
	}
	n := now.UnixNano()
	removed := 0
	for i := range t.shards {
		s := &t.shards[i]
		for {
			s.mu.Lock()
			batch := 0
			for batch < sweepBatch && s.tail != 0 && t.expired(s.at(s.tail), n) {
				t.removeRef(s, s.tail)
				batch++
			}
			if s.n == 0 && batch > 0 {
				s.reset() // give an emptied shard's memory back
			}
			s.mu.Unlock()
			t.count.Add(int64(-batch))
			removed += batch
			if batch < sweepBatch {
				break
			}
		}
	}
	return removed
}

func (t *Table[K]) hash(k K) uint64 {
	return maphash.Comparable(t.seed, k)
}

func (t *Table[K]) clock() int64 {
	if t.now != nil {
		return t.now().UnixNano()
	}
	return time.Now().UnixNano()
}

// expired reports whether e has been idle for the timeout or longer at now.
// Written as a difference so a huge timeout cannot overflow.
func (t *Table[K]) expired(e *entry[K], now int64) bool {
	return t.ttl > 0 && now-e.used >= t.ttl
}

// removeRef removes the entry ref of s, whose index slot is found again
// from its key's hash. The caller holds s.mu and adjusts the count.
func (t *Table[K]) removeRef(s *shard[K], ref uint32) {
	e := s.at(ref)
	h32 := uint32(t.hash(e.key))
	mask := uint32(len(s.slots) - 1)
	i := h32 & mask
	for uint32(s.slots[i]) != ref {
		i = (i + 1) & mask
	}
	s.remove(int(i), ref, e)
}

// reset empties s and releases its memory. The caller holds s.mu.
func (s *shard[K]) reset() {
	s.slots, s.chunks = nil, nil
	s.cap, s.high, s.free, s.n, s.head, s.tail = 0, 0, 0, 0, 0, 0
}

// at returns the arena entry of ref (non-zero).
func (s *shard[K]) at(ref uint32) *entry[K] {
	i := ref - 1
	if i < smallEntries {
		c := bits.Len32(i/firstChunk+1) - 1
		return &s.chunks[c][i-firstChunk*(1<<c-1)]
	}
	i -= smallEntries
	return &s.chunks[smallChunks+i/bigChunk][i%bigChunk]
}

// alloc returns a free arena entry, growing the arena by a chunk if needed.
func (s *shard[K]) alloc() uint32 {
	if ref := s.free; ref != 0 {
		s.free = s.at(ref).next
		return ref
	}
	if s.high == s.cap {
		size := uint32(bigChunk)
		if c := len(s.chunks); c < smallChunks {
			size = firstChunk << c
		}
		s.chunks = append(s.chunks, make([]entry[K], size))
		s.cap += size
	}
	s.high++
	return s.high
}

// lookup returns the index slot and ref of k, whose hash's low 32 bits are
// h32, or ref 0 if k is absent.
func (s *shard[K]) lookup(k K, h32 uint32) (int, uint32) {
	if len(s.slots) == 0 {
		return 0, 0
	}
	mask := uint32(len(s.slots) - 1)
	for i := h32 & mask; ; i = (i + 1) & mask {
		v := s.slots[i]
		if v == 0 {
			return 0, 0 // load < 1: every probe sequence reaches an empty slot
		}
		if uint32(v>>32) == h32 && s.at(uint32(v)).key == k {
			return int(i), uint32(v)
		}
	}
}

// insert indexes ref under h32 (its key is absent), growing the index to
// keep its load at most 3/4.
func (s *shard[K]) insert(h32, ref uint32) {
	if (s.n+1)*4 > len(s.slots)*3 {
		s.resize(max(minSlots, 2*len(s.slots)))
	}
	s.place(uint64(h32)<<32 | uint64(ref))
	s.n++
}

func (s *shard[K]) place(v uint64) {
	mask := uint32(len(s.slots) - 1)
	i := uint32(v>>32) & mask
	for s.slots[i] != 0 {
		i = (i + 1) & mask
	}
	s.slots[i] = v
}

func (s *shard[K]) resize(size int) {
	old := s.slots
	s.slots = make([]uint64, size)
	for _, v := range old {
		if v != 0 {
			s.place(v)
		}
	}
}

// remove deletes entry ref (e), indexed at slot: backward-shift deletion
// (no tombstones) closes the gap so probe sequences stay unbroken.
func (s *shard[K]) remove(slot int, ref uint32, e *entry[K]) {
	mask := uint32(len(s.slots) - 1)
	i := uint32(slot)
	for j := (i + 1) & mask; s.slots[j] != 0; j = (j + 1) & mask {
		home := uint32(s.slots[j]>>32) & mask
		// The entry at j may fill the hole at i unless its home lies
		// cyclically in (i, j].
		if (j-home)&mask >= (j-i)&mask {
			s.slots[i] = s.slots[j]
			i = j
		}
	}
	s.slots[i] = 0
	s.n--
	s.unlink(e)
	*e = entry[K]{next: s.free} // drop the key and name for the GC
	s.free = ref
}

func (s *shard[K]) unlink(e *entry[K]) {
	if e.prev != 0 {
		s.at(e.prev).next = e.next
	} else {
		s.head = e.next
	}
	if e.next != 0 {
		s.at(e.next).prev = e.prev
	} else {
		s.tail = e.prev
	}
}

func (s *shard[K]) pushFront(ref uint32, e *entry[K]) {
	e.prev = 0
	e.next = s.head
	if s.head != 0 {
		s.at(s.head).prev = ref
	} else {
		s.tail = ref
	}
	s.head = ref
}

func (s *shard[K]) toFront(ref uint32, e *entry[K]) {
	if s.head == ref {
		return
	}
	s.unlink(e)
	s.pushFront(ref, e)
}

// SourceKey returns the stick-table key of a client address for source_ip
// persistence: an IPv4-mapped IPv6 address is unmapped first (a dual-stack
// listener sees IPv4 clients as ::ffff:a.b.c.d), then only the first mask4
// (IPv4) or mask6 (IPv6) bits are kept, so a whole subnet shares one entry.
// A mask outside 1..32 (1..128) keeps the full address; the IPv6 zone is
// always dropped. The invalid Addr is returned unchanged.
func SourceKey(a netip.Addr, mask4, mask6 int) netip.Addr {
	if !a.IsValid() {
		return a
	}
	a = a.Unmap().WithZone("")
	bits := mask6
	if a.Is4() {
		bits = mask4
	}
	if bits <= 0 || bits >= a.BitLen() {
		return a
	}
	p, err := a.Prefix(bits)
	if err != nil { // unreachable: bits is in range and the zone is gone
		return a
	}
	return p.Addr()
}
