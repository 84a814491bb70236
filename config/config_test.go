package config

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/balancer"
)

func dump(c *Config) string {
	b, _ := json.MarshalIndent(c, "", "  ")
	return string(b)
}

// TestParse feeds raw configuration text, as an operator would write it, and
// checks either the decoded Config or every problem reported, verbatim.
func TestParse(t *testing.T) {
	tests := []parseTest{
		{
			name: "minimal: defaults everywhere",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:80"
[[virtual_service.real_server]]
address = "10.0.0.1:80"
`,
			check: func(t *testing.T, c *Config) {
				want := &Config{
					File: "lb.toml",
					Global: Global{LogLevel: "info", LogFormat: "console", AccessLog: true, Grace: 30 * time.Second,
						EventLoops: DefaultEventLoops()},
					Admin: Admin{MetricsAuth: true},
					HA:    HA{Priority: 100, AdvertInterval: time.Second, Preempt: true, TrackWeight: 50},
					VirtualServices: []*VirtualService{{
						Name:         "web",
						Listen:       []string{"127.0.0.1:80"},
						Mode:         "http",
						Scheduler:    "round_robin",
						ForwardedFor: true,
						Retries:      2,
						QueueTimeout: 5 * time.Second,
						Timeouts: Timeouts{
							Connect: 5 * time.Second, Client: 60 * time.Second,
							ClientHeader: 10 * time.Second, Server: 60 * time.Second,
						},
						HealthCheck: HealthCheck{
							Type: "tcp", Method: "GET", Path: "/", ExpectStatus: StatusRanges{{200, 399}},
							Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3,
						},
						Persistence: Persistence{
							Method: "none", Timeout: 30 * time.Minute, SourceMask: 32, SourceMask6: 64,
							MaxEntries: 1000000, InspectDelay: 5 * time.Second,
						},
						TLS:       TLS{MinVersion: "1.2", ALPN: []string{"h2", "http/1.1"}, ClientAuth: "none"},
						RateLimit: RateLimit{Per: time.Second},
						RealServers: []*RealServer{{
							Name: "10.0.0.1:80", Address: "10.0.0.1:80", Weight: 1,
							TLSVerify: true, Protocol: "http/1.1", State: "ready", Line: 4,
						}},
						Line: 1,
					}},
				}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("got\n%s\nwant\n%s", dump(c), dump(want))
				}
			},
		},
		{
			name: "present zero and false replace the defaults",
			input: `[global]
access_log = false
grace = "0s"
[[virtual_service]]
name = "web"
listen = ["127.0.0.1:80"]
forwarded_for = false
retries = 0
queue_timeout = "0s"
real_server = [{ address = "10.0.0.1:80", weight = 0 }]
`,
			check: func(t *testing.T, c *Config) {
				vs := c.VirtualServices[0]
				if c.Global.AccessLog || c.Global.Grace != 0 || vs.ForwardedFor || vs.Retries != 0 ||
					vs.QueueTimeout != 0 || vs.RealServers[0].Weight != 0 {
					t.Errorf("zero values not kept: %s", dump(c))
				}
			},
		},
		{
			name: "header lines, inline real servers and every scheduler",
			input: `[[virtual_service]]
name = "a"
listen = ":80"
scheduler = "weighted_least_conn"
[[virtual_service.real_server]]
name = "a1"
address = "[2001:db8::1]:80"

[[virtual_service]]
name = "b.2_x-y"
listen = ["0.0.0.0:81", "[::1]:81"]
scheduler = "least_conn"
real_server = [
  { address = "10.0.0.1:80" },
  { address = "10.0.0.2:80" },
]
`,
			check: func(t *testing.T, c *Config) {
				var got []int
				for _, vs := range c.VirtualServices {
					got = append(got, vs.Line)
					for _, rs := range vs.RealServers {
						got = append(got, rs.Line)
					}
				}
				if want := []int{1, 5, 9, 14, 15}; !reflect.DeepEqual(got, want) {
					t.Errorf("lines %v, want %v", got, want)
				}
			},
		},
		{
			name:  "syntax error",
			input: "[[virtual_service]]\nname = \"web\nlisten = \":80\"\n",
			want:  []string{`lb.toml:2: syntax: strings cannot contain newlines`},
		},
		{
			name:  "no virtual services",
			input: "# nothing\n",
			want:  []string{`lb.toml:1: virtual_service: no virtual services; add a [[virtual_service]] table`},
		},
		{
			name:  "virtual_service as a table",
			input: "[virtual_service]\nname = \"web\"\n",
			want: []string{
				`lb.toml:1: virtual_service: expected array of tables ([[virtual_service]]), got table`,
			},
		},
		{
			name:  "global as an array of tables",
			input: "[[global]]\n[[virtual_service]]\nname = \"web\"\nlisten = \":80\"\nreal_server = [{ address = \"10.0.0.1:80\" }]\n",
			want:  []string{`lb.toml:1: global: expected table ([global]), got array of tables`},
		},
		{
			name: "global: bad values and types",
			input: `[global]
log_level = "verbose"
log_format = "xml"
access_log = 1
grace = 30
[[virtual_service]]
name = "web"
listen = ":80"
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{
				`lb.toml:2: global.log_level: must be debug, info, warn or error, got "verbose"`,
				`lb.toml:3: global.log_format: must be console or json, got "xml"`,
				`lb.toml:4: global.access_log: expected boolean (true or false), got integer 1`,
				`lb.toml:5: global.grace: expected a duration string such as "5s", got integer 30`,
			},
		},
		{
			name: "global: event_loops out of range",
			input: `[global]
event_loops = -1
[[virtual_service]]
name = "web"
listen = ":80"
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{`lb.toml:2: global.event_loops: must be between 0 and 1024, got -1`},
		},
		{
			name: "global: event_loops not a number",
			input: `[global]
event_loops = "2"
[[virtual_service]]
name = "web"
listen = ":80"
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{`lb.toml:2: global.event_loops: expected integer, got string "2"`},
		},
		{
			name: "unknown keys and tables",
			input: `[globl]
[[virtual_service]]
name = "web"
listen = ":80"
shceduler = "least_conn"
colour = "blue"
[virtual_service.healthcheck]
interval = "1s"
[[virtual_service.real_server]]
adress = "10.0.0.1:80"
`,
			want: []string{
				`lb.toml:1: globl: unknown key "globl" (did you mean "global"?)`,
				`lb.toml:5: virtual_service.shceduler: unknown key "shceduler" (did you mean "scheduler"?) (virtual_service "web")`,
				`lb.toml:6: virtual_service.colour: unknown key "colour" (virtual_service "web")`,
				`lb.toml:7: virtual_service.healthcheck: unknown key "healthcheck" (did you mean "health_check"?) (virtual_service "web")`,
				`lb.toml:9: virtual_service.real_server.address: required (virtual_service "web", real_server #1)`,
				`lb.toml:10: virtual_service.real_server.adress: unknown key "adress" (did you mean "address"?) (virtual_service "web", real_server #1)`,
			},
		},
		{
			name: "wrong types keep the default and are all reported",
			input: `[[virtual_service]]
name = 7
listen = ["127.0.0.1:80", 80]
retries = "2"
max_conns = 1.5
queue_timeout = "5 seconds"
timeouts = { connect = "-1s", server = true }
real_server = ["10.0.0.1:80", { address = "10.0.0.2:80", weight = "1" }]
`,
			want: []string{
				`lb.toml:2: virtual_service.name: expected string, got integer 7 (virtual_service #1)`,
				`lb.toml:3: virtual_service.listen: expected string, got integer 80 (virtual_service #1)`,
				`lb.toml:4: virtual_service.retries: expected integer, got string "2" (virtual_service #1)`,
				`lb.toml:5: virtual_service.max_conns: expected integer, got float 1.5 (virtual_service #1)`,
				`lb.toml:6: virtual_service.queue_timeout: expected a duration such as "5s", "250ms" or "1m30s", got "5 seconds" (virtual_service #1)`,
				`lb.toml:7: virtual_service.timeouts.connect: must not be negative, got "-1s" (virtual_service #1)`,
				`lb.toml:7: virtual_service.timeouts.server: expected a duration string such as "5s", got boolean true (virtual_service #1)`,
				`lb.toml:8: virtual_service.real_server: expected table, got string "10.0.0.1:80" (virtual_service #1, real_server #1)`,
				`lb.toml:8: virtual_service.real_server.weight: expected integer, got string "1" (virtual_service #1, real_server "10.0.0.2:80")`,
			},
		},
		{
			name: "names",
			input: `[[virtual_service]]
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "-web"
listen = "127.0.0.1:81"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "web"
listen = "127.0.0.1:82"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "web"
listen = "127.0.0.1:83"
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{
				`lb.toml:1: virtual_service.name: required (virtual_service #1)`,
				`lb.toml:5: virtual_service.name: "-web" must start with a letter or digit and hold only letters, digits, '-', '_' and '.' (virtual_service "-web")`,
				`lb.toml:13: virtual_service.name: "web" is already used by the virtual_service at line 8 (virtual_service "web")`,
			},
		},
		{
			name: "listen addresses",
			input: `[[virtual_service]]
name = "a"
listen = [
  "127.0.0.1:80",
  "127.0.0.1:80",
  "web.example.com:80",
  "::1:80",
  "1.2.3:80",
  "127.0.0.1",
  "127.0.0.1:",
  "127.0.0.1:0",
  "127.0.0.1:65536",
  "127.0.0.1:http",
]
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{
				`lb.toml:5: virtual_service.listen: "127.0.0.1:80" is listed twice (also at line 4) (virtual_service "a")`,
				`lb.toml:6: virtual_service.listen: invalid address "web.example.com:80": host must be an IP address, not a hostname (virtual_service "a")`,
				`lb.toml:7: virtual_service.listen: invalid address "::1:80": too many colons in address (IPv6 addresses go in brackets: "[::1]:80") (virtual_service "a")`,
				`lb.toml:8: virtual_service.listen: invalid address "1.2.3:80": host "1.2.3" is not an IP address (virtual_service "a")`,
				`lb.toml:9: virtual_service.listen: invalid address "127.0.0.1": missing port in address (virtual_service "a")`,
				`lb.toml:10: virtual_service.listen: invalid address "127.0.0.1:": port is required (virtual_service "a")`,
				`lb.toml:11: virtual_service.listen: invalid address "127.0.0.1:0": port must be between 1 and 65535, got 0 (virtual_service "a")`,
				`lb.toml:12: virtual_service.listen: invalid address "127.0.0.1:65536": port must be between 1 and 65535, got 65536 (virtual_service "a")`,
				`lb.toml:13: virtual_service.listen: invalid address "127.0.0.1:http": port must be a number, got "http" (virtual_service "a")`,
			},
		},
		{
			name: "listen conflicts between services",
			input: `[[virtual_service]]
name = "a"
listen = ["127.0.0.1:80", "0.0.0.0:443", "[::1]:8080", "[::]:9000", "127.0.0.1:7000"]
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
listen = ["127.0.0.1:80", "127.0.0.2:443", "[::1]:443", "0.0.0.0:8080", ":8080"]
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "c"
listen = ["10.1.1.1:9000", "[::ffff:127.0.0.1]:7000", "[::]:7001", ":7001"]
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{
				`lb.toml:5: virtual_service.name: required (virtual_service #2)`,
				`lb.toml:6: virtual_service.listen: "127.0.0.1:80" is already used by virtual_service "a" at line 3 (virtual_service #2)`,
				`lb.toml:6: virtual_service.listen: "127.0.0.2:443" overlaps "0.0.0.0:443" (every IPv4 address) of virtual_service "a" at line 3 (virtual_service #2)`,
				`lb.toml:6: virtual_service.listen: ":8080" (every address) overlaps "[::1]:8080" of virtual_service "a" at line 3 (virtual_service #2)`,
				`lb.toml:10: virtual_service.listen: "10.1.1.1:9000" overlaps "[::]:9000" (every address) of virtual_service "a" at line 3 (virtual_service "c")`,
				`lb.toml:10: virtual_service.listen: "[::ffff:127.0.0.1]:7000" is already used by virtual_service "a" at line 3 (virtual_service "c")`,
				`lb.toml:10: virtual_service.listen: ":7001" (every address) overlaps "[::]:7001" (every address) at line 10 (virtual_service "c")`,
			},
		},
		{
			name: "service settings",
			input: `[[virtual_service]]
name = "web"
listen = ":80"
mode = "udp"
scheduler = "random"
retries = 101
max_conns = -1
queue_timeout = "1s"
[virtual_service.timeouts]
connect = "0s"
client_header = "0ms"
[[virtual_service]]
name = "web2"
listen = ":81"
scheduler = "least_con"
retries = -1
`,
			want: []string{
				`lb.toml:1: virtual_service.real_server: virtual service has no real servers (virtual_service "web")`,
				`lb.toml:4: virtual_service.mode: must be http, tcp, dr, nat or tun, got "udp" (virtual_service "web")`,
				`lb.toml:5: virtual_service.scheduler: unknown scheduler "random" (known: ` + strings.Join(balancer.Names(), ", ") + `) (virtual_service "web")`,
				`lb.toml:6: virtual_service.retries: must be between 0 and 100, got 101 (virtual_service "web")`,
				`lb.toml:7: virtual_service.max_conns: must be >= 0, got -1 (virtual_service "web")`,
				`lb.toml:10: virtual_service.timeouts.connect: must be > 0, got 0s (virtual_service "web")`,
				`lb.toml:11: virtual_service.timeouts.client_header: must be > 0, got 0s (virtual_service "web")`,
				`lb.toml:12: virtual_service.real_server: virtual service has no real servers (virtual_service "web2")`,
				`lb.toml:15: virtual_service.scheduler: unknown scheduler "least_con" (did you mean "least_conn"?) (virtual_service "web2")`,
				`lb.toml:16: virtual_service.retries: must be between 0 and 100, got -1 (virtual_service "web2")`,
			},
		},
		{
			name: "real servers",
			input: `[[virtual_service]]
name = "web"
listen = ":80"
[[virtual_service.real_server]]
name = "web1"
address = "10.0.0.1:80"
weight = 65536
max_conns = -1
[[virtual_service.real_server]]
name = "web1"
address = "10.0.0.1:80"
weight = -1
[[virtual_service.real_server]]
address = "db.local:80"
[[virtual_service.real_server]]
address = ":80"
[[virtual_service.real_server]]
name = "10.0.0.9:80"
address = "10.0.0.8:80"
[[virtual_service.real_server]]
address = "10.0.0.9:80"
[[virtual_service.real_server]]
address = "10.0.0.10:80"
[[virtual_service.real_server]]
address = "10.0.0.10:80"
`,
			want: []string{
				`lb.toml:7: virtual_service.real_server.weight: must be between 0 and 65535, got 65536 (virtual_service "web", real_server "web1")`,
				`lb.toml:8: virtual_service.real_server.max_conns: must be >= 0, got -1 (virtual_service "web", real_server "web1")`,
				`lb.toml:10: virtual_service.real_server.name: "web1" is already used by the real_server at line 4 (virtual_service "web", real_server "web1")`,
				`lb.toml:11: virtual_service.real_server.address: "10.0.0.1:80" is already used by the real_server at line 4 (virtual_service "web", real_server "web1")`,
				`lb.toml:12: virtual_service.real_server.weight: must be between 0 and 65535, got -1 (virtual_service "web", real_server "web1")`,
				`lb.toml:14: virtual_service.real_server.address: invalid address "db.local:80": host must be an IP address, not a hostname (virtual_service "web", real_server "db.local:80")`,
				`lb.toml:16: virtual_service.real_server.address: invalid address ":80": host is required (virtual_service "web", real_server ":80")`,
				`lb.toml:20: virtual_service.real_server.name: "10.0.0.9:80" is already used by the real_server at line 17 (virtual_service "web", real_server "10.0.0.9:80")`,
				`lb.toml:25: virtual_service.real_server.address: "10.0.0.10:80" is already used by the real_server at line 22 (virtual_service "web", real_server "10.0.0.10:80")`,
			},
		},
		{
			name: "health check: defaults, and a short interval shortens the default timeout",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:80"
health_check = { interval = "500ms" }
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "b"
listen = "127.0.0.1:81"
health_check = { interval = "500ms", timeout = "200ms" }
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "c"
listen = "127.0.0.1:82"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.health_check]
type = "http"
expect_status = "2xx"
interval = "5s"
`,
			check: func(t *testing.T, c *Config) {
				type got struct {
					Type              string
					Interval, Timeout time.Duration
					ExpectStatus      string
				}
				var gots []got
				for _, vs := range c.VirtualServices {
					h := vs.HealthCheck
					gots = append(gots, got{h.Type, h.Interval, h.Timeout, h.ExpectStatus.String()})
				}
				want := []got{
					{"tcp", 500 * time.Millisecond, 500 * time.Millisecond, "200-399"},
					{"tcp", 500 * time.Millisecond, 200 * time.Millisecond, "200-399"},
					{"http", 5 * time.Second, time.Second, "200-299"},
				}
				if !reflect.DeepEqual(gots, want) {
					t.Errorf("got %+v, want %+v", gots, want)
				}
			},
		},
		{
			name: "health check: with an unknown type, no key is called unused",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.health_check]
type = "HTTP"
path = "/health"
method = "get"
`,
			want: []string{
				`lb.toml:6: virtual_service.health_check.type: must be tcp, http, https, send_expect or none, got "HTTP" (virtual_service "web")`,
				`lb.toml:8: virtual_service.health_check.method: must be GET or HEAD, got "get" (virtual_service "web")`,
			},
		},
		{
			name: "health check: keys of other types",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.health_check]
type = "https"
method = "GET"
expect = "x"
port = 0
[[virtual_service]]
name = "db"
listen = "127.0.0.1:81"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.health_check]
type = "none"
agent_port = 9999
interval = "10s"
rise = 2
port = 8080
host = "db"
`,
			want: []string{
				`lb.toml:8: virtual_service.health_check.expect: used only by type send_expect, not "https" (virtual_service "web")`,
				`lb.toml:18: virtual_service.health_check.rise: not used by type "none" (no active check) (virtual_service "db")`,
				`lb.toml:19: virtual_service.health_check.port: not used by type "none" (no active check) (virtual_service "db")`,
				`lb.toml:20: virtual_service.health_check.host: used only by type http or https, not "none" (virtual_service "db")`,
			},
		},
		{
			name: "health check: the timeout is checked against a valid interval only",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
health_check = { interval = "0s", timeout = "5s", slow_start = "-1s" }
`,
			want: []string{
				`lb.toml:5: virtual_service.health_check.slow_start: must not be negative, got "-1s" (virtual_service "web")`,
				`lb.toml:5: virtual_service.health_check.interval: must be >= 100ms, got 0s (virtual_service "web")`,
			},
		},
		{
			name: "admin: one user; metrics_auth defaults to true",
			input: `[[virtual_service]]
name = "web"
listen = ":80"
real_server = [{ address = "10.0.0.1:80" }]
[admin]
listen = "[::1]:9080"
user = [{ name = "admin", password_hash = "$2a$10$NfeWewPVXxcLNko9c8K9Fu.nT5LoKsTq6V1giBA1lO0tf4FQy.vXK" }]
`,
			check: func(t *testing.T, c *Config) {
				want := Admin{
					Listen:      "[::1]:9080",
					MetricsAuth: true,
					Users:       []*AdminUser{{Name: "admin", PasswordHash: "$2a$10$NfeWewPVXxcLNko9c8K9Fu.nT5LoKsTq6V1giBA1lO0tf4FQy.vXK", Line: 7}},
					Line:        5,
				}
				if !reflect.DeepEqual(c.Admin, want) {
					t.Errorf("got %+v, want %+v", c.Admin, want)
				}
			},
		},
		{
			name: "admin: keys without listen",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[admin]
metrics_auth = false
tls_key = "admin.key"
`,
			want: []string{
				`lb.toml:5: admin.listen: required when [admin] is present: the admin address, such as "127.0.0.1:9080"`,
				`lb.toml:7: admin.tls_key: given without tls_cert: give both or neither`,
			},
		},
		{
			name: "admin: a listen address but no users",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[admin]
listen = "127.0.0.1:80"
tls_cert = "admin.crt"
`,
			want: []string{
				`lb.toml:5: admin.user: required: at least one [[admin.user]] to log in with`,
				`lb.toml:6: admin.listen: "127.0.0.1:80" is already used by virtual_service "web" at line 3`,
				`lb.toml:7: admin.tls_cert: given without tls_key: give both or neither`,
			},
		},
		{
			name: "admin: listen addresses",
			input: `[[virtual_service]]
name = "web"
listen = "[::]:80"
real_server = [{ address = "10.0.0.1:80" }]
[admin]
listen = "admin.local:9080"
[[admin.user]]
name = "admin"
password_hash = "$2a$10$NfeWewPVXxcLNko9c8K9Fu.nT5LoKsTq6V1giBA1lO0tf4FQy.vXK"
[[virtual_service]]
name = "web2"
listen = "127.0.0.1:81"
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{
				`lb.toml:6: admin.listen: invalid address "admin.local:9080": host must be an IP address, not a hostname`,
			},
		},
		{
			name: "admin: a wildcard listen overlaps a later service",
			input: `[admin]
listen = ":81"
user = [{ name = "a", password_hash = "$2a$10$NfeWewPVXxcLNko9c8K9Fu.nT5LoKsTq6V1giBA1lO0tf4FQy.vXK" }]
[[virtual_service]]
name = "web"
listen = "127.0.0.1:81"
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{
				`lb.toml:2: admin.listen: ":81" (every address) overlaps "127.0.0.1:81" of virtual_service "web" at line 6`,
			},
		},
	}
	runParseTests(t, tests)
}

