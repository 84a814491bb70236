package ha

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Conn carries the advertisements of one virtual router: one address
// family on one interface. Listen returns the real one; tests use fakes.
type Conn interface {
	// Read blocks for the next advertisement. An error wrapping
	// ErrDiscarded is a packet that failed the receive checks of RFC 5798
	// §7.1 (to log, then read on); any other error is fatal.
	Read() (Inbound, error)
	// Send sends a to the group, or to each unicast peer.
	Send(a Advertisement) error
	// LocalAddr is our primary address, the IP source of what we send.
	LocalAddr() netip.Addr
	// Close unblocks Read.
	Close() error
}

// Inbound is an advertisement received and the addresses of its IP header.
type Inbound struct {
	Advert   Advertisement
	Src, Dst netip.Addr
}

// ErrDiscarded marks a packet dropped by the receive checks.
var ErrDiscarded = errors.New("vrrp: advertisement discarded")

// ConnConfig configures Listen.
type ConnConfig struct {
	// Interface is the name of the interface to speak on. Required.
	Interface string
	// IPv6 selects IPv6 (ip6:112 to ff02::12); false IPv4 (ip4:112 to
	// 224.0.0.18). IPv4 and IPv6 virtual routers are separate even with
	// the same VRID (RFC 5798 §1).
	IPv6 bool
	// Source is our primary address. If invalid: the interface's first
	// IPv4 address; for IPv6 its link-local address, which RFC 5798
	// §5.1.2.1 requires as source, or, when the unicast peers are not
	// link-local, its first global one.
	Source netip.Addr
	// Peers, if any, replace the multicast group: advertisements go to
	// each of them and only theirs are accepted (for networks that block
	// multicast; keepalived's unicast_peer).
	Peers []netip.Addr
}

// Listen opens the raw socket of cfg. The socket lives in the network
// namespace of the calling OS thread.
func Listen(cfg ConnConfig) (Conn, error) {
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("vrrp: listen: %w", err)
	}
	cfg.Peers = slices.Clone(cfg.Peers)
	for i, p := range cfg.Peers {
		cfg.Peers[i] = p.Unmap()
		if cfg.Peers[i].Is4() == cfg.IPv6 {
			return nil, fmt.Errorf("vrrp: listen: unicast peer %v: not an IPv%d address", p, map[bool]int{false: 4, true: 6}[cfg.IPv6])
		}
	}
	src := cfg.Source.Unmap()
	if !src.IsValid() {
		if src, err = primaryAddr(ifi, cfg); err != nil {
			return nil, err
		}
	}
	if cfg.IPv6 {
		return listen6(ifi, src, cfg.Peers)
	}
	return listen4(ifi, src, cfg.Peers)
}

// primaryAddr picks the default source address (see ConnConfig.Source).
func primaryAddr(ifi *net.Interface, cfg ConnConfig) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vrrp: listen: addresses of %s: %w", ifi.Name, err)
	}
	wantLinkLocal := cfg.IPv6 && (len(cfg.Peers) == 0 || cfg.Peers[0].IsLinkLocalUnicast())
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		switch {
		case !cfg.IPv6 && ip.Is4(),
			cfg.IPv6 && ip.Is6() && ip.IsLinkLocalUnicast() == wantLinkLocal:
			return ip, nil
		}
	}
	kind := "IPv4"
	if cfg.IPv6 {
		kind = "global IPv6"
		if wantLinkLocal {
			kind = "link-local IPv6"
		}
	}
	return netip.Addr{}, fmt.Errorf("vrrp: listen: interface %s has no %s address to send from", ifi.Name, kind)
}

func bindToDevice(pc net.PacketConn, name string) error {
	sc, err := pc.(*net.IPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := sc.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), name) }); err != nil {
		return err
	}
	return serr
}

type conn4 struct {
	rc    *ipv4.RawConn
	ifi   *net.Interface
	src   netip.Addr
	peers []netip.Addr
	buf   []byte
}

