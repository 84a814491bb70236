package ha

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Priorities of the operator's overrides. Takeover uses 254, the highest
// below the address owner's 255, which would make the Node deaf to the
// others (RFC 5798 §7.1) and keep it Master even after a release.
const (
	TakeoverPriority = 254
	ReleasePriority  = 1
)

// GroupConfig is the [ha] section at run time.
type GroupConfig struct {
	// Interface speaks VRRP and carries the addresses. Required.
	Interface string
	// VRID, Priority, AdvertInterval, Preempt and PreemptDelay are as in
	// NodeConfig and Settings, the same for each family.
	VRID           uint8
	Priority       uint8
	AdvertInterval time.Duration
	Preempt        bool
	PreemptDelay   time.Duration
	// VIPs are the floating IPs; one Node runs per family present.
	VIPs []netip.Prefix
	// Peers replace the multicast group, each with the Node of its family.
	Peers []netip.Addr
	// Notify is a command and its arguments, run on each transition with
	// three more: the state, the VRID and the priority. Nil runs nothing.
	Notify []string
	// NotifyTimeout bounds a notify command. If zero, 10s.
	NotifyTimeout time.Duration
	// TrackDown, if set, is polled every AdvertInterval: while it reports
	// true (a tracked virtual service is red), the priority is lowered by
	// TrackWeight, not below 1.
	TrackDown   func() bool
	TrackWeight uint8
	// Log receives the transitions. If nil, nothing is logged.
	Log *zap.Logger
	// OnChange, if set, is called after each transition of a family's
	// Node, from that Node's goroutine: keep it short.
	OnChange func(family string, from, to State)

	// Listen opens a family's Conn. If nil, Listen (raw sockets).
	Listen func(ConnConfig) (Conn, error)
	// Addrs puts the addresses on the interface. If nil, the netlink
	// AddressManager of Interface.
	Addrs AddressManager
	// Clock is the Nodes' clock. If nil, the system clock.
	Clock Clock
}

// Families, as they appear in logs, metrics and the API.
const (
	FamilyIPv4 = "ipv4"
	FamilyIPv6 = "ipv6"
)

// Group is the [ha] section at run time: one Node per address family of
// the floating IPs, with the same VRID (IPv4 and IPv6 virtual routers are
// separate, RFC 5798 §1), and the operator's overrides.
type Group struct {
	cfg   GroupConfig
	log   *zap.Logger
	nodes []*groupNode

	mu       sync.Mutex
	started  bool
	stopped  bool
	override PriorityChange // Adjust: none; Takeover or Release
	tracked  bool           // a tracked service is down
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	notifyWG sync.WaitGroup
}

type groupNode struct {
	family string
	vips   []netip.Prefix
	node   *Node
}

