package balancer

func init() {
	register("weighted_least_conn", func() Scheduler { return new(WeightedLeastConn) })
}

var _ Scheduler = (*WeightedLeastConn)(nil)

// WeightedLeastConn sends each request to the available server with the
// lowest (active+1)/weight: the server that would be least loaded relative to
// its capacity after taking the request. Counting the new request (the +1)
// makes an idle heavy server win over an idle light one, and makes the
// servers fill up in proportion to their weights. Ties rotate as in
// LeastConn.
type WeightedLeastConn struct{ leastScan }

// Pick implements Scheduler.
func (l *WeightedLeastConn) Pick(tried *Tried) *Server { return l.pick(tried, true) }

func (l *WeightedLeastConn) String() string { return "weighted_least_conn" }
