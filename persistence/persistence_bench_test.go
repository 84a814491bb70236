package persistence

import (
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

const benchKeys = 1 << 16

func benchAddrs() []netip.Addr {
	keys := make([]netip.Addr, benchKeys)
	for i := range keys {
		u := uint32(10<<24 | i*7919)
		keys[i] = netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
	}
	return keys
}

// benchTable is a table holding every key of benchAddrs.
func benchTable(keys []netip.Addr) *Table[netip.Addr] {
	tb := NewTable[netip.Addr](DefaultMaxEntries, 30*time.Minute)
	for _, k := range keys {
		tb.Put(k, "rs1")
	}
	return tb
}

// Each goroutine walks the keys from its own random start, so goroutines
// mostly touch different shards, as different clients do.
func runParallelKeys(b *testing.B, keys []netip.Addr, op func(netip.Addr)) {
	var seed atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := rand.New(rand.NewPCG(seed.Add(1), 0)).IntN(len(keys))
		for pb.Next() {
			op(keys[i])
			i++
			if i == len(keys) {
				i = 0
			}
		}
	})
}

func BenchmarkTableGetParallel(b *testing.B) {
	keys := benchAddrs()
	tb := benchTable(keys)
	runParallelKeys(b, keys, func(k netip.Addr) {
		if _, ok := tb.Get(k); !ok {
			b.Fatal("missing key")
		}
	})
}

func BenchmarkTableGetMissParallel(b *testing.B) {
	keys := benchAddrs()
	tb := NewTable[netip.Addr](DefaultMaxEntries, 30*time.Minute)
	runParallelKeys(b, keys, func(k netip.Addr) { tb.Get(k) })
}

func BenchmarkTablePutExistingParallel(b *testing.B) {
	keys := benchAddrs()
	tb := benchTable(keys)
	runParallelKeys(b, keys, func(k netip.Addr) { tb.Put(k, "rs2") })
}

// BenchmarkTablePutEvictParallel inserts new keys into a full table: each
// insertion evicts (and recycles) the least recently used entry.
func BenchmarkTablePutEvictParallel(b *testing.B) {
	keys := benchAddrs()
	tb := NewTable[netip.Addr](benchKeys/4, 30*time.Minute)
	for _, k := range keys {
		tb.Put(k, "rs1")
	}
	runParallelKeys(b, keys, func(k netip.Addr) { tb.Put(k, "rs2") })
}

func BenchmarkTableGetString(b *testing.B) {
	tb := NewTable[string](DefaultMaxEntries, 30*time.Minute)
	tb.Put("alice", "rs1")
	b.ReportAllocs()
	for b.Loop() {
		tb.Get("alice")
	}
}

func BenchmarkSourceKey(b *testing.B) {
	a := netip.MustParseAddr("::ffff:192.0.2.77")
	b.ReportAllocs()
	for b.Loop() {
		SourceKey(a, 24, 64)
	}
}

func BenchmarkSignerToken(b *testing.B) {
	s := NewSigner([]byte(testSecret))
	b.ReportAllocs()
	for b.Loop() {
		s.Token("web", "rs1")
	}
}

func BenchmarkCookieValue(b *testing.B) {
	h := []byte("_ga=GA1.2.1234567890.1234567890; _gid=GA1.2.987654321.1234567890; JSESSIONID=0123456789ABCDEF0123456789ABCDEF; FULCRUM=I6PPhPuUuZ4LZrgjHqbVJQ")
	b.ReportAllocs()
	b.SetBytes(int64(len(h)))
	for b.Loop() {
		if _, ok := CookieValue(h, "FULCRUM"); !ok {
			b.Fatal("not found")
		}
	}
}

func BenchmarkParseRDP(b *testing.B) {
	for _, file := range []string{"freerdp-mstshash-alice.hex", "freerdp-msts-token.hex", "freerdp-long-token.hex"} {
		req := readHex(b, file)
		b.Run(file, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(req)))
			for b.Loop() {
				if _, err := ParseRDP(req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
