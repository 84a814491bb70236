package ha

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// AddressManager puts the virtual addresses on the interface and takes
// them off. The Node calls it from one goroutine at a time.
type AddressManager interface {
	// AddVIPs adds the addresses (becoming Master).
	AddVIPs(vips []netip.Prefix) error
	// RemoveVIPs removes them (leaving Master).
	RemoveVIPs(vips []netip.Prefix) error
	// Announce tells the link the addresses moved to us: gratuitous ARP
	// for IPv4, unsolicited Neighbor Advertisements for IPv6 (RFC 5798
	// §6.4.1, §6.4.2; RFC 4861 §7.2.6).
	Announce(vips []netip.Prefix) error
}

// NodeConfig configures a Node: one virtual router of one address family.
type NodeConfig struct {
	// VRID is the Virtual Router Identifier, 1..255. Required.
	VRID uint8
	// Priority, AdvertInterval, Preempt and PreemptDelay are as in
	// Settings; LocalAddr comes from the Conn.
	Settings Settings
	// VIPs are the virtual addresses, all of the Conn's family; their
	// addresses are advertised in that order. Required.
	VIPs []netip.Prefix
	// Log receives state changes and discarded packets. If nil, nothing
	// is logged.
	Log *zap.Logger
	// OnStateChange, if set, is called from the Node's goroutine after
	// each transition, once its actions are done.
	OnStateChange func(from, to State)
}

// Node runs one virtual router: the Machine, fed by a Conn and a Clock,
// acting on an AddressManager.
type Node struct {
	cfg   NodeConfig
	m     *Machine
	conn  Conn
	addrs AddressManager
	clock Clock
	log   *zap.Logger
	vips  []netip.Addr

	events   chan Event
	prios    chan prioRequest
	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}
	timer    Timer

	mu             sync.Mutex
	state          State
	since          time.Time  // of the last transition
	priority       uint8      // ours, as the Machine has it now
	master         netip.Addr // the Master, as the Machine knows it
	masterPriority uint8
	mismatch       bool // the Master's addresses differ from ours, logged
}

// NodeStatus is a snapshot of a Node.
type NodeStatus struct {
	State    State
	Since    time.Time // of the last transition; zero before Run
	Priority uint8     // ours now (takeover, release and tracking change it)
	// Master is the current Master's address (ours when Master); invalid
	// when none is known.
	Master         netip.Addr
	MasterPriority uint8
	LocalAddr      netip.Addr
}

// NewNode returns a Node; Run starts it.
func NewNode(cfg NodeConfig, conn Conn, addrs AddressManager, clock Clock) (*Node, error) {
	if cfg.VRID == 0 {
		return nil, errors.New("vrrp: vrid: must be 1..255")
	}
	if len(cfg.VIPs) == 0 {
		return nil, errors.New("vrrp: no virtual address")
	}
	if len(cfg.VIPs) > 255 {
		return nil, fmt.Errorf("vrrp: %d virtual addresses, at most 255", len(cfg.VIPs))
	}
	local := conn.LocalAddr()
	var vips []netip.Addr
	for _, p := range cfg.VIPs {
		a := p.Addr().Unmap()
		if a.Is4() != local.Is4() {
			return nil, fmt.Errorf("vrrp: virtual address %v: not of the family of %v", p, local)
		}
		vips = append(vips, a)
	}
	s := cfg.Settings
	s.LocalAddr = local
	m, err := NewMachine(s)
	if err != nil {
		return nil, err
	}
	if clock == nil {
		clock = SystemClock{}
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	return &Node{
		cfg: cfg, m: m, conn: conn, addrs: addrs, clock: clock, vips: vips,
		log:      log.With(zap.Uint8("vrid", cfg.VRID), zap.Stringer("src", local)),
		events:   make(chan Event),
		prios:    make(chan prioRequest),
		stopc:    make(chan struct{}),
		done:     make(chan struct{}),
		priority: m.Priority(),
	}, nil
}

// Status is a snapshot; safe for concurrent use.
func (n *Node) Status() NodeStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := NodeStatus{State: n.state, Since: n.since, Priority: n.priority, LocalAddr: n.conn.LocalAddr()}
	if n.state != Initialize {
		st.Master, st.MasterPriority = n.master, n.masterPriority
	}
	return st
}

// SetPriority changes the priority at run time (see PriorityChange). It
// returns once the Node has applied it, or at once if Run has ended.
func (n *Node) SetPriority(p uint8, c PriorityChange) {
	applied := make(chan struct{})
	select {
	case n.prios <- prioRequest{SetPriority(p, c), applied}:
		<-applied
	case <-n.done:
	}
}

// prioRequest is a SetPriority event and the channel closed once applied.
type prioRequest struct {
	ev      Event
	applied chan struct{}
}

