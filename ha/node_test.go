package ha

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeConn is a Conn fed by the test.
type fakeConn struct {
	local  netip.Addr
	in     chan readResult
	sent   chan Advertisement
	once   sync.Once
	closed chan struct{}
}

type readResult struct {
	in  Inbound
	err error
}

func newFakeConn(local netip.Addr) *fakeConn {
	return &fakeConn{local: local, in: make(chan readResult), sent: make(chan Advertisement, 100), closed: make(chan struct{})}
}

func (c *fakeConn) Read() (Inbound, error) {
	select {
	case r := <-c.in:
		return r.in, r.err
	case <-c.closed:
		return Inbound{}, net.ErrClosed
	}
}

func (c *fakeConn) Send(a Advertisement) error {
	c.sent <- a
	return nil
}

func (c *fakeConn) LocalAddr() netip.Addr { return c.local }
func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// nodeHarness runs a Node on a fake conn, clock and address manager.
type nodeHarness struct {
	t      *testing.T
	conn   *fakeConn
	clock  *FakeClock
	addrs  *FakeAddresses
	node   *Node
	states chan State
	cancel context.CancelFunc
	runErr chan error
}

var vip = netip.MustParsePrefix("10.0.0.21/24")

func startNode(t *testing.T, s Settings) *nodeHarness {
	t.Helper()
	h := &nodeHarness{t: t, conn: newFakeConn(local), clock: NewFakeClock(t0), addrs: &FakeAddresses{},
		states: make(chan State, 10), runErr: make(chan error, 1)}
	var err error
	h.node, err = NewNode(NodeConfig{VRID: 51, Settings: s, VIPs: []netip.Prefix{vip},
		OnStateChange: func(_, to State) { h.states <- to }}, h.conn, h.addrs, h.clock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.runErr <- h.node.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-h.node.done
	})
	h.wantState(Backup)
	return h
}

func (h *nodeHarness) wantState(want State) {
	h.t.Helper()
	select {
	case got := <-h.states:
		if got != want {
			h.t.Fatalf("state %s, want %s", got, want)
		}
	case <-time.After(5 * time.Second):
		h.t.Fatalf("no transition to %s", want)
	}
}

func (h *nodeHarness) wantSent(prio uint8) {
	h.t.Helper()
	select {
	case a := <-h.conn.sent:
		want := Advertisement{VRID: 51, Priority: prio, MaxAdvertInt: 100, Addrs: []netip.Addr{vip.Addr()}}
		if fmt.Sprint(a) != fmt.Sprint(want) {
			h.t.Fatalf("sent %+v, want %+v", a, want)
		}
	case <-time.After(5 * time.Second):
		h.t.Fatalf("nothing sent, want priority %d", prio)
	}
}

func (h *nodeHarness) wantNothingSent() {
	h.t.Helper()
	select {
	case a := <-h.conn.sent:
		h.t.Fatalf("sent %+v, want nothing", a)
	default:
	}
}

// feed delivers a packet; it returns once the Node's reader has it.
func (h *nodeHarness) feed(from netip.Addr, a Advertisement) {
	h.conn.in <- readResult{in: Inbound{Advert: a, Src: from, Dst: GroupIPv4}}
}

// toMaster advances exactly to the end of the first Master_Down_Interval.
func (h *nodeHarness) toMaster() {
	h.t.Helper()
	h.clock.Advance(t0.Add(down150).Sub(h.clock.Now()))
	h.wantState(Master)
	h.wantSent(150)
	if want := []string{"add [10.0.0.21/24]", "announce [10.0.0.21/24]"}; !slices.Equal(h.addrs.Calls(), want) {
		h.t.Fatalf("address calls %q, want %q", h.addrs.Calls(), want)
	}
}

var base150 = Settings{Priority: 150, AdvertInterval: time.Second, Preempt: true}

func TestNodeMasterAndAdverts(t *testing.T) {
	h := startNode(t, base150)
	h.clock.Advance(down150 - time.Millisecond)
	h.wantNothingSent()
	h.toMaster()
	for range 3 {
		h.clock.BlockUntil(1) // the next Adver_Timer
		h.clock.Advance(time.Second)
		h.wantSent(150)
	}
	if got := h.node.State(); got != Master {
		t.Fatalf("State() = %s", got)
	}
}

func TestNodeStepsDownToHigherPriority(t *testing.T) {
	h := startNode(t, base150)
	h.toMaster()
	h.feed(peer, Advertisement{VRID: 51, Priority: 200, MaxAdvertInt: 100, Addrs: []netip.Addr{vip.Addr()}})
	h.wantState(Backup)
	if h.addrs.Held(vip) {
		t.Fatal("the VIP is still held in Backup")
	}
	// A Backup does not advertise.
	h.clock.Advance(3 * time.Second)
	h.wantNothingSent()
}

func TestNodeIgnoresOtherVRIDsAndDiscards(t *testing.T) {
	h := startNode(t, base150)
	// Another virtual router's Master on the link, and a bad packet: no
	// effect; the Master_Down_Timer still runs out.
	h.feed(peer, Advertisement{VRID: 52, Priority: 200, MaxAdvertInt: 100})
	h.conn.in <- readResult{err: fmt.Errorf("%w: TTL 64", ErrDiscarded)}
	h.toMaster()
}

func TestNodeGracefulStop(t *testing.T) {
	h := startNode(t, base150)
	h.toMaster()
	h.node.Stop()
	h.wantSent(PriorityStop)
	h.wantState(Initialize)
	if h.addrs.Held(vip) {
		t.Fatal("the VIP is still held after Stop")
	}
	if err := <-h.runErr; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestNodeCancelIsSilent(t *testing.T) {
	h := startNode(t, base150)
	h.toMaster()
	h.cancel()
	h.wantState(Initialize)
	if err := <-h.runErr; err != nil {
		t.Fatalf("Run = %v", err)
	}
	h.wantNothingSent()
	if h.addrs.Held(vip) {
		t.Fatal("the VIP is still held after cancel")
	}
}

func TestNodeReadErrorIsFatal(t *testing.T) {
	h := startNode(t, base150)
	h.conn.in <- readResult{err: errors.New("socket gone")}
	h.wantState(Initialize)
	if err := <-h.runErr; err == nil || err.Error() != "socket gone" {
		t.Fatalf("Run = %v, want socket gone", err)
	}
}

func TestNewNodeErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     NodeConfig
		errText string
	}{
		{"no VRID", NodeConfig{VIPs: []netip.Prefix{vip}}, "vrid: must be 1..255"},
		{"no VIP", NodeConfig{VRID: 1}, "no virtual address"},
		{"wrong family", NodeConfig{VRID: 1, VIPs: []netip.Prefix{netip.MustParsePrefix("fd00::21/64")}}, "virtual address fd00::21/64: not of the family of 10.0.0.1"},
		{"bad interval", NodeConfig{VRID: 1, VIPs: []netip.Prefix{vip}, Settings: Settings{AdvertInterval: time.Millisecond}}, "advert interval 1ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewNode(tt.cfg, newFakeConn(local), &FakeAddresses{}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("NewNode error = %v, want one containing %q", err, tt.errText)
			}
		})
	}
}
