package proxy

import (
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// Rate limiting (rate_limit): a token bucket per client address. A client
// holds up to requests+burst tokens, one spent per request and refilled at
// requests per `per`; a request that finds none is answered 429 with
// Retry-After (RFC 6585 §4) and goes no further. The client is the
// request's trusted client (clientaddr.go), keyed on its full address: an
// IPv6 client is not grouped with its /64, since the setting is per client
// address and a /64 is often a whole site behind one router. One table per
// listening service counts the requests of every front end (HTTP/1.1,
// HTTP/2, HTTP/3) alike.
//
// A bucket is kept as the time it will be full again (GCRA's theoretical
// arrival time): a client whose time has passed holds every token, so it is
// the same as a client the table does not hold, and the table can drop it
// at no cost. The table is bounded (config.MaxRateLimitClients) so that a
// flood of distinct addresses cannot grow memory: it is split into shards,
// each with its own lock, a fixed number of entries and a fixed hash index
// over them (open addressing; a Go map would not do: under a churn of
// deletions and insertions its tables grow to make room for the deleted
// slots); a new client in a full shard takes the place of one whose bucket
// has refilled, else of the one seen least recently.

// rateShards is the number of shards of a rate limiter's table.
const (
	rateShardBits = 6
	rateShards    = 1 << rateShardBits
)

// rateEvictScan is how many of a full shard's least recently seen entries
// are looked at for one whose bucket has refilled.
const rateEvictScan = 8

// rateLimiter is the table of one listening service with a rate_limit.
type rateLimiter struct {
	interval  int64     // nanoseconds between two tokens: per / requests
	tolerance int64     // how far the bucket's full time may lie ahead and a token remain: (capacity-1)*interval
	base      time.Time // the origin of the entries' times (monotonic)
	seed      uint64    // for hash: a client cannot aim at another's shard
	perShard  int
	shards    [rateShards]rateShard
}

// rateShard is one part of the table: its entries, a hash index over
// them, and the entries in a list from the most to the least recently seen.
type rateShard struct {
	mu sync.Mutex
	// slots is the index: a hash table with linear probing, twice the
	// entries' capacity (a power of two), each slot an entry's number plus
	// one, or 0 when empty. Made with the shard's first client.
	slots      []int32
	entries    []rateEntry // at most perShard; never shrinks
	head, tail int32       // most and least recently seen entry; -1 when empty
	_          [64]byte    // the next shard's lock on another cache line
}

// rateEntry is one client's bucket.
type rateEntry struct {
	addr       netip.Addr
	hash       uint64 // the address's, for the index
	full       int64  // when the bucket is full again, in nanoseconds since base
	prev, next int32  // the list by last seen; -1 at its ends
}

// newRateLimiter returns the limiter of rl, or nil when rl is off.
func newRateLimiter(rl config.RateLimit) *rateLimiter {
	if rl.Requests <= 0 {
		return nil
	}
	per := rl.Per
	if per <= 0 {
		per = config.DefaultRatePer
	}
	interval := max(int64(per)/int64(rl.Requests), 1)
	l := &rateLimiter{
		interval:  interval,
		tolerance: int64(rl.Requests+max(rl.Burst, 0)-1) * interval,
		base:      time.Now(),
		seed:      rand.Uint64(),
		perShard:  (config.MaxRateLimitClients + rateShards - 1) / rateShards,
	}
	for i := range l.shards {
		l.shards[i].head, l.shards[i].tail = -1, -1
	}
	return l
}

// sameRateLimit reports whether two rate_limit settings limit alike, so that
// a reload that does not change them keeps the clients' counts.
func sameRateLimit(a, b config.RateLimit) bool {
	if a.Requests <= 0 && b.Requests <= 0 {
		return true
	}
	if a.Per <= 0 {
		a.Per = config.DefaultRatePer
	}
	if b.Per <= 0 {
		b.Per = config.DefaultRatePer
	}
	return a == b
}

// allow takes a token from client's bucket at now. It returns 0 when there
// was one, else how long until there is.
func (l *rateLimiter) allow(client netip.Addr, now time.Time) time.Duration {
	t := int64(now.Sub(l.base))
	h := l.hash(client)
	sh := &l.shards[h>>(64-rateShardBits)] // the shard by the hash's top bits; its index uses the bottom ones
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, _ := sh.find(client, h)
	if i >= 0 {
		sh.touch(i)
	} else {
		i = sh.add(client, h, t, l.perShard)
	}
	e := &sh.entries[i]
	full := max(e.full, t)
	// Tokens at t: capacity - (full-t)/interval; one is left while
	// full-t <= (capacity-1)*interval.
	if wait := full - t - l.tolerance; wait > 0 {
		return time.Duration(wait)
	}
	e.full = full + l.interval
	return 0
}

// retryAfter is the Retry-After value for a wait: whole seconds, rounded up,
// at least 1 (RFC 9110 §10.2.3 has no fractions).
func retryAfter(wait time.Duration) int64 {
	return max(int64((wait+time.Second-1)/time.Second), 1)
}

// hash mixes the address's 128 bits (an IPv4 client's as IPv4-mapped) with
// the limiter's seed.
func (l *rateLimiter) hash(a netip.Addr) uint64 {
	b := a.As16()
	hi := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
	lo := uint64(b[8])<<56 | uint64(b[9])<<48 | uint64(b[10])<<40 | uint64(b[11])<<32 |
		uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
	h := (hi ^ l.seed) * 0x9e3779b97f4a7c15
	h ^= h >> 31
	h = (h ^ lo) * 0xbf58476d1ce4e5b9
	h ^= h >> 29
	return h
}

// find returns the entry of client, whose hash is h, and its slot; -1 when
// the shard has none.
func (sh *rateShard) find(client netip.Addr, h uint64) (entry int32, slot int) {
	mask := len(sh.slots) - 1
	for j := int(h) & mask; mask >= 0; j = (j + 1) & mask {
		s := sh.slots[j]
		if s == 0 {
			break
		}
		if sh.entries[s-1].addr == client {
			return s - 1, j
		}
	}
	return -1, -1
}

// unindex removes the index's slot j, moving back the entries after it
// that probed past it (Knuth's algorithm R), so that no tombstone is left.
func (sh *rateShard) unindex(j int) {
	mask := len(sh.slots) - 1
	sh.slots[j] = 0
	for k := (j + 1) & mask; sh.slots[k] != 0; k = (k + 1) & mask {
		home := int(sh.entries[sh.slots[k]-1].hash) & mask
		// The entry at k stays if its home lies cyclically in (j, k].
		if (j < k && j < home && home <= k) || (k < j && (j < home || home <= k)) {
			continue
		}
		sh.slots[j], sh.slots[k] = sh.slots[k], 0
		j = k
	}
}

// add makes an entry for client, with a full bucket, at the front of the
// list. In a full shard it reuses an entry: the first of the least recently
// seen whose bucket has refilled by t (forgetting it changes nothing), else
// the least recently seen.
func (sh *rateShard) add(client netip.Addr, h uint64, t int64, capacity int) int32 {
	if sh.slots == nil {
		size := 1
		for size < 2*capacity { // at most half full: short probes
			size <<= 1
		}
		sh.slots = make([]int32, size)
	}
	var i int32
	if len(sh.entries) < capacity {
		i = int32(len(sh.entries))
		sh.entries = append(sh.entries, rateEntry{})
	} else {
		i = sh.tail
		for j, n := sh.tail, 0; j >= 0 && n < rateEvictScan; j, n = sh.entries[j].prev, n+1 {
			if sh.entries[j].full <= t {
				i = j
				break
			}
		}
		_, j := sh.find(sh.entries[i].addr, sh.entries[i].hash)
		sh.unindex(j)
		sh.unlink(i)
	}
	sh.entries[i] = rateEntry{addr: client, hash: h, full: t, prev: -1, next: -1}
	mask := len(sh.slots) - 1
	j := int(h) & mask
	for sh.slots[j] != 0 {
		j = (j + 1) & mask
	}
	sh.slots[j] = i + 1
	sh.pushFront(i)
	return i
}

// touch moves entry i to the front of the list.
func (sh *rateShard) touch(i int32) {
	if sh.head != i {
		sh.unlink(i)
		sh.pushFront(i)
	}
}

func (sh *rateShard) unlink(i int32) {
	e := &sh.entries[i]
	if e.prev >= 0 {
		sh.entries[e.prev].next = e.next
	} else {
		sh.head = e.next
	}
	if e.next >= 0 {
		sh.entries[e.next].prev = e.prev
	} else {
		sh.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (sh *rateShard) pushFront(i int32) {
	e := &sh.entries[i]
	e.prev, e.next = -1, sh.head
	if sh.head >= 0 {
		sh.entries[sh.head].prev = i
	}
	sh.head = i
	if sh.tail < 0 {
		sh.tail = i
	}
}

// len returns the number of clients the table holds.
func (l *rateLimiter) len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.entries)
		sh.mu.Unlock()
	}
	return n
}

