package ha

import (
	"strings"
	"testing"
	"time"
)

// TestMachineSetPriority drives the run-time priority changes (takeover,
// release, tracking) step by step on the fake timeline of TestMachine.
func TestMachineSetPriority(t *testing.T) {
	type step struct {
		at    time.Duration
		ev    Event
		want  string
		state State
		prio  uint8
	}
	toMaster := []step{
		{0, Startup(), "set(master-down,3.4140625s)", Backup, 150},
		{down150, Expired(MasterDownTimer), "send(150) add-vips set(adver,1s)", Master, 150},
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "takeover: a Backup under a better Master becomes Master at once",
			steps: []step{
				{0, Startup(), "set(master-down,3.4140625s)", Backup, 150},
				{time.Second, adv(peer, 200, 100), "set(master-down,3.4140625s)", Backup, 150},
				{2 * time.Second, SetPriority(254, Takeover), "send(254) add-vips set(adver,1s)", Master, 254},
				// the old Master hears 254 and yields; if it did not,
				// its lower advertisement is ignored
				{2 * time.Second, adv(peer, 200, 100), "", Master, 254},
				{3 * time.Second, Expired(AdverTimer), "send(254) set(adver,1s)", Master, 254},
			},
		},
		{
			name: "release: a Master sends priority 0, drops the addresses and stays Backup",
			steps: append(toMaster,
				step{5 * time.Second, SetPriority(1, Release), "cancel send(0) remove-vips set(master-down,3.99609375s)", Backup, 1},
				// the peer took over: a Backup with priority 1 yields
				step{5*time.Second + 100*time.Millisecond, adv(peer, 100, 100), "set(master-down,3.99609375s)", Backup, 1},
				step{6 * time.Second, Expired(AdverTimer), "", Backup, 1},
			),
		},
		{
			name: "release with no one to take over: Master again after Master_Down_Interval",
			steps: append(toMaster,
				step{5 * time.Second, SetPriority(1, Release), "cancel send(0) remove-vips set(master-down,3.99609375s)", Backup, 1},
				step{5*time.Second + 3996093750, Expired(MasterDownTimer), "send(1) add-vips set(adver,1s)", Master, 1},
			),
		},
		{
			name: "adjust in Master: advertised at once",
			steps: append(toMaster,
				step{5 * time.Second, SetPriority(100, Adjust), "send(100) set(adver,1s)", Master, 100},
				// a preempting Backup with 120 now wins
				step{5 * time.Second, adv(peer, 120, 100), "cancel remove-vips set(master-down,3.609375s)", Backup, 100},
			),
		},
		{
			name: "adjust in Backup: a lower Master is no longer accepted, so we preempt",
			steps: []step{
				{0, Startup(), "set(master-down,3.4140625s)", Backup, 150},
				{time.Second, adv(peer, 200, 100), "set(master-down,3.4140625s)", Backup, 150},
				{2 * time.Second, SetPriority(254, Adjust), "", Backup, 254},
				{3 * time.Second, adv(peer, 200, 100), "", Backup, 254},
				{time.Second + down150, Expired(MasterDownTimer), "send(254) add-vips set(adver,1s)", Master, 254},
			},
		},
		{
			name: "priority 0 is ignored; before Startup it is kept for later",
			steps: []step{
				{0, SetPriority(0, Adjust), "", Initialize, 150},
				{0, SetPriority(255, Adjust), "", Initialize, 255},
				{0, Startup(), "send(255) add-vips set(adver,1s)", Master, 255},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMachine(Settings{Priority: 150, AdvertInterval: time.Second, Preempt: true, LocalAddr: local})
			if err != nil {
				t.Fatal(err)
			}
			for i, st := range tt.steps {
				var got []string
				for _, a := range m.Step(t0.Add(st.at), st.ev) {
					got = append(got, a.String())
				}
				if g := strings.Join(got, " "); g != st.want || m.State() != st.state || m.Priority() != st.prio {
					t.Fatalf("step %d (%v at %s): got %q in %s prio %d, want %q in %s prio %d",
						i, st.ev.Kind, st.at, g, m.State(), m.Priority(), st.want, st.state, st.prio)
				}
			}
		})
	}
}
