package persistence

import (
	"testing"
	"time"
)

func TestOnPutRestoreRange(t *testing.T) {
	tb, clk := newTestTable[string](10, time.Minute)
	var seen []string
	tb.SetOnPut(func(k, server string) { seen = append(seen, k+"="+server) })
	tb.Put("a", "s1")
	tb.Put("a", "s2")
	// Restore does not echo to the hook: peers must not ping-pong entries.
	if !tb.Restore("b", "s3", clk.Now().Add(-30*time.Second)) {
		t.Fatal("Restore of a live entry refused")
	}
	if tb.Restore("c", "s4", clk.Now().Add(-time.Minute)) {
		t.Error("Restore stored an expired entry")
	}
	if got := len(seen); got != 2 || seen[0] != "a=s1" || seen[1] != "a=s2" {
		t.Errorf("hook saw %v", seen)
	}
	checkInvariants(t, tb)
	got := map[string]time.Duration{}
	tb.Range(func(k, server string, used time.Time) bool {
		got[k+"="+server] = clk.Now().Sub(used)
		return true
	})
	if len(got) != 2 || got["a=s2"] != 0 || got["b=s3"] != 30*time.Second {
		t.Errorf("Range = %v", got)
	}
	// The restored entry keeps its age: it expires 30s later, not a minute.
	clk.Advance(31 * time.Second)
	if _, ok := tb.Get("b"); ok {
		t.Error("restored entry outlived its age")
	}
	tb.SetOnPut(nil)
	tb.Put("d", "s5")
	if len(seen) != 2 {
		t.Errorf("removed hook still called: %v", seen)
	}
	n := 0
	tb.Range(func(string, string, time.Time) bool { n++; return false })
	if n != 1 {
		t.Errorf("Range went on after false: %d calls", n)
	}
}

func TestPutWithoutHookAllocatesNothing(t *testing.T) {
	tb := NewTable[string](100, time.Minute)
	tb.Put("k", "s")
	if n := testing.AllocsPerRun(100, func() { tb.Put("k", "s") }); n != 0 {
		t.Errorf("Put allocates %v times", n)
	}
}
