package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/proxy"
)

// TestAPI calls every endpoint with Basic auth, good and bad input, and
// checks the status, the error text or a piece of the body, and the call
// the runtime received.
func TestAPI(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		path     string
		body     string
		noJSON   bool   // omit Content-Type: application/json
		want     int    // status
		contains string // in the body
		call     string // the runtime call expected ("" none)
		header   map[string]string
	}{
		// status and lookups
		{name: "status", method: "GET", path: "/api/v1/status", want: 200, contains: `"request_rate":0`},
		{name: "status lists real servers", method: "GET", path: "/api/v1/status", want: 200, contains: `"name":"web2"`},
		{name: "status HEAD", method: "HEAD", path: "/api/v1/status", want: 200},
		{name: "status POST", method: "POST", path: "/api/v1/status", want: 405, contains: "method POST not allowed; use GET, HEAD",
			header: map[string]string{"Allow": "GET, HEAD"}},
		{name: "service", method: "GET", path: "/api/v1/services/web", want: 200, contains: `"scheduler":"round_robin"`},
		{name: "unknown service", method: "GET", path: "/api/v1/services/nope", want: 404, contains: `"error":"virtual service \"nope\" not found"`},
		{name: "server", method: "GET", path: "/api/v1/services/web/servers/web1", want: 200, contains: `"address":"10.0.0.1:80"`},
		{name: "server check", method: "GET", path: "/api/v1/services/web/servers/web1", want: 200, contains: `"detail":"HTTP 200 OK"`},
		{name: "unknown server", method: "GET", path: "/api/v1/services/web/servers/nope", want: 404,
			contains: `real server \"nope\" not found in virtual service \"web\"`},
		{name: "server of unknown service", method: "GET", path: "/api/v1/services/nope/servers/web1", want: 404, contains: "virtual service"},
		{name: "unknown endpoint", method: "GET", path: "/api/v1/nothing", want: 404, contains: "no such API endpoint: /api/v1/nothing"},
		{name: "server PATCH", method: "PATCH", path: "/api/v1/services/web/servers/web1", want: 405, contains: "use DELETE, GET, HEAD"},

		// state
		{name: "drain", method: "PUT", path: "/api/v1/services/web/servers/web1/state", body: `{"state":"drain"}`,
			want: 200, contains: `"state":"drain"`, call: "SetState web web1 drain"},
		{name: "maintenance", method: "PUT", path: "/api/v1/services/web/servers/web1/state", body: `{"state":"maintenance"}`,
			want: 200, contains: `"color":"blue"`, call: "SetState web web1 maintenance"},
		{name: "maint alias", method: "PUT", path: "/api/v1/services/web/servers/web2/state", body: `{"state":"maint"}`,
			want: 200, contains: `"state":"maintenance"`, call: "SetState web web2 maintenance"},
		{name: "ready upper case", method: "PUT", path: "/api/v1/services/web/servers/web1/state", body: `{"state":"READY"}`,
			want: 200, call: "SetState web web1 ready"},
		{name: "unknown state", method: "PUT", path: "/api/v1/services/web/servers/web1/state", body: `{"state":"off"}`,
			want: 400, contains: `unknown state \"off\"; want ready, drain or maintenance`},
		{name: "missing state", method: "PUT", path: "/api/v1/services/web/servers/web1/state", body: `{}`,
			want: 400, contains: "unknown state"},
		{name: "state bad JSON", method: "PUT", path: "/api/v1/services/web/servers/web1/state", body: `{"state":`,
			want: 400, contains: "bad JSON"},
		{name: "state wrong type", method: "PUT", path: "/api/v1/services/web/servers/web1/state", body: `{"state":1}`,
			want: 400, contains: "bad JSON"},
		{name: "state unknown field", method: "PUT", path: "/api/v1/services/web/servers/web1/state", body: `{"state":"drain","why":"x"}`,
			want: 400, contains: `unknown field \"why\"`},
		{name: "state trailing data", method: "PUT", path: "/api/v1/services/web/servers/web1/state", body: `{"state":"drain"} {}`,
			want: 400, contains: "data after the object"},
		{name: "state empty body", method: "PUT", path: "/api/v1/services/web/servers/web1/state",
			want: 400, contains: "request body is empty"},
		{name: "state too large", method: "PUT", path: "/api/v1/services/web/servers/web1/state",
			body: `{"state":"` + strings.Repeat("x", maxBodyBytes) + `"}`, want: 413, contains: "larger than 65536 bytes"},
		{name: "state unknown server", method: "PUT", path: "/api/v1/services/web/servers/nope/state", body: `{"state":"drain"}`,
			want: 404, contains: "not found", call: "SetState web nope drain"},
		{name: "state GET", method: "GET", path: "/api/v1/services/web/servers/web1/state", want: 405, contains: "use PUT"},
		{name: "state without JSON type", method: "PUT", path: "/api/v1/services/web/servers/web1/state", body: `{"state":"drain"}`,
			noJSON: true, want: 415, contains: "Content-Type must be application/json"},

		// weight
		{name: "weight", method: "PUT", path: "/api/v1/services/web/servers/web1/weight", body: `{"weight":5}`,
			want: 200, contains: `"weight":5`, call: "SetWeight web web1 5"},
		{name: "weight zero", method: "PUT", path: "/api/v1/services/web/servers/web1/weight", body: `{"weight":0}`,
			want: 200, call: "SetWeight web web1 0"},
		{name: "weight max", method: "PUT", path: "/api/v1/services/web/servers/web1/weight", body: `{"weight":65535}`,
			want: 200, call: "SetWeight web web1 65535"},
		{name: "weight too big", method: "PUT", path: "/api/v1/services/web/servers/web1/weight", body: `{"weight":65536}`,
			want: 400, contains: "weight 65536 out of range 0..65535"},
		{name: "weight negative", method: "PUT", path: "/api/v1/services/web/servers/web1/weight", body: `{"weight":-1}`,
			want: 400, contains: "out of range"},
		{name: "weight fraction", method: "PUT", path: "/api/v1/services/web/servers/web1/weight", body: `{"weight":1.5}`,
			want: 400, contains: "bad JSON"},
		{name: "weight missing", method: "PUT", path: "/api/v1/services/web/servers/web1/weight", body: `{}`,
			want: 400, contains: "weight is required"},
		{name: "weight unknown service", method: "PUT", path: "/api/v1/services/x/servers/web1/weight", body: `{"weight":1}`,
			want: 404, call: "SetWeight x web1 1"},

		// add
		{name: "add", method: "POST", path: "/api/v1/services/web/servers",
			body: `{"name":"web3","address":"10.0.0.3:80","weight":3,"max_conns":10,"state":"drain"}`,
			want: 201, contains: `"name":"web3"`, call: "AddRealServer web web3 10.0.0.3:80 w=3 max=10 drain",
			header: map[string]string{"Location": "/api/v1/services/web/servers/web3"}},
		{name: "add defaults", method: "POST", path: "/api/v1/services/web/servers", body: `{"address":"10.0.0.4:80"}`,
			want: 201, call: "AddRealServer web 10.0.0.4:80 10.0.0.4:80 w=1 max=0 ready"},
		{name: "add duplicate", method: "POST", path: "/api/v1/services/web/servers", body: `{"name":"web1","address":"10.0.0.9:80"}`,
			want: 409, contains: `real server \"web1\" already exists in virtual service \"web\"`},
		{name: "add to unknown service", method: "POST", path: "/api/v1/services/nope/servers", body: `{"address":"10.0.0.9:80"}`,
			want: 404, contains: `virtual service \"nope\" not found`},
		{name: "add no address", method: "POST", path: "/api/v1/services/web/servers", body: `{"name":"x"}`,
			want: 400, contains: "address is required"},
		{name: "add address without port", method: "POST", path: "/api/v1/services/web/servers", body: `{"address":"10.0.0.9"}`,
			want: 400, contains: `address \"10.0.0.9\": want IP:port`},
		{name: "add refused by runtime", method: "POST", path: "/api/v1/services/web/servers", body: `{"name":"b","address":"bad:80"}`,
			want: 400, contains: "invalid: address is not an IP", call: "AddRealServer web b bad:80 w=1 max=0 ready"},
		{name: "add bad weight", method: "POST", path: "/api/v1/services/web/servers", body: `{"address":"10.0.0.9:80","weight":70000}`,
			want: 400, contains: "out of range"},
		{name: "add bad max_conns", method: "POST", path: "/api/v1/services/web/servers", body: `{"address":"10.0.0.9:80","max_conns":-1}`,
			want: 400, contains: "max_conns -1"},
		{name: "add bad state", method: "POST", path: "/api/v1/services/web/servers", body: `{"address":"10.0.0.9:80","state":"up"}`,
			want: 400, contains: "unknown state"},
		{name: "add slash in name", method: "POST", path: "/api/v1/services/web/servers", body: `{"name":"a/b","address":"10.0.0.9:80"}`,
			want: 400, contains: "must not contain"},
		{name: "add unknown field", method: "POST", path: "/api/v1/services/web/servers", body: `{"address":"10.0.0.9:80","port":80}`,
			want: 400, contains: "unknown field"},

		// remove
		{name: "remove", method: "DELETE", path: "/api/v1/services/web/servers/web2", want: 204, call: "RemoveRealServer web web2"},
		{name: "remove unknown", method: "DELETE", path: "/api/v1/services/web/servers/nope", want: 404, call: "RemoveRealServer web nope"},

		// reload
		{name: "reload", method: "POST", path: "/api/v1/reload", want: 200, contains: `{"status":"reloaded"}`, call: "Reload"},
		{name: "reload GET", method: "GET", path: "/api/v1/reload", want: 405},

		// events
		{name: "events", method: "GET", path: "/api/v1/events", want: 200, contains: `"last_id":3`},
		{name: "events after", method: "GET", path: "/api/v1/events?after=2", want: 200, contains: `"id":3`},
		{name: "events none newer", method: "GET", path: "/api/v1/events?after=3", want: 200, contains: `{"events":[],"last_id":3}`},
		{name: "events bad after", method: "GET", path: "/api/v1/events?after=-1", want: 400, contains: `after=\"-1\": want an event ID`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			r := f.do(t, req{method: tt.method, path: tt.path, body: tt.body, basic: true, json: !tt.noJSON})
			if r.status != tt.want {
				t.Fatalf("status = %d, want %d; body %s", r.status, tt.want, r.body)
			}
			if !strings.Contains(r.body, tt.contains) {
				t.Errorf("body does not contain %q:\n%s", tt.contains, r.body)
			}
			for k, v := range tt.header {
				if got := r.header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if r.status >= 400 {
				if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
					t.Errorf("error Content-Type = %q", ct)
				}
				if e, _ := r.json(t)["error"].(string); e == "" {
					t.Errorf(`error response has no "error": %s`, r.body)
				}
			}
			calls := f.rt.Calls()
			switch {
			case tt.call == "" && len(calls) > 0:
				t.Errorf("runtime calls = %q, want none", calls)
			case tt.call != "" && !slices.Equal(calls, []string{tt.call}):
				t.Errorf("runtime calls = %q, want [%q]", calls, tt.call)
			}
			if r.header.Get("Cache-Control") != "no-store" && tt.want != 405 && tt.want != 404 {
				t.Errorf("Cache-Control = %q, want no-store", r.header.Get("Cache-Control"))
			}
		})
	}
}

