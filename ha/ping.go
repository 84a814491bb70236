package ha

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Pinger tells whether any of a set of ping nodes answers ICMP echo
// (track_ping): a node that hears none of them is cut off from the network
// and should leave the floating IPs to its peer (FAULT).
type Pinger struct {
	targets  []netip.Addr
	interval time.Duration
	last     atomic.Int64 // unix nanoseconds of the last answer from any target
	c4, c6   *icmp.PacketConn
	id       int
}

// NewPinger opens raw ICMP sockets (root) for the targets' families.
func NewPinger(targets []netip.Addr, interval time.Duration) (*Pinger, error) {
	p := &Pinger{targets: targets, interval: interval, id: os.Getpid() & 0xffff}
	p.last.Store(time.Now().UnixNano()) // no verdict before the first intervals
	for _, t := range targets {
		var err error
		switch {
		case t.Is4() && p.c4 == nil:
			p.c4, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		case t.Is6() && p.c6 == nil:
			p.c6, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
		}
		if err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

// Run pings every target each interval and records answers until ctx ends.
func (p *Pinger) Run(ctx context.Context) {
	for _, c := range []*icmp.PacketConn{p.c4, p.c6} {
		if c != nil {
			go p.read(ctx, c)
		}
	}
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for seq := 1; ; seq++ {
		for _, a := range p.targets {
			p.send(a, seq)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			p.Close()
			return
		}
	}
}

func (p *Pinger) send(a netip.Addr, seq int) {
	m := icmp.Message{Body: &icmp.Echo{ID: p.id, Seq: seq & 0xffff, Data: []byte("fulcrum track_ping")}}
	c := p.c4
	if a.Is4() {
		m.Type = ipv4.ICMPTypeEcho
	} else {
		m.Type, c = ipv6.ICMPTypeEchoRequest, p.c6
	}
	b, err := m.Marshal(nil) // the kernel sums ICMPv6 itself
	if err == nil {
		c.WriteTo(b, &net.IPAddr{IP: a.AsSlice()})
	}
}

func (p *Pinger) read(ctx context.Context, c *icmp.PacketConn) {
	proto := 1 // ICMP
	if c == p.c6 {
		proto = 58 // ICMPv6
	}
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || e.ID != p.id || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
			continue
		}
		if ip, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP); ok && slices.Contains(p.targets, ip.Unmap()) {
			p.last.Store(time.Now().UnixNano())
		}
	}
}

// Reachable reports whether a target answered within the last three
// intervals.
func (p *Pinger) Reachable() bool {
	return time.Since(time.Unix(0, p.last.Load())) <= 3*p.interval
}

// Close closes the sockets.
func (p *Pinger) Close() {
	for _, c := range []*icmp.PacketConn{p.c4, p.c6} {
		if c != nil {
			c.Close()
		}
	}
}
