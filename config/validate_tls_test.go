package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// tlsFiles are the certificate files the TLS tests name, made fresh in a
// temporary directory.
type tlsFiles struct {
	dir               string
	cert, key         string // a valid pair
	otherKey          string // another pair's key
	expired, expiredK string // valid until expiredUntil, yesterday
	future, futureK   string // valid from futureFrom, tomorrow
	expiredUntil      time.Time
	futureFrom        time.Time
	garbage           string // not PEM
	missing           string // does not exist
	keyOnly           string // PEM with a key and no certificate
	caWithBadCert     string // a CERTIFICATE block that does not parse
}

func newTLSFiles(t *testing.T) *tlsFiles {
	t.Helper()
	dir := t.TempDir()
	f := &tlsFiles{dir: dir}
	f.cert, f.key = writeKeyPair(t, dir, "www.example.com")
	_, f.otherKey = writeKeyPair(t, dir, "other.example.com")
	// Whole seconds, as a certificate holds them.
	now := time.Now().UTC().Truncate(time.Second)
	f.expiredUntil, f.futureFrom = now.Add(-24*time.Hour), now.Add(24*time.Hour)
	f.expired, f.expiredK = writeCert(t, dir, "expired", now.Add(-48*time.Hour), f.expiredUntil)
	f.future, f.futureK = writeCert(t, dir, "future", f.futureFrom, now.Add(48*time.Hour))
	f.garbage = filepath.Join(dir, "garbage.pem")
	writeFile(t, f.garbage, []byte("not PEM\n"))
	f.missing = filepath.Join(dir, "missing.pem")
	f.keyOnly = f.key
	f.caWithBadCert = filepath.Join(dir, "bad-ca.pem")
	writeFile(t, f.caWithBadCert, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	return f
}

// TestTLS feeds [virtual_service.tls] tables and real servers' TLS keys.
func TestTLS(t *testing.T) {
	f := newTLSFiles(t)
	// q quotes a path for the TOML text.
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	pair := fmt.Sprintf("{ cert = %s, key = %s }", q(f.cert), q(f.key))

	tests := []parseTest{
		{
			name: "defaults: off without the table, on with certificates",
			input: `[[virtual_service]]
name = "plain"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "secure"
listen = "127.0.0.1:443"
real_server = [{ address = "10.0.0.1:443", tls = true }]
[virtual_service.tls]
certificates = [` + pair + `]
`,
			check: func(t *testing.T, c *Config) {
				want := []TLS{
					{MinVersion: "1.2", ALPN: []string{"h2", "http/1.1"}, ClientAuth: "none"},
					{
						Certificates: []*Certificate{{Cert: f.cert, Key: f.key, Line: 10}},
						MinVersion:   "1.2", ALPN: []string{"h2", "http/1.1"}, ClientAuth: "none",
					},
				}
				for i, vs := range c.VirtualServices {
					if !reflect.DeepEqual(vs.TLS, want[i]) {
						t.Errorf("%s: got %+v, want %+v", vs.Name, vs.TLS, want[i])
					}
				}
				rs := c.VirtualServices[1].RealServers[0]
				if !rs.TLS || !rs.TLSVerify || rs.Protocol != "http/1.1" || rs.TLSServerName != "" || rs.TLSCA != "" {
					t.Errorf("real server: got %+v", rs)
				}
			},
		},
		{
			name: "certificate lines: a multi-line array, inline tables, arrays of tables",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:443"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.tls]
certificates = [
  ` + pair + `,

  ` + pair + `,
]
[[virtual_service]]
name = "b"
listen = "127.0.0.1:444"
tls = { certificates = [` + pair + `], min_version = "1.3" }
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service]]
name = "c"
listen = "127.0.0.1:445"
real_server = [{ address = "10.0.0.1:80" }]
[[virtual_service.tls.certificates]]
cert = ` + q(f.cert) + `
key = ` + q(f.key) + `
[[virtual_service.tls.certificates]]
key = ` + q(f.key) + `
cert = ` + q(f.cert) + `
`,
			check: func(t *testing.T, c *Config) {
				var got []int
				for _, vs := range c.VirtualServices {
					for _, cert := range vs.TLS.Certificates {
						got = append(got, cert.Line)
					}
				}
				if want := []int{7, 9, 14, 20, 23}; !reflect.DeepEqual(got, want) {
					t.Errorf("lines %v, want %v", got, want)
				}
				if v := c.VirtualServices[1].TLS.MinVersion; v != "1.3" {
					t.Errorf("min_version %q", v)
				}
			},
		},
		{
			name: "every key valid",
			input: `[[virtual_service]]
name = "web"
listen = ["127.0.0.1:443", "[::1]:443"]
[virtual_service.tls]
certificates = [` + pair + `]
min_version = "1.3"
alpn = "http/1.1"
http3 = false
client_auth = "request"
client_ca = ` + q(f.cert) + `
redirect_http = "127.0.0.1:80"
[[virtual_service.real_server]]
address = "10.0.0.1:443"
tls = true
tls_server_name = "10.0.0.1"
tls_ca = ` + q(f.cert) + `
protocol = "http/1.1"
[[virtual_service.real_server]]
address = "10.0.0.2:443"
tls = true
tls_server_name = "web_2.internal.example.com"
tls_verify = false
tls_ca = ""
[[virtual_service.real_server]]
address = "10.0.0.3:80"
tls_server_name = ""
tls_ca = ""
[[virtual_service]]
name = "redirected-elsewhere"
listen = "127.0.0.2:80"
tls = { certificates = [` + pair + `], redirect_http = "", client_ca = "" }
real_server = [{ address = "10.0.0.1:80" }]
`,
			check: func(t *testing.T, c *Config) {
				tl := c.VirtualServices[0].TLS
				if tl.ClientAuth != "request" || tl.RedirectHTTP != "127.0.0.1:80" || !reflect.DeepEqual(tl.ALPN, []string{"http/1.1"}) {
					t.Errorf("got %+v", tl)
				}
			},
		},
		{
			name: "tls keys without certificates",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:443"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.tls]
min_version = "1.3"
[[virtual_service]]
name = "empty"
listen = "127.0.0.1:444"
real_server = [{ address = "10.0.0.1:80" }]
tls = { certificates = [] }
[[virtual_service]]
name = "bare"
listen = "127.0.0.1:445"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.tls]
`,
			want: []string{
				`lb.toml:5: virtual_service.tls.certificates: required when [virtual_service.tls] is present: one or more { cert = "site.pem", key = "site.key" } (virtual_service "web")`,
				`lb.toml:11: virtual_service.tls.certificates: required when [virtual_service.tls] is present: one or more { cert = "site.pem", key = "site.key" } (virtual_service "empty")`,
				`lb.toml:16: virtual_service.tls.certificates: required when [virtual_service.tls] is present: one or more { cert = "site.pem", key = "site.key" } (virtual_service "bare")`,
			},
		},
		{
			name: "certificates: each problem at its line",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:443"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.tls]
certificates = [
  ` + pair + `,
  { cert = ` + q(f.cert) + ` },
  { key = ` + q(f.key) + ` },
  { cert = ` + q(f.cert) + `, key = ` + q(f.otherKey) + ` },
  { cert = ` + q(f.expired) + `, key = ` + q(f.expiredK) + ` },
  { cert = ` + q(f.future) + `, key = ` + q(f.futureK) + ` },
  { cert = ` + q(f.missing) + `, key = ` + q(f.key) + ` },
  { cert = ` + q(f.dir) + `, key = ` + q(f.key) + ` },
  { cert = ` + q(f.key) + `, key = ` + q(f.cert) + ` },
  { cert = ` + q(f.garbage) + `, key = ` + q(f.key) + ` },
  { cert = ` + q(f.cert) + `, key = ` + q(f.garbage) + ` },
  { cert = "", key = "", pem = "x" },
  "a.pem",
]
`,
			want: []string{
				`lb.toml:8: virtual_service.tls.certificates.key: required: the PEM file of the certificate's private key (virtual_service "web", certificates #2)`,
				`lb.toml:9: virtual_service.tls.certificates.cert: required: the PEM file of the certificate chain (virtual_service "web", certificates #3)`,
				`lb.toml:10: virtual_service.tls.certificates.cert: cannot load the certificate and key: tls: private key does not match public key (virtual_service "web", certificates #4)`,
				fmt.Sprintf(`lb.toml:11: virtual_service.tls.certificates.cert: %q expired on %s (virtual_service "web", certificates #5)`, f.expired, f.expiredUntil.Format(timeFormat)),
				fmt.Sprintf(`lb.toml:12: virtual_service.tls.certificates.cert: %q is not valid until %s (virtual_service "web", certificates #6)`, f.future, f.futureFrom.Format(timeFormat)),
				`lb.toml:13: virtual_service.tls.certificates.cert: cannot load the certificate and key: stat ` + f.missing + `: no such file or directory (virtual_service "web", certificates #7)`,
				`lb.toml:14: virtual_service.tls.certificates.cert: cannot load the certificate and key: ` + f.dir + ` is not a regular file (virtual_service "web", certificates #8)`,
				`lb.toml:15: virtual_service.tls.certificates.cert: cannot load the certificate and key: tls: failed to find certificate PEM data in certificate input, but did find a private key; PEM inputs may have been switched (virtual_service "web", certificates #9)`,
				`lb.toml:16: virtual_service.tls.certificates.cert: cannot load the certificate and key: tls: failed to find any PEM data in certificate input (virtual_service "web", certificates #10)`,
				`lb.toml:17: virtual_service.tls.certificates.cert: cannot load the certificate and key: tls: failed to find any PEM data in key input (virtual_service "web", certificates #11)`,
				`lb.toml:18: virtual_service.tls.certificates.pem: unknown key "pem" (did you mean "key"?) (virtual_service "web", certificates #12)`,
				`lb.toml:18: virtual_service.tls.certificates.cert: required: the PEM file of the certificate chain (virtual_service "web", certificates #12)`,
				`lb.toml:18: virtual_service.tls.certificates.key: required: the PEM file of the certificate's private key (virtual_service "web", certificates #12)`,
				`lb.toml:19: virtual_service.tls.certificates: expected table, got string "a.pem" (virtual_service "web", certificates #13)`,
			},
		},
		{
			name: "versions, alpn and http3",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:443"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.tls]
certificates = [` + pair + `]
min_version = "1.1"
alpn = [
  "h2",
  "http/1.1",
  "http/1.1",
  "spdy/3",
  "h2",
]
http3 = true # fine
[[virtual_service]]
name = "web2"
listen = "127.0.0.1:444"
real_server = [{ address = "10.0.0.1:80" }]
tls = { certificates = [` + pair + `], min_version = 1.2, alpn = [] }
[[virtual_service]]
name = "web3"
listen = "127.0.0.1:445"
real_server = [{ address = "10.0.0.1:80" }]
tls = { certificates = [` + pair + `], alpn = ["h2"] } # accepted: HTTP/2 clients only
`,
			want: []string{
				`lb.toml:7: virtual_service.tls.min_version: must be 1.2 or 1.3, got "1.1" (virtual_service "web")`,
				`lb.toml:11: virtual_service.tls.alpn: "http/1.1" is listed twice (also at line 10) (virtual_service "web")`,
				`lb.toml:12: virtual_service.tls.alpn: must be http/1.1 or h2, got "spdy/3" (virtual_service "web")`,
				`lb.toml:13: virtual_service.tls.alpn: "h2" is listed twice (also at line 9) (virtual_service "web")`,
				`lb.toml:20: virtual_service.tls.min_version: expected string, got float 1.2 (virtual_service "web2")`,
				`lb.toml:20: virtual_service.tls.alpn: must list at least one protocol: ["h2", "http/1.1"] (virtual_service "web2")`,
			},
		},
		{
			name: "client certificates",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:443"
real_server = [{ address = "10.0.0.1:80" }]
tls = { certificates = [` + pair + `], client_auth = "require" }
[[virtual_service]]
name = "b"
listen = "127.0.0.1:444"
real_server = [{ address = "10.0.0.1:80" }]
tls = { certificates = [` + pair + `], client_ca = ` + q(f.cert) + ` }
[[virtual_service]]
name = "c"
listen = "127.0.0.1:445"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.tls]
certificates = [` + pair + `]
client_auth = "optional"
client_ca = ` + q(f.keyOnly) + `
[[virtual_service]]
name = "d"
listen = "127.0.0.1:446"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.tls]
certificates = [` + pair + `]
client_auth = "request"
client_ca = ` + q(f.caWithBadCert) + `
[[virtual_service]]
name = "e"
listen = "127.0.0.1:447"
real_server = [{ address = "10.0.0.1:80" }]
[virtual_service.tls]
certificates = [` + pair + `]
client_auth = "require"
client_ca = ` + q(f.missing) + `
`,
			want: []string{
				`lb.toml:5: virtual_service.tls.client_ca: required for client_auth require: a PEM file of the CAs that client certificates must chain to (virtual_service "a")`,
				`lb.toml:10: virtual_service.tls.client_ca: used only with client_auth request or require (virtual_service "b")`,
				`lb.toml:17: virtual_service.tls.client_auth: must be none, request or require, got "optional" (virtual_service "c")`,
				`lb.toml:18: virtual_service.tls.client_ca: cannot load the CA certificates: ` + f.keyOnly + ` holds no PEM certificate (-----BEGIN CERTIFICATE-----) (virtual_service "c")`,
				`lb.toml:26: virtual_service.tls.client_ca: cannot load the CA certificates: ` + f.caWithBadCert + `: certificate #1: x509: malformed certificate (virtual_service "d")`,
				`lb.toml:34: virtual_service.tls.client_ca: cannot load the CA certificates: stat ` + f.missing + `: no such file or directory (virtual_service "e")`,
			},
		},
		{
			name: "redirect_http",
			input: `[[virtual_service]]
name = "a"
listen = "127.0.0.1:443"
real_server = [{ address = "10.0.0.1:80" }]
tls = { certificates = [` + pair + `], redirect_http = "127.0.0.1:443" }
[[virtual_service]]
name = "b"
listen = "127.0.0.2:443"
real_server = [{ address = "10.0.0.1:80" }]
tls = { certificates = [` + pair + `], redirect_http = "0.0.0.0:80" }
[[virtual_service]]
name = "c"
listen = ["127.0.0.3:80", "127.0.0.3:443"]
real_server = [{ address = "10.0.0.1:80" }]
tls = { certificates = [` + pair + `], redirect_http = "www.example.com:80" }
[[virtual_service]]
name = "d"
listen = "127.0.0.4:443"
real_server = [{ address = "10.0.0.1:80" }]
tls = { certificates = [` + pair + `], redirect_http = "[::1]:8080" }
[admin]
listen = "[::1]:8080"
user = [{ name = "admin", password_hash = "$2a$10$NfeWewPVXxcLNko9c8K9Fu.nT5LoKsTq6V1giBA1lO0tf4FQy.vXK" }]
`,
			want: []string{
				`lb.toml:5: virtual_service.tls.redirect_http: "127.0.0.1:443" is already used by virtual_service "a" at line 3 (virtual_service "a")`,
				`lb.toml:13: virtual_service.listen: "127.0.0.3:80" overlaps "0.0.0.0:80" (every IPv4 address) of virtual_service "b" (tls.redirect_http) at line 10 (virtual_service "c")`,
				`lb.toml:15: virtual_service.tls.redirect_http: invalid address "www.example.com:80": host must be an IP address, not a hostname (virtual_service "c")`,
				`lb.toml:22: admin.listen: "[::1]:8080" is already used by virtual_service "d" (tls.redirect_http) at line 20`,
			},
		},
		{
			name: "tls = true on a service, as on a real server",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:443"
tls = true
real_server = [{ address = "10.0.0.1:80" }]
`,
			want: []string{
				`lb.toml:4: virtual_service.tls: expected table ([virtual_service.tls]), got boolean true (virtual_service "web")`,
			},
		},
		{
			name: "tcp mode",
			input: `[[virtual_service]]
name = "db"
listen = "127.0.0.1:5432"
mode = "tcp"
[virtual_service.tls]
certificates = [` + pair + `]
[[virtual_service.real_server]]
address = "10.0.0.1:5432"
tls = true
protocol = "http/1.1"
`,
			want: []string{
				`lb.toml:10: virtual_service.real_server.protocol: used only in http mode: a tcp service forwards bytes as they are (virtual_service "db", real_server "10.0.0.1:5432")`,
			},
		},
		{
			name: "tcp mode, ALPN and RDP",
			input: `[[virtual_service]]
name = "rdp"
listen = "127.0.0.1:3389"
mode = "tcp"
scheduler = "rdp_cookie"
[virtual_service.tls]
certificates = [` + pair + `]
alpn = ["h2"]
[[virtual_service.real_server]]
address = "10.0.0.1:3389"
`,
			want: []string{
				`lb.toml:6: virtual_service.tls: cannot be combined with rdp_cookie: RDP starts in clear and negotiates its own TLS; leave [virtual_service.tls] out (virtual_service "rdp")`,
				`lb.toml:8: virtual_service.tls.alpn: used only in http mode: a tcp service passes the decrypted bytes on and offers no ALPN (virtual_service "rdp")`,
			},
		},
		{
			name: "http3 in tcp mode",
			input: `[[virtual_service]]
name = "db"
listen = "127.0.0.1:5432"
mode = "tcp"
[virtual_service.tls]
certificates = [` + pair + `]
http3 = true
[[virtual_service.real_server]]
address = "10.0.0.1:5432"
[[virtual_service]]
name = "web"
listen = "127.0.0.1:443"
real_server = [{ address = "10.0.0.1:80" }]
tls = { certificates = [` + pair + `], alpn = ["http/1.1"], http3 = true } # accepted: HTTP/3 and HTTP/1.1
`,
			want: []string{
				`lb.toml:7: virtual_service.tls.http3: used only in http mode: HTTP/3 carries HTTP requests, which a tcp service does not read; leave http3 out (virtual_service "db")`,
			},
		},
		{
			name: "h2 in tcp mode",
			input: `[[virtual_service]]
name = "grpc"
listen = "127.0.0.1:50051"
mode = "tcp"
[[virtual_service.real_server]]
address = "10.0.0.1:50051"
protocol = "h2"
`,
			want: []string{
				`lb.toml:7: virtual_service.real_server.protocol: "h2" is used only in http mode: a tcp service forwards the bytes as they are, HTTP/2 included; leave protocol out (virtual_service "grpc", real_server "10.0.0.1:50051")`,
			},
		},
		{
			name: "h2 real servers",
			input: `[[virtual_service]]
name = "grpc"
listen = "127.0.0.1:50051"
[[virtual_service.real_server]]
name = "h2c"
address = "10.0.0.1:50051"
protocol = "h2" # prior knowledge (RFC 9113 §3.3)
[[virtual_service.real_server]]
name = "h2"
address = "10.0.0.2:50051"
tls = true
tls_verify = false
protocol = "h2" # ALPN
`,
		},
		{
			name: "tcp mode terminates and re-encrypts",
			input: `[[virtual_service]]
name = "imaps"
listen = "127.0.0.1:993"
mode = "tcp"
[virtual_service.tls]
certificates = [` + pair + `]
client_auth = "none"
[[virtual_service.real_server]]
address = "10.0.0.1:993"
tls = true
tls_verify = false
`,
		},
		{
			name: "real servers",
			input: `[[virtual_service]]
name = "web"
listen = "127.0.0.1:80"
[[virtual_service.real_server]]
name = "plain"
address = "10.0.0.1:80"
tls_server_name = "web1.example.com"
tls_verify = false
tls_ca = ` + q(f.cert) + `
protocol = "h2"
[[virtual_service.real_server]]
name = "tls"
address = "10.0.0.2:443"
tls = true
tls_server_name = "-web2.example.com"
tls_ca = ` + q(f.garbage) + `
protocol = "HTTP/1.1"
[[virtual_service.real_server]]
name = "noverify"
address = "10.0.0.3:443"
tls = true
tls_verify = false
tls_ca = ` + q(f.cert) + `
tls_server_name = "web3.example.com:443"
[[virtual_service.real_server]]
name = "typed"
address = "10.0.0.4:443"
tls = "yes"
tls_verify = 1
`,
			want: []string{
				`lb.toml:7: virtual_service.real_server.tls_server_name: used only with tls = true (virtual_service "web", real_server "plain")`,
				`lb.toml:8: virtual_service.real_server.tls_verify: used only with tls = true (virtual_service "web", real_server "plain")`,
				`lb.toml:9: virtual_service.real_server.tls_ca: used only with tls = true (virtual_service "web", real_server "plain")`,
				`lb.toml:15: virtual_service.real_server.tls_server_name: "-web2.example.com" is not a host name or IP address: label "-web2" starts or ends with '-' (virtual_service "web", real_server "tls")`,
				`lb.toml:16: virtual_service.real_server.tls_ca: cannot load the CA certificates: ` + f.garbage + ` holds no PEM certificate (-----BEGIN CERTIFICATE-----) (virtual_service "web", real_server "tls")`,
				`lb.toml:17: virtual_service.real_server.protocol: must be http/1.1 or h2, got "HTTP/1.1" (virtual_service "web", real_server "tls")`,
				`lb.toml:23: virtual_service.real_server.tls_ca: used only with tls_verify = true: nothing is verified (virtual_service "web", real_server "noverify")`,
				`lb.toml:24: virtual_service.real_server.tls_server_name: "web3.example.com:443" is not a host name or IP address: give the name without a port (virtual_service "web", real_server "noverify")`,
				`lb.toml:28: virtual_service.real_server.tls: expected boolean (true or false), got string "yes" (virtual_service "web", real_server "typed")`,
				`lb.toml:29: virtual_service.real_server.tls_verify: expected boolean (true or false), got integer 1 (virtual_service "web", real_server "typed")`,
			},
		},
	}
	runParseTests(t, tests)
}

func TestCheckServerName(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // "" for valid
	}{
		{"a name", "www.example.com", ""},
		{"one label", "backend", ""},
		{"digits and underscore", "web_1.dc-2.example.com", ""},
		{"IPv4", "10.0.0.1", ""},
		{"IPv6", "2001:db8::1", ""},
		{"IPv6 in brackets", "[2001:db8::1]", `"[2001:db8::1]" is not a host name or IP address: write an IPv6 address without brackets`},
		{"IPv6 with a zone", "fe80::1%eth0", `"fe80::1%eth0": an IP address with a zone cannot be verified; leave out "%eth0"`},
		{"a port", "www.example.com:443", `"www.example.com:443" is not a host name or IP address: give the name without a port`},
		{"a trailing dot", "www.example.com.", `"www.example.com." is not a host name or IP address: it has an empty label`},
		{"a leading dot", ".example.com", `".example.com" is not a host name or IP address: it has an empty label`},
		{"a hyphen at the end", "www-.example.com", `"www-.example.com" is not a host name or IP address: label "www-" starts or ends with '-'`},
		{"a wildcard", "*.example.com", `"*.example.com" is not a host name or IP address: use letters, digits, '-' and '.' (write names in punycode)`},
		{"a blank", "www example.com", `"www example.com" is not a host name or IP address: use letters, digits, '-' and '.' (write names in punycode)`},
		{"non-ASCII", "bücher.example", `"bücher.example" is not a host name or IP address: use letters, digits, '-' and '.' (write names in punycode)`},
		{"a long label", strings.Repeat("a", 64) + ".example.com", fmt.Sprintf(`%q is not a host name or IP address: label %q is longer than 63 characters`, strings.Repeat("a", 64)+".example.com", strings.Repeat("a", 64))},
		{"63 is fine", strings.Repeat("a", 63) + ".example.com", ""},
		{"too long", strings.Repeat("a.", 127) + "ab", fmt.Sprintf(`%q is not a host name or IP address: longer than 253 characters`, strings.Repeat("a.", 127)+"ab")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkServerName(tt.in); got != tt.want {
				t.Errorf("checkServerName(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestCheckValidity drives the validity check with a clock of its own, at
// and around the edges of the validity period.
func TestCheckValidity(t *testing.T) {
	from := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	until := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	certPEM, keyPEM := newKeyPair(t, "www.example.com", from, until)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	noLeaf := pair
	noLeaf.Leaf = nil // as from an older tls.LoadX509KeyPair
	tests := []struct {
		name string
		now  time.Time
		want string
	}{
		{"valid", from.Add(time.Hour), ""},
		{"from its first second", from, ""},
		{"to its last second", until, ""},
		{"expired", until.Add(time.Second), `"site.pem" expired on 2026-01-01 00:00:00 UTC`},
		{"not yet valid", from.Add(-time.Second), `"site.pem" is not valid until 2025-01-01 00:00:00 UTC`},
		{"not yet valid, in another zone", from.In(time.FixedZone("X", 3600)).Add(-time.Second), `"site.pem" is not valid until 2025-01-01 00:00:00 UTC`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range []tls.Certificate{pair, noLeaf} {
				if got := checkValidity("site.pem", p, tt.now); got != tt.want {
					t.Errorf("leaf %v: got %q, want %q", p.Leaf != nil, got, tt.want)
				}
			}
		})
	}
}

// TestLoadCAs checks the CA file loader of client_ca and tls_ca: every
// certificate of a bundle counts, other PEM blocks are skipped.
func TestLoadCAs(t *testing.T) {
	f := newTLSFiles(t)
	a, _ := os.ReadFile(f.cert)
	b, _ := os.ReadFile(f.expired)
	k, _ := os.ReadFile(f.key)
	bundle := filepath.Join(f.dir, "bundle.pem")
	writeFile(t, bundle, append(append(append([]byte("# a comment\n"), a...), k...), b...))

	pool, err := loadCAs(bundle)
	if err != nil {
		t.Fatal(err)
	}
	// Exactly the two certificates are in the pool (the key is skipped).
	want := x509.NewCertPool()
	for _, b := range [][]byte{a, b} {
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		want.AddCert(c)
	}
	if !pool.Equal(want) {
		t.Error("the pool does not hold exactly the two certificates")
	}
	if _, err := loadCAs("/dev/null"); err == nil || !strings.Contains(err.Error(), "/dev/null is not a regular file") {
		t.Errorf("/dev/null: got %v", err)
	}
}