func TestReloadRefused(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		want      int
		wantError string
		problems  []problemJSON
	}{
		{
			name: "config problems",
			err: fmt.Errorf("reload: %w", config.Errors{
				{File: "lb.toml", Line: 42, Key: "virtual_service.health_check.interval", Msg: `must be > 0, got 0s (virtual_service "web")`},
				{File: "lb.toml", Line: 50, Key: "virtual_service.real_server.weight", Msg: "must be at most 65535"},
			}),
			want:      422,
			wantError: "configuration has 2 problems",
			problems: []problemJSON{
				{File: "lb.toml", Line: 42, Key: "virtual_service.health_check.interval", Message: `must be > 0, got 0s (virtual_service "web")`},
				{File: "lb.toml", Line: 50, Key: "virtual_service.real_server.weight", Message: "must be at most 65535"},
			},
		},
		{
			name:      "one problem",
			err:       config.Errors{{File: "lb.toml", Line: 1, Msg: "syntax error"}},
			want:      422,
			wantError: "configuration has 1 problem",
			problems:  []problemJSON{{File: "lb.toml", Line: 1, Message: "syntax error"}},
		},
		{name: "other failure", err: fmt.Errorf("load config: open lb.toml: permission denied"), want: 500,
			wantError: "load config: open lb.toml: permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.rt.reloadErr = tt.err
			r := f.do(t, req{method: "POST", path: "/api/v1/reload", basic: true, json: true})
			if r.status != tt.want {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.want, r.body)
			}
			var body struct {
				Error    string        `json:"error"`
				Problems []problemJSON `json:"problems"`
			}
			if err := json.Unmarshal([]byte(r.body), &body); err != nil {
				t.Fatal(err)
			}
			if body.Error != tt.wantError || !slices.Equal(body.Problems, tt.problems) {
				t.Errorf("body = %+v, want error %q problems %+v", body, tt.wantError, tt.problems)
			}
		})
	}
}

