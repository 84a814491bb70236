package proxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
)

func TestStickFeedAndApply(t *testing.T) {
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	web := testService("web", "127.0.0.1:0",
		&config.RealServer{Name: "a", Address: a, Weight: 1, State: config.StateReady},
		&config.RealServer{Name: "b", Address: b, Weight: 1, State: config.StateReady})
	web.Persistence = config.Persistence{Method: config.PersistSourceIP, Timeout: time.Minute, SourceMask: 32, SourceMask6: 128}
	hdr := testService("hdr", "127.0.0.1:0", &config.RealServer{Name: "a", Address: a, Weight: 1, State: config.StateReady})
	hdr.Persistence = config.Persistence{Method: config.PersistHeader, Header: "X-User", Timeout: time.Minute}
	p, err := New(testConfig(web, hdr), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	feed := p.StickUpdates()
	s := p.Services()[0]
	ps := s.persist.Load()
	ps.addrs.Put(ps.sourceKey(mustAddr(t, "10.9.8.7")), "b")
	select {
	case u := <-feed:
		if u.Service != "web" || u.Method != "source_ip" || u.Key != "10.9.8.7" || u.Server != "b" {
			t.Errorf("feed gave %+v", u)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing on the feed")
	}
	// A reload keeping the table keeps it hooked.
	if err := p.Apply(testConfig(web, hdr)); err != nil {
		t.Fatal(err)
	}
	p.Services()[0].persist.Load().addrs.Put(mustAddr(t, "10.9.8.6"), "a")
	if u := <-feed; u.Key != "10.9.8.6" {
		t.Errorf("after reload, feed gave %+v", u)
	}

	now := time.Now()
	n, err := p.ApplyStick([]StickUpdate{
		{Service: "web", Method: "source_ip", Key: "10.1.1.1", Server: "a", Used: now},
		{Service: "hdr", Method: "header", Key: "alice", Server: "a", Used: now.Add(-time.Second)},
		{Service: "hdr", Method: "source_ip", Key: "10.1.1.2", Server: "a", Used: now},
		{Service: "nope", Method: "header", Key: "x", Server: "a", Used: now},
		{Service: "web", Method: "source_ip", Key: "bad", Server: "a", Used: now},
		{Service: "web", Method: "source_ip", Key: "10.1.1.3", Server: "a", Used: now.Add(-time.Hour)},
	})
	if n != 2 || err == nil || !strings.Contains(err.Error(), "4 of 6 stick entries skipped") {
		t.Fatalf("ApplyStick = %d, %v", n, err)
	}
	select {
	case u := <-feed:
		t.Errorf("applied entries echoed on the feed: %+v", u)
	default:
	}
	snap := map[string]string{}
	for _, u := range p.StickSnapshot() {
		snap[u.Service+"/"+u.Key] = u.Server
	}
	if len(snap) != 4 || snap["web/10.1.1.1"] != "a" || snap["hdr/alice"] != "a" || snap["web/10.9.8.7"] != "b" {
		t.Errorf("snapshot = %v", snap)
	}
	if p.StickDropped() != 0 {
		t.Errorf("dropped %d", p.StickDropped())
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
