package admin

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fulcrumlb/fulcrum/config"
)

// TestAuth covers who may call what: credentials, sessions and the CSRF
// defences of mutating calls.
func TestAuth(t *testing.T) {
	const (
		drainPath = "/api/v1/services/web/servers/web1/state"
		drainBody = `{"state":"drain"}`
	)
	tests := []struct {
		name     string
		rq       func(cookie *http.Cookie, csrf string) req
		want     int
		contains string
		mutated  bool // the runtime saw SetState
	}{
		{name: "no credentials", want: 401, contains: "authentication required",
			rq: func(*http.Cookie, string) req { return req{method: "GET", path: "/api/v1/status"} }},
		{name: "wrong password", want: 401, contains: "invalid user or password",
			rq: func(*http.Cookie, string) req {
				return req{method: "GET", path: "/api/v1/status", user: testUser, password: "nope"}
			}},
		{name: "unknown user", want: 401, contains: "invalid user or password",
			rq: func(*http.Cookie, string) req {
				return req{method: "GET", path: "/api/v1/status", user: "mallory", password: testPassword}
			}},
		{name: "bearer token", want: 401, contains: "unsupported Authorization scheme",
			rq: func(*http.Cookie, string) req {
				return req{method: "GET", path: "/api/v1/status", header: map[string]string{"Authorization": "Bearer x"}}
			}},
		{name: "bogus cookie", want: 401, contains: "session expired",
			rq: func(*http.Cookie, string) req {
				return req{method: "GET", path: "/api/v1/status", cookie: &http.Cookie{Name: sessionCookie, Value: "forged"}}
			}},
		{name: "basic ok", want: 200,
			rq: func(*http.Cookie, string) req { return req{method: "GET", path: "/api/v1/status", basic: true} }},
		{name: "session ok", want: 200,
			rq: func(c *http.Cookie, _ string) req { return req{method: "GET", path: "/api/v1/status", cookie: c} }},
		{name: "session mutate with CSRF token", want: 200, mutated: true,
			rq: func(c *http.Cookie, csrf string) req {
				return req{method: "PUT", path: drainPath, body: drainBody, json: true, cookie: c,
					header: map[string]string{"X-CSRF-Token": csrf}}
			}},
		{name: "session mutate with same Origin", want: 200, mutated: true,
			rq: func(c *http.Cookie, csrf string) req {
				return req{method: "PUT", path: drainPath, body: drainBody, json: true, cookie: c,
					header: map[string]string{"X-CSRF-Token": csrf, "Origin": "ORIGIN", "Sec-Fetch-Site": "same-origin"}}
			}},
		{name: "session mutate without CSRF token", want: 403, contains: "missing or wrong X-CSRF-Token",
			rq: func(c *http.Cookie, _ string) req {
				return req{method: "PUT", path: drainPath, body: drainBody, json: true, cookie: c}
			}},
		{name: "session mutate with wrong CSRF token", want: 403, contains: "X-CSRF-Token",
			rq: func(c *http.Cookie, csrf string) req {
				return req{method: "PUT", path: drainPath, body: drainBody, json: true, cookie: c,
					header: map[string]string{"X-CSRF-Token": csrf + "x"}}
			}},
		{name: "session delete without CSRF token", want: 403,
			rq: func(c *http.Cookie, _ string) req {
				return req{method: "DELETE", path: "/api/v1/services/web/servers/web1", cookie: c}
			}},
		{name: "session reload without CSRF token", want: 403,
			rq: func(c *http.Cookie, _ string) req { return req{method: "POST", path: "/api/v1/reload", cookie: c} }},
		{name: "Origin mismatch", want: 403, contains: "cross-origin request refused",
			rq: func(c *http.Cookie, csrf string) req {
				return req{method: "PUT", path: drainPath, body: drainBody, json: true, cookie: c,
					header: map[string]string{"X-CSRF-Token": csrf, "Origin": "http://evil.example"}}
			}},
		{name: "Origin null", want: 403,
			rq: func(*http.Cookie, string) req {
				return req{method: "PUT", path: drainPath, body: drainBody, json: true, basic: true,
					header: map[string]string{"Origin": "null"}}
			}},
		{name: "Origin with other scheme", want: 403,
			rq: func(*http.Cookie, string) req {
				return req{method: "PUT", path: drainPath, body: drainBody, json: true, basic: true,
					header: map[string]string{"Origin": "https://HOST"}}
			}},
		{name: "cross-site fetch", want: 403, contains: "cross-site request refused",
			rq: func(*http.Cookie, string) req {
				return req{method: "PUT", path: drainPath, body: drainBody, json: true, basic: true,
					header: map[string]string{"Sec-Fetch-Site": "cross-site"}}
			}},
		{name: "basic mutate with JSON", want: 200, mutated: true,
			rq: func(*http.Cookie, string) req {
				return req{method: "PUT", path: drainPath, body: drainBody, json: true, basic: true}
			}},
		{name: "basic mutate with form content type", want: 415, contains: "Content-Type must be application/json",
			rq: func(*http.Cookie, string) req {
				return req{method: "PUT", path: drainPath, body: drainBody, basic: true,
					header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}
			}},
		{name: "basic delete without content type", want: 415,
			rq: func(*http.Cookie, string) req {
				return req{method: "DELETE", path: "/api/v1/services/web/servers/web1", basic: true}
			}},
		{name: "basic reload with text/plain", want: 415,
			rq: func(*http.Cookie, string) req {
				return req{method: "POST", path: "/api/v1/reload", basic: true, header: map[string]string{"Content-Type": "text/plain"}}
			}},
		{name: "basic JSON with charset", want: 200, mutated: true,
			rq: func(*http.Cookie, string) req {
				return req{method: "PUT", path: drainPath, body: drainBody, basic: true,
					header: map[string]string{"Content-Type": "application/json; charset=utf-8"}}
			}},
		{name: "metrics without credentials", want: 401,
			rq: func(*http.Cookie, string) req { return req{method: "GET", path: "/metrics"} }},
		{name: "metrics with session", want: 200,
			rq: func(c *http.Cookie, _ string) req { return req{method: "GET", path: "/metrics", cookie: c} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cookie, csrf := f.login(t)
			rq := tt.rq(cookie, csrf)
			host := strings.TrimPrefix(f.ts.URL, "http://")
			for k, v := range rq.header {
				v = strings.ReplaceAll(v, "ORIGIN", f.ts.URL)
				rq.header[k] = strings.ReplaceAll(v, "HOST", host)
			}
			r := f.do(t, rq)
			if r.status != tt.want {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.want, r.body)
			}
			if !strings.Contains(r.body, tt.contains) {
				t.Errorf("body %s does not contain %q", r.body, tt.contains)
			}
			if h := r.header.Values("WWW-Authenticate"); len(h) > 0 {
				t.Errorf("WWW-Authenticate sent: %q", h)
			}
			if mutated := len(f.rt.Calls()) > 0; mutated != tt.mutated {
				t.Errorf("runtime calls %q, want mutated=%v", f.rt.Calls(), tt.mutated)
			}
		})
	}
}

