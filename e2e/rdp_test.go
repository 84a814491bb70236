package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
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
