package ha

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	local = netip.MustParseAddr("10.0.0.1")
	peer  = netip.MustParseAddr("10.0.0.2") // higher than local
	lower = netip.MustParseAddr("9.0.0.1")
	t0    = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

func mustDuration(t testing.TB, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func adv(from netip.Addr, prio uint8, cs uint16) Event {
	return Received(from, Advertisement{VRID: 51, Priority: prio, MaxAdvertInt: cs})
}

// With priority 150 and a 1s interval, Skew_Time is 106/256 s and
// Master_Down_Interval 3s plus that (RFC 5798 §6.1).
const (
	skew150 = 414062500 * time.Nanosecond
	down150 = 3*time.Second + skew150
)

func TestMachine(t *testing.T) {
	type step struct {
		at    time.Duration // since t0
		ev    Event
		want  string // the actions, space-separated
		state State
	}
	base := Settings{Priority: 150, AdvertInterval: time.Second, Preempt: true, LocalAddr: local}
	// toMaster is the script that makes a base machine Master.
	toMaster := []step{
		{0, Startup(), "set(master-down,3.4140625s)", Backup},
		{down150, Expired(MasterDownTimer), "send(150) add-vips set(adver,1s)", Master},
	}
	tests := []struct {
		name   string
		modify func(*Settings)
		steps  []step
	}{
		{
			name: "no Master: Backup, then Master after Master_Down_Interval, then adverts",
			steps: append(toMaster,
				step{down150 + time.Second, Expired(AdverTimer), "send(150) set(adver,1s)", Master},
				step{down150 + 2*time.Second, Expired(AdverTimer), "send(150) set(adver,1s)", Master},
			),
		},
		{
			name: "an early or wrong timer expiry is stale",
			steps: []step{
				{0, Startup(), "set(master-down,3.4140625s)", Backup},
				{time.Second, Expired(MasterDownTimer), "", Backup},
				{down150, Expired(AdverTimer), "", Backup},
				{down150, Expired(MasterDownTimer), "send(150) add-vips set(adver,1s)", Master},
				{down150, Expired(MasterDownTimer), "", Master},
			},
		},
		{
			name:   "the address owner (255) goes Master at once",
			modify: func(s *Settings) { s.Priority = 255 },
			steps: []step{
				{0, Startup(), "send(255) add-vips set(adver,1s)", Master},
				// RFC 5798 §7.1: the owner discards advertisements
				{time.Second, adv(peer, 255, 100), "", Master},
				{time.Second, adv(peer, 0, 100), "", Master},
			},
		},
		{
			name: "a Backup learns the Master's interval",
			steps: []step{
				{0, Startup(), "set(master-down,3.4140625s)", Backup},
				// 3 x 2s + (256-150) x 2s / 256
				{time.Second, adv(peer, 200, 200), "set(master-down,6.828125s)", Backup},
				{3 * time.Second, adv(peer, 200, 200), "set(master-down,6.828125s)", Backup},
				// the old deadline (1s + 6.83s) is stale
				{7828125 * time.Microsecond, Expired(MasterDownTimer), "", Backup},
				{9828125 * time.Microsecond, Expired(MasterDownTimer), "send(150) add-vips set(adver,1s)", Master},
			},
		},
		{
			name: "priority 0 from the Master: take over after Skew_Time",
			steps: []step{
				{0, Startup(), "set(master-down,3.4140625s)", Backup},
				{500 * time.Millisecond, adv(peer, 200, 100), "set(master-down,3.4140625s)", Backup},
				{time.Second, adv(peer, 0, 100), "set(master-down,414.0625ms)", Backup},
				{time.Second + skew150, Expired(MasterDownTimer), "send(150) add-vips set(adver,1s)", Master},
			},
		},
		{
			name: "preempt: a lower-priority Master is ignored until the timer runs out",
			steps: []step{
				{0, Startup(), "set(master-down,3.4140625s)", Backup},
				{time.Second, adv(peer, 100, 100), "", Backup},
				{2 * time.Second, adv(peer, 100, 100), "", Backup},
				{down150, Expired(MasterDownTimer), "send(150) add-vips set(adver,1s)", Master},
			},
		},
		{
			name:   "no preempt: a lower-priority Master is kept",
			modify: func(s *Settings) { s.Preempt = false },
			steps: []step{
				{0, Startup(), "set(master-down,3.4140625s)", Backup},
				{time.Second, adv(peer, 100, 100), "set(master-down,3.4140625s)", Backup},
				{down150, Expired(MasterDownTimer), "", Backup},
				{4 * time.Second, adv(peer, 100, 100), "set(master-down,3.4140625s)", Backup},
			},
		},
		{
			name:   "no preempt: a Master that stops still hands over after Skew_Time",
			modify: func(s *Settings) { s.Preempt = false },
			steps: []step{
				{0, Startup(), "set(master-down,3.4140625s)", Backup},
				{time.Second, adv(peer, 100, 100), "set(master-down,3.4140625s)", Backup},
				{2 * time.Second, adv(peer, 0, 100), "set(master-down,414.0625ms)", Backup},
				{2*time.Second + skew150, Expired(MasterDownTimer), "send(150) add-vips set(adver,1s)", Master},
			},
		},
		{
			name:   "preempt_delay: a lower Master is kept for the delay after startup",
			modify: func(s *Settings) { s.PreemptDelay = 5 * time.Second },
			steps: []step{
				{0, Startup(), "set(master-down,3.4140625s)", Backup},
				{time.Second, adv(peer, 100, 100), "set(master-down,3.4140625s)", Backup},
				{4 * time.Second, adv(peer, 100, 100), "set(master-down,3.4140625s)", Backup},
				{5 * time.Second, adv(peer, 100, 100), "", Backup},
				{6 * time.Second, adv(peer, 100, 100), "", Backup},
				{4*time.Second + down150, Expired(MasterDownTimer), "send(150) add-vips set(adver,1s)", Master},
			},
		},
		{
			name:   "preempt_delay does not delay taking over from nobody",
			modify: func(s *Settings) { s.PreemptDelay = time.Minute },
			steps:  toMaster,
		},
		{
			name: "a Master steps down to a higher priority and learns its interval",
			steps: append(toMaster,
				// 3 x 0.5s + 106 x 0.5s / 256
				step{5 * time.Second, adv(lower, 200, 50), "cancel remove-vips set(master-down,1.70703125s)", Backup},
			),
		},
		{
			name: "a Master steps down on a tie to a higher address",
			steps: append(toMaster,
				step{5 * time.Second, adv(peer, 150, 100), "cancel remove-vips set(master-down,3.4140625s)", Backup},
			),
		},
		{
			name: "a Master keeps a tie against a lower address",
			steps: append(toMaster,
				step{5 * time.Second, adv(lower, 150, 100), "", Master},
			),
		},
		{
			name: "a Master discards a lower priority",
			steps: append(toMaster,
				step{5 * time.Second, adv(peer, 149, 100), "", Master},
			),
		},
		{
			name: "a Master answers priority 0 at once",
			steps: append(toMaster,
				step{4 * time.Second, adv(peer, 0, 100), "send(150) set(adver,1s)", Master},
				// the Adver_Timer was reset: the old expiry is stale
				step{down150 + time.Second, Expired(AdverTimer), "", Master},
				step{5 * time.Second, Expired(AdverTimer), "send(150) set(adver,1s)", Master},
			),
		},
		{
			name: "a Master that shuts down sends priority 0 and drops the addresses",
			steps: append(toMaster,
				step{5 * time.Second, Shutdown(), "cancel send(0) remove-vips", Initialize},
				step{6 * time.Second, Expired(AdverTimer), "", Initialize},
				step{7 * time.Second, adv(peer, 100, 100), "", Initialize},
				step{8 * time.Second, Startup(), "set(master-down,3.4140625s)", Backup},
			),
		},
		{
			name: "a Backup that shuts down just stops",
			steps: []step{
				{0, Startup(), "set(master-down,3.4140625s)", Backup},
				{time.Second, Shutdown(), "cancel", Initialize},
				{time.Second, Shutdown(), "", Initialize},
				{down150, Expired(MasterDownTimer), "", Initialize},
			},
		},
		{
			name:   "priority 1 waits longest",
			modify: func(s *Settings) { s.Priority = 1 },
			steps: []step{
				// 3s + 255/256 s
				{0, Startup(), "set(master-down,3.99609375s)", Backup},
			},
		},
		{
			name:   "zero settings: priority 100, 1s",
			modify: func(s *Settings) { *s = Settings{} },
			steps: []step{
				// 3s + 156/256 s
				{0, Startup(), "set(master-down,3.609375s)", Backup},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			if tt.modify != nil {
				tt.modify(&s)
			}
			m, err := NewMachine(s)
			if err != nil {
				t.Fatal(err)
			}
			for i, st := range tt.steps {
				var got []string
				for _, a := range m.Step(t0.Add(st.at), st.ev) {
					got = append(got, a.String())
				}
				if g := strings.Join(got, " "); g != st.want || m.State() != st.state {
					t.Fatalf("step %d (%v at %s): got %q in %s, want %q in %s", i, st.ev.Kind, st.at, g, m.State(), st.want, st.state)
				}
			}
		})
	}
}

func TestNewMachineErrors(t *testing.T) {
	tests := []struct {
		name    string
		s       Settings
		errText string
	}{
		{"interval too short", Settings{AdvertInterval: 5 * time.Millisecond}, "advert interval 5ms: must be 10ms..40.95s"},
		{"interval too long", Settings{AdvertInterval: time.Minute}, "advert interval 1m0s: must be 10ms..40.95s"},
		{"negative delay", Settings{PreemptDelay: -time.Second}, "preempt delay -1s: must be >= 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewMachine(tt.s)
			if err == nil || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("NewMachine error = %v, want one containing %q", err, tt.errText)
			}
		})
	}
}