func listen4(ifi *net.Interface, src netip.Addr, peers []netip.Addr) (Conn, error) {
	pc, err := net.ListenPacket("ip4:112", "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("vrrp: listen: %w", err)
	}
	c := &conn4{ifi: ifi, src: src, peers: peers, buf: make([]byte, 1500)}
	fail := func(op string, err error) (Conn, error) {
		pc.Close()
		return nil, fmt.Errorf("vrrp: listen on %s: %s: %w", ifi.Name, op, err)
	}
	// Only this interface's packets, and sends leave by it.
	if err := bindToDevice(pc, ifi.Name); err != nil {
		return fail("bind to device", err)
	}
	// IP_HDRINCL: we write the header, so the source address the
	// checksum covers is the one sent, and read it with TTL and
	// destination.
	if c.rc, err = ipv4.NewRawConn(pc); err != nil {
		return fail("raw socket", err)
	}
	if err := c.rc.SetControlMessage(ipv4.FlagInterface, true); err != nil {
		return fail("control messages", err)
	}
	if len(peers) == 0 {
		if err := c.rc.JoinGroup(ifi, &net.IPAddr{IP: GroupIPv4.AsSlice()}); err != nil {
			return fail("join 224.0.0.18", err)
		}
		if err := c.rc.SetMulticastInterface(ifi); err != nil {
			return fail("multicast interface", err)
		}
		// Our own advertisements must not come back to us.
		if err := c.rc.SetMulticastLoopback(false); err != nil {
			return fail("multicast loop", err)
		}
	}
	return c, nil
}

func (c *conn4) LocalAddr() netip.Addr { return c.src }
func (c *conn4) Close() error          { return c.rc.Close() }

func (c *conn4) Send(a Advertisement) error {
	dsts := c.peers
	if len(dsts) == 0 {
		dsts = []netip.Addr{GroupIPv4}
	}
	var errs []error
	for _, dst := range dsts {
		p, err := a.Marshal(c.src, dst)
		if err != nil {
			return err
		}
		h := &ipv4.Header{
			Version:  ipv4.Version,
			Len:      ipv4.HeaderLen,
			TOS:      0xc0, // precedence "internetwork control", as keepalived
			TotalLen: ipv4.HeaderLen + len(p),
			TTL:      TTL, // RFC 5798 §5.1.1.3
			Protocol: Protocol,
			Src:      c.src.AsSlice(),
			Dst:      dst.AsSlice(),
		}
		if err := c.rc.WriteTo(h, p, nil); err != nil {
			errs = append(errs, fmt.Errorf("vrrp: send to %v: %w", dst, err))
		}
	}
	return errors.Join(errs...)
}

func (c *conn4) Read() (Inbound, error) {
	for {
		h, p, cm, err := c.rc.ReadFrom(c.buf)
		if err != nil {
			return Inbound{}, fmt.Errorf("vrrp: read: %w", err)
		}
		src, _ := netip.AddrFromSlice(h.Src.To4())
		dst, _ := netip.AddrFromSlice(h.Dst.To4())
		if src == c.src || cm != nil && cm.IfIndex != 0 && cm.IfIndex != c.ifi.Index {
			continue // our own, or another interface's
		}
		if h.Protocol != Protocol {
			continue
		}
		in, err := check(p, src, dst, h.TTL, c.peers, GroupIPv4)
		if err != nil {
			return Inbound{}, err
		}
		return in, nil
	}
}

// check applies the receive checks of RFC 5798 §7.1 that need the IP
// header, then Parse's.
func check(p []byte, src, dst netip.Addr, ttl int, peers []netip.Addr, group netip.Addr) (Inbound, error) {
	// With unicast peers (an extension: RFC 5798 knows only the group)
	// the source is checked against the peers instead, as keepalived
	// does: peers may be routed, and keepalived 2.2.7 sends IPv6 unicast
	// advertisements with the default hop limit (64), not 255. We still
	// send 255.
	if ttl != TTL && len(peers) == 0 {
		return Inbound{}, fmt.Errorf("%w: from %v: TTL %d, want %d", ErrDiscarded, src, ttl, TTL)
	}
	if len(peers) > 0 && !slices.Contains(peers, src) {
		return Inbound{}, fmt.Errorf("%w: from %v: not a unicast peer", ErrDiscarded, src)
	}
	if len(peers) == 0 && dst != group {
		return Inbound{}, fmt.Errorf("%w: from %v: sent to %v, not to %v", ErrDiscarded, src, dst, group)
	}
	a, err := Parse(p, src, dst)
	if err != nil && errors.Is(err, ErrChecksum) && len(peers) > 0 && src.Is4() {
		// keepalived before 1.3.6 checksummed unicast IPv4 advertisements
		// as if sent to the group; today's keepalived accepts both, so do
		// we.
		a, err = Parse(p, src, group)
	}
	if err != nil {
		return Inbound{}, fmt.Errorf("%w: from %v: %w", ErrDiscarded, src, err)
	}
	return Inbound{Advert: a, Src: src, Dst: dst}, nil
}

