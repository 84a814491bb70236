// Package ha is Fulcrum's high availability: VRRP version 3 (RFC 5798)
// moving the virtual addresses between load balancers.
//
// The pieces, each testable alone: packet.go encodes and checks
// advertisements; machine.go is the state machine of RFC 5798 §6.4 as a
// pure value driven by events at given times; clock.go the injected time;
// conn.go the raw IPv4/IPv6 sockets (protocol 112, TTL 255, multicast
// group or unicast peers); node.go ties them to an AddressManager, which
// puts the addresses on the interface. One Node is one virtual router of
// one address family: IPv4 and IPv6 virtual routers are separate, even
// with the same VRID (RFC 5798 §1).
package ha