// simNet runs machines on a lossless, zero-latency link, firing their
// timers in time order: a whole election without sockets or sleeps.
type simNet struct {
	t     *testing.T
	now   time.Time
	nodes []*simNode
}

type simNode struct {
	m     *Machine
	addr  netip.Addr
	alive bool
}

func (n *simNet) apply(from *simNode, acts []Action) {
	for _, a := range acts {
		if a.Kind != ActSend || !from.alive {
			continue
		}
		for _, o := range n.nodes {
			if o != from && o.alive {
				n.apply(o, o.m.Step(n.now, Received(from.addr, Advertisement{VRID: 1, Priority: a.Priority, MaxAdvertInt: from.m.AdvertInt()})))
			}
		}
	}
}

// runUntil fires due timers up to end.
func (n *simNet) runUntil(end time.Time) {
	for {
		var next *simNode
		var when time.Time
		for _, o := range n.nodes {
			k, d := o.m.Deadline()
			if o.alive && k != NoTimer && !d.After(end) && (next == nil || d.Before(when)) {
				next, when = o, d
			}
		}
		if next == nil {
			n.now = end
			return
		}
		n.now = when
		k, _ := next.m.Deadline()
		n.apply(next, next.m.Step(n.now, Expired(k)))
	}
}

// masters returns the indexes of the nodes in Master.
func (n *simNet) masters() []int {
	var ms []int
	for i, o := range n.nodes {
		if o.alive && o.m.State() == Master {
			ms = append(ms, i)
		}
	}
	return ms
}

