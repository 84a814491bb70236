package balancer

func init() { register("uri_hash", func() Scheduler { return new(URIHash) }) }

var (
	_ Scheduler    = (*URIHash)(nil)
	_ KeyScheduler = (*URIHash)(nil)
)

// URIHash sends each request URI to the same real server while the pool's
// servers stay the same, in proportion to their weights, by Maglev consistent
// hashing (see consistentHash). It suits caches: each object is fetched and
// kept by one server, and adding a server moves only its share of objects.
//
// The key is HashString of the request target's path (the query left out,
// as HAProxy's balance uri does by default), so http mode only.
type URIHash struct{ consistentHash }

func (u *URIHash) String() string { return "uri_hash" }
