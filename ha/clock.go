package ha

import (
	"sort"
	"sync"
	"time"
)

// Clock is the time source of a Node, injected so that tests drive the
// VRRP timers step by step.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine (or, for a fake clock, in
	// the goroutine that advances time) once d has elapsed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	// Stop prevents the call if it has not happened yet, and reports
	// whether it did so.
	Stop() bool
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now is time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// FakeClock is a Clock whose time moves only when Advance is called. Its
// zero value starts at the zero time; it is safe for concurrent use.
type FakeClock struct {
	mu     sync.Mutex
	cond   *sync.Cond // signalled when timers are set
	now    time.Time
	seq    int
	timers []*fakeTimer
}

type fakeTimer struct {
	c    *FakeClock
	when time.Time
	seq  int // keeps timers due at the same instant in creation order
	f    func()
}

// NewFakeClock returns a FakeClock set to start.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{now: start} }

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f at Now()+d. A d <= 0 fires at the next Advance.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{c: c, when: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	if c.cond != nil {
		c.cond.Broadcast()
	}
	return t
}

// BlockUntil waits until at least n timers are pending: a test that drives
// a goroutine with the clock waits so for it to arm its next timer before
// it advances time.
func (c *FakeClock) BlockUntil(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cond == nil {
		c.cond = sync.NewCond(&c.mu)
	}
	for len(c.timers) < n {
		c.cond.Wait()
	}
}

// Stop removes the timer.
func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, o := range t.c.timers {
		if o == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// Advance moves time forward by d, calling in order, in the caller's
// goroutine, each timer due by then (including timers those calls set),
// with Now() reading the timer's instant during its call.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for c.fireNext(end) {
	}
	c.mu.Lock()
	c.now = end
	c.mu.Unlock()
}

// Pending reports how many timers are set and when the first is due.
func (c *FakeClock) Pending() (n int, next time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sortLocked()
	if len(c.timers) == 0 {
		return 0, time.Time{}
	}
	return len(c.timers), c.timers[0].when
}

func (c *FakeClock) sortLocked() {
	sort.Slice(c.timers, func(i, j int) bool {
		a, b := c.timers[i], c.timers[j]
		if !a.when.Equal(b.when) {
			return a.when.Before(b.when)
		}
		return a.seq < b.seq
	})
}

func (c *FakeClock) fireNext(end time.Time) bool {
	c.mu.Lock()
	c.sortLocked()
	if len(c.timers) == 0 || c.timers[0].when.After(end) {
		c.mu.Unlock()
		return false
	}
	t := c.timers[0]
	c.timers = c.timers[1:]
	if t.when.After(c.now) {
		c.now = t.when
	}
	c.mu.Unlock()
	t.f()
	return true
}
