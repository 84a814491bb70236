package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/balancer"
)

func TestPersistence(t *testing.T) {
	runParseTests(t, []parseTest{
		{
			name: "defaults: none without the table; only method cookie names its cookie",
			input: `[[virtual_service]]
name = "plain"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "insert"
listen = "127.0.0.1:81"
persistence = { method = "cookie" }
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "learn"
listen = "127.0.0.1:82"
persistence = { method = "app_cookie", cookie_name = "JSESSIONID" }
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "sticky"
listen = "127.0.0.1:83"
mode = "tcp"
persistence = { method = "source_ip" }
real_server = [{ address = "10.0.0.1:80" }]
`,
			check: func(t *testing.T, c *Config) {
				def := Persistence{
					Method: PersistNone, Timeout: 30 * time.Minute, SourceMask: 32, SourceMask6: 64,
					MaxEntries: 1000000, InspectDelay: 5 * time.Second,
				}
				insert, learn, sticky := def, def, def
				insert.Method, insert.CookieName = PersistCookie, "FULCRUM"
				learn.Method, learn.CookieName = PersistAppCookie, "JSESSIONID"
				sticky.Method = PersistSourceIP
				for i, want := range []Persistence{def, insert, learn, sticky} {
					if got := c.VirtualServices[i].Persistence; got != want {
						t.Errorf("%s: got %+v, want %+v", c.VirtualServices[i].Name, got, want)
					}
				}
			},
		},
		{
			name: "every method with its keys, in its mode",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.persistence]
method = "cookie"
cookie_name = "__Host-lb_1.x"
cookie_secret = "0123456789abcdef"
[[virtual_service]]
name = "b"
listen = "127.0.0.1:81"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "app_cookie", cookie_name = "PHPSESSID", timeout = "2h", max_entries = 100000000 }
[[virtual_service]]
name = "c"
listen = "127.0.0.1:82"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "header", header = "X-Session-Id", timeout = "1s", max_entries = 1 }
[[virtual_service]]
name = "d"
listen = "127.0.0.1:83"
mode = "http"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "source_ip", source_mask = 1, source_mask6 = 128 }
[[virtual_service]]
name = "e"
listen = "127.0.0.1:84"
mode = "tcp"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "source_ip", source_mask = 32, source_mask6 = 1, timeout = "24h" }
[[virtual_service]]
name = "f"
listen = "127.0.0.1:85"
mode = "tcp"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "rdp_cookie", timeout = "8h", max_entries = 5000, inspect_delay = "100ms" }
[[virtual_service]]
name = "g"
listen = "127.0.0.1:86"
mode = "tcp"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "rdp_cookie", inspect_delay = "60s" }
[[virtual_service]]
name = "h"
listen = "127.0.0.1:87"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "none" }
`,
		},
		{
			name: "an unknown method: no key is called unused",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.persistence]
method = "sticky"
source_mask = 24
cookie_name = "SID"
`,
			want: []string{
				`lb.toml:6: virtual_service.persistence.method: must be none, source_ip, cookie, app_cookie, rdp_cookie or header, got "sticky" (virtual_service "web")`,
			},
		},
		{
			name: "methods of the other mode",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:80"
mode = "tcp"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "cookie" }
[[virtual_service]]
name = "b"
listen = "127.0.0.1:81"
mode = "tcp"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "app_cookie", cookie_name = "JSESSIONID" }
[[virtual_service]]
name = "c"
listen = "127.0.0.1:82"
mode = "tcp"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "header", header = "X-User" }
[[virtual_service]]
name = "d"
listen = "127.0.0.1:83"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "rdp_cookie" }
[[virtual_service]]
name = "e"
listen = "127.0.0.1:84"
mode = "udp"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "rdp_cookie" }
`,
			want: []string{
				`lb.toml:6: virtual_service.persistence.method: method "cookie" needs mode = "http" (virtual_service "a")`,
				`lb.toml:12: virtual_service.persistence.method: method "app_cookie" needs mode = "http" (virtual_service "b")`,
				`lb.toml:18: virtual_service.persistence.method: method "header" needs mode = "http" (virtual_service "c")`,
				`lb.toml:23: virtual_service.persistence.method: method "rdp_cookie" needs mode = "tcp" (virtual_service "d")`,
				// An unknown mode is reported once, not against the method too.
				`lb.toml:27: virtual_service.mode: must be http, tcp, dr, nat or tun, got "udp" (virtual_service "e")`,
			},
		},
		{
			name: "required names",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.persistence]
method = "app_cookie"
[[virtual_service]]
name = "b"
listen = "127.0.0.1:81"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "header", timeout = "10m" }
[[virtual_service]]
name = "c"
listen = "127.0.0.1:82"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "cookie", cookie_name = "" }
`,
			want: []string{
				`lb.toml:5: virtual_service.persistence.cookie_name: required for method app_cookie: the application's session cookie to learn, such as "JSESSIONID" (virtual_service "a")`,
				`lb.toml:11: virtual_service.persistence.header: required for method header: the request header whose value sticks, such as "X-Session" (virtual_service "b")`,
				`lb.toml:16: virtual_service.persistence.cookie_name: must be a cookie name, got "" (RFC 6265 §4.1.1) (virtual_service "c")`,
			},
		},
		{
			name: "cookie and header names are tokens",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "cookie", cookie_name = "my cookie" }
