// Package config reads Fulcrum's TOML configuration file into typed values,
// applies defaults and validates it, reporting every problem at once with the
// file, line and key it concerns.
package config

import (
	"net/netip"
	"regexp"
	"runtime"
	"strconv"
	"time"
)

// Config is one parsed and validated configuration file.
type Config struct {
	// File is the path the configuration was read from (or the name given to
	// Parse). It prefixes every problem report.
	File string `toml:"-"`

	Global          Global            `toml:"global"`
	Admin           Admin             `toml:"admin"`
	VirtualServices []*VirtualService `toml:"virtual_service"`
	HA              HA                `toml:"ha"`
}

// Admin is the admin API, web UI and /metrics listener. It is off when
// Listen is empty (the [admin] table is absent).
type Admin struct {
	// Listen is the admin address ("127.0.0.1:9080"). Empty means off.
	Listen string `toml:"listen"`
	// TLSCert and TLSKey are PEM files; with both set the admin listener
	// speaks HTTPS only. Give both or neither. Relative paths are from the
	// working directory; the pair is loaded when the file is validated, so
	// `fulcrum check` finds a bad one.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// MetricsAuth requires a user's credentials for /metrics as for the
	// API. If absent, true; false lets any client on the admin address
	// scrape it.
	MetricsAuth bool `toml:"metrics_auth"`
	// Users may log in; at least one is required when Listen is set.
	Users []*AdminUser `toml:"user"`

	// Line is the line of the [admin] header (zero if absent).
	Line int `toml:"-"`
}

// AdminUser is one account of the admin API and web UI.
type AdminUser struct {
	// Name is the login name; required, unique.
	Name string `toml:"name"`
	// PasswordHash is a bcrypt hash ("$2a$…", "$2b$…"), as printed by
	// `fulcrum hash-password`. Required.
	PasswordHash string `toml:"password_hash"`

	// Line is the line of the user's [[admin.user]] header, or of its
	// inline table (zero if not parsed from a file).
	Line int `toml:"-"`
}

// Global holds process-wide settings.
type Global struct {
	// LogLevel is one of debug, info, warn, error. If absent, info.
	LogLevel string `toml:"log_level"`
	// LogFormat is console or json. If absent, console.
	LogFormat string `toml:"log_format"`
	// AccessLog logs one line per HTTP request or TCP connection. If absent, true.
	AccessLog bool `toml:"access_log"`
	// Grace is how long a stopping process lets in-flight requests finish.
	// If absent, 30s; zero stops at once.
	Grace time.Duration `toml:"grace"`
	// EventLoops is how many event loops serve plain (not TLS) HTTP/1.1
	// clients; 0 serves each client connection with its own goroutine.
	// If absent, one per CPU (DefaultEventLoops).
	EventLoops int `toml:"event_loops"`
}

// cpus is GOMAXPROCS as the process started (the CPUs it may use, or its
// container's CPU limit), before the event loops raise it.
var cpus = runtime.GOMAXPROCS(0)

// CPUs returns how many CPUs the process may use: GOMAXPROCS as it
// started.
func CPUs() int { return cpus }

// DefaultEventLoops is Global.EventLoops when absent: one per CPU, as
// HAProxy runs one thread per CPU. A loop takes a CPU only while it has
// work; the goroutines of TLS, HTTP/2, health checks and the rest are
// scheduled beside the loops.
func DefaultEventLoops() int { return CPUs() }

// Modes of a virtual service.
const (
	ModeHTTP = "http" // L7 HTTP/1.1 full proxy
	ModeTCP  = "tcp"  // L7 TCP proxy (bytes both ways)
	// The L4 modes: the kernel's IPVS forwards the packets and Fulcrum
	// only programs it (package l4).
	ModeDR  = "dr"  // direct routing: only the destination MAC is rewritten
	ModeNAT = "nat" // IPVS masquerading: destination address and port rewritten
	ModeTUN = "tun" // IP-in-IP tunnelling (RFC 2003) to the real server
)

// IsL4Mode reports whether mode is one the kernel's IPVS forwards (dr, nat,
// tun) rather than the userspace proxy (http, tcp).
func IsL4Mode(mode string) bool { return mode == ModeDR || mode == ModeNAT || mode == ModeTUN }

