package balancer

import "sync/atomic"

func init() { register("round_robin", func() Scheduler { return new(RoundRobin) }) }

var _ Scheduler = (*RoundRobin)(nil)

// RoundRobin hands requests to the available servers in turn, ignoring their
// weights except that weight 0 takes nothing. It suits pools of identical
// servers; use WeightedRoundRobin when they differ.
//
// Pick is one atomic add plus a scan that normally stops at the first server:
// no lock, no allocation.
type RoundRobin struct {
	up   atomic.Pointer[[]*Server] // servers Available at the last Update
	next atomic.Uint64             // turn counter; its value mod len(up) is the next server
}

// Update implements Scheduler.
func (r *RoundRobin) Update(servers []*Server) {
	up := availableServers(servers)
	r.up.Store(&up)
}

// Pick implements Scheduler.
func (r *RoundRobin) Pick(tried *Tried) *Server {
	p := r.up.Load()
	if p == nil || len(*p) == 0 {
		return nil
	}
	up := *p
	n := uint64(len(up))
	start := r.next.Add(1) - 1
	i := start % n
	for step := uint64(0); step < n; step++ {
		s := up[i]
		if eligible(s, tried) && s.tryAcquire() {
			if step > 0 {
				// Move the counter past the server that took the
				// turn; otherwise the next request would start at
				// the one after the skipped server and land on s
				// again, doubling its share while a peer is full.
				r.next.Add(step)
			}
			return s
		}
		if i++; i == n {
			i = 0
		}
	}
	return nil
}

func (r *RoundRobin) String() string { return "round_robin" }
