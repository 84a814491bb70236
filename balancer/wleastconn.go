package balancer

import "sync/atomic"

func init() {
	register("weighted_least_conn", func() Scheduler { return new(WeightedLeastConn) })
}

var _ Scheduler = (*WeightedLeastConn)(nil)

// WeightedLeastConn sends each request to the available server with the
// lowest (active+1)/weight: the server that would be least loaded relative to
// its capacity after taking the request. Counting the new request (the +1)
// makes an idle heavy server win over an idle light one, and makes the
// servers fill up in proportion to their weights.
//
// The ratios are compared by cross-multiplication, a*wb < b*wa, so there is
// no floating point or division on the hot path; with weights below 2^31 and
// fewer than 2^32 requests in flight per server the products fit in int64.
// Ties rotate as in LeastConn.
type WeightedLeastConn struct {
	up   atomic.Pointer[[]*Server] // servers Available at the last Update
	next atomic.Uint64             // scan start rotation for tie breaking
}

// Update implements Scheduler.
func (l *WeightedLeastConn) Update(servers []*Server) {
	up := availableServers(servers)
	l.up.Store(&up)
}

// Pick implements Scheduler.
func (l *WeightedLeastConn) Pick(tried *Tried) *Server {
	p := l.up.Load()
	if p == nil || len(*p) == 0 {
		return nil
	}
	up := *p
	n := len(up)
	start := int((l.next.Add(1) - 1) % uint64(n))
	for range pickAttempts {
		var best *Server
		var bestLoad, bestWeight int64 // best's active+1 and weight
		// lead counts ineligible servers at the front of the scan.
		lead := uint64(0)
		i := start
		for range n {
			s := up[i]
			if i++; i == n {
				i = 0
			}
			// Load the weight once: a concurrent SetWeight(0) between
			// an Available check and the comparison would otherwise
			// make a zero-weight server look infinitely attractive.
			w := int64(s.weight.Load())
			if w <= 0 || s.down.Load() || tried.Has(s) || s.full() {
				if best == nil {
					lead++
				}
				continue
			}
			load := s.Active() + 1
			if best == nil || load*bestWeight < bestLoad*w {
				best, bestLoad, bestWeight = s, load, w
			}
		}
		if best == nil {
			return nil
		}
		if best.tryAcquire() {
			if lead > 0 {
				// Skip the rotation past the ineligible servers too;
				// otherwise every start that falls on one lands on
				// the same successor, doubling its share of ties.
				l.next.Add(lead)
			}
			return best
		}
	}
	return nil
}

func (l *WeightedLeastConn) String() string { return "weighted_least_conn" }
