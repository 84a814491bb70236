package l4

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// UDP through IPVS inside the VM, in the namespaces of netns_vm_test.go:
// each real server also runs a UDP echo server (udpEcho). IPVS keeps a UDP
// "connection" per client address and port, so each client socket is one
// flow, scheduled once: its later datagrams follow it.

// udpEcho starts an echo server in the namespace netns on each of addrs
// that answers every datagram with "NAME CLIENT-ADDRESS DATAGRAM", NAME
// being netns. One socket per address rather than one on the wildcard
// address: a wildcard socket answers from the address the route to the
// client picks (eth0's), not from the VIP the datagram was sent to, and the
// client drops the answer. Real UDP servers behind dr and tun (DNS servers,
// for one) bind each address for the same reason, or answer with
// IP_PKTINFO.
func udpEcho(netns string, addrs ...string) ([]net.PacketConn, error) {
	var pcs []net.PacketConn
	for _, addr := range addrs {
		var pc net.PacketConn
		err := inNetns(netns, func() (err error) {
			pc, err = net.ListenPacket("udp", addr)
			return err
		})
		if err != nil {
			for _, pc := range pcs {
				pc.Close()
			}
			return nil, fmt.Errorf("udp echo server in %s: %w", netns, err)
		}
		pcs = append(pcs, pc)
		go func() {
			buf := make([]byte, 512)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				host, _, _ := net.SplitHostPort(from.String())
				pc.WriteTo(fmt.Appendf(nil, "%s %s %s", netns, host, buf[:n]), from)
			}
		}()
	}
	return pcs, nil
}

// udpFlow is a client socket connected to a VIP: one IPVS flow for as long
// as it lives. Connected, it takes datagrams from the VIP:port only: an
// answer from any other address (a real server's own) never reaches ask.
type udpFlow struct {
	*net.UDPConn
	vip string
	n   int
}

// dialUDP opens a flow from the client namespace to vipPort.
func dialUDP(t *testing.T, vipPort string) *udpFlow {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", vipPort)
	if err != nil {
		t.Fatal(err)
	}
	var c *net.UDPConn
	err = inNetns("client", func() (err error) {
		c, err = net.DialUDP("udp", nil, raddr)
		return err
	})
	if err != nil {
		t.Fatalf("udp socket to %s in the client: %v", vipPort, err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpFlow{UDPConn: c, vip: vipPort}
}

// ask sends a datagram and returns the answering real server's name and
// the client address it saw. A datagram can be lost, so ask sends it again
// every 500 ms, on the same socket (the same flow), for up to 10 s; each
// carries a nonce, so that a late answer to an earlier ask is not taken for
// this one's.
func (f *udpFlow) ask(t *testing.T) (server, seen string) {
	t.Helper()
	f.n++
	nonce := fmt.Sprintf("%s#%d", f.LocalAddr(), f.n)
	buf := make([]byte, 512)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if _, err := f.Write([]byte(nonce)); err != nil {
			t.Fatalf("udp to %s: %v", f.vip, err)
		}
		f.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, err := f.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				// ECONNREFUSED: an ICMP port unreachable came back.
				t.Fatalf("udp from %s: %v", f.vip, err)
			}
			if a := strings.Fields(string(buf[:n])); len(a) == 3 && a[2] == nonce {
				return a[0], a[1]
			}
		}
	}
	t.Fatalf("udp: no answer to %s from %s (the VIP) within 10 s", nonce, f.vip)
	return "", ""
}

func TestVMUDPDelivery(t *testing.T) {
	lab(t)
	rss := func(ip1, ip2 string) []RealServer {
		return []RealServer{rsAt("rs1", ip1, rsPort, 1), rsAt("rs2", ip2, rsPort, 1)}
	}
	tests := []struct {
		name     string
		svc      Service
		clientIP string // the client address the real servers see
		// replies: whether they pass the director (its out-packet counter).
		replies bool
	}{
		{"nat", Service{Name: "udp-nat", Protocol: UDP, VIP: ap(natVIP + ":53"), Forwarding: NAT, Scheduler: "rr",
			RealServers: rss("192.0.2.11", "192.0.2.12")}, "198.51.100.2", true},
		{"dr", Service{Name: "udp-dr", Protocol: UDP, VIP: ap(fmt.Sprintf("%s:%d", drVIP, rsPort)), Forwarding: DirectRouting, Scheduler: "rr",
			RealServers: rss("192.0.2.11", "192.0.2.12")}, "192.0.2.2", false},
		{"tun", Service{Name: "udp-tun", Protocol: UDP, VIP: ap(fmt.Sprintf("%s:%d", tunVIP, rsPort)), Forwarding: Tunnel, Scheduler: "rr",
			RealServers: rss("192.0.2.11", "192.0.2.12")}, "192.0.2.2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t)
			if _, err := m.Reconcile([]Service{tt.svc}); err != nil {
				t.Fatal(err)
			}
			defer m.Reconcile(nil)
			servers := map[string]int{}
			for range 4 {
				f := dialUDP(t, tt.svc.VIP.String())
				server, seen := f.ask(t)
				if seen != tt.clientIP {
					t.Errorf("%s saw the client as %s, want %s (IPVS keeps the client's address)", server, seen, tt.clientIP)
				}
				if again, _ := f.ask(t); again != server {
					t.Errorf("one flow (source port) went to %s, then to %s", server, again)
				}
				servers[server]++
				f.Close()
			}
			if servers["rs1"] != 2 || servers["rs2"] != 2 {
				t.Errorf("round robin over 4 flows: %v, want 2 each", servers)
			}
			st := waitStats(t, m, func(s ServiceStats) bool { return s.Connections == 4 && s.InPackets >= 8 })
			if out := st.OutPackets; tt.replies != (out > 0) {
				t.Errorf("the director forwarded %d reply packets: want replies through it %v", out, tt.replies)
			}
		})
	}
}

// Weight 0 gets no new UDP flow, while a flow already on it carries on
// (quiescent, as for TCP connections).
func TestVMUDPWeightZero(t *testing.T) {
	lab(t)
	m := newManager(t)
	svc := Service{Name: "udp-q", Protocol: UDP, VIP: ap(natVIP + ":54"), Forwarding: NAT, Scheduler: "wrr",
		RealServers: []RealServer{rsAt("rs1", "192.0.2.11", rsPort, 1), rsAt("rs2", "192.0.2.12", rsPort, 1)}}
	if _, err := m.Reconcile([]Service{svc}); err != nil {
		t.Fatal(err)
	}
	defer m.Reconcile(nil)
	var onRS2 *udpFlow
	for i := 0; onRS2 == nil && i < 4; i++ {
		f := dialUDP(t, svc.VIP.String())
		if server, _ := f.ask(t); server == "rs2" {
			onRS2 = f
		}
	}
	if onRS2 == nil {
		t.Fatal("no flow reached rs2")
	}
	if _, err := m.SetWeight(svc.Key(), ap(fmt.Sprintf("192.0.2.12:%d", rsPort)), 0); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		if server, _ := dialUDP(t, svc.VIP.String()).ask(t); server != "rs1" {
			t.Fatalf("a new flow reached %s at weight 0", server)
		}
	}
	if server, _ := onRS2.ask(t); server != "rs2" {
		t.Errorf("the flow on rs2 went to %s after rs2's weight became 0, want rs2 still (quiescent)", server)
	}
}