type conn6 struct {
	pc    *ipv6.PacketConn
	ifi   *net.Interface
	src   netip.Addr
	peers []netip.Addr
	buf   []byte
}

func listen6(ifi *net.Interface, src netip.Addr, peers []netip.Addr) (Conn, error) {
	pc, err := net.ListenPacket("ip6:112", "::")
	if err != nil {
		return nil, fmt.Errorf("vrrp: listen: %w", err)
	}
	c := &conn6{pc: ipv6.NewPacketConn(pc), ifi: ifi, src: src, peers: peers, buf: make([]byte, 1500)}
	fail := func(op string, err error) (Conn, error) {
		pc.Close()
		return nil, fmt.Errorf("vrrp: listen on %s: %s: %w", ifi.Name, op, err)
	}
	if err := bindToDevice(pc, ifi.Name); err != nil {
		return fail("bind to device", err)
	}
	// IPV6_CHECKSUM at the Checksum field (RFC 3542 §3.1): the kernel
	// fills it in over the pseudo-header with the source it picked, and
	// drops bad ones on receipt, as keepalived has it do.
	if err := c.pc.SetChecksum(true, 6); err != nil {
		return fail("kernel checksum", err)
	}
	if err := c.pc.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst|ipv6.FlagInterface, true); err != nil {
		return fail("control messages", err)
	}
	// RFC 5798 §5.1.2.3: Hop Limit 255.
	if err := c.pc.SetHopLimit(TTL); err != nil {
		return fail("hop limit", err)
	}
	if err := c.pc.SetMulticastHopLimit(TTL); err != nil {
		return fail("multicast hop limit", err)
	}
	if len(peers) == 0 {
		if err := c.pc.JoinGroup(ifi, &net.IPAddr{IP: GroupIPv6.AsSlice()}); err != nil {
			return fail("join ff02::12", err)
		}
		if err := c.pc.SetMulticastInterface(ifi); err != nil {
			return fail("multicast interface", err)
		}
		if err := c.pc.SetMulticastLoopback(false); err != nil {
			return fail("multicast loop", err)
		}
	}
	return c, nil
}

func (c *conn6) LocalAddr() netip.Addr { return c.src }
func (c *conn6) Close() error          { return c.pc.Close() }

func (c *conn6) Send(a Advertisement) error {
	dsts := c.peers
	if len(dsts) == 0 {
		dsts = []netip.Addr{GroupIPv6}
	}
	var errs []error
	for _, dst := range dsts {
		p, err := a.Marshal(c.src, dst)
		if err != nil {
			return err
		}
		cm := &ipv6.ControlMessage{HopLimit: TTL, Src: c.src.AsSlice(), IfIndex: c.ifi.Index}
		to := &net.IPAddr{IP: dst.AsSlice()}
		if dst.IsLinkLocalUnicast() || dst.IsLinkLocalMulticast() {
			to.Zone = c.ifi.Name
		}
		if _, err := c.pc.WriteTo(p, cm, to); err != nil {
			errs = append(errs, fmt.Errorf("vrrp: send to %v: %w", dst, err))
		}
	}
	return errors.Join(errs...)
}

func (c *conn6) Read() (Inbound, error) {
	for {
		n, cm, from, err := c.pc.ReadFrom(c.buf)
		if err != nil {
			return Inbound{}, fmt.Errorf("vrrp: read: %w", err)
		}
		ipa, ok := from.(*net.IPAddr)
		if !ok || cm == nil {
			continue
		}
		src, _ := netip.AddrFromSlice(ipa.IP)
		dst, _ := netip.AddrFromSlice(cm.Dst)
		src, dst = src.Unmap(), dst.Unmap()
		if src == c.src || cm.IfIndex != 0 && cm.IfIndex != c.ifi.Index {
			continue
		}
		in, err := check(c.buf[:n], src, dst, cm.HopLimit, c.peers, GroupIPv6)
		if err != nil {
			return Inbound{}, err
		}
		return in, nil
	}
}