[[virtual_service]]
name = "b"
listen = "127.0.0.1:81"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "app_cookie", cookie_name = "SID=1" }
[[virtual_service]]
name = "c"
listen = "127.0.0.1:82"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "app_cookie", cookie_name = "sé" }
[[virtual_service]]
name = "d"
listen = "127.0.0.1:83"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "cookie", cookie_name = "a;b" }
[[virtual_service]]
name = "e"
listen = "127.0.0.1:84"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "header", header = "X-User:" }
[[virtual_service]]
name = "f"
listen = "127.0.0.1:85"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "header", header = "X-User\r\nX-Evil" }
`,
			want: []string{
				`lb.toml:5: virtual_service.persistence.cookie_name: "my cookie" is not a valid cookie name: it holds a blank; use letters, digits and !#$%&'*+-.^_` + "`" + `|~ (RFC 6265 §4.1.1) (virtual_service "a")`,
				`lb.toml:10: virtual_service.persistence.cookie_name: "SID=1" is not a valid cookie name: it holds "="; use letters, digits and !#$%&'*+-.^_` + "`" + `|~ (RFC 6265 §4.1.1) (virtual_service "b")`,
				`lb.toml:15: virtual_service.persistence.cookie_name: "sé" is not a valid cookie name: it holds a non-ASCII character; use letters, digits and !#$%&'*+-.^_` + "`" + `|~ (RFC 6265 §4.1.1) (virtual_service "c")`,
				`lb.toml:20: virtual_service.persistence.cookie_name: "a;b" is not a valid cookie name: it holds ";"; use letters, digits and !#$%&'*+-.^_` + "`" + `|~ (RFC 6265 §4.1.1) (virtual_service "d")`,
				`lb.toml:25: virtual_service.persistence.header: "X-User:" is not a valid header name: it holds ":"; use letters, digits and !#$%&'*+-.^_` + "`" + `|~ (RFC 9110 §5.1) (virtual_service "e")`,
				`lb.toml:30: virtual_service.persistence.header: "X-User\r\nX-Evil" is not a valid header name: it holds a control character; use letters, digits and !#$%&'*+-.^_` + "`" + `|~ (RFC 9110 §5.1) (virtual_service "f")`,
			},
		},
		{
			name: "cookie_secret",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.persistence]
