package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Bounds of the [ha] keys (RFC 5798 §5.2).
const (
	maxAdvertInterval = 4095 * 10 * time.Millisecond // 12 bits of centiseconds
	minAdvertInterval = 10 * time.Millisecond
	// maxIfaceName is IFNAMSIZ - 1 (Linux).
	maxIfaceName = 15
)

// ha checks the [ha] section, if the file has one, and fills in h.VIPs,
// h.Peers and h.NotifyArgs; services are the virtual services by name, for
// track_services.
func (v *validator) ha(p path, h *HA, services map[string]*VirtualService) {
	if !v.inFile(p) {
		// No [ha]: the defaults of an absent table stay, but nothing runs.
		return
	}
	ip := p.with("interface")
	switch {
	case h.Interface == "":
		v.add(ip, `required when [ha] is present: the interface that carries the floating IPs, such as "eth0"`)
	case !validIfaceName(h.Interface):
		v.add(ip, "%q is not an interface name: 1 to %d characters, no '/', ':', spaces, \".\" or \"..\"", h.Interface, maxIfaceName)
	}
	vp := p.with("vrid")
	if !v.inFile(vp) {
		v.add(vp, "required: the virtual router ID, 1..255, the same on both nodes and unique on the link")
	} else {
		v.between(vp, h.VRID, 1, 255)
	}
	v.between(p.with("priority"), h.Priority, 1, 255)

	ap := p.with("advert_interval")
	switch d := h.AdvertInterval; {
	case d < minAdvertInterval || d > maxAdvertInterval:
		v.add(ap, "must be between 10ms and 40.95s, got %s", d)
	case d%minAdvertInterval != 0:
		v.add(ap, "must be a multiple of 10ms (VRRPv3 counts centiseconds), got %s", d)
	}
	v.notNegative(p.with("preempt_delay"), h.PreemptDelay)

	fp := p.with("floating_ips")
	h.VIPs = h.VIPs[:0]
	families := map[bool]bool{} // Is4 → present
	seen := map[netip.Addr]int{}
	if len(h.FloatingIPs) == 0 {
		v.add(fp, `required: one or more addresses with their prefix length, such as ["10.0.0.21/24"]`)
	}
	for j, s := range h.FloatingIPs {
		ep := fp.elem(j, nil)
		// Host bits are the point: these are addresses with the prefix
		// length of their subnet, as `ip addr add` takes them.
		pfx, err := netip.ParsePrefix(s)
		if err != nil || pfx.Addr().Zone() != "" {
			v.add(ep, `not an address with a prefix length: %q (e.g. "10.0.0.21/24" or "fd00::21/64")`, s)
			continue
		}
		a := pfx.Addr()
		if a.Is4In6() {
			v.add(ep, "%q: write the IPv4 address as such", s)
			continue
		}
		if !a.IsGlobalUnicast() {
			v.add(ep, "%q is not a unicast address a client can reach", s)
			continue
		}
		if k, ok := seen[a]; ok {
			v.add(ep, "%s is listed twice (also element %d)", a, k+1)
			continue
		}
		seen[a] = j
		families[a.Is4()] = true
		h.VIPs = append(h.VIPs, pfx)
	}
	if len(h.VIPs) > 255 {
		v.add(fp, "%d addresses: an advertisement carries at most 255 per family", len(h.VIPs))
	}

	up := p.with("unicast_peers")
	h.Peers = h.Peers[:0]
	for j, s := range h.UnicastPeers {
		ep := up.elem(j, nil)
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil || a.Zone() != "":
			v.add(ep, "not an IP address: %q", s)
			continue
		case len(h.VIPs) > 0 && !families[a.Unmap().Is4()]:
			v.add(ep, "%s: no floating IP is of its family, so no virtual router would send to it", s)
			continue
		}
		h.Peers = append(h.Peers, a.Unmap())
	}

	tp := p.with("track_ping")
	for j, s := range h.TrackPing {
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			v.add(tp.elem(j, nil), "not an IP address: %q", s)
		}
	}
	sp := p.with("track_services")
	for j, name := range h.TrackServices {
		if services[name] == nil {
			v.add(sp.elem(j, nil), "no virtual_service is named %q", name)
		}
	}
	v.between(p.with("track_weight"), h.TrackWeight, 0, 254)

	np := p.with("notify")
	h.NotifyArgs = nil
	if f := strings.Fields(h.Notify); len(f) > 0 {
		h.NotifyArgs = f
	}
	switch {
	case h.Notify == "":
	case len(h.NotifyArgs) == 0:
		v.add(np, "is blank: give a command, or leave it out")
	case strings.ContainsAny(h.Notify, `"'\`):
		v.add(np, "quotes and backslashes are not interpreted (no shell): the command and its arguments are split on spaces")
	}

	if h.SyncPeer != "" {
		addr, tls := strings.CutPrefix(h.SyncPeer, "https://")
		if !tls {
			addr = strings.TrimPrefix(addr, "http://")
		}
		host, port, err := net.SplitHostPort(addr)
		n, perr := strconv.Atoi(port)
		switch {
		case err != nil:
			v.add(p.with("sync_peer"), "invalid address %q: want the peer's admin address, host:port or https://host:port", h.SyncPeer)
		case host == "":
			v.add(p.with("sync_peer"), "invalid address %q: host is required", h.SyncPeer)
		case perr != nil || n < 1 || n > 65535:
			v.add(p.with("sync_peer"), "invalid address %q: port must be between 1 and 65535", h.SyncPeer)
		}
		if h.SyncUser == "" {
			v.add(p.with("sync_user"), "required with sync_peer: the peer's [[admin.user]] that pushes log in as")
		}
		if h.SyncPasswordFile == "" {
			v.add(p.with("sync_password_file"), "required with sync_peer: a file holding that user's password")
		} else if _, err := ReadSyncPassword(h.SyncPasswordFile); err != nil {
			v.add(p.with("sync_password_file"), "%v", err)
		}
	} else {
		for _, k := range []struct{ key, val string }{{"sync_user", h.SyncUser}, {"sync_password_file", h.SyncPasswordFile}, {"sync_ca", h.SyncCA}} {
			if k.val != "" {
				v.add(p.with(k.key), "used only with sync_peer")
			}
		}
	}
	if h.SyncCA != "" {
		if _, err := loadCAs(h.SyncCA); err != nil {
			v.add(p.with("sync_ca"), "cannot load the CA certificates: %v", err)
		}
	}
}

// ReadSyncPassword reads the password of sync_password_file: its first
// line, which must not be empty.
func ReadSyncPassword(name string) (string, error) {
	if err := regularFile(name); err != nil {
		return "", err
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", fmt.Errorf("%s: the first line (the password) is empty", name)
	}
	return line, nil
}

// validIfaceName checks the syntax of a Linux interface name (the kernel's
// dev_valid_name); whether it exists is checked at start.
func validIfaceName(s string) bool {
	if s == "" || len(s) > maxIfaceName || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return r == '/' || r == ':' || r <= ' ' || r >= 0x7f
	})
}