func TestLogin(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		header   map[string]string
		noJSON   bool
		want     int
		contains string
	}{
		{name: "ok", body: fmt.Sprintf(`{"user":%q,"password":%q}`, testUser, testPassword), want: 200,
			contains: `"user":"admin"`},
		{name: "wrong password", body: `{"user":"admin","password":"x"}`, want: 401, contains: "invalid user or password"},
		{name: "unknown user", body: `{"user":"root","password":"x"}`, want: 401, contains: "invalid user or password"},
		{name: "empty password", body: `{"user":"admin","password":""}`, want: 400, contains: "user and password are required"},
		{name: "bad JSON", body: `user=admin`, want: 400, contains: "bad JSON"},
		{name: "unknown field", body: `{"user":"admin","password":"x","remember":true}`, want: 400, contains: "unknown field"},
		{name: "form post", body: `{"user":"admin","password":"x"}`, noJSON: true, want: 415},
		{name: "cross-origin", body: fmt.Sprintf(`{"user":%q,"password":%q}`, testUser, testPassword),
			header: map[string]string{"Origin": "http://evil.example"}, want: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			r := f.do(t, req{method: "POST", path: "/api/v1/login", body: tt.body, json: !tt.noJSON, header: tt.header})
			if r.status != tt.want || !strings.Contains(r.body, tt.contains) {
				t.Fatalf("login = %d %s, want %d containing %q", r.status, r.body, tt.want, tt.contains)
			}
			cookies := (&http.Response{Header: r.header}).Cookies()
			if tt.want != 200 {
				if len(cookies) > 0 {
					t.Errorf("failed login set cookies %v", cookies)
				}
				return
			}
			if len(cookies) != 1 {
				t.Fatalf("cookies = %v", cookies)
			}
			c := cookies[0]
			if c.Name != sessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" {
				t.Errorf("cookie = %+v, want HttpOnly, SameSite=Strict, not Secure without TLS, Path=/", c)
			}
			if len(c.Value) != 43 { // 256 bits, base64url
				t.Errorf("token %q is %d characters, want 43", c.Value, len(c.Value))
			}
			if csrf := r.json(t)["csrf_token"].(string); len(csrf) != 43 || csrf == c.Value {
				t.Errorf("csrf_token = %q", csrf)
			}
			if e := f.logs.FilterMessage("login").All(); len(e) != 1 || e[0].ContextMap()["user"] != testUser {
				t.Errorf("login log entries = %+v", e)
			}
		})
	}
}

