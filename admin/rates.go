package admin

import (
	"sync"
	"time"

	"github.com/fulcrumlb/fulcrum/proxy"
)

const (
	// sampleInterval is how often the sampler reads the counters.
	sampleInterval = time.Second
	// rateWindow is the span the request and error rates average over.
	rateWindow = 5 * time.Second
)

// serverKey names a real server across services.
type serverKey struct{ service, server string }

// counts are the counters a rate is made from.
type counts struct{ requests, errors uint64 }

// rate is a pair of per-second rates.
type rate struct{ requests, errors float64 }

// rateSet holds the rates of every service and real server.
type rateSet struct {
	services map[string]rate
	servers  map[serverKey]rate
}

// sample is the counters at one instant.
type sample struct {
	at       time.Time
	services map[string]counts
	servers  map[serverKey]counts
}

// sampler turns the proxy's cumulative counters into rates: it keeps the
// samples of the last window and divides the growth between the oldest and
// the newest by the time between them. The proxy's hot path pays nothing.
type sampler struct {
	window time.Duration

	mu      sync.Mutex
	samples []sample // oldest first
	current rateSet  // computed at each observe
}

func newSampler(window time.Duration) *sampler {
	return &sampler{window: window, current: rateSet{services: map[string]rate{}, servers: map[serverKey]rate{}}}
}

// observe records the counters of st, taken at now.
func (s *sampler) observe(now time.Time, st proxy.Status) {
	smp := sample{at: now, services: make(map[string]counts, len(st.Services)), servers: map[serverKey]counts{}}
	for _, vs := range st.Services {
		smp.services[vs.Name] = counts{vs.Requests, vs.Errors}
		for _, rs := range vs.RealServers {
			smp.servers[serverKey{vs.Name, rs.Name}] = counts{rs.Requests, rs.Responses.C5xx + rs.ConnectErrors}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, smp)
	// Keep the newest sample at or before the window's start, so the rate
	// spans the whole window once the sampler has run that long.
	drop := 0
	for drop+1 < len(s.samples) && !s.samples[drop+1].at.After(now.Add(-s.window)) {
		drop++
	}
	s.samples = append(s.samples[:0], s.samples[drop:]...)
	s.current = s.compute()
}

// compute derives the rates from the oldest and newest samples.
func (s *sampler) compute() rateSet {
	out := rateSet{services: map[string]rate{}, servers: map[serverKey]rate{}}
	if len(s.samples) < 2 {
		return out
	}
	first, last := s.samples[0], s.samples[len(s.samples)-1]
	secs := last.at.Sub(first.at).Seconds()
	if secs <= 0 {
		return out
	}
	for name, c := range last.services {
		if old, ok := first.services[name]; ok {
			out.services[name] = perSecond(old, c, secs)
		}
	}
	for key, c := range last.servers {
		if old, ok := first.servers[key]; ok {
			out.servers[key] = perSecond(old, c, secs)
		}
	}
	return out
}

// perSecond is the growth from old to c per second. A counter that went
// backwards (a real server removed and added again) counts as no growth.
func perSecond(old, c counts, secs float64) rate {
	var r rate
	if c.requests >= old.requests {
		r.requests = float64(c.requests-old.requests) / secs
	}
	if c.errors >= old.errors {
		r.errors = float64(c.errors-old.errors) / secs
	}
	return r
}

// rates returns the latest rates. The maps must not be modified.
func (s *sampler) rates() rateSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}