// parseTest is a configuration text and what Parse makes of it.
type parseTest struct {
	name  string
	input string
	check func(t *testing.T, c *Config) // for valid input; nil checks only that it is valid
	want  []string                      // problems, for invalid input
}

// runParseTests parses each test's input as lb.toml and checks either the
// Config or every problem reported, verbatim and in order.
func runParseTests(t *testing.T, tests []parseTest) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("lb.toml", []byte(tt.input))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("unexpected problems:\n%v", err)
				}
				if tt.check != nil {
					tt.check(t, c)
				}
				return
			}
			if err == nil {
				t.Fatalf("no problems, want:\n%s", strings.Join(tt.want, "\n"))
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error %T is not Errors: %v", err, err)
			}
			if c != nil {
				t.Errorf("got a Config along with problems")
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestProblemError(t *testing.T) {
	tests := []struct {
		name string
		p    Problem
		want string
	}{
		{"full", Problem{"lb.toml", 14, "virtual_service.retries", "must be >= 0"}, "lb.toml:14: virtual_service.retries: must be >= 0"},
		{"no key", Problem{"lb.toml", 3, "", "syntax: oops"}, "lb.toml:3: syntax: oops"},
		{"no line", Problem{"lb.toml", 0, "virtual_service", "none"}, "lb.toml:1: virtual_service: none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestClosest(t *testing.T) {
	known := []string{"name", "listen", "mode", "scheduler", "retries", "max_conns"}
	tests := []struct{ in, want string }{
		{"shceduler", "scheduler"},
		{"nmae", "name"},
		{"lisen", "listen"},
		{"max_con", "max_conns"},
		{"maxconns", "max_conns"},
		{"colour", ""},
		{"x", ""},
		{"mo", ""}, // two edits from "mode" but only two bytes long
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := closest(tt.in, known); got != tt.want {
				t.Errorf("closest(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