// admit applies the service's rate limit to a request of client that
// arrived at now. It returns 0 to let the request in, else the Retry-After
// seconds of its 429.
func (s *Service) admit(client netip.Addr, now time.Time) int64 {
	l := s.limit.Load()
	if l == nil {
		return 0
	}
	wait := l.allow(client, now)
	if wait == 0 {
		return 0
	}
	s.limited.Add(1)
	return retryAfter(wait)
}

// rateLimitedReason is the 429's reason, for the log.
const rateLimitedReason = "rate limit exceeded"

// tooMany answers 429 with Retry-After (RFC 6585 §4). The request was read
// whole and well formed, so unlike fail's 4xx it keeps the connection when
// no request body is left unread.
func (cc *clientConn) tooMany(retry int64) bool {
	cc.status, cc.errMsg, cc.generated = http.StatusTooManyRequests, rateLimitedReason, true
	keep := cc.beginAnswer()
	w := &cc.out
	w.WriteString("HTTP/1.1 429 Too Many Requests\r\nCache-Control: no-cache\r\nRetry-After: ")
	w.Write(strconv.AppendInt(w.spare(), retry, 10))
	return cc.endAnswer(keep, cannedBodies[http.StatusTooManyRequests])
}

// tooMany answers 429 with Retry-After, as clientConn.tooMany does.
func (x *h2exchange) tooMany(retry int64) {
	x.status, x.errMsg, x.generated = http.StatusTooManyRequests, rateLimitedReason, true
	x.responded = true
	body := cannedBodies[http.StatusTooManyRequests]
	h := x.w.Header()
	clear(h)
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	h["Cache-Control"] = []string{"no-cache"}
	h["Retry-After"] = []string{strconv.FormatInt(retry, 10)}
	x.w.WriteHeader(http.StatusTooManyRequests)
	if x.r.Method != http.MethodHead {
		io.WriteString(x.w, body)
	}
	x.flush()
}
