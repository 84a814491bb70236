package balancer

import "sync/atomic"

func init() { register("least_conn", func() Scheduler { return new(LeastConn) }) }

var _ Scheduler = (*LeastConn)(nil)

// pickAttempts bounds how often the least connection schedulers rescan after
// losing the race for the server they chose. Each loss means another request
// claimed a slot (and will wake the queue when it releases it), so giving up
// and letting the caller queue cannot strand a free slot.
const pickAttempts = 4

// LeastConn sends each request to the available server with the fewest
// requests in flight, ignoring weights except that weight 0 takes nothing. It
// suits long or uneven requests (RDP sessions, slow APIs) where round robin
// piles work onto a server that is still busy.
//
// Ties are broken by starting each scan one server further on, so that with
// short requests (every Active 0) it degenerates to round robin instead of
// always choosing the first server.
type LeastConn struct {
	up   atomic.Pointer[[]*Server] // servers Available at the last Update
	next atomic.Uint64             // scan start rotation for tie breaking
}

// Update implements Scheduler.
func (l *LeastConn) Update(servers []*Server) {
	up := availableServers(servers)
	l.up.Store(&up)
}

// Pick implements Scheduler.
func (l *LeastConn) Pick(tried *Tried) *Server {
	p := l.up.Load()
	if p == nil || len(*p) == 0 {
		return nil
	}
	up := *p
	n := len(up)
	start := int((l.next.Add(1) - 1) % uint64(n))
	for range pickAttempts {
		var best *Server
		var bestActive int64
		// lead counts ineligible servers at the front of the scan.
		lead := uint64(0)
		i := start
		for range n {
			s := up[i]
			if i++; i == n {
				i = 0
			}
			if !eligible(s, tried) || s.full() {
				if best == nil {
					lead++
				}
				continue
			}
			// Strictly less: among equals the first in scan order,
			// which the rotating start makes a different one each time.
			if a := s.Active(); best == nil || a < bestActive {
				best, bestActive = s, a
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

func (l *LeastConn) String() string { return "least_conn" }