method = "cookie"
cookie_secret = "0123456789abcde"
[[virtual_service]]
name = "b"
listen = "127.0.0.1:81"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "cookie", cookie_secret = "" }
[[virtual_service]]
name = "c"
listen = "127.0.0.1:82"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "app_cookie", cookie_name = "SID", cookie_secret = "0123456789abcdef" }
`,
			want: []string{
				`lb.toml:7: virtual_service.persistence.cookie_secret: must be at least 16 bytes, got 15 (virtual_service "a")`,
				`lb.toml:12: virtual_service.persistence.cookie_secret: must be at least 16 bytes, got 0 (virtual_service "b")`,
				`lb.toml:17: virtual_service.persistence.cookie_secret: used only by method cookie, not "app_cookie" (virtual_service "c")`,
			},
		},
		{
			name: "ranges",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.persistence]
method = "source_ip"
source_mask = 0
source_mask6 = 129
max_entries = 0
timeout = "0s"
[[virtual_service]]
name = "b"
listen = "127.0.0.1:81"
mode = "tcp"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.persistence]
method = "rdp_cookie"
max_entries = 100000001
inspect_delay = "99ms"
timeout = "-1s"
[[virtual_service]]
name = "c"
listen = "127.0.0.1:82"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "source_ip", source_mask = 33, source_mask6 = 0, max_entries = -1 }
[[virtual_service]]
name = "d"
listen = "127.0.0.1:83"
mode = "tcp"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "rdp_cookie", inspect_delay = "1m0.001s" }
`,
			want: []string{
				`lb.toml:7: virtual_service.persistence.source_mask: must be between 1 and 32, got 0 (virtual_service "a")`,
				`lb.toml:8: virtual_service.persistence.source_mask6: must be between 1 and 128, got 129 (virtual_service "a")`,
				`lb.toml:9: virtual_service.persistence.max_entries: must be between 1 and 100000000, got 0 (virtual_service "a")`,
				`lb.toml:10: virtual_service.persistence.timeout: must be > 0, got 0s (virtual_service "a")`,
				`lb.toml:18: virtual_service.persistence.max_entries: must be between 1 and 100000000, got 100000001 (virtual_service "b")`,
				`lb.toml:19: virtual_service.persistence.inspect_delay: must be between 100ms and 1m0s, got 99ms (virtual_service "b")`,
				`lb.toml:20: virtual_service.persistence.timeout: must not be negative, got "-1s" (virtual_service "b")`,
				`lb.toml:25: virtual_service.persistence.source_mask: must be between 1 and 32, got 33 (virtual_service "c")`,
				`lb.toml:25: virtual_service.persistence.source_mask6: must be between 1 and 128, got 0 (virtual_service "c")`,
				`lb.toml:25: virtual_service.persistence.max_entries: must be between 1 and 100000000, got -1 (virtual_service "c")`,
				`lb.toml:31: virtual_service.persistence.inspect_delay: must be between 100ms and 1m0s, got 1m0.001s (virtual_service "d")`,
			},
		},
		{
			name: "keys of other methods",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.persistence]
