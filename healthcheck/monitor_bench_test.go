package healthcheck

import (
	"testing"
)

// ObserveOK and Up run for every response on the proxy's hot path.

func TestObserveOKAllocs(t *testing.T) {
	m := NewMonitor(&scripted{}, "x:1", Settings{ObserveErrors: 10}, &recorder{})
	if n := testing.AllocsPerRun(1000, m.ObserveOK); n != 0 {
		t.Errorf("ObserveOK: %v allocs, want 0", n)
	}
	m.ObserveError("boom")
	if n := testing.AllocsPerRun(1000, func() { m.ObserveError("boom"); m.ObserveOK() }); n != 0 {
		t.Errorf("ObserveError below the threshold and ObserveOK: %v allocs, want 0", n)
	}
}

func BenchmarkObserveOK(b *testing.B) {
	m := NewMonitor(&scripted{}, "x:1", Settings{ObserveErrors: 10}, &recorder{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveOK()
		}
	})
}

func BenchmarkUp(b *testing.B) {
	m := NewMonitor(&scripted{}, "x:1", Settings{}, &recorder{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !m.Up() {
				b.Fatal("down")
			}
		}
	})
}