func TestSessionEndpointAndLogout(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, req{method: "GET", path: "/api/v1/session"})
	if r.status != 200 || r.json(t)["authenticated"] != false {
		t.Fatalf("session before login = %d %s", r.status, r.body)
	}
	cookie, csrf := f.login(t)
	r = f.do(t, req{method: "GET", path: "/api/v1/session", cookie: cookie})
	if m := r.json(t); m["authenticated"] != true || m["user"] != testUser || m["csrf_token"] != csrf {
		t.Fatalf("session after login = %s", r.body)
	}
	r = f.do(t, req{method: "GET", path: "/api/v1/session", basic: true})
	if m := r.json(t); m["authenticated"] != true || m["csrf_token"] != nil {
		t.Errorf("session with Basic = %s", r.body)
	}
	r = f.do(t, req{method: "GET", path: "/api/v1/session", user: testUser, password: "bad"})
	if r.status != 401 {
		t.Errorf("session with bad Basic = %d", r.status)
	}

	// Logout needs the CSRF token of a live session.
	r = f.do(t, req{method: "POST", path: "/api/v1/logout", cookie: cookie})
	if r.status != 403 {
		t.Fatalf("logout without CSRF token = %d %s", r.status, r.body)
	}
	r = f.do(t, req{method: "POST", path: "/api/v1/logout", cookie: cookie, header: map[string]string{"X-CSRF-Token": csrf}})
	if r.status != 200 {
		t.Fatalf("logout = %d %s", r.status, r.body)
	}
	if c := (&http.Response{Header: r.header}).Cookies(); len(c) != 1 || c[0].MaxAge >= 0 {
		t.Errorf("logout cookies = %+v, want the session cookie cleared", c)
	}
	r = f.do(t, req{method: "GET", path: "/api/v1/status", cookie: cookie})
	if r.status != 401 {
		t.Errorf("status after logout = %d", r.status)
	}
	r = f.do(t, req{method: "POST", path: "/api/v1/logout", cookie: cookie})
	if r.status != 200 {
		t.Errorf("logout of an ended session = %d", r.status)
	}
}

