package balancer

import "math/rand/v2"

func init() { register("random_two", func() Scheduler { return new(RandomTwo) }) }

var _ Scheduler = (*RandomTwo)(nil)

// RandomTwo draws two different available servers at random and sends the
// request to the less loaded, by (active+1)/weight as in
// WeightedLeastConn: the power of two choices (Mitzenmacher, "The Power of
// Two Choices in Randomized Load Balancing", IEEE TPDS 2001). Two samples
// bring the most loaded server's excess from about log n / log log n (one
// random choice) down to log log n, while each request looks at two servers
// instead of all of them, and avoid least_conn's herding, where every
// request arriving at once (or several Fulcrums) piles onto the one server
// that looks least loaded.
//
// The random numbers come from math/rand/v2's global source, which the
// runtime keeps per thread: no lock, no shared cache line, no allocation.
type RandomTwo struct {
	leastScan // the snapshot, and the full scan when both draws fail

	// rand, if set, replaces the random source (tests).
	rand func() uint64
}

// Pick implements Scheduler.
func (r *RandomTwo) Pick(tried *Tried) *Server {
	p := r.up.Load()
	if p == nil || len(*p) == 0 {
		return nil
	}
	up := *p
	if n := uint64(len(up)); n >= 2 {
		var x uint64
		if r.rand != nil {
			x = r.rand()
		} else {
			x = rand.Uint64()
		}
		i, j := twoIndexes(x, n)
		a, b := up[i], up[j]
		la, wa, oka := twoChoiceLoad(a, tried)
		lb, wb, okb := twoChoiceLoad(b, tried)
		// Order them: a the less loaded (a on ties, itself random).
		if !oka || (okb && lb*wa < la*wb) {
			a, b, oka, okb = b, a, okb, oka
		}
		if oka && a.tryAcquire() {
			return a
		}
		if okb && b.tryAcquire() {
			return b
		}
	}
	// Neither draw could take the request (or one server only): fall back
	// to a weighted least connection scan, so a free slot is never missed.
	return r.pick(tried, true)
}

// twoIndexes turns the random x into two different indexes below n (≥ 2),
// uniformly: one from each half of x, by multiply and shift (Lemire's
// reduction, no division), the second drawn below n-1 and moved past the
// first.
func twoIndexes(x, n uint64) (i, j uint64) {
	i = (x & 0xffffffff) * n >> 32
	j = (x >> 32) * (n - 1) >> 32
	if j >= i {
		j++
	}
	return i, j
}

// twoChoiceLoad returns s's (active+1) and weight, and whether s can take
// the request at all. The weight is loaded once, as in leastScan.pick.
func twoChoiceLoad(s *Server, tried *Tried) (load, weight int64, ok bool) {
	w := int64(s.weight.Load())
	if w <= 0 || !eligible(s, tried) || s.full() {
		return 0, 0, false
	}
	return s.Active() + 1, w, true
}

func (r *RandomTwo) String() string { return "random_two" }
