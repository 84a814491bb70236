package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/persistence"
)

// rdpHost is a stand-in RDP session host: it records the X.224 Connection
// Request each connection starts with (one TPKT), then hangs up. The RDP
// client fails after that, which does not matter: the test judges on the
// real-server side which host the client reached, and with which bytes.
type rdpHost struct {
	name string
	addr string
	mu   sync.Mutex
	got  [][]byte
}

func newRDPHost(t *testing.T, name string) *rdpHost {
	h := &rdpHost{name: name}
	h.addr = serveTCP(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var tpkt [4]byte
		if _, err := io.ReadFull(c, tpkt[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(tpkt[2:]))
		if n < 4 {
			return
		}
		b := make([]byte, n)
		copy(b, tpkt[:])
		if _, err := io.ReadFull(c, b[4:]); err != nil {
			return
		}
		h.mu.Lock()
		h.got = append(h.got, b)
		h.mu.Unlock()
	})
	return h
}

func (h *rdpHost) requests() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]byte(nil), h.got...)
}

// xfreerdp runs the real RDP client (FreeRDP, under a virtual X server)
// against vip with the extra arguments.
func xfreerdp(t *testing.T, vip string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append([]string{"-a", "xfreerdp", "/v:" + vip, "/cert:ignore", "/timeout:5000"}, args...)
	out, _ := exec.CommandContext(ctx, "xvfb-run", argv...).CombinedOutput() // its exit code is irrelevant
	if ctx.Err() != nil {
		t.Fatalf("xfreerdp %v did not end within 30s:\n%s", args, out)
	}
}

// TestRDPCookieWithRealClient drives xfreerdp through Fulcrum in tcp mode
// with rdp_cookie persistence: a user (mstshash) comes back to the host
// that has their session, and an RD Connection Broker routing token (msts)
// goes to the host it names, whatever the scheduler would pick. The hosts
// receive the client's bytes unchanged.
func TestRDPCookieWithRealClient(t *testing.T) {
	for _, tool := range []string{"xfreerdp", "xvfb-run"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: install freerdp2-x11 and xvfb (Debian) to run the RDP client test", tool)
		}
	}
	hosts := []*rdpHost{newRDPHost(t, "ts1"), newRDPHost(t, "ts2"), newRDPHost(t, "ts3")}
	vip := freeAddr(t)
	var reals []real
	for _, h := range hosts {
		reals = append(reals, real{name: h.name, address: h.addr})
	}
	startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   "mode = \"tcp\"\n\n[virtual_service.persistence]\nmethod = \"rdp_cookie\"\ntimeout = \"1h\"\n",
		real:   reals,
	}}})
	// reached returns which host got a new connection request since before.
	count := func() []int {
		n := make([]int, len(hosts))
		for i, h := range hosts {
			n[i] = len(h.requests())
		}
		return n
	}
	connect := func(args ...string) (*rdpHost, []byte) {
		t.Helper()
		before := count()
		xfreerdp(t, vip, args...)
		var hit *rdpHost
		var req []byte
		// FreeRDP may connect more than once (it retries with other
		// security protocols when the host hangs up); every connection must
		// reach the same host.
		for i, h := range hosts {
			if got := h.requests(); len(got) > before[i] {
				if hit != nil {
					t.Fatalf("xfreerdp %v reached more than one host", args)
				}
				hit, req = h, got[before[i]]
			}
		}
		if hit == nil {
			t.Fatalf("xfreerdp %v reached no host", args)
		}
		return hit, req
	}

	alice, req := connect("/u:alice")
	if !bytes.Contains(req, []byte("Cookie: mstshash=alice\r\n")) {
		t.Errorf("the host got %q, want the client's Connection Request unchanged", req)
	}
	if _, err := persistence.ParseRDP(req); err != nil {
		t.Errorf("the forwarded request does not parse: %v (%x)", err, req)
	}
	bob, _ := connect("/u:bob")
	if bob == alice {
		t.Logf("note: bob was scheduled to alice's host %s", alice.name)
	}
	for range 2 {
		if h, _ := connect("/u:alice"); h != alice {
			t.Errorf("alice came back to %s, want %s (her session's host)", h.name, alice.name)
		}
	}
	// Routing tokens name the host; the scheduler is bypassed.
	for _, target := range []*rdpHost{hosts[2], hosts[0], hosts[2]} {
		ap := netip.MustParseAddrPort(target.addr)
		token := persistence.EncodeRoutingToken(ap) // "Cookie: msts=..."
		h, req := connect("/u:carol", "/load-balance-info:"+token)
		if h != target {
			t.Errorf("routing token for %s (%s) reached %s", target.name, token, h.name)
		}
		if !bytes.Contains(req, []byte(token+"\r\n")) {
			t.Errorf("the host got %q, want the routing token unchanged", req)
		}
	}
}

// TestRDPInspectFallback: with rdp_cookie persistence, a client that sends
// something else than an RDP Connection Request, or nothing at all, is
// scheduled normally — the silent one after inspect_delay, not later — and
// its bytes reach the real server unchanged. tcp source_ip persistence is
// checked on the same hosts.
func TestRDPInspectFallback(t *testing.T) {
	echo := func(name string) *tcpBackend {
		return newTCPBackend(t, name, func(c *net.TCPConn) {
			fmt.Fprintf(c, "%s\n", name)
			io.Copy(c, c)
		})
	}
	a, b := echo("a"), echo("b")
	vip := freeAddr(t)
	vip2 := freeAddr(t)
	startFulcrum(t, config{services: []service{
		{name: "rdp", listen: []string{vip}, opts: "mode = \"tcp\"\n\n[virtual_service.persistence]\nmethod = \"rdp_cookie\"\ninspect_delay = \"300ms\"\n",
			real: []real{a.real(), b.real()}},
		{name: "src", listen: []string{vip2}, opts: "mode = \"tcp\"\n\n[virtual_service.persistence]\nmethod = \"source_ip\"\n",
			real: []real{a.real(), b.real()}},
	}})

	// Not RDP: scheduled at once, bytes unchanged.
	c, err := net.Dial("tcp", vip)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatalf("non-RDP client: %v", err)
	}
	if echoed, err := br.ReadString('\n'); err != nil || echoed != "GET / HTTP/1.1\r\n" {
		t.Errorf("non-RDP bytes came back as %q, %v", echoed, err)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("non-RDP client waited %s; it should not wait for inspect_delay", d)
	}

	// Silent: scheduled after inspect_delay (300ms), not before, not much later.
	s, err := net.Dial("tcp", vip)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(5 * time.Second))
	start = time.Now()
	if _, err := bufio.NewReader(s).ReadString('\n'); err != nil {
		t.Fatalf("silent client: %v", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("silent client connected after %s, want about inspect_delay (300ms)", d)
	}

	// tcp source_ip: each address sticks.
	for _, ip := range []string{"127.0.0.21", "127.0.0.22", "127.0.0.23"} {
		var first string
		for i := range 4 {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
			c, err := d.Dial("tcp", vip2)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			name, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = name
			} else if name != first {
				t.Errorf("%s: connection %d reached %q, first %q", ip, i, name, first)
			}
		}
	}
}