// NewGroup opens a Conn per family (the interface must exist and have an
// address of that family: its first IPv4 address, its IPv6 link-local one)
// and prepares the Nodes; Start runs them.
func NewGroup(cfg GroupConfig) (*Group, error) {
	if cfg.Interface == "" {
		return nil, errors.New("ha: no interface")
	}
	if cfg.Listen == nil {
		cfg.Listen = Listen
	}
	if cfg.NotifyTimeout == 0 {
		cfg.NotifyTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Addrs == nil {
		a, err := NewLinkAddresses(cfg.Interface, cfg.Log)
		if err != nil {
			return nil, err
		}
		cfg.Addrs = a
	}
	g := &Group{cfg: cfg, log: cfg.Log}
	for _, fam := range []struct {
		name string
		v6   bool
	}{{FamilyIPv4, false}, {FamilyIPv6, true}} {
		var vips []netip.Prefix
		for _, p := range cfg.VIPs {
			if p.Addr().Unmap().Is6() == fam.v6 {
				vips = append(vips, p)
			}
		}
		if len(vips) == 0 {
			continue
		}
		var peers []netip.Addr
		for _, p := range cfg.Peers {
			if p.Unmap().Is6() == fam.v6 {
				peers = append(peers, p)
			}
		}
		conn, err := cfg.Listen(ConnConfig{Interface: cfg.Interface, IPv6: fam.v6, Peers: peers})
		if err != nil {
			g.closeConns()
			return nil, fmt.Errorf("ha: %s: %w", fam.name, err)
		}
		family := fam.name
		node, err := NewNode(NodeConfig{
			VRID: cfg.VRID,
			Settings: Settings{
				Priority: cfg.Priority, AdvertInterval: cfg.AdvertInterval,
				Preempt: cfg.Preempt, PreemptDelay: cfg.PreemptDelay,
			},
			VIPs: vips,
			Log:  cfg.Log.With(zap.String("family", family)),
			OnStateChange: func(from, to State) {
				g.changed(family, from, to)
			},
		}, conn, cfg.Addrs, cfg.Clock)
		if err != nil {
			conn.Close()
			g.closeConns()
			return nil, fmt.Errorf("ha: %s: %w", fam.name, err)
		}
		g.nodes = append(g.nodes, &groupNode{family: family, vips: vips, node: node})
	}
	if len(g.nodes) == 0 {
		return nil, errors.New("ha: no floating IP")
	}
	return g, nil
}

// closeConns closes the Conns of the Nodes made so far (NewGroup failed).
func (g *Group) closeConns() {
	for _, n := range g.nodes {
		n.node.conn.Close()
	}
}

// Start runs the Nodes until Stop or ctx ends. A cancelled ctx is not
// graceful (see Node.Run); Stop is.
func (g *Group) Start(ctx context.Context) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.started {
		return
	}
	g.started = true
	ctx, g.cancel = context.WithCancel(ctx)
	for _, n := range g.nodes {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if err := n.node.Run(ctx); err != nil {
				g.log.Error("HA: virtual router stopped", zap.String("family", n.family), zap.Error(err))
			}
		}()
	}
	if g.cfg.TrackDown != nil {
		g.wg.Add(1)
		go g.track(ctx)
	}
}

// Stop stops every Node gracefully: a Master sends priority 0 so that the
// Backup takes over after its Skew_Time only, and drops the addresses
// (RFC 5798 §6.4.3). It waits for the notify commands started so far.
func (g *Group) Stop() {
	g.mu.Lock()
	if !g.started || g.stopped {
		g.mu.Unlock()
		return
	}
	g.stopped = true
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range g.nodes {
		wg.Go(n.node.Stop)
	}
	wg.Wait()
	g.cancel()
	g.wg.Wait()
	g.notifyWG.Wait()
}

// Takeover makes this node Master at once and keeps it there (priority
// 254) until Release, Auto or a restart.
func (g *Group) Takeover() error { return g.setOverride(Takeover) }

// Release hands over: a Master leaves as on shutdown, and the node stays a
// Backup with priority 1, so that a preempting peer does not lose the
// addresses back to it; it still takes over if the peer fails. Until
// Takeover, Auto or a restart.
func (g *Group) Release() error { return g.setOverride(Release) }

// Auto drops an override: the configured priority (less tracking) again.
func (g *Group) Auto() error { return g.setOverride(Adjust) }

func (g *Group) setOverride(c PriorityChange) error {
	g.mu.Lock()
	if !g.started || g.stopped {
		g.mu.Unlock()
		return errors.New("ha: not running")
	}
	g.override = c
	p := g.priorityLocked()
	g.mu.Unlock()
	g.log.Info("HA: priority override", zap.String("override", overrideName(c)), zap.Uint8("priority", p))
	for _, n := range g.nodes {
		n.node.SetPriority(p, c)
	}
	return nil
}

// priorityLocked is the priority the Nodes should have now. g.mu is held.
func (g *Group) priorityLocked() uint8 {
	switch g.override {
	case Takeover:
		return TakeoverPriority
	case Release:
		return ReleasePriority
	}
	p := g.cfg.Priority
	if p == 0 {
		p = 100
	}
	if g.tracked {
		p = uint8(max(1, int(p)-int(g.cfg.TrackWeight)))
	}
	return p
}

func overrideName(c PriorityChange) string {
	switch c {
	case Takeover:
		return "takeover"
	case Release:
		return "release"
	}
	return ""
}

