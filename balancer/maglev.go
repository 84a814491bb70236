package balancer

import (
	"cmp"
	"slices"
	"sync/atomic"
)

// consistentHash is the scheduler behind every keyed scheduler (source_hash,
// uri_hash, header_hash, rdp_cookie): a Maglev lookup table (Eisenbud et al.,
// "Maglev: A Fast and Reliable Software Network Load Balancer", NSDI 2016,
// §3.4) for PickKey, and a smooth weighted round robin for Pick, the requests
// without a key.
//
// Maglev gives each server a permutation of the table's slots, derived from
// its name, and lets the servers take turns claiming the next free slot of
// their permutation until the table is full. Each server ends up with an
// almost equal share of the slots (within about 1% when the table has over
// 100 slots per server, §3.4), and a change of servers moves few keys: a
// server's preferred slots do not depend on the others, so when one goes,
// mostly its own slots change hands. Removing one of ten servers remaps its
// 10% of the keys and under 1% of the others' (TestMaglevDisruption).
//
// Weights are honoured by the order of the turns: one cycle of the smooth
// weighted round robin, repeated, so a server of weight 3 claims three slots
// for each one a server of weight 1 claims; with equal weights the turns are
// the paper's plain rounds.
//
// The table depends only on the names and weights of the Available servers,
// not on their order in the pool, so both members of an HA pair, and a
// Fulcrum restarted or reloaded with the same servers, send a key to the same
// server.
type consistentHash struct {
	rr    WeightedRoundRobin // Pick; its cycle also orders the table's turns
	table atomic.Pointer[maglevTable]
}

// maglevTable maps key % len(slots) to a server.
type maglevTable struct {
	servers []*Server // Available at Update, sorted by name
	slots   []uint32  // indexes into servers; len is a prime
}

// maglevSizes are the table sizes, primes (so every skip generates a full
// permutation), the first at least 100 times the number of servers being the
// one used. 65537 slots of 4 bytes, 256 KiB, cover pools of up to 655
// servers; the size changes (and keys remap) only when a pool crosses such a
// bound.
var maglevSizes = [...]uint64{65537, 131071, 262147, 524287, 1048573, 2097143, 4194301, 8388593, 16777213}

// maglevProbes bounds how far PickKey walks the table past a key's slot
// looking for a usable server before it scans the servers themselves.
const maglevProbes = 32

// Seed of the second hash of a server name (the skip); any constant other
// than 0, which the offset uses, would do, but it must never change: it
// decides where keys go.
const maglevSkipSeed = 0x6d61676c65762d73 // "maglev-s"

func maglevSize(servers int) uint64 {
	for _, m := range maglevSizes {
		if m >= 100*uint64(servers) {
			return m
		}
	}
	return maglevSizes[len(maglevSizes)-1]
}

// Update implements Scheduler. It costs O(M log M) for a table of M slots
// plus the round robin's cycle: about 1.5 ms for 10 servers, 12 ms for 1000
// (BenchmarkMaglevUpdate); it runs on pool changes only.
func (c *consistentHash) Update(servers []*Server) {
	up := availableServers(servers)
	slices.SortStableFunc(up, func(a, b *Server) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Address, b.Address))
	})
	c.rr.Update(up)
	// The round robin filtered Available again; a server that went down
	// in between is left out of both.
	snap := c.rr.snap.Load()
	c.table.Store(newMaglevTable(snap.servers, snap.seq))
}

// newMaglevTable fills a table for servers (sorted by name), whose turns come
// in the order of turns, one cycle of indexes into servers in which each
// server appears at least once.
func newMaglevTable(servers []*Server, turns []uint32) *maglevTable {
	t := &maglevTable{servers: servers}
	if len(servers) == 0 {
		return t
	}
	m := maglevSize(len(servers))
	// §3.4: offset = h1(name) mod M, skip = h2(name) mod (M-1) + 1, and
	// the server's j-th preference is (offset + j*skip) mod M. next holds
	// each server's current preference, advanced by skip as it is used.
	next := make([]uint64, len(servers))
	skip := make([]uint64, len(servers))
	for i, s := range servers {
		next[i] = hash(s.Name, 0) % m
		skip[i] = hash(s.Name, maglevSkipSeed)%(m-1) + 1
	}
	const empty = ^uint32(0)
	slots := make([]uint32, m)
	for i := range slots {
		slots[i] = empty
	}
	filled := uint64(0)
	for {
		for _, i := range turns {
			c := next[i]
			for slots[c] != empty {
				if c += skip[i]; c >= m {
					c -= m
				}
			}
			slots[c] = i
			if c += skip[i]; c >= m {
				c -= m
			}
			next[i] = c
			if filled++; filled == m {
				t.slots = slots
				return t
			}
		}
	}
}

// Pick implements Scheduler: a request without a key is balanced by the
// smooth weighted round robin (over the servers in name order).
func (c *consistentHash) Pick(tried *Tried) *Server { return c.rr.Pick(tried) }

// PickKey implements KeyScheduler: the server in slot key mod M, or if it
// cannot take the request (down, tried, full), the next slot's, and so on.
// Successive slots belong to servers in proportion to their shares, so the
// keys of a failed server spread over the others by weight, and the same key
// always fails over to the same server.
func (c *consistentHash) PickKey(key uint64, tried *Tried) *Server {
	t := c.table.Load()
	if t == nil || len(t.slots) == 0 {
		return nil
	}
	m := uint64(len(t.slots))
	home := key % m
	i := home
	for range maglevProbes {
		if s := t.servers[t.slots[i]]; eligible(s, tried) && s.tryAcquire() {
			return s
		}
		if i++; i == m {
			i = 0
		}
	}
	// Few servers can take the request. Try each once, in name order from
	// the key's own, so a free one is never missed.
	n := len(t.servers)
	j := int(t.slots[home])
	for range n {
		if j++; j == n {
			j = 0
		}
		if s := t.servers[j]; eligible(s, tried) && s.tryAcquire() {
			return s
		}
	}
	return nil
}

// lookup returns the server key maps to in the current table, whatever its
// state; nil if the table is empty. Tests use it to see the mapping without
// claiming slots.
func (c *consistentHash) lookup(key uint64) *Server {
	t := c.table.Load()
	if t == nil || len(t.slots) == 0 {
		return nil
	}
	return t.servers[t.slots[key%uint64(len(t.slots))]]
}
