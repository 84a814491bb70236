package balancer

import "sync/atomic"

func init() {
	register("weighted_round_robin", func() Scheduler { return new(WeightedRoundRobin) })
}

var _ Scheduler = (*WeightedRoundRobin)(nil)

// maxCycle bounds the precomputed sequence of WeightedRoundRobin (4 bytes an
// entry, so at most 256 KiB a pool). Weights whose cycle would be longer are
// scaled down in proportion; the shares stay right to within 1/maxCycle.
const maxCycle = 1 << 16

// WeightedRoundRobin hands requests to the available servers in proportion to
// their weights, interleaved rather than in bursts: nginx's smooth weighted
// round robin (ngx_http_upstream_get_peer), under which weights 5, 1, 1 give
// a a b a c a a, not a a a a a b c. Bursts matter because a server that gets
// five requests back to back sees five times its share of load for a moment,
// and a slow-starting or cache-cold server suffers for it.
//
// nginx runs the algorithm per request under a lock. Here Update runs it once
// for a whole cycle and stores the sequence, so Pick is an atomic add and an
// index: no lock, no allocation, and the same order.
type WeightedRoundRobin struct {
	snap atomic.Pointer[wrrSnapshot]
	next atomic.Uint64 // position in the cycle, mod len(seq)
}

type wrrSnapshot struct {
	servers []*Server // Available at Update
	seq     []uint32  // one cycle: indexes into servers
}

// Update implements Scheduler. It costs O(cycle × servers), about 10 ms for
// 100 servers whose cycle hits maxCycle; it runs on pool changes only.
func (r *WeightedRoundRobin) Update(servers []*Server) {
	up := availableServers(servers)
	weights := make([]int64, len(up))
	for i, s := range up {
		weights[i] = int64(s.Weight())
	}
	r.snap.Store(&wrrSnapshot{servers: up, seq: smoothSequence(weights)})
}

// Pick implements Scheduler.
func (r *WeightedRoundRobin) Pick(tried *Tried) *Server {
	snap := r.snap.Load()
	if snap == nil || len(snap.seq) == 0 {
		return nil
	}
	seq, servers := snap.seq, snap.servers
	cycle := uint64(len(seq))
	pos := (r.next.Add(1) - 1) % cycle
	// If this turn's server must be skipped (full, tried, gone down), give
	// the turn to whoever comes next in the cycle, so the shares among the
	// rest stay weighted. Looking only len(servers) ahead keeps the cost
	// bounded when a heavy server that fills long runs of the cycle is full.
	ahead := min(cycle, uint64(len(servers)))
	p := pos
	for step := range ahead {
		if s := servers[seq[p]]; eligible(s, tried) && s.tryAcquire() {
			if step > 0 {
				// Consume the turns taken over, or s would get
				// them again on the next Picks and exceed its share.
				r.next.Add(step)
			}
			return s
		}
		if p++; p == cycle {
			p = 0
		}
	}
	// Then every server once, so a free one is never missed.
	n := len(servers)
	i := int(seq[pos])
	for range n {
		if i++; i == n {
			i = 0
		}
		if s := servers[i]; eligible(s, tried) && s.tryAcquire() {
			return s
		}
	}
	return nil
}

func (r *WeightedRoundRobin) String() string { return "weighted_round_robin" }

// smoothSequence returns one cycle of nginx's smooth weighted round robin over
// weights (all > 0): each turn every server's current value grows by its
// weight, the largest (the first among equals) is chosen and loses the total.
// After sum(weights) turns every server has been chosen weight times and the
// current values are back to zero, so the cycle repeats exactly.
//
// Weights are first divided by their gcd (2, 2 is the same cycle as 1, 1),
// then scaled down if the cycle would exceed maxCycle.
func smoothSequence(weights []int64) []uint32 {
	if len(weights) == 0 {
		return nil
	}
	w := reduceWeights(weights)
	var total int64
	for _, x := range w {
		total += x
	}
	cur := make([]int64, len(w))
	seq := make([]uint32, 0, total)
	for range total {
		best := 0
		for i, x := range w {
			cur[i] += x
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		seq = append(seq, uint32(best))
	}
	return seq
}

// reduceWeights returns weights divided by their gcd and, if they still sum
// past maxCycle, scaled to about maxCycle keeping each at least 1 (so the
// cycle may exceed maxCycle by at most one entry per server).
func reduceWeights(weights []int64) []int64 {
	w := make([]int64, len(weights))
	copy(w, weights)
	divideByGCD(w)
	var total int64
	for _, x := range w {
		total += x
	}
	if total <= maxCycle {
		return w
	}
	for i, x := range w {
		// x ≤ 2^31 and maxCycle = 2^16, so the product fits.
		w[i] = max(1, x*maxCycle/total)
	}
	divideByGCD(w)
	return w
}

func divideByGCD(w []int64) {
	var g int64
	for _, x := range w {
		g = gcd(g, x)
	}
	if g > 1 {
		for i := range w {
			w[i] /= g
		}
	}
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
