package proxy

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// BenchmarkProxyHTTPRateLimit is BenchmarkProxyHTTP with a rate limit that
// the client stays under: the limiter's cost on a request, which allocates
// nothing.
func BenchmarkProxyHTTPRateLimit(b *testing.B) {
	benchProxy(b, func(vs *config.VirtualService) {
		vs.RateLimit = config.RateLimit{Requests: 1 << 30, Per: time.Second}
	}, "")
}

// BenchmarkRateLimiterAllow measures one decision for a known client, from
// goroutines spread over distinct clients (and so over the shards).
func BenchmarkRateLimiterAllow(b *testing.B) {
	l := newRateLimiter(config.RateLimit{Requests: 1 << 30, Per: time.Second})
	var next atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		n := next.Add(1)
		client := netip.AddrFrom4([4]byte{192, 0, byte(n >> 8), byte(n)})
		for pb.Next() {
			l.allow(client, time.Now())
		}
	})
}
