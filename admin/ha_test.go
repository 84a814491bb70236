package admin

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/ha"
)

// haFake is a Runtime with an [ha] section.
type haFake struct {
	*fakeRuntime
	mu        sync.Mutex
	st        ha.Status
	overrides []string
	refuse    error
}

func (h *haFake) HAStatus() (ha.Status, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st, true
}

func (h *haFake) HAOverride(action string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refuse != nil {
		return h.refuse
	}
	h.overrides = append(h.overrides, action)
	h.st.Override = action
	return nil
}

// TestHAAPI: without [ha] the endpoints answer 404; with it, the status as
// JSON, the three overrides (which need a session or Basic with JSON, as
// every mutating call), a refused override as 409, and the metrics.
func TestHAAPI(t *testing.T) {
	if r := newFixture(t).do(t, req{method: "GET", path: "/api/v1/ha", basic: true}); r.status != 404 || !strings.Contains(r.body, "no [ha] section") {
		t.Errorf("without [ha]: %d %s", r.status, r.body)
	}

	rt := &haFake{fakeRuntime: newFakeRuntime(), st: ha.Status{Interface: "eth0", VRID: 51, Priority: 150, State: "master",
		Families: []ha.FamilyStatus{{Family: "ipv4", State: "master", Priority: 150, Local: "10.0.0.11", Master: "10.0.0.11",
			VIPs: []string{"10.0.0.21/24"}, Peer: "unknown"}}}}
	s, err := New(config.Admin{Listen: "127.0.0.1:0", Users: testUsers()}, rt, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	f := &fixture{s: s, rt: rt.fakeRuntime, ts: ts}

	r := f.do(t, req{method: "GET", path: "/api/v1/ha", basic: true})
	var st ha.Status
	if r.status != 200 || json.Unmarshal([]byte(r.body), &st) != nil || st.State != "master" || len(st.Families) != 1 || st.Families[0].VIPs[0] != "10.0.0.21/24" {
		t.Fatalf("GET /api/v1/ha: %d %s", r.status, r.body)
	}
	for _, action := range []string{"takeover", "release", "auto"} {
		if r := f.do(t, req{method: "POST", path: "/api/v1/ha/" + action, basic: true}); r.status != 415 {
			t.Errorf("%s with Basic and no JSON: %d, want 415", action, r.status)
		}
		if r := f.do(t, req{method: "POST", path: "/api/v1/ha/" + action, basic: true, json: true}); r.status != 200 || !strings.Contains(r.body, `"override":"`+action+`"`) {
			t.Errorf("%s: %d %s", action, r.status, r.body)
		}
	}
	if !slices.Equal(rt.overrides, []string{"takeover", "release", "auto"}) {
		t.Errorf("overrides = %q", rt.overrides)
	}
	rt.refuse = errors.New("not Master")
	if r := f.do(t, req{method: "POST", path: "/api/v1/ha/release", basic: true, json: true}); r.status != 409 || !strings.Contains(r.body, "not Master") {
		t.Errorf("refused release: %d %s", r.status, r.body)
	}
	if r := f.do(t, req{method: "GET", path: "/metrics", basic: true}); !strings.Contains(r.body, `fulcrum_ha_state{family="ipv4"} 2`) ||
		!strings.Contains(r.body, `fulcrum_ha_priority{family="ipv4"} 150`) {
		t.Errorf("metrics lack the HA state:\n%s", r.body)
	}
}

// TestBrowserHA: the web UI's header shows the node's HA role, as an
// appliance does, and nothing about HA when the configuration has none.
func TestBrowserHA(t *testing.T) {
	needBrowser(t)
	rt := &haFake{fakeRuntime: newFakeRuntime(), st: ha.Status{Interface: "eth0", VRID: 51, Priority: 100, State: "backup",
		Families: []ha.FamilyStatus{{Family: "ipv4", State: "backup", Priority: 100, Local: "10.0.0.12", Master: "10.0.0.11", Peer: "up"}}}}
	for _, tt := range []struct {
		name string
		rt   Runtime
		want string // "" : no HA in the header
	}{
		{"backup", rt, "HA: Backup (passive) · peer link up"},
		{"no ha", newFakeRuntime(), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(config.Admin{Listen: "127.0.0.1:0", Users: testUsers()}, tt.rt, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewServer(s.Handler())
			t.Cleanup(ts.Close)
			ctx := startBrowser(t)
			err = chromedp.Do(ctx,
				chromedp.Navigate(ts.URL+"/"),
				chromedp.WaitVisible(chromedp.ID("login-user")),
				chromedp.SendKeys(chromedp.ID("login-user"), testUser),
				chromedp.SendKeys(chromedp.ID("login-password"), testPassword),
				chromedp.Click(chromedp.ID("login-submit")),
				chromedp.WaitVisible(chromedp.CSS(`section[data-service="web"]`)),
			)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" {
				hidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById('ha').hidden`))
				if err != nil || !hidden {
					t.Errorf("HA shown in the header without [ha] (hidden %v, %v)", hidden, err)
				}
				return
			}
			if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("ha"))); err != nil {
				t.Fatal(err)
			}
			text, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("ha")))
			if err != nil || strings.TrimSpace(text) != tt.want {
				t.Errorf("header HA = %q (%v), want %q", text, err, tt.want)
			}
		})
	}
}