method = "source_ip"
cookie_name = "SID"
cookie_secret = "0123456789abcdef"
header = "X-User"
inspect_delay = "1s"
[[virtual_service]]
name = "b"
listen = "127.0.0.1:81"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.persistence]
method = "cookie"
timeout = "1h"
max_entries = 10
source_mask = 24
source_mask6 = 48
header = "X-User"
[[virtual_service]]
name = "c"
listen = "127.0.0.1:82"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { timeout = "1h", cookie_name = "SID", inspect_delay = "1s" }
[[virtual_service]]
name = "d"
listen = "127.0.0.1:83"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "header", header = "X-User", cookie_name = "SID", source_mask = 24 }
[[virtual_service]]
name = "e"
listen = "127.0.0.1:84"
mode = "tcp"
real_server = [{ address = "10.0.0.1:80" }]
persistence = { method = "rdp_cookie", cookie_name = "mstshash", source_mask6 = 64 }
`,
			want: []string{
				`lb.toml:7: virtual_service.persistence.cookie_name: used only by method cookie or app_cookie, not "source_ip" (virtual_service "a")`,
				`lb.toml:8: virtual_service.persistence.cookie_secret: used only by method cookie, not "source_ip" (virtual_service "a")`,
				`lb.toml:9: virtual_service.persistence.header: used only by method header, not "source_ip" (virtual_service "a")`,
				`lb.toml:10: virtual_service.persistence.inspect_delay: used only by method rdp_cookie and scheduler rdp_cookie, which read the client's first bytes; not method "source_ip" with scheduler "round_robin" (virtual_service "a")`,
				`lb.toml:17: virtual_service.persistence.timeout: not used by method "cookie", which keeps no stick table: the client's cookie names the real server (virtual_service "b")`,
				`lb.toml:18: virtual_service.persistence.max_entries: not used by method "cookie", which keeps no stick table: the client's cookie names the real server (virtual_service "b")`,
				`lb.toml:19: virtual_service.persistence.source_mask: used only by method source_ip, not "cookie" (virtual_service "b")`,
				`lb.toml:20: virtual_service.persistence.source_mask6: used only by method source_ip, not "cookie" (virtual_service "b")`,
				`lb.toml:21: virtual_service.persistence.header: used only by method header, not "cookie" (virtual_service "b")`,
				`lb.toml:26: virtual_service.persistence.timeout: not used by method "none" (no persistence) (virtual_service "c")`,
				`lb.toml:26: virtual_service.persistence.cookie_name: not used by method "none" (no persistence) (virtual_service "c")`,
				`lb.toml:26: virtual_service.persistence.inspect_delay: used only by method rdp_cookie and scheduler rdp_cookie, which read the client's first bytes; not method "none" with scheduler "round_robin" (virtual_service "c")`,
				`lb.toml:31: virtual_service.persistence.cookie_name: used only by method cookie or app_cookie, not "header" (virtual_service "d")`,
				`lb.toml:31: virtual_service.persistence.source_mask: used only by method source_ip, not "header" (virtual_service "d")`,
				`lb.toml:37: virtual_service.persistence.cookie_name: used only by method cookie or app_cookie, not "rdp_cookie" (virtual_service "e")`,
				`lb.toml:37: virtual_service.persistence.source_mask6: used only by method source_ip, not "rdp_cookie" (virtual_service "e")`,
			},
		},
		{
			name: "hash_header without scheduler header_hash",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:80"
hash_header = "X-User"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "b"
listen = "127.0.0.1:81"
scheduler = "header_hsh"
hash_header = "X-User"
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{
				`lb.toml:4: virtual_service.hash_header: used only by scheduler header_hash, not "round_robin" (virtual_service "a")`,
				// The scheduler is unknown (and what it would be is a guess),
				// so hash_header is not reported on top.
				`lb.toml:9: virtual_service.scheduler: ` + unknownScheduler("header_hsh") + ` (virtual_service "b")`,
			},
		},
	})
}

// unknownScheduler is the message for a scheduler name balancer does not
// know, which depends on the names it does.
func unknownScheduler(name string) string {
	if s := closest(name, balancer.Names()); s != "" {
		return fmt.Sprintf("unknown scheduler %q (did you mean %q?)", name, s)
	}
	return fmt.Sprintf("unknown scheduler %q (known: %s)", name, strings.Join(balancer.Names(), ", "))
}

