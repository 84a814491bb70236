package balancer

import "sync/atomic"

func init() { register("least_conn", func() Scheduler { return new(LeastConn) }) }

var _ Scheduler = (*LeastConn)(nil)

// LeastConn sends each request to the available server with the fewest
// requests in flight, ignoring weights except that weight 0 takes nothing. It
// suits long or uneven requests (RDP sessions, slow APIs) where round robin
// piles work onto a server that is still busy.
//
// Ties are broken by starting each scan one server further on, so that with
// short requests (every Active 0) it degenerates to round robin instead of
// always choosing the first server.
type LeastConn struct{ leastScan }

// Pick implements Scheduler.
func (l *LeastConn) Pick(tried *Tried) *Server { return l.pick(tried, false) }

func (l *LeastConn) String() string { return "least_conn" }

// pickAttempts bounds how often the least connection schedulers rescan after
// losing the race for the server they chose. Each loss means another request
// claimed a slot (and will wake the queue when it releases it), so giving up
// and letting the caller queue cannot strand a free slot.
const pickAttempts = 4

// leastScan is the scan LeastConn and WeightedLeastConn share: the server
// with the lowest (active+1)/weight, every weight taken as 1 when unweighted.
type leastScan struct {
	up   atomic.Pointer[[]*Server] // servers Available at the last Update
	next atomic.Uint64             // scan start rotation for tie breaking
}

// Update implements Scheduler.
func (l *leastScan) Update(servers []*Server) {
	up := availableServers(servers)
	l.up.Store(&up)
}

// pick compares loads by cross-multiplication, a*wb < b*wa, so there is no
// floating point or division on the hot path; with weights below 2^31 and
// fewer than 2^32 requests in flight per server the products fit in int64.
func (l *leastScan) pick(tried *Tried, weighted bool) *Server {
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
			if !weighted {
				w = 1
			}
			// Strictly less: among equals the first in scan order,
			// which the rotating start makes a different one each time.
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