func TestMachineElection(t *testing.T) {
	interval := 100 * time.Millisecond
	n := &simNet{t: t, now: t0}
	for i, prio := range []uint8{100, 200, 150} {
		m, err := NewMachine(Settings{Priority: prio, AdvertInterval: interval, Preempt: true, LocalAddr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})})
		if err != nil {
			t.Fatal(err)
		}
		n.nodes = append(n.nodes, &simNode{m: m, addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), alive: true})
	}
	for _, o := range n.nodes {
		n.apply(o, o.m.Step(n.now, Startup()))
	}
	// The highest priority's Master_Down_Interval is the shortest:
	// 300ms + 56/256 x 100ms = 321.9ms.
	n.runUntil(t0.Add(322 * time.Millisecond))
	if got := n.masters(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("masters after 322ms = %v, want [1]", got)
	}
	n.runUntil(t0.Add(10 * time.Second))
	if got := n.masters(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("masters after 10s = %v, want [1]", got)
	}

	// Graceful stop: the next best (150) takes over after its Skew_Time,
	// 106/256 x 100ms = 41.4ms, not Master_Down_Interval.
	stop := n.now
	n.apply(n.nodes[1], n.nodes[1].m.Step(n.now, Shutdown()))
	n.nodes[1].alive = false
	n.runUntil(stop.Add(41 * time.Millisecond))
	if got := n.masters(); len(got) != 0 {
		t.Fatalf("masters 41ms after the stop = %v, want none yet", got)
	}
	n.runUntil(stop.Add(42 * time.Millisecond))
	if got := n.masters(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("masters 42ms after the stop = %v, want [2]", got)
	}

	// Crash: the last one waits the whole Master_Down_Interval,
	// 300ms + 156/256 x 100ms = 360.9ms.
	crash := n.now
	n.nodes[2].alive = false
	n.runUntil(crash.Add(360 * time.Millisecond))
	if got := n.nodes[0].m.State(); got != Backup {
		t.Fatalf("node 0 360ms after the crash: %s, want backup", got)
	}
	n.runUntil(crash.Add(361 * time.Millisecond))
	if got := n.masters(); len(got) != 1 || got[0] != 0 {
		t.Fatalf("masters 361ms after the crash = %v, want [0]", got)
	}

	// The 200 comes back and preempts the 100 after its
	// Master_Down_Interval (it ignores the lower Master's adverts).
	back := n.now
	n.nodes[1].alive = true
	n.apply(n.nodes[1], n.nodes[1].m.Step(n.now, Startup()))
	n.runUntil(back.Add(322 * time.Millisecond))
	if got := n.masters(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("masters after the return = %v, want [1]", got)
	}
	if got := n.nodes[0].m.State(); got != Backup {
		t.Fatalf("node 0 after the return: %s, want backup", got)
	}
}
