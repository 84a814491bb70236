package proxy

import (
	"sync"
	"time"
)

// maxEvents is how many recent events the proxy keeps for the web UI.
const maxEvents = 500

// eventLog is a ring of the most recent events. It is safe for concurrent
// use.
type eventLog struct {
	mu   sync.Mutex
	ring []Event // the last len(ring) events, oldest at start
	next uint64  // ID of the next event; IDs start at 1
	now  func() time.Time
}

func newEventLog() *eventLog {
	return &eventLog{next: 1, now: time.Now}
}

func (l *eventLog) add(kind, service, server, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := Event{ID: l.next, Time: l.now(), Kind: kind, Service: service, RealServer: server, Message: msg}
	l.next++
	if len(l.ring) < maxEvents {
		l.ring = append(l.ring, e)
		return
	}
	copy(l.ring, l.ring[1:])
	l.ring[len(l.ring)-1] = e
}

// since returns the events with an ID above after, oldest first.
func (l *eventLog) since(after uint64) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := 0
	for i < len(l.ring) && l.ring[i].ID <= after {
		i++
	}
	return append([]Event(nil), l.ring[i:]...)
}