func TestSessionExpiry(t *testing.T) {
	tests := []struct {
		name  string
		steps []time.Duration // clock advances, each followed by a request
		want  []int
	}{
		{name: "idle timeout", steps: []time.Duration{29 * time.Minute, 30 * time.Minute}, want: []int{200, 401}},
		{name: "activity keeps it alive", steps: []time.Duration{20 * time.Minute, 20 * time.Minute, 20 * time.Minute},
			want: []int{200, 200, 200}},
		{name: "absolute limit", steps: append(repeat(25*time.Minute, 28), 25*time.Minute),
			want: append(repeatInt(200, 28), 401)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cookie, _ := f.login(t)
			for i, d := range tt.steps {
				f.clock.Advance(d)
				r := f.do(t, req{method: "GET", path: "/api/v1/status", cookie: cookie})
				if r.status != tt.want[i] {
					t.Fatalf("step %d (+%v): status %d, want %d", i, d, r.status, tt.want[i])
				}
			}
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func repeatInt(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// TestLoginThrottle: after throttleFree failures a client waits 1s, 2s,
// 4s, ... answered 429 meanwhile, even with the right password; success
// resets; the window forgets.
func TestLoginThrottle(t *testing.T) {
	f := newFixture(t)
	attempt := func(password string) resp {
		return f.do(t, req{method: "POST", path: "/api/v1/login", json: true,
			body: fmt.Sprintf(`{"user":%q,"password":%q}`, testUser, password)})
	}
	for i := range throttleFree {
		if r := attempt("wrong"); r.status != 401 {
			t.Fatalf("failure %d: status %d", i+1, r.status)
		}
	}
	r := attempt(testPassword)
	if r.status != 429 || r.header.Get("Retry-After") != "1" || !strings.Contains(r.body, "too many failed logins") {
		t.Fatalf("after %d failures: %d Retry-After=%q %s", throttleFree, r.status, r.header.Get("Retry-After"), r.body)
	}
	// Basic auth is throttled the same way.
	if r := f.do(t, req{method: "GET", path: "/api/v1/status", basic: true}); r.status != 429 {
		t.Errorf("Basic while throttled: %d", r.status)
	}
	f.clock.Advance(time.Second)
	if r := attempt("wrong"); r.status != 401 {
		t.Fatalf("after waiting: %d", r.status)
	}
	if r := attempt("wrong"); r.status != 429 || r.header.Get("Retry-After") != "2" {
		t.Fatalf("second delay: %d Retry-After=%q", r.status, r.header.Get("Retry-After"))
	}
	f.clock.Advance(2 * time.Second)
	if r := attempt(testPassword); r.status != 200 {
		t.Fatalf("right password after the delay: %d %s", r.status, r.body)
	}
	// Success reset the count.
	for i := range throttleFree {
		if r := attempt("wrong"); r.status != 401 {
			t.Fatalf("failure %d after reset: %d", i+1, r.status)
		}
	}
	if r := attempt("wrong"); r.status != 429 {
		t.Fatalf("throttle after reset: %d", r.status)
	}
	// The window forgets.
	f.clock.Advance(throttleWindow + time.Second)
	if r := attempt(testPassword); r.status != 200 {
		t.Fatalf("after the window: %d", r.status)
	}
	if n := len(f.logs.FilterMessage("login failed").All()); n != 2*throttleFree+1 {
		t.Errorf("logged %d failed logins, want %d", n, 2*throttleFree+1)
	}
}

func TestThrottleDelayCap(t *testing.T) {
	now := time.Unix(0, 0)
	a := newAuthenticator(zaptestLogger(t), func() time.Time { return now })
	for range 100 {
		a.fail("k")
	}
	if got := a.throttled("k"); got != throttleMaxDelay {
		t.Errorf("delay after 100 failures = %v, want %v", got, throttleMaxDelay)
	}
}

func TestThrottleKey(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::99", "2001:db8:1:2::/64"},
		{"not-an-ip", "not-an-ip"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			if got := throttleKey(tt.in); got != tt.want {
				t.Errorf("throttleKey(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestSetUsers: removing a user or changing its password ends its
// sessions; other sessions continue; the new user can log in.
func TestSetUsers(t *testing.T) {
	otherHash, _ := bcrypt.GenerateFromPassword([]byte("other-pass"), bcrypt.MinCost)
	f := newFixture(t, func(a *config.Admin) {
		a.Users = append(a.Users, &config.AdminUser{Name: "ops", PasswordHash: string(otherHash)})
	})
	adminCookie, _ := f.login(t)
	r := f.do(t, req{method: "POST", path: "/api/v1/login", json: true, body: `{"user":"ops","password":"other-pass"}`})
	if r.status != 200 {
		t.Fatalf("ops login: %d", r.status)
	}
	opsCookie := (&http.Response{Header: r.header}).Cookies()[0]

	// admin's password changes, ops stays.
	newHash, _ := bcrypt.GenerateFromPassword([]byte("new-pass"), bcrypt.MinCost)
	f.s.SetUsers([]*config.AdminUser{
		{Name: testUser, PasswordHash: string(newHash)},
		{Name: "ops", PasswordHash: string(otherHash)},
	})
	if r := f.do(t, req{method: "GET", path: "/api/v1/status", cookie: adminCookie}); r.status != 401 {
		t.Errorf("admin session after password change: %d", r.status)
	}
	if r := f.do(t, req{method: "GET", path: "/api/v1/status", cookie: opsCookie}); r.status != 200 {
		t.Errorf("ops session after admin's change: %d", r.status)
	}
	if r := f.do(t, req{method: "GET", path: "/api/v1/status", user: testUser, password: "new-pass"}); r.status != 200 {
		t.Errorf("admin with new password: %d", r.status)
	}

	// ops is removed.
	f.s.SetUsers([]*config.AdminUser{{Name: testUser, PasswordHash: string(newHash)}})
	if r := f.do(t, req{method: "GET", path: "/api/v1/status", cookie: opsCookie}); r.status != 401 {
		t.Errorf("ops session after removal: %d", r.status)
	}
	if n := len(f.s.auth.sessions); n != 0 {
		t.Errorf("%d sessions left, want 0", n)
	}
	if e := f.logs.FilterMessage("admin users updated").All(); len(e) != 2 {
		t.Errorf("SetUsers log entries: %d", len(e))
	}
}

func TestSessionTableBounded(t *testing.T) {
	now := time.Unix(0, 0)
	a := newAuthenticator(zaptestLogger(t), func() time.Time { return now })
	a.setUsers(testUsers())
	first, _ := a.newSession(testUser)
	for range maxSessions + 10 {
		now = now.Add(time.Millisecond)
		a.newSession(testUser)
	}
	if n := len(a.sessions); n != maxSessions {
		t.Errorf("sessions = %d, want %d", n, maxSessions)
	}
	if _, ok := a.session(first); ok {
		t.Error("the least recently used session survived")
	}
}

// TestUnknownUserCostsAsMuch checks that an unknown user is compared
// against a dummy hash of the users' cost.
func TestUnknownUserCostsAsMuch(t *testing.T) {
	a := newAuthenticator(zaptestLogger(t), time.Now)
	a.setUsers(testUsers())
	if cost, err := bcrypt.Cost(a.dummy); err != nil || cost != bcrypt.MinCost {
		t.Errorf("dummy hash cost = %d, %v; want %d", cost, err, bcrypt.MinCost)
	}
	if a.verify("nobody", testPassword) {
		t.Error("unknown user verified")
	}
}