// TestStatusJSON checks the shape of /api/v1/status: the proxy's fields
// plus rates, real servers not duplicated.
func TestStatusJSON(t *testing.T) {
	f := newFixture(t)
	t0 := f.clock.Now()
	f.s.rates.observe(t0, f.rt.Status())
	f.rt.mu.Lock()
	f.rt.status.Services[0].Requests += 100
	f.rt.status.Services[0].Errors += 10
	f.rt.status.Services[0].RealServers[1].Requests += 40
	f.rt.status.Services[0].RealServers[1].Responses.C5xx += 4
	f.rt.status.Services[0].RealServers[1].ConnectErrors += 1
	f.rt.mu.Unlock()
	f.s.rates.observe(t0.Add(5*time.Second), f.rt.Status())

	r := f.do(t, req{method: "GET", path: "/api/v1/status", basic: true})
	var st struct {
		Time     time.Time `json:"time"`
		Services []struct {
			Name           string  `json:"name"`
			Color          string  `json:"color"`
			Pool           bool    `json:"pool"`
			Fallback       string  `json:"fallback"`
			FallbackActive *bool   `json:"fallback_active"`
			Queue          int     `json:"queue"`
			Active         int     `json:"active_connections"`
			RequestRate    float64 `json:"request_rate"`
			ErrorRate      float64 `json:"error_rate"`
			RealServers    []struct {
				Name        string            `json:"name"`
				State       string            `json:"state"`
				Check       proxy.CheckStatus `json:"check"`
				RequestRate float64           `json:"request_rate"`
				ErrorRate   float64           `json:"error_rate"`
			} `json:"real_servers"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatal(err)
	}
	if strings.Count(r.body, `"real_servers"`) != 2 {
		t.Errorf("real_servers appears %d times, want once per service:\n%s", strings.Count(r.body, `"real_servers"`), r.body)
	}
	web := st.Services[0]
	if web.Name != "web" || web.Color != "green" || web.Queue != 1 || web.Active != 7 || web.RequestRate != 20 || web.ErrorRate != 2 {
		t.Errorf("web = %+v", web)
	}
	if web.Pool || web.Fallback != "127.0.0.1:8099" || web.FallbackActive == nil || *web.FallbackActive {
		t.Errorf("web: pool %t, fallback %q, fallback_active %v", web.Pool, web.Fallback, web.FallbackActive)
	}
	web2 := web.RealServers[1]
	if web2.Name != "web2" || web2.RequestRate != 8 || web2.ErrorRate != 1 || web2.Check.Latency != 1500*time.Microsecond {
		t.Errorf("web2 = %+v", web2)
	}
	if !st.Time.Equal(t0) {
		t.Errorf("time = %v, want %v", st.Time, t0)
	}
}

// TestAuditLog checks that mutating actions are logged with user, action
// and target.
func TestAuditLog(t *testing.T) {
	f := newFixture(t)
	f.do(t, req{method: "PUT", path: "/api/v1/services/web/servers/web1/state", body: `{"state":"drain"}`, basic: true, json: true})
	f.do(t, req{method: "DELETE", path: "/api/v1/services/web/servers/nope", basic: true, json: true})
	entries := f.logs.FilterFieldKey("action").All()
	if len(entries) != 2 {
		t.Fatalf("got %d audit entries, want 2: %+v", len(entries), entries)
	}
	ok, failed := entries[0].ContextMap(), entries[1].ContextMap()
	if entries[0].Message != "admin action" || ok["user"] != testUser || ok["action"] != "set_state" ||
		ok["target"] != "web/web1" || ok["state"] != "drain" || ok["via"] != "basic" {
		t.Errorf("audit entry = %s %v", entries[0].Message, ok)
	}
	if entries[1].Message != "admin action failed" || failed["action"] != "remove_real_server" || failed["error"] == nil {
		t.Errorf("failed audit entry = %s %v", entries[1].Message, failed)
	}
}

func TestRouteNotFoundOutsideAPI(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, req{method: "GET", path: "/nope"})
	if r.status != 404 || !strings.Contains(r.body, `"error"`) {
		t.Errorf("GET /nope = %d %s", r.status, r.body)
	}
	if r.header.Get("X-Frame-Options") != "DENY" {
		t.Error("security headers missing on 404")
	}
	r = f.do(t, req{method: "GET", path: "/api/v1/status", header: map[string]string{"Accept": "text/html"}})
	if r.status != http.StatusUnauthorized {
		t.Errorf("unauthenticated status = %d", r.status)
	}
}
