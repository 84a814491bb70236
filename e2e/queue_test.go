package e2e

import (
	"fmt"
	"net/http"
	"sort"
	"sync/atomic"
	"testing"
	"time"
)

// slowBackend is a real server whose requests take delay each (except
// /fast, answered at once); it records the most requests it ever had in
// flight at once, and entered receives a value as each slow request starts.
type slowBackend struct {
	*httpBackend
	active, peak atomic.Int64
	entered      chan struct{}
}

func newSlowBackend(t *testing.T, delay time.Duration) *slowBackend {
	s := &slowBackend{entered: make(chan struct{}, 100)}
	s.httpBackend = newHTTPBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fast" {
			w.Write([]byte("fast"))
			return
		}
		n := s.active.Add(1)
		defer s.active.Add(-1)
		for p := s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
		}
		s.entered <- struct{}{}
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
		}
		w.Write([]byte("done"))
	}))
	return s
}

// TestMaxConnsQueue: with max_conns = 1 on the only real server, concurrent
// requests queue and reach it one at a time, and all succeed.
func TestMaxConnsQueue(t *testing.T) {
	needCurl(t)
	b := newSlowBackend(t, 150*time.Millisecond)
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   "queue_timeout = \"20s\"\n",
		real:   []real{b.real("max_conns = 1\n")},
	}}})

	const n = 5
	statuses, bodies := concurrentCurl(t, n, "http://"+vip+"/q")
	for i := range n {
		if statuses[i] != 200 || bodies[i] != "done" {
			t.Errorf("request %d: %d %q, want 200 \"done\"", i, statuses[i], bodies[i])
		}
	}
	if p := b.peak.Load(); p != 1 {
		t.Errorf("real server had %d requests at once, want 1 (max_conns = 1)", p)
	}
	if got := b.reqs.Load(); got != n {
		t.Errorf("real server served %d requests, want %d", got, n)
	}
}

// TestMaxConnsQueueTimeout: requests still queued after queue_timeout get a
// 503 while the real server is busy.
func TestMaxConnsQueueTimeout(t *testing.T) {
	needCurl(t)
	b := newSlowBackend(t, 2*time.Second)
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   "queue_timeout = \"200ms\"\n",
		real:   []real{b.real("max_conns = 1\n")},
	}}})

	// One request occupies the real server...
	first := make(chan error, 1)
	go func() {
		s, _, err := curlStatusErr(t, "http://"+vip+"/first")
		if err == nil && s != 200 {
			err = fmt.Errorf("status %d, want 200", s)
		}
		first <- err
	}()
	select {
	case <-b.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("first request did not reach the real server")
	}
	// ...so these wait in the queue and time out.
	start := time.Now()
	statuses, bodies := concurrentCurl(t, 2, "http://"+vip+"/queued")
	elapsed := time.Since(start)
	sort.Ints(statuses)
	for i, s := range statuses {
		if s != 503 {
			t.Errorf("queued request: %d %q, want 503", s, bodies[i])
		}
		if len(bodies[i]) > 100 {
			t.Errorf("503 body is %d bytes, want a short one: %q", len(bodies[i]), bodies[i])
		}
	}
	if elapsed < 200*time.Millisecond {
		t.Errorf("503 after %s, before queue_timeout 200ms", elapsed)
	}
	if err := <-first; err != nil {
		t.Errorf("first request: %v", err)
	}
	if p := b.peak.Load(); p != 1 {
		t.Errorf("real server had %d requests at once, want 1", p)
	}
	if code := f.stop(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	var got503 []logEntry
	for _, e := range f.logs() {
		if e.num("status") == 503 {
			got503 = append(got503, e)
		}
	}
	if len(got503) != 2 {
		t.Errorf("%d log lines with status 503, want 2 (one per request): %v", len(got503), got503)
	}
}
