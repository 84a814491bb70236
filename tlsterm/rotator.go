package tlsterm

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"sync"
	"time"
	"weak"
)

// DefaultTicketKeyPeriod is the rotation period NewRotator uses for a
// period <= 0.
const DefaultTicketKeyPeriod = time.Hour

// ticketKeys is how many session ticket keys are kept: the newest encrypts
// new tickets, all of them decrypt, so a ticket resumes for at least
// ticketKeys-1 periods after it was issued and never after ticketKeys. A
// leaked key exposes the sessions of those periods only (RFC 8446 §8 and
// RFC 5077 §5.5: ticket keys must change).
const ticketKeys = 3

// Rotator rotates the session ticket keys of the tls.Configs registered with
// it: a new random key every period, keeping the last ticketKeys. All its
// configs share the keys, so a ticket stays good across a reload that
// builds a new config. Sharing them between virtual services is safe too: Go
// re-verifies a resumed session's client certificate against the resuming
// config's ClientCAs and client_auth.
type Rotator struct {
	period time.Duration
	// newTicker returns the rotation ticks and a stop function; tests send
	// ticks by hand.
	newTicker func(time.Duration) (<-chan time.Time, func())
	// rotated, if set, runs after each rotation (tests wait on it).
	rotated func()

	mu      sync.Mutex
	keys    [][32]byte // newest first
	configs []weak.Pointer[tls.Config]
}

// NewRotator returns a Rotator with a first key; keys change once Run runs.
// A period <= 0 means DefaultTicketKeyPeriod.
func NewRotator(period time.Duration) *Rotator {
	if period <= 0 {
		period = DefaultTicketKeyPeriod
	}
	return &Rotator{
		period: period,
		newTicker: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
		keys: [][32]byte{newTicketKey()},
	}
}

// Register gives cfg the current keys and the keys of every later rotation.
// cfg must be the config that is served, not one it was cloned from (Clone
// copies the keys of the moment). The Rotator holds cfg weakly: a config
// nobody serves any more is dropped without unregistering.
func (r *Rotator) Register(cfg *tls.Config) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg.SetSessionTicketKeys(r.keys)
	r.configs = append(r.prune(), weak.Make(cfg))
}

// Run rotates the keys every period until ctx ends.
func (r *Rotator) Run(ctx context.Context) {
	ticks, stop := r.newTicker(r.period)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
			r.rotate()
			if r.rotated != nil {
				r.rotated()
			}
		}
	}
}

// rotate puts a new key first and drops the oldest beyond ticketKeys.
func (r *Rotator) rotate() {
	key := newTicketKey()
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([][32]byte, 0, ticketKeys)
	keys = append(keys, key)
	keys = append(keys, r.keys[:min(len(r.keys), ticketKeys-1)]...)
	r.keys = keys
	r.configs = r.prune()
	for _, w := range r.configs {
		if cfg := w.Value(); cfg != nil {
			cfg.SetSessionTicketKeys(keys)
		}
	}
}

// prune drops the configs that have been collected. r.mu is held.
func (r *Rotator) prune() []weak.Pointer[tls.Config] {
	live := r.configs[:0]
	for _, w := range r.configs {
		if w.Value() != nil {
			live = append(live, w)
		}
	}
	clear(r.configs[len(live):])
	return live
}

// newTicketKey returns a random key (crypto/rand does not fail).
func newTicketKey() [32]byte {
	var k [32]byte
	rand.Read(k[:])
	return k
}