// State is the current state; safe for concurrent use.
func (n *Node) State() State {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

// Stop stops Run gracefully: a Master sends an advertisement with priority
// 0, so that the best Backup takes over after only its Skew_Time, and
// removes the addresses (RFC 5798 §6.4.3). It returns once Run has, so
// call it only after Run was started.
func (n *Node) Stop() {
	n.stopOnce.Do(func() { close(n.stopc) })
	<-n.done
}

// Run runs the virtual router until Stop, a cancelled ctx or a fatal
// transport error, and closes the Conn. Stop is graceful. A cancelled ctx
// is not: nothing more is sent, as if the process died, and the Backups
// take over after Master_Down_Interval; the addresses are still removed.
// Run returns nil when stopped by Stop or ctx.
func (n *Node) Run(ctx context.Context) error {
	defer close(n.done)
	defer n.conn.Close()
	inbound := make(chan Inbound)
	readErr := make(chan error, 1)
	go n.read(inbound, readErr)

	n.step(Startup())
	for {
		select {
		case in := <-inbound:
			n.received(in)
		case ev := <-n.events:
			n.step(ev)
		case r := <-n.prios:
			n.step(r.ev)
			close(r.applied)
		case <-n.stopc:
			n.step(Shutdown())
			return nil
		case <-ctx.Done():
			n.abort()
			return nil
		case err := <-readErr:
			n.abort()
			return err
		}
	}
}

func (n *Node) read(inbound chan<- Inbound, readErr chan<- error) {
	for {
		in, err := n.conn.Read()
		if errors.Is(err, ErrDiscarded) {
			// RFC 5798 §7.1: discard, and log.
			n.log.Debug("vrrp: discarded", zap.Error(err))
			continue
		}
		if err != nil {
			select {
			case readErr <- err:
			case <-n.done:
			}
			return
		}
		select {
		case inbound <- in:
		case <-n.done:
			return
		}
	}
}

// received applies the checks of RFC 5798 §7.1 that need the
// configuration, then feeds the advertisement.
func (n *Node) received(in Inbound) {
	if in.Advert.VRID != n.cfg.VRID {
		return // another virtual router on the link
	}
	if in.Advert.Priority != PriorityStop && !slices.Equal(in.Advert.Addrs, n.vips) {
		// RFC 5798 §7.1: SHOULD log a misconfiguration, and go on.
		n.mu.Lock()
		first := !n.mismatch
		n.mismatch = true
		n.mu.Unlock()
		if first {
			n.log.Warn("vrrp: the advertised virtual addresses differ from ours",
				zap.Stringer("from", in.Src), zap.Any("theirs", in.Advert.Addrs), zap.Any("ours", n.vips))
		}
	}
	n.step(Received(in.Src, in.Advert))
}

// step feeds ev to the Machine and performs its actions.
func (n *Node) step(ev Event) {
	from := n.m.State()
	for _, a := range n.m.Step(n.clock.Now(), ev) {
		n.act(a)
	}
	to := n.m.State()
	master, prio := n.m.Master()
	n.mu.Lock()
	n.priority, n.master, n.masterPriority = n.m.Priority(), master, prio
	if from != to {
		n.state, n.since = to, n.clock.Now()
	}
	n.mu.Unlock()
	if from == to {
		return
	}
	n.log.Info("vrrp: state change", zap.Stringer("from", from), zap.Stringer("to", to),
		zap.Stringer("master", master), zap.Uint8("master_priority", prio))
	if n.cfg.OnStateChange != nil {
		n.cfg.OnStateChange(from, to)
	}
}

func (n *Node) act(a Action) {
	switch a.Kind {
	case ActSend:
		adv := Advertisement{VRID: n.cfg.VRID, Priority: a.Priority, MaxAdvertInt: n.m.AdvertInt(), Addrs: n.vips}
		if err := n.conn.Send(adv); err != nil {
			n.log.Warn("vrrp: advertisement not sent", zap.Error(err))
		}
	case ActAddVIPs:
		if err := n.addrs.AddVIPs(n.cfg.VIPs); err != nil {
			n.log.Error("vrrp: adding the virtual addresses", zap.Error(err))
		}
		if err := n.addrs.Announce(n.cfg.VIPs); err != nil {
			n.log.Warn("vrrp: announcing the virtual addresses", zap.Error(err))
		}
	case ActRemoveVIPs:
		if err := n.addrs.RemoveVIPs(n.cfg.VIPs); err != nil {
			n.log.Error("vrrp: removing the virtual addresses", zap.Error(err))
		}
	case ActSetTimer:
		n.stopTimer()
		k := a.Timer
		n.timer = n.clock.AfterFunc(a.After, func() {
			// A stale expiry (the timer was reset meanwhile) is
			// recognized and dropped by the Machine.
			select {
			case n.events <- Expired(k):
			case <-n.done:
			}
		})
	case ActCancelTimer:
		n.stopTimer()
	}
}

func (n *Node) stopTimer() {
	if n.timer != nil {
		n.timer.Stop()
		n.timer = nil
	}
}

// abort stops without a word: no priority 0, but the addresses go.
func (n *Node) abort() {
	n.stopTimer()
	if n.m.State() == Master {
		n.act(Action{Kind: ActRemoveVIPs})
	}
	// A fresh Machine state is not needed: the Node does not restart.
	n.mu.Lock()
	from := n.state
	n.state, n.since = Initialize, n.clock.Now()
	n.mu.Unlock()
	if from != Initialize && n.cfg.OnStateChange != nil {
		n.cfg.OnStateChange(from, Initialize)
	}
}
