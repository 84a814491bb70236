package config

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestL7(t *testing.T) {
	tests := []parseTest{
		{
			name: "the issue's example, empty values included",
			input: `[[virtual_service]]
name = "site"
listen = "127.0.0.1:8080"
mode = "http"
allow = []
deny = ["192.0.2.0/24"]
compress = false
fallback = ""
  [virtual_service.rate_limit]
  requests = 0
  [[virtual_service.route]]
  host = "api.example.com"
  path_prefix = "/v1/"
  methods = []
  header = ""
  to = "api"
  strip_prefix = false
  [[virtual_service.route]]
  path_prefix = "/old/"
  redirect = "https://www.example.com/new/"
  redirect_code = 301
  [virtual_service.request_headers]
  set = { "X-Env" = "prod" }
  remove = ["X-Debug"]
  [virtual_service.response_headers]
  set = { "Strict-Transport-Security" = "max-age=31536000" }
  remove = ["Server"]
  [[virtual_service.real_server]]
  address = "10.0.0.1:80"

[[virtual_service]]
name = "api"
mode = "http"
  [[virtual_service.real_server]]
  address = "10.0.0.2:80"
`,
			check: func(t *testing.T, c *Config) {
				site, api := c.VirtualServices[0], c.VirtualServices[1]
				if site.IsPool() || !api.IsPool() {
					t.Errorf("IsPool: site %t, api %t", site.IsPool(), api.IsPool())
				}
				if site.AllowNets != nil || !slices.Equal(site.DenyNets, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}) {
					t.Errorf("AllowNets %v, DenyNets %v", site.AllowNets, site.DenyNets)
				}
				if site.RateLimit != (RateLimit{Per: time.Second}) {
					t.Errorf("RateLimit = %+v", site.RateLimit)
				}
				r0, r1 := site.Routes[0], site.Routes[1]
				if r0.HeaderName != "" || r0.HeaderValue != nil || r0.PathRE != nil || r0.RedirectCode != 302 || r0.Line != 11 {
					t.Errorf("route 1: %+v", r0)
				}
				if r1.Redirect != "https://www.example.com/new/" || r1.RedirectCode != 301 || r1.Line != 18 {
					t.Errorf("route 2: %+v", r1)
				}
			},
		},
		{
			name: "parsed fields",
			input: `[[virtual_service]]
name = "site"
listen = "127.0.0.1:8080"
allow = ["10.0.0.0/8", "192.0.2.7", "::ffff:172.16.0.0/108", "2001:db8::1", "::ffff:192.0.2.9"]
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service.route]]
name = "canary"
host = "*.Example.COM"
path_regex = "^/v[0-9]+/"
methods = ["get", "propfind", "M-SEARCH"]
header = "  x-canary :  1|yes  "
to = "api"
[[virtual_service.route]]
name = "present"
header = "X-Debug:"
redirect = "/debug/"
redirect_code = 307
[[virtual_service.route]]
header = "x-user-id"
redirect = "http://[2001:db8::1]:8080/users/"
[virtual_service.request_headers]
set = { "x-forwarded-env" = "prod\ttabbed", "X-EMPTY" = "" }
remove = ["x-debug", "COOKIE2"]

[[virtual_service]]
name = "api"
real_server = [{ address = "10.0.0.2:80" }]
`,
			check: func(t *testing.T, c *Config) {
				site := c.VirtualServices[0]
				want := []netip.Prefix{
					netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
					netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("2001:db8::1/128"),
					netip.MustParsePrefix("192.0.2.9/32"),
				}
				if !slices.Equal(site.AllowNets, want) {
					t.Errorf("AllowNets = %v, want %v", site.AllowNets, want)
				}
				r := site.Routes[0]
				if r.Host != "*.example.com" || !slices.Equal(r.Methods, []string{"GET", "PROPFIND", "M-SEARCH"}) {
					t.Errorf("host %q, methods %q", r.Host, r.Methods)
				}
				if r.PathRE == nil || !r.PathRE.MatchString("/v12/x") || r.PathRE.MatchString("/api/v1/") {
					t.Errorf("PathRE = %v", r.PathRE)
				}
				if r.HeaderName != "X-Canary" || r.HeaderValue.String() != "^(?:1|yes)$" {
					t.Errorf("header %q %v", r.HeaderName, r.HeaderValue)
				}
				for _, tt := range []struct {
					v    string
					want bool
				}{{"1", true}, {"yes", true}, {"11", false}, {"yes!", false}, {"", false}} {
					if got := r.HeaderValue.MatchString(tt.v); got != tt.want {
						t.Errorf("header value %q matches: %t, want %t", tt.v, got, tt.want)
					}
				}
				for i, name := range []string{"X-Debug", "X-User-Id"} {
					r := site.Routes[i+1]
					if r.HeaderName != name || r.HeaderValue != nil {
						t.Errorf("route %d: header %q %v, want %q presence only", i+2, r.HeaderName, r.HeaderValue, name)
					}
				}
				rh := site.RequestHeaders
				if !reflect.DeepEqual(rh.Set, map[string]string{"X-Forwarded-Env": "prod\ttabbed", "X-Empty": ""}) ||
					!slices.Equal(rh.Remove, []string{"X-Debug", "Cookie2"}) {
					t.Errorf("request_headers = %+v", rh)
				}
			},
		},
		{
			name: "a pool with a fallback and no real servers, a front with routes and none",
			input: `[[virtual_service]]
name = "front"
listen = "127.0.0.1:8080"
route = [{ to = "sorry" }]

[[virtual_service]]
name = "sorry"
fallback = "[::1]:8081"
scheduler = "least_conn"
retries = 1
queue_timeout = "1s"
timeouts = { connect = "1s", server = "10s" }
health_check = { type = "http", path = "/health" }
persistence = { method = "cookie" }
transparent = true
request_headers = { set = { "X-Pool" = "sorry" } }
`,
		},
		{
			name: "a listening service with a fallback only",
			input: `[[virtual_service]]
name = "maintenance"
listen = "127.0.0.1:8080"
fallback = "127.0.0.1:8081"
`,
		},
		{
			name: "a listening service without routes nor real servers",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:8080"
`,
			want: []string{`lb.toml:1: virtual_service.real_server: virtual service has no real servers (virtual_service "web")`},
		},
		{
			name: "listening keys on a pool",
			input: `[[virtual_service]]
name = "api"
accept_proxy = true
trusted_proxies = ["10.0.0.0/8"]
forwarded_header = true
allow = ["10.0.0.0/8"]
deny = []
rate_limit = { requests = 10 }
timeouts = { client_header = "1s" }
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.tls]
certificates = [{ cert = "testdata/test-only-admin.crt", key = "testdata/test-only-admin.key" }]
[[virtual_service.route]]
to = "api"
`,
			want: []string{
				`lb.toml:3: virtual_service.accept_proxy: has no effect on a pool (a virtual service without listen): set it on the listening service whose routes point here (virtual_service "api")`,
				`lb.toml:4: virtual_service.trusted_proxies: has no effect on a pool (a virtual service without listen): set it on the listening service whose routes point here (virtual_service "api")`,
				`lb.toml:5: virtual_service.forwarded_header: has no effect on a pool (a virtual service without listen): set it on the listening service whose routes point here (virtual_service "api")`,
				`lb.toml:6: virtual_service.allow: has no effect on a pool (a virtual service without listen): set it on the listening service whose routes point here (virtual_service "api")`,
				`lb.toml:7: virtual_service.deny: has no effect on a pool (a virtual service without listen): set it on the listening service whose routes point here (virtual_service "api")`,
				`lb.toml:8: virtual_service.rate_limit: has no effect on a pool (a virtual service without listen): set it on the listening service whose routes point here (virtual_service "api")`,
				`lb.toml:9: virtual_service.timeouts.client_header: has no effect on a pool (a virtual service without listen): set it on the listening service whose routes point here (virtual_service "api")`,
				`lb.toml:11: virtual_service.tls: has no effect on a pool (a virtual service without listen): set it on the listening service whose routes point here (virtual_service "api")`,
				`lb.toml:13: virtual_service.route: has no effect on a pool (a virtual service without listen): set it on the listening service whose routes point here (virtual_service "api")`,
			},
		},
		{
			name: "allow and deny entries",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:8080"
allow = ["", "10.0.0.0/33", "::ffff:0:0/90", "192.0.2.0/24 "]
deny = ["2001:db8::/32", "10.0.0.0-10.0.0.255"]
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{
				`lb.toml:4: virtual_service.allow: "" must be an IP address or CIDR, such as "192.0.2.0/24" or "2001:db8::1" (virtual_service "web")`,
				`lb.toml:4: virtual_service.allow: "10.0.0.0/33" must be an IP address or CIDR, such as "192.0.2.0/24" or "2001:db8::1" (virtual_service "web")`,
				`lb.toml:4: virtual_service.allow: "::ffff:0:0/90" has bits set past the prefix length: did you mean "::ffc0:0:0/90"? (virtual_service "web")`,
				`lb.toml:4: virtual_service.allow: "192.0.2.0/24 " must be an IP address or CIDR, such as "192.0.2.0/24" or "2001:db8::1" (virtual_service "web")`,
				`lb.toml:5: virtual_service.deny: "10.0.0.0-10.0.0.255" must be an IP address or CIDR, such as "192.0.2.0/24" or "2001:db8::1" (virtual_service "web")`,
			},
		},
		{
			name: "route hosts",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:8080"
real_server = [{ address = "10.0.0.1:80" }]
route = [
  { host = "*", redirect = "/" },
  { host = "-a.example.com", redirect = "/" },
  { host = "a..example.com", redirect = "/" },
  { host = "bücher.example", redirect = "/" },
  { host = "[::1]", redirect = "/" },
  { host = "example.com.", redirect = "/" },
  { host = "www*.example.com", redirect = "/" },
  { host = "10.0.0.1", redirect = "/" },
  { host = "_srv.Example.com", redirect = "/" },
]
`,
			want: []string{
				`lb.toml:6: virtual_service.route.host: "*" matches every host: leave host out instead (virtual_service "web", route #1)`,
				`lb.toml:7: virtual_service.route.host: "-a.example.com" is not a host name or "*." and a host name (write names in punycode) (virtual_service "web", route #2)`,
				`lb.toml:8: virtual_service.route.host: "a..example.com" is not a host name or "*." and a host name (write names in punycode) (virtual_service "web", route #3)`,
				`lb.toml:9: virtual_service.route.host: "bücher.example" is not a host name or "*." and a host name (write names in punycode) (virtual_service "web", route #4)`,
				`lb.toml:10: virtual_service.route.host: "[::1]" holds a ':': the host is matched without its port, and IPv6 literals are not supported (virtual_service "web", route #5)`,
				`lb.toml:11: virtual_service.route.host: "example.com." is not a host name or "*." and a host name (write names in punycode) (virtual_service "web", route #6)`,
				`lb.toml:12: virtual_service.route.host: "www*.example.com": a wildcard may only be a whole first label, as in "*.example.com" (virtual_service "web", route #7)`,
			},
		},
		{
			name: "redirects",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:8080"
real_server = [{ address = "10.0.0.1:80" }]
route = [
  { redirect = "//evil.example.com/" },
  { redirect = "https:///new/" },
  { redirect = "https://user:pw@www.example.com/" },
  { redirect = "/new/#top" },
  { redirect = "https://www.example.com/a b/" },
  { redirect = "new/" },
  { redirect = "https://www.example.com" },
  { redirect = "/" },
  { redirect = "HTTPS://www.example.com:8443/new/", redirect_code = 308 },
]
`,
			want: []string{
				`lb.toml:6: virtual_service.route.redirect: "//evil.example.com/" starts with "//", which clients read as a host name: write "https://host/…" or a path (virtual_service "web", route #1)`,
				`lb.toml:7: virtual_service.route.redirect: "https:///new/" has no host (virtual_service "web", route #2)`,
				`lb.toml:8: virtual_service.route.redirect: "https://user:pw@www.example.com/" holds user information, which clients must not be sent to (RFC 9110 §4.2.4) (virtual_service "web", route #3)`,
				`lb.toml:9: virtual_service.route.redirect: "/new/#top" holds a query or fragment: the redirect keeps the request's own query, appended after the path (virtual_service "web", route #4)`,
				`lb.toml:10: virtual_service.route.redirect: "https://www.example.com/a b/" holds a blank, control or non-ASCII character; percent-encode it (virtual_service "web", route #5)`,
				`lb.toml:11: virtual_service.route.redirect: "new/" must be an http or https URL ("https://www.example.com/new/") or a path ("/new/") (virtual_service "web", route #6)`,
			},
		},
		{
			name: "route names and targets",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:8080"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service.route]]
name = "#1"
to = "nothing-like-it"
[[virtual_service.route]]
name = "b"
to = "web"
[[virtual_service]]
name = "other"
listen = "127.0.0.1:8081"
route = [{ name = "b", to = "web" }]
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{
				`lb.toml:6: virtual_service.route.name: "#1" must start with a letter or digit and hold only letters, digits, '-', '_' and '.' (virtual_service "web", route "#1")`,
				`lb.toml:7: virtual_service.route.to: no virtual service "nothing-like-it": routes go to pools, virtual services without listen (virtual_service "web", route "#1")`,
				`lb.toml:10: virtual_service.route.to: virtual_service "web" listens: routes go to pools, virtual services without listen (virtual_service "web", route "b")`,
				`lb.toml:14: virtual_service.route.to: virtual_service "web" listens: routes go to pools, virtual services without listen (virtual_service "other", route "b")`,
			},
		},
		{
			name: "header rules",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:8080"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.request_headers]
set = { "Content-Length" = "0", ":authority" = "x", "X-Nul" = "a\u0000b", "X-Del" = "a\u007f" }
remove = ["host", "te", "Keep-Alive", "Upgrade", "Trailer", "Proxy-Connection", ""]
[virtual_service.response_headers]
remove = ["Content-Encoding", "Host"]
`,
			want: []string{
				`lb.toml:6: virtual_service.request_headers.set.:authority: ":authority" is not a valid header name: it holds ":"; use letters, digits and !#$%&'*+-.^_` + "`" + `|~ (RFC 9110 §5.1) (virtual_service "web")`,
				`lb.toml:6: virtual_service.request_headers.set.Content-Length: cannot set Content-Length: it frames the body and must match the bytes sent (RFC 9110 §8.6) (virtual_service "web")`,
				`lb.toml:6: virtual_service.request_headers.set.X-Del: the value holds a control character ("\x7f"): field values may hold none but tab (virtual_service "web")`,
				`lb.toml:6: virtual_service.request_headers.set.X-Nul: the value holds a control character ("\x00"): field values may hold none but tab (virtual_service "web")`,
				`lb.toml:7: virtual_service.request_headers.remove: cannot remove Host: it names the site the client asked for; routes match on it and HTTP/2 carries it as :authority (RFC 9110 §7.2) (virtual_service "web")`,
				`lb.toml:7: virtual_service.request_headers.remove: cannot remove Te: it is hop-by-hop: the proxy writes its own on each connection (RFC 9110 §10.1.4) (virtual_service "web")`,
				`lb.toml:7: virtual_service.request_headers.remove: cannot remove Keep-Alive: it is hop-by-hop: the proxy writes its own on each connection (RFC 9110 §7.6.1) (virtual_service "web")`,
				`lb.toml:7: virtual_service.request_headers.remove: cannot remove Upgrade: it is hop-by-hop: the proxy negotiates it on each connection (RFC 9110 §7.8) (virtual_service "web")`,
				`lb.toml:7: virtual_service.request_headers.remove: cannot remove Trailer: it is hop-by-hop: the proxy writes its own on each connection (RFC 9110 §6.6.2) (virtual_service "web")`,
				`lb.toml:7: virtual_service.request_headers.remove: cannot remove Proxy-Connection: it is hop-by-hop: the proxy writes its own on each connection (RFC 9110 §7.6.1) (virtual_service "web")`,
				`lb.toml:7: virtual_service.request_headers.remove: must be a header name, got "" (RFC 9110 §5.1) (virtual_service "web")`,
				`lb.toml:9: virtual_service.response_headers.remove: cannot remove Content-Encoding: it describes how the body is coded; changing it corrupts the body (RFC 9110 §8.4) (virtual_service "web")`,
			},
		},
		{
			name: "http keys in tcp mode",
			input: `[[virtual_service]]
name = "db"
listen = "127.0.0.1:5432"
mode = "tcp"
allow = ["10.0.0.0/8"]
deny = ["10.1.0.0/16"]
rate_limit = { requests = 5 }
request_headers = { remove = ["X-A"] }
response_headers = { remove = ["X-B"] }
real_server = [{ address = "10.0.0.1:5432" }]
`,
			want: []string{
				`lb.toml:5: virtual_service.allow: used only in http mode: a tcp service forwards bytes and reads no HTTP requests (virtual_service "db")`,
				`lb.toml:6: virtual_service.deny: used only in http mode: a tcp service forwards bytes and reads no HTTP requests (virtual_service "db")`,
				`lb.toml:7: virtual_service.rate_limit: used only in http mode: a tcp service forwards bytes and reads no HTTP requests (virtual_service "db")`,
				`lb.toml:8: virtual_service.request_headers: used only in http mode: a tcp service forwards bytes and reads no HTTP requests (virtual_service "db")`,
				`lb.toml:9: virtual_service.response_headers: used only in http mode: a tcp service forwards bytes and reads no HTTP requests (virtual_service "db")`,
			},
		},
	}
	runParseTests(t, tests)
}
