package balancer

import "math/bits"

// HashBytes returns a 64-bit hash of b for the keyed schedulers (PickKey) and
// for stick tables. It is a fixed function: the same bytes hash to the same
// value in every process, on every machine and in every release, which is
// what lets both members of an HA pair, and a restarted Fulcrum, send a
// client to the same real server. So it has no random seed, and it offers no
// protection against an attacker who crafts colliding keys; it needs none,
// since a collision only puts two clients on the same real server.
//
// It reads b eight bytes at a time, little endian whatever the CPU, through
// an xxhash64-style round (multiply, rotate, multiply) into one accumulator,
// and ends with a xor-shift-multiply finalizer so that every input bit flips
// each output bit with probability about 1/2 (TestHashAvalanche). It does not
// allocate.
func HashBytes(b []byte) uint64 { return hash(b, 0) }

// HashString is HashBytes for a string, without converting it (no
// allocation): HashString(s) == HashBytes([]byte(s)).
func HashString(s string) uint64 { return hash(s, 0) }

// Constants of the hash: odd and with their bits well spread, as multipliers
// must be. hashK1 is 2^64 divided by the golden ratio.
const (
	hashK1 = 0x9e3779b97f4a7c15
	hashK2 = 0xc2b2ae3d27d4eb4f
	hashK3 = 0x27d4eb2f165667c5
	mixK1  = 0xbf58476d1ce4e5b9
	mixK2  = 0x94d049bb133111eb
)

// hash is HashBytes with a seed; other seeds give unrelated functions (the
// Maglev table takes two per server name). Generic so that strings need no
// copy: the instantiations for string and []byte are separate, so indexing
// compiles to plain loads in both.
func hash[T string | []byte](b T, seed uint64) uint64 {
	// The length goes in first, so that inputs differing only in trailing
	// zero bytes ("a" and "a\x00"), which pad to the same last word, do not
	// collide.
	h := seed ^ (uint64(len(b)) * hashK1)
	i := 0
	for ; len(b)-i >= 8; i += 8 {
		h = hashRound(h, le64(b, i))
	}
	var tail uint64
	for j := len(b) - 1; j >= i; j-- {
		tail = tail<<8 | uint64(b[j])
	}
	return mix64(hashRound(h, tail))
}

// hashRound folds one word into the accumulator. Each step is a bijection
// (multiplying by an odd constant, rotating, xoring in a value independent of
// h), so no two accumulators fed the same word meet.
func hashRound(h, w uint64) uint64 {
	w *= hashK2
	w = bits.RotateLeft64(w, 31)
	w *= hashK1
	h ^= w
	return bits.RotateLeft64(h, 27)*hashK1 + hashK3
}

// mix64 is a finalizer with full avalanche: each xor-shift folds high bits
// into low ones and each multiplication carries low bits up. It is a
// bijection, so it also turns a counter into a pseudo-random sequence (see
// RandomTwo's tests).
func mix64(h uint64) uint64 {
	h ^= h >> 30
	h *= mixK1
	h ^= h >> 27
	h *= mixK2
	h ^= h >> 31
	return h
}

// le64 reads b[i:i+8] as a little-endian word. The compiler merges the eight
// loads into one on little-endian machines.
func le64[T string | []byte](b T, i int) uint64 {
	b = b[i : i+8]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