// Transport protocols of an L4 virtual service (virtual_service.protocol).
const (
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// VirtualService is a VIP:port (one or more listen addresses) spreading
// clients over its real servers.
type VirtualService struct {
	// Name identifies the service in logs, metrics and the admin API.
	// Required; unique; letters, digits, '-', '_' and '.'.
	Name string `toml:"name"`
	// Listen holds the VIP:port addresses ("127.0.0.1:8080", "[::1]:8080",
	// or ":8080" for every address). Hosts are IP literals, not hostnames.
	// No two addresses, in this or another service, may overlap, as
	// "0.0.0.0:80" and "127.0.0.1:80" do. The file may give one string or a
	// list. Required.
	Listen []string `toml:"listen"`
	// Mode is http or tcp (the userspace proxy), or dr, nat or tun (the
	// kernel's IPVS: see IsL4Mode). If absent, http.
	Mode string `toml:"mode"`
	// Protocol is the transport protocol of an L4 service: tcp or udp. If
	// absent, tcp in the L4 modes and "" in the others, where it is refused.
	// (real_server.protocol is another key: what an http service speaks.)
	Protocol string `toml:"protocol"`
	// Scheduler names the balancing algorithm (see balancer.Names). If
	// absent, round_robin.
	Scheduler string `toml:"scheduler"`
	// ForwardedFor appends X-Forwarded-For and sets X-Forwarded-Proto,
	// -Host and -Port in http mode. If absent, true.
	ForwardedFor bool `toml:"forwarded_for"`
	// ForwardedHeader also adds the RFC 7239 Forwarded field (http mode).
	// If absent, false.
	ForwardedHeader bool `toml:"forwarded_header"`
	// AcceptProxy has the listeners expect a PROXY protocol header (v1 or
	// v2) before anything else on every connection, from a peer in
	// TrustedProxies; the header's source address is then the client's.
	AcceptProxy bool `toml:"accept_proxy"`
	// TrustedProxies lists the peers ("10.0.0.0/8", "192.0.2.7",
	// "2001:db8::/32") that may send a PROXY header, and whose
	// X-Forwarded-For is believed. Required with AcceptProxy.
	TrustedProxies []string `toml:"trusted_proxies"`
	// Transparent connects to real servers from the client's own address
	// (TPROXY: IP_TRANSPARENT), so that they see it as the source. Needs
	// CAP_NET_ADMIN and routing that brings the replies back (README).
	Transparent bool `toml:"transparent"`
	// Trusted holds TrustedProxies parsed; set by Load and Parse.
	Trusted []netip.Prefix `toml:"-"`
	// MaxConns bounds concurrent client connections; further clients wait
	// in the kernel's accept backlog. Zero means unlimited.
	MaxConns int `toml:"max_conns"`
	// Retries is how many times a failed connect is retried on another real
	// server, at most 100. If absent, 2; zero never retries.
	Retries int `toml:"retries"`
	// QueueTimeout is how long a request may wait for a free real server
	// slot when every real server is at its max_conns. If absent, 5s; zero
	// fails at once.
	QueueTimeout time.Duration `toml:"queue_timeout"`

	// HashHeader names the request header the header_hash scheduler
	// hashes ("X-User"): a field name (RFC 9110 §5.1). Required for that
	// scheduler and reported with any other.
	HashHeader string `toml:"hash_header"`

	// Allow lists the client addresses or CIDRs ("192.0.2.0/24",
	// "2001:db8::1") allowed in (http mode), tested on the request's
	// client (after trusted_proxies); a client outside every entry gets
	// 403. Empty allows every client.
	Allow []string `toml:"allow"`
	// Deny lists client addresses or CIDRs that get 403 (http mode),
	// tested after Allow.
	Deny []string `toml:"deny"`
	// AllowNets and DenyNets hold Allow and Deny parsed; set by Load and
	// Parse.
	AllowNets []netip.Prefix `toml:"-"`
	DenyNets  []netip.Prefix `toml:"-"`
	// Compress gzips responses of compressible types (text/*, JSON,
	// JavaScript, XML, SVG) of at least MinCompressSize bytes for clients
	// that accept gzip (http mode). If absent, false.
	Compress bool `toml:"compress"`
	// Fallback is the "sorry server" (IP:port, plain HTTP/1.1) that
	// answers while no real server of this service (pool) is available.
	// Empty means none: such requests get 503.
	Fallback string `toml:"fallback"`
	// RateLimit bounds each client's request rate (http mode).
	RateLimit RateLimit `toml:"rate_limit"`
	// Routes send requests to other virtual services (pools: services
	// without listen) or answer them with a redirect; the first that
	// matches wins, in file order, and a request none matches goes to this
	// service's own real servers (http mode, listening services only).
	Routes []*Route `toml:"route"`
	// RequestHeaders changes the request's header fields before it goes
	// to a real server; ResponseHeaders the response's before it goes to
	// the client (http mode). On a pool they apply after those of the
	// listening service.
	RequestHeaders  HeaderRules `toml:"request_headers"`
	ResponseHeaders HeaderRules `toml:"response_headers"`

	Timeouts    Timeouts      `toml:"timeouts"`
	HealthCheck HealthCheck   `toml:"health_check"`
	Persistence Persistence   `toml:"persistence"`
	TLS         TLS           `toml:"tls"`
	RealServers []*RealServer `toml:"real_server"`

	// Line is the line of the service's [[virtual_service]] header (zero
	// if the Config was not parsed from a file).
	Line int `toml:"-"`
}

// Timeouts of a virtual service. Each must be > 0.
type Timeouts struct {
	// Connect bounds one TCP connect to a real server. If absent, 5s.
	Connect time.Duration `toml:"connect"`
	// Client is how long an idle client connection is kept (between
	// requests, or with no bytes either way in tcp mode). If absent, 60s.
	Client time.Duration `toml:"client"`
	// ClientHeader bounds the arrival of a whole request head, from its first
	// byte (slowloris). If absent, 10s.
	ClientHeader time.Duration `toml:"client_header"`
	// Server bounds the wait for, and between, response bytes from a real
	// server (with no bytes either way in tcp mode). If absent, 60s.
	Server time.Duration `toml:"server"`
}

// RateLimit is a token bucket per client address: Requests per Per, plus
// Burst requests more in a burst. A request beyond it gets 429 with
// Retry-After. The limiter's table is bounded (MaxRateLimitClients), so a
// flood of distinct addresses cannot grow memory.
type RateLimit struct {
	// Requests is the steady rate, per Per; 0 turns the limit off.
	Requests int `toml:"requests"`
	// Per is the window Requests is counted over; > 0. If absent, 1s.
	Per time.Duration `toml:"per"`
	// Burst is how many requests beyond Requests a client that was quiet
	// may make at once. If absent, 0.
	Burst int `toml:"burst"`
}

// Route is one content-switching rule. Every condition given must hold;
// a route with none matches every request. Exactly one of To and Redirect
// is required.
type Route struct {
	// Name labels the route in the access log and the API. If empty,
	// "#N", N being its position in file order from 1.
	Name string `toml:"name"`
	// Host matches the request's host (without port, case-insensitively):
	// exact ("api.example.com"), or "*.example.com" for any name ending in
	// ".example.com".
	Host string `toml:"host"`
	// PathPrefix matches paths that start with it ("/v1/").
	PathPrefix string `toml:"path_prefix"`
	// PathRegex is a regular expression (RE2) the path must match
	// somewhere; anchor it with ^ as needed. Not with PathPrefix.
	PathRegex string `toml:"path_regex"`
	// Methods, if not empty, lists the request methods that match.
	Methods []string `toml:"methods"`
	// Header is "Name: value": the request must carry the field with a
	// value that the value, a regular expression, matches whole. "Name"
	// alone (or "Name:") asks only that the field be present.
	Header string `toml:"header"`
	// To names the pool (a virtual service without listen) that serves the
	// requests this route matches.
	To string `toml:"to"`
	// StripPrefix removes PathPrefix from the path before forwarding
	// (leaving at least "/"). Needs PathPrefix and To.
	StripPrefix bool `toml:"strip_prefix"`
	// Redirect answers with a redirect to this URL ("https://host/new/")
	// followed by the rest of the path after PathPrefix (the whole path
	// without one) and the query.
	Redirect string `toml:"redirect"`
	// RedirectCode is 301, 302, 307 or 308. If absent, 302.
	RedirectCode int `toml:"redirect_code"`

	// Parsed by Load and Parse.
	PathRE      *regexp.Regexp `toml:"-"` // PathRegex compiled; nil without one
	HeaderName  string         `toml:"-"` // Header's field name, canonical (textproto)
	HeaderValue *regexp.Regexp `toml:"-"` // Header's value anchored ^(?:…)$; nil: presence only

	// Line is the line of the route's [[virtual_service.route]] header
	// (zero if not parsed from a file).
	Line int `toml:"-"`
}

// HeaderRules sets and removes header fields. Remove runs first, so a
// field both removed and set ends with the set value.
type HeaderRules struct {
	// Set replaces each named field with the value (adding it if absent).
	Set map[string]string `toml:"set"`
	// Remove deletes each named field.
	Remove []string `toml:"remove"`
}

// RealServer is one RIP:port behind a virtual service.
type RealServer struct {
	// Name identifies the real server within its service; unique within
	// it. If empty, the address.
	Name string `toml:"name"`
	// Address is the real server's IP:port ("10.0.0.1:80", "[2001:db8::1]:80");
	// unique within the service. Required.
	Address string `toml:"address"`
	// Weight is the server's share relative to the others; 0 takes no new
	// traffic. If absent, 1. At most MaxWeight.
	Weight int `toml:"weight"`
	// MaxConns bounds concurrent requests (http) or connections (tcp) to
	// this server; the excess queues. Zero means unlimited.
	MaxConns int `toml:"max_conns"`
	// TLS re-encrypts the connections to this real server (http and tcp
	// mode). If absent, false: plain TCP.
	TLS bool `toml:"tls"`
	// TLSServerName is the name sent in SNI and verified in the real
	// server's certificate: a DNS name, or an IP address, which is verified
	// against the certificate's IP addresses and not sent in SNI (RFC 6066
	// §3). If empty, the address's IP. Used only with TLS.
	TLSServerName string `toml:"tls_server_name"`
	// TLSVerify verifies the real server's certificate against the system
	// roots, or TLSCA. If absent, true. Used only with TLS.
	TLSVerify bool `toml:"tls_verify"`
	// TLSCA is a PEM file of the CA certificates to verify against instead
	// of the system roots; relative paths are from the working directory.
	// If empty, the system roots. Used only with TLS and TLSVerify.
	TLSCA string `toml:"tls_ca"`
	// Protocol is what the proxy speaks to the real server (http mode),
	// whichever protocol the client speaks: http/1.1, or h2 (HTTP/2, for
	// gRPC: negotiated by ALPN with TLS, prior knowledge without). If
	// absent, http/1.1.
	Protocol string `toml:"protocol"`
	// State is the server's admin state at start: ready, drain or
	// maintenance. If absent, ready. A state set at run time (admin API)
	// survives reloads unless this value changes in the file.
	State string `toml:"state"`
	// SendProxy sends a PROXY protocol header ("v1" or "v2") with the
	// client's addresses first on every connection to this real server; v2
	// carries TLS details as TLVs when the service terminated TLS. If
	// empty, none.
	SendProxy string `toml:"send_proxy"`

	// Line is the line of the server's [[virtual_service.real_server]]
	// header, or of its inline table (zero if not parsed from a file).
	Line int `toml:"-"`
}

// Health check types.
const (
	CheckTCP        = "tcp"         // a TCP connect
	CheckHTTP       = "http"        // an HTTP/1.1 request; status (and body) checked
	CheckHTTPS      = "https"       // the same over TLS
	CheckSendExpect = "send_expect" // send bytes, match a regexp in the reply
	CheckNone       = "none"        // no active check: always up
)

// Admin states of a real server (the operational state, up or down, is the
// health checks' business and kept apart).
const (
	StateReady       = "ready"       // takes traffic
	StateDrain       = "drain"       // no new clients; persistent ones and established connections continue
	StateMaintenance = "maintenance" // no traffic at all
)

// HealthCheck configures the active check of every real server of a
// virtual service, and the passive observation of its traffic.
type HealthCheck struct {
	// Type is tcp, http, https, send_expect or none. If absent, tcp.
	Type string `toml:"type"`
	// Method is the http/https request method (GET or HEAD). If absent, GET.
	Method string `toml:"method"`
	// Path is the http/https request target; it starts with "/". If
	// absent, "/".
	Path string `toml:"path"`
	// Host is the http/https Host header (and TLS server name): a name or
	// IP, with an optional port ("www.example.com", "[::1]:8443"). If
	// empty, the real server's address.
	Host string `toml:"host"`
	// ExpectStatus lists the statuses that pass, as numbers, "lo-hi"
	// ranges or classes: [200, "300-399"], "2xx". The file may give one
	// value or a list. If absent, 200-399.
	ExpectStatus StatusRanges `toml:"expect_status"`
	// ExpectBody is a regular expression the http/https body (its first
	// 64 KiB) must match. Empty means any body.
	ExpectBody string `toml:"expect_body"`
	// Send is what a send_expect check writes after connecting (escapes such
	// as \r\n are TOML's). Empty sends nothing and only reads.
	Send string `toml:"send"`
	// Expect is the regular expression a send_expect reply must match.
	// Required for send_expect.
	Expect string `toml:"expect"`
	// TLSVerify makes an https check verify the real server's certificate
	// against the system roots. If absent, false (real servers often have
	// self-signed certificates).
	TLSVerify bool `toml:"tls_verify"`
	// Port checks this port instead of the real server's. Zero means the
	// real server's port.
	Port int `toml:"port"`
	// Interval is the time between the starts of two checks of one real
	// server; at least MinCheckInterval. If absent, 2s.
	Interval time.Duration `toml:"interval"`
	// Timeout bounds one check; at most Interval. If absent, 1s (or
	// Interval, if that is shorter).
	Timeout time.Duration `toml:"timeout"`
	// Rise is the consecutive successes that bring a down server up,
	// 1 to MaxRiseFall. If absent, 2.
	Rise int `toml:"rise"`
	// Fall is the consecutive failures that take an up server down,
	// 1 to MaxRiseFall. If absent, 3.
	Fall int `toml:"fall"`
	// AgentPort, if not zero, is polled every Interval for an agent reply
	// (HAProxy's agent-check protocol): up, down, drain, maint, ready, NN%,
	// weight:N, maxconn:N, #reason.
	AgentPort int `toml:"agent_port"`
	// SlowStart ramps a server's weight linearly from near zero to its full
	// weight over this time after it comes up. Zero means at once.
	SlowStart time.Duration `toml:"slow_start"`
	// ObserveErrors marks a real server down after this many consecutive
	// connect failures or 5xx responses in live traffic, until the active
	// check brings it back up, so it needs a Type other than none. Zero
	// means off.
	ObserveErrors int `toml:"observe_errors"`
}

// TLS terminates TLS on a virtual service's listen addresses (http mode
// only for now). It is on when Certificates is not empty; a present
// [virtual_service.tls] table must give at least one. File paths are
// relative to the working directory; every file is loaded when the
// configuration is validated, so `fulcrum check` finds a bad one.
type TLS struct {
	// Certificates are the PEM certificate chains and keys served; the one
	// for a connection is chosen by SNI (exact names, then wildcards, then
	// the first as default). Empty means TLS is off.
	Certificates []*Certificate `toml:"certificates"`
	// MinVersion is the lowest TLS version accepted: "1.2" or "1.3". If
	// absent, 1.2.
	MinVersion string `toml:"min_version"`
	// ALPN lists the protocols offered (RFC 7301), in order of preference:
	// "h2" (HTTP/2) and "http/1.1". A client that offers no ALPN speaks
	// HTTP/1.1. If absent, ["h2", "http/1.1"]; it may not be empty.
	ALPN []string `toml:"alpn"`
	// HTTP3 also serves HTTP/3 over QUIC on the same addresses (UDP),
	// announced by Alt-Svc on the TCP responses; http mode only. If
	// absent, false.
	HTTP3 bool `toml:"http3"`
	// ClientCA is a PEM file of the CAs that client certificates must chain
	// to. Required for ClientAuth request and require, refused with none.
	ClientCA string `toml:"client_ca"`
	// ClientAuth is none, request (verify a certificate if the client sends
	// one) or require (refuse a client without a valid one). If absent,
	// none.
	ClientAuth string `toml:"client_auth"`
	// RedirectHTTP, if not empty, is a plain-HTTP listen address, written
	// as a virtual service's listen, that answers every request with a
	// redirect to https. It may not overlap any other listen address.
	RedirectHTTP string `toml:"redirect_http"`
}

// Certificate is one PEM certificate chain and its private key (RSA or
// ECDSA), as tls.LoadX509KeyPair reads them. Both are required; the key
// must match the chain's first (leaf) certificate, which must be valid now.
type Certificate struct {
	// Cert is the PEM file of the certificate chain, leaf first.
	Cert string `toml:"cert"`
	// Key is the PEM file of Cert's private key.
	Key string `toml:"key"`

	// Line is the line of the certificate's inline table, or of its
	// [[virtual_service.tls.certificates]] header (zero if not parsed from
	// a file).
	Line int `toml:"-"`
}

// Protocols: ALPN identifiers (RFC 7301 §6) for tls.alpn, and what the
// proxy speaks to a real server for real_server.protocol.
const (
	ProtoHTTP1 = "http/1.1"
	ProtoH2    = "h2" // alpn only: refused for real_server.protocol until HTTP/2 to real servers lands
)

// Client certificate authentication (tls.client_auth).
const (
	ClientAuthNone    = "none"    // no certificate asked for
	ClientAuthRequest = "request" // asked for, verified if sent
	ClientAuthRequire = "require" // a valid one is required
)

// Persistence methods.
const (
	PersistNone      = "none"       // every request (connection) is scheduled
	PersistSourceIP  = "source_ip"  // the client's address (or subnet) sticks, http and tcp
	PersistCookie    = "cookie"     // an inserted, signed cookie names the real server (http)
	PersistAppCookie = "app_cookie" // the application's own session cookie is learned (http)
	PersistRDPCookie = "rdp_cookie" // the RDP routing token or mstshash user (tcp)
	PersistHeader    = "header"     // a request header's value sticks (http)
)

// Persistence ties a client to the real server it reached before. A key
// that the method does not use is reported rather than ignored.
type Persistence struct {
	// Method is none, source_ip (http and tcp), cookie, app_cookie, header
	// (http) or rdp_cookie (tcp). If absent, none.
	Method string `toml:"method"`
	// Timeout is the idle expiry of a stick-table entry (source_ip,
	// app_cookie, rdp_cookie, header); must be > 0. If absent, 30m. Method
	// cookie keeps no table: the cookie itself names the real server.
	Timeout time.Duration `toml:"timeout"`
	// CookieName is the inserted cookie's name (cookie; if absent,
	// "FULCRUM") or the application's session cookie to learn (app_cookie;
	// required, e.g. "JSESSIONID"). A token (RFC 6265 §4.1.1).
	CookieName string `toml:"cookie_name"`
	// CookieSecret signs inserted cookies (cookie); if given, at least
	// MinCookieSecret bytes. If absent, a random secret is made at start:
	// cookies then do not survive a restart and differ between the members
	// of an HA pair, so set it in production.
	CookieSecret string `toml:"cookie_secret"`
	// SourceMask is the IPv4 prefix length that sticks together (source_ip),
	// 1 to 32; 24 makes a whole /24 stick to one real server. If absent, 32.
	SourceMask int `toml:"source_mask"`
	// SourceMask6 is the same for IPv6, 1 to 128. If absent, 64 (one
	// client's network, which privacy addresses rotate within).
	SourceMask6 int `toml:"source_mask6"`
	// Header is the request header whose value sticks (header): a field
	// name (RFC 9110 §5.1). Required for it.
	Header string `toml:"header"`
	// MaxEntries bounds the stick table (source_ip, app_cookie, rdp_cookie,
	// header), 1 to MaxStickEntries; beyond it the least recently used entries
	// are evicted. If absent, 1000000.
	MaxEntries int `toml:"max_entries"`
	// InspectDelay bounds the wait for a tcp client's first bytes when they
	// are inspected (rdp_cookie persistence and the rdp_cookie scheduler,
	// the only users of this key), MinInspectDelay to MaxInspectDelay;
	// after it the connection is scheduled without them. If absent, 5s.
	InspectDelay time.Duration `toml:"inspect_delay"`
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Lo, Hi int }

// StatusRanges is a list of status ranges; a status passes if any holds it.
type StatusRanges []StatusRange

// Match reports whether code lies in one of the ranges.
func (r StatusRanges) Match(code int) bool {
	for _, x := range r {
		if x.Lo <= code && code <= x.Hi {
			return true
		}
	}
	return false
}

func (r StatusRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return strconv.Itoa(r.Lo) + "-" + strconv.Itoa(r.Hi)
}

// Defaults, applied before the file is decoded so that an absent key keeps
// them and a present one (even zero) replaces them.
const (
	DefaultLogLevel     = "info"
	DefaultLogFormat    = "console"
	DefaultGrace        = 30 * time.Second
	DefaultMode         = ModeHTTP
	DefaultScheduler    = "round_robin"
	DefaultRetries      = 2
	DefaultQueueTimeout = 5 * time.Second
	DefaultConnect      = 5 * time.Second
	DefaultClient       = 60 * time.Second
	DefaultClientHeader = 10 * time.Second
	DefaultServer       = 60 * time.Second
	DefaultWeight       = 1
	DefaultState        = StateReady
	DefaultProtocol     = ProtoHTTP1

	DefaultTLSMinVersion = "1.2"
	DefaultClientAuth    = ClientAuthNone

	DefaultCheckType     = CheckTCP
	DefaultCheckMethod   = "GET"
	DefaultCheckPath     = "/"
	DefaultCheckInterval = 2 * time.Second
	DefaultCheckTimeout  = 1 * time.Second
	DefaultRise          = 2
	DefaultFall          = 3

	DefaultPersistMethod  = PersistNone
	DefaultPersistTimeout = 30 * time.Minute
	DefaultCookieName     = "FULCRUM" // method cookie only: app_cookie has no default
	DefaultSourceMask     = 32
	DefaultSourceMask6    = 64
	DefaultMaxEntries     = 1000000
	DefaultInspectDelay   = 5 * time.Second

	DefaultRatePer      = time.Second
	DefaultRedirectCode = 302
	MinCompressSize     = 1024 // bytes: smaller responses are not worth gzip's header
	MaxRateLimitClients = 65536
)

// Limits.
const (
	// MaxWeight bounds RealServer.Weight; it keeps the schedulers' sums
	// and products of weights far from overflow.
	MaxWeight = 65535
	// MaxRetries bounds VirtualService.Retries; more only hammers a pool
	// that is down.
	MaxRetries = 100
	// MinCheckInterval bounds HealthCheck.Interval from below: it catches
	// "2ms" written for "2s" before it hammers every real server, and is
	// still short enough for tests that wait for a server to go down.
	MinCheckInterval = 100 * time.Millisecond
	// MaxRiseFall bounds HealthCheck.Rise and Fall; more would take a
	// server minutes to change state at any sensible interval.
	MaxRiseFall = 100
	// MaxStickEntries bounds Persistence.MaxEntries: at the stick table's
	// budget of up to 200 bytes an entry, 100 million entries may take
	// 20 GiB; a bigger number is a typo.
	MaxStickEntries = 100000000
	// MinCookieSecret is the shortest Persistence.CookieSecret: 128 bits,
	// out of reach of a brute-force search for the HMAC key.
	MinCookieSecret = 16
	// MinInspectDelay and MaxInspectDelay bound Persistence.InspectDelay.
	// A real RDP client sends its Connection Request at once, so a shorter
	// wait would only cut off clients on slow links, and a longer one
	// only holds a connection slot for a client that sends nothing.
	MinInspectDelay = 100 * time.Millisecond
	MaxInspectDelay = 60 * time.Second
	// MaxEventLoops bounds Global.EventLoops: more loops than CPUs only
	// take turns on them.
	MaxEventLoops = 1024
)

func (g *Global) setDefaults() {
	g.LogLevel = DefaultLogLevel
	g.LogFormat = DefaultLogFormat
	g.AccessLog = true
	g.Grace = DefaultGrace
	g.EventLoops = DefaultEventLoops()
}

func (v *VirtualService) setDefaults() {
	v.Mode = DefaultMode
	v.Scheduler = DefaultScheduler
	v.ForwardedFor = true
	v.Retries = DefaultRetries
	v.QueueTimeout = DefaultQueueTimeout
}

// lateDefaults sets the L4 services' protocol: the key exists only in the
// L4 modes.
func (v *VirtualService) lateDefaults(given func(key string) bool) {
	if IsL4Mode(v.Mode) && !given("protocol") {
		v.Protocol = ProtocolTCP
	}
}

func (t *Timeouts) setDefaults() {
	t.Connect = DefaultConnect
	t.Client = DefaultClient
	t.ClientHeader = DefaultClientHeader
	t.Server = DefaultServer
}

func (r *RealServer) setDefaults() {
	r.Weight = DefaultWeight
	r.TLSVerify = true
	r.Protocol = DefaultProtocol
	r.State = DefaultState
}

func (t *TLS) setDefaults() {
	t.MinVersion = DefaultTLSMinVersion
	t.ALPN = []string{ProtoH2, ProtoHTTP1}
	t.ClientAuth = DefaultClientAuth
}

func (a *Admin) setDefaults() { a.MetricsAuth = true }

func (h *HA) setDefaults() {
	h.Priority = DefaultHAPriority
	h.AdvertInterval = DefaultAdvertInterval
	h.Preempt = true // RFC 5798 §6.1: Preempt_Mode defaults to True
	h.TrackWeight = DefaultTrackWeight
}

func (p *Persistence) setDefaults() {
	p.Method = DefaultPersistMethod
	p.Timeout = DefaultPersistTimeout
	p.SourceMask = DefaultSourceMask
	p.SourceMask6 = DefaultSourceMask6
	p.MaxEntries = DefaultMaxEntries
	p.InspectDelay = DefaultInspectDelay
}

// lateDefaults names the inserted cookie. Only method cookie has a default
// name: app_cookie must be told which of the application's cookies to
// learn, and a guess would silently learn nothing.
func (p *Persistence) lateDefaults(given func(key string) bool) {
	if p.Method == PersistCookie && !given("cookie_name") {
		p.CookieName = DefaultCookieName
	}
}

func (h *HealthCheck) setDefaults() {
	h.Type = DefaultCheckType
	h.Method = DefaultCheckMethod
	h.Path = DefaultCheckPath
	// 2xx and 3xx, as HAProxy's http-check: a redirect (to a login page,
	// say) still comes from a working server.
	h.ExpectStatus = StatusRanges{{200, 399}}
	h.Interval = DefaultCheckInterval
	h.Timeout = DefaultCheckTimeout
	h.Rise = DefaultRise
	h.Fall = DefaultFall
}

// lateDefaults shortens the default timeout to a short interval, as a check
// must end before the next one starts. A timeout given in the file is kept
// and validated instead.
func (h *HealthCheck) lateDefaults(given func(key string) bool) {
	if !given("timeout") && h.Interval > 0 && h.Interval < h.Timeout {
		h.Timeout = h.Interval
	}
}

// IsPool reports whether the service is a pool: one without listen, which
// binds nothing and serves only the requests that routes send it.
func (v *VirtualService) IsPool() bool { return len(v.Listen) == 0 }

// label names the service in problem messages.
func (v *VirtualService) label() string {
	if v.Name == "" {
		return ""
	}
	return strconv.Quote(v.Name)
}

// label names the admin user in problem messages.
func (u *AdminUser) label() string {
	if u.Name == "" {
		return ""
	}
	return strconv.Quote(u.Name)
}

// label names the real server in problem messages: by its name or, as its
// name defaults to it, its address.
func (r *RealServer) label() string {
	switch {
	case r.Name != "":
		return strconv.Quote(r.Name)
	case r.Address != "":
		return strconv.Quote(r.Address)
	}
	return ""
}

// Defaults of the [ha] section.
const (
	DefaultHAPriority     = 100 // keepalived's
	DefaultAdvertInterval = time.Second
	DefaultTrackWeight    = 50
)

// HA is the [ha] section: this node's half of a VRRPv3 (RFC 5798) pair that
// moves the floating IPs between two load balancers. It is off when the
// section is absent (Interface is empty).
type HA struct {
	// Interface is the network interface that speaks VRRP and carries the
	// floating IPs ("eth0"). Required; it must exist when Fulcrum starts.
	Interface string `toml:"interface"`
	// VRID is the Virtual Router Identifier, 1..255, the same on both
	// nodes and unique on the link. Required.
	VRID int `toml:"vrid"`
	// Priority is 1..255; the higher wins. 255 is reserved for the owner
	// of the addresses (RFC 5798 §5.2.4), which is Master at once and
	// ignores the others. If absent, 100.
	Priority int `toml:"priority"`
	// AdvertInterval is the advertisement interval, 10ms..40.95s in whole
	// centiseconds (RFC 5798 §5.2.7). If absent, 1s.
	AdvertInterval time.Duration `toml:"advert_interval"`
	// FloatingIPs are the virtual addresses with their prefix length
	// ("10.0.0.21/24", "fd00::21/64"). Required. Each family present runs
	// its own virtual router with the same VRID (RFC 5798 §1).
	FloatingIPs []string `toml:"floating_ips"`
	// Preempt lets a Backup take over from a lower-priority Master. If
	// absent, true.
	Preempt bool `toml:"preempt"`
	// PreemptDelay is how long after start a Backup waits before it
	// preempts. If zero, it preempts at once.
	PreemptDelay time.Duration `toml:"preempt_delay"`
	// UnicastPeers, if any, replace the multicast group: advertisements
	// go to each of them (clouds, or networks that block 224.0.0.18).
	UnicastPeers []string `toml:"unicast_peers"`
	// TrackPing are addresses pinged to detect a network failure (not
	// implemented yet: refused when not empty).
	TrackPing []string `toml:"track_ping"`
	// TrackServices are virtual services whose being red (no real server
	// available) lowers this node's priority by TrackWeight.
	TrackServices []string `toml:"track_services"`
	// TrackWeight is 0..254; the priority never drops below 1. If absent, 50.
	TrackWeight int `toml:"track_weight"`
	// Notify is a command run on each transition with three more
	// arguments: the state, the VRID and the priority. It is split on
	// spaces (no shell, no quoting); empty runs nothing.
	Notify string `toml:"notify"`
	// SyncPeer is the peer's admin address ("host:port" for plain HTTP,
	// "https://host:port" for an admin listener with TLS); the Master pushes
	// its configuration and stick tables to it. Empty: no sync.
	SyncPeer string `toml:"sync_peer"`
	// SyncUser is the [[admin.user]] of the peer that pushes log in as.
	// Required with SyncPeer.
	SyncUser string `toml:"sync_user"`
	// SyncPasswordFile holds that user's password (the first line; the
	// file, not the config, so the config can be pushed and shown).
	// Required with SyncPeer.
	SyncPasswordFile string `toml:"sync_password_file"`
	// SyncCA is a PEM file of the CAs that verify the peer's admin
	// certificate over https; empty: the system roots.
	SyncCA string `toml:"sync_ca"`

	// VIPs, Peers and NotifyArgs are FloatingIPs, UnicastPeers and Notify
	// parsed by validation.
	VIPs       []netip.Prefix `toml:"-"`
	Peers      []netip.Addr   `toml:"-"`
	NotifyArgs []string       `toml:"-"`

	// Line is the line of the [ha] header (zero if absent).
	Line int `toml:"-"`
}

// Enabled reports whether the file has an [ha] section.
func (h *HA) Enabled() bool { return h.Interface != "" }

func (r *RateLimit) setDefaults() { r.Per = DefaultRatePer }

func (r *Route) setDefaults() { r.RedirectCode = DefaultRedirectCode }

// label names the route in problem messages: by its name, else none (the
// element's position is shown instead).
func (r *Route) label() string {
	if r.Name == "" {
		return ""
	}
	return strconv.Quote(r.Name)
}
