package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/fulcrumlb/fulcrum/config"
)

// transparent = true (TPROXY): connections to real servers are made from the
// client's own IP address, so that the real servers see it as the source.
// The socket is marked IP_TRANSPARENT (IPV6_TRANSPARENT), which lets it bind
// an address that is not the host's (ip(7), Linux's
// Documentation/networking/tproxy.rst); the replies, addressed to the
// client, must be routed back through this host and delivered to that
// socket: the routing recipe is in the README.

// transparentDialer returns the dialer that connects from the client's IP
// src (any port) to raddr. A client of another family than the real server
// cannot be its source: that is an error, counted as a connect error.
func transparentDialer(d *net.Dialer, src netip.Addr, raddr string) error {
	src = src.Unmap()
	if !src.IsValid() {
		return errors.New("transparent: the client's address is unknown")
	}
	if ap, err := netip.ParseAddrPort(raddr); err == nil && ap.Addr().Unmap().Is4() != src.Is4() {
		return fmt.Errorf("transparent: cannot connect from client %s to real server %s: not the same IP family", src, raddr)
	}
	d.LocalAddr = &net.TCPAddr{IP: src.AsSlice(), Zone: src.Zone()}
	v6 := src.Is6()
	d.Control = func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = setTransparent(int(fd), v6)
			if serr == nil {
				// The port is chosen at connect, not at bind: many
				// clients' connections from one address (a NAT) need
				// not share its ephemeral ports' bind-time pick (ip(7)
				// IP_BIND_ADDRESS_NO_PORT). An optimisation only.
				unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
	return nil
}

// setTransparent sets IP_TRANSPARENT (IPV6_TRANSPARENT on an IPv6 socket).
func setTransparent(fd int, v6 bool) error {
	var err error
	if v6 {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT, 1)
	} else {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TRANSPARENT, 1)
	}
	if err != nil {
		return fmt.Errorf("transparent: setsockopt IP_TRANSPARENT: %w", err)
	}
	return nil
}

// probeTransparent is the check that transparent = true can work: it sets
// IP_TRANSPARENT on a throwaway socket. A variable, so that tests can fail it.
var probeTransparent = func() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	return setTransparent(fd, false)
}

// checkTransparent refuses, at start and reload, a configuration with
// transparent = true that the process lacks the privilege for: without
// CAP_NET_ADMIN every connection to its real servers would fail.
func checkTransparent(cfg *config.Config) error {
	var err error
	checked := false
	for _, vs := range cfg.VirtualServices {
		if !vs.Transparent {
			continue
		}
		if !checked {
			err, checked = probeTransparent(), true
		}
		if err == nil {
			return nil
		}
		if errors.Is(err, unix.EPERM) {
			// ip(7): IP_TRANSPARENT takes CAP_NET_ADMIN, or CAP_NET_RAW.
			return fmt.Errorf("virtual service %q: transparent = true needs the CAP_NET_ADMIN capability "+
				"(run as root, or grant it, e.g. systemd AmbientCapabilities=CAP_NET_ADMIN): %w", vs.Name, err)
		}
		return fmt.Errorf("virtual service %q: transparent = true: %w", vs.Name, err)
	}
	return nil
}
