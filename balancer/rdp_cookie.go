package balancer

func init() { register("rdp_cookie", func() Scheduler { return new(RDPCookie) }) }

var (
	_ Scheduler    = (*RDPCookie)(nil)
	_ KeyScheduler = (*RDPCookie)(nil)
)

// RDPCookie sends each Remote Desktop user to the same real server while the
// pool's servers stay the same, in proportion to their weights, by Maglev
// consistent hashing (see consistentHash): HAProxy's balance rdp-cookie.
//
// The key is HashString of the user name from the mstshash cookie of the
// client's X.224 Connection Request (MS-RDPBCGR 2.2.1.1); connections without
// one are balanced by smooth weighted round robin (Pick). tcp mode only.
type RDPCookie struct{ consistentHash }

func (r *RDPCookie) String() string { return "rdp_cookie" }
