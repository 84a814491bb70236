package balancer

import (
	"runtime"
	"testing"
	"time"
)

// benchPool is a pool like a real virtual service's: eight servers of mixed
// weights. With maxConns > 0 every acquire goes through the CAS loop.
func benchPool(b *testing.B, kind string, maxConns int) *Pool {
	b.Helper()
	ss := make([]*Server, 8)
	for i := range ss {
		ss[i] = NewServer(string(rune('a'+i)), "", 1+i%3, maxConns)
	}
	sched, err := New(kind)
	if err != nil {
		b.Fatal(err)
	}
	return NewPool(sched, ss, 5*time.Second)
}

var benchCases = []struct {
	name     string
	maxConns int
}{
	{name: "unlimited", maxConns: 0},
	{name: "max_conns", maxConns: 1 << 20},
}

// BenchmarkAcquireRelease is one request's trip through the balancer on an
// idle core: the number to compare across schedulers.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, kind := range Names() {
		for _, bc := range benchCases {
			b.Run(kind+"/"+bc.name, func(b *testing.B) {
				p := benchPool(b, kind, bc.maxConns)
				b.ReportAllocs()
				for b.Loop() {
					s, err := p.Acquire(nil)
					if err != nil {
						b.Fatal(err)
					}
					p.Release(s)
				}
			})
		}
	}
}

// BenchmarkAcquireReleaseRetry is a retry after a failed connect: the Tried
// set lives on the caller's stack, as in the proxy, and must stay there.
func BenchmarkAcquireReleaseRetry(b *testing.B) {
	for _, kind := range Names() {
		b.Run(kind, func(b *testing.B) {
			p := benchPool(b, kind, 0)
			failed := p.Servers()[0]
			b.ReportAllocs()
			for b.Loop() {
				var tried Tried
				tried.Add(failed)
				s, err := p.Acquire(&tried)
				if err != nil {
					b.Fatal(err)
				}
				p.Release(s)
			}
		})
	}
}

// BenchmarkAcquireReleaseParallel is the contended case: every core picking
// from the same pool, as under load.
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	for _, kind := range Names() {
		for _, bc := range benchCases {
			b.Run(kind+"/"+bc.name, func(b *testing.B) {
				p := benchPool(b, kind, bc.maxConns)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						s, err := p.Acquire(nil)
						if err != nil {
							b.Error(err)
							return
						}
						p.Release(s)
					}
				})
			})
		}
	}
}

// BenchmarkQueued measures the slow path: one slot, many goroutines, so most
// requests queue and are handed a server by a Release. It may allocate
// (sync.Pool refills); the hot path above must not.
func BenchmarkQueued(b *testing.B) {
	ss := []*Server{NewServer("a", "", 1, 1)}
	p := NewPool(new(RoundRobin), ss, time.Minute)
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s, err := p.Acquire(nil)
			if err != nil {
				b.Error(err)
				return
			}
			runtime.Gosched() // hold the slot so the others queue
			p.Release(s)
		}
	})
}

func BenchmarkWeightedRoundRobinUpdate(b *testing.B) {
	ss := make([]*Server, 100)
	for i := range ss {
		ss[i] = NewServer("", "", 1000+i, 0) // coprime-ish: a long cycle
	}
	r := new(WeightedRoundRobin)
	b.ReportAllocs()
	for b.Loop() {
		r.Update(ss)
	}
}
