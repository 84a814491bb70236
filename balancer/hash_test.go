package balancer

import (
	"fmt"
	"math/bits"
	"strings"
	"testing"
)

// TestHashGolden pins HashString's values. They must never change: HA pairs
// running different releases, and stick entries written by an older
// release, rely on every Fulcrum hashing alike. A failure here means the
// change breaks that; revert it rather than update the table.
func TestHashGolden(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
	}{
		{"", 0x323def0871273387},
		{"a", 0x0246b21be0f139b5},
		{"a\x00", 0xd8d3d3bfdd87a2be},
		{"abc", 0x08d47f73240b8696},
		{"12345678", 0xb863efbb578d8677},
		{"123456789", 0xd87a85022a23c4e3},
		{"10.0.0.1", 0x08ec03f3d37d455a},
		{"/index.html", 0xf963365fc111d42c},
		{"alice", 0xa264f37e51e609ef},
		{strings.Repeat("x", 100), 0x3bbf880236245de9},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 20 {
			name = name[:20] + "..."
		}
		t.Run(name, func(t *testing.T) {
			if got := HashString(tt.in); got != tt.want {
				t.Errorf("HashString(%q) = %#016x, want %#016x", tt.in, got, tt.want)
			}
			if got := HashBytes([]byte(tt.in)); got != tt.want {
				t.Errorf("HashBytes(%q) = %#016x, want %#016x", tt.in, got, tt.want)
			}
		})
	}
}

// TestHashDistinct checks inputs that weak hashes confuse: trailing zeros
// (the tail word is zero padded), words swapped, lengths around the 8-byte
// words.
func TestHashDistinct(t *testing.T) {
	inputs := []string{
		"", "\x00", "\x00\x00", "\x00\x00\x00\x00\x00\x00\x00\x00", "\x00\x00\x00\x00\x00\x00\x00\x00\x00",
		"a", "a\x00", "ab", "ba",
		"12345678abcdefgh", "abcdefgh12345678",
		"1234567", "12345678", "123456789", "123456781234567", "1234567812345678",
		"10.0.0.1", "10.0.0.10", "10.0.1.0",
	}
	seen := map[uint64]string{}
	for _, in := range inputs {
		h := HashString(in)
		if prev, ok := seen[h]; ok {
			t.Errorf("HashString(%q) = HashString(%q) = %#x", in, prev, h)
		}
		seen[h] = in
	}
}

// TestHashAvalanche checks that flipping any one input bit flips each output
// bit with probability close to 1/2, for inputs of several lengths: what
// makes similar keys (10.0.0.1 and 10.0.0.2) land on unrelated Maglev slots.
// It checks both ways: per output bit over all input bits, and per input bit
// over all output bits, so one weak input byte cannot hide in the average.
func TestHashAvalanche(t *testing.T) {
	for _, n := range []int{1, 4, 7, 8, 9, 16, 31, 64} {
		t.Run(fmt.Sprintf("len%d", n), func(t *testing.T) {
			const trials = 200
			perOut := make([]int, 64) // flips of each output bit
			perIn := make([]int, n*8) // output bits flipped by each input bit
			state := uint64(n)
			buf := make([]byte, n)
			for range trials {
				for i := range buf {
					state++
					buf[i] = byte(mix64(state))
				}
				h := HashBytes(buf)
				for bit := range n * 8 {
					buf[bit/8] ^= 1 << (bit % 8)
					d := h ^ HashBytes(buf)
					buf[bit/8] ^= 1 << (bit % 8)
					for o := range 64 {
						perOut[o] += int(d >> o & 1)
					}
					perIn[bit] += bits.OnesCount64(d)
				}
			}
			// perOut: at least 1600 samples each, ±0.06 is over 4.8
			// standard deviations; perIn: 12800 each, ±0.03 is 6.8.
			for o, f := range perOut {
				if p := float64(f) / float64(trials*n*8); p < 0.44 || p > 0.56 {
					t.Errorf("output bit %d flips with probability %.3f, want about 0.5", o, p)
				}
			}
			for i, f := range perIn {
				if p := float64(f) / float64(trials*64); p < 0.47 || p > 0.53 {
					t.Errorf("input bit %d flips %.3f of the output bits, want about 0.5", i, p)
				}
			}
		})
	}
}

// TestHashSpread checks sequential keys (client addresses of one subnet)
// fill buckets evenly.
func TestHashSpread(t *testing.T) {
	const buckets, keys = 64, 64 * 1000
	var count [buckets]int
	addr := []byte{10, 0, 0, 0}
	for i := range keys {
		addr[2], addr[3] = byte(i>>8), byte(i)
		count[HashBytes(addr)%buckets]++
	}
	for b, c := range count {
		// 1000 expected, standard deviation about 31.
		if c < 850 || c > 1150 {
			t.Errorf("bucket %d has %d keys, want about 1000", b, c)
		}
	}
	// And the high bits: Maglev uses key % M, but callers may not.
	var high [buckets]int
	for i := range keys {
		addr[2], addr[3] = byte(i>>8), byte(i)
		high[HashBytes(addr)>>58]++
	}
	for b, c := range high {
		if c < 850 || c > 1150 {
			t.Errorf("top-bits bucket %d has %d keys, want about 1000", b, c)
		}
	}
}

func TestHashDoesNotAllocate(t *testing.T) {
	s := "/static/app.js"
	b := []byte("10.1.2.3")
	allocs := testing.AllocsPerRun(1000, func() {
		if HashString(s) == HashBytes(b) {
			t.Fatal("collision")
		}
		var a [16]byte // an address on the stack, as the proxy hashes it
		a[15] = 1
		if HashBytes(a[:]) == 0 {
			t.Fatal("zero")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocs, want 0", allocs)
	}
}
