package healthcheck

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// Settings configure a Monitor. Zero fields take the configuration's
// defaults.
type Settings struct {
	// Interval is the time between the starts of two checks, less up to
	// 10% of jitter. If zero, 2s.
	Interval time.Duration
	// Timeout bounds one check (and one agent query). If zero, 1s or
	// Interval if that is shorter; more than Interval is cut to Interval.
	Timeout time.Duration
	// Rise is the consecutive successes that bring a down server up. If
	// zero, 2.
	Rise int
	// Fall is the consecutive failures that take an up server down. If
	// zero, 3.
	Fall int
	// ObserveErrors is how many consecutive errors in live traffic
	// (ObserveError calls with no ObserveOK between them) take an up server
	// down. Zero means passive observation is off; it is off too without an
	// active check, which alone could bring the server back.
	ObserveErrors int
	// AgentAddr is the agent's "host:port", queried every Interval. Empty
	// means no agent check.
	AgentAddr string
	// Down is the operational state to start in: false (up, as HAProxy
	// starts) or true. Across a reload the caller passes the state the
	// server had, so that a reload neither revives a dead server nor
	// drops a live one.
	Down bool
}

func (s *Settings) normalize() {
	if s.Interval <= 0 {
		s.Interval = config.DefaultCheckInterval
	}
	if s.Timeout <= 0 {
		s.Timeout = config.DefaultCheckTimeout
	}
	s.Timeout = min(s.Timeout, s.Interval)
	if s.Rise <= 0 {
		s.Rise = config.DefaultRise
	}
	if s.Fall <= 0 {
		s.Fall = config.DefaultFall
	}
	s.ObserveErrors = max(s.ObserveErrors, 0)
}

// Reporter hears what a Monitor finds. Its methods are called from the
// Monitor's goroutines and from ObserveError's caller; they must be quick,
// safe for concurrent use, and must not call the Monitor's ObserveError
// (HealthChanged is called with the Monitor's lock held, so that changes
// arrive in the order they happened). Up may be called.
type Reporter interface {
	// Checked is called after every active check.
	Checked(r Result)
	// HealthChanged is called on each change of the operational state,
	// after Up reports the new one, with the result that caused it. Its
	// Detail explains: "3 consecutive failures: status 503, want
	// 200-399", "2 consecutive successes: status 200", "agent: down #disk
	// full", "10 consecutive errors in traffic: connect ...: connection
	// refused".
	HealthChanged(up bool, why Result)
	// AgentReplied is called after every agent reply that parsed.
	AgentReplied(a AgentReply)
}

// Monitor keeps one real server's operational state: it runs the active
// check with rise/fall hysteresis, polls the agent, and counts the errors
// live traffic meets. The server is up when the active check says so (its
// last Rise checks passed since it was down, and it has not failed Fall in a
// row or been taken down by traffic errors since) and the agent has not said
// "down" (without saying "up" since).
type Monitor struct {
	probe Probe // nil: no active check, up as far as checks go
	addr  string
	s     Settings
	r     Reporter

	up   atomic.Bool  // the operational state, read by Up on the hot path
	errs atomic.Int64 // consecutive errors seen in traffic

	mu        sync.Mutex
	checkUp   bool // the active check's (and passive observation's) verdict
	agentDown bool // the agent said down and has not said up since
	succ      int  // consecutive active successes, up to Rise
	fail      int  // consecutive active failures, up to Fall
	// gen counts the times traffic errors took the server down: a check
	// that started before one (and answered before the server broke)
	// does not count towards its rise.
	gen uint64

	// Time, randomness and the agent query, replaced by tests.
	now   func() time.Time
	after func(time.Duration) <-chan time.Time
	randN func(n int64) int64 // in [0, n)
	query func(ctx context.Context, addr string) (AgentReply, error)
}

// NewMonitor returns a Monitor of the real server at addr (with the check
// port applied) that checks it with p and tells r. A nil p means no active
// check (type none): the server is up unless the agent says down. Nothing
// runs until Run.
func NewMonitor(p Probe, addr string, s Settings, r Reporter) *Monitor {
	s.normalize()
	if p == nil {
		s.ObserveErrors = 0
	}
	m := &Monitor{
		probe:   p,
		addr:    addr,
		s:       s,
		r:       r,
		checkUp: !s.Down || p == nil,
		now:     time.Now,
		after:   time.After,
		randN:   rand.Int64N,
		query:   QueryAgent,
	}
	m.up.Store(!s.Down)
	return m
}

// Up reports the operational state: whether new traffic may go to the
// server. It is one atomic load.
func (m *Monitor) Up() bool { return m.up.Load() }

