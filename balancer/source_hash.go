package balancer

func init() { register("source_hash", func() Scheduler { return new(SourceHash) }) }

var (
	_ Scheduler    = (*SourceHash)(nil)
	_ KeyScheduler = (*SourceHash)(nil)
)

// SourceHash sends each client address to the same real server while the
// pool's servers stay the same, in proportion to their weights, by Maglev
// consistent hashing (see consistentHash): when a server is added or removed
// only about its share of the addresses move. It gives persistence without a
// stick table, lost for the moved addresses whenever the pool changes; a
// stick table (persistence method source_ip) keeps it across changes.
//
// The key is HashBytes of the client address: its 4 bytes for IPv4 (an
// IPv4-mapped IPv6 address unmapped first) or 16 for IPv6, the bytes masked
// first if whole subnets are to stick together.
type SourceHash struct{ consistentHash }

func (s *SourceHash) String() string { return "source_hash" }
