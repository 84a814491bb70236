package balancer

import (
	"reflect"
	"testing"
)

func TestSmoothSequence(t *testing.T) {
	tests := []struct {
		name    string
		weights []int64
		want    string // one cycle, servers as a, b, c, ...
	}{
		// The example from nginx's commit introducing smooth weighted
		// round robin (ngx_http_upstream_round_robin.c, 2012).
		{name: "5 1 1", weights: []int64{5, 1, 1}, want: "aabacaa"},
		{name: "3 1", weights: []int64{3, 1}, want: "aaba"},
		{name: "1 3", weights: []int64{1, 3}, want: "babb"},
		{name: "equal", weights: []int64{1, 1, 1}, want: "abc"},
		{name: "gcd", weights: []int64{4, 4, 4}, want: "abc"},
		{name: "gcd keeps ratio", weights: []int64{10, 5}, want: "aba"},
		{name: "4 2 1", weights: []int64{4, 2, 1}, want: "abacaba"},
		{name: "single", weights: []int64{7}, want: "a"},
		{name: "none", weights: nil, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq := smoothSequence(tt.weights)
			got := make([]byte, len(seq))
			for i, x := range seq {
				got[i] = byte('a' + x)
			}
			if string(got) != tt.want {
				t.Errorf("smoothSequence(%v) = %s, want %s", tt.weights, got, tt.want)
			}
		})
	}
}

// TestSmoothSequenceNoBursts checks the property smoothness is for: within
// a cycle no server runs ahead of its ideal share by a whole request or more.
// (In nginx's scheme the lead stays below one request at every prefix.)
func TestSmoothSequenceNoBursts(t *testing.T) {
	tests := []struct {
		name    string
		weights []int64
	}{
		{name: "5 1 1", weights: []int64{5, 1, 1}},
		{name: "100 1", weights: []int64{100, 1}},
		{name: "primes", weights: []int64{2, 3, 5, 7, 11, 13}},
		{name: "skewed", weights: []int64{1000, 300, 7, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq := smoothSequence(tt.weights)
			var total int64
			for _, w := range tt.weights {
				total += w
			}
			if int64(len(seq)) != total {
				t.Fatalf("cycle %d, want %d", len(seq), total)
			}
			got := make([]int64, len(tt.weights))
			for k, x := range seq {
				got[x]++
				for i, w := range tt.weights {
					// got[i] - ideal share ≥ 1, in integers:
					if (got[i]*total - int64(k+1)*w) >= total {
						t.Fatalf("after %d picks server %d has %d, ideal %d/%d: a burst",
							k+1, i, got[i], int64(k+1)*w, total)
					}
				}
			}
			if !reflect.DeepEqual(got, tt.weights) {
				t.Errorf("per-cycle counts %v, want %v", got, tt.weights)
			}
		})
	}
}

func TestReduceWeights(t *testing.T) {
	tests := []struct {
		name    string
		weights []int64
		want    []int64
	}{
		{name: "coprime", weights: []int64{3, 1}, want: []int64{3, 1}},
		{name: "gcd", weights: []int64{300, 100, 200}, want: []int64{3, 1, 2}},
		{name: "at the limit", weights: []int64{maxCycle - 1, 1}, want: []int64{maxCycle - 1, 1}},
		{name: "over the limit", weights: []int64{100000, 1}, want: []int64{65535, 1}},
		{name: "over, proportional", weights: []int64{3 * 65535, 65535 + 1}, want: []int64{49151, 16384}},
		{name: "large equal", weights: []int64{1 << 30, 1 << 30}, want: []int64{1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reduceWeights(tt.weights)
			var total int64
			for _, w := range got {
				total += w
				if w < 1 {
					t.Errorf("weight %d below 1", w)
				}
			}
			if total > maxCycle+int64(len(got)) {
				t.Errorf("cycle %d exceeds %d", total, maxCycle+len(got))
			}
			if tt.want != nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("reduceWeights(%v) = %v, want %v", tt.weights, got, tt.want)
			}
		})
	}
}

// TestWeightedRoundRobinScaled checks a pool whose cycle had to be scaled down
// still gets the right shares.
func TestWeightedRoundRobinScaled(t *testing.T) {
	ss := servers(1_000_000, 999_999, 7)
	r := new(WeightedRoundRobin)
	r.Update(ss)
	cycle := len(r.snap.Load().seq)
	if cycle > maxCycle+len(ss) {
		t.Fatalf("cycle %d longer than %d", cycle, maxCycle+len(ss))
	}
	picked := pick(t, "weighted_round_robin", ss, nil, cycle, true)
	got := counts(ss, picked)
	// 1e6 and 999,999 both scale to 32767.9 and floor to 32767; 7
	// scales to 0.2 and is raised to the minimum of 1.
	if got != "a=32767 b=32767 c=1" {
		t.Errorf("counts %s over one cycle of %d", got, cycle)
	}
}
