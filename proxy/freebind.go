package proxy

import (
	"context"
	"net"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenConfig binds every listen address with IP_FREEBIND (IPV6_FREEBIND
// on IPv6 sockets, ip(7), ipv6(7)): a floating IP that this node of an HA
// pair does not hold yet can be bound, and traffic flows the instant VRRP
// puts the address on the interface. For a local address it changes
// nothing.
var listenConfig = net.ListenConfig{Control: freebind}

func freebind(network, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if strings.HasSuffix(network, "6") {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1); serr == nil {
				return
			}
			// Before Linux 4.15 an IPv6 socket honours IP_FREEBIND.
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

func listenFreebind(addr string) (net.Listener, error) {
	return listenConfig.Listen(context.Background(), "tcp", addr)
}

func listenPacketFreebind(addr string) (net.PacketConn, error) {
	return listenConfig.ListenPacket(context.Background(), "udp", addr)
}
