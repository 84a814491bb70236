package balancer

import "sync/atomic"

func init() { register("first", func() Scheduler { return new(First) }) }

var _ Scheduler = (*First)(nil)

// First sends each request to the first available server, in configuration
// order, that has a free slot: HAProxy's balance first. Servers fill up to
// their max_conns one after the other, so the last ones stay idle until load
// needs them (and can be powered down, or lent elsewhere, meanwhile). Weights
// play no part except that weight 0 takes nothing. Without max_conns the
// first server takes everything.
type First struct {
	up atomic.Pointer[[]*Server] // servers Available at the last Update, in pool order
}

// Update implements Scheduler.
func (f *First) Update(servers []*Server) {
	up := availableServers(servers)
	f.up.Store(&up)
}

// Pick implements Scheduler.
func (f *First) Pick(tried *Tried) *Server {
	p := f.up.Load()
	if p == nil {
		return nil
	}
	for _, s := range *p {
		if eligible(s, tried) && s.tryAcquire() {
			return s
		}
	}
	return nil
}

func (f *First) String() string { return "first" }
