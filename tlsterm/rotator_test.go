package tlsterm

import (
	"context"
	"crypto/tls"
	"runtime"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// fakeTicks makes r tick by hand: tick returns once the rotation it caused
// is done.
func fakeTicks(t *testing.T, r *Rotator) (tick func()) {
	ticks := make(chan time.Time)
	done := make(chan struct{})
	var period time.Duration
	r.newTicker = func(d time.Duration) (<-chan time.Time, func()) {
		period = d
		return ticks, func() {}
	}
	r.rotated = func() { done <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		r.Run(ctx)
		close(stopped)
	}()
	t.Cleanup(func() {
		cancel()
		<-stopped
	})
	return func() {
		ticks <- time.Now()
		<-done
		if period != r.period {
			t.Errorf("ticker period %v, want %v", period, r.period)
		}
	}
}

func TestRotatorKeys(t *testing.T) {
	r := NewRotator(time.Hour)
	tick := fakeTicks(t, r)
	var seen [][32]byte
	keys := func() [][32]byte {
		r.mu.Lock()
		defer r.mu.Unlock()
		return append([][32]byte(nil), r.keys...)
	}
	seen = append(seen, keys()[0])
	for i := 1; i <= 5; i++ {
		tick()
		got := keys()
		seen = append(seen, got[0])
		if want := min(i+1, ticketKeys); len(got) != want {
			t.Fatalf("after %d rotations: %d keys, want %d", i, len(got), want)
		}
		for j, k := range got { // newest first
			if k != seen[len(seen)-1-j] {
				t.Fatalf("after %d rotations: key %d is not the one from %d rotations ago", i, j, j)
			}
		}
	}
	for i := range seen {
		for j := range i {
			if seen[i] == seen[j] {
				t.Fatalf("keys %d and %d are the same", j, i)
			}
		}
	}
}

func TestRotatorDefaultPeriod(t *testing.T) {
	for _, p := range []time.Duration{0, -time.Second} {
		if r := NewRotator(p); r.period != DefaultTicketKeyPeriod {
			t.Errorf("NewRotator(%v).period = %v, want %v", p, r.period, DefaultTicketKeyPeriod)
		}
	}
}

// TestRotatorDropsConfigs checks that a config nobody serves any more is
// forgotten.
func TestRotatorDropsConfigs(t *testing.T) {
	r := NewRotator(time.Hour)
	kept := &tls.Config{}
	r.Register(kept)
	r.Register(&tls.Config{})
	runtime.GC()
	r.rotate()
	r.mu.Lock()
	n := len(r.configs)
	r.mu.Unlock()
	if n != 1 {
		t.Errorf("%d configs registered, want 1", n)
	}
	runtime.KeepAlive(kept)
}

// TestResumption checks, with real handshakes, that a session ticket
// resumes while its key is among the kept ones, also on a config built
// later with the same Rotator (as after a reload), and not once it is gone.
func TestResumption(t *testing.T) {
	ca := testpki.NewCA(t, "Test CA")
	store := NewStore()
	if _, err := store.Load([]*config.Certificate{certFiles(t, ca, testpki.Leaf{DNS: []string{"www.example.com"}})}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		version    uint16
		rotations  int  // between the ticket and its use
		reload     bool // resume on a new config registered with the same Rotator
		wantResume bool
	}{
		{name: "1.3, same key", version: tls.VersionTLS13, wantResume: true},
		{name: "1.3, previous key", version: tls.VersionTLS13, rotations: 1, wantResume: true},
		{name: "1.3, key before that", version: tls.VersionTLS13, rotations: 2, wantResume: true},
		{name: "1.3, key dropped", version: tls.VersionTLS13, rotations: 3},
		{name: "1.3, previous key, after a reload", version: tls.VersionTLS13, rotations: 1, reload: true, wantResume: true},
		{name: "1.2, same key", version: tls.VersionTLS12, wantResume: true},
		{name: "1.2, previous key", version: tls.VersionTLS12, rotations: 1, wantResume: true},
		{name: "1.2, key before that", version: tls.VersionTLS12, rotations: 2, wantResume: true},
		{name: "1.2, key dropped", version: tls.VersionTLS12, rotations: 3},
		{name: "1.2, previous key, after a reload", version: tls.VersionTLS12, rotations: 1, reload: true, wantResume: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRotator(time.Hour)
			tick := fakeTicks(t, r)
			cfg, err := ServerConfig(&config.TLS{}, store, r)
			if err != nil {
				t.Fatal(err)
			}
			addr, _ := serveTLS(t, cfg)
			client := &tls.Config{ServerName: "www.example.com", RootCAs: ca.Pool(), MaxVersion: tt.version,
				ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			cs, err := dial(t, addr, client)
			if err != nil {
				t.Fatal(err)
			}
			if cs.DidResume {
				t.Fatal("first handshake resumed")
			}
			for range tt.rotations {
				tick()
			}
			if tt.reload {
				cfg, err := ServerConfig(&config.TLS{}, store, r)
				if err != nil {
					t.Fatal(err)
				}
				addr, _ = serveTLS(t, cfg)
			}
			cs, err = dial(t, addr, client)
			if err != nil {
				t.Fatal(err)
			}
			if cs.Version != tt.version || cs.DidResume != tt.wantResume {
				t.Errorf("%s, resumed %v; want %s, resumed %v", tls.VersionName(cs.Version), cs.DidResume,
					tls.VersionName(tt.version), tt.wantResume)
			}
		})
	}
}

// TestNoRotatorResumes checks that without a Rotator Go's own ticket keys
// still resume sessions.
func TestNoRotatorResumes(t *testing.T) {
	ca := testpki.NewCA(t, "Test CA")
	store := NewStore()
	if _, err := store.Load([]*config.Certificate{certFiles(t, ca, testpki.Leaf{DNS: []string{"www.example.com"}})}); err != nil {
		t.Fatal(err)
	}
	cfg, err := ServerConfig(&config.TLS{}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveTLS(t, cfg)
	client := &tls.Config{ServerName: "www.example.com", RootCAs: ca.Pool(), ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	for i, want := range []bool{false, true} {
		cs, err := dial(t, addr, client)
		if err != nil {
			t.Fatal(err)
		}
		if cs.DidResume != want {
			t.Errorf("handshake %d: resumed %v, want %v", i, cs.DidResume, want)
		}
	}
}
