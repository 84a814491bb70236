package ha

import (
	"fmt"
	"net/netip"
	"time"
)

// State is a state of the VRRP state machine (RFC 5798 §6.4).
type State int

// The states of RFC 5798 §6.4.
const (
	Initialize State = iota
	Backup
	Master
)

func (s State) String() string {
	switch s {
	case Initialize:
		return "initialize"
	case Backup:
		return "backup"
	case Master:
		return "master"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// TimerKind names the machine's one timer: Master_Down_Timer in Backup,
// Adver_Timer in Master (RFC 5798 §6.2).
type TimerKind int

// The timers of RFC 5798 §6.2.
const (
	NoTimer TimerKind = iota
	AdverTimer
	MasterDownTimer
)

func (k TimerKind) String() string {
	switch k {
	case NoTimer:
		return "none"
	case AdverTimer:
		return "adver"
	case MasterDownTimer:
		return "master-down"
	}
	return fmt.Sprintf("TimerKind(%d)", int(k))
}

// EventKind is what happened.
type EventKind int

// The events of RFC 5798 §6.4.
const (
	// EventStartup starts the virtual router (RFC 5798 §6.4.1).
	EventStartup EventKind = iota
	// EventShutdown stops it gracefully (RFC 5798 §6.4.2, §6.4.3).
	EventShutdown
	// EventAdvert is a received ADVERTISEMENT that passed the checks of
	// RFC 5798 §7.1 for this VRID.
	EventAdvert
	// EventTimer is the expiry of the timer Event.Timer.
	EventTimer
	// EventSetPriority changes the local priority at run time to
	// Event.Priority, as Event.Change says (not in the RFC: the operator's
	// takeover and release, and tracking).
	EventSetPriority
)

// PriorityChange is how an EventSetPriority applies.
type PriorityChange int

// The kinds of priority change.
const (
	// Adjust only changes the priority: a Master advertises it at once,
	// so that a better Backup that preempts takes over; a Backup uses it
	// from the next advertisement on.
	Adjust PriorityChange = iota
	// Takeover makes a Backup Master at once, without waiting for
	// Master_Down_Interval: the old Master hears the higher priority and
	// steps down (RFC 5798 §6.4.3).
	Takeover
	// Release makes a Master leave as on shutdown (priority 0, so the
	// best Backup takes over after its Skew_Time, RFC 5798 §6.4.3) and
	// stay a Backup.
	Release
)

// Event is an input of the Machine.
type Event struct {
	Kind EventKind
	// From is the IP source address of an EventAdvert: the sender's
	// primary address, compared with ours on a priority tie (RFC 5798
	// §6.4.3).
	From netip.Addr
	// Priority and MaxAdvertInt (centiseconds) of an EventAdvert.
	Priority     uint8
	MaxAdvertInt uint16
	// Timer is the timer that expired, for EventTimer.
	Timer TimerKind
	// Change says how an EventSetPriority applies its Priority.
	Change PriorityChange
}

// Startup, Shutdown, Received and Expired build events.
func Startup() Event  { return Event{Kind: EventStartup} }
func Shutdown() Event { return Event{Kind: EventShutdown} }
func Received(from netip.Addr, a Advertisement) Event {
	return Event{Kind: EventAdvert, From: from, Priority: a.Priority, MaxAdvertInt: a.MaxAdvertInt}
}
func Expired(k TimerKind) Event { return Event{Kind: EventTimer, Timer: k} }

// SetPriority builds an EventSetPriority; p is 1..255 (0 is ignored).
func SetPriority(p uint8, c PriorityChange) Event {
	return Event{Kind: EventSetPriority, Priority: p, Change: c}
}

// ActionKind is what the Machine asks its Node to do.
type ActionKind int

// The actions of RFC 5798 §6.4.
const (
	// ActSend sends an ADVERTISEMENT with Action.Priority.
	ActSend ActionKind = iota
	// ActAddVIPs adds the virtual addresses and announces them:
	// gratuitous ARP (IPv4), unsolicited Neighbor Advertisements (IPv6)
	// (RFC 5798 §6.4.1, §6.4.2).
	ActAddVIPs
	// ActRemoveVIPs removes them, leaving Master (RFC 5798 §6.4.3).
	ActRemoveVIPs
	// ActSetTimer (re)arms the timer Action.Timer to fire after
	// Action.After, replacing any timer set before.
	ActSetTimer
	// ActCancelTimer cancels the timer.
	ActCancelTimer
)

// Action is an output of the Machine.
type Action struct {
	Kind     ActionKind
	Priority uint8         // ActSend
	Timer    TimerKind     // ActSetTimer
	After    time.Duration // ActSetTimer
}

func (a Action) String() string {
	switch a.Kind {
	case ActSend:
		return fmt.Sprintf("send(%d)", a.Priority)
	case ActAddVIPs:
		return "add-vips"
	case ActRemoveVIPs:
		return "remove-vips"
	case ActSetTimer:
		return fmt.Sprintf("set(%s,%s)", a.Timer, a.After)
	case ActCancelTimer:
		return "cancel"
	}
	return fmt.Sprintf("Action(%d)", int(a.Kind))
}

// Settings configure a Machine.
type Settings struct {
	// Priority is this router's priority: 1..254, or 255 for the owner
	// of the addresses, who goes Master at once (RFC 5798 §5.2.4). If
	// zero, 100 (keepalived's default).
	Priority uint8
	// AdvertInterval is the Advertisement_Interval, 10ms..40.95s, cut to
	// whole centiseconds (RFC 5798 §5.2.7). If zero, 1s.
	AdvertInterval time.Duration
	// Preempt is Preempt_Mode (RFC 5798 §6.1): a Backup takes over from
	// a lower-priority Master. False leaves a working Master alone. The
	// configuration's default is true, as the RFC's.
	Preempt bool
	// PreemptDelay is how long after Startup a Backup waits before it
	// preempts a lower-priority Master (keepalived's preempt_delay; not
	// in the RFC): a router that just booted or restarted first listens.
	// If zero, it preempts at once.
	PreemptDelay time.Duration
	// LocalAddr is our primary address, the IP source of our
	// advertisements; on a priority tie the higher address wins (RFC 5798
	// §6.4.3). Required for the tie-break; an invalid address loses it.
	LocalAddr netip.Addr
}

// Machine is the VRRPv3 state machine of RFC 5798 §6.4 as a pure value:
// Step takes an event at a time given by the caller and returns the
// actions to perform. It does no I/O and reads no clock, so that tests
// drive it step by step. It is not safe for concurrent use.
type Machine struct {
	s        Settings
	adverInt uint16 // our Advertisement_Interval, centiseconds

	state               State
	masterAdverInterval time.Duration // RFC 5798 §6.1, learned in Backup
	timer               TimerKind
	deadline            time.Time
	started             time.Time
	master              netip.Addr // the Master we last accepted, in Backup
	masterPriority      uint8
}

// NewMachine returns a Machine in Initialize.
func NewMachine(s Settings) (*Machine, error) {
	if s.Priority == 0 {
		s.Priority = 100
	}
	if s.AdvertInterval == 0 {
		s.AdvertInterval = time.Second
	}
	cs, ok := Centiseconds(s.AdvertInterval)
	if !ok {
		return nil, fmt.Errorf("vrrp: advert interval %s: must be 10ms..40.95s", s.AdvertInterval)
	}
	if s.PreemptDelay < 0 {
		return nil, fmt.Errorf("vrrp: preempt delay %s: must be >= 0", s.PreemptDelay)
	}
	s.LocalAddr = s.LocalAddr.Unmap()
	return &Machine{s: s, adverInt: cs, masterAdverInterval: cs2d(cs)}, nil
}

func cs2d(cs uint16) time.Duration { return time.Duration(cs) * 10 * time.Millisecond }

// State is the current state.
func (m *Machine) State() State { return m.state }

// Priority is the local priority.
func (m *Machine) Priority() uint8 { return m.s.Priority }

// AdvertInt is our Advertisement_Interval in centiseconds, the Max Adver
// Int we send.
func (m *Machine) AdvertInt() uint16 { return m.adverInt }

// MasterAdverInterval is the Master's advertisement interval, learned in
// Backup (RFC 5798 §6.1).
func (m *Machine) MasterAdverInterval() time.Duration { return m.masterAdverInterval }

// SkewTime is ((256 - Priority) * Master_Adver_Interval) / 256 (RFC 5798
// §6.1): the lower our priority, the longer we wait, so that the best
// Backup wins.
func (m *Machine) SkewTime() time.Duration {
	return time.Duration(256-int64(m.s.Priority)) * m.masterAdverInterval / 256
}

// MasterDownInterval is 3 * Master_Adver_Interval + Skew_Time (RFC 5798
// §6.1).
func (m *Machine) MasterDownInterval() time.Duration {
	return 3*m.masterAdverInterval + m.SkewTime()
}

// Master returns the address and priority of the Master a Backup last
// accepted an advertisement from; invalid when there is none.
func (m *Machine) Master() (netip.Addr, uint8) { return m.master, m.masterPriority }

// Deadline is when the armed timer is due; NoTimer when none is.
func (m *Machine) Deadline() (TimerKind, time.Time) { return m.timer, m.deadline }

// Step feeds one event, at time now, and returns the actions to perform
// in order.
func (m *Machine) Step(now time.Time, ev Event) []Action {
	if ev.Kind == EventSetPriority {
		return m.setPriority(now, ev)
	}
	if ev.Kind == EventAdvert && m.s.Priority == PriorityOwner {
		// RFC 5798 §7.1: the address owner discards every
		// advertisement; it is Master whatever the others say.
		return nil
	}
	switch m.state {
	case Initialize:
		return m.initialize(now, ev)
	case Backup:
		return m.backup(now, ev)
	case Master:
		return m.masterState(now, ev)
	}
	return nil
}

// RFC 5798 §6.4.1.
func (m *Machine) initialize(now time.Time, ev Event) []Action {
	if ev.Kind != EventStartup {
		return nil
	}
	m.started = now
	if m.s.Priority == PriorityOwner {
		return m.becomeMaster(now)
	}
	return m.becomeBackup(now, cs2d(m.adverInt), netip.Addr{}, 0)
}

// RFC 5798 §6.4.2.
func (m *Machine) backup(now time.Time, ev Event) []Action {
	switch ev.Kind {
	case EventShutdown:
		m.state = Initialize
		m.master, m.masterPriority = netip.Addr{}, 0
		return []Action{m.cancel()}
	case EventTimer:
		if !m.due(now, ev.Timer, MasterDownTimer) {
			return nil
		}
		return m.becomeMaster(now)
	case EventAdvert:
		if ev.Priority == PriorityStop {
			// The Master is leaving: take over after only Skew_Time,
			// the best Backup first.
			return []Action{m.set(now, MasterDownTimer, m.SkewTime())}
		}
		if !m.preempts(now) || ev.Priority >= m.s.Priority {
			m.master, m.masterPriority = ev.From, ev.Priority
			if ev.MaxAdvertInt != 0 {
				m.masterAdverInterval = cs2d(ev.MaxAdvertInt)
			}
			return []Action{m.set(now, MasterDownTimer, m.MasterDownInterval())}
		}
		// A lower-priority Master, and we preempt: let the
		// Master_Down_Timer run out.
		return nil
	}
	return nil
}

// RFC 5798 §6.4.3.
func (m *Machine) masterState(now time.Time, ev Event) []Action {
	switch ev.Kind {
	case EventShutdown:
		m.state = Initialize
		return []Action{m.cancel(), {Kind: ActSend, Priority: PriorityStop}, {Kind: ActRemoveVIPs}}
	case EventTimer:
		if !m.due(now, ev.Timer, AdverTimer) {
			return nil
		}
		return []Action{{Kind: ActSend, Priority: m.s.Priority}, m.set(now, AdverTimer, cs2d(m.adverInt))}
	case EventAdvert:
		if ev.Priority == PriorityStop {
			// Another Master is leaving (two Masters during a
			// partition's healing): assert ourselves at once.
			return []Action{{Kind: ActSend, Priority: m.s.Priority}, m.set(now, AdverTimer, cs2d(m.adverInt))}
		}
		if ev.Priority > m.s.Priority ||
			ev.Priority == m.s.Priority && ev.From.Unmap().Compare(m.s.LocalAddr) > 0 {
			acts := []Action{m.cancel(), {Kind: ActRemoveVIPs}}
			return append(acts, m.becomeBackup(now, cs2d(ev.MaxAdvertInt), ev.From, ev.Priority)...)
		}
		// A lower priority (or a lower address on a tie): discard; our
		// next advertisement makes it step down.
		return nil
	}
	return nil
}

// becomeMaster: send an ADVERTISEMENT, add the addresses and announce them
// (gratuitous ARP / unsolicited NA), set the Adver_Timer (RFC 5798 §6.4.1,
// §6.4.2).
func (m *Machine) becomeMaster(now time.Time) []Action {
	m.state = Master
	m.master, m.masterPriority = m.s.LocalAddr, m.s.Priority
	return []Action{
		{Kind: ActSend, Priority: m.s.Priority},
		{Kind: ActAddVIPs},
		m.set(now, AdverTimer, cs2d(m.adverInt)),
	}
}

// becomeBackup sets Master_Adver_Interval to interval and the
// Master_Down_Timer to Master_Down_Interval (RFC 5798 §6.4.1, §6.4.3).
// master and its priority are the router we yield to, if known.
func (m *Machine) becomeBackup(now time.Time, interval time.Duration, master netip.Addr, priority uint8) []Action {
	m.state = Backup
	m.master, m.masterPriority = master, priority
	if interval > 0 {
		m.masterAdverInterval = interval
	}
	return []Action{m.set(now, MasterDownTimer, m.MasterDownInterval())}
}

// preempts reports whether a Backup preempts a lower-priority Master now.
func (m *Machine) preempts(now time.Time) bool {
	return m.s.Preempt && !now.Before(m.started.Add(m.s.PreemptDelay))
}

func (m *Machine) set(now time.Time, k TimerKind, d time.Duration) Action {
	m.timer, m.deadline = k, now.Add(d)
	return Action{Kind: ActSetTimer, Timer: k, After: d}
}

func (m *Machine) cancel() Action {
	m.timer, m.deadline = NoTimer, time.Time{}
	return Action{Kind: ActCancelTimer}
}

// due reports whether an expiry of timer k at now is the one armed, of
// kind want: an expiry that raced with a reset or a cancel is stale.
func (m *Machine) due(now time.Time, k, want TimerKind) bool {
	if k != want || m.timer != want || now.Before(m.deadline) {
		return false
	}
	m.timer, m.deadline = NoTimer, time.Time{}
	return true
}

// setPriority applies an EventSetPriority. In Initialize it only sets the
// priority used from Startup on.
func (m *Machine) setPriority(now time.Time, ev Event) []Action {
	if ev.Priority == PriorityStop {
		return nil // 0 is the shutdown signal, not a priority
	}
	m.s.Priority = ev.Priority
	switch m.state {
	case Backup:
		if ev.Change == Takeover {
			return m.becomeMaster(now)
		}
	case Master:
		if ev.Change == Release {
			acts := []Action{m.cancel(), {Kind: ActSend, Priority: PriorityStop}, {Kind: ActRemoveVIPs}}
			return append(acts, m.becomeBackup(now, 0, netip.Addr{}, 0)...)
		}
		m.masterPriority = m.s.Priority
		return []Action{{Kind: ActSend, Priority: m.s.Priority}, m.set(now, AdverTimer, cs2d(m.adverInt))}
	}
	return nil
}