// track polls TrackDown and adjusts the priority when it changes.
func (g *Group) track(ctx context.Context) {
	defer g.wg.Done()
	every := g.cfg.AdvertInterval
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		down := g.cfg.TrackDown()
		g.mu.Lock()
		changed := down != g.tracked && !g.stopped
		g.tracked = down
		p := g.priorityLocked()
		override := g.override
		g.mu.Unlock()
		if changed {
			g.log.Info("HA: tracked service", zap.Bool("down", down), zap.Uint8("priority", p))
			if override == Adjust {
				for _, n := range g.nodes {
					n.node.SetPriority(p, Adjust)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// changed is called by a Node after each transition.
func (g *Group) changed(family string, from, to State) {
	st := g.node(family).Status()
	g.log.Info("HA state", zap.Stringer("from", from), zap.Stringer("to", to), zap.String("family", family),
		zap.Uint8("vrid", g.cfg.VRID), zap.Uint8("priority", st.Priority))
	if len(g.cfg.Notify) > 0 {
		args := append(g.cfg.Notify[1:len(g.cfg.Notify):len(g.cfg.Notify)],
			to.String(), strconv.Itoa(int(g.cfg.VRID)), strconv.Itoa(int(st.Priority)))
		g.notifyWG.Go(func() { g.notify(args) })
	}
	if g.cfg.OnChange != nil {
		g.cfg.OnChange(family, from, to)
	}
}

// notify runs the notify command without a shell; it never blocks the Node.
func (g *Group) notify(args []string) {
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.NotifyTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, g.cfg.Notify[0], args...).CombinedOutput()
	log := g.log.With(zap.String("command", g.cfg.Notify[0]), zap.Strings("args", args))
	if err != nil {
		log.Warn("HA: notify failed", zap.Error(err), zap.ByteString("output", out))
		return
	}
	log.Info("HA: notify ran", zap.ByteString("output", out))
}

func (g *Group) node(family string) *Node {
	for _, n := range g.nodes {
		if n.family == family {
			return n.node
		}
	}
	return nil
}

// Status is a snapshot of the group, as the admin API shows it.
type Status struct {
	Interface string `json:"interface"`
	VRID      int    `json:"vrid"`
	// Priority is the configured one; each family's is the one in use.
	Priority int `json:"priority"`
	// Override is "takeover", "release" or empty.
	Override string `json:"override,omitempty"`
	// TrackedDown is true while a tracked service is red.
	TrackedDown bool `json:"tracked_down,omitempty"`
	// State sums the families up: master, backup, initialize, or mixed
	// when they differ.
	State    string         `json:"state"`
	Families []FamilyStatus `json:"families"`
}

// FamilyStatus is one family's virtual router.
type FamilyStatus struct {
	Family   string    `json:"family"`
	State    string    `json:"state"`
	Since    time.Time `json:"since"`
	Priority int       `json:"priority"`
	Local    string    `json:"local"`
	// Master is the Master's address (ours when Master), empty if none is
	// known; MasterPriority its priority.
	Master         string   `json:"master,omitempty"`
	MasterPriority int      `json:"master_priority,omitempty"`
	VIPs           []string `json:"vips"`
	// Peer is "up" when a Backup hears a Master, "down" when it does
	// not, and "unknown" for a Master: a VRRP Backup is silent.
	Peer string `json:"peer"`
}

// Status returns a snapshot; safe for concurrent use.
func (g *Group) Status() Status {
	g.mu.Lock()
	st := Status{
		Interface: g.cfg.Interface, VRID: int(g.cfg.VRID), Priority: int(g.cfg.Priority),
		Override: overrideName(g.override), TrackedDown: g.tracked,
	}
	g.mu.Unlock()
	if st.Priority == 0 {
		st.Priority = 100
	}
	for i, n := range g.nodes {
		ns := n.node.Status()
		fs := FamilyStatus{
			Family: n.family, State: ns.State.String(), Since: ns.Since, Priority: int(ns.Priority),
			Local: ns.LocalAddr.String(), Peer: "down",
		}
		if ns.Master.IsValid() {
			fs.Master, fs.MasterPriority = ns.Master.String(), int(ns.MasterPriority)
		}
		switch {
		case ns.State == Master:
			fs.Peer = "unknown"
		case ns.State == Backup && ns.Master.IsValid():
			fs.Peer = "up"
		}
		for _, p := range n.vips {
			fs.VIPs = append(fs.VIPs, p.String())
		}
		switch {
		case i == 0:
			st.State = fs.State
		case st.State != fs.State:
			st.State = "mixed"
		}
		st.Families = append(st.Families, fs)
	}
	return st
}