// Run checks until ctx is done; call it once. The first check comes after a
// random delay in [0, Interval), which spreads the checks of many servers;
// each next one Interval less a random 0 to 10% after the start of the one
// before, or at once if that one took longer. Checks run one at a time, so a
// slow server is never checked twice at once and late checks never pile up.
// The agent is polled the same way in a goroutine of its own.
func (m *Monitor) Run(ctx context.Context) {
	if m.probe == nil {
		// The server is up as far as checks go; a Down carried over from
		// a reload with another check type ends now.
		m.mu.Lock()
		m.update(Result{Detail: "no active check"})
		m.mu.Unlock()
	}
	var wg sync.WaitGroup
	if m.s.AgentAddr != "" {
		wg.Go(func() { m.loop(ctx, m.agentOnce) })
	}
	if m.probe != nil {
		m.loop(ctx, m.checkOnce)
	}
	wg.Wait()
	<-ctx.Done()
}

// loop runs step every Interval with jitter until ctx is done, giving each
// run a context bounded by Timeout.
func (m *Monitor) loop(ctx context.Context, step func(context.Context)) {
	wait := time.Duration(m.randN(int64(m.s.Interval)))
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.after(wait):
		}
		start := m.now()
		sctx, cancel := context.WithTimeout(ctx, m.s.Timeout)
		step(sctx)
		cancel()
		wait = max(m.nextInterval()-m.now().Sub(start), 0)
	}
}

// nextInterval is Interval less a random 0 to 10%, so that servers checked
// in step drift apart. The jitter only ever shortens the interval: a dead
// server is then always found within Fall × Interval + Timeout, the bound
// operators are promised.
func (m *Monitor) nextInterval() time.Duration {
	j := int64(m.s.Interval / 10)
	return m.s.Interval - time.Duration(m.randN(j+1))
}

// checkOnce runs one active check and applies its result. A check cut
// short by Run's end counts for nothing.
func (m *Monitor) checkOnce(ctx context.Context) {
	m.mu.Lock()
	gen := m.gen
	m.mu.Unlock()
	r := m.probe.Check(ctx, m.addr)
	if ctx.Err() == context.Canceled {
		return
	}
	m.r.Checked(r)
	m.mu.Lock()
	stale := gen != m.gen
	m.mu.Unlock()
	if !stale {
		m.applyCheck(r)
	}
}

// applyCheck counts one active check's result and changes the state when
// Rise successes or Fall failures are reached.
func (m *Monitor) applyCheck(r Result) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.OK {
		m.fail = 0
		m.succ = min(m.succ+1, m.s.Rise)
		if !m.checkUp && m.succ == m.s.Rise {
			m.checkUp = true
			r.Detail = fmt.Sprintf("%s: %s", consecutive(m.succ, "success", "successes"), r.Detail)
			m.update(r)
		}
		return
	}
	m.succ = 0
	m.fail = min(m.fail+1, m.s.Fall)
	if m.checkUp && m.fail == m.s.Fall {
		m.checkUp = false
		r.Detail = fmt.Sprintf("%s: %s", consecutive(m.fail, "failure", "failures"), r.Detail)
		m.update(r)
	}
}

// agentOnce queries the agent and applies its reply. An agent that cannot
// be reached or replies nonsense changes nothing: like HAProxy, only the
// agent's own words undo what it said.
func (m *Monitor) agentOnce(ctx context.Context) {
	a, err := m.query(ctx, m.s.AgentAddr)
	if err != nil {
		return
	}
	m.r.AgentReplied(a)
	m.applyAgent(a)
}

// applyAgent applies the agent's operational word: "down" takes the server
// down at once; "up" lets it up again if the active check agrees. The other
// words are the caller's (admin state and weights), told by AgentReplied.
func (m *Monitor) applyAgent(a AgentReply) {
	var down bool
	switch a.State {
	case AgentDown:
		down = true
	case AgentUp:
	default:
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.agentDown = down
	detail := "agent: " + a.State
	if a.Reason != "" {
		detail += " #" + a.Reason
	}
	m.update(Result{Detail: detail})
}

// ObserveError records an error live traffic met with the server (a failed
// connect, a 5xx response); detail says what. After ObserveErrors of them in
// a row an up server goes down, until Rise consecutive active checks pass.
func (m *Monitor) ObserveError(detail string) {
	if m.s.ObserveErrors == 0 {
		return
	}
	n := m.errs.Add(1)
	if n < int64(m.s.ObserveErrors) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.errs.Store(0)
	if !m.checkUp {
		return
	}
	m.checkUp = false
	m.succ, m.fail = 0, 0
	m.gen++
	m.update(Result{Detail: fmt.Sprintf("%d consecutive errors in traffic: %s", n, detail)})
}

// ObserveOK records a success in live traffic, ending a run of errors. It
// is called for every response, so when there is no run to end it costs
// one atomic load.
func (m *Monitor) ObserveOK() {
	if m.errs.Load() != 0 {
		m.errs.Store(0)
	}
}

// update publishes the operational state the verdicts give and reports a
// change with why. m.mu must be held.
func (m *Monitor) update(why Result) {
	up := m.checkUp && !m.agentDown
	if up == m.up.Load() {
		return
	}
	m.up.Store(up)
	m.errs.Store(0) // a new state starts a new count
	why.OK = up
	m.r.HealthChanged(up, why)
}

// consecutive says "3 consecutive failures" or "1 failure".
func consecutive(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d consecutive %s", n, many)
}
