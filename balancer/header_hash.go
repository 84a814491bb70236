package balancer

func init() { register("header_hash", func() Scheduler { return new(HeaderHash) }) }

var (
	_ Scheduler    = (*HeaderHash)(nil)
	_ KeyScheduler = (*HeaderHash)(nil)
)

// HeaderHash sends requests with the same value of one request header (the
// virtual service's hash_header, say X-User or X-Tenant) to the same real
// server while the pool's servers stay the same, in proportion to their
// weights, by Maglev consistent hashing (see consistentHash).
//
// The key is HashString of the header's value; requests without the header
// are balanced by smooth weighted round robin (Pick). http mode only.
type HeaderHash struct{ consistentHash }

func (h *HeaderHash) String() string { return "header_hash" }
