// Package config reads Fulcrum's TOML configuration file into typed values,
// applies defaults and validates it, reporting every problem at once with the
// file, line and key it concerns.
package config

import (
	"strconv"
	"time"
)

// Config is one parsed and validated configuration file.
type Config struct {
	// File is the path the configuration was read from (or the name given to
	// Parse). It prefixes every problem report.
	File string `toml:"-"`

	Global          Global            `toml:"global"`
	VirtualServices []*VirtualService `toml:"virtual_service"`
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
}

// Modes of a virtual service.
const (
	ModeHTTP = "http" // L7 HTTP/1.1 full proxy
	ModeTCP  = "tcp"  // L7 TCP proxy (bytes both ways)
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
	// Mode is http or tcp. If absent, http.
	Mode string `toml:"mode"`
	// Scheduler names the balancing algorithm (see balancer.Names). If
	// absent, round_robin.
	Scheduler string `toml:"scheduler"`
	// ForwardedFor appends X-Forwarded-For and sets X-Forwarded-Proto,
	// -Host and -Port in http mode. If absent, true.
	ForwardedFor bool `toml:"forwarded_for"`
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

	Timeouts    Timeouts      `toml:"timeouts"`
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

	// Line is the line of the server's [[virtual_service.real_server]]
	// header, or of its inline table (zero if not parsed from a file).
	Line int `toml:"-"`
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
)

// Limits.
const (
	// MaxWeight bounds RealServer.Weight; it keeps the schedulers' sums
	// and products of weights far from overflow.
	MaxWeight = 65535
	// MaxRetries bounds VirtualService.Retries; more only hammers a pool
	// that is down.
	MaxRetries = 100
)

func (g *Global) setDefaults() {
	g.LogLevel = DefaultLogLevel
	g.LogFormat = DefaultLogFormat
	g.AccessLog = true
	g.Grace = DefaultGrace
}

func (v *VirtualService) setDefaults() {
	v.Mode = DefaultMode
	v.Scheduler = DefaultScheduler
	v.ForwardedFor = true
	v.Retries = DefaultRetries
	v.QueueTimeout = DefaultQueueTimeout
}

func (t *Timeouts) setDefaults() {
	t.Connect = DefaultConnect
	t.Client = DefaultClient
	t.ClientHeader = DefaultClientHeader
	t.Server = DefaultServer
}

func (r *RealServer) setDefaults() { r.Weight = DefaultWeight }

// label names the service in problem messages.
func (v *VirtualService) label() string {
	if v.Name == "" {
		return ""
	}
	return strconv.Quote(v.Name)
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
