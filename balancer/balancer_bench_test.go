package balancer

import (
	"runtime"
	"strconv"
	"sync/atomic"
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

// BenchmarkAcquireKeyRelease is BenchmarkAcquireRelease for requests with a
// key (a hashed client address): PickKey for the keyed schedulers, Pick for
// the others.
func BenchmarkAcquireKeyRelease(b *testing.B) {
	for _, kind := range Names() {
		b.Run(kind, func(b *testing.B) {
			p := benchPool(b, kind, 0)
			key := uint64(0)
			b.ReportAllocs()
			for b.Loop() {
				key += 0x9e3779b97f4a7c15 // a new client each time
				s, err := p.AcquireKey(nil, key)
				if err != nil {
					b.Fatal(err)
				}
				p.Release(s)
			}
		})
	}
}

// BenchmarkAcquireKeyReleaseParallel is the contended case for keyed
// requests.
func BenchmarkAcquireKeyReleaseParallel(b *testing.B) {
	for _, kind := range keyedKinds[:1] { // all keyed kinds share the code
		for _, bc := range benchCases {
			b.Run(kind+"/"+bc.name, func(b *testing.B) {
				p := benchPool(b, kind, bc.maxConns)
				var seed atomic.Uint64
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					key := seed.Add(1) << 40
					for pb.Next() {
						key += 0x9e3779b97f4a7c15
						s, err := p.AcquireKey(nil, key)
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

// BenchmarkAcquireServerRelease is a persistent client's trip: the
// scheduler is bypassed.
func BenchmarkAcquireServerRelease(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			p := benchPool(b, "round_robin", bc.maxConns)
			s := p.Servers()[3]
			b.ReportAllocs()
			for b.Loop() {
				if err := p.AcquireServer(s); err != nil {
					b.Fatal(err)
				}
				p.Release(s)
			}
		})
	}
}

// BenchmarkPickKey is the keyed schedulers' lookup alone, for pools of
// several sizes, and with the key's server full so that PickKey probes on.
func BenchmarkPickKey(b *testing.B) {
	for _, n := range []int{8, 100, 1000} {
		for _, full := range []bool{false, true} {
			name := strconv.Itoa(n) + "servers"
			if full {
				name += "/half_full"
			}
			b.Run(name, func(b *testing.B) {
				ss := make([]*Server, n)
				for i := range ss {
					ss[i] = NewServer("rs"+strconv.Itoa(i), "", 1+i%3, 0)
					if full && i%2 == 0 {
						ss[i].SetMaxConns(1)
						ss[i].tryAcquire()
					}
				}
				c := new(SourceHash)
				c.Update(ss)
				key := uint64(0)
				b.ReportAllocs()
				for b.Loop() {
					key += 0x9e3779b97f4a7c15
					c.PickKey(key, nil).release()
				}
			})
		}
	}
}

// BenchmarkHash is the key derivation the proxy does per request.
func BenchmarkHash(b *testing.B) {
	inputs := []struct{ name, s string }{
		{"ipv4", "\x0a\x00\x00\x01"},
		{"ipv6", "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"},
		{"user", "alice"},
		{"uri", "/api/v1/customers/12345/orders?page=2&sort=date"},
	}
	for _, in := range inputs {
		b.Run(in.name, func(b *testing.B) {
			b.SetBytes(int64(len(in.s)))
			b.ReportAllocs()
			var sink uint64
			for b.Loop() {
				sink += HashString(in.s)
			}
			_ = sink
		})
	}
}

// BenchmarkMaglevUpdate is the table rebuild on every pool change.
func BenchmarkMaglevUpdate(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(strconv.Itoa(n)+"servers", func(b *testing.B) {
			ss := make([]*Server, n)
			for i := range ss {
				ss[i] = NewServer("rs"+strconv.Itoa(i), "", 1+i%7, 0)
			}
			c := new(SourceHash)
			b.ReportAllocs()
			for b.Loop() {
				c.Update(ss)
			}
		})
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