// TestSchedulerNeeds covers what the schedulers beyond the plain ones need:
// a mode, the rdp_cookie scheduler's use of inspect_delay and header_hash's
// hash_header.
func TestSchedulerNeeds(t *testing.T) {
	runParseTests(t, []parseTest{
		{
			name: "each in its mode, with what it needs",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:80"
scheduler = "uri_hash"
persistence = { method = "cookie" }
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "b"
listen = "127.0.0.1:81"
mode = "http"
scheduler = "header_hash"
hash_header = "X-Forwarded-User"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "c"
listen = "127.0.0.1:82"
mode = "tcp"
scheduler = "rdp_cookie"
persistence = { inspect_delay = "3s" }
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "d"
listen = "127.0.0.1:83"
mode = "tcp"
scheduler = "rdp_cookie"
persistence = { method = "source_ip", inspect_delay = "3s" }
real_server = [{ address = "10.0.0.1:80" }]
`,
			check: func(t *testing.T, c *Config) {
				if got := c.VirtualServices[2].Persistence.InspectDelay; got != 3*time.Second {
					t.Errorf("inspect_delay = %s, want 3s", got)
				}
			},
		},
		{
			name: "the wrong mode",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:80"
mode = "tcp"
scheduler = "uri_hash"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "b"
listen = "127.0.0.1:81"
mode = "tcp"
scheduler = "header_hash"
hash_header = "X-User"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "c"
listen = "127.0.0.1:82"
scheduler = "rdp_cookie"
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{
				`lb.toml:5: virtual_service.scheduler: scheduler "uri_hash" needs mode = "http" (virtual_service "a")`,
				`lb.toml:11: virtual_service.scheduler: scheduler "header_hash" needs mode = "http" (virtual_service "b")`,
				`lb.toml:17: virtual_service.scheduler: scheduler "rdp_cookie" needs mode = "tcp" (virtual_service "c")`,
			},
		},
		{
			name: "hash_header",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:80"
scheduler = "header_hash"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "b"
listen = "127.0.0.1:81"
scheduler = "header_hash"
hash_header = "X User"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "c"
listen = "127.0.0.1:82"
scheduler = "uri_hash"
hash_header = "X-User"
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{
				`lb.toml:1: virtual_service.hash_header: required for scheduler header_hash: the request header to hash, such as "X-User" (virtual_service "a")`,
				`lb.toml:10: virtual_service.hash_header: "X User" is not a valid header name: it holds a blank; use letters, digits and !#$%&'*+-.^_` + "`" + `|~ (RFC 9110 §5.1) (virtual_service "b")`,
				`lb.toml:16: virtual_service.hash_header: used only by scheduler header_hash, not "uri_hash" (virtual_service "c")`,
			},
		},
	})
}

// TestEverySchedulerValidates checks that each scheduler balancer knows is
// accepted in a mode it works in, and that the keywords this package names
// are ones balancer knows.
func TestEverySchedulerValidates(t *testing.T) {
	names := balancer.Names()
	for name := range schedulerModes {
		if !slices.Contains(names, name) {
			t.Errorf("schedulerModes names %q, which balancer does not know (known: %v)", name, names)
		}
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			mode := cmp.Or(schedulerModes[name], ModeHTTP)
			text := fmt.Sprintf("[[virtual_service]]\nname = \"a\"\nlisten = \":80\"\nmode = %q\nscheduler = %q\n", mode, name)
			if name == schedHeaderHash {
				text += "hash_header = \"X-User\"\n"
			}
			text += "real_server = [{ address = \"10.0.0.1:80\" }]\n"
			if _, err := Parse("lb.toml", []byte(text)); err != nil {
				t.Errorf("%v\n%s", err, text)
			}
		})
	}
}

func TestCheckToken(t *testing.T) {
	tests := []struct {
		in   string
		want string // substring of the message; "" for valid
	}{
		{"X-User", ""},
		{"JSESSIONID", ""},
		{"!#$%&'*+-.^_`|~09azAZ", ""},
		{"", `got ""`},
		{"a b", "a blank"},
		{"a\tb", "a blank"},
		{"a\x00", "a control character"},
		{"a\x7f", "a control character"},
		{"ü", "a non-ASCII character"},
	}
	for _, c := range `"(),/:;<=>?@[\]{}` {
		tests = append(tests, struct{ in, want string }{"a" + string(c), fmt.Sprintf("it holds %q", string(c))})
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := checkToken(tt.in, "name")
			switch {
			case tt.want == "" && got != "":
				t.Errorf("unexpected problem: %s", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Errorf("got %q, want it to contain %q", got, tt.want)
			}
		})
	}
}
