package ha

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Announcements: each address is announced this many times, this far
// apart, so that one lost frame does not leave a switch or a neighbour
// pointing at the old Master (keepalived repeats its gratuitous ARPs too).
const (
	announceCount = 3
	announceGap   = 100 * time.Millisecond
)

// LinkAddresses is the real AddressManager: it puts the floating IPs on a
// network interface with netlink and announces them with gratuitous ARP
// (IPv4) and unsolicited Neighbor Advertisements (IPv6). It is safe for
// concurrent use: the IPv4 and IPv6 Nodes share it.
type LinkAddresses struct {
	ifname string
	log    *zap.Logger

	mu  sync.Mutex
	gen map[netip.Prefix]uint64 // bumped by each add and remove, ending older announcements
	wg  sync.WaitGroup
}

var _ AddressManager = (*LinkAddresses)(nil)

// NewLinkAddresses returns the AddressManager of the named interface,
// which must exist. log receives the announcements' failures; nil logs
// nothing.
func NewLinkAddresses(ifname string, log *zap.Logger) (*LinkAddresses, error) {
	if _, err := netlink.LinkByName(ifname); err != nil {
		return nil, fmt.Errorf("ha: interface %q: %w", ifname, err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &LinkAddresses{ifname: ifname, log: log, gen: make(map[netip.Prefix]uint64)}, nil
}

func (l *LinkAddresses) link() (netlink.Link, error) {
	link, err := netlink.LinkByName(l.ifname)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", l.ifname, err)
	}
	return link, nil
}

func nlAddr(p netip.Prefix) *netlink.Addr {
	a := p.Addr().Unmap()
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(p.Bits(), a.BitLen())}}
	if a.Is6() {
		// No Duplicate Address Detection: the address moves between the
		// nodes and must answer at once, not after DAD's second or more
		// (RFC 4862 §5.4); VRRP already decided who holds it.
		addr.Flags = unix.IFA_F_NODAD
	}
	return addr
}

// bump ends the announcements still running for vips: they moved again.
func (l *LinkAddresses) bump(vips []netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range vips {
		l.gen[p]++
	}
}

// AddVIPs adds the addresses to the interface (replacing any with the same
// address, so that it is idempotent).
func (l *LinkAddresses) AddVIPs(vips []netip.Prefix) error {
	link, err := l.link()
	if err != nil {
		return err
	}
	l.bump(vips)
	var errs []error
	for _, p := range vips {
		if err := netlink.AddrReplace(link, nlAddr(p)); err != nil {
			errs = append(errs, fmt.Errorf("add %s to %s: %w", p, l.ifname, err))
		}
	}
	return errors.Join(errs...)
}

// RemoveVIPs removes the addresses; one that is not there is no error.
// Announcements still running for them stop.
func (l *LinkAddresses) RemoveVIPs(vips []netip.Prefix) error {
	link, err := l.link()
	if err != nil {
		return err
	}
	l.bump(vips)
	var errs []error
	for _, p := range vips {
		err := netlink.AddrDel(link, nlAddr(p))
		if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", p, l.ifname, err))
		}
	}
	return errors.Join(errs...)
}

// Announce sends, in the background, announceCount gratuitous ARPs (IPv4,
// RFC 5227 §3 ARP Announcement) or unsolicited Neighbor Advertisements
// with the Override flag (IPv6, RFC 4861 §7.2.6) for each address, so that
// the Node is not held up. The sockets are opened before it returns, in
// the caller's network namespace.
func (l *LinkAddresses) Announce(vips []netip.Prefix) error {
	ifi, err := net.InterfaceByName(l.ifname)
	if err != nil {
		return fmt.Errorf("interface %q: %w", l.ifname, err)
	}
	var an announcer
	l.mu.Lock()
	an.gens = make(map[netip.Prefix]uint64, len(vips))
	for _, p := range vips {
		an.gens[p] = l.gen[p]
	}
	l.mu.Unlock()
	var errs []error
	for p := range an.gens {
		v4 := p.Addr().Unmap().Is4()
		switch {
		case v4 && an.a4 == nil:
			if an.a4, err = arp.Dial(ifi); err != nil {
				an.a4 = nil
				errs = append(errs, fmt.Errorf("gratuitous ARP on %s: %w", ifi.Name, err))
			}
		case !v4 && an.a6 == nil:
			if an.a6, _, err = ndp.Listen(ifi, ndp.LinkLocal); err != nil {
				an.a6 = nil
				errs = append(errs, fmt.Errorf("neighbor advertisement on %s: %w", ifi.Name, err))
			}
		}
	}
	l.wg.Go(func() { l.announce(ifi, &an) })
	return errors.Join(errs...)
}

// announcer holds the sockets of one Announce.
type announcer struct {
	a4   *arp.Client
	a6   *ndp.Conn
	gens map[netip.Prefix]uint64
}

// Wait waits for the announcements in flight (for tests).
func (l *LinkAddresses) Wait() { l.wg.Wait() }

// current reports whether p was neither added nor removed since gen.
func (l *LinkAddresses) current(p netip.Prefix, gen uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen[p] == gen
}

func (l *LinkAddresses) announce(ifi *net.Interface, an *announcer) {
	defer func() {
		if an.a4 != nil {
			an.a4.Close()
		}
		if an.a6 != nil {
			an.a6.Close()
		}
	}()
	for i := range announceCount {
		if i > 0 {
			time.Sleep(announceGap)
		}
		sent := false
		for p, gen := range an.gens {
			if !l.current(p, gen) {
				continue // removed (or added again, which announces anew)
			}
			var err error
			switch a := p.Addr().Unmap(); {
			case a.Is4() && an.a4 != nil:
				err = gratuitousARP(an.a4, ifi, a)
			case a.Is6() && an.a6 != nil:
				err = unsolicitedNA(an.a6, ifi, a)
			default:
				continue // no socket: reported by Announce
			}
			sent = true
			if err != nil {
				l.log.Warn("HA: announcing a floating IP", zap.Stringer("vip", p), zap.Error(err))
			}
		}
		if !sent {
			return
		}
	}
}

// gratuitousARP broadcasts an ARP Announcement: a request whose sender and
// target are both the address, from our MAC (RFC 5227 §3; RFC 5798
// §6.4.1 (1)), which updates every neighbour's cache and the switches'.
func gratuitousARP(c *arp.Client, ifi *net.Interface, a netip.Addr) error {
	p, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, a, ethernet.Broadcast, a)
	if err != nil {
		return err
	}
	return c.WriteTo(p, ethernet.Broadcast)
}

// allNodes is ff02::1, where unsolicited advertisements go (RFC 4861
// §7.2.6).
var allNodes = netip.MustParseAddr("ff02::1")

// unsolicitedNA sends a Neighbor Advertisement for a with Override set and
// our link-layer address, so that neighbours replace their cached entry
// (RFC 4861 §7.2.6; RFC 5798 §6.4.1 (2)).
func unsolicitedNA(c *ndp.Conn, ifi *net.Interface, a netip.Addr) error {
	m := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: a,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ifi.HardwareAddr}},
	}
	return c.WriteTo(m, nil, allNodes)
}
